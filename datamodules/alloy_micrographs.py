"""Al–Si casting-alloy micrographs for AlloyGAN, one fold at a time: the generated ones
(``matcv.datamodules.synthetic.alloy_micrographs``) or a user's own in the same manifest layout.

Groups are alloys (Table 6's point: test on alloys never seen in training). The same manifest layout serves a
user's own micrographs: ``image_path`` plus Si, Fe, Cu, Mn, Mg, Ni (wt%), ``cooling_rate`` (K/s) and
``modified`` (0/1, yes/no, true/false); ``alloy`` optional (without it the group is the composition).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from matcv.datamodules.folds import normalise_group, similar_group_problems
from matcv.datamodules.manifest import ManifestError, raise_problems
from matcv.datamodules.measurements.alloys import CONDITION_COLUMNS, ELEMENTS, condition_label
from matcv.datamodules.microstructure_images import (
    MANIFEST_NAME,
    ManifestImageDataModule,
    MicrostructureImages,
    labels_of,
    load_images,
    to_unit_range,
)
from matcv.datamodules.synthetic.alloy_micrographs import AlloyGeneratorConfig, generate_alloy_dataset

MODIFIED_WORDS = {"0": 0, "1": 1, "no": 0, "yes": 1, "false": 0, "true": 1, "0.0": 0, "1.0": 1}


def resolve_data_root(data_root: str | Path | None, generator: dict | None = None, progress: bool = True) -> Path:
    """A data root as given, or the generated dataset for ``generator`` settings (generated once)."""
    if data_root is not None:
        return Path(data_root)
    return generate_alloy_dataset(AlloyGeneratorConfig(**(generator or {})), progress=progress)


# --- reading the manifest layout (generated or a user's own) -----------------------------------------------------

def composition_group(row: dict) -> str:
    """The group of a row without an ``alloy`` name: its composition, e.g. "Si7-Fe0.5-Cu0.25-Mn0.35-Mg0.3-Ni0"."""
    return "-".join(f"{e}{float(row[e]):g}" for e in ELEMENTS)


def read_manifest(root: str | Path) -> pd.DataFrame:
    """The manifest with numeric condition columns, ``modified`` as 0/1, ``group`` and ``label`` filled.

    One ManifestError lists every problem, each naming the file, the row (header = row 1) and the column.
    """
    root = Path(root)
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: an alloy micrograph data root needs a manifest.csv with "
                                f"columns image_path, {', '.join(CONDITION_COLUMNS)} [, alloy] "
                                f"(module doc of matcv.datamodules.alloy_micrographs)")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ManifestError(f"{path}: not a readable CSV ({error})") from error
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in ("image_path", *CONDITION_COLUMNS) if c not in table.columns]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {missing}; found {list(table.columns)}; an alloy manifest "
                            f"needs image_path, {', '.join(CONDITION_COLUMNS)} (alloy optional)")
    problems = []
    numeric = {c: np.full(len(table), np.nan) for c in CONDITION_COLUMNS[:-1]}
    modified = np.zeros(len(table), np.int64)
    for i, record in enumerate(table.to_dict("records")):
        row = i + 2
        where = f"{path.name} row {row}"
        image_path = str(record["image_path"]).strip()
        if not image_path or Path(image_path).is_absolute() or ".." in Path(image_path).parts:
            problems.append(f"{where}, column image_path: {image_path!r} must be a relative path inside {root}")
        for column in CONDITION_COLUMNS[:-1]:
            text = str(record[column]).strip()
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                problems.append(f"{where}, column {column}: {text!r} is not a number (missing or NaN)")
            elif value < 0:
                problems.append(f"{where}, column {column}: {value:g} is negative")
            elif column == "cooling_rate" and value == 0:
                problems.append(f"{where}, column cooling_rate: must be positive (K/s), got 0")
            else:
                numeric[column][i] = value
        flag = str(record["modified"]).strip().lower()
        if flag not in MODIFIED_WORDS:
            problems.append(f"{where}, column modified: {record['modified']!r} is not one of 0, 1, yes, no, true, false")
        else:
            modified[i] = MODIFIED_WORDS[flag]
    duplicated = table["image_path"][table["image_path"].duplicated()].unique().tolist()
    problems += [f"{path.name}, column image_path: {p!r} is listed more than once" for p in duplicated]
    raise_problems(problems, path)
    for column, values in numeric.items():
        table[column] = values
    table["modified"] = modified
    if "alloy" not in table.columns:
        table["alloy"] = ""
    # Alloy names and groups are compared as normalise_group writes them ("A356 " is A356), and two that
    # differ only in case or spacing are refused: one alloy spelt two ways would be in train and in test.
    table["alloy"] = [normalise_group(a) for a in table["alloy"]]
    no_name = table["alloy"] == ""
    table.loc[no_name, "alloy"] = [composition_group(r) for r in table[no_name].to_dict("records")]
    if "group" in table.columns:
        table["group"] = [normalise_group(g) for g in table["group"]]
    if "group" not in table.columns or (table["group"] == "").any():
        table["group"] = table["alloy"]
    rows_of: dict[str, list[int]] = {}
    for row, group in enumerate(table["group"], start=2):
        rows_of.setdefault(group, []).append(row)
    where = {g: f"row{'s' if len(r) > 1 else ''} {', '.join(map(str, r[:5]))}{', ...' if len(r) > 5 else ''}"
             for g, r in rows_of.items()}
    raise_problems(similar_group_problems(list(rows_of), where, "group (alloy)"), path)
    table["label"] = [condition_label(a, r, m) for a, r, m in zip(table["alloy"], table["cooling_rate"], table["modified"])]
    return table


def index_table(table: pd.DataFrame) -> dict:
    items = table["image_path"].tolist()
    strata = None
    if "stratum" in table.columns and table["stratum"].astype(str).str.strip().astype(bool).any():
        strata = table["stratum"].astype(str).tolist()
    return {"items": items, "groups": table["group"].astype(str).tolist(), "strata": strata, "files": items}


class AlloyMicrographs(MicrostructureImages):
    """``MicrostructureImages`` with each item's raw condition vector and alloy name.

    ``conditions`` (N, 8) float32: Si, Fe, Cu, Mn, Mg, Ni (wt%), cooling rate (K/s), modified (0/1) —
    ``CONDITION_COLUMNS``, unnormalised (the model applies its own prior and min-max normalisation, eq. 9).
    """

    def __init__(self, images: np.ndarray, item_ids: list[str], labels, conditions: np.ndarray, alloys: list[str]):
        super().__init__(images, item_ids, labels)
        conditions = np.asarray(conditions, np.float32).reshape(len(self.item_ids), len(CONDITION_COLUMNS))
        if len(alloys) != len(self.item_ids):
            raise ValueError(f"{len(self.item_ids)} images but {len(alloys)} alloy names")
        self.conditions = torch.from_numpy(np.ascontiguousarray(conditions))
        self.alloys = list(alloys)

    def __getitem__(self, index: int) -> dict:
        return {**super().__getitem__(index), "conditions": self.conditions[index], "alloy": self.alloys[index]}


class AlloyMicrographDataModule(ManifestImageDataModule):
    """One fold of the generated (or a user's, manifest-layout) Al–Si micrographs; groups are alloys.

    Labels (for the FID-domain extractor) index the training part's conditions ("A356|10|1"); a test
    alloy's conditions are never in training, so its labels are -1. ``tables[p]`` holds each partition's
    manifest rows (in item order) with the truth columns.
    """

    image_kind = "grey"
    periodic = False
    read_manifest = staticmethod(read_manifest)
    index_table = staticmethod(index_table)

    def __init__(self, fold_manifest_path: str | Path, fold: int, data_root: str | Path | None = None,
                 generator: dict | None = None, batch_size: int = 64, num_workers: int = 0, seed: int = 0):
        super().__init__(fold_manifest_path, fold, data_root, seed, generator=generator, batch_size=batch_size,
                         num_workers=num_workers)
        self.save_hyperparameters()
        self.tables: dict[str, pd.DataFrame] = {}

    @staticmethod
    def prepare_dataset(data_root: str | Path | None, generator: dict | None = None, progress: bool = True) -> Path:
        return resolve_data_root(data_root, generator, progress)

    def build_datasets(self) -> None:
        table = read_manifest(self.data_root).set_index("image_path", drop=False)
        folds = self.fold_items(dict(zip(table["image_path"], table["group"].astype(str))))
        _, self.label_names = labels_of(table.loc[list(folds["train"]), "label"].tolist())
        for partition in ("train", "val", "test"):
            items = list(folds[partition])
            rows = table.loc[items].reset_index(drop=True)
            images = load_images(self.data_root, items)[:, None]
            labels, _ = labels_of(rows["label"].tolist(), self.label_names)
            conditions = rows[list(CONDITION_COLUMNS)].to_numpy(np.float32) if len(rows) else np.zeros((0, 8))
            self.datasets[partition] = AlloyMicrographs(to_unit_range(images), items, labels, conditions,
                                                        rows["alloy"].tolist())
            self.tables[partition] = rows
        self.num_labels = len(self.label_names)
