"""3-D strain localization: predict the local strain eps_11 / E_11 of a periodic two-phase elastic composite
from its voxel microstructure (Yang et al. 2019), one fold at a time.

Axis 0 of every volume is x1, the loading direction (checked on the shared FE sample: a single stiff voxel
raises eps_11 at its neighbours along axis 0 and lowers it along axes 1 and 2). The data is either generated
(``matcv.datamodules.synthetic.localization``, the default) or the published RLN files of Yang et al. 2019;
both layouts are read by ``matcv.datamodules.localization_layouts``.

Augmentation (off by default): of the 48 symmetries of the cube, which are all exact for the
microstructure, only the 16 that map the x1 axis onto itself (reflections of each axis, the x2<->x3 swap and
their products, i.e. rotations by 90 degrees about x1 and reflections) are exact for eps_11 under a load
E = E_11 e1 (x) e1: the load is invariant under them and eps_11 transforms as a scalar, eps'_11(x) =
eps_11(g^-1 x). A symmetry that moves x1 (e.g. swapping x1 and x2) turns the problem into one loaded along
another axis, whose eps_11 is a different field, so those are not used.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from matcv.datamodules.base import BenchmarkDataModule
from matcv.datamodules.localization_layouts import GROUP_BY, check_arrays, index_items, load_volumes, scan_items
from matcv.datamodules.synthetic.localization import (
    GENERATOR_NAME,
    LocalizationGeneratorConfig,
    generate_localization_dataset,
)


def resolve_data_root(data_root: str | Path | None, generator: dict | None = None, progress: bool = True) -> Path:
    """A data root as given, or the generated dataset for ``generator`` settings (generated once)."""
    if data_root is not None:
        return Path(data_root)
    return generate_localization_dataset(LocalizationGeneratorConfig(**(generator or {})), progress=progress)


def labels_discretization(data_root: str | Path) -> str | None:
    """How a generated folder's strains were computed, from its ``generator.json``: "fft" when the settings name
    no discretisation (every dataset made before the setting existed); None for a folder without settings (e.g.
    the published RLN files)."""
    path = Path(data_root) / GENERATOR_NAME
    if not path.is_file():
        return None
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: unreadable generator settings ({error})") from error
    discretization = settings.get("discretization", "fft") if isinstance(settings, dict) else None
    if not isinstance(discretization, str):
        raise ValueError(f"{path}: 'discretization' must be a string, got {discretization!r}")
    return discretization


# --- augmentation --------------------------------------------------------------------------------------

N_X1_SYMMETRIES = 16


def apply_x1_symmetry(volume: np.ndarray, code: int) -> np.ndarray:
    """One of the 16 cube symmetries that keep the x1 axis (the last three axes are x1, x2, x3).

    Bits 0-2 of ``code`` reverse x1, x2, x3; bit 3 swaps x2 and x3. Reversal maps the voxel cell onto itself
    by a reflection, under which the periodic problem, and so the solver, is equivariant; so are the published
    finite-element data's boundary ties (the generator's default labels), which are not periodic but symmetric
    under these 16 maps. Code 0 is the identity.
    """
    if not 0 <= code < N_X1_SYMMETRIES:
        raise ValueError(f"code must be in 0..{N_X1_SYMMETRIES - 1}, got {code}")
    axes = tuple(axis for bit, axis in enumerate((-3, -2, -1)) if code >> bit & 1)
    out = np.flip(volume, axis=axes) if axes else volume
    return np.swapaxes(out, -2, -1) if code >> 3 & 1 else out


class LocalizationVolumes(Dataset):
    """Preloaded volumes of one partition; samples are float32 (1, N, N, N) tensors plus the item id."""

    def __init__(self, microstructures: np.ndarray, strains: np.ndarray, item_ids: list[str], augment: bool = False):
        self.microstructures, self.strains, self.item_ids, self.augment = microstructures, strains, item_ids, augment

    def __len__(self) -> int:
        return len(self.microstructures)

    def __getitem__(self, index: int) -> dict:
        micro, strain = self.microstructures[index], self.strains[index]
        if self.augment:
            # torch's RNG: seeded by the run (seed_everything) and per DataLoader worker.
            code = int(torch.randint(N_X1_SYMMETRIES, ()))
            micro, strain = apply_x1_symmetry(micro, code), apply_x1_symmetry(strain, code)
        return {"microstructure": torch.from_numpy(np.ascontiguousarray(micro, dtype=np.float32)[None]),
                "strain": torch.from_numpy(np.ascontiguousarray(strain, dtype=np.float32)[None]),
                "item_id": self.item_ids[index]}


# --- Lightning ----------------------------------------------------------------------------------------

class LocalizationDataModule(BenchmarkDataModule):
    """3-D localization volumes of one fold of a fold manifest (generated or RLN layout).

    After ``setup``: ``datasets[p]`` for p in train/val/test, ``volume_size`` (N) and ``normalization``
    (mean and std of the training partition's microstructures and strains, for models that standardise
    their inputs and targets as Yang et al. 2019 do; never computed from val or test).
    """

    def __init__(
        self,
        fold_manifest_path: str | Path,
        fold: int,
        data_root: str | Path | None = None,
        generator: dict | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        contrast: float | None = None,
        group_by: str = "group",
        augment: bool = False,
    ):
        super().__init__(fold_manifest_path, fold, data_root, seed, generator=generator, batch_size=batch_size,
                         num_workers=num_workers)
        if group_by not in GROUP_BY:
            raise ValueError(f"group_by must be one of {GROUP_BY}, got {group_by!r}")
        self.save_hyperparameters()
        self.contrast, self.group_by, self.augment = contrast, group_by, augment
        self.volume_size: int | None = None
        self.normalization: dict[str, float] = {}

    # The harness's class-level hooks.

    @staticmethod
    def prepare_dataset(data_root: str | Path | None, generator: dict | None = None, progress: bool = True) -> Path:
        """Where the data is: ``data_root``, or the generated dataset for ``generator`` (made once)."""
        return resolve_data_root(data_root, generator, progress)

    @classmethod
    def dataset_name(cls, data_root: str | Path, generated: bool) -> str:
        """The base class's name, plus "-fe-<discretization>" for data whose labels come from finite elements, so
        benchmark folders and leaderboard headers say which ground truth was learnt; FFT datasets keep their
        names."""
        name = super().dataset_name(data_root, generated)
        discretization = labels_discretization(data_root)
        return name if discretization in (None, "fft") else f"{name}-fe-{discretization}"

    @staticmethod
    def index_dataset(data_root: str | Path, contrast: float | None = None, group_by: str = "group",
                      **_unused) -> dict:
        """Items, groups and the .npy files (relative) of either layout, from headers alone."""
        return index_items(scan_items(data_root, contrast, group_by))

    @staticmethod
    def check_dataset(data_root: str | Path, progress: bool = True, contrast: float | None = None,
                      group_by: str = "group", **_unused) -> dict:
        """``index_dataset`` after reading every array: one ManifestError listing every bad file."""
        items = scan_items(data_root, contrast, group_by)
        check_arrays(data_root, items, progress)
        return index_items(items)

    # Lightning.

    def build_datasets(self) -> None:
        items = scan_items(self.data_root, self.contrast, self.group_by)
        folds = self.fold_items({item.item_id: item.group for item in items},
                                source=f"{self.fold_manifest_path} (group_by={self.group_by!r})")
        by_id = {item.item_id: item for item in items}
        for partition in ("train", "val", "test"):
            chosen = [by_id[i] for i in folds[partition]]
            micro, strain = load_volumes(self.data_root, chosen)
            self.datasets[partition] = LocalizationVolumes(micro, strain, [i.item_id for i in chosen],
                                                           augment=self.augment and partition == "train")
        train = self.datasets["train"]
        self.volume_size = int(train.microstructures.shape[1])
        self.normalization = {
            "microstructure_mean": float(train.microstructures.mean(dtype=np.float64)),
            "microstructure_std": float(train.microstructures.std(dtype=np.float64)),
            "strain_mean": float(train.strains.mean(dtype=np.float64)),
            "strain_std": float(train.strains.std(dtype=np.float64)),
        }
