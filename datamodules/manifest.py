"""The manifest format shared by the built-in synthetic data and a user's own photos.

A data root holds ``manifest.csv`` with at least ``image_path`` and a group column (``panel_id`` for
corrosion panels); ``mask_path`` and ``rating`` are needed only by the tasks that use them. Paths are
relative to the data root. Every problem is reported with the row number (as a spreadsheet shows it:
header = row 1) and the file, and all problems of a manifest are reported together.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

MANIFEST_NAME = "manifest.csv"
MAX_LISTED_PROBLEMS = 25


class ManifestError(ValueError):
    """A data root, manifest row, image or mask that matcv cannot use; the message says which and why."""


@dataclass(frozen=True)
class ManifestSpec:
    group_column: str = "panel_id"
    require_mask: bool = False
    require_rating: bool = False
    rating_range: tuple[int, int] = (0, 10)  # ASTM D1654 ratings


def raise_problems(problems: Sequence[str], where: str | Path, what: str | None = None) -> None:
    """One ManifestError listing every problem found in ``where`` (the first ``MAX_LISTED_PROBLEMS``, then how
    many more), or nothing when there are none.

    Readers collect problems instead of stopping at the first, so a user fixes a whole data folder in one pass
    rather than one file per run. ``what`` names the data in the message ("... problem(s) in the UHCSDB data").
    """
    if not problems:
        return
    shown = list(problems[:MAX_LISTED_PROBLEMS])
    more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    about = f" in the {what}" if what else ""
    raise ManifestError(f"{where}: {len(problems)} problem(s){about}:\n  " + "\n  ".join(shown) + more)


def load_manifest(data_root: str | Path, spec: ManifestSpec = ManifestSpec()) -> pd.DataFrame:
    """Read and check ``data_root/manifest.csv``: columns, paths present, ratings in range, groups given.

    Image contents are checked when they are read (``read_image`` / ``read_mask``).
    Returns the table with a ``row`` column (the CSV line number) for later error messages.
    """
    root = Path(data_root)
    path = root / MANIFEST_NAME
    if not root.is_dir():
        raise ManifestError(f"data root {root} does not exist or is not a folder")
    if not path.is_file():
        raise ManifestError(f"{path} not found: a data root needs a {MANIFEST_NAME} "
                            f"(columns image_path,{spec.group_column}[,mask_path][,rating])")
    try:
        # Only empty cells are missing: a panel may well be called "NA" or "None".
        table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ManifestError(f"{path}: not a readable CSV ({error})") from error
    required = ["image_path", spec.group_column]
    required += ["mask_path"] if spec.require_mask else []
    required += ["rating"] if spec.require_rating else []
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {missing}; found {list(table.columns)}")
    if table.empty:
        raise ManifestError(f"{path}: the manifest has no rows")
    table = table.copy()
    table.insert(0, "row", np.arange(len(table)) + 2)

    problems: list[str] = []
    lo, hi = spec.rating_range
    for record in table.itertuples(index=False):
        row = record.row
        image = record.image_path
        label = f"row {row} ({image})" if isinstance(image, str) and image else f"row {row}"
        if not isinstance(image, str) or not image.strip():
            problems.append(f"{label}: empty image_path")
        elif not (root / image).is_file():
            problems.append(f"{label}: image file {root / image} not found")
        group = getattr(record, spec.group_column)
        if not isinstance(group, str) or not group.strip():
            problems.append(f"{label}: missing {spec.group_column} (every image needs its specimen group)")
        if spec.require_mask:
            mask = record.mask_path
            if not isinstance(mask, str) or not mask.strip():
                problems.append(f"{label}: empty mask_path")
            elif not (root / mask).is_file():
                problems.append(f"{label}: mask file {root / mask} not found")
        if spec.require_rating:
            rating = record.rating
            if _as_rating(rating, lo, hi) is None:
                shown = "(empty)" if not isinstance(rating, str) else repr(rating)
                problems.append(f"{label}: rating {shown} is not an integer in {lo}..{hi}")
    duplicated = table["image_path"][table["image_path"].duplicated()].dropna().unique()
    problems += [f"image_path {name} listed more than once" for name in duplicated]
    raise_problems(problems, path)
    if spec.require_rating:
        table["rating"] = [_as_rating(r, lo, hi) for r in table["rating"]]
    elif "rating" in table:
        table["rating"] = pd.to_numeric(table["rating"], errors="coerce")
    return table


def _as_rating(value, lo: int, hi: int) -> int | None:
    """The integer rating in a cell ("7", "7.0"), or None if the cell holds anything else."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or not number.is_integer() or not lo <= number <= hi:
        return None
    return int(number)


def read_image(root: Path, record) -> np.ndarray:
    """RGB uint8 (H, W, 3) of a manifest row, or ManifestError naming the row and file."""
    path = Path(root) / record.image_path
    try:
        with Image.open(path) as handle:
            return np.asarray(handle.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ManifestError(f"row {record.row}: cannot read image {path}: {error}") from error


def read_mask(root: Path, record, expected_hw: tuple[int, int]) -> np.ndarray:
    """Binary uint8 {0, 1} (H, W) mask of a manifest row, checked against its image's size and values."""
    path = Path(root) / record.mask_path
    try:
        with Image.open(path) as handle:
            array = np.asarray(handle)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ManifestError(f"row {record.row}: cannot read mask {path}: {error}") from error
    if array.ndim == 3:
        if not (array[..., :3] == array[..., :1]).all():
            raise ManifestError(f"row {record.row}: mask {path} is a colour image; "
                                f"give a single-channel mask with values {{0,1}} or {{0,255}}")
        array = array[..., 0]
    if array.shape != tuple(expected_hw):
        raise ManifestError(f"row {record.row}: mask {path} is {array.shape[1]}x{array.shape[0]} px but "
                            f"its image {record.image_path} is {expected_hw[1]}x{expected_hw[0]} px")
    values = set(np.unique(array).tolist())
    if values <= {0, 1}:
        return array.astype(np.uint8)
    if values <= {0, 255}:
        return (array > 0).astype(np.uint8)
    shown = sorted(values)[:8]
    raise ManifestError(f"row {record.row}: mask {path} has values {shown}{'...' if len(values) > 8 else ''}; "
                        f"expected only {{0,1}} or only {{0,255}}")
