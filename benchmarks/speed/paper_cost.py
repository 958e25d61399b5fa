"""Expected training time per run of a GPU profile, from counted FLOPs: sizing a `paper` job without a GPU.

    python -m matcv.benchmarks.speed.paper_cost --task rating
    python -m matcv.benchmarks.speed.paper_cost --task segmentation --tflops 20 --models unet segformer

For every model of the profile (default ``paper``) that a Trainer fits: the floating-point operations of one
training step (the model's own ``training_step`` and its backward pass, counted by PyTorch's ``FlopCounterMode``)
and of one ``validation_step``, per image, at the profile's input size; times the images a run sees (the fold's
training part x ``max_epochs``, plus one validation pass per epoch); divided by a sustained rate.

Only the input size matters to the count, so the batches come from the task's small ``tiny`` data resized to the
profile's size (``image_size``), two images a batch: no paper-sized data is generated. The run's image counts
come from the profile's generator (``n_panels`` x ``photos_per_panel``) or ``--images``.

The default rate, 15 TFLOP/s, is what timm's published training benchmark implies for an RTX 3090 in fp32:
ResNet-18 trains at 2764 images/s at 224 px with mixed precision (Wightman, pytorch-image-models,
results/benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv); a training step is ~3 forward passes of 1.82 G
multiply-adds (3.64 GFLOP, counted as FlopCounterMode counts: 2 per multiply-add), so 10.9 GFLOP x 2764/s =
30 TFLOP/s, halved because matcv trains in fp32 (the 3090's fp16 tensor rate is twice its TF32 rate). Give your
GPU's own rate with ``--tflops`` (measure it with training_speed.py on the GPU: images/s x the FLOPs per image
printed here). What is not counted is said on each line: stages a model runs outside its training step
(self-supervised pretraining, ``fit_baseline``), data loading, and the slower rates of small batches and
attention kernels. An estimate for sizing a job, not a measurement.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from matcv.benchmarks.harness.prepare import prepare_benchmark
from matcv.benchmarks.speed.training_speed import (
    SAM_CLASS,
    batch_length,
    build_datamodule,
    build_model,
    quiet_lightning,
    sam_arguments,
    shorten_epochs,
)
from matcv.datamodules.core.config import TaskConfig, run_seed
from matcv.lightning_modules.base import BenchmarkModule

RTX3090_FP32_TFLOPS = 15.0  # module doc: timm's RTX 3090 ResNet-18 training rate, halved for fp32
COUNT_BATCH = 2  # images per counted batch: FLOPs per image do not depend on it
STAND_IN_PROFILE = "tiny"  # the task's smallest data, resized to the profile's input size


def run_images(profile: dict, images: int | None) -> tuple[float, float]:
    """(training, validation) images of one fold of ``profile``: the data's images less the test fold, split by
    ``val_fraction``."""
    if images is None:
        generator = profile.get("generator") or {}
        if "n_panels" not in generator:
            raise SystemExit("this profile's data size is not in its generator settings: give --images N (the "
                             "number of labelled images in the data set)")
        images = generator["n_panels"] * generator.get("photos_per_panel", 1)
    fit = images * (1 - 1 / profile["folds"])
    return fit * (1 - profile["val_fraction"]), fit * profile["val_fraction"]


def flops_per_image(model: BenchmarkModule, datamodule) -> tuple[float, float]:
    """FLOPs per image of one training step (forward + backward) and of one validation step."""
    model.train()
    batch = next(iter(datamodule.train_dataloader()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer warns and does nothing
        with FlopCounterMode(display=False) as counter:
            loss = model.training_step(batch, 0)
            loss = loss["loss"] if isinstance(loss, dict) else loss
            loss.backward()
        train = counter.get_total_flops() / batch_length(batch)
        model.eval()
        batch = next(iter(datamodule.val_dataloader()))
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.validation_step(batch, 0)
        val = counter.get_total_flops() / batch_length(batch)
    return train, val


def hours(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="rating", help="task name or task YAML path")
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--models", nargs="*", default=None, help="default: every model of the profile")
    parser.add_argument("--tflops", type=float, default=RTX3090_FP32_TFLOPS,
                        help=f"sustained training rate of the GPU, TFLOP/s (default {RTX3090_FP32_TFLOPS}: an RTX "
                             f"3090 in fp32)")
    parser.add_argument("--images", type=int, default=None, help="labelled images in the data set (default: the "
                                                                  "profile's generator settings)")
    args = parser.parse_args(argv)
    quiet_lightning()
    config = TaskConfig.load(args.task)
    profile = config.profile(args.profile)
    train_images, val_images = run_images(profile, args.images)
    epochs = profile.get("trainer", {}).get("max_epochs", 1)
    size = config.datamodule_args(args.profile).get("image_size", "-")
    print(f"{config.task}/{args.profile}: {size} px, {profile['folds']} folds, per run {train_images:.0f} training "
          f"x {epochs} epochs + {val_images:.0f} validation images per epoch; at {args.tflops:g} TFLOP/s")
    print(f"  {'model':26s} {'GFLOP/train img':>15s} {'GFLOP/val img':>13s} {'per run':>9s} "
          f"{'all folds':>9s}  notes")
    total = 0.0
    with tempfile.TemporaryDirectory(prefix="matcv-paper-cost-") as temporary:
        bench = prepare_benchmark(config, STAND_IN_PROFILE, None, Path(temporary) / "runs", progress=False)
        for name in config.model_names(args.profile, args.models):
            resolved = config.resolve(args.profile, name)
            resolved["datamodule"]["args"] = {**resolved["datamodule"]["args"], "batch_size": COUNT_BATCH,
                                              "num_workers": 0}
            notes = []
            if resolved["model"]["class"] == SAM_CLASS:
                resolved["model"]["args"], note = sam_arguments(resolved)
                notes.append(note)
            model_args = resolved["model"]["args"]
            if model_args.get("pretrained") or model_args.get("weights_path"):  # the same network, the same FLOPs
                resolved["model"]["args"] = {k: v for k, v in model_args.items()
                                             if k not in ("pretrained", "weights_path")}
                notes.append("counted from random weights")
            # A stage the model runs itself (pretraining, fit_baseline's epochs): one epoch, not counted.
            resolved["model"]["args"], stage = shorten_epochs(resolved["model"]["args"], 1)
            if stage:
                notes.append(f"not counted: its own stage ({stage})")
            try:
                datamodule = build_datamodule(bench, resolved)
                model = build_model(resolved, datamodule, run_seed(resolved["seed"], 0))
                if not model.requires_training:
                    print(f"  {name:26s} {'-':>15s} {'-':>13s} {'-':>9s} {'-':>9s}  not counted: no Trainer fit"
                          + ("" if type(model).fit_baseline is BenchmarkModule.fit_baseline else " (fit_baseline)"))
                    continue
                train, val = flops_per_image(model, datamodule)
            except Exception as error:  # noqa: BLE001 - one model's failure is its line; the others are still counted
                print(f"  {name:26s} not counted: {type(error).__name__}: {str(error).splitlines()[0][:120]}")
                continue
            seconds = (train * train_images + val * val_images) * epochs / (args.tflops * 1e12)
            total += seconds * profile["folds"]
            print(f"  {name:26s} {train / 1e9:15.1f} {val / 1e9:13.1f} {hours(seconds):>9s} "
                  f"{hours(seconds * profile['folds']):>9s}  {'; '.join(notes)}", flush=True)
    if total:
        print(f"  counted models, all folds: {hours(total)} at {args.tflops:g} TFLOP/s")


if __name__ == "__main__":
    main()
