"""The paper-profile cost estimate (benchmarks/speed/paper_cost.py): image counts per run from the profile, and
FLOPs per image counted from a model's own training and validation steps."""

from __future__ import annotations

import pytest
import torch

from matcv.benchmarks.speed.paper_cost import flops_per_image, run_images


def test_images_per_run_follow_the_folds_and_the_validation_share():
    profile = {"folds": 10, "val_fraction": 0.1, "generator": {"n_panels": 150, "photos_per_panel": 4}}
    assert run_images(profile, None) == pytest.approx((486, 54))
    assert run_images(profile, 1000) == pytest.approx((810, 90))  # --images wins
    with pytest.raises(SystemExit, match="--images"):
        run_images({"folds": 3, "val_fraction": 0.2}, None)


class Linear(torch.nn.Module):
    """8 inputs -> 4 outputs: 2 x 8 x 4 = 64 FLOPs per image forward; backward computes the weight's gradient
    only (the input needs none), 64 more."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(8, 4)

    def training_step(self, batch, _):
        return self.layer(batch).pow(2).mean()

    def validation_step(self, batch, _):
        self.layer(batch)


class Batches:
    def train_dataloader(self):
        return [torch.randn(2, 8)]

    def val_dataloader(self):
        return [torch.randn(3, 8)]


def test_flops_per_image_are_counted_from_the_models_own_steps():
    train, val = flops_per_image(Linear(), Batches())
    assert (train, val) == (128, 64)
