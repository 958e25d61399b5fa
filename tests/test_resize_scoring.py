"""Resize mode (``image_size``) scores test images at their native size: the network sees the resized image, its
logits are upsampled (bilinear) to the native mask, and the native mask -- never interpolated -- is the truth, so
a detail that resizing loses still counts, and crop and resize modes score the same pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from matcv.datamodules.folds import write_fold_manifest
from matcv.datamodules.user_segmentation import (
    UserSegmentationDataModule,
    fold_manifest_of,
    manifest_items,
    resize_pair,
)
from matcv.lightning_modules.segmentation import ConstantMaskBaseline, at_mask_size

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NATIVE = 96  # resized to 32: a 3x reduction, which nearest-neighbour samples every third pixel of
CLASSES = "classes: [{name: matrix, value: 0}, {name: grain, value: 1}, {name: pore, value: 2}]\n"


def make_folder(root: Path) -> None:
    """Six 96-px images, one per group; the test image's only pore is a 2x2 dot between the pixels a 3x
    nearest-neighbour resize keeps, so at 32 px the mask has no pore at all."""
    rows = ["image_path,mask_path,group,split"]
    rng = np.random.default_rng(0)
    for k, split in enumerate(["train", "train", "train", "train", "val", "test"]):
        classes = np.zeros((NATIVE, NATIVE), np.uint8)
        classes[30:60, 30:60] = 1
        if split == "test":
            classes[13:15, 13:15] = 2  # rows/columns 13 and 14: nearest keeps 12 and 15
        image = rng.integers(0, 50, (NATIVE, NATIVE, 3)).astype(np.uint8)
        image[classes == 1] += 150
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / f"images/i{k}.png")
        Image.fromarray(classes).save(root / f"masks/i{k}.png")
        rows.append(f"images/i{k}.png,masks/i{k}.png,G{k},{split}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    (root / "dataset.yaml").write_text(f"name: pores\n{CLASSES}image_size: 32\n")


def test_upsampling_is_bilinear_on_logits_and_a_no_op_at_the_native_size():
    logits = torch.randn(1, 3, 8, 8)
    mask = torch.zeros(1, 8, 8, dtype=torch.long)
    assert at_mask_size(logits, mask) is logits
    up = at_mask_size(logits, torch.zeros(1, 1, 24, 24))
    assert up.shape == (1, 3, 24, 24)
    assert torch.allclose(up, torch.nn.functional.interpolate(logits, size=(24, 24), mode="bilinear",
                                                              align_corners=False))


def test_resize_mode_scores_against_the_native_mask(tmp_path):
    make_folder(tmp_path)
    items, problems, _, _ = manifest_items(tmp_path)
    assert not problems
    path = tmp_path / "folds.json"
    write_fold_manifest(path, fold_manifest_of(items, "test"))
    dm = UserSegmentationDataModule(str(path), 0, data_root=str(tmp_path), split="manifest")
    dm.setup("fit")
    train = dm.datasets["train"][0]
    assert train["image"].shape == (3, 32, 32) and train["mask"].shape == (32, 32)
    test = dm.datasets["test"]
    assert test.images[0].shape == (32, 32, 3) and test.masks[0].shape == (NATIVE, NATIVE)
    assert (test.masks[0] == 2).sum() == 4  # the pore survives in the truth it is scored against
    # The same mask resized as training masks are has lost the pore: scored there, it would vanish.
    assert not (resize_pair(np.zeros((NATIVE, NATIVE, 3), np.uint8), test.masks[0], 32)[1] == 2).any()

    model = ConstantMaskBaseline(value=0, num_classes=3, class_names=["matrix", "grain", "pore"])
    model.on_test_epoch_start()
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (1, 3, 32, 32) and batch["mask"].shape == (1, NATIVE, NATIVE)
    with pytest.warns(UserWarning):  # self.log outside a Trainer
        model.test_step(batch, 0)
    row = model.test_results[0]
    assert row["true_px_pore"] == 4 and row["pred_px_pore"] == 0  # counted on the native mask
    assert row["iou_pore"] == 0.0  # a missed pore, not "absent from both" (which would score 1 at 32 px)
    assert row["true_px_matrix"] + row["true_px_grain"] + row["true_px_pore"] == NATIVE * NATIVE
