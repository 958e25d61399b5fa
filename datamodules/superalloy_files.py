"""The NASA Ni-superalloy benchmark's files as published, read as a *preset* of the user data format.

The benchmark of Stuckner et al. (2022) ships as folders of TIFFs, not as a matcv ``manifest.csv``:
``Super1/{train,val,test}/*.tif`` with RGBA masks in ``{train,val,test}_annot/<name>_mask.tif``, and
``Super2/different_test{,_annot}/`` (out-of-distribution micrographs). The preset turns that layout into what a
user's folder gives (``release_table``): the manifest table (``image_path``, ``mask_path``, ``group`` = the
``spotN`` of the name, ``split`` = the Super1 folder, or ``test`` for the Super2 micrographs of the ood protocol)
and the description a ``dataset.yaml`` would hold (``DESCRIPTION``: class colours, every other colour matrix).
Everything after that -- checking rows and paths, reading 8/16-bit images and colour masks, sizes, folds -- is
the user format's code (``manifest``, ``dataset_description``, ``user_segmentation``). Only the layout itself
(which file is whose mask, the spot in the name) is read here; every problem of a folder is reported at once.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from matcv.datamodules.core.atomic_io import atomic_write_text
from matcv.datamodules.data_roots import given_data_root
from matcv.datamodules.dataset_description import (
    DESCRIPTION_NAME,
    ClassSpec,
    DatasetDescription,
    map_keys,
    read_image_file,
    read_mask_file,
)
from matcv.datamodules.folds import normalise_group
from matcv.datamodules.manifest import MANIFEST_NAME, raise_problems
from matcv.datamodules.user_segmentation import SPEC, FolderManifest, SegmentationItem, manifest_items, read_item

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
    crop_size=256,  # the published protocol: random 256-px crops at native resolution, 8 per image and epoch
    crops_per_image=8,
    image_bits=8,  # as published: one Super2 micrograph is a 16-bit RGB TIFF, read by its high byte (PIL)
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
MANIFEST_COLUMNS = ("image_path", "mask_path", "group", "split")

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
    """RGB uint8 (H, W, 3) of one image file, read as a user image is with the preset's ``image_bits: 8``
    (``read_image_file``; 16-bit files by their high byte, as the published results read them), or
    ManifestError."""
    return read_image_file(path, DESCRIPTION.image_bits)


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


def is_release(data_root: str | Path) -> bool:
    """Whether ``data_root`` is the release's layout (the folder or its parent) and not a user folder (no
    manifest.csv of its own)."""
    root = Path(data_root)
    return not (root / MANIFEST_NAME).is_file() and any((c / SUPER1).is_dir() for c in (root, root / DATA_FOLDER))


# An item of the preset: a row of the manifest a user folder of the release would hold (``item_id`` the image's
# path relative to the data root, e.g. "Super1/train/spot3_0d_3.tif"; ``group`` "spot3", or "ood:<stem>" for a
# Super2 micrograph; ``source`` its split).
SuperalloyItem = SegmentationItem


def _tiffs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def _scan_folder(root: Path, images_rel: str, masks_rel: str, split: str, ood: bool, problems: list[str],
                 skipped: list[str]) -> list[dict[str, str]]:
    """Manifest rows of one image folder, matched to masks by name; name-level problems go to ``problems``.

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
    rows = []
    for image in _tiffs(image_dir):
        image_id = f"{images_rel}/{image.name}"
        if ood:
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
            if ood:
                skipped.append(image_id)
            else:
                problems.append(f"{image}: no mask; expected {mask_dir / candidates[0]}")
            continue
        claimed.add(mask_name)
        rows.append({"image_path": image_id, "mask_path": f"{masks_rel}/{mask_name}", "group": group, "split": split})
    for name in sorted(set(masks) - claimed):
        stem = Path(name).stem
        expected = f"{stem[:-len('_mask')]}.tif" if stem.endswith("_mask") else None
        reason = (f"has no image {image_dir / expected}" if expected
                  else "is not named <image name>_mask.tif, so it belongs to no image")
        problems.append(f"{mask_dir / name}: mask {reason}")
    if not rows and not any(str(image_dir) in p for p in problems):
        problems.append(f"folder {image_dir}/ has no annotated .tif images")
    return rows


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def release_table(data_root: str | Path, split: str = "grouped") -> tuple[pd.DataFrame, list[str]]:
    """The preset: (the manifest a user folder of the release would hold for ``split``, the layout's problems).

    Columns ``image_path``, ``mask_path``, ``group`` (the spot), ``split``; rows sorted by image path. ``split``
    is the Super1 folder (train/val/test); the ``ood`` protocol lists Super1 train/val and, as ``test``, the
    annotated Super2 micrographs, never Super1/test. Problems are what only the layout can tell: a name without
    a spot, an image without its mask, a mask without its image, a missing folder.
    """
    check_split(split)
    root = Path(data_root)
    problems: list[str] = []
    skipped: list[str] = []
    partitions = SUPER1_PARTITIONS if split in ("grouped", "official") else ("train", "val")
    rows = [row for partition in partitions
            for row in _scan_folder(root, f"{SUPER1}/{partition}", f"{SUPER1}/{partition}_annot", partition, False,
                                    problems, skipped)]
    if split == "ood":
        rows += _scan_folder(root, OOD_IMAGES, OOD_MASKS, "test", True, problems, skipped)
    if skipped:
        warnings.warn(f"{root}: {len(skipped)} out-of-distribution image(s) without a mask left out of the test "
                      f"set: {skipped}", stacklevel=3)
    table = pd.DataFrame(sorted(rows, key=lambda row: row["image_path"]), columns=list(MANIFEST_COLUMNS))
    return table, problems


def read_release(data_root: str | Path, split: str = "grouped") -> FolderManifest:
    """The release read as a user's folder: ``release_table`` checked by the manifest checker (paths inside the
    root, groups, split values, a spot in two splits of a fixed protocol), with the preset description."""
    root = Path(data_root)
    table, problems = release_table(root, split)
    if table.empty:  # nothing for the manifest checker to read: the layout's problems say why
        raise_problems(problems or [f"no annotated images in {SUPER1}/"], root, WHAT)
    # Grouped CV draws its own folds (the Super1 folders are not a split there); the fixed protocols refuse a spot
    # in two partitions, as the release keeps every spot in one.
    spec = replace(SPEC, check_split=False) if split == "grouped" else replace(SPEC, split_leaks="error")
    items, row_problems, unreadable, table = manifest_items(root, spec, table)
    return FolderManifest(DESCRIPTION, items, problems + row_problems, unreadable, table, root, WHAT)


def scan_items(data_root: str | Path, split: str = "grouped") -> list[SuperalloyItem]:
    """The split's items, sorted by item id, from file names alone; one ManifestError listing every problem."""
    folder = read_release(data_root, split)
    raise_problems(folder.problems, folder.where, folder.what)
    return folder.items


def index_items(items: list[SuperalloyItem]) -> dict:
    return {"items": [i.item_id for i in items], "groups": [i.group for i in items], "strata": None,
            "files": sorted([i.item_id for i in items] + [i.mask_path for i in items])}


def read_pair(root: Path, item: SuperalloyItem) -> tuple[np.ndarray, np.ndarray]:
    """(RGB image, class mask) of one item, read as a user folder's row is; ManifestError if unreadable or the
    sizes differ."""
    return read_item(Path(root), item, DESCRIPTION)


def description_yaml(description: DatasetDescription = DESCRIPTION) -> str:
    """The ``dataset.yaml`` text of a description (the preset's, by default)."""
    raw = {"name": description.name,
           "classes": [{"name": c.name, "color": list(c.color)} if c.color is not None else {"name": c.name,
                                                                                            "value": c.value}
                       for c in description.classes]}
    for key in ("unlisted_class", "crop_size", "crops_per_image", "image_bits"):
        if getattr(description, key) is not None:
            raw[key] = getattr(description, key)
    return yaml.safe_dump(raw, sort_keys=False, default_flow_style=None)


def export_manifest(data_root: str | Path, split: str = "official") -> tuple[Path, Path]:
    """Write the preset as ``manifest.csv`` + ``dataset.yaml`` into the release folder (a user's folder then,
    readable by ``UserSegmentationDataModule``; its ``split`` column is the ``split`` protocol's). Returns both
    paths. The files change the folder's data hash, so copy the release first to keep its published hash."""
    root = resolve_data_root(data_root)
    folder = read_release(root, split)
    raise_problems(folder.problems, folder.where, folder.what)
    manifest, description = root / MANIFEST_NAME, root / DESCRIPTION_NAME
    atomic_write_text(manifest, folder.table[list(MANIFEST_COLUMNS)].to_csv(index=False, lineterminator="\n"))
    atomic_write_text(description, f"# The {DATASET_NAME} preset of matcv (Stuckner et al. 2022)\n"
                                   + description_yaml(DESCRIPTION))
    return manifest, description
