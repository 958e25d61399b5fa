"""The benchmark harness: every model x every grouped fold, one Lightning Trainer each, resumable.

What the harness expects of a task's LightningModule (see lightning_modules/segmentation.py):
  monitor, mode          the validation metric that selects the checkpoint (never a test metric)
  test_results           filled during test: one dict per test item, {"item_id": ..., <metric>: ...}
  test_summary()         optional: fold-level metrics that are not per-item means
  save_test_figure(path, datamodule)   optional: a picture of the test predictions
  requires_training      False for baselines not trained by a Trainer (tested directly)
  fit_baseline(datamodule)             optional: fit such a baseline on the fold's training part
  prepare_from_training_data(datamodule)  optional: called before fitting (e.g. training-fold target statistics)
  test_details()         optional: JSON-able extras for the record (e.g. the fold's confusion matrix)
  ddp_find_unused_parameters           optional: what a DDP Trainer must know about the model

What it expects of a task's LightningDataModule class (see datamodules/corrosion.py, datamodules/superalloy.py):
  prepare_dataset(data_root, generator, progress)   static: where the data is (generating it if needed)
  index_dataset / check_dataset(data_root, ...)     static: items, groups, strata and files (check reads them all)
  fixed_fold_manifest(data_root, **args)            optional static: a publisher's split instead of drawn folds
  dataset_name(data_root)                           optional static: the benchmark folder's name for the data
  item_evaluator(item_id, predicted, truth)         optional attribute after setup: extra per-test-item values

Layout of a benchmark folder ``<output>/<task>/<dataset>/<profile>/``:
  fold_manifest.json  the folds every model sees (created once; its sha256 is in every record)
  records.jsonl       one line per finished run (ok or failed), appended atomically
  <model>/fold-<k>/   checkpoints and per-epoch CSV logs of one run (wiped if a killed run left it)
  claims/             one lock file per run key, held while that run trains (see records.RunClaims)
  slurm/              submitit's job scripts and logs (``--launcher slurm|local``)

Scale-out (benchmarks/harness/scale_out.py); every path claims each run before it starts and re-checks the records
after the claim, so concurrent processes never run one key twice and resume stays safe:
  --devices N         each training run uses N devices with Lightning DDP (spawn; gloo on CPU); tested on 1
  --parallel-runs K   K independent model x fold runs at once, in K worker processes (one GPU each, or
                      CPU workers with cores/K torch threads each)
  --launcher slurm    one submitit job per pending model x fold (``local``: submitit's local executor, real
                      subprocesses on this machine, at most K at once); this process waits for them
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy
from tqdm.auto import tqdm

from matcv.datamodules.core.config import ComparisonSpec, RunSpec, TaskConfig, import_object, run_seed
from matcv.benchmarks.harness.provenance import provenance
from matcv.datamodules.core.records import (
    FAILED,
    OK,
    PHOTO_FOLDS_SUFFIX,
    RunClaims,
    RunRecords,
    run_key,
)
from matcv.benchmarks.harness.wandb_logging import benchmark_group, finish_run, log_leaderboard, run_logger, wandb_mode
from matcv.datamodules.core.atomic_io import data_fingerprint, sha256_bytes
from matcv.datamodules.folds import (
    check_matches_data,
    make_fold_manifest,
    read_fold_manifest,
    write_fold_manifest,
)


@dataclass
class Benchmark:
    """Everything the runs of one benchmark share."""

    config: TaskConfig
    profile: str
    data_root: Path
    dataset: str
    data_sha256: str
    folder: Path
    fold_manifest_path: Path
    fold_manifest_sha256: str
    records: RunRecords
    grouping: str  # the column folds are grouped by ("image_path": photo-level folds, leaky on purpose)
    log_wandb: bool = True  # W&B dashboards (offline unless the user's W&B settings say otherwise)
    companions: list[Benchmark] = field(default_factory=list)  # the companion profiles' benchmarks, when run


def prepare_benchmark(config: TaskConfig, profile: str, data_root: str | Path | None, output_dir: str | Path,
                      fold_manifest: str | Path | None = None, progress: bool = True,
                      photo_level_folds: bool = False) -> Benchmark:
    """Generate/locate the data, then create (or reuse and verify) the benchmark's fold manifest.

    ``photo_level_folds`` makes every photo its own group (random photo-level folds, which let photos of one
    panel fall on both sides): deliberately leaky, only for the leakage report, in a folder of its own.
    """
    prof = config.profile(profile)
    datamodule_cls = config.datamodule_class()
    dm_args = config.datamodule_args(profile)
    root = datamodule_cls.prepare_dataset(data_root, prof.get("generator"), progress=progress)
    index = datamodule_cls.check_dataset(root, progress=progress, **dm_args)  # every file, before any training
    if hasattr(datamodule_cls, "dataset_name"):  # a published dataset names itself, wherever its copy lies
        dataset = datamodule_cls.dataset_name(root)
    else:
        dataset = f"{root.parent.name}-{root.name}" if data_root is None else root.resolve().name
    folder = Path(output_dir) / config.task / dataset / (profile + PHOTO_FOLDS_SUFFIX if photo_level_folds else profile)
    folder.mkdir(parents=True, exist_ok=True)
    groups = index["items"] if photo_level_folds else index["groups"]
    group_column = "image_path" if photo_level_folds else config.raw.get("group_column", "group")

    path = folder / "fold_manifest.json" if fold_manifest is None or photo_level_folds else Path(fold_manifest)
    fixed = None if photo_level_folds else _fixed_split(datamodule_cls, root, dm_args)
    if path.exists():
        manifest, manifest_sha = read_fold_manifest(path)
        check_matches_data(manifest, dict(zip(index["items"], groups)), source=str(path))
        if len(manifest["folds"]) != prof["folds"]:
            raise ValueError(f"{path} has {len(manifest['folds'])} folds but profile {profile!r} asks for {prof['folds']}")
    elif fixed is not None:
        # A published split (e.g. the release's own train/val/test), taken as the publisher made it.
        manifest = fixed
        if len(manifest["folds"]) != prof["folds"]:
            raise ValueError(f"{datamodule_cls.__name__}'s {dm_args.get('split')!r} split has "
                             f"{len(manifest['folds'])} fold(s) but profile {profile!r} asks for {prof['folds']}")
        check_matches_data(manifest, dict(zip(index["items"], groups)), source=f"{dm_args.get('split')} split")
        manifest_sha = write_fold_manifest(path, manifest)
    else:
        manifest = make_fold_manifest(index["items"], groups, index["strata"], n_folds=prof["folds"],
                                      val_fraction=prof.get("val_fraction", 0.2), seed=prof.get("seed", 0),
                                      group_column=group_column, stratify_column=config.raw.get("stratify_column"))
        manifest_sha = write_fold_manifest(path, manifest)
    return Benchmark(config, profile, root, dataset, data_fingerprint(root, index["files"]), folder, path,
                     manifest_sha, RunRecords(folder / "records.jsonl"), group_column)


def _fixed_split(datamodule_cls, root: Path, dm_args: dict) -> dict | None:
    hook = getattr(datamodule_cls, "fixed_fold_manifest", None)
    return hook(root, **dm_args) if hook is not None else None


def run_benchmark(task: str | Path, profile: str = "quick", data_root: str | Path | None = None,
                  models: list[str] | None = None, folds: list[int] | None = None, output_dir: str | Path = "runs",
                  accelerator: str = "auto", devices: int = 1, retry_failed: bool = False,
                  fold_manifest: str | Path | None = None, progress: bool = True, parallel_runs: int = 1,
                  launcher: str = "none", launcher_options: dict | None = None, log_wandb: bool = True) -> Benchmark:
    """Run every pending model x fold of a benchmark and append their records; the harness stops there
    (``matcv bench`` then writes the tables through ``matcv.leaderboard.rebuild.write_benchmark_tables``).

    A profile's leakage report runs its models again on photo-level folds (a ``-photo-folds`` sibling folder),
    and its companion profiles are run too (``Benchmark.companions``). ``parallel_runs``, ``launcher`` ("none",
    "local", "slurm") and ``launcher_options`` (partition, time_min, gpus_per_node, cpus_per_task): see the module
    docstring and benchmarks/harness/scale_out.py. ``log_wandb``: W&B dashboards (False = ``--no-wandb``)."""
    config = TaskConfig.load(task)
    runs = config.runs(profile, models, folds)  # validates names before any work is done
    comparison = config.raw.get("comparison")
    if comparison is not None:
        ComparisonSpec.parse(comparison, config.metrics)  # a bad block fails now, not after hours of training
    bench = prepare_benchmark(config, profile, data_root, output_dir, fold_manifest, progress)
    bench.log_wandb = log_wandb
    _run_all(bench, runs, accelerator, devices, retry_failed, progress, parallel_runs, launcher, launcher_options)

    # The leakage report: the same models on photo-level random folds, beside the grouped result.
    leakage = config.profile(profile).get("leakage_report")
    if leakage:
        leaky_models = [m for m in leakage["models"] if models is None or m in models]
        leaky = prepare_benchmark(config, profile, data_root, output_dir, None, progress, photo_level_folds=True)
        leaky.log_wandb = log_wandb
        _run_all(leaky, config.runs(profile, leaky_models, folds), accelerator, devices, retry_failed, progress,
                 parallel_runs, launcher, launcher_options)

    # Companion profiles: the same models under other protocols of the same data (e.g. a dataset's official
    # split and an out-of-distribution test set beside its grouped CV); the leaderboard puts them side by side.
    for other in config.profile(profile).get("companion_profiles", []):
        bench.companions.append(run_benchmark(
            task, other, data_root=data_root, models=models, output_dir=output_dir, accelerator=accelerator,
            devices=devices, retry_failed=retry_failed, progress=progress, parallel_runs=parallel_runs,
            launcher=launcher, launcher_options=launcher_options, log_wandb=log_wandb))
    return bench


def _wandb_group(bench: Benchmark) -> str:
    return benchmark_group(bench.config.task, bench.dataset, bench.folder.name, bench.fold_manifest_sha256)


def log_leaderboard_to_wandb(bench: Benchmark, leaderboard_csv: Path | None) -> None:
    """The benchmark's summary W&B run (the leaderboard as a table, bar charts). A W&B problem is reported,
    never allowed to lose the benchmark's results, which are already on disk."""
    mode = wandb_mode(bench.log_wandb)
    if mode is None or leaderboard_csv is None or not leaderboard_csv.is_file():
        return
    try:
        log_leaderboard(mode, bench.folder, bench.config.task, _wandb_group(bench), leaderboard_csv,
                        bench.config.metrics, {"task": bench.config.task, "profile": bench.profile,
                                               "dataset": bench.dataset, "data_sha256": bench.data_sha256,
                                               "fold_manifest_sha256": bench.fold_manifest_sha256})
    except Exception as error:  # noqa: BLE001 - dashboards are a convenience, the records are the result
        warnings.warn(f"W&B leaderboard run failed ({type(error).__name__}: {error}); the tables are in place")


def _run_all(bench: Benchmark, runs: list[RunSpec], accelerator: str, devices: int, retry_failed: bool,
             progress: bool, parallel_runs: int = 1, launcher: str = "none",
             launcher_options: dict | None = None) -> None:
    if parallel_runs < 1 or launcher not in ("none", "local", "slurm"):
        raise ValueError(f"--parallel-runs must be >= 1 (got {parallel_runs}) and --launcher none, local or slurm "
                         f"(got {launcher!r})")
    finished = bench.records.finished_keys(include_failed=not retry_failed)
    keyed = [(spec, run_key(spec.model, spec.fold, spec.config_hash, bench.fold_manifest_sha256, bench.data_sha256))
             for spec in runs]
    pending = [(spec, key) for spec, key in keyed if key not in finished]
    how = {"none": f"{parallel_runs} at once" if parallel_runs > 1 else "one after the other",
           "local": f"submitit local jobs, {max(1, parallel_runs)} at once", "slurm": "one Slurm job each"}[launcher]
    print(f"[matcv] {bench.config.task}/{bench.folder.name} on {bench.dataset}: {len(runs)} runs "
          f"({len(runs) - len(pending)} already recorded, {len(pending)} to do, {how}); folder {bench.folder}",
          flush=True)
    # The bar is for terminals; logs (CI, clusters) get one line per run instead.
    bar = tqdm(total=len(runs), initial=len(runs) - len(pending), desc="runs", unit="run",
               disable=not (progress and sys.stdout.isatty()), file=sys.stdout, position=0, leave=True)
    numbered = [(number, spec, key) for number, (spec, key) in enumerate(pending, start=len(runs) - len(pending) + 1)]
    if launcher != "none" or parallel_runs > 1:  # other processes run them; lines come as they finish
        from matcv.benchmarks.harness.scale_out import launch_runs, run_parallel

        if launcher != "none":
            done = launch_runs(bench, numbered, accelerator, devices, retry_failed, launcher, launcher_options or {},
                               parallel_runs)
        else:
            done = run_parallel(bench, numbered, accelerator, devices, retry_failed, parallel_runs)
        for number, spec, outcome in done:
            tqdm.write(_progress_line(number, len(runs), spec, outcome), file=sys.stdout)
            bar.update(1)
        bar.close()
        return
    for number, spec, key in numbered:
        bar.set_postfix_str(f"{spec.model} fold {spec.fold}")
        outcome = run_claimed(bench, spec, key, accelerator, devices, progress, retry_failed)
        tqdm.write(_progress_line(number, len(runs), spec, outcome), file=sys.stdout)
        bar.update(1)
    bar.close()


def run_claimed(bench: Benchmark, spec: RunSpec, key: str, accelerator: str, devices: int, progress: bool,
                retry_failed: bool) -> dict:
    """Claim the run's key, re-check the records, run it and append its record; the outcome, for progress lines.

    ``outcome`` is "ran", "claimed" (another process or thread holds the claim: this one skips it) or
    "recorded" (finished by another process between planning and claiming). Every scale-out path runs
    its runs through here, the sequential loop included, so two ``matcv bench`` on one folder are safe too.
    """
    with RunClaims(bench.folder).claim(key) as held:
        if not held:
            return {"outcome": "claimed"}
        if key in bench.records.finished_keys(include_failed=not retry_failed):
            return {"outcome": "recorded"}
        record = execute_run(bench, spec, key, accelerator, devices, progress)
        bench.records.append(record)
        return run_outcome(record)


def run_outcome(record: dict, outcome: str = "ran") -> dict:
    """What a progress line needs of a record (small: it crosses process boundaries)."""
    return {"outcome": outcome, "status": record["status"], "metrics": record.get("metrics", {}),
            "error": record.get("error", ""), "total_s": record["durations"]["total_s"]}


def failed_record(bench: Benchmark, spec: RunSpec, key: str, accelerator: str, devices: int, error: str,
                  started: float) -> dict:
    """The record of a run whose process died without writing one (a crashed worker, a killed Slurm job)."""
    return {**record_head(bench, spec, key, accelerator, devices, started),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "status": FAILED,
            "error": error, "durations": {"fit_s": 0.0, "test_s": 0.0, "total_s": time.time() - started}}


def record_head(bench: Benchmark, spec: RunSpec, key: str, accelerator: str, devices: int, started: float) -> dict:
    """What every record of a run says before its outcome: identity, hashes, where it ran, provenance."""
    return {
        "key": key, "task": spec.task, "model": spec.model, "fold": spec.fold, "profile": spec.profile,
        "dataset": bench.dataset, "seed": spec.config["seed"], "config_hash": spec.config_hash,
        "config": spec.config, "fold_manifest_sha256": bench.fold_manifest_sha256,
        "fold_manifest": str(bench.fold_manifest_path), "fold_grouping": bench.grouping,
        "data_sha256": bench.data_sha256, "data_root": str(bench.data_root), "devices": devices,
        "accelerator": accelerator,
        "started_at": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"), **provenance(),
    }


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


def _quiet_lightning() -> None:
    # One Trainer per run: Lightning's per-Trainer banner lines would drown the benchmark's own output.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*predict_dataloader.*")
    # The test Trainer reloads the best checkpoint without the fit's callbacks, on purpose.
    warnings.filterwarnings("ignore", message=".*callbacks used to create the checkpoint.*")


def execute_run(bench: Benchmark, spec: RunSpec, key: str, accelerator: str, devices: int, progress: bool) -> dict:
    """Train on the fold's train part, select on its validation part, test the best checkpoint."""
    _quiet_lightning()
    started = time.time()
    run_dir = bench.folder / spec.model / f"fold-{spec.fold}"
    if run_dir.exists():  # left by a run that was killed: redo it from scratch
        shutil.rmtree(run_dir)
    record = record_head(bench, spec, key, accelerator, devices, started)
    durations = {"fit_s": 0.0, "test_s": 0.0}
    wandb_logger = _wandb_run_logger(bench, spec, key, record)
    try:
        seed = run_seed(spec.config["seed"], spec.fold)
        L.seed_everything(seed, workers=True, verbose=False)
        datamodule_cls = import_object(spec.config["datamodule"]["class"])
        # Paths as text: checkpoints store the datamodule's hyper-parameters and are reloaded weights-only.
        datamodule = datamodule_cls(fold_manifest_path=str(bench.fold_manifest_path), fold=spec.fold,
                                    data_root=str(bench.data_root), seed=seed,
                                    **spec.config["datamodule"]["args"])
        model = import_object(spec.config["model"]["class"])(**spec.config["model"]["args"])
        datamodule.setup("fit")
        counts = {p: len(datamodule.datasets[p]) for p in ("train", "val", "test")}
        if hasattr(model, "set_input_normalization"):  # saved with the weights, for predicting new photos
            train = datamodule.datasets["train"]
            model.set_input_normalization(train.mean, train.std, datamodule.image_size)
        if hasattr(model, "prepare_from_training_data"):  # e.g. target statistics of the training part only
            model.prepare_from_training_data(datamodule)
        record["n_items"] = counts
        ckpt_path = None
        common = dict(accelerator=accelerator, enable_model_summary=False, deterministic="warn",
                      enable_progress_bar=progress and sys.stdout.isatty())
        if getattr(model, "requires_training", True):
            checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=model.monitor,
                                         mode=model.mode, save_top_k=1, save_last=False,
                                         save_weights_only=True)  # runs restart from scratch: no optimizer state
            # spawn: the harness fits many models in one process, which the script-relaunching "ddp" cannot.
            unused = getattr(model, "ddp_find_unused_parameters", False)
            strategy = DDPStrategy(start_method="spawn", find_unused_parameters=unused) if devices > 1 else "auto"
            trainer = L.Trainer(devices=devices, strategy=strategy, callbacks=[checkpoint],
                                logger=[CSVLogger(run_dir, name="logs", version="")]
                                + ([wandb_logger] if wandb_logger is not None else []), default_root_dir=run_dir,
                                log_every_n_steps=1, **spec.config["trainer"], **common)
            t0 = time.time()
            trainer.fit(model, datamodule=datamodule)
            durations["fit_s"] = time.time() - t0
            ckpt_path = checkpoint.best_model_path or None
            if ckpt_path is None:
                raise RuntimeError(f"no checkpoint was selected on {model.monitor}: did validation run?")
            metrics_csv = Path(trainer.logger.log_dir) / "metrics.csv"
            record["epochs"] = _epochs_trained(trainer, metrics_csv)
            record["best_val"] = {model.monitor: _best_score(checkpoint, metrics_csv)}
            record["best_checkpoint"] = str(ckpt_path)
            # Training images per second of fit time (validation included: it is part of every epoch).
            record["throughput"] = {"train_images_per_s": counts["train"] * record["epochs"] / durations["fit_s"]}
        if hasattr(model, "fit_baseline"):  # scikit-learn and procedure baselines: fitted outside Lightning
            t0 = time.time()
            model.fit_baseline(datamodule)
            durations["fit_s"] = time.time() - t0
        # Test on one device so every test image is scored exactly once (DDP would pad the last batch).
        tester = L.Trainer(devices=1, logger=False, enable_checkpointing=False, default_root_dir=run_dir, **common)
        t0 = time.time()
        tester.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
        durations["test_s"] = time.time() - t0
        per_image = model.test_results
        if len(per_image) != counts["test"]:
            raise RuntimeError(f"scored {len(per_image)} test images, expected {counts['test']}")
        record["metrics"] = fold_metrics(model, per_image, bench.config.metrics)
        record["per_image"] = per_image
        if hasattr(model, "test_details"):
            record["details"] = model.test_details()
        record.setdefault("throughput", {})["test_images_per_s"] = counts["test"] / max(durations["test_s"], 1e-9)
        if hasattr(model, "save_test_figure"):
            figure = model.save_test_figure(run_dir / "test_examples.png", datamodule)
            record["figure"] = str(figure) if figure else None
        record["status"] = OK
    except Exception as error:  # a failed run is recorded and the benchmark goes on with the others
        record["status"] = FAILED
        record["error"] = f"{type(error).__name__}: {error}"
        record["traceback"] = traceback.format_exc(limit=20)
    durations["total_s"] = time.time() - started
    record["durations"] = durations
    record["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if wandb_logger is not None:
        try:
            finish_run(wandb_logger, record, run_dir)
        except Exception as error:  # noqa: BLE001 - a dashboard problem must not turn a finished run into a failure
            warnings.warn(f"W&B logging of {spec.model} fold {spec.fold} failed ({type(error).__name__}: {error})")
    return record


def _wandb_run_logger(bench: Benchmark, spec: RunSpec, key: str, record: dict):
    """Lightning's WandbLogger for this run, or None when W&B is off. Config = the record's identity and
    provenance (resolved config, hashes, commit, versions)."""
    mode = wandb_mode(bench.log_wandb)
    if mode is None:
        return None
    run_id = sha256_bytes(f"{key}|{record['started_at']}".encode())[:16]  # unique per attempt
    config = {k: v for k, v in record.items() if k not in ("key", "started_at")}
    return run_logger(mode, bench.folder, spec.task, _wandb_group(bench), f"{spec.model}-fold{spec.fold}", run_id,
                      config)


def fold_metrics(model, per_item: list[dict], names: list[str]) -> dict[str, float]:
    """A fold's test scores: the model's own ``test_summary()`` where a metric is not a mean over items
    (kappa, macro-F1, ...), otherwise the mean of the per-item scores."""
    summary = model.test_summary() if hasattr(model, "test_summary") else {}
    metrics = {}
    for name in names:
        if name in summary:
            metrics[name] = float(summary[name])
        elif per_item and name in per_item[0]:
            metrics[name] = float(np.mean([item[name] for item in per_item]))
        else:
            raise KeyError(f"metric {name!r} is neither in {type(model).__name__}.test_summary() nor per test item")
    return metrics


def _epochs_trained(trainer: L.Trainer, metrics_csv: Path) -> int:
    """Epochs the fit ran. After a spawned DDP fit this process's trainer still says 0, so fall back to the
    per-epoch log that rank 0 wrote."""
    if trainer.current_epoch > 0 or not metrics_csv.is_file():
        return int(trainer.current_epoch)
    epochs = pd.read_csv(metrics_csv).get("epoch")
    return int(epochs.max()) + 1 if epochs is not None and epochs.notna().any() else 0


def _best_score(checkpoint: ModelCheckpoint, metrics_csv: Path) -> float:
    """The selected checkpoint's validation score. After a spawned DDP fit only the checkpoint path comes
    back to this process, so read the score from the per-epoch log that rank 0 wrote."""
    if checkpoint.best_model_score is not None:
        return float(checkpoint.best_model_score)
    history = pd.read_csv(metrics_csv)[checkpoint.monitor].dropna()
    return float(history.max() if checkpoint.mode == "max" else history.min())
