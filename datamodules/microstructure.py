"""Microstructure image sources for the autoencoder / GAN task.

Built-in sources, generated on first use and cached under ``default_cache_dir()/microstructure/<hash>``
(the hash covers every generator setting and ``GENERATOR_VERSION``, so changed settings regenerate):

* ``gaussian-smooth``: uniform noise smoothed by a periodic anisotropic Gaussian (sigma per axis,
  ``matcv.datamodules.synthetic.gaussian_fields``), kept grey (Fernandez-Zelaia et al.'s "smooth" fields). The field is
  standardised per image and mapped z in [-3, 3] -> grey 0..255: a fixed map, so the grey level keeps its
  two-point statistics (a per-image min/max stretch would make each image's contrast depend on its extremes).
* ``gaussian-binary``: the same fields thresholded by rank at a target volume fraction (exact).
* ``potts``: Potts-model normal grain growth (``matcv.datamodules.synthetic.potts``; 8-neighbour lattice, potts/neigh moves,
  Metropolis at temperature kT), one grain-boundary image per simulation after ``mc_steps`` Monte Carlo steps.

Groups are generator settings, never single images: a model is tested on settings it never
saw. For the Gaussian fields the setting is the sigma pair *up to transposition*: a field with sigma (2, 8)
is a field with (8, 2) turned by 90 degrees, so the two orientations are one family and stay on one side
of every split (the same reasoning as the 3-D localization's symmetry classes). For Potts the setting is
(kT, Monte Carlo steps): each image is a separate simulation, so no snapshot of one run can leak into
another partition.

The layout of a data root (also the layout for a user's own images): ``manifest.csv`` with ``image_path``
(relative, 8-bit grey PNG/TIF/...) and ``group``, optionally ``label`` (what the FID-domain feature
extractor learns to tell apart; default: the group), ``stratum`` (what the folds balance) and any truth columns; ``generator.json`` for the
generated sources, which also says how to read the images (``image_kind``, ``periodic``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from matcv.datamodules.core.atomic_io import atomic_write_csv, atomic_write_text, save_png, sha256_bytes
from matcv.datamodules.core.cache import default_cache_dir
from matcv.datamodules.folds import normalise_group, similar_group_problems
from matcv.datamodules.manifest import ManifestError, raise_problems
from matcv.datamodules.microstructure_images import (
    GENERATOR_NAME,
    IMAGE_KINDS,
    MANIFEST_NAME,
    ManifestImageDataModule,
    MicrostructureImages,
    labels_of,
    load_images,
    read_settings,
    to_unit_range,
)
from matcv.datamodules.synthetic.gaussian_fields import gaussian_microstructure, periodic_gaussian_filter

GENERATOR_VERSION = 1  # bump when generation changes, so cached datasets are regenerated
SOURCES = ("gaussian-smooth", "gaussian-binary", "potts")
IMAGE_KIND_OF_SOURCE = {"gaussian-smooth": "grey", "gaussian-binary": "binary", "potts": "grain-boundary"}
SMOOTH_Z_RANGE = 3.0  # standardised field z in [-3, 3] fills the grey range; |z| > 3 (0.3 % of pixels) clips


@dataclass(frozen=True)
class MicrostructureGeneratorConfig:
    """Settings of one generated source; their hash names the cache folder.

    Gaussian sources: every ordered pair of ``sigma_values`` (and, for "binary", every volume fraction),
    ``images_per_setting`` images each. Potts: every (kT, mc_steps) pair, ``images_per_setting``
    simulations each on a ``size``² lattice. Image k of a setting comes from its own seed (seed, setting, k),
    so adding a setting leaves the others' images unchanged.
    """

    source: str = "gaussian-binary"
    size: int = 128
    images_per_setting: int = 4
    seed: int = 0
    sigma_values: tuple[float, ...] = (2.0, 4.0, 8.0)
    volume_fractions: tuple[float, ...] = (0.3, 0.5, 0.7)
    kT_values: tuple[float, ...] = (0.5, 0.75)
    mc_steps: tuple[int, ...] = (100, 200, 400)
    q: int = 2048

    def __post_init__(self) -> None:
        def fix(name: str, value) -> None:  # YAML gives lists and ints: normalise so equal settings hash equally
            object.__setattr__(self, name, value)

        fix("size", int(self.size))
        for name in ("images_per_setting", "seed", "q"):
            fix(name, int(getattr(self, name)))
        for name in ("sigma_values", "volume_fractions", "kT_values"):
            fix(name, tuple(float(v) for v in getattr(self, name)))
        fix("mc_steps", tuple(int(v) for v in self.mc_steps))
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.size < 16 or (self.source == "potts" and self.size % 2):
            raise ValueError(f"size must be >= 16 (and even for the Potts lattice's 2x2 colours), got {self.size}")
        if self.images_per_setting < 1:
            raise ValueError(f"images_per_setting must be >= 1, got {self.images_per_setting}")
        if not self.sigma_values or min(self.sigma_values) <= 0:
            raise ValueError(f"sigma_values must be positive, got {self.sigma_values}")
        if not self.volume_fractions or not all(0.0 < v < 1.0 for v in self.volume_fractions):
            raise ValueError(f"volume_fractions must lie in (0, 1), got {self.volume_fractions}")
        if not self.kT_values or min(self.kT_values) < 0 or not self.mc_steps or min(self.mc_steps) < 1:
            raise ValueError(f"need kT >= 0 and mc_steps >= 1, got {self.kT_values}, {self.mc_steps}")

    @property
    def image_kind(self) -> str:
        return IMAGE_KIND_OF_SOURCE[self.source]

    def to_dict(self) -> dict:
        # Only the settings the source uses enter its hash: a Potts dataset does not change with sigma_values.
        used = {"source", "size", "images_per_setting", "seed"}
        used |= {"kT_values", "mc_steps", "q"} if self.source == "potts" else {"sigma_values"}
        used |= {"volume_fractions"} if self.source == "gaussian-binary" else set()
        settings = {k: v for k, v in dataclasses.asdict(self).items() if k in used}
        return {"generator_version": GENERATOR_VERSION, **settings, "image_kind": self.image_kind,
                "periodic": True}

    def fingerprint(self) -> str:
        return sha256_bytes(json.dumps(self.to_dict(), sort_keys=True).encode())[:16]


def sigma_pair_class(sx: float, sy: float) -> str:
    """The family of a sigma pair up to the 90-degree turn that swaps the axes (module doc)."""
    lo, hi = sorted((sx, sy))
    return f"sigma_{lo:g}_{hi:g}"


@dataclass(frozen=True)
class PlannedImage:
    image_path: str
    group: str
    setting: dict
    seed: tuple[int, ...]


def plan_images(config: MicrostructureGeneratorConfig) -> list[PlannedImage]:
    plan = []
    if config.source == "potts":
        for kT, steps in itertools.product(config.kT_values, config.mc_steps):
            group = f"kT_{kT:g}_mcs_{steps}"
            for k in range(config.images_per_setting):
                plan.append(PlannedImage(f"{group}/{k:03d}.png", group, {"kT": kT, "mc_steps": steps},
                                         (config.seed, round(1000 * kT), steps, k)))
        return plan
    fractions = config.volume_fractions if config.source == "gaussian-binary" else (None,)
    for (sx, sy), vf in itertools.product(itertools.product(config.sigma_values, repeat=2), fractions):
        setting = {"sigma_x": sx, "sigma_y": sy} | ({"volume_fraction": vf} if vf is not None else {})
        name = f"sigma_{sx:g}_{sy:g}" + (f"_vf_{vf:g}" if vf is not None else "")
        group = sigma_pair_class(sx, sy) + (f"_vf_{vf:g}" if vf is not None else "")
        for k in range(config.images_per_setting):
            seed = (config.seed, round(1000 * sx), round(1000 * sy), round(1000 * (vf or 0)), k)
            plan.append(PlannedImage(f"{name}/{k:03d}.png", group, setting, seed))
    return plan


def stratum_of(setting: dict) -> str:
    """What folds balance (each test fold gets every volume fraction / every kT); "" for none."""
    if "volume_fraction" in setting:
        return f"vf_{setting['volume_fraction']:g}"
    return f"kT_{setting['kT']:g}" if "kT" in setting else ""


def smooth_grey(field: np.ndarray) -> np.ndarray:
    """A filtered noise field as uint8 grey: standardised, z in [-3, 3] -> 0..255 (module doc)."""
    z = (field - field.mean()) / max(float(field.std()), 1e-12)
    return np.clip(np.rint((z / (2 * SMOOTH_Z_RANGE) + 0.5) * 255.0), 0, 255).astype(np.uint8)


def draw_image(config: MicrostructureGeneratorConfig, planned: PlannedImage) -> tuple[np.ndarray, dict]:
    """One image (uint8, size²) and its ground truth, from the planned image's own seed."""
    if config.source == "potts":
        from matcv.datamodules.synthetic.potts import grain_areas, grain_boundary_image, simulate_grain_growth  # torch-heavy

        seed = int(np.random.SeedSequence(planned.seed).generate_state(1)[0])
        spins, _ = simulate_grain_growth(config.size, planned.setting["kT"], planned.setting["mc_steps"], seed,
                                         q=config.q)
        areas = grain_areas(spins, periodic=True)
        boundary = grain_boundary_image(spins)
        truth = {"n_grains": int(len(areas)), "mean_grain_area": float(np.mean(areas)),
                 "boundary_fraction": float(boundary.mean())}
        return (boundary.astype(np.uint8) * 255), truth
    rng = np.random.default_rng(planned.seed)
    sigmas = (planned.setting["sigma_y"], planned.setting["sigma_x"])  # axis 0 is y (rows), axis 1 is x
    if config.source == "gaussian-binary":
        phases = gaussian_microstructure(config.size, sigmas, planned.setting["volume_fraction"], rng)
        return phases * np.uint8(255), {"measured_volume_fraction": float(phases.mean())}
    grey = smooth_grey(periodic_gaussian_filter(rng.random((config.size, config.size)), sigmas))
    return grey, {"mean_grey": float(grey.mean() / 255.0)}


def generate_microstructure_dataset(config: MicrostructureGeneratorConfig, out_dir: str | os.PathLike | None = None,
                                    progress: bool = True) -> Path:
    """Write one source's images, ``manifest.csv`` and ``generator.json`` once; return the folder.

    Images are written as they are drawn (atomically), so a killed generation resumes where it stopped: an
    image already on disk is read back for its truth instead of being simulated again. The manifest is
    written last; a folder with a manifest is complete and is refused if its settings differ.
    """
    out = Path(out_dir) if out_dir is not None else default_cache_dir() / "microstructure" / config.fingerprint()
    manifest_path, settings_path = out / MANIFEST_NAME, out / GENERATOR_NAME
    expected = json.loads(json.dumps(config.to_dict()))
    if manifest_path.exists():
        if not settings_path.exists() or json.loads(settings_path.read_text()) != expected:
            raise FileExistsError(f"{out} already holds a microstructure dataset made with other settings "
                                  f"(see {settings_path}); choose another folder or delete it")
        return out
    plan = plan_images(config)
    rows = []
    for planned in tqdm(plan, desc=f"generating {config.source} microstructures", unit="image",
                        disable=not progress):
        image, truth = draw_image(config, planned)
        save_png(out / planned.image_path, image)
        rows.append({"image_path": planned.image_path, "group": planned.group, "label": planned.group,
                     "stratum": stratum_of(planned.setting), "source": config.source, **{k: f"{v:g}" for k, v in planned.setting.items()},
                     **{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in truth.items()}})
    atomic_write_text(settings_path, json.dumps(config.to_dict(), indent=2, sort_keys=True))
    atomic_write_csv(manifest_path, rows)  # last: its presence means the folder is complete
    return out


def resolve_data_root(data_root: str | Path | None, generator: dict | None = None, progress: bool = True) -> Path:
    """A data root as given, or the generated dataset for ``generator`` settings (generated once)."""
    if data_root is not None:
        return Path(data_root)
    return generate_microstructure_dataset(MicrostructureGeneratorConfig(**(generator or {})), progress=progress)


# --- reading the manifest layout --------------------------------------------------------------------------------

def read_manifest(root: Path) -> pd.DataFrame:
    """The manifest with ``label`` filled (default: the group); one ManifestError listing every bad row."""
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a microstructure data root needs a manifest.csv with "
                                f"image_path and group columns (module doc of matcv.datamodules.microstructure)")
    table = pd.read_csv(path, dtype={"image_path": str, "group": str, "label": str, "stratum": str},
                        keep_default_na=False)
    missing = [c for c in ("image_path", "group") if c not in table.columns]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {missing}; found {list(table.columns)}")
    # One specimen spelt two ways ("s1 " and "s1") must not become two groups: ids are normalised as the
    # fold manifests compare them, and ids that still differ only in case or spacing are an error.
    table["group"] = table["group"].map(normalise_group)
    if "label" not in table.columns:
        table["label"] = table["group"]
    problems = similar_group_problems(table["group"].tolist(), column="group")
    for row, record in enumerate(table.itertuples(index=False), start=2):  # line 1 is the header
        if not record.image_path or Path(record.image_path).is_absolute() or ".." in Path(record.image_path).parts:
            problems.append(f"line {row}: image_path {record.image_path!r} must be a relative path inside {root}")
        if not record.group:
            problems.append(f"line {row}: empty group for {record.image_path!r}")
    duplicated = table["image_path"][table["image_path"].duplicated()].unique().tolist()
    problems += [f"image_path {p!r} is listed more than once" for p in duplicated]
    raise_problems(problems, path)
    return table


def index_table(table: pd.DataFrame) -> dict:
    items = table["image_path"].tolist()
    # Optional ``stratum`` column: what folds balance. Not the group or label: one group per stratum cannot
    # be balanced across folds.
    strata = table["stratum"].tolist() if "stratum" in table.columns and table["stratum"].astype(bool).any() else None
    return {"items": items, "groups": table["group"].tolist(), "strata": strata, "files": items}


class MicrostructureDataModule(ManifestImageDataModule):
    """One fold of a generated (or user-supplied, manifest-layout) microstructure image source.

    ``image_kind`` / ``periodic`` default to what ``generator.json`` says, else "grey" / False (a user's
    micrographs are not periodic). Labels for the FID-domain extractor index the training part's labels.
    """

    read_manifest = staticmethod(read_manifest)
    index_table = staticmethod(index_table)

    def __init__(self, fold_manifest_path: str | Path, fold: int, data_root: str | Path | None = None,
                 generator: dict | None = None, batch_size: int = 16, num_workers: int = 0, seed: int = 0,
                 image_kind: str | None = None, periodic: bool | None = None):
        super().__init__(fold_manifest_path, fold, data_root, seed, generator=generator, batch_size=batch_size,
                         num_workers=num_workers)
        if image_kind is not None and image_kind not in IMAGE_KINDS:
            raise ValueError(f"image_kind must be one of {IMAGE_KINDS}, got {image_kind!r}")
        self.save_hyperparameters()
        self.requested_image_kind, self.requested_periodic = image_kind, periodic

    @staticmethod
    def prepare_dataset(data_root: str | Path | None, generator: dict | None = None, progress: bool = True) -> Path:
        return resolve_data_root(data_root, generator, progress)

    def build_datasets(self) -> None:
        settings = read_settings(self.data_root)
        self.image_kind = self.requested_image_kind or settings.get("image_kind", "grey")
        periodic = self.requested_periodic
        self.periodic = bool(periodic if periodic is not None else settings.get("periodic", False))
        table = read_manifest(self.data_root)
        folds = self.fold_items(dict(zip(table["image_path"], table["group"])))
        label_of = dict(zip(table["image_path"], table["label"]))
        _, self.label_names = labels_of([label_of[i] for i in folds["train"]])
        for partition in ("train", "val", "test"):
            items = list(folds[partition])
            images = load_images(self.data_root, items)[:, None]
            labels, _ = labels_of([label_of[i] for i in items], self.label_names)
            self.datasets[partition] = MicrostructureImages(to_unit_range(images), items, labels)
        self.num_labels = len(self.label_names)
