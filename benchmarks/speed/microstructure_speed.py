"""Speed of the microstructure generators of the autoencoder task (Tran, Rodgers & Wildey 2020, §2, §5–10) on this machine.

    python -m matcv.benchmarks.speed.microstructure_speed                     # Potts 128² and 256², fields 128²
    python -m matcv.benchmarks.speed.microstructure_speed --sizes 256 --steps 100 --threads 1

(a) Potts grain growth (datamodules/synthetic/potts.py): Monte Carlo steps (MCS) on a lattice grown from a random
    quench (Q 2048) at kT 0.5, timed after a warm-up of a few MCS (which also coarsens the quench a little,
    like the runs the data sets use). Reported as ms per MCS and site attempts per second (every MCS attempts
    every site once), for both move rules ("spparks", the default, and "neighbour"), on the CPU and CUDA when
    available. The timed loop is exactly simulate_grain_growth's (``sweep`` on the sub-lattices).
(b) Gaussian-filtered noise fields at 128² (datamodules/synthetic/gaussian_fields.py): "smooth" is
    periodic_gaussian_filter(rng.random(shape), sigmas) rescaled to [0, 1] by its min and max, "binary" is
    gaussian_microstructure(size, sigmas, vf, rng) (rank threshold at volume fraction vf); samples per second.

Numbers, not assertions: speed is measured here, never in unit tests. Other processes sharing the CPU slow
both down; run with --threads 1 on a busy machine to avoid oversubscription.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from matcv.benchmarks.speed.machine import add_machine_arguments, set_up_machine
from matcv.datamodules.synthetic.gaussian_fields import gaussian_microstructure, periodic_gaussian_filter
from matcv.datamodules.synthetic.potts import MOVES, initial_spins, sweep, to_sublattices


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def potts_seconds_per_step(size: int, kT: float, steps: int, warmup: int, move: str, device: torch.device,
                           seed: int) -> float:
    """Wall seconds per MCS over ``steps`` MCS after ``warmup`` MCS (CUDA synchronised)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    sub = to_sublattices(initial_spins(size, 2048, generator))
    for _ in range(warmup):
        sweep(sub, kT, generator, move)
    _synchronise(device)
    started = time.perf_counter()
    for _ in range(steps):
        sweep(sub, kT, generator, move)
    _synchronise(device)
    return (time.perf_counter() - started) / steps


def smooth_field(size: int, sigmas, rng: np.random.Generator) -> np.ndarray:
    field = periodic_gaussian_filter(rng.random((size, size)), sigmas)
    return (field - field.min()) / (field.max() - field.min())


def fields_per_second(kind: str, size: int, sigmas, volume_fraction: float, samples: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    draw = ((lambda: smooth_field(size, sigmas, rng)) if kind == "smooth"
            else (lambda: gaussian_microstructure(size, sigmas, volume_fraction, rng)))
    draw()  # warm-up (FFT plan caches, allocator)
    started = time.perf_counter()
    for _ in range(samples):
        draw()
    return samples / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="Potts lattice sizes (even)")
    parser.add_argument("--steps", type=int, default=50, help="timed MCS per size")
    parser.add_argument("--warmup", type=int, default=5, help="untimed MCS first")
    parser.add_argument("--kT", type=float, default=0.5)
    parser.add_argument("--moves", nargs="+", choices=MOVES, default=list(MOVES))
    parser.add_argument("--field-size", type=int, default=128)
    parser.add_argument("--field-samples", type=int, default=50)
    parser.add_argument("--sigmas", type=float, nargs=2, default=[2.0, 8.0], help="Gaussian sigmas (rows, cols)")
    parser.add_argument("--vf", type=float, default=0.5, help="volume fraction of the binary fields")
    add_machine_arguments(parser)
    args = parser.parse_args(argv)

    devices = set_up_machine(args)

    print(f"\n(a) Potts grain growth, Q 2048, kT {args.kT:g}, {args.steps} MCS after {args.warmup} warm-up MCS")
    header = f"{'device':<6} {'move':<9} {'lattice':>9} {'ms/MCS':>9} {'M site attempts/s':>18}"
    print(header)
    print("-" * len(header))
    for device_name in devices:
        device = torch.device(device_name)
        for size in args.sizes:
            for move in args.moves:
                seconds = potts_seconds_per_step(size, args.kT, args.steps, args.warmup, move, device, args.seed)
                print(f"{device_name:<6} {move:<9} {f'{size}x{size}':>9} {1e3 * seconds:>9.2f} "
                      f"{size * size / seconds / 1e6:>18.1f}", flush=True)

    sigmas = tuple(args.sigmas)
    print(f"\n(b) Gaussian-filtered noise fields, {args.field_size}x{args.field_size}, sigmas {sigmas}, "
          f"{args.field_samples} samples (numpy, one thread)")
    header = f"{'kind':<16} {'samples/s':>10} {'ms/sample':>10}"
    print(header)
    print("-" * len(header))
    for kind in ("smooth", "binary"):
        rate = fields_per_second(kind, args.field_size, sigmas, args.vf, args.field_samples, args.seed)
        label = kind if kind == "smooth" else f"binary (vf {args.vf:g})"
        print(f"{label:<16} {rate:>10.1f} {1e3 / rate:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
