"""The two on-disk layouts of 3-D strain localization data, scanned from names and headers and checked.

* **generated**: ``microstructures.npy`` (n, N, N, N) uint8, ``strains.npy`` (n, N, N, N) float32 and
  ``manifest.csv`` (item id, group, filter triple and row per volume), written by
  ``matcv.datamodules.synthetic.localization``. Its group is the filter triple; ``group_by="symmetry_class"``
  merges mirror families.
* **RLN** (the published data of Yang et al. 2019): ``{size}_c{contrast}_{split}.npy`` with ``..._strain.npy``
  beside it (e.g. ``21_c10_sample.npy``). That layout carries no filter triple or any other family label,
  so every volume is its own group; item ids are ``<file stem>/<index>``. With several contrasts in one
  folder, ``contrast`` selects one.

Scans read array headers only (memory-mapped), so indexing a large dataset is cheap; ``check_arrays`` and
``load_volumes`` read values. Every problem of a folder is reported at once.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from matcv.datamodules.folds import normalise_group, similar_group_problems
from matcv.datamodules.manifest import raise_problems
from matcv.datamodules.synthetic.localization import (
    MANIFEST_COLUMNS,
    MANIFEST_NAME,
    MICROSTRUCTURES_NAME,
    STRAINS_NAME,
    symmetry_class,
)

WHAT = "localization data"  # how error messages name the data
GROUP_BY = ("group", "symmetry_class")
RLN_NAME = re.compile(r"^(?P<size>\d+)_c(?P<contrast>\d+(?:\.\d+)?)_(?P<split>.+?)(?P<strain>_strain)?\.npy$")


@dataclass(frozen=True)
class LocalizationItem:
    item_id: str
    group: str
    microstructure_file: str  # relative to the data root
    strain_file: str
    index: int  # row of both arrays


def _open_npy(path: Path, problems: list[str]) -> np.ndarray | None:
    """The array memory-mapped (headers only are read now), or None with the reason in ``problems``."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        problems.append(f"{path}: missing")
    except (ValueError, OSError, EOFError) as error:  # object arrays (pickles), truncated or foreign files
        problems.append(f"{path}: not a readable .npy array of numbers ({error})")
    return None


def _check_pair_shapes(micro: np.ndarray, strain: np.ndarray, micro_path: Path, strain_path: Path,
                       problems: list[str]) -> bool:
    """(n, N, N, N) cubes of numbers, the same shape in both files; False (and why) otherwise."""
    ok = True
    for array, path, kind in ((micro, micro_path, "microstructures"), (strain, strain_path, "strain fields")):
        if array.ndim != 4 or len(set(array.shape[1:])) != 1:
            problems.append(f"{path}: shape {array.shape}; expected (n, N, N, N) {kind}: a stack of 3-D cubes")
            ok = False
        elif not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            problems.append(f"{path}: dtype {array.dtype}; expected numbers")
            ok = False
    if ok and micro.shape != strain.shape:
        problems.append(f"{strain_path}: shape {strain.shape} differs from {micro_path.name}'s {micro.shape}")
        ok = False
    if ok and not np.issubdtype(strain.dtype, np.floating):
        problems.append(f"{strain_path}: dtype {strain.dtype}; strain fields must be floating point")
        ok = False
    return ok


def _check_values(micro: np.ndarray, strain: np.ndarray, micro_path: Path, strain_path: Path,
                  problems: list[str]) -> None:
    """Phases in {0, 1} and finite strains, naming the first bad volume of each file."""
    micro, strain = np.asarray(micro), np.asarray(strain)
    bad_phase = ~((micro == 0) | (micro == 1))
    if bad_phase.any():
        volume = int(np.argmax(bad_phase.reshape(len(micro), -1).any(axis=1)))
        values = np.unique(micro[bad_phase])[:5].tolist()
        problems.append(f"{micro_path}: {int(bad_phase.sum())} voxel(s) are not phase 0 or 1 (values {values}, "
                        f"first in volume {volume}); phase 1 is the stiff phase")
    bad_strain = ~np.isfinite(strain)
    if bad_strain.any():
        volume = int(np.argmax(bad_strain.reshape(len(strain), -1).any(axis=1)))
        problems.append(f"{strain_path}: {int(bad_strain.sum())} strain value(s) are NaN or infinite "
                        f"(first in volume {volume})")


def layout_of(data_root: str | Path) -> str:
    """"generated" where the root has a manifest.csv, "rln" otherwise."""
    return "generated" if (Path(data_root) / MANIFEST_NAME).is_file() else "rln"


def _scan_generated(root: Path, contrast: float | None, group_by: str, problems: list[str]
                    ) -> list[LocalizationItem]:
    path = root / MANIFEST_NAME
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        problems.append(f"{path}: not a readable CSV ({error})")
        return []
    needed = ["item_id", "group", "index"] + (["sigma_x", "sigma_y", "sigma_z"] if group_by == "symmetry_class"
                                              else [])
    missing = [c for c in needed if c not in table.columns]
    if missing:
        problems.append(f"{path}: missing column(s) {missing}; expected {list(MANIFEST_COLUMNS)}")
        return []
    empty = table[needed].isna().any(axis=1)
    for row in np.flatnonzero(empty.to_numpy())[:5]:
        problems.append(f"{path} row {row + 2}: empty {[c for c in needed if pd.isna(table.iloc[row][c])]}")
    duplicated = table["item_id"][table["item_id"].duplicated()].unique().tolist()
    if duplicated:
        problems.append(f"{path}: item id(s) listed twice: {duplicated[:5]}")
    index = pd.to_numeric(table["index"], errors="coerce")
    whole = index.notna().all() and bool((index % 1 == 0).all())
    if not whole or sorted(index.astype(int).tolist()) != list(range(len(table))):
        problems.append(f"{path}: column 'index' must number the arrays' volumes 0..{len(table) - 1}, each once")
    if contrast is not None and "contrast" in table.columns:
        other = sorted(set(table["contrast"]) - {f"{contrast:g}"})
        if other:
            problems.append(f"{path}: contrast {other} in the data, but contrast={contrast:g} was asked for")
    micro = _open_npy(root / MICROSTRUCTURES_NAME, problems)
    strain = _open_npy(root / STRAINS_NAME, problems)
    if micro is not None and strain is not None and len(micro) != len(table) \
            and _check_pair_shapes(micro, strain, root / MICROSTRUCTURES_NAME, root / STRAINS_NAME, problems):
        problems.append(f"{root / MICROSTRUCTURES_NAME}: {len(micro)} volume(s), but {path.name} lists {len(table)}")
    if problems or empty.any():
        return []
    if group_by == "symmetry_class":
        try:
            groups = [symmetry_class((float(x), float(y), float(z)))
                      for x, y, z in zip(table["sigma_x"], table["sigma_y"], table["sigma_z"])]
        except ValueError as error:
            problems.append(f"{path}: sigma_x/y/z must be numbers ({error})")
            return []
    else:
        # A user-edited manifest: "sigma_3_7_5 " is sigma_3_7_5, and ids that differ only in case or spacing
        # are refused rather than guessed (folds.similar_group_problems).
        groups = [normalise_group(g) for g in table["group"]]
        blank = [row + 2 for row, g in enumerate(groups) if not g]
        if blank:
            problems.append(f"{path}: empty group on row(s) {blank[:5]}")
        problems += [f"{path}: {p}" for p in similar_group_problems(groups, column="group")]
        if problems:
            return []
    return [LocalizationItem(item, group, MICROSTRUCTURES_NAME, STRAINS_NAME, int(i))
            for item, group, i in zip(table["item_id"], groups, index)]


def _scan_rln(root: Path, contrast: float | None, problems: list[str]) -> list[LocalizationItem]:
    if not root.is_dir():
        problems.append(f"data root {root} does not exist or is not a folder")
        return []
    bases, strains, ignored = {}, {}, []
    for path in sorted(root.glob("*.npy")):
        match = RLN_NAME.fullmatch(path.name)
        if match is None:
            ignored.append(path.name)
            continue
        key = (int(match["size"]), float(match["contrast"]), match["split"])
        (strains if match["strain"] else bases)[key] = path
    if ignored:
        warnings.warn(f"{root}: .npy file(s) not named {{size}}_c{{contrast}}_{{split}}[_strain].npy are ignored: "
                      f"{ignored[:5]}", stacklevel=3)
    if not bases and not strains:
        problems.append(f"{root}: no {MANIFEST_NAME} (generated layout) and no {{size}}_c{{contrast}}_{{split}}.npy "
                        f"+ _strain.npy pairs (RLN layout) in this folder")
        return []
    contrasts = sorted({key[1] for key in [*bases, *strains]})
    if contrast is None and len(contrasts) > 1:
        problems.append(f"{root}: volumes of several contrasts {[f'{c:g}' for c in contrasts]}; choose one with "
                        f"contrast=...")
        return []
    chosen = contrasts[0] if contrast is None else float(contrast)
    if chosen not in contrasts:
        problems.append(f"{root}: no files of contrast {chosen:g} (found {[f'{c:g}' for c in contrasts]})")
        return []
    bases = {k: p for k, p in bases.items() if k[1] == chosen}
    strains = {k: p for k, p in strains.items() if k[1] == chosen}
    for key in sorted(set(strains) - set(bases)):
        problems.append(f"{strains[key]}: strain fields without microstructures "
                        f"({strains[key].name.replace('_strain.npy', '.npy')} is missing)")
    items, cube_sizes = [], {}
    for key in sorted(bases):
        micro_path = bases[key]
        strain_path = strains.get(key)
        if strain_path is None:
            problems.append(f"{micro_path}: no strain fields beside it ({micro_path.stem}_strain.npy is missing)")
            continue
        micro, strain = _open_npy(micro_path, problems), _open_npy(strain_path, problems)
        if micro is None or strain is None or not _check_pair_shapes(micro, strain, micro_path, strain_path, problems):
            continue
        if micro.shape[1] != key[0]:
            problems.append(f"{micro_path}: volumes are {micro.shape[1]}^3 but the name says {key[0]}")
            continue
        cube_sizes[micro_path.name] = micro.shape[1]
        items += [LocalizationItem(f"{micro_path.stem}/{i}", f"{micro_path.stem}/{i}", micro_path.name,
                                   strain_path.name, i) for i in range(len(micro))]
    if len(set(cube_sizes.values())) > 1:
        problems.append(f"{root}: volumes of different sizes {cube_sizes} cannot be batched together; put each "
                        f"size in its own folder")
    return items


def scan_items(data_root: str | Path, contrast: float | None = None, group_by: str = "group"
               ) -> list[LocalizationItem]:
    """The items of either layout, from the manifest / file names and array headers (no values read).

    One ManifestError lists every problem (missing partner file, wrong shapes, sizes or dtypes).
    """
    if group_by not in GROUP_BY:
        raise ValueError(f"group_by must be one of {GROUP_BY}, got {group_by!r}")
    root = Path(data_root)
    problems: list[str] = []
    if layout_of(root) == "generated":
        items = _scan_generated(root, contrast, group_by, problems)
    else:
        if group_by != "group":
            raise ValueError(f"{root}: group_by={group_by!r} needs the filter triples of the generated layout; "
                             f"the RLN layout has none (every volume is its own group)")
        items = _scan_rln(root, contrast, problems)
        if items and not problems:
            # Not a failure, but it changes what the CV estimates: worth saying every time the data is read.
            warnings.warn(f"{root}: the RLN layout carries no microstructure family (filter triple), so every "
                          f"volume is its own group and folds are per volume", stacklevel=2)
    raise_problems(problems, root, WHAT)
    return items


def index_items(items: list[LocalizationItem]) -> dict:
    files = sorted({i.microstructure_file for i in items} | {i.strain_file for i in items})
    return {"items": [i.item_id for i in items], "groups": [i.group for i in items], "strata": None,
            "files": files}


def check_arrays(data_root: str | Path, items: list[LocalizationItem], progress: bool = True) -> None:
    """Read every array the items use: phases in {0, 1}, finite strains; one ManifestError for all problems.

    A mean strain far from 1 only warns: it suggests fields not divided by the applied strain.
    """
    root = Path(data_root)
    pairs = sorted({(i.microstructure_file, i.strain_file) for i in items})
    problems: list[str] = []
    means = []
    for micro_name, strain_name in tqdm(pairs, desc="checking localization arrays", unit="file",
                                        disable=not progress):
        micro = np.load(root / micro_name, allow_pickle=False)
        strain = np.load(root / strain_name, allow_pickle=False)
        _check_values(micro, strain, root / micro_name, root / strain_name, problems)
        if np.isfinite(strain).all():
            means.append(float(strain.mean(dtype=np.float64)))
    raise_problems(problems, root, WHAT)
    if means and abs(np.mean(means) - 1.0) > 0.05:
        warnings.warn(f"{root}: mean strain {np.mean(means):.4f}; expected eps_11 / E_11 with mean 1", stacklevel=2)


def load_volumes(data_root: str | Path, items: list[LocalizationItem]) -> tuple[np.ndarray, np.ndarray]:
    """(microstructures uint8 (n, N, N, N), strains float32 (n, N, N, N)) of ``items``, in their order."""
    root = Path(data_root)
    if not items:
        raise ValueError(f"{root}: no items to load")
    opened: dict[str, np.ndarray] = {}

    def array(name: str) -> np.ndarray:
        if name not in opened:
            opened[name] = np.load(root / name, mmap_mode="r", allow_pickle=False)
        return opened[name]

    size = array(items[0].microstructure_file).shape[1:]
    micro = np.empty((len(items), *size), np.uint8)
    strain = np.empty((len(items), *size), np.float32)
    problems: list[str] = []
    for file_name in sorted({i.microstructure_file for i in items}):
        rows = [k for k, item in enumerate(items) if item.microstructure_file == file_name]
        indices = [items[k].index for k in rows]
        phases, fields = array(file_name)[indices], array(items[rows[0]].strain_file)[indices]
        # Checked before the casts (a phase 0.5 would become 0): cheap on a partition, and it catches a
        # file changed since check_dataset.
        _check_values(phases, fields, root / file_name, root / items[rows[0]].strain_file, problems)
        micro[rows], strain[rows] = phases, fields
    raise_problems(problems, root, WHAT)
    return micro, strain
