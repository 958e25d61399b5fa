"""UHCSDB (Ultrahigh Carbon Steel micrograph database) as patches for the microstructure AE / GAN task.

The data (DeCost, Hecht, Francis, Webler, Picard, Holm; NIST Materials Data Repository handle 11256/940,
also on the Materials Data Facility) are SEM micrographs of ultrahigh carbon steel after various heat
treatments. matcv reads the release as it is published, from one folder:

    micrographs/micrograph<ID>.tif|png|jpg   the images (the metadata's ``path`` column names the file)
    uhcs-metadata.csv                        the metadata export of github.com/bdecost/uhcsdb (first column
                                             an unnamed row index), or
    microstructures.sqlite                   the release's own database: the table with the columns
                                             micrograph_id, path, magnification, primary_microconstituent,
                                             sample_key (``micrograph``) is read with the stdlib sqlite3;
                                             anneal columns come from the table keyed by sample_id
                                             (``sample``), joined as the CSV export joins them.

With both metadata files present the CSV is read. The *public release* is the 961 rows whose
``primary_microconstituent`` is one of the seven ``RELEASE_CONSTITUENTS``; the other rows of the metadata
(figures, cracks, indents, quality shots, unlabelled images) are not part of it.

Curation (seed 002 §9.1-9.2, §10) and why:

* **Banner.** Most micrographs are 645x522 px with a 38-px instrument banner (magnification, scale bar) at the
  bottom; ``banner_px`` rows are cut from the bottom of *every* image (645x484 for the usual size), since text
  and a scale bar are not microstructure.
* **Common magnification.** A pixel must mean the same length in every patch, or the models learn the
  magnification rather than the microstructure. Each image is rescaled by target / magnification
  (magnification is free text such as ``4910x`` or ``1964X``; rows without a usable one are skipped and the
  reason is reported): cv2.INTER_AREA when shrinking, INTER_CUBIC when enlarging, new size
  ``round(w * scale) x round(h * scale)`` (Python's round: nearest, ties to even). The default target is the
  median magnification of the rows used, from the metadata alone: 1473X over the whole release (848 rows
  with a magnification), 1964X for ``constituents=["spheroidite"]`` as in the seed.
* **Size cap.** The release spans 32X to 63833X, so some images would be enlarged 46x (a 645-px image would
  become ~30 000 px wide). The centre of the (banner-cropped) image is cut to ``floor(max_side / scale)`` px
  before rescaling wherever the result would exceed ``max_side`` (default 2048 px), so no rescaled image has
  a side longer than ``max_side``. An enlargement adds no detail: a 48x64 patch of a 98X image at 1964X
  spans 2.4x3.2 source pixels. ``max_upscale`` skips (with a reason) rows that would be enlarged more than
  that factor; None (default) keeps them, as the seed's curation did for spheroidite (at most 8x there).
* **Patches.** Each micrograph gives ``floor(H * W / (ph * pw) * redundancy)`` random crops (seed eq. 2,
  r = 1.5), 48x64 for the autoencoder, 64x64 for the DCGAN, optionally capped by
  ``max_crops_per_micrograph``. The offsets are drawn from numpy's generator seeded by (seed, partition,
  micrograph id), so a seed gives the same patches whatever else is in the fold.
* **Groups.** Patches of one micrograph, and micrographs of one specimen, are near copies of each other, so
  folds are grouped by ``sample_key`` (the specimen: group ``sample-<key>``), never by patch or micrograph.
  158 release images have no sample_key; each is its own group ``orphan-<micrograph_id>`` (nothing says
  which specimen it shows, so it cannot be tied to another image).

Labels (for the domain feature extractor of FID/KID): the index of the micrograph's ``label`` column value
(primary_microconstituent by default) among the *training* partition's values, -1 for a value absent from
training. Strata for fold making are primary_microconstituent.

Banner-cropped, rescaled micrographs are cached as PNG under
``default_cache_dir()/uhcsdb/<key>/micrograph<ID>-<stamp>.png`` (key: sha256 of the metadata file, the target
magnification, banner_px and max_side; stamp: the source file's size and mtime), so the second setup reads
small PNGs instead of rescaling again. Memory: patches are float32 (12 KiB per 48x64 patch); the whole release
at the defaults gives several hundred thousand patches, most of them from the enlarged low-magnification
images -- use ``max_crops_per_micrograph`` or ``max_upscale`` to bound it.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import re
import sqlite3
import warnings
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from matcv.datamodules.core.atomic_io import save_png
from matcv.datamodules.folds import load_fold
from matcv.datamodules.manifest import MAX_LISTED_PROBLEMS, ManifestError
from matcv.datamodules.microstructure_images import (
    MicrostructureImageDataModule,
    MicrostructureImages,
    labels_of,
    to_unit_range,
)
from matcv.datamodules.core.cache import default_cache_dir

ROOT_ENV = "MATCV_UHCSDB_ROOT"
DATASET_NAME = "uhcsdb"
DATA_FOLDER = "uhcsdb"  # a data root may also be the folder that holds uhcsdb/
MICROGRAPH_FOLDER = "micrographs"
METADATA_CSV = "uhcs-metadata.csv"
METADATA_SQLITE = "microstructures.sqlite"
METADATA_NAMES = (METADATA_CSV, METADATA_SQLITE)  # in order of preference
SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")
RELEASE_CONSTITUENTS: tuple[str, ...] = (
    "spheroidite", "network", "pearlite", "pearlite+spheroidite", "spheroidite+widmanstatten", "martensite",
    "pearlite+widmanstatten",
)
REQUIRED_COLUMNS = ("micrograph_id", "path", "magnification", "primary_microconstituent", "sample_key")
MICROGRAPH_TABLE = "micrograph"  # the release's table name, preferred if several tables have the columns
SAMPLE_ID = "sample_id"  # the key of the release's sample table (anneal conditions), joined on sample_key
MISSING_LABEL = "(none)"  # label of a row whose label column is empty

DEFAULT_PATCH = (48, 64)  # seed §9 (autoencoder); §10's DCGAN uses (64, 64)
DEFAULT_REDUNDANCY = 1.5  # seed eq. 2
DEFAULT_BANNER_PX = 38
DEFAULT_MAX_SIDE = 2048
CACHE_VERSION = 1  # bump when the cached images change (cropping, interpolation), so old ones are not reused
PARTITIONS = ("train", "val", "test")
PARTITION_STREAMS = {"train": 0, "val": 1, "test": 2}
IMAGE_MODES = ("1", "L", "LA", "P", "RGB", "RGBA")  # 8-bit modes PIL converts to grey without loss of range
MAGNIFICATION = re.compile(r"(\d+(?:\.\d*)?)\s*[x×]?", re.IGNORECASE)

RELEASE_HELP = (
    "Get the UHCSDB release (Ultrahigh Carbon Steel micrographs, DeCost et al.: NIST Materials Data Repository "
    "https://hdl.handle.net/11256/940, also on the Materials Data Facility) and put in one folder\n"
    f"  {MICROGRAPH_FOLDER}/micrograph<ID>.tif|png|jpg  (the images, as released)\n"
    f"  {METADATA_CSV}  (the metadata export of github.com/bdecost/uhcsdb) or {METADATA_SQLITE} "
    f"(the release's database)\n"
    f"Point matcv at that folder with --data-root PATH or the environment variable {ROOT_ENV}=PATH; matcv has "
    f"no built-in copy of the micrographs."
)


# --- the data root ---------------------------------------------------------------------------------------

def resolve_data_root(data_root: str | Path | None = None) -> Path:
    """``data_root``, else $MATCV_UHCSDB_ROOT: the release folder itself or its parent holding ``uhcsdb/``.

    FileNotFoundError says what was looked for, where to get the release and how to point matcv at it.
    """
    if data_root is not None:
        given, origin = Path(data_root), "--data-root / data_root"
    elif os.environ.get(ROOT_ENV):
        given, origin = Path(os.environ[ROOT_ENV]), f"${ROOT_ENV}"
    else:
        raise FileNotFoundError(f"UHCSDB data not found: no data root was given and ${ROOT_ENV} is not set.\n"
                                f"{RELEASE_HELP}")
    for candidate in (given, given / DATA_FOLDER):
        if (candidate / MICROGRAPH_FOLDER).is_dir() and any((candidate / n).is_file() for n in METADATA_NAMES):
            return candidate
    if not given.exists():
        state = "does not exist"
    else:
        state = (f"has no {MICROGRAPH_FOLDER}/ folder with {METADATA_CSV} or {METADATA_SQLITE} beside it "
                 f"(nor has {DATA_FOLDER}/)")
    raise FileNotFoundError(f"UHCSDB data not found: {given} (from {origin}) {state}.\n{RELEASE_HELP}")


def metadata_path(root: str | Path) -> Path:
    """The metadata file of a release folder: the CSV if present, else the sqlite database."""
    root = Path(root)
    for name in METADATA_NAMES:
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"{root}: neither {METADATA_CSV} nor {METADATA_SQLITE} found.\n{RELEASE_HELP}")


def _raise_all(problems: list[str], where: Path) -> None:
    if not problems:
        return
    shown = problems[:MAX_LISTED_PROBLEMS]
    more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    raise ManifestError(f"{where}: {len(problems)} problem(s) in the UHCSDB data:\n  " + "\n  ".join(shown) + more)


# --- metadata --------------------------------------------------------------------------------------------

def parse_magnification(value) -> float:
    """The magnification of a metadata cell: ``"4910x"`` -> 4910.0, ``"1964X"`` -> 1964.0, ``1964`` -> 1964.0.

    ValueError with the reason for an empty cell (None, NaN, "") or anything but a positive number optionally
    followed by x (thousands separators are allowed: "19,641x").
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise ValueError("no magnification in the metadata")
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
    else:
        text = str(value).strip()
        if not text:
            raise ValueError("no magnification in the metadata")
        match = MAGNIFICATION.fullmatch(text.replace(",", ""))
        if match is None:
            raise ValueError(f"magnification {text!r} is not a number followed by x (such as 1964X)")
        number = float(match.group(1))
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"magnification {value!r} is not a positive number")
    return number


def normalise_key(value) -> str | None:
    """A metadata cell as text, alike from the CSV and the sqlite database: ``"47.0"``, ``47.0`` and ``47``
    -> ``"47"``; ``800.5`` -> ``"800.5"``; empty cells (None, NaN, "") -> None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number):
        return text
    return str(int(number)) if number.is_integer() else repr(number)


@dataclass(frozen=True)
class MetadataRow:
    """One row of the metadata, as read (before release selection and magnification parsing)."""

    micrograph_id: int
    path: str  # the file name inside micrographs/
    magnification: object  # the raw cell: text such as "4910x", a number (sqlite), or None
    constituent: str  # primary_microconstituent, "" when empty
    sample_key: str | None  # normalised ("47"), None when the image has none
    label: str  # the value of the label column (normalised), MISSING_LABEL when empty

    @property
    def item_id(self) -> str:
        return f"{MICROGRAPH_FOLDER}/{self.path}"


def _csv_records(path: Path, label: str) -> list[dict]:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ManifestError(f"{path}: not a readable CSV ({error})") from error
    columns = list(dict.fromkeys((*REQUIRED_COLUMNS, label)))
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {missing}; found {list(table.columns)}")
    return [{c: (v if v != "" else None) for c, v in zip(columns, values)}
            for values in table[columns].itertuples(index=False, name=None)]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sqlite_records(path: Path, label: str) -> list[dict]:
    """The micrograph table's rows (and ``label`` from the sample table when the micrograph table lacks it)."""
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise ManifestError(f"{path}: cannot open the sqlite database ({error})") from error
    with closing(connection):
        try:
            tables = [name for (name,) in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            columns = {t: [row[1] for row in connection.execute(f"PRAGMA table_info({_quote(t)})")] for t in tables}
            candidates = [t for t in tables if set(REQUIRED_COLUMNS) <= set(columns[t])]
            if not candidates:
                raise ManifestError(f"{path}: no table has the columns {list(REQUIRED_COLUMNS)}; tables and their "
                                    f"columns: {columns}")
            table = MICROGRAPH_TABLE if MICROGRAPH_TABLE in candidates else candidates[0]
            select = [f"m.{_quote(c)}" for c in REQUIRED_COLUMNS]
            join = ""
            if label not in REQUIRED_COLUMNS:
                if label in columns[table]:
                    select.append(f"m.{_quote(label)}")
                else:
                    samples = [t for t in tables if t != table and SAMPLE_ID in columns[t] and label in columns[t]]
                    if not samples:
                        raise ManifestError(f"{path}: no column {label!r} in table {table!r} nor in a table keyed by "
                                            f"{SAMPLE_ID}; tables and their columns: {columns}")
                    select.append(f"s.{_quote(label)}")
                    join = f" LEFT JOIN {_quote(samples[0])} AS s ON s.{SAMPLE_ID} = m.sample_key"
            query = f"SELECT {', '.join(select)} FROM {_quote(table)} AS m{join}"
            rows = connection.execute(query).fetchall()
        except sqlite3.Error as error:
            raise ManifestError(f"{path}: cannot read the sqlite database ({error})") from error
    names = list(dict.fromkeys((*REQUIRED_COLUMNS, label)))
    return [dict(zip(names, row)) for row in rows]


def read_metadata(path: str | Path, label: str = "primary_microconstituent") -> list[MetadataRow]:
    """Every row of a metadata file (CSV or sqlite, module doc), sorted by micrograph id.

    One ManifestError lists every row without an integer micrograph_id or a plain file name in ``path``, and
    every id or path listed twice.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"metadata file {path} not found")
    is_sqlite = path.suffix.lower() in SQLITE_SUFFIXES
    records = _sqlite_records(path, label) if is_sqlite else _csv_records(path, label)
    problems: list[str] = []
    rows: list[MetadataRow] = []
    first_row = 1 if is_sqlite else 2  # CSV rows as a spreadsheet shows them (header = row 1)
    for number, record in enumerate(records, start=first_row):
        key = normalise_key(record["micrograph_id"])
        file_name = record["path"]
        where = f"row {number}" + (f" ({file_name})" if file_name else "")
        if key is None or not key.isdigit():
            problems.append(f"{where}: micrograph_id {record['micrograph_id']!r} is not an integer")
            continue
        if not isinstance(file_name, str) or not file_name.strip():
            problems.append(f"{where}: empty path")
            continue
        if Path(file_name).name != file_name or file_name in (".", ".."):
            problems.append(f"{where}: path {file_name!r} is not a file name inside {MICROGRAPH_FOLDER}/")
            continue
        constituent = normalise_key(record["primary_microconstituent"]) or ""
        value = normalise_key(record[label])
        rows.append(MetadataRow(int(key), file_name, record["magnification"], constituent,
                                normalise_key(record["sample_key"]), MISSING_LABEL if value is None else value))
    for attribute in ("micrograph_id", "path"):
        values = pd.Series([getattr(r, attribute) for r in rows], dtype=object)
        for value in values[values.duplicated()].unique():
            problems.append(f"{attribute} {value!r} is listed more than once")
    _raise_all(problems, path)
    return sorted(rows, key=lambda r: r.micrograph_id)


def release_rows(rows: Sequence[MetadataRow]) -> list[MetadataRow]:
    """The public release: the rows whose primary_microconstituent is one of RELEASE_CONSTITUENTS."""
    return [r for r in rows if r.constituent in RELEASE_CONSTITUENTS]


def check_constituents(constituents: Sequence[str] | None) -> tuple[str, ...]:
    """The chosen classes (default: all seven release classes), checked against the release's."""
    if constituents is None:
        return RELEASE_CONSTITUENTS
    if isinstance(constituents, str):
        constituents = [constituents]
    chosen = tuple(dict.fromkeys(constituents))
    unknown = [c for c in chosen if c not in RELEASE_CONSTITUENTS]
    if not chosen or unknown:
        raise ValueError(f"constituents must be a non-empty subset of {list(RELEASE_CONSTITUENTS)}, "
                         f"got {list(constituents)}")
    return chosen


@dataclass(frozen=True)
class UHCSMicrograph:
    """A release micrograph that is used: where it is, its group and how much it is rescaled."""

    micrograph_id: int
    item_id: str  # "micrographs/micrograph12.tif", relative to the data root
    constituent: str  # primary_microconstituent (the fold strata)
    group: str  # "sample-<sample_key>", or "orphan-<micrograph_id>" for an image without one
    label: str  # the label column's value
    magnification: float
    scale: float  # target magnification / magnification


@dataclass(frozen=True)
class Selection:
    micrographs: list[UHCSMicrograph]  # sorted by micrograph id
    skipped: list[tuple[str, str]]  # (item id, reason): release rows of the chosen constituents left out
    target_magnification: float
    n_release: int  # release rows in the metadata (all seven classes)


def group_of(row: MetadataRow) -> str:
    """The specimen group: ``sample-<sample_key>``, or ``orphan-<micrograph_id>`` when there is no key."""
    return f"sample-{row.sample_key}" if row.sample_key is not None else f"orphan-{row.micrograph_id}"


def select_micrographs(rows: Sequence[MetadataRow], constituents: Sequence[str] | None = None,
                       target_magnification: float | None = None, max_upscale: float | None = None) -> Selection:
    """The release micrographs of the chosen constituents that can be rescaled, and why the others cannot.

    ``target_magnification`` None: the median magnification of the chosen rows that have one.
    ``max_upscale``: rows whose scale (target / magnification) exceeds it are skipped.
    """
    chosen = check_constituents(constituents)
    release = release_rows(rows)
    usable: list[tuple[MetadataRow, float]] = []
    skipped: list[tuple[str, str]] = []
    for row in release:
        if row.constituent not in chosen:
            continue
        try:
            usable.append((row, parse_magnification(row.magnification)))
        except ValueError as error:
            skipped.append((row.item_id, str(error)))
    if not usable:
        raise ManifestError(f"no release micrograph of {list(chosen)} has a usable magnification "
                            f"({len(skipped)} skipped, e.g. {skipped[:3]})")
    if target_magnification is None:
        target = float(np.median([m for _, m in usable]))
    else:
        target = float(target_magnification)
        if not math.isfinite(target) or target <= 0:
            raise ValueError(f"target_magnification must be a positive number, got {target_magnification!r}")
    if max_upscale is not None and not float(max_upscale) > 0:
        raise ValueError(f"max_upscale must be positive (or None), got {max_upscale!r}")
    micrographs = []
    for row, magnification in usable:
        scale = target / magnification
        if max_upscale is not None and scale > float(max_upscale):
            reason = (f"magnification {magnification:g}X would be enlarged {scale:.3g}x to {target:g}X, more than "
                      f"max_upscale={float(max_upscale):g}")
            skipped.append((row.item_id, reason))
            continue
        micrographs.append(UHCSMicrograph(row.micrograph_id, row.item_id, row.constituent, group_of(row), row.label,
                                          magnification, scale))
    if not micrographs:
        raise ManifestError(f"every release micrograph of {list(chosen)} was skipped, e.g. {skipped[:3]}")
    return Selection(micrographs, skipped, target, len(release))


def scan_release(data_root: str | Path, constituents: Sequence[str] | None = None,
                 target_magnification: float | None = None, max_upscale: float | None = None,
                 label: str = "primary_microconstituent") -> tuple[Path, Selection]:
    """(metadata file, selection) of a release folder, from the metadata alone; skipped rows are warned about."""
    metadata = metadata_path(data_root)
    selection = select_micrographs(read_metadata(metadata, label), constituents, target_magnification, max_upscale)
    if selection.skipped:
        shown = "; ".join(f"{item}: {reason}" for item, reason in selection.skipped[:3])
        warnings.warn(f"{metadata}: {len(selection.skipped)} release micrograph(s) of the chosen constituents "
                      f"skipped ({shown}{'; ...' if len(selection.skipped) > 3 else ''})", stacklevel=3)
    return metadata, selection


def _index(metadata: Path, selection: Selection) -> dict:
    items = [m.item_id for m in selection.micrographs]
    return {"items": items, "groups": [m.group for m in selection.micrographs],
            "strata": [m.constituent for m in selection.micrographs], "files": sorted([*items, metadata.name])}


# --- images ----------------------------------------------------------------------------------------------

def read_grey(path: Path) -> np.ndarray:
    """Grey uint8 (H, W) of one image file (colour converted to luma), or ManifestError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: image file not found")
    try:
        with Image.open(path) as handle:
            mode = handle.mode
            image = np.asarray(handle.convert("L")) if mode in IMAGE_MODES else None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise ManifestError(f"{path}: cannot read image ({error})") from error
    if image is None:  # e.g. 16-bit grey: PIL would clip it to 8 bits without a word
        raise ManifestError(f"{path}: image mode {mode!r} is not 8-bit grey or colour; save it as 8-bit")
    return image


def _rescaled_side(length: int, scale: float, max_side: int | None) -> tuple[int, int]:
    """(source pixels kept, rescaled length) along one axis (module doc, "Size cap")."""
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
                with Image.open(cached) as handle:
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


# --- patches ---------------------------------------------------------------------------------------------

def crop_count(height: int, width: int, patch_size: tuple[int, int] = DEFAULT_PATCH,
               redundancy: float = DEFAULT_REDUNDANCY, cap: int | None = None) -> int:
    """Seed eq. 2: floor(H * W / (ph * pw) * r) random crops of an H x W image, at most ``cap``."""
    count = math.floor(height * width / (patch_size[0] * patch_size[1]) * redundancy)
    return count if cap is None else min(count, cap)


def draw_crops(image: np.ndarray, count: int, patch_size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """``count`` patches (count, ph, pw) at uniformly random offsets (every position equally likely)."""
    patch_h, patch_w = patch_size
    tops = rng.integers(0, image.shape[0] - patch_h + 1, size=count)
    lefts = rng.integers(0, image.shape[1] - patch_w + 1, size=count)
    windows = np.lib.stride_tricks.sliding_window_view(image, (patch_h, patch_w))
    return windows[tops, lefts].copy()


def _positive_pair(value, name: str) -> tuple[int, int]:
    pair = tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{name} must be two positive integers (height, width), got {value!r}")
    return pair


# --- Lightning -------------------------------------------------------------------------------------------

class UHCSDBDataModule(MicrostructureImageDataModule):
    """Random patches of the UHCSDB micrographs of one fold, rescaled to a common magnification (module doc).

    After ``setup``: ``datasets[p]`` (``MicrostructureImages``, item ids ``<micrograph path>#<crop k>``),
    ``num_labels`` and ``label_names`` (the training partition's label values), ``target_magnification``.
    """

    image_kind = "grey"
    periodic = False

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
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
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
        self.fold_manifest_path, self.fold = Path(fold_manifest_path), int(fold)
        self.data_root: Path | None = Path(data_root) if data_root is not None else None
        self.seed = int(seed)
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
        self.label_names: list[str] = []

    # The harness's static hooks.

    @staticmethod
    def prepare_dataset(data_root: str | Path | None, generator: dict | None = None, progress: bool = True) -> Path:
        """Where the release is: ``data_root``, else $MATCV_UHCSDB_ROOT (nothing is generated or downloaded)."""
        return resolve_data_root(data_root)

    @staticmethod
    def dataset_name(data_root: str | Path) -> str:
        """One name for the benchmark folder, wherever the copy lies (the data hash tells copies apart)."""
        return DATASET_NAME

    @staticmethod
    def index_dataset(data_root: str | Path, constituents: Sequence[str] | None = None,
                      target_magnification: float | None = None, max_upscale: float | None = None,
                      **_unused) -> dict:
        """Items (micrograph paths relative to the root), specimen groups, constituent strata and files (the
        micrographs and the metadata file), from the metadata alone."""
        metadata, selection = scan_release(resolve_data_root(data_root), constituents, target_magnification,
                                           max_upscale)
        return _index(metadata, selection)

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
        _raise_all(problems, root)
        return _index(metadata, selection)

    # Lightning.

    def prepare_data(self) -> None:
        self.data_root = resolve_data_root(self.data_root)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        root = self.data_root = resolve_data_root(self.data_root)
        metadata, selection = scan_release(root, self.constituents, self.requested_magnification, self.max_upscale,
                                           self.label)
        self.target_magnification = selection.target_magnification
        folds = load_fold(self.fold_manifest_path, self.fold, {m.item_id: m.group for m in selection.micrographs})
        by_id = {m.item_id: m for m in selection.micrographs}
        chosen = {p: [by_id[i] for i in folds[p]] for p in PARTITIONS}
        problems: list[str] = []
        patches = {p: self._patches(root, metadata, chosen[p], p, problems) for p in PARTITIONS}
        _raise_all(problems, root)
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
