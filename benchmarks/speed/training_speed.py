"""Training speed of every model of a task at a profile's sizes, and where a harness fit spends its time.

    python -m matcv.benchmarks.speed.training_speed --task rating --profile quick
    python -m matcv.benchmarks.speed.training_speed --task segmentation --models unet segformer medt sam-decoder
    python -m matcv.benchmarks.speed.training_speed --task rating --breakdown --models resnet18 --epochs 3

Rates (default): every model of the profile (or ``--models``) on the profile's real DataModule (fold 0), so a model
that needs a batch of its own (masks, edges, prompts) gets it. A model a Trainer fits: training images/s over
``--steps`` optimiser steps after ``--warmup``, data loading included, timed by Lightning's SimpleProfiler
(``run_training_batch`` + ``train_dataloader_next``). A model fitted outside Lightning (``fit_baseline``: SAM's
decoder fine-tuning, a random forest, segment-then-rate's own UNet): training photos x epochs / seconds of the whole
fit (``--baseline-epochs`` epochs). SAM runs with its checkpoint from $MATCV_SAM_CHECKPOINT, else with the tiny
random SAM (its line says so). Every other model prints one line saying why it has no rate.

``--breakdown``: one fit as the harness makes it (``matcv.benchmarks.harness.run.execute_run``'s Trainer settings:
deterministic="warn", log_every_n_steps=1, the best-weights checkpoint callback on the model's monitor, a CSVLogger) on
fold 0 for ``--epochs`` epochs, with SimpleProfiler's seconds per phase (data loading, forward, backward +
optimiser, validation, checkpointing, the rest: logging and the loop), then a bare PyTorch loop on the same
DataModule, model, batch size and epochs (training steps, then a validation pass per epoch, as the Trainer does);
both images/s and their ratio (the harness's target: >= 0.95).

Numbers, not assertions: speed is measured here, never in unit tests.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.profilers import SimpleProfiler
from torchmetrics import Metric

from matcv.benchmarks.harness.best_weights import BestWeightsInMemory
from matcv.benchmarks.harness.prepare import Benchmark, prepare_benchmark
from matcv.datamodules.core.config import TaskConfig, import_object, run_seed
from matcv.lightning_modules.base import BenchmarkModule

SAM_CLASS = "matcv.lightning_modules.sam_baseline.SamBaseline"
SAM_CHECKPOINT_ENV = "MATCV_SAM_CHECKPOINT"
TINY_SAM = {"model_type": "tiny-test", "checkpoint": "random"}  # the smoke tests' SAM: no file, random weights
# How a model names the epochs of a stage it runs itself (fit_baseline's training, a pre-training before the
# Trainer's fit), at the top of its arguments or one level down (e.g. pretraining: {epochs: 5}).
EPOCH_ARGS = ("epochs", "max_epochs", "seg_max_epochs")
# SimpleProfiler's action names (Lightning 2.x) -> the phases of a fit.
DATA_ACTIONS = ("[_TrainingEpochLoop].train_dataloader_next", "[_EvaluationLoop].val_next")
PHASES = ("data loading", "forward (training_step)", "backward + optimizer", "validation", "checkpointing",
          "logging + loop (rest)")


def quiet_lightning() -> None:
    # Tiny folds (few batches, no workers) make Lightning warn on every fit: noise between the numbers.
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    import logging

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)


def batch_length(batch) -> int:
    """Images in a batch: the first dimension of its first tensor (dict, tuple or tensor batches)."""
    if isinstance(batch, torch.Tensor):
        return len(batch)
    values = batch.values() if isinstance(batch, dict) else batch
    for value in values:
        if isinstance(value, torch.Tensor):
            return len(value)
    raise TypeError(f"no tensor in the batch ({type(batch).__name__}) to count its images")


class BatchSizes(Callback):
    """The number of images of every training batch, in order (the profiler's durations say how long each took)."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.sizes.append(batch_length(batch))


def build_datamodule(bench: Benchmark, config: dict, fold: int = 0):
    """The fold's DataModule as the harness builds it (its run seed; ``setup("fit")`` done)."""
    seed = run_seed(config["seed"], fold)
    datamodule = import_object(config["datamodule"]["class"])(
        fold_manifest_path=str(bench.fold_manifest_path), fold=fold, data_root=str(bench.data_root), seed=seed,
        **config["datamodule"]["args"])
    datamodule.setup("fit")
    return datamodule


def build_model(config: dict, datamodule, seed: int) -> BenchmarkModule:
    """The model of a resolved config with the harness's training-data hooks applied, from ``seed``."""
    L.seed_everything(seed, workers=True, verbose=False)
    model = import_object(config["model"]["class"])(**config["model"]["args"])
    model.set_input_normalization_from(datamodule)
    model.prepare_from_training_data(datamodule)
    return model


def sam_arguments(config: dict) -> tuple[dict, str]:
    """SAM's arguments for measuring, and the note its line carries: the real checkpoint when one is given (in
    the YAML or $MATCV_SAM_CHECKPOINT), else the tiny random SAM, since matcv never downloads SAM."""
    args = config["model"]["args"]
    if args.get("checkpoint") or os.environ.get(SAM_CHECKPOINT_ENV) or args.get("model_type") == "tiny-test":
        return args, f"SAM {args.get('model_type', 'vit_b')}"
    return {**args, **TINY_SAM}, f"tiny random SAM: ${SAM_CHECKPOINT_ENV} not set"


def shorten_epochs(args: dict, epochs: int) -> tuple[dict, str | None]:
    """``args`` with every epoch count of ``EPOCH_ARGS`` (top level, or in a dict argument) set to ``epochs``;
    and the name of the first one changed (``pretraining.epochs`` for a nested one), or None."""
    changed, out = None, dict(args)
    for key, value in args.items():
        if key in EPOCH_ARGS and isinstance(value, int):
            out[key], changed = epochs, changed or key
        elif isinstance(value, dict) and any(k in EPOCH_ARGS for k in value):
            out[key] = {k: (epochs if k in EPOCH_ARGS and isinstance(v, int) else v) for k, v in value.items()}
            changed = changed or f"{key}.{next(k for k in value if k in EPOCH_ARGS)}"
    return out, changed


def trainer_rate(model, datamodule, warmup: int, steps: int, root: Path) -> float:
    """Training images/s of a Trainer fit of ``warmup + steps`` optimiser steps (no validation), from
    SimpleProfiler's per-batch durations after the warm-up: the step and the fetch of its batch."""
    profiler, sizes = SimpleProfiler(dirpath=root, filename="profile"), BatchSizes()  # its report to a file
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=warmup + steps, limit_val_batches=0,
                        num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, profiler=profiler, callbacks=[sizes], default_root_dir=root)
    trainer.fit(model, datamodule=datamodule)
    durations = profiler.recorded_durations
    batches = durations.get("run_training_batch", [])[warmup:]
    fetches = durations.get("[_TrainingEpochLoop].train_dataloader_next", [])[warmup:len(batches) + warmup]
    if not batches:
        raise RuntimeError(f"no training batch after {warmup} warm-up steps (the fold has too few batches?)")
    return sum(sizes.sizes[warmup:warmup + len(batches)]) / (sum(batches) + sum(fetches))


def baseline_rate(model, datamodule, epochs: int | None) -> tuple[float, float]:
    """(training photos x epochs / s, seconds) of ``fit_baseline``, its one-off work (SAM's image embeddings, a
    forest's features) included."""
    started = time.perf_counter()
    model.fit_baseline(datamodule)
    seconds = time.perf_counter() - started
    return len(datamodule.datasets["train"]) * (epochs or 1) / seconds, seconds


def measure_rates(config: TaskConfig, bench: Benchmark, profile: str, names: list[str], steps: int, warmup: int,
                  baseline_epochs: int, root: Path) -> None:
    for name in names:
        resolved = config.resolve(profile, name)
        note = ""
        if resolved["model"]["class"] == SAM_CLASS:
            resolved["model"]["args"], note = sam_arguments(resolved)
        # A stage the model runs itself for N epochs: baseline_epochs of them are enough to time.
        resolved["model"]["args"], epoch_arg = shorten_epochs(resolved["model"]["args"], baseline_epochs)
        try:
            datamodule = build_datamodule(bench, resolved)
            started = time.perf_counter()
            model = build_model(resolved, datamodule, run_seed(resolved["seed"], 0))
            set_up = time.perf_counter() - started
            if set_up > 2.0:  # a pre-training in prepare_from_training_data: its cost, apart from the steps' rate
                note = (note + "; " if note else "") + f"set-up before the fit {set_up:.1f} s" + (
                    f" with {epoch_arg} = {baseline_epochs}" if epoch_arg else "")
            parameters = sum(p.numel() for p in model.parameters())
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            size = f"({parameters / 1e6:.2f} M parameters" + (
                f", {trainable / 1e6:.2f} M trained" if trainable != parameters else "") + ")"
            if model.requires_training:
                rate = trainer_rate(model, datamodule, warmup, steps, root / name)
                line = f"{rate:7.1f} training images/s  {size}"
            elif type(model).fit_baseline is BenchmarkModule.fit_baseline:
                line = "    -   not trained: a reference scored by its test step alone"
            elif model.hparams.get("mode") == "zero-shot":
                line = "    -   not trained: zero-shot (its fit_baseline does nothing)"
            else:
                rate, seconds = baseline_rate(model, datamodule, baseline_epochs if epoch_arg else None)
                what = f"{baseline_epochs} epoch(s)" if epoch_arg else "one fit"
                line = f"{rate:7.1f} training images/s  fit_baseline, {what} in {seconds:.1f} s  {size}"
        except Exception as error:  # noqa: BLE001 - one model's failure is its line; the others are still measured
            line = f"    -   not measured: {type(error).__name__}: {str(error).splitlines()[0][:160]}"
        print(f"  {name:24s} {line}" + (f"  [{note}]" if note else ""), flush=True)


# ---------------------------------------------------------------------------------------------------- breakdown

def harness_trainer(model, run_dir: Path, trainer_args: dict, profiler) -> tuple[L.Trainer, ModelCheckpoint]:
    """The Trainer ``execute_run`` builds for one device (same callbacks, logger and flags), with a profiler."""
    checkpoint = BestWeightsInMemory(dirpath=run_dir / "checkpoints", filename="best", monitor=model.monitor,
                                     mode=model.mode)
    trainer = L.Trainer(accelerator="cpu", devices=1, callbacks=[checkpoint],
                        logger=[CSVLogger(run_dir, name="logs", version="")], default_root_dir=run_dir,
                        log_every_n_steps=1, enable_model_summary=False, deterministic="warn",
                        enable_progress_bar=False, profiler=profiler, **trainer_args)
    return trainer, checkpoint


def phase_seconds(durations: dict[str, list[float]], wall: float) -> dict[str, float]:
    """SimpleProfiler's actions grouped into the phases of a fit; the rest of the wall time is the loop's own
    work and the loggers' (``self.log`` bookkeeping, CSV writes, progress)."""
    total = {action: sum(values) for action, values in durations.items()}

    def matching(predicate) -> float:
        return sum(seconds for action, seconds in total.items() if predicate(action))

    data = sum(total.get(a, 0.0) for a in DATA_ACTIONS) + matching(lambda a: a.endswith(".batch_to_device"))
    forward = matching(lambda a: a.endswith(".training_step") and a.startswith("[Strategy]"))
    optimiser_step = matching(lambda a: a.endswith(".optimizer_step") and a.startswith("[LightningModule]"))
    # In automatic optimisation optimizer_step runs the closure (training_step + backward) inside it.
    backward = max(optimiser_step - forward, 0.0) + matching(lambda a: a.endswith(".optimizer_zero_grad"))
    validation = matching(lambda a: a.endswith(".validation_step") and a.startswith("[Strategy]"))
    # save_checkpoint runs inside the checkpoint callback's hooks (``BestWeightsInMemory``: its in-memory copies,
    # and the one write at the end): counted once, by the hooks when they were profiled.
    callbacks = ("[Callback]ModelCheckpoint", "[Callback]BestWeightsInMemory")
    checkpointing = max(total.get("save_checkpoint", 0.0), matching(lambda a: a.startswith(callbacks)))
    phases = dict(zip(PHASES, (data, forward, backward, validation, checkpointing)))
    phases[PHASES[-1]] = max(wall - sum(phases.values()), 0.0)
    return phases


def bare_loop(model, datamodule, epochs: int) -> float:
    """Seconds of a plain PyTorch loop doing the harness's work: per epoch, every training batch (the model's
    own training_step, backward, step) then a validation pass (validation_step under inference mode)."""
    optimiser = model.configure_optimizers()
    if not isinstance(optimiser, torch.optim.Optimizer):
        raise TypeError(f"{type(model).__name__}.configure_optimizers returns {type(optimiser).__name__}: the bare "
                        "loop handles a single optimiser only")
    train, val = datamodule.train_dataloader(), datamodule.val_dataloader()
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer warns and does nothing: what a bare loop wants
        for _ in range(epochs):
            model.train()
            for index, batch in enumerate(train):
                loss = model.training_step(batch, index)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            model.eval()
            with torch.inference_mode():
                for index, batch in enumerate(val):
                    model.validation_step(batch, index)
            # What Lightning does with a logged torchmetrics metric at the epoch's end.
            for metric in (m for m in model.modules() if isinstance(m, Metric)):
                if metric.update_count:
                    metric.compute()
                metric.reset()
    return time.perf_counter() - started


@contextmanager
def deterministic_off() -> Iterator[None]:
    """The harness's Trainer switches torch's deterministic algorithms on for the process: the bare loop runs as
    plain PyTorch does, then the setting is put back."""
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def breakdown(config: TaskConfig, bench: Benchmark, profile: str, name: str, epochs: int, repeats: int,
              root: Path, keep_logs: bool = False) -> dict:
    """Harness fit(s) and bare loop(s), alternating ``repeats`` times (the fastest of each kept: on a shared CPU
    the slowest say more about the neighbours than about the code); prints the table and returns the numbers."""
    resolved = config.resolve(profile, name)
    resolved["trainer"] = {**resolved["trainer"], "max_epochs": epochs}
    datamodule = build_datamodule(bench, resolved)
    seed = run_seed(resolved["seed"], 0)
    if not build_model(resolved, datamodule, seed).requires_training:
        raise SystemExit(f"--breakdown: {name} is not fitted by a Trainer (no harness fit to break down)")
    n_train = len(datamodule.datasets["train"])
    best_harness, best_bare, best_phases = float("inf"), float("inf"), {}
    for repeat in range(repeats):
        with deterministic_off():
            best_bare = min(best_bare, bare_loop(build_model(resolved, datamodule, seed), datamodule, epochs))
        profiler = SimpleProfiler(dirpath=root, filename=f"profile-{repeat}")  # its full report: a file
        model = build_model(resolved, datamodule, seed)
        trainer, _ = harness_trainer(model, root / f"harness-{repeat}", resolved["trainer"], profiler)
        started = time.perf_counter()
        trainer.fit(model, datamodule=datamodule)
        wall = time.perf_counter() - started
        if wall < best_harness:
            best_harness, best_phases = wall, phase_seconds(profiler.recorded_durations, wall)
            metrics_csv = Path(trainer.logger.log_dir) / "metrics.csv"
    harness_rate, bare_rate = n_train * epochs / best_harness, n_train * epochs / best_bare
    print(f"breakdown: {config.task}/{profile} {name}, fold 0, {n_train} training images x {epochs} epochs, "
          f"batch {datamodule.batch_size}, {torch.get_num_threads()} threads, best of {repeats}")
    print(f"  {'phase':26s} {'seconds':>8s} {'share':>6s}")
    for phase, seconds in best_phases.items():
        print(f"  {phase:26s} {seconds:8.2f} {seconds / best_harness:6.1%}")
    print(f"  {'harness fit (wall)':26s} {best_harness:8.2f}  {harness_rate:7.1f} training images/s")
    print(f"  {'bare PyTorch loop':26s} {best_bare:8.2f}  {bare_rate:7.1f} training images/s")
    ratio = harness_rate / bare_rate
    print(f"  harness / bare = {ratio:.2f}x ({'meets' if ratio >= 0.95 else 'below'} the 0.95x target)")
    if keep_logs:
        print(f"  per-epoch log of the harness fit: {metrics_csv}")
    return {"phases": best_phases, "harness_s": best_harness, "bare_s": best_bare, "ratio": ratio,
            "harness_images_per_s": harness_rate, "bare_images_per_s": bare_rate, "metrics_csv": str(metrics_csv)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="segmentation", help="task name or task YAML path")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--steps", type=int, default=5, help="timed optimiser steps per model (rates)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (rates)")
    parser.add_argument("--baseline-epochs", type=int, default=1,
                        help="epochs of a model that trains itself in fit_baseline (SAM's decoder, segment-then-rate)")
    parser.add_argument("--models", nargs="*", help="these models (default: the profile's); any model of the YAML")
    parser.add_argument("--breakdown", action="store_true", help="harness fit vs bare loop, seconds per phase")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the breakdown's fits")
    parser.add_argument("--repeats", type=int, default=1, help="breakdown: alternate harness and bare N times")
    parser.add_argument("--output", default=None, help="where the fold manifest and logs go (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's; 1 is faster on a CPU other processes share)")
    args = parser.parse_args(argv)
    quiet_lightning()
    if args.threads:
        torch.set_num_threads(args.threads)
    # Numbers from a busy machine are not this machine's: the load says how busy it was.
    load = f", load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs" if hasattr(os, "getloadavg") else ""
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads{load}", flush=True)
    config = TaskConfig.load(args.task)
    with tempfile.TemporaryDirectory(prefix="matcv-speed-") as temporary:
        root = Path(args.output or temporary)
        # The profile's data (generated once, cached) and a fold manifest of its own, away from runs/.
        bench = prepare_benchmark(config, args.profile, None, root / "runs", progress=False)
        names = config.model_names(args.profile, args.models)
        if args.breakdown:
            breakdown(config, bench, args.profile, names[0], args.epochs, args.repeats, root,
                      keep_logs=args.output is not None)
            return
        dm_args = config.datamodule_args(args.profile)
        print(f"{config.task}/{args.profile}: {dm_args.get('image_size', '-')} px, batch {dm_args.get('batch_size')}, "
              f"{torch.get_num_threads()} threads, fold 0 of {bench.dataset}")
        measure_rates(config, bench, args.profile, names, args.steps, args.warmup, args.baseline_epochs, root)


if __name__ == "__main__":
    main()
