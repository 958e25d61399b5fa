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
from matcv.benchmarks.harness.run import (
    RunInterrupted,
    RunSettings,
    ctrl_c_pressed,
    rerun_reason,
    run_claimed,
    watching_ctrl_c,
)
from matcv.benchmarks.harness.scale_out import launch_runs, run_parallel
from matcv.benchmarks.harness.wandb_logging import log_leaderboard, wandb_mode
from matcv.datamodules.core.config import ComparisonSpec, ConfigError, RunSpec, TaskConfig
from matcv.datamodules.core.records import OK, RunClaims, run_key


def run_benchmark(task: str | Path, profile: str = "quick", data_root: str | Path | None = None,
                  models: list[str] | None = None, folds: list[int] | None = None, output_dir: str | Path = "runs",
                  fold_manifest: str | Path | None = None, settings: RunSettings | None = None,
                  seeds: int | None = None, train_fractions: list[float] | None = None,
                  **setting_values) -> Benchmark:
    """Run every pending model x fold of a benchmark and append their records; the harness stops there
    (``matcv bench`` then writes the tables through ``matcv.leaderboard.rebuild.write_benchmark_tables``).

    ``seeds`` N (default: the profile's ``seeds``, else 1) runs every model x fold N times with N training seeds
    on the same folds (``TaskConfig.runs``); replicate 0 is the run a single-seed benchmark makes, so raising N
    later runs only the new replicates. Unlike ``settings`` it changes what is run, hence the results.
    ``train_fractions`` (default: the profile's ``train_fractions``, else [1]) runs every model x fold (x seed) on
    those shares of the fold's training groups too (a learning curve); fraction 1 is the normal run.

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
    # An empty selection is a slip (``--models ,``), never "everything" nor "nothing".
    for option, selected in (("--models", models), ("--folds", folds)):
        if selected is not None and len(selected) == 0:
            raise ConfigError(f"{option} selects nothing; name at least one, or leave the option out for all")
    config = TaskConfig.load(task)
    runs = config.runs(profile, models, folds, seeds, train_fractions)  # names, seeds, fractions checked now
    comparison = config.raw.get("comparison")
    if comparison is not None:
        ComparisonSpec.parse(comparison, config.metrics)  # a bad block fails now, not after hours of training
    bench = prepare_benchmark(config, profile, data_root, output_dir, fold_manifest, settings.progress)
    bench.log_wandb = settings.log_wandb
    bench.running_elsewhere = run_all(bench, runs, settings,
                                      config.runs(profile, seeds=seeds, train_fractions=train_fractions))

    # The leakage report: the same models on photo-level random folds, beside the grouped result.
    leakage = config.profile(profile).get("leakage_report")
    leaky_models = [m for m in leakage["models"] if models is None or m in models] if leakage else []
    # None of the report's models selected (--models): no report. An empty list must not reach config.runs,
    # where "no selection" means every model of the profile.
    if leaky_models:
        leaky = prepare_benchmark(config, profile, data_root, output_dir, None, settings.progress,
                                  photo_level_folds=True)
        leaky.log_wandb = settings.log_wandb
        # Full training parts only: the report compares grouped with leaky folds, not amounts of data.
        bench.running_elsewhere += run_all(leaky, config.runs(profile, leaky_models, folds, seeds, [1.0]), settings,
                                           config.runs(profile, leakage["models"], seeds=seeds, train_fractions=[1.0]))

    # Companion profiles: the same models under other protocols of the same data (e.g. a dataset's official
    # split and an out-of-distribution test set beside its grouped CV); the leaderboard puts them side by side.
    for other in config.profile(profile).get("companion_profiles", []):
        bench.companions.append(run_benchmark(task, other, data_root=data_root, models=models,
                                              output_dir=output_dir, settings=settings, seeds=seeds,
                                              train_fractions=train_fractions))
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


def run_all(bench: Benchmark, runs: list[RunSpec], settings: RunSettings,
            benchmark_runs: list[RunSpec] | None = None) -> int:
    """Run the runs of ``runs`` not yet recorded, one line each. A failed run is run again with
    ``retry_failed``, and without it when it failed under other ``accelerator``/``devices`` or for a reason of
    its environment (``run.rerun_reason``; its line says why). Returns how many runs of the benchmark
    (``benchmark_runs``, default ``runs``) another process is still running when this one is done.

    Ctrl-C raises ``run.RunInterrupted``, naming the runs it stopped (not recorded: the next bench redoes them).
    """
    records = bench.records.load()
    keyed = [(spec, spec_key(bench, spec)) for spec in runs]
    by_key = _records_by_key(records)
    reasons = {key: rerun_reason(by_key.get(key, []), settings.accelerator, settings.devices, settings.retry_failed)
               for _, key in keyed}
    pending = [(spec, key) for spec, key in keyed if reasons[key] is not None]
    retried = sum(1 for _, key in pending if reasons[key])
    k = settings.parallel_runs
    how = {"none": f"{k} at once" if k > 1 else "one after the other",
           "local": f"submitit local jobs, {max(1, k)} at once", "slurm": "one Slurm job each"}[settings.launcher]
    print(f"[matcv] {bench.config.task}/{bench.folder.name} on {bench.dataset}: {len(runs)} runs "
          f"({len(runs) - len(pending)} already recorded, {len(pending)} to do"
          f"{f' ({retried} of them failed before and are retried)' if retried else ''}, {how}); "
          f"folder {bench.folder}", flush=True)
    # The bar is for terminals; logs (CI, clusters) get one line per run instead.
    bar = tqdm(total=len(runs), initial=len(runs) - len(pending), desc="runs", unit="run",
               disable=not (settings.progress and sys.stdout.isatty()), file=sys.stdout, position=0, leave=True)
    numbered = [(number, spec, key) for number, (spec, key) in enumerate(pending, start=len(runs) - len(pending) + 1)]
    seen = {key: len(by_key.get(key, [])) for _, key in pending}
    try:
        with watching_ctrl_c():
            _run_pending(bench, numbered, settings, len(runs), reasons, seen, bar)
    except RunInterrupted:
        raise
    except KeyboardInterrupt:  # between runs: nothing is half done
        raise RunInterrupted([]) from None
    finally:
        bar.close()
    return running_elsewhere(bench, benchmark_runs if benchmark_runs is not None else runs)


def _run_pending(bench: Benchmark, numbered: list[tuple[int, RunSpec, str]], settings: RunSettings, total: int,
                 reasons: dict[str, str | None], seen: dict[str, int], bar) -> dict[int, str]:
    """Every pending run; then, a run skipped because another process held its claim and let go of it without a
    record (it was killed): run it now rather than leave a hole in the benchmark."""
    outcomes = _execute(bench, numbered, settings, total, reasons, seen, bar)
    by_key = _records_by_key(bench.records.load())
    dropped = [(number, spec, key) for number, spec, key in numbered if outcomes.get(number) == "claimed"
               and rerun_reason(by_key.get(key, []), settings.accelerator, settings.devices,
                                settings.retry_failed) is not None and not _held_elsewhere(bench, key)]
    if dropped:
        outcomes.update(_execute(bench, dropped, settings, total, reasons,
                                 {key: len(by_key.get(key, [])) for _, _, key in dropped}, None))
    return outcomes


def _execute(bench: Benchmark, numbered: list[tuple[int, RunSpec, str]], settings: RunSettings, total: int,
             reasons: dict[str, str | None], seen: dict[str, int], bar) -> dict[int, str]:
    """Run ``numbered`` the way ``settings`` say, a progress line each; {run number: outcome}."""
    outcomes = {}
    if settings.launcher != "none" or settings.parallel_runs > 1:  # other processes run them; lines as they finish
        keys = {number: key for number, _, key in numbered}
        done = launch_runs(bench, numbered, settings, seen=seen) if settings.launcher != "none" else \
            run_parallel(bench, numbered, settings, seen=seen)
        for number, spec, outcome in done:
            outcomes[number] = outcome["outcome"]
            tqdm.write(_progress_line(number, total, spec, outcome, reasons.get(keys[number]) or ""), file=sys.stdout)
            if bar is not None:
                bar.update(1)
        return outcomes
    for number, spec, key in numbered:
        if ctrl_c_pressed():  # a KeyboardInterrupt lost between runs
            raise KeyboardInterrupt
        if bar is not None:
            bar.set_postfix_str(spec.label)
        outcome = run_claimed(bench, spec, key, settings.accelerator, settings.devices, settings.progress,
                              settings.retry_failed, seen=seen.get(key))
        outcomes[number] = outcome["outcome"]
        tqdm.write(_progress_line(number, total, spec, outcome, reasons.get(key) or ""), file=sys.stdout)
        if bar is not None:
            bar.update(1)
    return outcomes


def _records_by_key(records: list[dict]) -> dict[str, list[dict]]:
    by_key: dict[str, list[dict]] = {}
    for record in records:
        if "key" in record:
            by_key.setdefault(record["key"], []).append(record)
    return by_key


def _held_elsewhere(bench: Benchmark, key: str) -> bool:
    # Trying the claim is the only way to see it; it is let go at once (this process wants no run here).
    with RunClaims(bench.folder).claim(key) as held:
        return not held


def running_elsewhere(bench: Benchmark, runs: list[RunSpec]) -> int:
    """How many of ``runs`` have no result and are claimed by another process (a second ``matcv bench`` on the
    same folder) right now."""
    done = {key for key, records in _records_by_key(bench.records.load()).items()
            if any(r.get("status") == OK for r in records)}
    keys = {spec_key(bench, spec) for spec in runs}
    return sum(1 for key in sorted(keys - done) if _held_elsewhere(bench, key))


def spec_key(bench: Benchmark, spec: RunSpec) -> str:
    """The run key of ``spec`` in ``bench`` (its replicate included)."""
    return run_key(spec.model, spec.fold, spec.config_hash, bench.fold_manifest_sha256, bench.data_sha256,
                   spec.replicate)


def _progress_line(number: int, total: int, spec: RunSpec, outcome: dict, retry_reason: str = "") -> str:
    head = f"[matcv] run {number}/{total} {spec.label}: "
    if outcome["outcome"] == "claimed":
        return head + "skipped - another process is running it (claimed)"
    if outcome["outcome"] == "recorded":
        return head + "skipped - recorded by another process meanwhile"
    summary = ", ".join(f"{k} {v:.4f}" for k, v in outcome.get("metrics", {}).items())
    error = outcome["error"].splitlines()[0][:200] if outcome.get("error") else ""
    return (f"{head}{outcome['status']}{' - ' + summary if summary else ''}{' - ' + error if error else ''}"
            f" ({outcome['total_s']:.0f} s{'; ' + retry_reason if retry_reason else ''})")
