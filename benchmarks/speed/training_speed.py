"""Training speed of every model of a task at a profile's image and batch size, on this machine.

    python -m matcv.benchmarks.speed.training_speed --task segmentation --profile quick
    python -m matcv.benchmarks.speed.training_speed --task rating --models resnet18 vit-tiny swin

Prints images/s for a training step (forward + loss + backward + optimizer step) on random inputs, so a
profile's epochs can be sized for the hardware (the quick profile must fit a 2-core CPU). Numbers, not
assertions: speed is measured here, never in unit tests.
"""

from __future__ import annotations

import argparse
import time

import torch

from matcv.datamodules.core.config import TaskConfig, import_object


def training_images_per_second(model, image_size: int, batch_size: int, steps: int = 5, warmup: int = 2) -> float:
    optimizer = model.configure_optimizers()
    images = torch.randn(batch_size, 3, image_size, image_size)
    masks = (torch.rand(batch_size, 1, image_size, image_size) > 0.9).float()
    rating_model = hasattr(model, "rating_index")  # a rater: random ratings instead of masks
    if rating_model:
        labels = model.rating_index(torch.tensor(model.ratings)[torch.randint(len(model.ratings), (batch_size,))])
    model.train()
    for step in range(warmup + steps):
        if step == warmup:
            started = time.perf_counter()
        loss = model._loss(model(images), labels) if rating_model else model.loss(model(images), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * batch_size / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="segmentation")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--models", nargs="*", help="only these models of the profile (default: all)")
    args = parser.parse_args(argv)
    config = TaskConfig.load(args.task)
    dm_args = config.resolve(args.profile, config.model_names(args.profile)[0])["datamodule"]["args"]
    size, batch = dm_args["image_size"], dm_args["batch_size"]
    print(f"{config.task}/{args.profile}: {size}x{size} px, batch {batch}, {torch.get_num_threads()} threads")
    for name in config.model_names(args.profile, args.models):
        resolved = config.resolve(args.profile, name)["model"]
        model = import_object(resolved["class"])(**resolved["args"])
        if not model.requires_training:
            continue
        torch.manual_seed(0)
        rate = training_images_per_second(model, size, batch, steps=args.steps)
        parameters = sum(p.numel() for p in model.parameters())
        print(f"  {name:24s} {rate:7.1f} training images/s  ({parameters / 1e6:.1f} M parameters)")


if __name__ == "__main__":
    main()
