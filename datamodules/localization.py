"""3-D strain localization data: two-phase microstructures and their local strain field eps_11 / E_11.

The task (SCIENCE.md §4, seed 002 §2.6 and §4, Yang et al. Acta Mater. 166 (2019) 335): predict the local
strain eps_11, divided by the applied macroscopic E_11, of a periodic two-phase elastic composite from its
voxel microstructure. Axis 0 of every volume is x1, the loading direction (checked on the shared FE sample:
a single stiff voxel raises eps_11 at its neighbours along axis 0 and lowers it along axes 1 and 2).

Two layouts of a data root are read:

* **generated** (the built-in default): ``microstructures.npy`` (n, N, N, N) uint8, ``strains.npy``
  (n, N, N, N) float32, ``generator.json`` and ``manifest.csv`` (written last: a folder with a manifest is
  complete). ``generate_localization_dataset`` makes it from anisotropic Gaussian microstructures
  (``matcv.datamodules.synthetic.gaussian_fields``) and the FFT solver ``matcv.datamodules.synthetic.elastic_fft.local_strain_11``.
  The group of a volume is its filter triple ("sigma_3_7_5"): volumes drawn from one triple are one
  microstructure family, exchangeable at deployment, so grouped CV keeps a family in one partition
  (SCIENCE.md §0). ``group_by="symmetry_class"`` is stricter: see ``symmetry_class``.
* **RLN / Yang** (the published data): ``{size}_c{contrast}_{split}.npy`` with ``..._strain.npy`` beside it
  (e.g. the shared ``21_c10_sample.npy``). That layout carries no filter triple or any other family label,
  so every volume is its own group; item ids are ``<file stem>/<index>``. With several contrasts in one
  folder, ``contrast`` selects one.

Augmentation (off by default): of the 48 symmetries of the cube, which are all exact for the
microstructure, only the 16 that map the x1 axis onto itself (reflections of each axis, the x2<->x3 swap and
their products, i.e. rotations by 90 degrees about x1 and reflections) are exact for eps_11 under a load
E = E_11 e1 (x) e1: the load is invariant under them and eps_11 transforms as a scalar, eps'_11(x) =
eps_11(g^-1 x). A symmetry that moves x1 (e.g. swapping x1 and x2) turns the problem into one loaded along
another axis, whose eps_11 is a different field, so those are not used.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from matcv.datamodules.core.atomic_io import atomic_write_bytes, atomic_write_text, sha256_bytes
from matcv.datamodules.folds import load_fold
from matcv.datamodules.loaders import SeededFoldLoaders
from matcv.datamodules.manifest import MAX_LISTED_PROBLEMS, ManifestError
from matcv.datamodules.synthetic.gaussian_fields import gaussian_microstructure
from matcv.datamodules.core.cache import default_cache_dir

GENERATOR_VERSION = 1  # bump when generation changes, so cached datasets are regenerated
PARTIAL_DIR = ".partial"
SOLVE_BATCH = 16  # volumes per solver call (the solver freezes converged volumes: batching changes no result)

MANIFEST_NAME = "manifest.csv"
GENERATOR_NAME = "generator.json"
MICROSTRUCTURES_NAME = "microstructures.npy"
STRAINS_NAME = "strains.npy"
MANIFEST_COLUMNS = ("item_id", "group", "symmetry_class", "sigma_x", "sigma_y", "sigma_z", "volume_fraction",
                    "contrast", "solver_iterations", "solver_residual", "index")
GROUP_BY = ("group", "symmetry_class")
RLN_NAME = re.compile(r"^(?P<size>\d+)_c(?P<contrast>\d+(?:\.\d+)?)_(?P<split>.+?)(?P<strain>_strain)?\.npy$")
MEAN_STRAIN_TOLERANCE = 1e-4  # eps_hat(0) = E by construction: the mean of eps_11/E_11 is 1


# --- generator settings -------------------------------------------------------------------------------

def sigma_name(triple) -> str:
    """``(3, 7, 5)`` -> ``"sigma_3_7_5"``, the group of the volumes drawn with that filter."""
    return "sigma_" + "_".join(f"{float(s):g}" for s in triple)


def symmetry_class(triple) -> str:
    """The triple with sigma_y and sigma_z sorted, e.g. both (3, 7, 5) and (3, 5, 7) -> "sigma_3_5_7".

    Swapping x2 and x3 is an exact symmetry of eps_11 under a load along x1 (module doc), so the families
    (3, 7, 5) and (3, 5, 7) are the same problem seen in a mirror: a model trained on one has in effect seen
    the other. Grouping by this class keeps mirror families in one partition (40 classes from 64 triples).
    """
    sx, sy, sz = (float(s) for s in triple)
    return sigma_name((sx, min(sy, sz), max(sy, sz)))


@dataclass(frozen=True)
class LocalizationGeneratorConfig:
    """Settings of a generated localization dataset; their hash names its cache folder.

    ``sigma_triples`` None means every ordered triple of ``sigma_values`` (64 for the default four values);
    a list of triples takes a subset. Sample k of triple (sx, sy, sz) is drawn from its own generator, seeded
    by (seed, sx, sy, sz, k), so a subset of triples gives exactly the same volumes as the full set.
    """

    size: int = 21  # 21 quick (Yang 2019), 51 paper (seed 002)
    contrast: float = 10.0  # Young's modulus of the stiff phase over the soft one's
    poisson: float = 0.3
    sigma_values: tuple[float, ...] = (1.0, 3.0, 5.0, 7.0)
    sigma_triples: tuple[tuple[float, float, float], ...] | None = None
    samples_per_triple: int = 2
    volume_fraction_range: tuple[float, float] = (0.25, 0.75)
    seed: int = 0
    solver_tol: float = 1e-6
    solver_max_iterations: int = 1000
    # "basic" (Moulinec–Suquet) or "cg" (conjugate gradients: same PDE and stopping rule, ~5x fewer iterations at
    # contrast 50). Part of the settings' hash only when not "basic", so datasets made before it existed keep
    # their names.
    solver_scheme: str = "basic"

    def __post_init__(self) -> None:
        # YAML gives lists and ints: normalise, so equal settings hash equally.
        def fix(name: str, value) -> None:
            object.__setattr__(self, name, value)  # the dataclass is frozen

        fix("size", int(self.size))
        fix("contrast", float(self.contrast))
        fix("poisson", float(self.poisson))
        fix("sigma_values", tuple(float(s) for s in self.sigma_values))
        if self.sigma_triples is not None:
            fix("sigma_triples", tuple(tuple(float(s) for s in t) for t in self.sigma_triples))
        fix("volume_fraction_range", tuple(float(v) for v in self.volume_fraction_range))
        fix("solver_tol", float(self.solver_tol))
        for name in ("samples_per_triple", "seed", "solver_max_iterations"):
            fix(name, int(getattr(self, name)))
        if self.size < 3 or self.size % 2 == 0:
            # Even grids have a Nyquist frequency whose Green operator is ill-defined (SCIENCE.md §4).
            raise ValueError(f"size must be odd and >= 3, got {self.size}")
        if self.contrast <= 0 or not -1.0 < self.poisson < 0.5:
            raise ValueError(f"need contrast > 0 and -1 < poisson < 0.5, got {self.contrast}, {self.poisson}")
        triples = self.triples()
        if not triples or any(len(t) != 3 or min(t) < 0 for t in triples):
            raise ValueError(f"sigma triples must be non-empty triples of sigmas >= 0, got {triples}")
        if len(set(triples)) != len(triples):
            raise ValueError("sigma_triples lists a triple twice")
        lo, hi = self.volume_fraction_range
        if len(self.volume_fraction_range) != 2 or not 0.0 < lo <= hi < 1.0:
            raise ValueError(f"volume_fraction_range must be (lo, hi) with 0 < lo <= hi < 1, got "
                             f"{self.volume_fraction_range}")
        if self.samples_per_triple < 1 or self.solver_tol <= 0 or self.solver_max_iterations < 1:
            raise ValueError("need samples_per_triple >= 1, solver_tol > 0 and solver_max_iterations >= 1")
        from matcv.datamodules.synthetic.elastic_fft import SCHEMES

        if self.solver_scheme not in SCHEMES:
            raise ValueError(f"solver_scheme must be one of {SCHEMES}, got {self.solver_scheme!r}")

    def triples(self) -> tuple[tuple[float, float, float], ...]:
        if self.sigma_triples is not None:
            return self.sigma_triples
        return tuple(itertools.product(self.sigma_values, repeat=3))

    def to_dict(self) -> dict:
        settings = dataclasses.asdict(self)
        if settings["solver_scheme"] == "basic":
            del settings["solver_scheme"]
        return {"generator_version": GENERATOR_VERSION, **settings}

    def fingerprint(self) -> str:
        return sha256_bytes(json.dumps(self.to_dict(), sort_keys=True).encode())[:16]


@dataclass(frozen=True)
class PlannedVolume:
    item_id: str
    triple: tuple[float, float, float]
    sample: int
    index: int  # row in the arrays


def plan_volumes(config: LocalizationGeneratorConfig) -> list[PlannedVolume]:
    """Every volume of the dataset, in array order: triple by triple, ``samples_per_triple`` each."""
    plan = []
    for triple in config.triples():
        for sample in range(config.samples_per_triple):
            plan.append(PlannedVolume(f"{sigma_name(triple)}/{sample}", triple, sample, len(plan)))
    return plan


def draw_volume(config: LocalizationGeneratorConfig, volume: PlannedVolume) -> np.ndarray:
    """The microstructure of one planned volume, from its own generator (module doc of the config)."""
    # SeedSequence takes non-negative integers: sigmas enter in thousandths of a voxel.
    rng = np.random.default_rng([config.seed, *(round(1000 * s) for s in volume.triple), volume.sample])
    volume_fraction = rng.uniform(*config.volume_fraction_range)
    return gaussian_microstructure(config.size, volume.triple, volume_fraction, rng)


def _npy_bytes(array: np.ndarray) -> memoryview:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getbuffer()  # no copy of what may be gigabytes (51^3 x 8550 volumes)


def generate_localization_dataset(config: LocalizationGeneratorConfig, out_dir: str | os.PathLike | None = None,
                                  progress: bool = True, device: str | None = None) -> Path:
    """Write the generated layout (module doc) once and return its folder.

    Default folder: ``default_cache_dir()/localization/<config fingerprint>``, so other settings land in
    another folder; a folder that already has a manifest is reused if its ``generator.json`` matches and
    refused otherwise. Strain fields come from ``local_strain_11``, ``SOLVE_BATCH`` volumes per call
    (``device``: where the solver runs; it does not change the settings' hash). Raises RuntimeError naming
    every volume whose solve did not converge or whose mean strain is not 1.
    """
    out = Path(out_dir) if out_dir is not None else default_cache_dir() / "localization" / config.fingerprint()
    manifest_path = out / MANIFEST_NAME
    if manifest_path.exists():
        settings = out / GENERATOR_NAME
        if not settings.exists() or json.loads(settings.read_text()) != json.loads(json.dumps(config.to_dict())):
            raise FileExistsError(f"{out} already holds a localization dataset made with other settings "
                                  f"(see {settings}); choose another folder or delete it")
        return out
    plan = plan_volumes(config)
    n, size = len(plan), config.size
    microstructures = np.empty((n, size, size, size), np.uint8)
    strains = np.empty((n, size, size, size), np.float32)
    rows = []
    failures = []
    # Each solved batch is kept under .partial/ until the dataset is complete, so a run killed half way (the
    # paper profiles solve for an hour or more) resumes where it stopped.
    partial = out / PARTIAL_DIR
    with tqdm(total=n, desc=f"solving {size}^3 localization volumes", unit="volume", disable=not progress) as bar:
        for start in range(0, n, SOLVE_BATCH):
            batch = plan[start:start + SOLVE_BATCH]
            solved = _read_partial_batch(partial, config, start, len(batch))
            if solved is None:
                solved = _solve_batch(config, batch, device)
                _write_partial_batch(partial, config, start, solved)
            phases, fields, batch_rows, batch_failures = solved
            for j, volume in enumerate(batch):
                microstructures[volume.index] = phases[j]
                strains[volume.index] = fields[j]
            rows += batch_rows
            failures += batch_failures
            bar.update(len(batch))
    if failures:
        shown = failures[:MAX_LISTED_PROBLEMS]
        raise RuntimeError(f"elastic solver failed on {len(failures)} of {n} volume(s) (contrast "
                           f"{config.contrast:g}, tol {config.solver_tol:g}, max {config.solver_max_iterations} "
                           f"iterations); nothing was written:\n  " + "\n  ".join(shown))
    atomic_write_bytes(out / MICROSTRUCTURES_NAME, _npy_bytes(microstructures))
    atomic_write_bytes(out / STRAINS_NAME, _npy_bytes(strains))
    atomic_write_text(out / GENERATOR_NAME, json.dumps(config.to_dict(), indent=2, sort_keys=True))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(manifest_path, buffer.getvalue())  # last: its presence means the folder is complete
    shutil.rmtree(partial, ignore_errors=True)
    return out


def _solve_batch(config: LocalizationGeneratorConfig, batch: list, device: str | None):
    """Draw and solve one batch of planned volumes: (phases, ε11 fields, manifest rows, failure messages)."""
    from matcv.datamodules.synthetic.elastic_fft import local_strain_11  # the solver pulls in torch's FFT machinery

    phases = np.stack([draw_volume(config, volume) for volume in batch])
    fields, solution = local_strain_11(phases, config.contrast, config.poisson, tol=config.solver_tol,
                                       max_iterations=config.solver_max_iterations, device=device,
                                       scheme=config.solver_scheme)
    fields = np.asarray(fields).reshape(phases.shape)
    rows, failures = [], []
    for j, volume in enumerate(batch):
        iterations = int(solution.iterations[j].item())
        residual = float(solution.residual[j].item())
        mean_strain = float(fields[j].mean())
        if not bool(solution.converged[j].item()):
            failures.append(f"{volume.item_id}: not converged after {iterations} iterations "
                            f"(residual {residual:.3g} > tol {config.solver_tol:g})")
        elif abs(mean_strain - 1.0) > MEAN_STRAIN_TOLERANCE:
            failures.append(f"{volume.item_id}: mean strain {mean_strain:.6f}, expected 1 (eps_hat(0) = E)")
        rows.append({
            "item_id": volume.item_id, "group": sigma_name(volume.triple),
            "symmetry_class": symmetry_class(volume.triple),
            "sigma_x": f"{volume.triple[0]:g}", "sigma_y": f"{volume.triple[1]:g}",
            "sigma_z": f"{volume.triple[2]:g}",
            "volume_fraction": f"{phases[j].mean():.6f}", "contrast": f"{config.contrast:g}",
            "solver_iterations": iterations, "solver_residual": f"{residual:.4g}", "index": volume.index,
        })
    return phases.astype(np.uint8), fields.astype(np.float32), rows, failures


def _partial_path(partial: Path, config: LocalizationGeneratorConfig, start: int) -> Path:
    return partial / f"{config.fingerprint()}-{start:06d}.npz"


def _write_partial_batch(partial: Path, config: LocalizationGeneratorConfig, start: int, solved) -> None:
    phases, fields, rows, failures = solved
    buffer = io.BytesIO()
    np.savez(buffer, phases=phases, fields=fields, rows=np.array(json.dumps(rows)),
             failures=np.array(json.dumps(failures)))
    atomic_write_bytes(_partial_path(partial, config, start), buffer.getvalue())


def _read_partial_batch(partial: Path, config: LocalizationGeneratorConfig, start: int, size: int):
    """A batch solved by an earlier, interrupted run (None if absent or unreadable: it is solved again)."""
    path = _partial_path(partial, config, start)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:  # our own file, still never unpickled
            solved = (data["phases"], data["fields"], json.loads(str(data["rows"])),
                      json.loads(str(data["failures"])))
    except (OSError, ValueError, KeyError) as error:
        warnings.warn(f"{path}: unreadable partial batch ({error}); solving it again")
        return None
    return solved if len(solved[0]) == size == len(solved[2]) else None


def resolve_data_root(data_root: str | Path | None, generator: dict | None = None, progress: bool = True) -> Path:
    """A data root as given, or the generated dataset for ``generator`` settings (generated once)."""
    if data_root is not None:
        return Path(data_root)
    return generate_localization_dataset(LocalizationGeneratorConfig(**(generator or {})), progress=progress)


# --- reading either layout --------------------------------------------------------------------------------

@dataclass(frozen=True)
class LocalizationItem:
    item_id: str
    group: str
    microstructure_file: str  # relative to the data root
    strain_file: str
    index: int  # row of both arrays


def _raise_all(problems: list[str], root: Path, what: str = "localization data") -> None:
    if not problems:
        return
    shown = problems[:MAX_LISTED_PROBLEMS]
    more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    raise ManifestError(f"{root}: {len(problems)} problem(s) in the {what}:\n  " + "\n  ".join(shown) + more)


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
        groups = list(table["group"])
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
    _raise_all(problems, root)
    return items


def _index(items: list[LocalizationItem]) -> dict:
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
    _raise_all(problems, root)
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
    _raise_all(problems, root)
    return micro, strain


# --- augmentation --------------------------------------------------------------------------------------

N_X1_SYMMETRIES = 16


def apply_x1_symmetry(volume: np.ndarray, code: int) -> np.ndarray:
    """One of the 16 cube symmetries that keep the x1 axis (the last three axes are x1, x2, x3).

    Bits 0-2 of ``code`` reverse x1, x2, x3; bit 3 swaps x2 and x3. Reversal on a periodic grid is a
    reflection (and a shift), under which the periodic problem, and so the solver, is equivariant.
    Code 0 is the identity.
    """
    if not 0 <= code < N_X1_SYMMETRIES:
        raise ValueError(f"code must be in 0..{N_X1_SYMMETRIES - 1}, got {code}")
    axes = tuple(axis for bit, axis in enumerate((-3, -2, -1)) if code >> bit & 1)
    out = np.flip(volume, axis=axes) if axes else volume
    return np.swapaxes(out, -2, -1) if code >> 3 & 1 else out


class LocalizationVolumes(Dataset):
    """Preloaded volumes of one partition; samples are float32 (1, N, N, N) tensors plus the item id."""

    def __init__(self, microstructures: np.ndarray, strains: np.ndarray, item_ids: list[str], augment: bool = False):
        self.microstructures, self.strains, self.item_ids, self.augment = microstructures, strains, item_ids, augment

    def __len__(self) -> int:
        return len(self.microstructures)

    def __getitem__(self, index: int) -> dict:
        micro, strain = self.microstructures[index], self.strains[index]
        if self.augment:
            # torch's RNG: seeded by the run (seed_everything) and per DataLoader worker.
            code = int(torch.randint(N_X1_SYMMETRIES, ()))
            micro, strain = apply_x1_symmetry(micro, code), apply_x1_symmetry(strain, code)
        return {"microstructure": torch.from_numpy(np.ascontiguousarray(micro, dtype=np.float32)[None]),
                "strain": torch.from_numpy(np.ascontiguousarray(strain, dtype=np.float32)[None]),
                "item_id": self.item_ids[index]}


# --- Lightning ----------------------------------------------------------------------------------------

class LocalizationDataModule(SeededFoldLoaders, L.LightningDataModule):
    """3-D localization volumes of one fold of a fold manifest (generated or RLN layout, module doc).

    After ``setup``: ``datasets[p]`` for p in train/val/test, ``volume_size`` (N) and ``normalization``
    (mean and std of the training partition's microstructures and strains, for models that standardise as
    seed 002 does; never computed from val or test).
    """

    def __init__(
        self,
        fold_manifest_path: str | Path,
        fold: int,
        data_root: str | Path | None = None,
        generator: dict | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        contrast: float | None = None,
        group_by: str = "group",
        augment: bool = False,
    ):
        super().__init__()
        if group_by not in GROUP_BY:
            raise ValueError(f"group_by must be one of {GROUP_BY}, got {group_by!r}")
        self.save_hyperparameters()
        self.fold_manifest_path, self.fold = Path(fold_manifest_path), fold
        self.data_root: Path | None = Path(data_root) if data_root is not None else None
        self.generator, self.contrast, self.group_by, self.augment = generator, contrast, group_by, augment
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.datasets: dict[str, LocalizationVolumes] = {}
        self.volume_size: int | None = None
        self.normalization: dict[str, float] = {}

    # The harness's static hooks.

    @staticmethod
    def prepare_dataset(data_root: str | Path | None, generator: dict | None = None, progress: bool = True) -> Path:
        """Where the data is: ``data_root``, or the generated dataset for ``generator`` (made once)."""
        return resolve_data_root(data_root, generator, progress)

    @staticmethod
    def index_dataset(data_root: str | Path, contrast: float | None = None, group_by: str = "group",
                      **_unused) -> dict:
        """Items, groups and the .npy files (relative) of either layout, from headers alone."""
        return _index(scan_items(data_root, contrast, group_by))

    @staticmethod
    def check_dataset(data_root: str | Path, progress: bool = True, contrast: float | None = None,
                      group_by: str = "group", **_unused) -> dict:
        """``index_dataset`` after reading every array: one ManifestError listing every bad file."""
        items = scan_items(data_root, contrast, group_by)
        check_arrays(data_root, items, progress)
        return _index(items)

    # Lightning.

    def prepare_data(self) -> None:
        self.data_root = resolve_data_root(self.data_root, self.generator)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if self.data_root is None:
            self.prepare_data()
        items = scan_items(self.data_root, self.contrast, self.group_by)
        folds = load_fold(self.fold_manifest_path, self.fold, {item.item_id: item.group for item in items},
                          source=f"{self.fold_manifest_path} (group_by={self.group_by!r})")
        by_id = {item.item_id: item for item in items}
        for partition in ("train", "val", "test"):
            chosen = [by_id[i] for i in folds[partition]]
            micro, strain = load_volumes(self.data_root, chosen)
            self.datasets[partition] = LocalizationVolumes(micro, strain, [i.item_id for i in chosen],
                                                           augment=self.augment and partition == "train")
        train = self.datasets["train"]
        self.volume_size = int(train.microstructures.shape[1])
        self.normalization = {
            "microstructure_mean": float(train.microstructures.mean(dtype=np.float64)),
            "microstructure_std": float(train.microstructures.std(dtype=np.float64)),
            "strain_mean": float(train.strains.mean(dtype=np.float64)),
            "strain_std": float(train.strains.std(dtype=np.float64)),
        }
