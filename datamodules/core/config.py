"""Task configurations: one YAML per task declares everything the task is.

A task YAML binds one DataModule class to its models (dotted class paths) and profiles, and says how the task
takes part in the leaderboard: which modules record and rescore submissions (``submission``), which profiles
have a committed official fold manifest (``official``) and why the others have none (``unpublished``), and
which profiles are tiny smoke tests (``smoke_test: true``). Every layer reads these declarations from here,
so adding a task or a named dataset is one YAML, not an edit to lists kept elsewhere.

A run's *resolved* config (task, profile, model class + args, datamodule args, trainer args, seed)
is what its config hash is computed from, so changing any of them makes the harness run it anew.
"""

from __future__ import annotations

import importlib
import json
import re
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
    """The built-in task YAMLs by name (file stem): ``segmentation``, ``segmentation-superalloy``, ..."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def named_datasets(task: str) -> dict[str, str]:
    """A task's named real datasets: dataset name -> the YAML that runs the task on it.

    ``<task>-<dataset>.yaml`` (e.g. ``segmentation-superalloy``) is the task on a named dataset; this is the only
    place that file-name rule is read."""
    prefix = f"{task}-"
    return {name.removeprefix(prefix): name for name in available_tasks() if name.startswith(prefix)}


def named_dataset_config(task: str, dataset: str) -> str | None:
    """The YAML of ``task`` on the named dataset ``dataset``, or None. A benchmark folder's dataset name may
    carry a prefix (``nasa-superalloy`` is the ``superalloy`` dataset), so the last dash-separated part matches
    too; a path (with a separator) is never a dataset name."""
    if "/" in dataset or "\\" in dataset:
        return None
    named = named_datasets(task)
    return named.get(dataset) or named.get(dataset.split("-")[-1])


@dataclass(frozen=True)
class SubmissionModules:
    """Where a task's submissions are handled: ``scorer`` defines ``SCORERS`` (the leaderboard side, rescoring
    the predictions); the harness side, recording a submitted model's test predictions, is either an
    ``adapter`` module defining ``ADAPTER`` (needed where a task trains factory networks or records through a
    mixin) or, for a task without one, its ``evaluation_base`` class, which a submitted LightningModule must
    subclass and whose ``submission_arrays()`` returns the arrays to write. Dotted names: the floor never
    imports them."""

    adapter: str | None
    scorer: str
    evaluation_base: str | None = None


def submission_modules() -> dict[str, SubmissionModules]:
    """Task name -> its submission modules, from the built-in YAMLs that declare a ``submission`` block.

    Submissions are per task, not per YAML: a named dataset's YAML (``task: segmentation`` in
    ``segmentation-superalloy.yaml``) must declare the same modules as the task's own YAML, or none."""
    found: dict[str, tuple[SubmissionModules, Path]] = {}
    for name in available_tasks():
        config = TaskConfig.load(name)
        modules = config.submission
        if modules is None:
            continue
        if config.task in found and found[config.task][0] != modules:
            raise ConfigError(f"{config.source}: key 'submission' differs from {found[config.task][1]}'s for task "
                              f"{config.task!r}: one task has one submission adapter and one scorer")
        found.setdefault(config.task, (modules, config.source))
    return {task: modules for task, (modules, _) in sorted(found.items())}


def import_object(reference: str):
    """``package.module.Name`` or ``package.module:Name`` -> the object."""
    module_name, _, attribute = reference.replace(":", ".").rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"cannot import {reference!r}: {error}") from error


def run_seed(profile_seed: int, fold: int) -> int:
    """The seed of one run: every run of a fold (the harness, a submission, a scorer rebuilding its data) uses it.
    It is also the fold's *data* seed: every replicate (``--seeds N``) builds the fold's data with it."""
    return profile_seed * 1000 + fold


# Replicates (``--seeds N``): the training seed of replicate r of a fold's run is
#   training_seed(profile_seed, fold, r) = run_seed(profile_seed, fold) + REPLICATE_SEED_STRIDE * r,
# so replicate 0 is the run seed itself (a single-seed benchmark is replicate 0 of every run). Given the profile
# seed p, seed - 1000 p = fold + 10^6 r names (fold, r) for every fold below 10^6: no two runs of a profile share a
# training seed. (Over profile seeds 0..999 and folds 0..999 the seed names (p, fold, r) outright.)
REPLICATE_SEED_STRIDE = 1_000_000
MAX_SEED = 2**32 - 1  # the largest seed numpy and Lightning's seed_everything accept


def training_seed(profile_seed: int, fold: int, replicate: int = 0) -> int:
    """The seed of replicate ``replicate`` of a fold's run (the rule above): what ``L.seed_everything`` gets, and
    with it weight initialisation, dropout and any shuffling from torch's global RNG."""
    if isinstance(replicate, bool) or not isinstance(replicate, int) or replicate < 0:
        raise ConfigError(f"replicate must be a whole number >= 0, got {replicate!r}")
    seed = run_seed(profile_seed, fold) + REPLICATE_SEED_STRIDE * replicate
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"training seed {seed} of profile seed {profile_seed}, fold {fold}, replicate {replicate} "
                          f"is outside 0..{MAX_SEED} (what numpy and Lightning accept): ask for fewer seeds")
    return seed


def check_train_fractions(fractions, where: str) -> list[float]:
    """``fractions`` (the shares of a fold's training groups to train on, ``--train-fraction 0.25,0.5,1``) as
    distinct floats in (0, 1], full data (1.0) first then ascending, or a ConfigError naming ``where``."""
    if isinstance(fractions, (int, float)) and not isinstance(fractions, bool):
        fractions = [fractions]
    if not isinstance(fractions, (list, tuple)) or not fractions:
        raise ConfigError(f"{where} must be a non-empty list of fractions in (0, 1], e.g. [0.25, 0.5, 1], "
                          f"got {fractions!r}")
    values = []
    for value in fractions:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise ConfigError(f"{where}: {value!r} is not a fraction in (0, 1] (the share of a fold's training "
                              f"groups to train on; 1 is the whole training part)")
        values.append(float(value))
    if len(set(values)) != len(values):
        raise ConfigError(f"{where} names a fraction twice: {fractions!r}")
    # Full data first, as replicate 0 comes first: a benchmark stopped half way already has its main table.
    return sorted(values, key=lambda f: (f != 1.0, f))


def fraction_label(fraction: float) -> str:
    """How folders, keys and progress lines write a training fraction: 0.25, 0.5, 0.125."""
    return f"{fraction:g}"


def check_seeds(seeds, where: str) -> int:
    """``seeds`` (how many replicates of every model x fold) as a whole number >= 1, or a ConfigError naming
    ``where`` it came from."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"{where} must be a whole number >= 1 (how many training seeds per model x fold), "
                          f"got {seeds!r}")
    return seeds


@dataclass(frozen=True)
class RunSpec:
    """One model on one fold, fully resolved; ``replicate`` r of ``seeds`` (``--seeds N``) trains with
    ``training_seed(profile seed, fold, r)`` on the same fold manifest and data."""

    task: str
    profile: str
    model: str
    fold: int
    config: dict  # resolved, fold-independent; replicate r > 0 has "replicate": r (its own hash and key)
    replicate: int = 0
    seeds: int = 1  # how many replicates its benchmark runs: for progress lines only, not the run's identity
    # The share of the fold's training groups it trains on (a learning curve); < 1 has "train_fraction" in its
    # config (its own hash and key), 1 is the normal run and has none.
    train_fraction: float = 1.0

    def __post_init__(self) -> None:
        # Replicate 0's config has no "replicate" key (it hashes as every run did before replicates existed); any
        # other must carry its own, or two replicates would share one config hash and one run key.
        stated = self.config.get("replicate", 0)
        if stated != self.replicate or ("replicate" in self.config and not self.replicate):
            raise ValueError(f"RunSpec of {self.model} fold {self.fold}: replicate {self.replicate} but its config "
                             f"says {self.config.get('replicate')!r} (TaskConfig.run_config(..., replicate=r) sets it)")
        # The same rule for the training fraction: the full-data run hashes exactly as before fractions existed.
        stated = self.config.get("train_fraction", 1.0)
        if stated != self.train_fraction or ("train_fraction" in self.config and self.train_fraction == 1.0):
            raise ValueError(f"RunSpec of {self.model} fold {self.fold}: train_fraction {self.train_fraction} but "
                             f"its config says {self.config.get('train_fraction')!r} (TaskConfig.run_config(..., "
                             f"train_fraction=f) sets it)")

    @property
    def config_hash(self) -> str:
        return sha256_bytes(json.dumps(self.config, sort_keys=True).encode())[:16]

    @property
    def label(self) -> str:
        """How progress lines and messages name the run: "unet fold 1", or "unet fold 1 seed 2/3" (replicate 1)
        when its benchmark runs several seeds."""
        head = f"{self.model} fold {self.fold}"
        if self.train_fraction != 1.0:
            head += f" frac {fraction_label(self.train_fraction)}"
        return head if self.seeds == 1 and not self.replicate else f"{head} seed {self.replicate + 1}/{self.seeds}"


_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
SUBMISSION_KEYS = ("adapter", "scorer", "evaluation_base")


def _check_declarations(raw: dict, path: Path) -> None:
    """The leaderboard declarations of a YAML: checked when it is loaded, so that a misspelt profile or module
    name fails with the file and key named instead of surfacing later as an unsupported task."""
    profiles = raw["profiles"]
    if not isinstance(profiles, dict) or not profiles:
        raise ConfigError(f"{path}: key 'profiles' must map profile names to their settings")
    for name, profile in profiles.items():
        if not isinstance(profile, dict):
            raise ConfigError(f"{path}: profile {name!r} must be a mapping, got {profile!r}")
        if not isinstance(profile.get("smoke_test", False), bool):
            raise ConfigError(f"{path}: key 'profiles.{name}.smoke_test' must be true or false")
        check_seeds(profile.get("seeds", 1), f"{path}: key 'profiles.{name}.seeds'")
        if "train_fractions" in profile:
            check_train_fractions(profile["train_fractions"], f"{path}: key 'profiles.{name}.train_fractions'")
    block = raw.get("submission")
    if block is not None:
        # scorer, plus exactly one of adapter (a module) or evaluation_base (a class recording its own arrays)
        if not isinstance(block, dict) or "scorer" not in block or set(block) - set(SUBMISSION_KEYS) \
                or ("adapter" in block) == ("evaluation_base" in block):
            raise ConfigError(f"{path}: key 'submission' must be a mapping with 'scorer' (a module) and either "
                              f"'adapter' (a module) or 'evaluation_base' (a class), got {block!r}")
        for key in block:
            if not isinstance(block[key], str) or not _DOTTED.match(block[key]):
                raise ConfigError(f"{path}: key 'submission.{key}' must be a dotted name, got {block[key]!r}")
    official = raw.get("official")
    if official is not None and (not isinstance(official, list) or not all(isinstance(p, str) for p in official)):
        raise ConfigError(f"{path}: key 'official' must be a list of profile names, got {official!r}")
    unpublished = raw.get("unpublished")
    if unpublished is not None:
        if not isinstance(unpublished, dict):
            raise ConfigError(f"{path}: key 'unpublished' must map profile names to the reason they have no "
                              f"official fold manifest, got {unpublished!r}")
        for name, reason in unpublished.items():
            if not isinstance(reason, str) or not reason.strip():
                raise ConfigError(f"{path}: key 'unpublished.{name}' must state the reason (a non-empty text)")
    official, unpublished = official or [], unpublished or {}
    both = sorted(set(official) & set(unpublished))
    if both:
        raise ConfigError(f"{path}: profile(s) {both} are under both 'official' and 'unpublished'")
    if path.resolve().parent != CONFIG_DIR.resolve():
        # A trimmed copy of a built-in YAML (a test's, a user's variant) keeps the declarations of the profiles it
        # dropped: only the built-in YAMLs are the declarations of record, checked name by name below.
        return
    for key, names in (("official", official), ("unpublished", list(unpublished))):
        unknown = [name for name in names if name not in profiles]
        if unknown:
            raise ConfigError(f"{path}: key {key!r} names unknown profile(s) {unknown}; profiles: {', '.join(profiles)}")
    if official or unpublished:  # once a YAML declares publication, it does so for every profile
        undeclared = [name for name in profiles if name not in official and name not in unpublished]
        if undeclared:
            raise ConfigError(f"{path}: profile(s) {undeclared} are neither under 'official' nor under "
                              f"'unpublished' (with the reason they have no official fold manifest)")


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
        _check_declarations(raw, path)
        return cls(raw=raw, source=path)

    @classmethod
    def for_dataset(cls, task: str, dataset: str) -> "TaskConfig":
        """The YAML a benchmark folder ``<task>/<dataset>/`` was made with: the task on that named dataset
        (``segmentation-superalloy`` for ``nasa-superalloy``), else the task's own YAML."""
        return cls.load(named_dataset_config(task, dataset) or task)

    @property
    def name(self) -> str:
        """The YAML's name (file stem): what ``matcv bench --task`` and the official index's ``config`` give."""
        return self.source.stem

    @property
    def submission(self) -> SubmissionModules | None:
        """The task's submission adapter and scorer modules; None: no submissions for this YAML's task."""
        block = self.raw.get("submission")
        return None if block is None else SubmissionModules(block.get("adapter"), block["scorer"],
                                                           block.get("evaluation_base"))

    @property
    def official_profiles(self) -> list[str]:
        """Profiles whose fold manifest is published under leaderboard/official/ (``--refresh-official``)."""
        return [name for name in self.raw.get("official") or [] if name in self.raw["profiles"]]

    @property
    def unpublished_profiles(self) -> dict[str, str]:
        """Profile -> why it has no official fold manifest (e.g. data that matcv cannot distribute)."""
        return {name: reason for name, reason in (self.raw.get("unpublished") or {}).items()
                if name in self.raw["profiles"]}

    @property
    def smoke_profiles(self) -> list[str]:
        """Profiles marked ``smoke_test: true``: the smallest settings that run every model (tests)."""
        return [name for name, profile in self.raw["profiles"].items() if profile.get("smoke_test", False)]


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

    def profile_seed(self, profile: str) -> int:
        """The profile's seed; a fold's run seed is ``run_seed(profile_seed, fold)``."""
        return self.profile(profile).get("seed", 0)

    def seeds(self, profile: str) -> int:
        """How many training seeds (replicates) every model x fold gets under the profile (key ``seeds``, default
        1); ``matcv bench --seeds N`` overrides it."""
        return check_seeds(self.profile(profile).get("seeds", 1), f"{self.source}: key 'profiles.{profile}.seeds'")

    def train_fractions(self, profile: str) -> list[float]:
        """The training fractions every model x fold (x seed) runs at under the profile (key ``train_fractions``,
        default [1.0]: the whole training part); ``matcv bench --train-fraction 0.25,0.5,1`` overrides it."""
        return check_train_fractions(self.profile(profile).get("train_fractions", [1.0]),
                                     f"{self.source}: key 'profiles.{profile}.train_fractions'")

    def model_names(self, profile: str, selected: list[str] | None = None) -> list[str]:
        names = list(self.profile(profile).get("models", self.raw["models"]))
        if selected:
            unknown = [m for m in selected if m not in self.raw["models"]]
            if unknown:
                raise ConfigError(f"unknown model(s) {unknown}; configured: {', '.join(self.raw['models'])}")
            names = [m for m in names if m in selected] + [m for m in selected if m not in names]
        return names

    def resolve(self, profile: str, model: str, replicate: int = 0, train_fraction: float = 1.0) -> dict:
        prof = self.profile(profile)
        entry = self.raw["models"][model]
        # A profile may change arguments of every model of a class (e.g. a lighter decoder on CPU), then per model.
        model_args = {**entry.get("args", {}), **prof.get("class_overrides", {}).get(entry["class"], {}),
                      **prof.get("model_overrides", {}).get(model, {})}
        # Per-model trainer settings (e.g. more epochs for a 9k-parameter autoencoder than for a GAN).
        trainer = {**prof.get("trainer", {}), **prof.get("trainer_overrides", {}).get(model, {})}
        return self.run_config(profile, model, entry["class"], model_args, trainer, replicate=replicate,
                               train_fraction=train_fraction)

    def run_config(self, profile: str, name: str, model_class: str, model_args: dict, trainer: dict,
                   datamodule_args: dict | None = None, replicate: int = 0,
                   train_fraction: float = 1.0) -> dict:
        """The resolved config of one model under a profile, in the one shape every run is hashed and recorded
        in (a configured model's, via ``resolve``, and a submitted model's alike). Replicate r > 0 (``--seeds``)
        adds ``"replicate": r``, so that its config hash and run key are its own; replicate 0 adds nothing and
        is exactly the run a benchmark without ``--seeds`` makes (same hash, same key: its records stay valid).
        ``train_fraction`` f < 1 (a learning curve) adds ``"train_fraction": f`` in the same way; 1 adds nothing."""
        config = {
            "task": self.task,
            "profile": profile,
            "model": {"name": name, "class": model_class, "args": model_args},
            "datamodule": {"class": self.raw["datamodule"]["class"],
                           "args": self.datamodule_args(profile) if datamodule_args is None else datamodule_args},
            "generator": self.profile(profile).get("generator"),
            "trainer": trainer,
            "seed": self.profile_seed(profile),
        }
        if replicate:
            training_seed(config["seed"], 0, replicate)  # a replicate whose seeds would be out of range fails here
            config["replicate"] = replicate
        fraction = check_train_fractions([train_fraction], "train_fraction")[0]
        if fraction != 1.0:
            config["train_fraction"] = fraction
        return config

    def runs(self, profile: str, models: list[str] | None = None, folds: list[int] | None = None,
             seeds: int | None = None, train_fractions: list[float] | None = None) -> list[RunSpec]:
        """Every run of the profile: each model x fold ``seeds`` times (default: the profile's ``seeds``),
        replicate 0 of every run first, so that a benchmark stopped half way already has whole single-seed
        results; and each at every training fraction (default: the profile's ``train_fractions``, else [1]),
        the full-data runs first."""
        n_folds = self.profile(profile)["folds"]
        fold_ids = list(range(n_folds)) if folds is None else folds
        bad = [f for f in fold_ids if not 0 <= f < n_folds]
        if bad:
            raise ConfigError(f"fold(s) {bad} out of range: profile {profile!r} has {n_folds} folds (0..{n_folds - 1})")
        n_seeds = self.seeds(profile) if seeds is None else check_seeds(seeds, "--seeds")
        fractions = self.train_fractions(profile) if train_fractions is None else \
            check_train_fractions(train_fractions, "--train-fraction")
        for fold in fold_ids:  # every training seed in range, before any work is done
            training_seed(self.profile_seed(profile), fold, n_seeds - 1)
        names = self.model_names(profile, models)
        study = self.profile(profile).get("augmentation_study")
        specs = []
        for replicate in range(n_seeds):
            for fraction in fractions:
                if not study:
                    for model in names:
                        config = self.resolve(profile, model, replicate, fraction)
                        specs += [RunSpec(self.task, profile, model, f, config, replicate, n_seeds, fraction)
                                  for f in fold_ids]
                    continue
                # An augmentation study (Yin 2024, Table 1): every model once per augmentation, named
                # model+augmentation.
                for model in names:
                    for augmentation in study:
                        config = self.resolve(profile, model, replicate, fraction)
                        config["datamodule"]["args"]["augmentation"] = augmentation
                        specs += [RunSpec(self.task, profile, f"{model}+{augmentation}", f, config, replicate,
                                          n_seeds, fraction) for f in fold_ids]
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
