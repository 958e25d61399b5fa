"""Task configurations: one YAML per task lists the datamodule, the models and the profiles.

A run's *resolved* config (task, profile, model class + args, datamodule args, trainer args, seed)
is what its config hash is computed from, so changing any of them makes the harness run it anew.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from matcv.datamodules.core.atomic_io import sha256_bytes

# The task YAMLs ship in the harness folder; matcv/datamodules/core -> matcv/benchmarks/configs holds in a
# checkout and in an installed wheel alike (a path, not an import: the floor imports nothing above it).
CONFIG_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "configs"


class ConfigError(ValueError):
    """A task YAML that is missing something or names something that does not exist."""


def available_tasks() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def import_object(reference: str):
    """``package.module.Name`` or ``package.module:Name`` -> the object."""
    module_name, _, attribute = reference.replace(":", ".").rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"cannot import {reference!r}: {error}") from error


def run_seed(profile_seed: int, fold: int) -> int:
    """The seed of one run: every run of a fold (the harness, a submission, a scorer rebuilding its data) uses it."""
    return profile_seed * 1000 + fold


@dataclass(frozen=True)
class RunSpec:
    """One model on one fold, fully resolved."""

    task: str
    profile: str
    model: str
    fold: int
    config: dict  # resolved, fold-independent

    @property
    def config_hash(self) -> str:
        return sha256_bytes(json.dumps(self.config, sort_keys=True).encode())[:16]


@dataclass
class TaskConfig:
    raw: dict
    source: Path

    @classmethod
    def load(cls, task_or_path: str | Path) -> "TaskConfig":
        path = Path(task_or_path)
        if path.suffix not in (".yaml", ".yml"):
            path = CONFIG_DIR / f"{task_or_path}.yaml"
            if not path.is_file():
                raise ConfigError(f"unknown task {task_or_path!r}; available: {', '.join(available_tasks())}")
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        raw = yaml.safe_load(path.read_text())
        for key in ("task", "datamodule", "models", "profiles", "metrics"):
            if key not in (raw or {}):
                raise ConfigError(f"{path}: missing top-level key {key!r}")
        for name, model in raw["models"].items():
            if "class" not in model:
                raise ConfigError(f"{path}: model {name!r} has no 'class'")
        return cls(raw=raw, source=path)

    @property
    def task(self) -> str:
        return self.raw["task"]

    @property
    def metrics(self) -> list[str]:
        return list(self.raw["metrics"])

    @property
    def lower_is_better(self) -> list[str]:
        """Metrics that are errors (MASE, MAE): the leaderboard ranks them smallest first."""
        return list(self.raw.get("lower_is_better", []))

    def profile(self, name: str) -> dict:
        if name not in self.raw["profiles"]:
            raise ConfigError(f"{self.source}: no profile {name!r}; available: {', '.join(self.raw['profiles'])}")
        return self.raw["profiles"][name]

    def datamodule_class(self) -> type:
        return import_object(self.raw["datamodule"]["class"])

    def datamodule_args(self, profile: str) -> dict:
        """The DataModule's arguments under a profile: the task's, updated by the profile's."""
        return {**self.raw["datamodule"].get("args", {}), **self.profile(profile).get("datamodule", {})}

    def model_names(self, profile: str, selected: list[str] | None = None) -> list[str]:
        names = list(self.profile(profile).get("models", self.raw["models"]))
        if selected:
            unknown = [m for m in selected if m not in self.raw["models"]]
            if unknown:
                raise ConfigError(f"unknown model(s) {unknown}; configured: {', '.join(self.raw['models'])}")
            names = [m for m in names if m in selected] + [m for m in selected if m not in names]
        return names

    def resolve(self, profile: str, model: str) -> dict:
        prof = self.profile(profile)
        entry = self.raw["models"][model]
        # A profile may change arguments of every model of a class (e.g. a lighter decoder on CPU), then per model.
        model_args = {**entry.get("args", {}), **prof.get("class_overrides", {}).get(entry["class"], {}),
                      **prof.get("model_overrides", {}).get(model, {})}
        return {
            "task": self.task,
            "profile": profile,
            "model": {"name": model, "class": entry["class"], "args": model_args},
            "datamodule": {"class": self.raw["datamodule"]["class"], "args": self.datamodule_args(profile)},
            "generator": prof.get("generator"),
            # Per-model trainer settings (e.g. more epochs for a 9k-parameter autoencoder than for a GAN).
            "trainer": {**prof.get("trainer", {}), **prof.get("trainer_overrides", {}).get(model, {})},
            "seed": prof.get("seed", 0),
        }

    def runs(self, profile: str, models: list[str] | None = None, folds: list[int] | None = None) -> list[RunSpec]:
        n_folds = self.profile(profile)["folds"]
        fold_ids = list(range(n_folds)) if folds is None else folds
        bad = [f for f in fold_ids if not 0 <= f < n_folds]
        if bad:
            raise ConfigError(f"fold(s) {bad} out of range: profile {profile!r} has {n_folds} folds (0..{n_folds - 1})")
        study = self.profile(profile).get("augmentation_study")
        if not study:
            return [RunSpec(self.task, profile, m, f, self.resolve(profile, m))
                    for m in self.model_names(profile, models) for f in fold_ids]
        # An augmentation study (Table 1 of seed 000): every model once per augmentation, named model+augmentation.
        specs = []
        for model in self.model_names(profile, models):
            for augmentation in study:
                config = self.resolve(profile, model)
                config["datamodule"]["args"]["augmentation"] = augmentation
                specs += [RunSpec(self.task, profile, f"{model}+{augmentation}", f, config) for f in fold_ids]
        return specs


COMPARISON_KEYS = {"baseline", "metrics", "slices", "item_values", "lower_is_better"}


@dataclass(frozen=True)
class ComparisonSpec:
    """A task YAML's ``comparison`` block, e.g. ``{"baseline": "unet", "metrics": ["dice", "iou"],
    "slices": ["thin", "stain"], "item_values": {"stain_fp_fraction": "FP area on stains"}}``."""

    baseline: str | None
    metrics: list[str]  # per-item score names; the first one is used for the slices and the rank plot
    slices: list[str] = field(default_factory=list)  # boolean per-item flags
    item_values: dict[str, str] = field(default_factory=dict)  # per-item value name -> label in the table
    lower_is_better: frozenset[str] = frozenset()  # metrics ranked ascending (an error, a distance)

    @classmethod
    def parse(cls, spec: dict, metrics: list[str]) -> ComparisonSpec:
        """Check the block (a misspelt key would silently drop a table) and fill defaults: the task's
        first metric, no slices."""
        if not isinstance(spec, dict):
            raise ValueError(f"comparison: expected a mapping like {{baseline: unet, metrics: [dice]}}, got {spec!r}")
        unknown = set(spec) - COMPARISON_KEYS
        if unknown:
            raise ValueError(f"comparison: unknown keys {sorted(unknown)}; known: {sorted(COMPARISON_KEYS)}")
        def names(key: str) -> list[str]:  # a lone name is a list of one, not of its letters
            value = spec.get(key) or []
            return [value] if isinstance(value, str) else list(value)

        values = spec.get("item_values") or {}
        values = {str(name): str(label) for name, label in values.items()} if isinstance(values, dict) else \
            {name: name for name in names("item_values")}
        return cls(spec.get("baseline"), names("metrics") or metrics[:1], names("slices"), values,
                   frozenset(names("lower_is_better")))
