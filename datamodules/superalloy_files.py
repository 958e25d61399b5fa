"""The NASA Ni-superalloy benchmark's files as published: where the folder is, which images and masks it holds,
and its preset description (the dataset.yaml it would have: class colours, name).

The benchmark of Stuckner et al. (2022) ships as folders of TIFFs, not as a matcv ``manifest.csv``:
``Super1/{train,val,test}/*.tif`` with RGBA masks in ``{train,val,test}_annot/<name>_mask.tif``, and
``Super2/different_test{,_annot}/`` (out-of-distribution micrographs). Reading that layout directly lets a
copy of the repository's folder work without conversion; what the layout stands for in a user's folder is
listed in ``scan_items``: the manifest's rows (image, mask), its group column (the ``spotN`` of the name) and
its split column (the Super1 folder). Masks are decoded by the code every user dataset's colour masks go
through (``dataset_description``). Every problem of a folder is reported at once.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from matcv.datamodules.data_roots import given_data_root
from matcv.datamodules.dataset_description import ClassSpec, DatasetDescription, map_keys, read_mask_file
from matcv.datamodules.folds import normalise_group
from matcv.datamodules.manifest import IMAGE_ERRORS, ManifestError, open_image, raise_problems
from matcv.datamodules.user_segmentation import SegmentationItem

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
DATASET_NAME = "nasa-superalloy"

# The release's dataset.yaml, were it to have one: class colours (matrix black, as upstream lists it) and every
# colour that is no precipitate counted as matrix (the annotators painted over the grey micrograph).
DESCRIPTION = DatasetDescription(
    name=DATASET_NAME,
    classes=(ClassSpec("matrix", color=(0, 0, 0)),
             *(ClassSpec(CLASS_NAMES[index], color=colour) for colour, index in MASK_COLOURS_RGB.items())),
    unlisted_class="matrix",
    source=f"the {DATASET_NAME} preset",
)
WHAT = "Ni-superalloy data"  # how error messages name the data

SPLITS = ("grouped", "official", "ood")
GROUP_COLUMN = "spot"
SUPER1 = "Super1"
SUPER1_PARTITIONS = ("train", "val", "test")
OOD_IMAGES, OOD_MASKS = "Super2/different_test", "Super2/different_test_annot"
OOD_SOURCE = "ood"
IMAGE_SUFFIXES = (".tif", ".tiff")
SPOT_NAME = re.compile(r"spot(\d+)_(\d+)d_(\d+)", re.IGNORECASE)  # spot<location>_<ageing days>d_<frame>
IMAGE_MODES = ("1", "L", "LA", "P", "RGB", "RGBA")  # 8-bit modes PIL converts to RGB without loss

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
    rgb = rgba[..., :3].astype(np.int64)
    classes, _ = map_keys((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2], DESCRIPTION)  # unlisted: matrix
    return classes


def read_micrograph(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3) of one image file (grey replicated to three channels), or ManifestError.

    PIL, not cv2: cv2.imread gives BGR(A) channel order, the very mix-up that hides in the upstream code.
    """
    try:
        with open_image(path) as handle:  # a header claiming a huge image is an error, not an allocation
            mode = handle.mode
            image = np.asarray(handle.convert("RGB")) if mode in IMAGE_MODES else None
    except IMAGE_ERRORS as error:
        raise ManifestError(f"{path}: cannot read image ({error})") from error
    if image is None:  # e.g. 16-bit grey: PIL would clip it to 8 bits without a word
        raise ManifestError(f"{path}: image mode {mode!r} is not 8-bit grey or RGB; save it as 8-bit")
    return image


def read_class_mask(path: Path) -> np.ndarray:
    """Class indices (uint8 H x W) of one mask file, or ManifestError naming the file and the problem: a user's
    colour mask read with the preset description."""
    return read_mask_file(path, DESCRIPTION)


# --- the data root and its items -------------------------------------------------------------------------

def resolve_data_root(data_root: str | Path | None = None) -> Path:
    """``data_root``, else $MATCV_SUPERALLOY_ROOT; the folder itself or its parent. FileNotFoundError says what
    was looked for and how to point matcv at a copy (the release is not distributed with matcv)."""
    given, origin = given_data_root(data_root, ROOT_ENV, f"Ni-superalloy benchmark data: no copy given (neither "
                                                         f"--data-root nor ${ROOT_ENV}).\n{LAYOUT_HELP}")
    for candidate in (given, given / DATA_FOLDER):
        if (candidate / SUPER1).is_dir():
            return candidate
    state = "does not exist" if not given.exists() else f"has no {SUPER1}/ folder (nor {DATA_FOLDER}/{SUPER1}/)"
    raise FileNotFoundError(f"Ni-superalloy benchmark data not found: {given} (from {origin}) {state}.\n"
                            f"{LAYOUT_HELP}")


# An item of the layout: ``item_id`` the image's path relative to the data root (e.g. "Super1/train/spot3_0d_3.tif"),
# ``group`` "spot3" (or "ood:<stem>" for a Super2 micrograph), ``source`` "train"/"val"/"test" (the Super1 folder)
# or "ood": a manifest row of a user's folder, with its split.
SuperalloyItem = SegmentationItem


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
            group = f"ood:{normalise_group(image.stem)}"  # one spelling of a name, however the file system wrote it
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


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def scan_items(data_root: str | Path, split: str = "grouped") -> list[SuperalloyItem]:
    """The split's items, sorted by item id, from file names alone; one ManifestError listing every problem."""
    check_split(split)
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
    raise_problems(problems, root, WHAT)
    if skipped:
        warnings.warn(f"{root}: {len(skipped)} out-of-distribution image(s) without a mask left out of the test "
                      f"set: {skipped}", stacklevel=2)
    return sorted(items, key=lambda item: item.item_id)


def index_items(items: list[SuperalloyItem]) -> dict:
    return {"items": [i.item_id for i in items], "groups": [i.group for i in items], "strata": None,
            "files": sorted([i.item_id for i in items] + [i.mask_path for i in items])}


def read_pair(root: Path, item: SuperalloyItem) -> tuple[np.ndarray, np.ndarray]:
    """(RGB image, class mask) of one item; ManifestError if unreadable or the sizes differ."""
    image = read_micrograph(root / item.item_id)
    mask = read_class_mask(root / item.mask_path)
    if mask.shape != image.shape[:2]:
        raise ManifestError(f"{root / item.mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} px but its image "
                            f"{item.item_id} is {image.shape[1]}x{image.shape[0]} px")
    return image, mask


