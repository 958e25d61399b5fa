"""The segmentation LightningModules: metrics on known masks, eq. (1) loss, local encoder weights."""

from __future__ import annotations

import pytest
import torch

from matcv.lightning_modules.segmentation import (
    ConstantMaskBaseline,
    SmpSegmentationTask,
    per_image_dice_iou,
)


def _logits(mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask > 0, torch.tensor(10.0), torch.tensor(-10.0))


def test_per_image_dice_and_iou_on_hand_counted_masks():
    target = torch.zeros(2, 1, 4, 4)
    target[0, 0, :2, :] = 1  # 8 pixels
    prediction = torch.zeros(2, 1, 4, 4)
    prediction[0, 0, 1:3, :] = 1  # 8 pixels, 4 of them shared
    target[1, 0, 0, 0] = 1
    prediction[1, 0, 0, 0] = 1  # perfect
    dice, iou = per_image_dice_iou(_logits(prediction), target)
    assert dice.tolist() == pytest.approx([2 * 4 / (8 + 8), 1.0])
    assert iou.tolist() == pytest.approx([4 / 12, 1.0])


def test_empty_prediction_of_empty_mask_scores_one():
    empty = torch.zeros(1, 1, 8, 8)
    dice, iou = per_image_dice_iou(_logits(empty), empty)
    assert dice.item() == 1.0 and iou.item() == 1.0


def test_loss_is_bce_plus_soft_dice():
    torch.manual_seed(0)
    task = SmpSegmentationTask(arch="unet", encoder_name="resnet18", arch_kwargs={"encoder_depth": 3,
                                                                                   "decoder_channels": [16, 8, 4]})
    logits = torch.randn(2, 1, 8, 8)
    target = (torch.rand(2, 1, 8, 8) > 0.7).float()
    p = logits.sigmoid()
    bce = torch.nn.functional.binary_cross_entropy(p, target)
    soft_dice = 1 - 2 * (p * target).sum() / (p.sum() + target.sum())
    assert task.loss(logits, target).item() == pytest.approx((bce + soft_dice).item(), rel=1e-4)


def test_encoder_weights_load_from_a_local_file(tmp_path):
    kwargs = {"arch": "unet", "encoder_name": "resnet18", "arch_kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}}
    torch.manual_seed(1)
    source = SmpSegmentationTask(**kwargs)
    path = tmp_path / "encoder.pt"
    torch.save(source.net.encoder.state_dict(), path)
    torch.manual_seed(2)
    loaded = SmpSegmentationTask(**kwargs, encoder_weights_path=str(path))
    for name, tensor in source.net.encoder.state_dict().items():
        assert torch.equal(tensor, loaded.net.encoder.state_dict()[name]), name

    torch.save({"unrelated.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="none of its tensors match"):
        SmpSegmentationTask(**kwargs, encoder_weights_path=str(tmp_path / "other.pt"))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        SmpSegmentationTask(**kwargs, encoder_weights_path=str(tmp_path / "missing.pt"))


def test_encoder_weights_file_with_code_is_refused(tmp_path):
    """weights_only loading: a pickle that would run code is rejected, not executed."""
    path = tmp_path / "evil.pt"
    torch.save({"conv1.weight": torch.zeros(1), "hook": print}, path)
    with pytest.raises(Exception, match="(?i)weights only|unsupported global"):
        SmpSegmentationTask(arch="unet", encoder_name="resnet18", encoder_weights_path=str(path))


def test_constant_baseline_only_zero_or_one():
    assert ConstantMaskBaseline(1)(torch.zeros(2, 3, 8, 8)).gt(0).all()
    assert ConstantMaskBaseline(0)(torch.zeros(2, 3, 8, 8)).lt(0).all()
    with pytest.raises(ValueError):
        ConstantMaskBaseline(2)
