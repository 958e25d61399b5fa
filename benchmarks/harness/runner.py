"""The benchmark harness: every model x every grouped fold, one Lightning Trainer each, resumable.

``run_benchmark`` plans a benchmark and schedules its runs; the rest lives beside it:
  prepare.py    the data and the fold manifest (and the layout of a benchmark folder)
  run.py        one model x fold run → one record
  scale_out.py  several runs at once: worker processes or submitit jobs
The harness stops at the records; ``matcv bench`` then writes the tables through the leaderboard.

What the harness asks of a model and of a DataModule is declared, with the order of the calls, by
``matcv.lightning_modules.base.BenchmarkModule`` and ``matcv.datamodules.base.BenchmarkDataModule``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from tqdm.auto import tqdm

from matcv.benchmarks.harness.prepare import Benchmark, prepare_benchmark
from matcv.benchmarks.harness.run import RunSettings, run_claimed
from matcv.benchmarks.harness.scale_out import launch_runs, run_parallel
from matcv.benchmarks.harness.wandb_logging import log_leaderboard, wandb_mode
from matcv.datamodules.core.config import ComparisonSpec, RunSpec, TaskConfig
from matcv.datamodules.core.records import run_key


def run_benchmark(task: str | Path, profile: str = "quick", data_root: str | Path | None = None,
                  models: list[str] | None = None, folds: list[int] | None = None, output_dir: str | Path = "runs",
                  fold_manifest: str | Path | None = None, settings: RunSettings | None = None,
                  **setting_values) -> Benchmark:
    """Run every pending model x fold of a benchmark and append their records; the harness stops there
    (``matcv bench`` then writes the tables through ``matcv.leaderboard.rebuild.write_benchmark_tables``).

    How the runs are executed is ``settings`` (a ``RunSettings``), or its fields given as keywords
    (``accelerator="cpu", parallel_runs=2, ...``). A profile's leakage report runs its models again on
    photo-level folds (a ``-photo-folds`` sibling folder), and its companion profiles are run too
    (``Benchmark.companions``)."""
    if settings is None:
        if setting_values.get("launcher_options") is None:
            setting_values.pop("launcher_options", None)
        settings = RunSettings(**setting_values)
    elif setting_values:
        raise TypeError(f"give either settings or its fields, not both ({', '.join(setting_values)})")
    config = TaskConfig.load(task)
    runs = config.runs(profile, models, folds)  # validates names before any work is done
    comparison = config.raw.get("comparison")
    if comparison is not None:
        ComparisonSpec.parse(comparison, config.metrics)  # a bad block fails now, not after hours of training
    bench = prepare_benchmark(config, profile, data_root, output_dir, fold_manifest, settings.progress)
    bench.log_wandb = settings.log_wandb
    run_all(bench, runs, settings)

    # The leakage report: the same models on photo-level random folds, beside the grouped result.
    leakage = config.profile(profile).get("leakage_report")
    if leakage:
        leaky_models = [m for m in leakage["models"] if models is None or m in models]
        leaky = prepare_benchmark(config, profile, data_root, output_dir, None, settings.progress,
                                  photo_level_folds=True)
        leaky.log_wandb = settings.log_wandb
        run_all(leaky, config.runs(profile, leaky_models, folds), settings)

    # Companion profiles: the same models under other protocols of the same data (e.g. a dataset's official
    # split and an out-of-distribution test set beside its grouped CV); the leaderboard puts them side by side.
    for other in config.profile(profile).get("companion_profiles", []):
        bench.companions.append(run_benchmark(task, other, data_root=data_root, models=models,
                                              output_dir=output_dir, settings=settings))
    return bench


def log_leaderboard_to_wandb(bench: Benchmark, leaderboard_csv: Path | None) -> None:
    """The benchmark's summary W&B run (the leaderboard as a table, bar charts). A W&B problem is reported,
    never allowed to lose the benchmark's results, which are already on disk."""
    mode = wandb_mode(bench.log_wandb)
    if mode is None or leaderboard_csv is None or not leaderboard_csv.is_file():
        return
    try:
        log_leaderboard(mode, bench.folder, bench.config.task, bench.wandb_group, leaderboard_csv,
                        bench.config.metrics, {"task": bench.config.task, "profile": bench.profile,
                                               "dataset": bench.dataset, "data_sha256": bench.data_sha256,
                                               "fold_manifest_sha256": bench.fold_manifest_sha256})
    except Exception as error:  # noqa: BLE001 - dashboards are a convenience, the records are the result
        warnings.warn(f"W&B leaderboard run failed ({type(error).__name__}: {error}); the tables are in place")


def run_all(bench: Benchmark, runs: list[RunSpec], settings: RunSettings) -> None:
    """Run the runs of ``runs`` not yet recorded (failed ones too with ``retry_failed``), one line each."""
    finished = bench.records.finished_keys(include_failed=not settings.retry_failed)
    keyed = [(spec, run_key(spec.model, spec.fold, spec.config_hash, bench.fold_manifest_sha256, bench.data_sha256))
             for spec in runs]
    pending = [(spec, key) for spec, key in keyed if key not in finished]
    k = settings.parallel_runs
    how = {"none": f"{k} at once" if k > 1 else "one after the other",
           "local": f"submitit local jobs, {max(1, k)} at once", "slurm": "one Slurm job each"}[settings.launcher]
    print(f"[matcv] {bench.config.task}/{bench.folder.name} on {bench.dataset}: {len(runs)} runs "
          f"({len(runs) - len(pending)} already recorded, {len(pending)} to do, {how}); folder {bench.folder}",
          flush=True)
    # The bar is for terminals; logs (CI, clusters) get one line per run instead.
    bar = tqdm(total=len(runs), initial=len(runs) - len(pending), desc="runs", unit="run",
               disable=not (settings.progress and sys.stdout.isatty()), file=sys.stdout, position=0, leave=True)
    numbered = [(number, spec, key) for number, (spec, key) in enumerate(pending, start=len(runs) - len(pending) + 1)]
    if settings.launcher != "none" or k > 1:  # other processes run them; lines come as they finish
        done = launch_runs(bench, numbered, settings) if settings.launcher != "none" else \
            run_parallel(bench, numbered, settings)
        for number, spec, outcome in done:
            tqdm.write(_progress_line(number, len(runs), spec, outcome), file=sys.stdout)
            bar.update(1)
        bar.close()
        return
    for number, spec, key in numbered:
        bar.set_postfix_str(f"{spec.model} fold {spec.fold}")
        outcome = run_claimed(bench, spec, key, settings.accelerator, settings.devices, settings.progress,
                              settings.retry_failed)
        tqdm.write(_progress_line(number, len(runs), spec, outcome), file=sys.stdout)
        bar.update(1)
    bar.close()


def _progress_line(number: int, total: int, spec: RunSpec, outcome: dict) -> str:
    head = f"[matcv] run {number}/{total} {spec.model} fold {spec.fold}: "
    if outcome["outcome"] == "claimed":
        return head + "skipped - another process is running it (claimed)"
    if outcome["outcome"] == "recorded":
        return head + "skipped - recorded by another process meanwhile"
    summary = ", ".join(f"{k} {v:.4f}" for k, v in outcome.get("metrics", {}).items())
    error = outcome["error"].splitlines()[0][:200] if outcome.get("error") else ""
    return (f"{head}{outcome['status']}{' - ' + summary if summary else ''}{' - ' + error if error else ''}"
            f" ({outcome['total_s']:.0f} s)")
