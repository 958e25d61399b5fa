"""LightningDataModule for the NASA Ni-superalloy segmentation benchmark (Super1 / Super2), as published.

The benchmark of Stuckner et al. (npj Comput. Mater. 8, 200, 2022) is read in its published folder layout
(``matcv.datamodules.superalloy_files``), so a copy of the repository's folder works without conversion.

Why it looks the way it does:
- Groups are the specimen *spot* (``spot3_180d_2`` -> ``spot3``): the release's own split keeps each spot in
  one partition, and grouped CV over spots is what tells how a model does on a location it has never seen.
- Images keep their native resolution: tertiary precipitates are a few pixels across and vanish when
  resized. Training therefore samples random ``crop_size`` crops; validation and test see whole images
  (cropped top-left to a multiple of 32 so any UNet's down/up-sampling fits), one per batch.
- Three splits: ``grouped`` (the harness draws grouped folds over spots), ``official`` (the release's
  train/val/test) and ``ood`` (train/val as released, tested on the Super2 micrographs).

It is ``UserSegmentationDataModule`` (a user's data folder) with a preset (``superalloy_files``): the release
layout read into the same manifest table a user's ``manifest.csv`` gives (group = spot, split = Super1 folder)
and the description its ``dataset.yaml`` would hold (class colours, name). Row checks, image and mask decoding,
size checks, crops, whole-image validation and test, training statistics and the fixed protocols' fold
manifests are that DataModule's, so a user's folder and this benchmark are read and fed to the models by the
same code.
"""

from __future__ import annotations

from pathlib import Path

from matcv.datamodules.dataset_description import DatasetDescription
from matcv.datamodules.superalloy_files import (  # re-exported: the names users of this module know
    CLASS_NAMES,
    DATA_FOLDER,
    DATASET_NAME,
    DESCRIPTION,
    GROUP_COLUMN,
    ROOT_ENV,
    SPLITS,
    WHAT,
    SuperalloyItem,
    check_split,
    index_items,
    read_class_mask,
    read_micrograph,
    read_pair,
    read_release,
    release_table,
    resolve_data_root,
    rgba_mask_to_classes,
    scan_items,
)
from matcv.datamodules.user_segmentation import (
    CROP_STREAM,
    NETWORK_MULTIPLE,
    FolderManifest,
    RandomCrops,
    SegmentationImages,
    UserSegmentationDataModule,
    crop_to_network_multiple,
    fold_manifest_of,
)

# The datasets of a user's folder, under the names this module gave them first.
SuperalloyCrops = RandomCrops
SuperalloyImages = SegmentationImages

__all__ = ["CLASS_NAMES", "CROP_STREAM", "DATA_FOLDER", "ROOT_ENV", "SPLITS", "SuperalloyCrops",
           "SuperalloyDataModule", "SuperalloyImages", "SuperalloyItem", "crop_to_network_multiple", "index_items",
           "read_class_mask", "read_micrograph", "read_pair", "release_table", "resolve_data_root",
           "rgba_mask_to_classes", "scan_items"]


class SuperalloyDataModule(UserSegmentationDataModule):
    """Ni-superalloy gamma' segmentation: 3 classes (matrix, secondary, tertiary) at native resolution."""

    seeded_shuffle = False  # (see BenchmarkDataModule) this task's published runs shuffle from the global RNG
    eval_batch_size = 1  # whole images may differ in size (Super2), so they cannot be stacked
    published_name = DATASET_NAME
    tiled_test = False  # the published protocol: test images cropped top-left to a multiple of 32, one pass
    what = WHAT  # how error messages name the data

    def __init__(
        self,
        fold_manifest_path: str | Path,
        fold: int,
        data_root: str | Path | None = None,
        generator: dict | None = None,  # the harness's hook argument; this is published data, nothing is generated
        split: str = "grouped",
        crop_size: int = 256,
        crops_per_image: int = 8,
        batch_size: int = 4,
        num_workers: int = 0,
        augment: bool = True,
        seed: int = 0,
    ):
        check_split(split)
        if crop_size <= 0 or crop_size % NETWORK_MULTIPLE:
            raise ValueError(f"crop_size must be a positive multiple of {NETWORK_MULTIPLE}, got {crop_size}")
        if crops_per_image < 1:
            raise ValueError(f"crops_per_image must be at least 1, got {crops_per_image}")
        super().__init__(fold_manifest_path, fold, data_root, generator, split="grouped", crop_size=crop_size,
                         crops_per_image=crops_per_image, batch_size=batch_size, num_workers=num_workers,
                         augment=augment, seed=seed)
        self.save_hyperparameters()  # this class's own arguments (its split), as the checkpoints have stored them
        self.split, self.crop_size, self.crops_per_image = split, crop_size, crops_per_image
        self.class_names = CLASS_NAMES
        self.num_classes = len(CLASS_NAMES)
        self.image_size = crop_size  # the training input size (the harness records it); val/test images are whole

    # The preset in place of manifest.csv + dataset.yaml; reading and checking are the user format's.

    def describe(self) -> DatasetDescription:
        return DESCRIPTION

    @classmethod
    def read_folder(cls, data_root: Path, split: str = "grouped") -> FolderManifest:
        return read_release(data_root, split)

    def fold_source(self) -> str:
        return f"{self.fold_manifest_path} (split={self.split!r})"

    def build_datasets(self) -> None:
        super().build_datasets()
        self.class_names = CLASS_NAMES  # the tuple the release's users know

    # The harness's class-level hooks: the release folder (or its parent, or $MATCV_SUPERALLOY_ROOT) and the
    # release's protocols; the work is UserSegmentationDataModule's.

    @classmethod
    def prepare_dataset(cls, data_root: str | Path | None, generator: dict | None = None,
                        progress: bool = True) -> Path:
        """Where the data is: ``data_root``, else $MATCV_SUPERALLOY_ROOT."""
        return resolve_data_root(data_root)

    @classmethod
    def index_dataset(cls, data_root: str | Path, split: str = "grouped", **_unused) -> dict:
        """Items (image paths relative to the root), their spot groups and every file, from names alone."""
        check_split(split)
        root = resolve_data_root(data_root)
        return index_items(scan_items(root, split))

    @classmethod
    def check_dataset(cls, data_root: str | Path, split: str = "grouped", progress: bool = True, crop_size: int = 256,
                      **_unused) -> dict:
        """``index_dataset`` after reading every image and mask, by the user format's check: one ManifestError
        listing every bad file (layout, unreadable, mask of another size, colours that are no class, image too
        small for the network or, where it may be trained on, for ``crop_size``). Also counts class pixels."""
        check_split(split)
        root = resolve_data_root(data_root)
        checked = super().check_dataset(root, progress=progress, split=split, crop_size=crop_size)
        return {**checked, "files": sorted(checked["files"])}

    @classmethod
    def dataset_name(cls, data_root: str | Path, generated: bool) -> str:
        return DATASET_NAME  # wherever the copy lies (the data hash tells copies apart)

    @classmethod
    def fixed_fold_manifest(cls, data_root: str | Path, split: str = "grouped", **_unused) -> dict | None:
        """The published split as a one-fold manifest (make_fold_manifest's format), or None for "grouped"
        (the harness then draws grouped folds over spots itself).

        official: train/val/test = Super1/train, Super1/val, Super1/test.
        ood:      train/val = Super1/train, Super1/val; test = the annotated Super2/different_test images.
        """
        check_split(split)
        if split == "grouped":
            return None
        root = resolve_data_root(data_root)
        return fold_manifest_of(scan_items(root, split), f"the {split!r} split of {root}", GROUP_COLUMN)
