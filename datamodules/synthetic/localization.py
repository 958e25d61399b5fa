"""Generated 3-D strain localization data: two-phase microstructures and their local strain eps_11 / E_11.

Microstructures are anisotropic Gaussian random fields thresholded at a volume fraction
(``matcv.datamodules.synthetic.gaussian_fields``), as in Yang et al. 2019; their strain fields come from
``matcv.datamodules.synthetic.elastic_fft.local_strain_11``, with the finite-element discretisation of the
published labels for new settings (``DEFAULT_DISCRETIZATION``) and the voxel FFT solver for the datasets made
before that setting existed (their profiles say ``discretization: fft``). Axis 0 of every volume is x1, the
loading direction. The volumes of one filter triple ("sigma_3_7_5") are one microstructure family, the
group a grouped CV keeps in one partition; ``symmetry_class`` merges mirror families.

The folder written (the "generated" layout of ``matcv.datamodules.localization_layouts``):
``microstructures.npy`` (n, N, N, N) uint8, ``strains.npy`` (n, N, N, N) float32, ``generator.json`` and
``manifest.csv``, written last, so a folder with a manifest is complete. Solving takes an hour or more at the
paper's sizes, so solved batches are kept until the end and an interrupted run resumes.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from matcv.datamodules.core.atomic_io import atomic_write_bytes, atomic_write_csv, atomic_write_text, sha256_bytes
from matcv.datamodules.core.cache import default_cache_dir
from matcv.datamodules.synthetic.gaussian_fields import gaussian_microstructure

GENERATOR_VERSION = 1  # bump when generation changes, so cached datasets are regenerated
PARTIAL_DIR = ".partial"
SOLVE_BATCH = 16  # volumes per solver call (the solver freezes converged volumes: batching changes no result)

MANIFEST_NAME = "manifest.csv"
GENERATOR_NAME = "generator.json"
MICROSTRUCTURES_NAME = "microstructures.npy"
STRAINS_NAME = "strains.npy"
MANIFEST_COLUMNS = ("item_id", "group", "symmetry_class", "sigma_x", "sigma_y", "sigma_z", "volume_fraction",
                    "contrast", "solver_iterations", "solver_residual", "index")
MAX_LISTED_FAILURES = 25  # failed volumes named in the error (all are counted)
MEAN_STRAIN_TOLERANCE = 1e-4  # eps_hat(0) = E by construction: the mean of eps_11/E_11 is 1
# The labels' discretisation for new settings: 8-node hexahedra with B-bar and the boundary ties of the published
# finite-element data (Yang et al. 2019), which it reproduces to their rounding (elastic_fft's module docstring).
DEFAULT_DISCRETIZATION = "hex8-bbar-yang2019"


# --- generator settings -------------------------------------------------------------------------------

def sigma_name(triple) -> str:
    """``(3, 7, 5)`` -> ``"sigma_3_7_5"``, the group of the volumes drawn with that filter."""
    return "sigma_" + "_".join(f"{float(s):g}" for s in triple)


def symmetry_class(triple) -> str:
    """The triple with sigma_y and sigma_z sorted, e.g. both (3, 7, 5) and (3, 5, 7) -> "sigma_3_5_7".

    Swapping x2 and x3 is an exact symmetry of eps_11 under a load along x1 (``matcv.datamodules.localization``),
    so the families
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

    size: int = 21  # 21 quick (as Yang et al. 2019), 51 for the paper-size profile
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
    # Finite elements by default (DEFAULT_DISCRETIZATION; "hex8-bbar": the same element, plainly periodic; "hex8":
    # full integration; solver_scheme is then unused) or "fft", the voxel Green operator of the schemes above, with
    # which every dataset made before this setting was computed. "fft" is left out of the settings' hash, so those
    # datasets keep their names and bytes where their settings say discretization: fft.
    discretization: str = DEFAULT_DISCRETIZATION

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
            # Even grids have a Nyquist frequency whose Green operator is ill-defined.
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
        from matcv.datamodules.synthetic.elastic_fft import DISCRETIZATIONS

        if self.discretization not in DISCRETIZATIONS:
            raise ValueError(f"discretization must be one of {DISCRETIZATIONS}, got {self.discretization!r}")

    def triples(self) -> tuple[tuple[float, float, float], ...]:
        if self.sigma_triples is not None:
            return self.sigma_triples
        return tuple(itertools.product(self.sigma_values, repeat=3))

    def to_dict(self) -> dict:
        settings = dataclasses.asdict(self)
        if settings["solver_scheme"] == "basic":
            del settings["solver_scheme"]
        if settings["discretization"] == "fft":
            del settings["discretization"]
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
    """The microstructure of one planned volume, from its own generator (see ``LocalizationGeneratorConfig``)."""
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
        shown = failures[:MAX_LISTED_FAILURES]
        raise RuntimeError(f"elastic solver failed on {len(failures)} of {n} volume(s) (contrast "
                           f"{config.contrast:g}, tol {config.solver_tol:g}, max {config.solver_max_iterations} "
                           f"iterations); nothing was written:\n  " + "\n  ".join(shown))
    atomic_write_bytes(out / MICROSTRUCTURES_NAME, _npy_bytes(microstructures))
    atomic_write_bytes(out / STRAINS_NAME, _npy_bytes(strains))
    atomic_write_text(out / GENERATOR_NAME, json.dumps(config.to_dict(), indent=2, sort_keys=True))
    atomic_write_csv(manifest_path, rows, MANIFEST_COLUMNS)  # last: its presence means the folder is complete
    shutil.rmtree(partial, ignore_errors=True)
    return out


def _solve_batch(config: LocalizationGeneratorConfig, batch: list, device: str | None):
    """Draw and solve one batch of planned volumes: (phases, ε11 fields, manifest rows, failure messages)."""
    from matcv.datamodules.synthetic.elastic_fft import local_strain_11  # the solver pulls in torch's FFT machinery

    phases = np.stack([draw_volume(config, volume) for volume in batch])
    fields, solution = local_strain_11(phases, config.contrast, config.poisson, tol=config.solver_tol,
                                       max_iterations=config.solver_max_iterations, device=device,
                                       scheme=config.solver_scheme, discretization=config.discretization)
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
