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
"""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from matcv.datamodules.augmentations import OneStreamCompose
from matcv.datamodules.base import BenchmarkDataModule
from matcv.datamodules.corrosion import standardize
from matcv.datamodules.folds import FORMAT, check_no_group_leak
from matcv.datamodules.manifest import ManifestError, raise_problems
from matcv.datamodules.superalloy_files import (  # re-exported: the names users of this module know
    CLASS_NAMES,
    DATA_FOLDER,
    DATASET_NAME,
    GROUP_COLUMN,
    NETWORK_MULTIPLE,
    OOD_SOURCE,
    ROOT_ENV,
    SPLITS,
    WHAT,
    SuperalloyItem,
    check_split,
    crop_to_network_multiple,
    index_items,
    read_class_mask,
    read_micrograph,
    read_pair,
    resolve_data_root,
    rgba_mask_to_classes,
    scan_items,
)

CROP_STREAM = 1  # crop offsets get their own RNG stream, independent of albumentations' default_rng(seed)

__all__ = ["CLASS_NAMES", "DATA_FOLDER", "ROOT_ENV", "SPLITS", "SuperalloyCrops", "SuperalloyDataModule",
           "SuperalloyImages", "crop_to_network_multiple", "read_class_mask", "read_micrograph", "resolve_data_root",
           "rgba_mask_to_classes", "scan_items"]


# --- datasets --------------------------------------------------------------------------------------------

def _sample(image: np.ndarray, mask: np.ndarray, item_id: str, mean: np.ndarray, std: np.ndarray) -> dict:
    return {"image": standardize(image, mean, std),
            "mask": torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64)),
            "item_id": item_id}


class SuperalloyCrops(Dataset):
    """Training partition: ``crops_per_image`` random crops of every image per epoch, each optionally put
    through a random flip / 90-degree rotation (the eight symmetries of a square: micrographs have no up)."""

    def __init__(self, images: list[np.ndarray], masks: list[np.ndarray], item_ids: list[str], mean: np.ndarray,
                 std: np.ndarray, crop_size: int, crops_per_image: int, symmetries: A.Compose | None, seed: int):
        self.images, self.masks, self.item_ids = images, masks, item_ids
        self.mean, self.std = mean.astype(np.float32), std.astype(np.float32)
        self.crop_size, self.crops_per_image, self.symmetries = crop_size, crops_per_image, symmetries
        # Seeded with different entropy than albumentations' default_rng(seed): same-seed generators would
        # draw the same numbers and tie the crop position to the flip decisions.
        self.crop_rng = np.random.default_rng([seed, CROP_STREAM])
        self._seeded_worker: int | None = None

    def _reseed_in_worker(self) -> None:
        # Every DataLoader worker gets a copy of both generators: give each worker its own streams, derived
        # from torch's worker seed (itself derived from the run's seed), as corrosion.PanelPhotos does.
        worker = torch.utils.data.get_worker_info()
        if worker is not None and self._seeded_worker != worker.seed:
            self.crop_rng = np.random.default_rng([worker.seed, CROP_STREAM])
            if self.symmetries is not None:
                self.symmetries.set_random_seed(worker.seed % 2**32)
            self._seeded_worker = worker.seed

    def __len__(self) -> int:
        return len(self.images) * self.crops_per_image

    def __getitem__(self, index: int) -> dict:
        self._reseed_in_worker()
        source = index // self.crops_per_image
        image, mask = self.images[source], self.masks[source]
        top = int(self.crop_rng.integers(0, image.shape[0] - self.crop_size + 1))
        left = int(self.crop_rng.integers(0, image.shape[1] - self.crop_size + 1))
        window = (slice(top, top + self.crop_size), slice(left, left + self.crop_size))
        image, mask = image[window], mask[window]
        if self.symmetries is not None:
            out = self.symmetries(image=np.ascontiguousarray(image), mask=np.ascontiguousarray(mask))
            image, mask = out["image"], out["mask"]
        return _sample(image, mask, self.item_ids[source], self.mean, self.std)


class SuperalloyImages(Dataset):
    """Validation / test partition: whole images (already cropped to a multiple of 32), no augmentation."""

    def __init__(self, images: list[np.ndarray], masks: list[np.ndarray], item_ids: list[str], mean: np.ndarray,
                 std: np.ndarray):
        self.images, self.masks, self.item_ids = images, masks, item_ids
        self.mean, self.std = mean.astype(np.float32), std.astype(np.float32)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return _sample(self.images[index], self.masks[index], self.item_ids[index], self.mean, self.std)


# --- the datamodule --------------------------------------------------------------------------------------

class SuperalloyDataModule(BenchmarkDataModule):
    """Ni-superalloy gamma' segmentation: 3 classes (matrix, secondary, tertiary) at native resolution."""

    seeded_shuffle = False  # (see BenchmarkDataModule) this task's published runs shuffle from the global RNG
    eval_batch_size = 1  # whole images may differ in size (Super2), so they cannot be stacked
    published_name = DATASET_NAME

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
        super().__init__(fold_manifest_path, fold, data_root, seed, generator=generator, batch_size=batch_size,
                         num_workers=num_workers)
        self.save_hyperparameters()
        self.split, self.crop_size, self.crops_per_image, self.augment = split, crop_size, crops_per_image, augment
        self.class_names = CLASS_NAMES
        self.num_classes = len(CLASS_NAMES)
        self.image_size = crop_size  # the training input size (the harness records it); val/test images are whole

    # The harness's class-level hooks.

    @staticmethod
    def prepare_dataset(data_root: str | Path | None, generator: dict | None = None, progress: bool = True) -> Path:
        """Where the data is: ``data_root``, else $MATCV_SUPERALLOY_ROOT."""
        return resolve_data_root(data_root)

    @staticmethod
    def index_dataset(data_root: str | Path, split: str = "grouped", **_unused) -> dict:
        """Items (image paths relative to the root), their spot groups and every file, from names alone."""
        return index_items(scan_items(resolve_data_root(data_root), split))

    @staticmethod
    def check_dataset(data_root: str | Path, split: str = "grouped", progress: bool = True, crop_size: int = 256,
                      **_unused) -> dict:
        """``index_dataset`` after reading every image and mask: one ManifestError listing every bad file
        (unreadable, mask of another size, image too small for the network or, where it may be trained on,
        for ``crop_size``)."""
        root = resolve_data_root(data_root)
        items = scan_items(root, split)
        problems = []
        for item in tqdm(items, desc="checking superalloy images", unit="image", disable=not progress):
            try:
                image, _ = read_pair(root, item)
            except ManifestError as error:
                problems.append(str(error))
                continue
            height, width = image.shape[:2]
            smallest = crop_size if item.source != OOD_SOURCE else NETWORK_MULTIPLE  # Super2 is only tested on
            if min(height, width) < smallest:
                problems.append(f"{root / item.item_id}: image is {width}x{height} px, smaller than {smallest} px")
        raise_problems(problems, root, WHAT)
        return index_items(items)

    @staticmethod
    def fixed_fold_manifest(data_root: str | Path, split: str = "grouped", **_unused) -> dict | None:
        """The published split as a one-fold manifest (make_fold_manifest's format), or None for "grouped"
        (the harness then draws grouped folds over spots itself).

        official: train/val/test = Super1/train, Super1/val, Super1/test.
        ood:      train/val = Super1/train, Super1/val; test = the annotated Super2/different_test images.
        """
        check_split(split)
        if split == "grouped":
            return None
        root = resolve_data_root(data_root)
        items = scan_items(root, split)
        test_source = "test" if split == "official" else OOD_SOURCE
        fold = {partition: sorted(i.item_id for i in items if i.source == source)
                for partition, source in (("train", "train"), ("val", "val"), ("test", test_source))}
        manifest = {
            "format": FORMAT,
            "n_folds": 1,
            "seed": None,  # nothing is drawn: the publisher's split
            # The realised share of validation images in train+val, where make_fold_manifest stores its target.
            "val_fraction": len(fold["val"]) / max(1, len(fold["train"]) + len(fold["val"])),
            "group_column": GROUP_COLUMN,
            "stratify_column": None,
            "groups": dict(sorted((i.item_id, i.group) for i in items)),
            "folds": [fold],
        }
        check_no_group_leak(manifest, source=f"the {split!r} split of {root}")  # a copy could mix spots
        return manifest

    # Lightning.

    def build_datasets(self) -> None:
        root = self.data_root
        items = scan_items(root, self.split)
        folds = self.fold_items({item.item_id: item.group for item in items},
                                source=f"{self.fold_manifest_path} (split={self.split!r})")
        by_id = {item.item_id: item for item in items}
        loaded = {p: self._load(root, [by_id[i] for i in folds[p]]) for p in ("train", "val", "test")}

        train_images, train_masks, train_ids = loaded["train"]
        too_small = [i for i, image in zip(train_ids, train_images) if min(image.shape[:2]) < self.crop_size]
        if too_small:
            raise ValueError(f"crop_size {self.crop_size} is larger than training image(s) {too_small}")
        # Training statistics only (whole images, not crops): nothing of val/test leaks into the inputs.
        pixels = np.concatenate([image.reshape(-1, 3) for image in train_images]).astype(np.float64) / 255.0
        mean, std = pixels.mean(0), pixels.std(0) + 1e-6
        symmetries = OneStreamCompose([A.SquareSymmetry(p=1.0)], self.crop_size, self.seed) if self.augment else None
        self.datasets["train"] = SuperalloyCrops(train_images, train_masks, train_ids, mean, std, self.crop_size,
                                                 self.crops_per_image, symmetries, self.seed)
        for partition in ("val", "test"):
            images, masks, ids = loaded[partition]
            self.datasets[partition] = SuperalloyImages([crop_to_network_multiple(x) for x in images],
                                                        [crop_to_network_multiple(m) for m in masks], ids, mean, std)

    @staticmethod
    def _load(root: Path, items: list[SuperalloyItem]) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
        images, masks, problems = [], [], []
        for item in items:
            try:
                image, mask = read_pair(root, item)
            except ManifestError as error:
                problems.append(str(error))
                continue
            images.append(image)
            masks.append(mask)
        raise_problems(problems, root, WHAT)
        return images, masks, [item.item_id for item in items]
