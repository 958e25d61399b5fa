"""One model x fold run, start to record: train on the fold's train part, select on its validation part, test
the selected checkpoint on its test part, and write what happened (ok or failed) as one record.

What a run asks of the model is declared by ``matcv.lightning_modules.base.BenchmarkModule`` (its docstring
gives the order of the calls); what it asks of the DataModule by ``matcv.datamodules.base.BenchmarkDataModule``.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.accelerators import AcceleratorRegistry
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy

from matcv.benchmarks.harness.annotations import parameter_count, with_groups
from matcv.benchmarks.harness.best_weights import BestWeightsInMemory
from matcv.benchmarks.harness.predictions import PredictionRecording
from matcv.benchmarks.harness.prepare import Benchmark
from matcv.benchmarks.harness.provenance import provenance
from matcv.benchmarks.harness.wandb_logging import finish_run, run_logger, wandb_mode
from matcv.datamodules.core.atomic_io import sha256_bytes
from matcv.datamodules.core.config import RunSpec, fraction_label, import_object, run_seed, training_seed
from matcv.datamodules.core.records import FAILED, OK, RunClaims
from matcv.lightning_modules.base import BenchmarkModule

LAUNCHERS = ("none", "local", "slurm")
# Why a run failed (a failed record's "failure_cause"): its environment (the devices asked for could not be set
# up, the GPU ran out of memory, the disk is full), or the run itself (its model, its data). Only the second
# kind is a result worth keeping: the first is retried by the next `matcv bench`.
ENVIRONMENT, RUN_ITSELF = "environment", "run"


@dataclass(frozen=True)
class RunSettings:
    """How the runs of a benchmark are executed; none of it changes a run's result, so none of it is in the
    run's key.

    ``devices`` > 1 trains each run with Lightning DDP (spawn; gloo on CPU). ``parallel_runs`` K runs K
    model x fold runs at once in worker processes; ``launcher`` "local" or "slurm" submits one submitit job
    per run instead (at most K at once), with ``launcher_options`` (partition, time_min, gpus_per_node,
    cpus_per_task). See ``matcv.benchmarks.harness.scale_out``.
    """

    accelerator: str = "auto"
    devices: int = 1
    retry_failed: bool = False
    progress: bool = True
    parallel_runs: int = 1
    launcher: str = "none"
    launcher_options: dict = field(default_factory=dict)
    log_wandb: bool = True  # W&B dashboards (False = ``--no-wandb``)

    def __post_init__(self) -> None:
        # Checked before any data is generated or any run starts: a value no run can use would otherwise be
        # recorded as a failure of every model.
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"--launcher must be one of {', '.join(LAUNCHERS)} (got {self.launcher!r})")
        for option, value in (("--parallel-runs", self.parallel_runs), ("--devices", self.devices)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{option} must be a whole number >= 1 (got {value!r})")
        # Slurm jobs run on other nodes: only the accelerator's name can be checked here.
        check_accelerator(self.accelerator, self.devices, on_this_machine=self.launcher != "slurm")


def check_accelerator(accelerator: str, devices: int, on_this_machine: bool = True) -> None:
    """Refuse an accelerator Lightning does not know (its own registry, plus the "auto" and "gpu" its Trainer
    also takes), and, for runs on this machine, one that is not available here or has fewer than ``devices``
    devices. Lightning would refuse them too, but only when each run builds its Trainer."""
    known = AcceleratorRegistry.available_accelerators()
    names = sorted(known | {"auto", "gpu"})
    if not isinstance(accelerator, str) or accelerator not in names:
        raise ValueError(f"--accelerator {accelerator!r}: not an accelerator Lightning knows; choose one of "
                         f"{', '.join(names)}")
    if not on_this_machine or accelerator == "auto":
        return
    # "gpu" is Lightning's alias: MPS where there is one, else CUDA.
    candidates = ["mps", "cuda"] if accelerator == "gpu" else [accelerator]
    usable = [name for name in candidates if name in known and AcceleratorRegistry[name]["accelerator"].is_available()]
    if not usable:
        here = [name for name in sorted(known) if AcceleratorRegistry[name]["accelerator"].is_available()]
        raise ValueError(f"--accelerator {accelerator}: not available on this machine (available here: "
                         f"{', '.join(here + ['auto'])})")
    if usable[0] != "cpu":  # on CPU, N devices are N processes: any N will do
        count = AcceleratorRegistry[usable[0]]["accelerator"].auto_device_count()
        if devices > count:
            raise ValueError(f"--devices {devices} with --accelerator {accelerator}: this machine has {count} "
                             f"{usable[0]} device(s)")


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a benchmark's runs. ``runs`` ("model fold k") were stopped before their record was written
    (their claims are released with their processes), so the next ``matcv bench`` runs them again; every run
    that finished is recorded. ``elsewhere``: they go on as Slurm jobs, which record them themselves."""

    def __init__(self, runs: list[str], elsewhere: bool = False):
        super().__init__(runs)
        self.runs, self.elsewhere = list(runs), elsewhere

    def __str__(self) -> str:
        if self.elsewhere:
            return (f"interrupted (Ctrl-C) while waiting for {', '.join(self.runs)}: their Slurm jobs go on and "
                    "record them; run `matcv bench` again to collect the results")
        if not self.runs:
            return ("interrupted (Ctrl-C) between runs: every finished run is recorded, the next `matcv bench` "
                    "runs the others")
        which = "that run is" if len(self.runs) == 1 else "those runs are"
        return (f"interrupted (Ctrl-C) during {', '.join(self.runs)}: {which} not recorded and will be redone by "
                "the next `matcv bench` (finished runs are kept)")


_ctrl_c = threading.Event()


def _on_ctrl_c(signum, frame) -> None:
    _ctrl_c.set()
    raise KeyboardInterrupt


@contextmanager
def watching_ctrl_c() -> Iterator[None]:
    """While runs go on in this process, Ctrl-C is remembered as well as raised: Python can lose a
    KeyboardInterrupt (one raised while some C-level I/O calls back into Python, e.g. as a checkpoint file is
    closed, is swallowed), and then the run would go on, be recorded from a checkpoint whose save was cut short,
    and the bench would not stop. ``run_claimed`` checks ``ctrl_c_pressed()`` after each run. Only where Ctrl-C
    has Python's default meaning (not in a worker that ignores it, not in a thread)."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    _ctrl_c.clear()
    previous = signal.signal(signal.SIGINT, _on_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _ctrl_c.clear()


def ctrl_c_pressed() -> bool:
    return _ctrl_c.is_set()


def rerun_reason(records: list[dict], accelerator: str, devices: int, retry_failed: bool) -> str | None:
    """Whether a run is to be run, given the records of its key (oldest first): None when not (it has a result,
    or it failed because of its model or data and ``retry_failed`` is off); "" when it was never recorded;
    otherwise why a failed run is run again (for its progress line)."""
    if any(r.get("status") == OK for r in records):
        return None
    failed = [r for r in records if r.get("status") == FAILED]
    if not failed:
        return ""
    last = failed[-1]
    if retry_failed:
        return "retried (--retry-failed)"
    # Options that change where a run runs, never its result (not in its key): a failure under other ones
    # says nothing about the model.
    changed = [f"--{name} {last[name]}" for name, now in (("accelerator", accelerator), ("devices", devices))
               if name in last and last[name] != now]
    if changed:
        return f"retried: it failed with {' '.join(changed)}, other options now"
    if last.get("failure_cause") == ENVIRONMENT:
        error = str(last.get("error", "")).splitlines()[0][:120] if last.get("error") else "no error text"
        return f"retried: it failed for an environment reason, not the model's ({error})"
    return None


def environment_failure(error: BaseException) -> bool:
    """True for an exception that comes from the machine rather than from the model or the data: GPU or host
    memory exhausted, a CUDA/driver/NCCL error, a full disk (its chain of causes included)."""
    markers = ("CUDA error", "CUDA out of memory", "CUDA driver", "NVIDIA driver", "cuDNN error", "NCCL error",
               "DefaultCPUAllocator: can't allocate memory")
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)):
            return True
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.ENOMEM):
            return True
        if isinstance(error, RuntimeError) and any(marker in str(error) for marker in markers):
            return True
        error = error.__cause__ or error.__context__
    return False


def run_claimed(bench: Benchmark, spec: RunSpec, key: str, accelerator: str, devices: int, progress: bool,
                retry_failed: bool, seen: int | None = None) -> dict:
    """Claim the run's key, re-check the records, run it and append its record; the outcome, for progress lines.

    ``outcome`` is "ran", "claimed" (another process or thread holds the claim: this one skips it) or
    "recorded" (finished by another process between planning and claiming: more records of the key than the
    ``seen`` ones of the plan, or a result that needs no re-run). Every scale-out path runs its runs through
    here, the sequential loop included, so two ``matcv bench`` on one folder are safe too.

    Ctrl-C during the run raises ``RunInterrupted`` naming it: no record is written and the claim is released.
    """
    with RunClaims(bench.folder).claim(key) as held:
        if not held:
            return {"outcome": "claimed"}
        mine = [r for r in bench.records.load() if r.get("key") == key]
        if (seen is not None and len(mine) > seen) or rerun_reason(mine, accelerator, devices, retry_failed) is None:
            return {"outcome": "recorded"}
        try:
            record = execute_run(bench, spec, key, accelerator, devices, progress)
            if ctrl_c_pressed():  # its KeyboardInterrupt was lost on the way: the run may be cut short anyway
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RunInterrupted([spec.label]) from None
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
        "replicate": spec.replicate, "training_seed": training_seed(spec.config["seed"], spec.fold, spec.replicate),
        "train_fraction": spec.train_fraction,
        "config": spec.config, "fold_manifest_sha256": bench.fold_manifest_sha256,
        "fold_manifest": str(bench.fold_manifest_path), "fold_grouping": bench.grouping,
        "data_sha256": bench.data_sha256, "data_root": str(bench.data_root), "devices": devices,
        "accelerator": accelerator,
        "started_at": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"), **provenance(),
    }


def _lightning_call(call, *args, **kwargs):
    """``trainer.fit``/``test``. Lightning answers Ctrl-C inside them with its graceful shutdown, then
    ``sys.exit(1)``, and leaves SIGINT ignored: give the harness its KeyboardInterrupt back (so that the user is
    told what happens to the run) and Ctrl-C its meaning."""
    handler = signal.getsignal(signal.SIGINT)
    try:
        return call(*args, **kwargs)
    except SystemExit as exit_:
        if isinstance(exit_.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise
    finally:
        if handler is not None and threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is not handler:
            signal.signal(signal.SIGINT, handler)


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
    run_dir = run_folder(bench, spec)
    if run_dir.exists():  # left by a run that was killed: redo it from scratch
        shutil.rmtree(run_dir)
    record = record_head(bench, spec, key, accelerator, devices, started)
    durations = {"fit_s": 0.0, "test_s": 0.0}
    wandb_logger = _wandb_run_logger(bench, spec, key, record)
    # Lightning refuses devices it cannot set up when a Trainer is built: a failure there is the environment's.
    building_trainer = False
    try:
        # Two seeds. The DataModule always gets the fold's run seed, whatever the replicate: some draw their test
        # part with it (UHCSDB's test patches) and the scorers rebuild the test truth with it, so every replicate
        # is tested on the same items and targets. The replicate's training seed seeds torch's global RNG: the
        # weights' initialisation, dropout, and (below) the order of the training batches.
        seed = run_seed(spec.config["seed"], spec.fold)
        L.seed_everything(training_seed(spec.config["seed"], spec.fold, spec.replicate), workers=True, verbose=False)
        datamodule_cls = import_object(spec.config["datamodule"]["class"])
        # Paths as text: checkpoints store the datamodule's hyper-parameters and are reloaded weights-only.
        datamodule = datamodule_cls(fold_manifest_path=str(bench.fold_manifest_path), fold=spec.fold,
                                    data_root=str(bench.data_root), seed=seed,
                                    **spec.config["datamodule"]["args"])
        if spec.replicate:
            # A loader generator seeded by the DataModule's seed would give every replicate the same batches:
            # replicates shuffle from the global RNG instead (seeded above), which BenchmarkDataModule offers.
            # Replicate 0 keeps its loader generator, so it stays exactly the run a single-seed benchmark makes.
            datamodule.seeded_shuffle = False
        # A learning curve's run: the DataModule keeps that share of the fold's training groups (drawn from the
        # fold's run seed, so every model and replicate of the fold gets the same ones); val and test unchanged.
        datamodule.train_fraction = spec.train_fraction
        model = import_object(spec.config["model"]["class"])(**spec.config["model"]["args"])
        if not isinstance(model, BenchmarkModule):
            raise TypeError(f"{type(model).__name__} is not a BenchmarkModule (matcv.lightning_modules.base): "
                            f"subclass the task's evaluation base, which is one")
        datamodule.setup("fit")
        counts = {p: len(datamodule.datasets[p]) for p in ("train", "val", "test")}
        subset = getattr(datamodule, "train_subset", None)
        if subset is None and spec.train_fraction != 1.0:
            raise RuntimeError(f"{type(datamodule).__name__} does not read its fold through "
                               f"BenchmarkDataModule.fold_items, so train_fraction {spec.train_fraction} cannot cut "
                               f"its training part")
        if subset is not None:
            record["n_train_groups"], record["n_train_groups_total"] = subset["n_groups"], subset["n_groups_total"]
            if spec.train_fraction != 1.0:
                record["train_groups"] = subset["groups"]
        model.set_input_normalization_from(datamodule)  # saved with the weights, for predicting new photos
        model.prepare_from_training_data(datamodule)  # e.g. target statistics of the training part only
        record["n_items"] = counts
        ckpt_path = None
        common = dict(accelerator=accelerator, enable_model_summary=False, deterministic="warn",
                      enable_progress_bar=progress and sys.stdout.isatty())
        if model.requires_training:
            # Weights only, written once at the end of training: runs restart from scratch, never from a
            # mid-run checkpoint (best_weights).
            checkpoint = BestWeightsInMemory(dirpath=run_dir / "checkpoints", filename="best", monitor=model.monitor,
                                             mode=model.mode)
            # spawn: the harness fits many models in one process, which the script-relaunching "ddp" cannot.
            strategy = (DDPStrategy(start_method="spawn", find_unused_parameters=model.ddp_find_unused_parameters)
                        if devices > 1 else "auto")
            building_trainer = True
            trainer = L.Trainer(devices=devices, strategy=strategy, callbacks=[checkpoint],
                                logger=[CSVLogger(run_dir, name="logs", version="")]
                                + ([wandb_logger] if wandb_logger is not None else []), default_root_dir=run_dir,
                                log_every_n_steps=1, **spec.config["trainer"], **common)
            building_trainer = False
            t0 = time.time()
            _lightning_call(trainer.fit, model, datamodule=datamodule)
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
        t0 = time.time()
        model.fit_baseline(datamodule)  # scikit-learn and procedure baselines: fitted outside Lightning
        durations["fit_s"] += time.time() - t0
        # Its test predictions are kept as a submission of its task keeps them (predictions.npz, which `matcv
        # verify` rescores); None: the task YAML declares no submission block.
        recording = PredictionRecording.start(model, bench.config)
        # Test on one device so every test image is scored exactly once (DDP would pad the last batch).
        building_trainer = True
        tester = L.Trainer(devices=1, logger=False, enable_checkpointing=False, default_root_dir=run_dir, **common)
        building_trainer = False
        t0 = time.time()
        _lightning_call(tester.test, model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
        durations["test_s"] = time.time() - t0
        per_image = model.test_results
        if len(per_image) != counts["test"]:
            raise RuntimeError(f"scored {len(per_image)} test images, expected {counts['test']}")
        record["metrics"] = fold_metrics(model, per_image, bench.config.metrics)
        record["per_image"] = with_groups(per_image, _manifest_groups(bench), str(bench.fold_manifest_path))
        if recording is not None:  # never fails the run: a reason is recorded instead
            record.update(recording.save(model, run_dir, bench.folder, [row["item_id"] for row in per_image]))
        details = model.test_details()
        if details is not None:
            record["details"] = details
        record.setdefault("throughput", {})["test_images_per_s"] = counts["test"] / max(durations["test_s"], 1e-9)
        # Counted once fitted: a scikit-learn baseline's note needs its fitted estimator.
        record["n_parameters"], note = parameter_count(model)
        if note:
            record["n_parameters_note"] = note
        figure = model.save_test_figure(run_dir / "test_examples.png", datamodule)
        record["figure"] = str(figure) if figure else None
        record["status"] = OK
    except Exception as error:  # a failed run is recorded and the benchmark goes on with the others
        record["status"] = FAILED
        record["error"] = f"{type(error).__name__}: {error}"
        record["traceback"] = traceback.format_exc(limit=20)
        record["failure_cause"] = ENVIRONMENT if building_trainer or environment_failure(error) else RUN_ITSELF
    durations["total_s"] = time.time() - started
    record["durations"] = durations
    record["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if wandb_logger is not None:
        try:
            finish_run(wandb_logger, record, run_dir)
        except Exception as error:  # noqa: BLE001 - a dashboard problem must not turn a finished run into a failure
            warnings.warn(f"W&B logging of {spec.label} failed ({type(error).__name__}: {error})")
    return record


def _wandb_run_logger(bench: Benchmark, spec: RunSpec, key: str, record: dict):
    """Lightning's WandbLogger for this run, or None when W&B is off. Config = the record's identity and
    provenance (resolved config, hashes, commit, versions)."""
    mode = wandb_mode(bench.log_wandb)
    if mode is None:
        return None
    run_id = sha256_bytes(f"{key}|{record['started_at']}".encode())[:16]  # unique per attempt
    config = {k: v for k, v in record.items() if k not in ("key", "started_at")}
    name = f"{spec.model}-fold{spec.fold}" + (f"-seed{spec.replicate}" if spec.replicate else "") \
        + (f"-frac{fraction_label(spec.train_fraction)}" if spec.train_fraction != 1.0 else "")
    return run_logger(mode, bench.folder, spec.task, bench.wandb_group, name, run_id, config)


def run_folder(bench: Benchmark, spec: RunSpec) -> Path:
    """A run's checkpoints and logs: ``<model>/fold-<k>/``, ``<model>/fold-<k>-seed-<r>/`` for replicate r > 0,
    with ``-frac-<f>`` after it for a training fraction f < 1 (``fold-<k>-frac-0.25``)."""
    name = f"fold-{spec.fold}-seed-{spec.replicate}" if spec.replicate else f"fold-{spec.fold}"
    if spec.train_fraction != 1.0:
        name += f"-frac-{fraction_label(spec.train_fraction)}"
    return bench.folder / spec.model / name


def _manifest_groups(bench: Benchmark) -> dict[str, str]:
    """The fold manifest's item -> group map (the harness checked the manifest before any run)."""
    return json.loads(bench.fold_manifest_path.read_text())["groups"]


def fold_metrics(model: BenchmarkModule, per_item: list[dict], names: list[str]) -> dict[str, float]:
    """A fold's test scores: the model's own ``test_summary()`` where a metric is not a mean over items
    (kappa, macro-F1, ...), otherwise the mean of the per-item scores."""
    summary = model.test_summary()
    metrics = {}
    for name in names:
        if name in summary:
            metrics[name] = float(summary[name])
        elif per_item and name in per_item[0]:
            metrics[name] = float(np.mean([item[name] for item in per_item]))
        else:
            raise KeyError(f"metric {name!r} is neither in {type(model).__name__}.test_summary() nor per test item")
    return metrics


# After a spawned DDP fit (--devices N) the trainer and checkpoint callback of this process never saw the
# training; only files written by rank 0 come back. These two read what the fit did from those files.

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
