"""Segmentation of a user's own data folder: ``manifest.csv`` + optional ``dataset.yaml``, any number of classes.

The folder format is described in ``datamodules/dataset_description.py`` (and docs/data.md). Two ways to
feed a network, chosen by ``image_size`` or ``crop_size`` (the DataModule's argument, else dataset.yaml's):

- ``crop_size``: images keep their native resolution (fine features survive). Training draws
  ``crops_per_image`` random crops of every image per epoch; validation sees whole images cropped top-left to
  a multiple of 32; test sees whole images, which the model scores pixel by pixel, tiling those larger than
  the crop (``eval_tile_size``, see ``lightning_modules.segmentation``).
- ``image_size``: every image is resized to a square (area interpolation; masks nearest-neighbour) for
  training and validation. Test images are resized for the network too, but scored at their native size: the
  model's logits are upsampled (bilinear) to the native mask, which is never resized, so crop and resize modes
  score the same pixels (``lightning_modules.segmentation.at_mask_size``).

Two classes train binary models (one sigmoid map, class 1 the foreground), more train one output per class.
Ignored pixels (dataset.yaml's ``ignore``) keep the class index ``IGNORE_INDEX`` and are neither learnt nor
scored. The NASA superalloy benchmark (``datamodules/superalloy.py``) is this DataModule with a preset: its
published layout read into the same manifest table (``read_folder``), checked and decoded by the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from matcv.datamodules.augmentations import OneStreamCompose
from matcv.datamodules.base import BenchmarkDataModule
from matcv.datamodules.corrosion import standardize
from matcv.datamodules.dataset_description import (
    DESCRIPTION_NAME,
    IGNORE_INDEX,
    DatasetDescription,
    read_description,
    read_image_file,
    read_mask_file,
)
from matcv.datamodules import folds
from matcv.datamodules.folds import PARTITIONS, fixed_split_manifest
from matcv.datamodules.manifest import (
    MANIFEST_NAME,
    ManifestError,
    ManifestSpec,
    raise_problems,
    read_mask,
    scan_manifest,
)
from matcv.datamodules.rare_class_sampling import RareClassCrops, rare_class_indices, rare_class_sampler

GROUP_COLUMN = "group"
STRATUM_COLUMN = "stratum"
SPLIT_MODES = ("grouped", "manifest")  # grouped folds drawn by the harness, or the manifest's split column
NETWORK_MULTIPLE = 32  # five 2x down-samplings of a UNet encoder
DEFAULT_CROPS_PER_IMAGE = 8
CROP_STREAM = 1  # crop offsets get their own RNG stream, independent of albumentations' default_rng(seed)
# A group in two splits is a warning: grouped CV ignores the split column, and the published-split protocol runs
# with the leak declared (``fixed_fold_manifest``).
SPEC = ManifestSpec(group_column=GROUP_COLUMN, require_mask=True, check_split=True, split_leaks="warning")
BINARY_CLASS_NAMES = ("background", "foreground")


@dataclass(frozen=True)
class SegmentationItem:
    item_id: str  # the image's path relative to the data root
    mask_path: str  # relative to the data root
    group: str
    source: str | None = None  # the publisher's partition (train/val/test, or "ood"), when there is one
    row: int | None = None  # the manifest row, for messages


@dataclass(frozen=True)
class InputSize:
    """How images reach the network: random crops of ``size`` at native resolution, or resized to ``size``."""

    mode: str  # "crop" or "resize"
    size: int
    crops_per_image: int = DEFAULT_CROPS_PER_IMAGE


def input_size(description: DatasetDescription | None, image_size: int | None = None, crop_size: int | None = None,
               crops_per_image: int | None = None) -> InputSize:
    """The input size from the arguments, else from dataset.yaml; ValueError when neither gives one or a value
    does not fit a UNet (a positive multiple of 32)."""
    if image_size is not None and crop_size is not None:
        raise ValueError(f"give image_size ({image_size}) or crop_size ({crop_size}), not both: image_size resizes "
                         f"every image, crop_size trains on random crops at native resolution")
    if image_size is None and crop_size is None and description is not None:
        image_size, crop_size = description.image_size, description.crop_size
    if image_size is None and crop_size is None:
        raise ValueError(f"no input size: give crop_size (random crops at native resolution) or image_size (resize) "
                         f"in {DESCRIPTION_NAME}, or --crop-size / --image-size")
    mode, size = ("crop", crop_size) if crop_size is not None else ("resize", image_size)
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0 or size % NETWORK_MULTIPLE:
        raise ValueError(f"{mode}_size must be a positive multiple of {NETWORK_MULTIPLE}, got {size!r}")
    crops = crops_per_image if crops_per_image is not None else (description.crops_per_image if description else None)
    crops = DEFAULT_CROPS_PER_IMAGE if crops is None else crops
    if isinstance(crops, bool) or not isinstance(crops, int) or crops < 1:
        raise ValueError(f"crops_per_image must be at least 1, got {crops!r}")
    return InputSize(mode, size, crops)


def describes_masks(description: DatasetDescription | None) -> bool:
    """Whether dataset.yaml lists mask classes (it may describe only a name, sizes or labels: binary masks)."""
    return description is not None and bool(description.classes)


def class_names_of(description: DatasetDescription | None) -> list[str]:
    return description.class_names if describes_masks(description) else list(BINARY_CLASS_NAMES)


def model_outputs_of(description: DatasetDescription | None) -> int:
    """The ``num_classes`` a model needs for this data (1: binary, one sigmoid map)."""
    return description.model_outputs if describes_masks(description) else 1


# --- reading -------------------------------------------------------------------------------------------------

@dataclass
class FolderManifest:
    """A data folder read as a manifest: its description, the items of its rows, the problems of its rows, the
    (row, column) cells whose file must not be opened, the table, and what messages name (``where``: the
    manifest file, or a preset's folder; ``what``: how they call the data)."""

    description: DatasetDescription | None
    items: list[SegmentationItem]
    problems: list[str]
    unreadable: set[tuple[int, str]]
    table: object
    where: Path
    what: str | None = None


def manifest_items(data_root: Path, spec: ManifestSpec = SPEC, table=None
                   ) -> tuple[list[SegmentationItem], list[str], set[tuple[int, str]], object]:
    """(items of the manifest's rows, problems of its rows, (row, column) cells whose file must not be opened,
    the table). ``table``: a preset's manifest (``superalloy_files.release_table``) in place of manifest.csv."""
    table, problems, unreadable = scan_manifest(data_root, spec, table)
    splits = list(table["split"]) if "split" in table.columns else [None] * len(table)
    splits = [s if isinstance(s, str) else None for s in splits]  # pandas holds an empty cell as NaN
    items = [SegmentationItem(r.image_path, r.mask_path, r.group, split, int(r.row))
             for r, split in zip(table.itertuples(index=False), splits)]
    return items, problems, unreadable, table


def read_item(root: Path, item: SegmentationItem,
              description: DatasetDescription | None) -> tuple[np.ndarray, np.ndarray]:
    """(RGB image: uint8, or float32 in [0, 1] for 16-bit files; class mask uint8) of one item, or a
    ManifestError naming the row and the file."""
    where = f"row {item.row}: " if item.row is not None else ""
    try:
        image = read_image_file(root / item.item_id, getattr(description, "image_bits", None))
        if not describes_masks(description):  # binary masks {0,1} or {0,255}, read as they always were
            record = SimpleNamespace(row=item.row, mask_path=item.mask_path, image_path=item.item_id)
            return image, read_mask(root, record, image.shape[:2])
        mask = read_mask_file(root / item.mask_path, description)
    except ManifestError as error:
        message = str(error)
        raise ManifestError(message if message.startswith("row ") else where + message) from error
    if mask.shape != image.shape[:2]:
        raise ManifestError(f"{where}{root / item.mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} px but its image "
                            f"{item.item_id} is {image.shape[1]}x{image.shape[0]} px")
    return image, mask


def crop_to_network_multiple(array: np.ndarray, multiple: int = NETWORK_MULTIPLE) -> np.ndarray:
    """Top-left crop of an image or mask to the largest multiple of ``multiple`` in each dimension."""
    height, width = (array.shape[0] // multiple) * multiple, (array.shape[1] // multiple) * multiple
    if height == 0 or width == 0:
        raise ValueError(f"an image of {array.shape[1]}x{array.shape[0]} px is smaller than {multiple} px")
    return array[:height, :width]


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image area-resized, mask nearest-neighbour (class indices must not blend) to size x size."""
    if image.shape[:2] == (size, size):
        return image, mask
    return (cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA),
            cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST))


# --- datasets --------------------------------------------------------------------------------------------

def standardize_any(image: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """(3, H, W) float tensor of a uint8 or unit-float RGB image, standardised with the training statistics."""
    if image.dtype == np.uint8:
        return standardize(image, mean, std)  # the corrosion/superalloy arithmetic, bit for bit
    x = (image.astype(np.float32) - mean) / std
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1).astype(np.float32)))


def mask_tensor(mask: np.ndarray, binary: bool) -> torch.Tensor:
    """Multi-class: (H, W) int64 class indices; binary: (1, H, W) float 0/1, as binary models take it. Ignored
    pixels stay IGNORE_INDEX either way."""
    mask = np.ascontiguousarray(mask)
    if binary:
        return torch.from_numpy(mask[None].astype(np.float32))
    return torch.from_numpy(mask.astype(np.int64))


def training_statistics(images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Channel mean and std (+1e-6) of the training images, in unit scale."""
    pixels = np.concatenate([image.reshape(-1, 3) for image in images])
    pixels = pixels.astype(np.float64) / 255.0 if pixels.dtype == np.uint8 else pixels.astype(np.float64)
    return pixels.mean(0), pixels.std(0) + 1e-6


class RandomCrops(Dataset):
    """Training partition: ``crops_per_image`` random crops of every image per epoch, each optionally put
    through ``symmetries`` (e.g. the eight symmetries of a square: micrographs have no up)."""

    def __init__(self, images: list[np.ndarray], masks: list[np.ndarray], item_ids: list[str], mean: np.ndarray,
                 std: np.ndarray, crop_size: int, crops_per_image: int, symmetries: A.Compose | None, seed: int,
                 binary: bool = False):
        self.images, self.masks, self.item_ids = images, masks, item_ids
        self.mean, self.std = mean.astype(np.float32), std.astype(np.float32)
        self.crop_size, self.crops_per_image, self.symmetries = crop_size, crops_per_image, symmetries
        self.binary = binary
        # Seeded with different entropy than albumentations' default_rng(seed): same-seed generators would
        # draw the same numbers and tie the crop position to the flip decisions.
        self.crop_rng = np.random.default_rng([seed, CROP_STREAM])
        self._seeded_worker: int | None = None
        self.crop_bias: RareClassCrops | None = None  # crops placed over rare-class pixels (dataset.yaml oversample)

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
        placed = self.crop_bias.origin(source, self.crop_rng) if self.crop_bias is not None else None
        if placed is not None:
            top, left = placed
        else:
            top = int(self.crop_rng.integers(0, image.shape[0] - self.crop_size + 1))
            left = int(self.crop_rng.integers(0, image.shape[1] - self.crop_size + 1))
        window = (slice(top, top + self.crop_size), slice(left, left + self.crop_size))
        image, mask = image[window], mask[window]
        if self.symmetries is not None:
            out = self.symmetries(image=np.ascontiguousarray(image), mask=np.ascontiguousarray(mask))
            image, mask = out["image"], out["mask"]
        return {"image": standardize_any(image, self.mean, self.std), "mask": mask_tensor(mask, self.binary),
                "item_id": self.item_ids[source]}


class SegmentationImages(Dataset):
    """Whole (or resized) images of one partition, optionally augmented (the resized training partition)."""

    def __init__(self, images: list[np.ndarray], masks: list[np.ndarray], item_ids: list[str], mean: np.ndarray,
                 std: np.ndarray, augment: A.Compose | None = None, binary: bool = False):
        self.images, self.masks, self.item_ids = images, masks, item_ids
        self.mean, self.std = mean.astype(np.float32), std.astype(np.float32)
        self.augment, self.binary = augment, binary
        self._seeded_worker: int | None = None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        image, mask = self.images[index], self.masks[index]
        if self.augment is not None:
            worker = torch.utils.data.get_worker_info()
            if worker is not None and self._seeded_worker != worker.seed:  # each worker its own stream
                self.augment.set_random_seed(worker.seed % 2**32)
                self._seeded_worker = worker.seed
            out = self.augment(image=np.ascontiguousarray(image), mask=np.ascontiguousarray(mask))
            image, mask = out["image"], out["mask"]
        return {"image": standardize_any(image, self.mean, self.std), "mask": mask_tensor(mask, self.binary),
                "item_id": self.item_ids[index]}


def symmetry_transforms(kind: str) -> list:
    """``square``: the eight symmetries of a square (micrographs have no up); ``flips``: horizontal and vertical
    flips only (photos whose 90-degree turns are not alike, e.g. a vertical scribe); ``none``."""
    if kind == "square":
        return [A.SquareSymmetry(p=1.0)]
    if kind == "flips":
        return [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
    return []


# --- the datamodule --------------------------------------------------------------------------------------

class UserSegmentationDataModule(BenchmarkDataModule):
    """Segmentation of a user's data folder (manifest.csv + optional dataset.yaml), binary or multi-class.

    A preset for data in a published layout (the NASA superalloy release) overrides ``read_folder`` (the layout
    as a manifest table and description), ``describe`` and where the data root is; reading, checking, folds and
    the datasets built from the items are this class's.
    """

    # Whole test images, scored by the model tile by tile (crop mode); False: cropped top-left to a multiple
    # of 32 and scored in one pass (the published superalloy protocol).
    tiled_test = True

    def __init__(
        self,
        fold_manifest_path: str | Path,
        fold: int,
        data_root: str | Path | None = None,
        generator: dict | None = None,  # the harness's hook argument; a user's data is not generated
        split: str = "grouped",
        image_size: int | None = None,
        crop_size: int | None = None,
        crops_per_image: int | None = None,
        batch_size: int = 4,
        num_workers: int = 0,
        augment: bool = True,
        seed: int = 0,
    ):
        if split not in SPLIT_MODES:
            raise ValueError(f"split must be one of {SPLIT_MODES}, got {split!r}")
        super().__init__(fold_manifest_path, fold, data_root, seed, generator=generator, batch_size=batch_size,
                         num_workers=num_workers)
        if type(self).__init__ is UserSegmentationDataModule.__init__:
            # A subclass with arguments of its own saves those (Lightning would collect this __init__'s too).
            self.save_hyperparameters()
        self.split, self.augment = split, augment
        self.requested_sizes = (image_size, crop_size, crops_per_image)
        self.description: DatasetDescription | None = None
        self.eval_tile_size: int | None = None
        self.has_ignored_pixels = False

    # Data-specific parts (a subclass for another layout overrides them).

    def describe(self) -> DatasetDescription | None:
        return read_description(self.data_root)

    @classmethod
    def read_folder(cls, data_root: Path, split: str = "grouped") -> FolderManifest:
        """The folder as a manifest: manifest.csv + dataset.yaml here; a preset reads a published layout into
        the same table (``superalloy_files.read_release``), and everything after is this class's."""
        items, problems, unreadable, table = manifest_items(data_root)
        return FolderManifest(read_description(data_root), items, problems, unreadable, table,
                              data_root / MANIFEST_NAME)

    def list_items(self) -> list[SegmentationItem]:
        folder = self.read_folder(self.data_root, self.split)
        raise_problems(folder.problems, folder.where, folder.what)
        return folder.items

    def read(self, item: SegmentationItem) -> tuple[np.ndarray, np.ndarray]:
        return read_item(self.data_root, item, self.description)

    def fold_source(self) -> str | None:
        return None

    # The harness's class-level hooks.

    @classmethod
    def prepare_dataset(cls, data_root: str | Path | None, generator: dict | None = None,
                        progress: bool = True) -> Path:
        if data_root is None:
            raise FileNotFoundError(f"{cls.__name__} reads a data folder of your own: give it with --data-root "
                                    f"(a folder with {MANIFEST_NAME} and, optionally, {DESCRIPTION_NAME})")
        return Path(data_root)

    @classmethod
    def index_dataset(cls, data_root: str | Path, split: str = "grouped", **_unused) -> dict:
        """Items, groups, strata (the ``stratum`` column, when every row has one) and files, from the manifest
        alone; dataset.yaml is checked and counted among the files (its class map is part of the data)."""
        root = Path(data_root)
        folder = cls.read_folder(root, split)
        raise_problems(folder.problems, folder.where, folder.what)
        return _index(root, folder.items, folder.table)

    @classmethod
    def check_dataset(cls, data_root: str | Path, progress: bool = True, split: str = "grouped",
                      image_size: int | None = None, crop_size: int | None = None, crops_per_image: int | None = None,
                      **_unused) -> dict:
        """``index_dataset`` after reading every image and mask: one ManifestError listing every problem of the
        manifest's rows and of the files (unreadable or oversized images, mask values outside the class map with
        where they are, sizes, images smaller than the crop). The index also counts each class's pixels."""
        root = Path(data_root)
        folder = cls.read_folder(root, split)
        description, items, problems, unreadable, table = (folder.description, folder.items, list(folder.problems),
                                                           folder.unreadable, folder.table)
        size = input_size(description, image_size, crop_size, crops_per_image)
        if split == "manifest" and "split" not in table.columns:
            problems.append(f"split 'manifest' needs a 'split' column (train/val/test) in {MANIFEST_NAME}")
        names = class_names_of(description)
        pixels = np.zeros(len(names), np.int64)
        for item in tqdm(items, desc="checking images and masks", unit="image", disable=not progress):
            # A row a fixed split only tests on is never cropped for training: it need only fit the network.
            tested_only = split != "grouped" and item.source == "test"
            smallest = size.size if size.mode == "crop" and not tested_only else NETWORK_MULTIPLE
            if (item.row, "image_path") in unreadable:
                continue
            try:
                if (item.row, "mask_path") in unreadable:  # its path is reported; its image may be bad too
                    read_image_file(root / item.item_id)
                    continue
                image, mask = read_item(root, item, description)
            except ManifestError as error:
                message = str(error)
                problems.append(message if message.startswith("row ") else f"row {item.row}: {message}")
                continue
            height, width = image.shape[:2]
            if min(height, width) < smallest:
                what = f"crop_size {size.size}" if smallest == size.size else f"{NETWORK_MULTIPLE} px"
                problems.append(f"row {item.row}: {root / item.item_id}: image is {width}x{height} px, "
                                f"smaller than {what}")
            counts = np.bincount(mask.ravel(), minlength=256)
            pixels += counts[:len(names)]
        raise_problems(problems, folder.where, folder.what)
        return {**_index(root, items, table), "class_pixels": dict(zip(names, pixels.tolist())),
                "notes": list(table.attrs.get("notes", [])), "warnings": list(table.attrs.get("warnings", []))}

    @classmethod
    def dataset_name(cls, data_root: str | Path, generated: bool) -> str:
        """dataset.yaml's ``name``, else the folder's name."""
        description = read_description(data_root) if not generated else None
        if description is not None and description.name:
            return description.name
        return super().dataset_name(data_root, generated)

    @classmethod
    def fixed_fold_manifest(cls, data_root: str | Path, split: str = "grouped", **_unused) -> dict | None:
        """split="manifest": the manifest's ``split`` column as a one-fold manifest, the published-split protocol
        (every row needs a split; a group in two splits is declared in the manifest, ``published_split_manifest``);
        "grouped": None (the harness draws grouped folds)."""
        if split == "grouped":
            return None
        if split not in SPLIT_MODES:
            raise ValueError(f"split must be one of {SPLIT_MODES}, got {split!r}")
        root = Path(data_root)
        folder = cls.read_folder(root, split)
        problems = list(folder.problems)
        if "split" not in folder.table.columns:
            problems.append(f"split 'manifest' needs a 'split' column (train/val/test) in {MANIFEST_NAME}")
        raise_problems(problems, folder.where, folder.what)
        return published_split_manifest(folder.items, f"the split column of {root / MANIFEST_NAME}")

    # Lightning.

    def build_datasets(self) -> None:
        self.description = self.describe()
        size = input_size(self.description, *self.requested_sizes)
        self.class_names = class_names_of(self.description)
        self.num_classes = model_outputs_of(self.description)
        self.image_size = size.size  # the training input size (the harness records it)
        binary = self.num_classes == 1

        items = self.list_items()
        folds = self.fold_items({item.item_id: item.group for item in items}, source=self.fold_source())
        by_id = {item.item_id: item for item in items}
        loaded = {p: self._load([by_id[i] for i in folds[p]]) for p in PARTITIONS}
        train_images, train_masks, train_ids = loaded["train"]
        # Ignored pixels in what a model learns or is selected on (test scoring leaves them out for any model).
        self.has_ignored_pixels = any((mask == IGNORE_INDEX).any() for mask in train_masks + loaded["val"][1])
        kind = (self.description.augment if self.description is not None and self.description.augment else
                self.default_augment(size)) if self.augment else "none"
        transforms = symmetry_transforms(kind)

        if size.mode == "crop":
            too_small = [i for i, image in zip(train_ids, train_images) if min(image.shape[:2]) < size.size]
            if too_small:
                raise ValueError(f"crop_size {size.size} is larger than training image(s) {too_small}")
            # Training statistics only (whole images, not crops): nothing of val/test leaks into the inputs.
            mean, std = training_statistics(train_images)
            symmetries = OneStreamCompose(transforms, size.size, self.seed) if transforms else None
            self.datasets["train"] = RandomCrops(train_images, train_masks, train_ids, mean, std, size.size,
                                                 size.crops_per_image, symmetries, self.seed, binary)
            self.datasets["train"].crop_bias = self._rare_class_crops(train_masks, size.size)
            for partition in ("val", "test"):
                images, masks, ids = loaded[partition]
                if partition == "val" or not self.tiled_test:
                    images = [crop_to_network_multiple(x) for x in images]
                    masks = [crop_to_network_multiple(m) for m in masks]
                self.datasets[partition] = SegmentationImages(images, masks, ids, mean, std, binary=binary)
            self.eval_batch_size = 1  # whole images may differ in size
            self.eval_tile_size = size.size if self.tiled_test else None
        else:
            resized = {p: ([], [], ids) for p, (_, _, ids) in loaded.items()}
            for partition, (images, masks, _) in loaded.items():
                for image, native in zip(images, masks):
                    image, mask = resize_pair(image, native, size.size)
                    resized[partition][0].append(image)
                    # Test masks stay native: the prediction is scored at the image's own size (at_mask_size).
                    resized[partition][1].append(native if partition == "test" else mask)
            self.eval_batch_size = 1  # native test masks may differ in size
            mean, std = training_statistics(resized["train"][0])
            augment = OneStreamCompose(transforms, size.size, self.seed) if transforms else None
            for partition, (images, masks, ids) in resized.items():
                self.datasets[partition] = SegmentationImages(images, masks, ids, mean, std,
                                                              augment if partition == "train" else None, binary)

    # Rare classes (dataset.yaml's ``oversample`` / ``rare_classes``; datamodules/rare_class_sampling.py).

    def _rare_classes(self) -> tuple[tuple[int, ...], object] | None:
        spec = getattr(self.description, "oversample", None)
        return None if spec is None else (rare_class_indices(self.class_names, spec.classes), spec)

    def _rare_class_crops(self, masks: list[np.ndarray], crop_size: int) -> RareClassCrops | None:
        rare = self._rare_classes()
        if rare is None or rare[1].crop_probability == 0:
            return None
        return RareClassCrops(masks, rare[0], crop_size, rare[1].crop_probability)

    def train_dataloader(self) -> DataLoader:
        """Shuffled as every DataModule's, or, with rare classes to over-sample, drawn by a weighted sampler
        (seeded by the DataModule's seed; from the global RNG for the harness's replicates)."""
        rare = self._rare_classes()
        if rare is None or rare[1].factor == 1:
            return super().train_dataloader()
        train = self.datasets["train"]
        sampler = rare_class_sampler(train.masks, rare[0], rare[1].factor, self.seed if self.seeded_shuffle else None,
                                     getattr(train, "crops_per_image", 1))
        return DataLoader(train, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    @staticmethod
    def default_augment(size: InputSize) -> str:
        return "square"

    def _load(self, items: list[SegmentationItem]) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
        images, masks, problems = [], [], []
        for item in items:
            try:
                image, mask = self.read(item)
            except ManifestError as error:
                problems.append(str(error))
                continue
            images.append(image)
            masks.append(mask)
        raise_problems(problems, self.data_root, getattr(self, "what", None))
        return images, masks, [item.item_id for item in items]


def _index(root: Path, items: list[SegmentationItem], table) -> dict:
    strata = None
    if STRATUM_COLUMN in table.columns and table[STRATUM_COLUMN].notna().all():
        strata = [str(s).strip() for s in table[STRATUM_COLUMN]]
    files = [i.item_id for i in items] + [i.mask_path for i in items]
    files += [DESCRIPTION_NAME] if (root / DESCRIPTION_NAME).is_file() else []
    return {"items": [i.item_id for i in items], "groups": [i.group for i in items], "strata": strata, "files": files}


def fold_manifest_of(items: list[SegmentationItem], source: str, group_column: str = GROUP_COLUMN,
                     partition_of: dict[str, str] | None = None, declare: bool = False) -> dict:
    """A one-fold manifest (make_fold_manifest's format) of a fixed split: ``partition_of`` maps each item's
    ``source`` to train/val/test (default: the source is the partition); items of other sources are left out."""
    partition_of = partition_of or {p: p for p in PARTITIONS}
    rows = [(i.item_id, i.group, partition_of.get(i.source)) for i in items]
    return fixed_split_manifest(rows, source, group_column, declare)


def published_split_manifest(items: list[SegmentationItem], source: str) -> dict:
    """A user's own split (the manifest's ``split`` column) as the published-split protocol
    (``folds.published_split_manifest``)."""
    return folds.published_split_manifest([(i.item_id, i.group, i.source) for i in items], source, GROUP_COLUMN)
