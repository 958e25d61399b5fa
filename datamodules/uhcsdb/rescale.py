"""UHCSDB micrographs banner-cropped, rescaled to the common magnification and cached as PNG.

Most micrographs carry a 38-px instrument banner at the bottom (text and a scale bar, not microstructure),
cut from every image. Enlargements are capped: the centre of the image is cut to ``floor(max_side / scale)``
px first wherever the result would exceed ``max_side``, so a 32X micrograph does not become ~30 000 px wide.
The results are cached under ``default_cache_dir()/uhcsdb/<key>/micrograph<ID>-<stamp>.png`` (key: sha256 of
the metadata file and the curation settings; stamp: the source file's size and mtime), so a second setup reads
small PNGs instead of rescaling again. The curation and why it is done this way: docs/tasks/microstructure.md.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import UnidentifiedImageError
from tqdm.auto import tqdm

from matcv.datamodules.core.atomic_io import save_png
from matcv.datamodules.core.cache import default_cache_dir
from matcv.datamodules.manifest import ManifestError, open_image
from matcv.datamodules.uhcsdb.curation import UHCSMicrograph
from matcv.datamodules.uhcsdb.metadata import DATASET_NAME

DEFAULT_BANNER_PX = 38
DEFAULT_MAX_SIDE = 2048
CACHE_VERSION = 1  # bump when the cached images change (cropping, interpolation), so old ones are not reused
IMAGE_MODES = ("1", "L", "LA", "P", "RGB", "RGBA")  # 8-bit modes PIL converts to grey without loss of range


# --- images ----------------------------------------------------------------------------------------------

def read_grey(path: Path) -> np.ndarray:
    """Grey uint8 (H, W) of one image file (colour converted to luma), or ManifestError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: image file not found")
    try:
        with open_image(path) as handle:
            mode = handle.mode
            image = np.asarray(handle.convert("L")) if mode in IMAGE_MODES else None
    except (UnidentifiedImageError, OSError, ValueError) as error:  # ValueError: ImageTooLargeError too
        raise ManifestError(f"{path}: cannot read image ({error})") from error
    if image is None:  # e.g. 16-bit grey: PIL would clip it to 8 bits without a word
        raise ManifestError(f"{path}: image mode {mode!r} is not 8-bit grey or colour; save it as 8-bit")
    return image


def _rescaled_side(length: int, scale: float, max_side: int | None) -> tuple[int, int]:
    """(source pixels kept, rescaled length) along one axis (the size cap of the module doc)."""
    out = round(length * scale)
    if max_side is not None and out > max_side:
        kept = max(1, math.floor(max_side / scale))
        return kept, round(kept * scale)
    return length, out


def rescaled_shape(height: int, width: int, scale: float, max_side: int | None = DEFAULT_MAX_SIDE) -> tuple[int, int]:
    """(H, W) of a banner-cropped ``height`` x ``width`` image after rescaling by ``scale`` under ``max_side``."""
    return _rescaled_side(height, scale, max_side)[1], _rescaled_side(width, scale, max_side)[1]


def rescale_micrograph(image: np.ndarray, scale: float, banner_px: int = DEFAULT_BANNER_PX,
                       max_side: int | None = DEFAULT_MAX_SIDE) -> np.ndarray:
    """Cut ``banner_px`` rows from the bottom, keep the centre that fits ``max_side``, rescale by ``scale``.

    INTER_AREA when shrinking (averages, no aliasing), INTER_CUBIC when enlarging; ValueError for an image no
    taller than the banner or one that would vanish.
    """
    if banner_px:
        if image.shape[0] <= banner_px:
            raise ValueError(f"image is only {image.shape[0]} px tall, no taller than the {banner_px}-px banner")
        image = image[:-banner_px]
    height, width = image.shape[:2]
    (kept_h, out_h), (kept_w, out_w) = _rescaled_side(height, scale, max_side), _rescaled_side(width, scale, max_side)
    top, left = (height - kept_h) // 2, (width - kept_w) // 2
    image = np.ascontiguousarray(image[top:top + kept_h, left:left + kept_w])
    if (out_h, out_w) == (kept_h, kept_w):
        return image
    if min(out_h, out_w) < 1:
        raise ValueError(f"a {width}x{height}-px image rescaled by {scale:.3g} has no pixels left")
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(image, (out_w, out_h), interpolation=interpolation)


def cache_folder(metadata_file: str | Path, target_magnification: float, banner_px: int,
                 max_side: int | None) -> Path:
    """Where the rescaled micrographs of one curation live (module doc)."""
    settings = json.dumps({"version": CACHE_VERSION, "target_magnification": float(target_magnification),
                           "banner_px": int(banner_px), "max_side": max_side}, sort_keys=True)
    digest = hashlib.sha256(Path(metadata_file).read_bytes() + b"\n" + settings.encode()).hexdigest()
    return default_cache_dir() / DATASET_NAME / digest[:16]


def _source_stamp(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]


def cached_path(folder: Path, root: Path, micrograph: UHCSMicrograph) -> Path:
    """The cache file of a micrograph (FileNotFoundError if its source file is missing)."""
    return folder / f"{Path(micrograph.item_id).stem}-{_source_stamp(root / micrograph.item_id)}.png"


def _too_small(source: Path, shape: tuple[int, int], micrograph: UHCSMicrograph, target_magnification: float,
               banner_px: int, patch_size: tuple[int, int]) -> str:
    return (f"{source}: {shape[1]}x{shape[0]} px after cutting the {banner_px}-px banner and rescaling "
            f"{micrograph.magnification:g}X -> {target_magnification:g}X (x{micrograph.scale:.3g}), smaller than "
            f"the {patch_size[1]}x{patch_size[0]}-px patch")


def iter_rescaled(root: Path, micrographs: Sequence[UHCSMicrograph], metadata_file: Path, target_magnification: float,
                  banner_px: int, max_side: int | None, patch_size: tuple[int, int], problems: list[str],
                  progress: bool = True) -> Iterator[tuple[UHCSMicrograph, np.ndarray]]:
    """(micrograph, banner-cropped rescaled uint8 image) of every micrograph that can be used, cached ones first.

    Every bad file (missing, unreadable, not 8-bit, too small for ``patch_size`` once rescaled) is appended to
    ``problems`` instead; the caller raises them together.
    """
    root = Path(root)
    folder = cache_folder(metadata_file, target_magnification, banner_px, max_side)
    patch_h, patch_w = patch_size
    todo = []
    for micrograph in micrographs:
        source = root / micrograph.item_id
        try:
            cached = cached_path(folder, root, micrograph)
        except OSError:
            problems.append(f"{source}: image file not found")
            continue
        if cached.is_file():
            try:
                with open_image(cached) as handle:
                    image = np.asarray(handle.convert("L"))
            except (UnidentifiedImageError, OSError, ValueError):
                image = None  # a damaged cache file: made again below
            if image is not None:
                if image.shape[0] < patch_h or image.shape[1] < patch_w:
                    problems.append(_too_small(source, image.shape, micrograph, target_magnification, banner_px,
                                               patch_size))
                else:
                    yield micrograph, image
                continue
        todo.append((micrograph, source, cached))
    for micrograph, source, cached in tqdm(todo, desc=f"rescaling UHCSDB micrographs to {target_magnification:g}X",
                                           unit="image", disable=not progress or not todo):
        try:
            image = read_grey(source)
        except ManifestError as error:
            problems.append(str(error))
            continue
        height = image.shape[0] - banner_px
        out_h, out_w = rescaled_shape(height, image.shape[1], micrograph.scale, max_side)
        if height <= 0:
            problems.append(f"{source}: the image is {image.shape[0]} px tall, no taller than the {banner_px}-px "
                            f"banner")
            continue
        if out_h < patch_h or out_w < patch_w:
            problems.append(_too_small(source, (out_h, out_w), micrograph, target_magnification, banner_px,
                                       patch_size))
            continue
        rescaled = rescale_micrograph(image, micrograph.scale, banner_px, max_side)
        save_png(cached, rescaled)
        yield micrograph, rescaled
