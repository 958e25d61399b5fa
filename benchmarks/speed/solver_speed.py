"""Speed of the elasticity solver (datamodules/synthetic/elastic_fft.py) on this machine: iterations and seconds,
for the voxel FFT schemes and the finite-element discretisations.

    python -m matcv.benchmarks.speed.solver_speed                       # 21³ and 51³, contrast 10 and 50, CPU (+ CUDA)
    python -m matcv.benchmarks.speed.solver_speed --sizes 21 --threads 1 --schemes basic cg
    python -m matcv.benchmarks.speed.solver_speed --threads 1 --dtypes float64 --schemes hex8 hex8-bbar hex8-bbar-yang2019

Microstructures are periodic Gaussian-filtered uniform noise (scipy.ndimage.gaussian_filter, mode="wrap")
thresholded at its median (stiff volume fraction 0.5), like the localization task's inputs. Each volume is
solved one at a time ("single") and all at once ("batched"); the time per microstructure is the wall time
divided by the number of volumes. float32 runs use a looser tolerance than float64 because its round-off
floors the equilibrium residual near 1e-6 (see solve_elasticity). Numbers, not assertions: speed is measured
here, never in unit tests.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from matcv.benchmarks.speed.machine import add_machine_arguments, set_up_machine
from matcv.datamodules.synthetic.elastic_fft import DISCRETIZATIONS, SCHEMES, solve_elasticity

# "basic" and "cg" use the voxel Green operator; the others are the finite-element discretisations (8-node
# hexahedra: full integration, B-bar, B-bar with the published data's boundary ties), always solved by
# Fourier-preconditioned conjugate gradients.
METHODS = {**{scheme: {"scheme": scheme} for scheme in SCHEMES},
           **{name: {"discretization": name} for name in DISCRETIZATIONS if name != "fft"}}

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def gaussian_two_phase(count: int, size: int, sigma: float, seed: int) -> np.ndarray:
    """(count, size, size, size) uint8 periodic two-phase microstructures with stiff volume fraction 0.5."""
    rng = np.random.default_rng(seed)
    volumes = []
    for _ in range(count):
        field = gaussian_filter(rng.random((size, size, size)), sigma, mode="wrap")
        volumes.append((field > np.median(field)).astype(np.uint8))
    return np.stack(volumes)


def timed_solve(phases: torch.Tensor, contrast: float, dtype, device, tol: float, scheme: str = "basic"):
    """Wall seconds and the solution of one batched solve (CUDA synchronised)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    solution = solve_elasticity(phases, contrast, dtype=dtype, device=device, tol=tol, **METHODS[scheme])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started, solution


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[21, 51])
    parser.add_argument("--contrasts", type=float, nargs="+", default=[10.0, 50.0])
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["float64", "float32"])
    parser.add_argument("--schemes", nargs="+", choices=list(METHODS), default=list(METHODS),
                        help="basic (Moulinec-Suquet), cg (conjugate gradients), hex8, hex8-bbar, "
                             "hex8-bbar-yang2019 (finite elements)")
    parser.add_argument("--batch", type=int, nargs="+", default=None,
                        help="volumes per size (default 8 for sizes <= 31, else 2)")
    parser.add_argument("--sigma", type=float, default=2.0, help="Gaussian filter width in voxels")
    parser.add_argument("--tol-float64", type=float, default=1e-6)
    parser.add_argument("--tol-float32", type=float, default=1e-5)
    add_machine_arguments(parser)
    args = parser.parse_args(argv)

    batches = args.batch or [8 if size <= 31 else 2 for size in args.sizes]
    if len(batches) != len(args.sizes):
        parser.error("--batch needs one value per --sizes entry")
    tolerances = {"float64": args.tol_float64, "float32": args.tol_float32}
    devices = set_up_machine(args)
    header = (f"{'device':<6} {'dtype':<7} {'scheme':<18} {'size':>4} {'contrast':>8} {'mode':<8} {'B':>2} "
              f"{'tol':>7} {'iterations mean [min-max]':>26} {'s/microstructure':>16} {'ms/iteration':>12} converged")
    print(header)
    print("-" * len(header))
    for size, batch in zip(args.sizes, batches):
        phases = torch.from_numpy(gaussian_two_phase(batch, size, args.sigma, args.seed))
        for device_name in devices:
            device = torch.device(device_name)
            for dtype_name in args.dtypes:
                dtype, tol = DTYPES[dtype_name], tolerances[dtype_name]
                with warnings.catch_warnings():  # warm-up: FFT plans, allocator, kernels
                    warnings.simplefilter("ignore", RuntimeWarning)
                    for scheme in args.schemes:
                        solve_elasticity(phases, args.contrasts[0], dtype=dtype, device=device, max_iterations=2,
                                         **METHODS[scheme])
                for contrast, scheme in ((c, s) for c in args.contrasts for s in args.schemes):
                    single = [timed_solve(phases[index], contrast, dtype, device, tol, scheme)
                              for index in range(batch)]
                    single_seconds = sum(seconds for seconds, _ in single)
                    single_iterations = torch.cat([solution.iterations.cpu() for _, solution in single])
                    single_converged = all(bool(solution.converged.all()) for _, solution in single)
                    batched_seconds, batched_solution = timed_solve(phases, contrast, dtype, device, tol, scheme)
                    rows = [("single", 1, single_seconds, single_iterations, single_converged),
                            ("batched", batch, batched_seconds, batched_solution.iterations.cpu(),
                             bool(batched_solution.converged.all()))]
                    for mode, batch_size, seconds, iterations, converged in rows:
                        iteration_text = (f"{iterations.double().mean():.1f} "
                                          f"[{int(iterations.min())}-{int(iterations.max())}]")
                        # Batched volumes all run until the slowest converges (finished ones are dropped).
                        per_iteration_ms = 1e3 * seconds / (float(iterations.sum()) if mode == "single"
                                                            else batch * float(iterations.max()))
                        print(f"{device_name:<6} {dtype_name:<7} {scheme:<18} {size:>4} {contrast:>8g} {mode:<8} "
                              f"{batch_size:>2} {tol:>7.0e} {iteration_text:>26} {seconds / batch:>16.3f} "
                              f"{per_iteration_ms:>12.2f} {converged}", flush=True)


if __name__ == "__main__":
    main()
