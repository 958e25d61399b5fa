"""The UHCSDB micrographs as random patches of one fold, for the microstructure autoencoder / GAN task.

After ``setup``: ``datasets[p]`` (``MicrostructureImages``, item ids ``<micrograph path>#<crop k>``),
``num_labels`` and ``label_names`` (the training partition's label values: primary_microconstituent by
default; -1 for a value absent from training) and ``target_magnification``. Patch offsets are drawn from a
generator seeded by (seed, partition, micrograph id), so a seed gives the same patches whatever else is in the
fold. Patches are float32 (12 KiB per 48x64 patch) and the whole release gives several hundred thousand of
them: ``max_crops_per_micrograph`` or ``max_upscale`` bound it. The curation and why it is done this way: docs/tasks/microstructure.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from matcv.datamodules.manifest import raise_problems
from matcv.datamodules.microstructure_images import (
    MicrostructureImageDataModule,
    MicrostructureImages,
    labels_of,
    to_unit_range,
)
from matcv.datamodules.uhcsdb.curation import UHCSMicrograph, check_constituents, index_release, scan_release
from matcv.datamodules.uhcsdb.metadata import DATASET_NAME, WHAT, resolve_data_root
from matcv.datamodules.uhcsdb.patches import DEFAULT_PATCH, DEFAULT_REDUNDANCY, crop_count, draw_crops
from matcv.datamodules.uhcsdb.rescale import DEFAULT_BANNER_PX, DEFAULT_MAX_SIDE, iter_rescaled

PARTITIONS = ("train", "val", "test")
PARTITION_STREAMS = {"train": 0, "val": 1, "test": 2}


def _positive_pair(value, name: str) -> tuple[int, int]:
    pair = tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{name} must be two positive integers (height, width), got {value!r}")
    return pair


class UHCSDBDataModule(MicrostructureImageDataModule):
    """Random patches of the UHCSDB micrographs of one fold, rescaled to a common magnification (module doc)."""

    image_kind = "grey"
    periodic = False
    published_name = DATASET_NAME

    def __init__(
        self,
        fold_manifest_path: str | Path,
        fold: int,
        data_root: str | Path | None = None,
        seed: int = 0,
        batch_size: int = 16,
        num_workers: int = 0,
        patch_size: Sequence[int] = DEFAULT_PATCH,
        redundancy: float = DEFAULT_REDUNDANCY,
        target_magnification: float | None = None,
        banner_px: int = DEFAULT_BANNER_PX,
        constituents: Sequence[str] | None = None,
        max_crops_per_micrograph: int | None = None,
        label: str = "primary_microconstituent",
        max_side: int | None = DEFAULT_MAX_SIDE,
        max_upscale: float | None = None,
        progress: bool = True,
    ):
        super().__init__(fold_manifest_path, fold, data_root, seed, batch_size=batch_size, num_workers=num_workers)
        if int(seed) < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        if not redundancy > 0:
            raise ValueError(f"redundancy must be positive, got {redundancy}")
        if int(banner_px) < 0:
            raise ValueError(f"banner_px must be >= 0, got {banner_px}")
        if max_side is not None and int(max_side) < 1:
            raise ValueError(f"max_side must be positive (or None), got {max_side}")
        if max_crops_per_micrograph is not None and int(max_crops_per_micrograph) < 1:
            raise ValueError(f"max_crops_per_micrograph must be at least 1 (or None), got {max_crops_per_micrograph}")
        self.save_hyperparameters()
        self.patch_size = _positive_pair(patch_size, "patch_size")
        self.redundancy = float(redundancy)
        self.requested_magnification = target_magnification
        self.target_magnification: float | None = None  # known after setup (the median unless given)
        self.banner_px = int(banner_px)
        self.constituents = check_constituents(constituents)
        self.max_crops_per_micrograph = None if max_crops_per_micrograph is None else int(max_crops_per_micrograph)
        self.label = label
        self.max_side = None if max_side is None else int(max_side)
        self.max_upscale = max_upscale
        self.progress = progress

    # The harness's class-level hooks.

    @staticmethod
    def prepare_dataset(data_root: str | Path | None, generator: dict | None = None, progress: bool = True) -> Path:
        """Where the release is: ``data_root``, else $MATCV_UHCSDB_ROOT (nothing is generated or downloaded)."""
        return resolve_data_root(data_root)

    @staticmethod
    def index_dataset(data_root: str | Path, constituents: Sequence[str] | None = None,
                      target_magnification: float | None = None, max_upscale: float | None = None,
                      **_unused) -> dict:
        """Items (micrograph paths relative to the root), specimen groups, constituent strata and files (the
        micrographs and the metadata file), from the metadata alone."""
        metadata, selection = scan_release(resolve_data_root(data_root), constituents, target_magnification,
                                           max_upscale)
        return index_release(metadata, selection)

    @staticmethod
    def check_dataset(data_root: str | Path, progress: bool = True, constituents: Sequence[str] | None = None,
                      patch_size: Sequence[int] = DEFAULT_PATCH, target_magnification: float | None = None,
                      banner_px: int = DEFAULT_BANNER_PX, max_side: int | None = DEFAULT_MAX_SIDE,
                      max_upscale: float | None = None, **_unused) -> dict:
        """``index_dataset`` after opening and rescaling every image: one ManifestError listing every bad file
        (missing, unreadable, not 8-bit, smaller than the patch once rescaled). Rescaling is most of the work of
        a setup, so the check also fills the cache of rescaled micrographs."""
        root = resolve_data_root(data_root)
        metadata, selection = scan_release(root, constituents, target_magnification, max_upscale)
        problems: list[str] = []
        for _ in iter_rescaled(root, selection.micrographs, metadata, selection.target_magnification, int(banner_px),
                               max_side, _positive_pair(patch_size, "patch_size"), problems, progress):
            pass
        raise_problems(problems, root, WHAT)
        return index_release(metadata, selection)

    # Lightning.

    def build_datasets(self) -> None:
        root = self.data_root
        metadata, selection = scan_release(root, self.constituents, self.requested_magnification, self.max_upscale,
                                           self.label)
        self.target_magnification = selection.target_magnification
        folds = self.fold_items({m.item_id: m.group for m in selection.micrographs})
        by_id = {m.item_id: m for m in selection.micrographs}
        chosen = {p: [by_id[i] for i in folds[p]] for p in PARTITIONS}
        problems: list[str] = []
        patches = {p: self._patches(root, metadata, chosen[p], p, problems) for p in PARTITIONS}
        raise_problems(problems, root, WHAT)
        _, known = labels_of([m.label for m in chosen["train"]])
        for partition, (images, item_ids, keys) in patches.items():
            labels, _ = labels_of(keys, known)
            self.datasets[partition] = MicrostructureImages(to_unit_range(images)[:, None], item_ids, labels)
        self.label_names = known
        self.num_labels = len(known)

    def _patches(self, root: Path, metadata: Path, micrographs: list[UHCSMicrograph], partition: str,
                 problems: list[str]) -> tuple[np.ndarray, list[str], list[str]]:
        """uint8 patches (N, ph, pw) of one partition with their item ids and label values, in manifest order."""
        stream = PARTITION_STREAMS[partition]
        drawn: dict[int, np.ndarray] = {}
        for micrograph, image in iter_rescaled(root, micrographs, metadata, self.target_magnification, self.banner_px,
                                               self.max_side, self.patch_size, problems, self.progress):
            count = crop_count(*image.shape, self.patch_size, self.redundancy, self.max_crops_per_micrograph)
            rng = np.random.default_rng([self.seed, stream, micrograph.micrograph_id])
            drawn[micrograph.micrograph_id] = draw_crops(image, count, self.patch_size, rng)
        parts, item_ids, keys = [], [], []
        for micrograph in micrographs:
            if micrograph.micrograph_id not in drawn:
                continue  # its problem is in ``problems``
            crops = drawn.pop(micrograph.micrograph_id)
            parts.append(crops)
            item_ids += [f"{micrograph.item_id}#{k}" for k in range(len(crops))]
            keys += [micrograph.label] * len(crops)
        images = np.concatenate(parts) if parts else np.zeros((0, *self.patch_size), np.uint8)
        return images, item_ids, keys
