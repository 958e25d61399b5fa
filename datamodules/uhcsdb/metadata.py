"""The UHCSDB release's folder and metadata (DeCost et al. 2017; NIST Materials Data Repository handle
11256/940): where the release is, and its metadata rows read alike from the CSV export of
github.com/bdecost/uhcsdb or from the release's own sqlite database.

A release folder holds ``micrographs/micrograph<ID>.tif|png|jpg`` and ``uhcs-metadata.csv`` (first column an
unnamed row index) or ``microstructures.sqlite`` (the table with the columns micrograph_id, path,
magnification, primary_microconstituent, sample_key; anneal columns come from the table keyed by sample_id,
joined as the CSV export joins them). With both present the CSV is read.
"""

from __future__ import annotations

import math
import numbers
import re
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from matcv.datamodules.data_roots import given_data_root
from matcv.datamodules.manifest import ManifestError, raise_problems

ROOT_ENV = "MATCV_UHCSDB_ROOT"
DATASET_NAME = "uhcsdb"
WHAT = "UHCSDB data"  # how error messages name the data
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
    given, origin = given_data_root(data_root, ROOT_ENV, f"UHCSDB data not found: no data root was given and "
                                                         f"${ROOT_ENV} is not set.\n{RELEASE_HELP}")
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
    """Every row of a metadata file (CSV or sqlite, see the module doc), sorted by micrograph id.

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
    raise_problems(problems, path, WHAT)
    return sorted(rows, key=lambda r: r.micrograph_id)


def release_rows(rows: Sequence[MetadataRow]) -> list[MetadataRow]:
    """The public release: the rows whose primary_microconstituent is one of RELEASE_CONSTITUENTS."""
    return [r for r in rows if r.constituent in RELEASE_CONSTITUENTS]
