"""Wall time of a tiny benchmark run one after the other vs with ``--parallel-runs K`` (a script, not a test).

    python -m matcv.benchmarks.speed.parallel_speed [--folds 4] [--epochs 3] [--parallel-runs 2] [--models tiny-unet]

Both benchmarks run the same runs (tiny UNet on 32 px synthetic panels, as in tests/conftest.py) in fresh
output folders, after the data is generated once. The sequential one is this process with torch's default
threads (one per core); the parallel one is K spawned workers with cores/K threads each, whose start-up
(importing torch and Lightning in every worker) is part of its time. Prints both wall times, their ratio
and the load average, since a shared machine's other work changes both.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=4, help="folds of the tiny benchmark (default 4)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3)")
    parser.add_argument("--panels", type=int, default=12, help="generated panels, 2 photos each (default 12)")
    parser.add_argument("--models", default="tiny-unet", help="comma-separated models of the tiny config")
    parser.add_argument("--parallel-runs", type=int, default=2, help="K (default 2)")
    parser.add_argument("--sequential-threads", type=int, default=None,
                        help="torch threads of the sequential benchmark (default: torch's, one per core)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write (default: a temporary folder)")
    args = parser.parse_args(argv)

    from matcv.datamodules.core.config import TaskConfig
    from matcv.benchmarks.cli import run_and_report
    from matcv.benchmarks.harness.prepare import prepare_benchmark
    from matcv.benchmarks.harness.scale_out import available_cpus
    from tests.conftest import tiny_task_config

    work = args.workdir or Path(tempfile.mkdtemp(prefix="matcv-parallel-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MATCV_CACHE_DIR", str(work / "cache"))
    config = tiny_task_config(work, folds=args.folds, max_epochs=args.epochs, n_panels=args.panels)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    prepare_benchmark(TaskConfig.load(config), "quick", None, work / "warm-up", progress=False)  # data, once

    import torch

    if args.sequential_threads:
        torch.set_num_threads(args.sequential_threads)
    print(f"[parallel_speed] sequential: {torch.get_num_threads()} torch thread(s); parallel: "
          f"{max(1, available_cpus() // args.parallel_runs)} per worker", flush=True)
    times = {}
    for name, k in (("sequential", 1), (f"parallel-runs {args.parallel_runs}", args.parallel_runs)):
        load = os.getloadavg()[0]
        started = time.perf_counter()
        bench = run_and_report(config, models=models, output_dir=work / name.replace(" ", "-"),
                              leaderboard_dir=work / f"board-{k}", accelerator="cpu", progress=False,
                              parallel_runs=k)
        times[name] = time.perf_counter() - started
        records = bench.records.load()
        assert all(r["status"] == "ok" for r in records), [r.get("error") for r in records]
        fit = sum(r["durations"]["fit_s"] for r in records) / len(records)
        print(f"[parallel_speed] {name}: {len(records)} runs in {times[name]:.1f} s, fit {fit:.1f} s per run "
              f"(load average {load:.2f} before, {os.getloadavg()[0]:.2f} after)", flush=True)
    sequential, parallel = times.values()
    print(f"[parallel_speed] {available_cpus()} cores; parallel / sequential wall time = {parallel / sequential:.2f} "
          f"(speed-up {sequential / parallel:.2f}x); output in {work}")


if __name__ == "__main__":
    main()
