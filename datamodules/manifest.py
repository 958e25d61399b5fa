"""The manifest format shared by the built-in synthetic data and a user's own photos.

A data root holds ``manifest.csv`` with at least ``image_path`` and a group column (``group``, or ``panel_id``
as the corrosion panels call it: either name is read as the other); ``mask_path`` and ``rating`` (or
``label``) are needed only by the tasks that use them, ``split`` (train/val/test) and ``stratum`` are optional.
For the rating and ordinal tasks (``ManifestSpec.allow_unlabelled``) a row whose ``rating``/``label`` cell is
empty is an *unlabelled* photo: it is in no fold (never validated or tested on), only semi-supervised models
that ask for unlabelled photos train on it, and only when its group is in the fold's training part or is the
group of no labelled photo (``unlabelled_rows``).
Paths are relative to the data root and must stay inside it. Group ids are compared as ``folds.normalise_group``
writes them (no surrounding spaces, Unicode NFC), and ids that differ only in case or spacing are an error.
Every problem is reported with the row number (as a spreadsheet shows it: header = row 1) and the file, and
all problems of a manifest are reported together.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from matcv.datamodules.folds import normalise_group, similar_group_problems

MANIFEST_NAME = "manifest.csv"
MAX_LISTED_PROBLEMS = 25
# Columns holding paths of files matcv reads; every one present must stay inside the data root.
PATH_COLUMNS = ("image_path", "mask_path", "stain_mask_path")
# What PIL raises on a file it cannot decode (EOFError and SyntaxError from some damaged TIFF/GIF/JPEG files).
IMAGE_ERRORS = (UnidentifiedImageError, OSError, ValueError, EOFError, SyntaxError)


class ManifestError(ValueError):
    """A data root, manifest row, image or mask that matcv cannot use; the message says which and why."""


class ImageTooLargeError(ValueError):
    """An image file whose header claims more pixels than PIL's decompression-bomb limit."""


@dataclass(frozen=True)
class ManifestSpec:
    group_column: str = "panel_id"
    require_mask: bool = False
    require_rating: bool = False
    rating_range: tuple[int, int] = (0, 10)  # ASTM D1654 ratings
    # The ratings a task can learn (its classes), checked with ``require_rating``; None: any in rating_range.
    rating_classes: tuple[int, ...] | None = None
    # Check a ``split`` column when there is one (values train/val/test, no group in two of them).
    check_split: bool = False
    # A group in two splits: "error", or "warning" (the split is run as a published protocol with the leak
    # declared; the message goes to ``table.attrs["warnings"]``, which a data check prints).
    split_leaks: str = "error"
    # With ``require_rating``: an empty rating cell is an unlabelled photo (``unlabelled_rows``), not a problem.
    allow_unlabelled: bool = False


# One column, two names: the generic one and the corrosion panels' (older manifests keep working). When the
# name a task reads is absent, the other is read in its place.
COLUMN_ALIASES = {"panel_id": "group", "group": "panel_id", "rating": "label"}
SPLITS = ("train", "val", "test")


def _alias_columns(table: pd.DataFrame, wanted: list[str]) -> dict[str, str]:
    """Copy an alias column under the name a task reads (``label`` -> ``rating``) where only the alias is
    there; {name read: column of the CSV it comes from}, for messages that name what the user wrote."""
    source = {}
    for name in wanted:
        alias = COLUMN_ALIASES.get(name)
        if name not in table.columns and alias is not None and alias in table.columns:
            table[name] = table[alias]
            source[name] = alias
        else:
            source[name] = name
    return source


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


@contextmanager
def open_image(path: str | Path) -> Iterator[Image.Image]:
    """``PIL.Image.open`` in which an image over PIL's decompression-bomb limit is an ``ImageTooLargeError``.

    A 300-byte PNG can claim 30000 x 30000 px: PIL refuses it with an exception of its own (not an OSError),
    and above the limit but below twice it only warns, then allocates gigabytes to decode. Both are a bad file
    here, reported like any unreadable image.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as handle:
                yield handle
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageTooLargeError(f"its header claims more pixels than matcv reads, a damaged file or one made "
                                 f"to exhaust memory ({error})") from error


def path_problem(root: Path, value, column: str, kind: str, must_exist: bool = True) -> str | None:
    """Why the path in a manifest cell cannot be read, or None: empty, absolute, outside the data root (through
    ``..`` or a symbolic link), a folder, or missing (``must_exist``).

    Paths are relative to the data root and stay inside it: the data hash covers the files under the root, item
    ids (relative paths) go into fold manifests that are shared, and a manifest must not make matcv read files
    elsewhere on the machine.
    """
    if not isinstance(value, str) or not value.strip():
        return f"empty {column}"
    windows = PureWindowsPath(value)
    if Path(value).is_absolute() or windows.drive or windows.root:
        return (f"{column} {value!r} is an absolute path; paths are relative to the data root {root}: "
                f"copy the file into the data root")
    path = root / value
    try:
        inside = path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError) as error:  # a symbolic-link loop
        return f"{column} {value!r} cannot be resolved ({error})"
    if not inside:
        return (f"{column} {value!r} points outside the data root {root} (through '..' or a symbolic link); "
                f"paths must stay inside the data root: copy the file into it")
    if path.is_dir():
        return f"{kind} file {path} is a folder, not a file"
    if must_exist and not path.is_file():
        return f"{kind} file {path} not found"
    return None


def _rows_text(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
    return f"row{'s' if len(rows) > 1 else ''} {shown}"


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        # Only empty cells are missing: a panel may well be called "NA" or "None".
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except UnicodeDecodeError as error:
        # pandas reports an offset in its read buffer; the user needs the row.
        data = path.read_bytes()
        try:
            data.decode("utf-8")
            where = ""
        except UnicodeDecodeError as exact:
            line = data[:exact.start].count(b"\n") + 1
            where = f": row {line} holds byte 0x{data[exact.start]:02x}, which is not UTF-8"
        raise ManifestError(f"{path}: not a readable CSV, not UTF-8 text{where}; save it as UTF-8 "
                            f"(in Excel: CSV UTF-8) ({error})") from error
    except pd.errors.ParserError as error:
        raise ManifestError(f"{path}: not a readable CSV ({error})") from error


def scan_manifest(data_root: str | Path, spec: ManifestSpec = ManifestSpec(), table: pd.DataFrame | None = None
                  ) -> tuple[pd.DataFrame, list[str], set[tuple[int, str]]]:
    """``(table, problems, unreadable)``: the manifest with its group ids normalised, every problem of its rows
    (paths, groups, ratings, duplicates), and the (row, column) cells whose file must not be opened.

    A data root or manifest that cannot be read at all (no folder, no file, not a CSV, a missing column, no
    rows) raises ManifestError at once; ``check_dataset`` uses the rest to report row and file problems in one
    pass, ``load_manifest`` raises them.
    """
    root = Path(data_root)
    path = root / MANIFEST_NAME
    if not root.is_dir():
        raise ManifestError(f"data root {root} does not exist or is not a folder")
    # ``table``: the manifest a preset builds from a published folder layout (string cells, as a CSV reads),
    # checked here like a manifest.csv of the folder.
    if table is None and not path.is_file():
        raise ManifestError(f"{path} not found: a data root needs a {MANIFEST_NAME} "
                            f"(columns image_path,{spec.group_column}[,mask_path][,rating])")
    table = (_read_csv(path) if table is None else table).copy()
    named = _alias_columns(table, [spec.group_column, "rating"])
    required = ["image_path", spec.group_column]
    required += ["mask_path"] if spec.require_mask else []
    required += ["rating"] if spec.require_rating else []
    missing = [c for c in required if c not in table.columns]
    if missing:
        shown = [f"{c!r} (or {COLUMN_ALIASES[c]!r})" if c in COLUMN_ALIASES else repr(c) for c in missing]
        raise ManifestError(f"{path}: missing column(s) {', '.join(shown)}; found {list(table.columns)}")
    if table.empty:
        raise ManifestError(f"{path}: the manifest has no rows")
    table.insert(0, "row", np.arange(len(table)) + 2)
    column = spec.group_column
    group_name, rating_name = named[column], named["rating"]
    # Ids written with surrounding spaces or invisible characters are read without them; say so (a data check
    # prints these notes), since the fold manifest will show the ids as read.
    table.attrs["notes"] = [f"row {row}: {group_name} {g!r} is read as {normalise_group(g)!r}"
                            for row, g in zip(table["row"], table[column])
                            if isinstance(g, str) and normalise_group(g) and normalise_group(g) != g]
    table[column] = [normalise_group(g) if isinstance(g, str) and normalise_group(g) else None
                     for g in table[column]]

    problems: list[str] = []
    unreadable: set[tuple[int, str]] = set()
    files: dict[tuple[int, int], tuple[int, str]] = {}  # (device, inode) -> first row and image_path naming it
    lo, hi = spec.rating_range
    kinds = {"image_path": "image", "mask_path": "mask", "stain_mask_path": "stain mask"}
    for record in table.itertuples(index=False):
        row = record.row
        image = record.image_path
        label = f"row {row} ({image})" if isinstance(image, str) and image else f"row {row}"
        for name in [c for c in PATH_COLUMNS if c in table.columns]:
            value = getattr(record, name)
            needed = name == "image_path" or (name == "mask_path" and spec.require_mask)
            if not needed and not isinstance(value, str):
                continue  # an optional path left empty
            problem = path_problem(root, value, name, kinds[name], must_exist=needed)
            if problem:
                problems.append(f"{label}: {problem}")
                unreadable.add((row, name))
        if (row, "image_path") not in unreadable:
            # One photo listed under two names ("./a.png", a link to it) would be two items, free to sit in
            # train and test: the same file is the same photo.
            stat = (root / image).stat()
            first = files.setdefault((stat.st_dev, stat.st_ino), (row, image))
            if first[0] != row and first[1] != image:
                problems.append(f"{label}: image_path is the same file as row {first[0]}'s ({first[1]}); a photo "
                                f"listed twice would be two items, free to fall on both sides of a split")
        if not isinstance(getattr(record, column), str):  # pandas holds the None of an empty id as NaN
            problems.append(f"{label}: missing {group_name} (every image needs its specimen group)")
        if spec.require_rating and not (spec.allow_unlabelled and _is_empty(record.rating)):
            rating = record.rating
            value = _as_rating(rating, lo, hi)
            if value is None:
                shown = "(empty)" if not isinstance(rating, str) else repr(rating)
                problems.append(f"{label}: {rating_name} {shown} is not an integer in {lo}..{hi}")
            elif spec.rating_classes is not None and value not in spec.rating_classes:
                problems.append(f"{label}: {rating_name} {value} is not among the {rating_name}s this task learns "
                                f"{list(spec.rating_classes)}")
    duplicated = table["image_path"][table["image_path"].duplicated()].dropna().unique()
    problems += [f"image_path {name} listed more than once" for name in duplicated]
    rows_of: dict[str, list[int]] = {}
    for row, group in zip(table["row"], table[column]):
        if isinstance(group, str):
            rows_of.setdefault(group, []).append(int(row))
    problems += similar_group_problems(list(rows_of), {g: _rows_text(r) for g, r in rows_of.items()}, group_name)
    if spec.check_split and "split" in table.columns:
        problems += _split_problems(table, column, group_name, spec.split_leaks)
    if spec.require_rating:
        table["rating"] = [_as_rating(r, lo, hi) for r in table["rating"]]
    elif "rating" in table:
        table["rating"] = pd.to_numeric(table["rating"], errors="coerce")
    return table, problems, unreadable


def _is_empty(cell) -> bool:
    # pandas holds an empty cell as NaN (only empty cells are missing: ``_read_csv``); spaces alone are empty too.
    return not isinstance(cell, str) or not cell.strip()


def unlabelled_rows(table: pd.DataFrame, spec: ManifestSpec) -> pd.Series:
    """Which rows of a table ``scan_manifest`` read with ``spec`` and found no problem in are unlabelled photos:
    with ``require_rating`` and ``allow_unlabelled``, those whose rating cell was empty (every other rating was
    checked, so a missing value is an empty cell); none otherwise."""
    if not (spec.require_rating and spec.allow_unlabelled) or "rating" not in table.columns:
        return pd.Series(False, index=table.index)
    return table["rating"].isna()


def _split_problems(table: pd.DataFrame, column: str, group_name: str, leaks: str = "error") -> list[str]:
    """A ``split`` column's problems: values other than train/val/test (normalised to lower case in the table)
    and groups in two splits (a publisher's split must keep specimens apart, as grouped folds do)."""
    problems = []
    values = [s.strip().lower() if isinstance(s, str) else None for s in table["split"]]
    for row, value, raw in zip(table["row"], values, table["split"]):
        if value not in SPLITS:
            shown = "(empty)" if not isinstance(raw, str) else repr(raw)
            problems.append(f"row {row}: split {shown} is not one of {', '.join(SPLITS)}")
    table["split"] = [v if v in SPLITS else None for v in values]
    where: dict[str, dict[str, list[int]]] = {}
    for row, group, split in zip(table["row"], table[column], table["split"]):
        if isinstance(group, str) and split in SPLITS:  # pandas holds the None of a bad value as NaN
            where.setdefault(group, {}).setdefault(split, []).append(int(row))
    for group, splits in where.items():
        if len(splits) > 1:
            shown = " and ".join(f"{s} ({_rows_text(r)})" for s, r in splits.items())
            if leaks == "warning":
                table.attrs.setdefault("warnings", []).append(
                    f"published split: {group_name} {group!r} is in {shown}; the published-split protocol runs "
                    f"with this leak declared in its fold manifest and table title (grouped CV is unaffected)")
            else:
                problems.append(f"{group_name} {group!r} is in {shown}: a group must stay in one split")
    return problems


def load_manifest(data_root: str | Path, spec: ManifestSpec = ManifestSpec()) -> pd.DataFrame:
    """Read and check ``data_root/manifest.csv``: columns, paths present and inside the data root, ratings in
    range (and among ``spec.rating_classes``), groups given; one ManifestError listing every problem.

    Group ids come back normalised (``folds.normalise_group``). Image contents are checked when they are read
    (``read_image`` / ``read_mask``). Returns the table with a ``row`` column (the CSV line number) for later
    error messages.
    """
    table, problems, _ = scan_manifest(data_root, spec)
    raise_problems(problems, Path(data_root) / MANIFEST_NAME)
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
        with open_image(path) as handle:
            return np.asarray(handle.convert("RGB"))
    except IMAGE_ERRORS as error:
        raise ManifestError(f"row {record.row}: cannot read image {path}: {error}") from error


def read_mask(root: Path, record, expected_hw: tuple[int, int]) -> np.ndarray:
    """Binary uint8 {0, 1} (H, W) mask of a manifest row, checked against its image's size and values."""
    path = Path(root) / record.mask_path
    try:
        with open_image(path) as handle:
            array = np.asarray(handle)
    except IMAGE_ERRORS as error:
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
