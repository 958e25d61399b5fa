"""LightningDataModule for the NASA Ni-superalloy segmentation benchmark (Super1 / Super2), as published.

The benchmark of Stuckner et al. (npj Comput. Mater. 8, 200, 2022) ships as folders of TIFFs, not as a
matcv ``manifest.csv``: ``Super1/{train,val,test}/*.tif`` with RGBA masks in ``{train,val,test}_annot/
<name>_mask.tif``, and ``Super2/different_test{,_annot}/`` (out-of-distribution micrographs). This module
reads that layout directly, so a copy of the repository's folder works without conversion.

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

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import lightning as L
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from matcv.datamodules.augmentations import OneStreamCompose
from matcv.datamodules.corrosion import standardize
from matcv.datamodules.folds import (
    FORMAT,
    check_matches_data,
    check_no_group_leak,
    read_fold_manifest,
)
from matcv.datamodules.manifest import MAX_LISTED_PROBLEMS, ManifestError

# Class order and names follow nasa/pretrained-microscopy-models (examples/multiclass_segmentation_example
# .ipynb: class_values = {'matrix': [0,0,0], 'secondary': [255,0,0], 'tertiary': [0,0,255]}, with
# pretrained_microscopy_models/io.py making class 0 "everything that is no other class"). That repository
# reads masks with cv2.imread, i.e. in *BGR* order, so its [255,0,0] is RGB pure blue and [0,0,255] is RGB
# pure red. The data agree: blue regions are the large blocky gamma' (~50 % of the area, blobs of ~2000 px),
# red ones the fine dots (~2-4 %, blobs of ~50 px) -- secondary and tertiary gamma' respectively.
CLASS_NAMES: tuple[str, ...] = ("matrix", "secondary", "tertiary")
MASK_COLOURS_RGB: dict[tuple[int, int, int], int] = {(0, 0, 255): 1, (255, 0, 0): 2}  # anything else: matrix

ROOT_ENV = "MATCV_SUPERALLOY_ROOT"
DATA_FOLDER = "benchmark_segmentation_data"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ROOT = PROJECT_ROOT.parent / "shared" / "data" / "nasa-pretrained-microscopy-models" / DATA_FOLDER
DATASET_NAME = "nasa-superalloy"

SPLITS = ("grouped", "official", "ood")
GROUP_COLUMN = "spot"
PHOTO_COLUMN = "image_path"  # the harness's deliberately leaky photo-level folds group by the item itself
SUPER1 = "Super1"
SUPER1_PARTITIONS = ("train", "val", "test")
OOD_IMAGES, OOD_MASKS = "Super2/different_test", "Super2/different_test_annot"
OOD_SOURCE = "ood"
IMAGE_SUFFIXES = (".tif", ".tiff")
SPOT_NAME = re.compile(r"spot(\d+)_(\d+)d_(\d+)", re.IGNORECASE)  # spot<location>_<ageing days>d_<frame>
NETWORK_MULTIPLE = 32  # five 2x down-samplings of a UNet encoder
IMAGE_MODES = ("1", "L", "LA", "P", "RGB", "RGBA")  # 8-bit modes PIL converts to RGB without loss
CROP_STREAM = 1  # crop offsets get their own RNG stream, independent of albumentations' default_rng(seed)

LAYOUT_HELP = (
    f"expected the '{DATA_FOLDER}' folder of nasa/pretrained-microscopy-models (or its parent), laid out as\n"
    f"  {SUPER1}/{{train,val,test}}/<name>.tif  with masks in  {SUPER1}/{{train,val,test}}_annot/<name>_mask.tif\n"
    f"  {OOD_IMAGES}/<name>.tif  with masks in  {OOD_MASKS}/<name>_mask.tif  (needed by split='ood')\n"
    f"Point matcv at a copy with --data-root PATH or the environment variable {ROOT_ENV}=PATH."
)


# --- masks -----------------------------------------------------------------------------------------------

def rgba_mask_to_classes(rgba: np.ndarray) -> np.ndarray:
    """Class indices (uint8 H x W) of an RGB(A) uint8 mask: pure blue -> 1 secondary, pure red -> 2 tertiary,
    every other colour -> 0 matrix (the annotators painted over the grey micrograph, so grey means matrix).

    Alpha: every published mask is fully opaque (alpha 255 everywhere), so alpha carries no label. A mask
    with any non-opaque pixel is some other export whose meaning is not ours to guess: ValueError.
    """
    rgba = np.asarray(rgba)
    if rgba.ndim != 3 or rgba.shape[-1] not in (3, 4):
        raise ValueError(f"expected an H x W x 3 (RGB) or H x W x 4 (RGBA) mask, got shape {rgba.shape}")
    if rgba.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit mask (pure red = 255,0,0), got dtype {rgba.dtype}")
    if rgba.shape[-1] == 4:
        translucent = int(np.count_nonzero(rgba[..., 3] != 255))
        if translucent:
            raise ValueError(f"{translucent} pixel(s) are not fully opaque (alpha != 255); the published masks "
                             f"are opaque everywhere -- flatten the mask onto its micrograph and save it again")
    rgb = rgba[..., :3]
    classes = np.zeros(rgb.shape[:2], np.uint8)
    for colour, index in MASK_COLOURS_RGB.items():
        classes[(rgb == colour).all(axis=-1)] = index
    return classes


def read_micrograph(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3) of one image file (grey replicated to three channels), or ManifestError.

    PIL, not cv2: cv2.imread gives BGR(A) channel order, the very mix-up that hides in the upstream code.
    """
    try:
        with Image.open(path) as handle:
            mode = handle.mode
            image = np.asarray(handle.convert("RGB")) if mode in IMAGE_MODES else None
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ManifestError(f"{path}: cannot read image ({error})") from error
    if image is None:  # e.g. 16-bit grey: PIL would clip it to 8 bits without a word
        raise ManifestError(f"{path}: image mode {mode!r} is not 8-bit grey or RGB; save it as 8-bit")
    return image


def read_class_mask(path: Path) -> np.ndarray:
    """Class indices (uint8 H x W) of one mask file, or ManifestError naming the file and the problem."""
    try:
        with Image.open(path) as handle:
            mode = handle.mode
            array = np.asarray(handle.convert("RGBA") if mode == "P" else handle)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ManifestError(f"{path}: cannot read mask ({error})") from error
    if array.ndim != 3:
        raise ManifestError(f"{path}: mask is a single-channel ({mode}) image; expected an RGB(A) mask with "
                            f"secondary precipitates painted pure blue and tertiary ones pure red")
    try:
        return rgba_mask_to_classes(array)
    except ValueError as error:
        raise ManifestError(f"{path}: {error}") from error


# --- the data root and its items -------------------------------------------------------------------------

def resolve_data_root(data_root: str | Path | None = None) -> Path:
    """``data_root``, else $MATCV_SUPERALLOY_ROOT, else the project's shared copy; the folder itself or its
    parent. FileNotFoundError says what was looked for and how to point matcv elsewhere."""
    if data_root is not None:
        given, origin = Path(data_root), "--data-root / data_root"
    elif os.environ.get(ROOT_ENV):
        given, origin = Path(os.environ[ROOT_ENV]), f"${ROOT_ENV}"
    else:
        given, origin = DEFAULT_ROOT, "the default location"
    for candidate in (given, given / DATA_FOLDER):
        if (candidate / SUPER1).is_dir():
            return candidate
    state = "does not exist" if not given.exists() else f"has no {SUPER1}/ folder (nor {DATA_FOLDER}/{SUPER1}/)"
    raise FileNotFoundError(f"Ni-superalloy benchmark data not found: {given} (from {origin}) {state}.\n"
                            f"{LAYOUT_HELP}")


@dataclass(frozen=True)
class SuperalloyItem:
    item_id: str  # the image's path relative to the data root, e.g. "Super1/train/spot3_0d_3.tif"
    mask_path: str  # relative to the data root
    group: str  # "spot3", or "ood:<stem>" for a Super2 micrograph
    source: str  # "train" / "val" / "test" (the Super1 folder) or "ood"


def _tiffs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def _scan_folder(root: Path, images_rel: str, masks_rel: str, source: str, problems: list[str],
                 skipped: list[str]) -> list[SuperalloyItem]:
    """Items of one image folder, matched to masks by name; name-level problems go to ``problems``.

    A Super1 image needs a mask (the benchmark is its 18 annotated images); a Super2 image without one is
    skipped (listed in ``skipped``), since only annotated micrographs can be scored.
    """
    image_dir, mask_dir = root / images_rel, root / masks_rel
    missing = [f"{d}/" for d in (image_dir, mask_dir) if not d.is_dir()]
    if missing:
        problems += [f"folder {d} is missing" for d in missing]
        return []
    masks = {p.name: p for p in _tiffs(mask_dir)}
    claimed: set[str] = set()
    items = []
    for image in _tiffs(image_dir):
        image_id = f"{images_rel}/{image.name}"
        if source == OOD_SOURCE:
            group = f"ood:{image.stem}"
        else:
            match = SPOT_NAME.fullmatch(image.stem)
            if match is None:
                problems.append(f"{image}: cannot tell the specimen spot from the name; expected "
                                f"spot<N>_<days>d_<k>.tif (e.g. spot3_180d_2.tif)")
                continue
            group = f"spot{int(match.group(1))}"
        candidates = [f"{image.stem}_mask{suffix}" for suffix in dict.fromkeys((image.suffix, *IMAGE_SUFFIXES))]
        mask_name = next((name for name in candidates if name in masks), None)
        if mask_name is None:
            if source == OOD_SOURCE:
                skipped.append(image_id)
            else:
                problems.append(f"{image}: no mask; expected {mask_dir / candidates[0]}")
            continue
        claimed.add(mask_name)
        items.append(SuperalloyItem(image_id, f"{masks_rel}/{mask_name}", group, source))
    for name in sorted(set(masks) - claimed):
        stem = Path(name).stem
        expected = f"{stem[:-len('_mask')]}.tif" if stem.endswith("_mask") else None
        reason = (f"has no image {image_dir / expected}" if expected
                  else "is not named <image name>_mask.tif, so it belongs to no image")
        problems.append(f"{mask_dir / name}: mask {reason}")
    if not items and not any(str(image_dir) in p for p in problems):
        problems.append(f"folder {image_dir}/ has no annotated .tif images")
    return items


def _raise_all(problems: list[str], root: Path) -> None:
    if not problems:
        return
    shown = problems[:MAX_LISTED_PROBLEMS]
    more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    raise ManifestError(f"{root}: {len(problems)} problem(s) in the Ni-superalloy data:\n  " + "\n  ".join(shown)
                        + more)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def scan_items(data_root: str | Path, split: str = "grouped") -> list[SuperalloyItem]:
    """The split's items, sorted by item id, from file names alone; one ManifestError listing every problem."""
    _check_split(split)
    root = Path(data_root)
    problems: list[str] = []
    skipped: list[str] = []
    # "ood" trains and validates on the released train/val and tests on Super2, never on Super1/test.
    partitions = SUPER1_PARTITIONS if split in ("grouped", "official") else ("train", "val")
    items = [item for partition in partitions
             for item in _scan_folder(root, f"{SUPER1}/{partition}", f"{SUPER1}/{partition}_annot", partition,
                                      problems, skipped)]
    if split == "ood":
        items += _scan_folder(root, OOD_IMAGES, OOD_MASKS, OOD_SOURCE, problems, skipped)
    _raise_all(problems, root)
    if skipped:
        warnings.warn(f"{root}: {len(skipped)} out-of-distribution image(s) without a mask left out of the test "
                      f"set: {skipped}", stacklevel=2)
    return sorted(items, key=lambda item: item.item_id)


def _index(items: list[SuperalloyItem]) -> dict:
    return {"items": [i.item_id for i in items], "groups": [i.group for i in items], "strata": None,
            "files": sorted([i.item_id for i in items] + [i.mask_path for i in items])}


def _read_pair(root: Path, item: SuperalloyItem) -> tuple[np.ndarray, np.ndarray]:
    """(RGB image, class mask) of one item; ManifestError if unreadable or the sizes differ."""
    image = read_micrograph(root / item.item_id)
    mask = read_class_mask(root / item.mask_path)
    if mask.shape != image.shape[:2]:
        raise ManifestError(f"{root / item.mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} px but its image "
                            f"{item.item_id} is {image.shape[1]}x{image.shape[0]} px")
    return image, mask


def crop_to_network_multiple(array: np.ndarray, multiple: int = NETWORK_MULTIPLE) -> np.ndarray:
    """Top-left crop of an image or mask to the largest multiple of ``multiple`` in each dimension."""
    height, width = (array.shape[0] // multiple) * multiple, (array.shape[1] // multiple) * multiple
    if height == 0 or width == 0:
        raise ValueError(f"an image of {array.shape[1]}x{array.shape[0]} px is smaller than {multiple} px")
    return array[:height, :width]


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

class SuperalloyDataModule(L.LightningDataModule):
    """Ni-superalloy gamma' segmentation: 3 classes (matrix, secondary, tertiary) at native resolution."""

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
        super().__init__()
        _check_split(split)
        if crop_size <= 0 or crop_size % NETWORK_MULTIPLE:
            raise ValueError(f"crop_size must be a positive multiple of {NETWORK_MULTIPLE}, got {crop_size}")
        if crops_per_image < 1:
            raise ValueError(f"crops_per_image must be at least 1, got {crops_per_image}")
        self.save_hyperparameters()
        self.fold_manifest_path, self.fold = Path(fold_manifest_path), fold
        self.data_root: Path | None = Path(data_root) if data_root is not None else None
        self.split, self.crop_size, self.crops_per_image = split, crop_size, crops_per_image
        self.batch_size, self.num_workers, self.augment, self.seed = batch_size, num_workers, augment, seed
        self.class_names = CLASS_NAMES
        self.num_classes = len(CLASS_NAMES)
        self.image_size = crop_size  # the training input size (the harness records it); val/test images are whole
        self.datasets: dict[str, SuperalloyCrops | SuperalloyImages] = {}

    # The harness's static hooks.

    @staticmethod
    def prepare_dataset(data_root: str | Path | None, generator: dict | None = None, progress: bool = True) -> Path:
        """Where the data is: ``data_root``, else $MATCV_SUPERALLOY_ROOT, else the shared copy."""
        return resolve_data_root(data_root)

    @staticmethod
    def dataset_name(data_root: str | Path) -> str:
        """One name for the benchmark folder, wherever the copy lies (the data hash tells copies apart)."""
        return DATASET_NAME

    @staticmethod
    def index_dataset(data_root: str | Path, split: str = "grouped", **_unused) -> dict:
        """Items (image paths relative to the root), their spot groups and every file, from names alone."""
        return _index(scan_items(resolve_data_root(data_root), split))

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
                image, _ = _read_pair(root, item)
            except ManifestError as error:
                problems.append(str(error))
                continue
            height, width = image.shape[:2]
            smallest = crop_size if item.source != OOD_SOURCE else NETWORK_MULTIPLE  # Super2 is only tested on
            if min(height, width) < smallest:
                problems.append(f"{root / item.item_id}: image is {width}x{height} px, smaller than {smallest} px")
        _raise_all(problems, root)
        return _index(items)

    @staticmethod
    def fixed_fold_manifest(data_root: str | Path, split: str = "grouped", **_unused) -> dict | None:
        """The published split as a one-fold manifest (make_fold_manifest's format), or None for "grouped"
        (the harness then draws grouped folds over spots itself).

        official: train/val/test = Super1/train, Super1/val, Super1/test.
        ood:      train/val = Super1/train, Super1/val; test = the annotated Super2/different_test images.
        """
        _check_split(split)
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

    def prepare_data(self) -> None:
        self.data_root = resolve_data_root(self.data_root)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        root = self.data_root = resolve_data_root(self.data_root)
        items = scan_items(root, self.split)
        fold_manifest, _ = read_fold_manifest(self.fold_manifest_path)  # raises on any group leak
        if fold_manifest.get("group_column") == PHOTO_COLUMN:  # leaky photo-level folds, on purpose
            groups_by_item = {item.item_id: item.item_id for item in items}
        else:
            groups_by_item = {item.item_id: item.group for item in items}
        check_matches_data(fold_manifest, groups_by_item, source=f"{self.fold_manifest_path} (split={self.split!r})")
        if not 0 <= self.fold < len(fold_manifest["folds"]):
            raise ValueError(f"fold {self.fold} does not exist in {self.fold_manifest_path} "
                             f"({len(fold_manifest['folds'])} folds)")
        by_id = {item.item_id: item for item in items}
        loaded = {p: self._load(root, [by_id[i] for i in fold_manifest["folds"][self.fold][p]])
                  for p in ("train", "val", "test")}

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
                image, mask = _read_pair(root, item)
            except ManifestError as error:
                problems.append(str(error))
                continue
            images.append(image)
            masks.append(mask)
        _raise_all(problems, root)
        return images, masks, [item.item_id for item in items]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.datasets["train"], batch_size=self.batch_size, shuffle=True,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def _whole_image_loader(self, partition: str) -> DataLoader:
        # One image per batch: whole images may differ in size (Super2), so they cannot be stacked.
        return DataLoader(self.datasets[partition], batch_size=1, shuffle=False, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return self._whole_image_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._whole_image_loader("test")
