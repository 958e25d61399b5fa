"""DeepSC-Edge (lightning_modules/edge_guided.py) on masks with ignored pixels: neither learnt nor scored.

A generated 3-class mask with an ignore region: the edge target draws no edge along the region, and every
variant's loss (BCE/CE + Dice or FTL, edge terms included) is unchanged when the predictions on ignored pixels
change, while it does change with a prediction elsewhere.
"""

from __future__ import annotations

import pytest
import torch

from matcv.datamodules.dataset_description import IGNORE_INDEX
from matcv.lightning_modules.edge_guided import EdgeGuidedSegmentationTask
from matcv.lightning_modules.edge_losses import CANNY_REACH, RegionLoss, canny_edge_targets, edge_targets
from matcv.lightning_modules.segmentation import per_image_class_dice_iou, per_image_dice_iou

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 32


def mask_with_ignore_region(num_classes: int = 3) -> torch.Tensor:
    """(1, H, W) classes: a class-1 block, a class-2 block (multi-class), and an ignored band at the right."""
    mask = torch.zeros(1, SIZE, SIZE, dtype=torch.long)
    mask[:, 4:14, 4:14] = 1
    if num_classes > 1:
        mask[:, 18:28, 4:12] = 2
    mask[:, :, 22:] = IGNORE_INDEX
    return mask


def test_no_edge_is_drawn_along_an_ignore_region_and_other_edges_stay():
    mask = mask_with_ignore_region()
    target = edge_targets(mask, 3)
    near = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    near[:, 22 - CANNY_REACH:] = True
    assert (target[0, 0][near] == IGNORE_INDEX).all()
    assert set(target[0, 0][~near].unique().tolist()) == {0.0, 1.0}
    plain = canny_edge_targets(mask.masked_fill(mask == IGNORE_INDEX, 0), 3)
    assert torch.equal(target[0, 0][~near], plain[0, 0][~near])  # the real class boundaries are kept
    clean = mask.masked_fill(mask == IGNORE_INDEX, 0)
    assert torch.equal(edge_targets(clean, 3), canny_edge_targets(clean, 3))  # without ignore: as before


@pytest.mark.parametrize("num_classes", [1, 3])
@pytest.mark.parametrize("overlap", ["dice", "ftl"])
def test_region_loss_ignores_ignored_pixels(num_classes, overlap):
    torch.manual_seed(0)
    mask = mask_with_ignore_region(num_classes)
    target = mask[:, None].float() if num_classes == 1 else mask
    loss = RegionLoss(num_classes, overlap)
    logits = torch.randn(1, num_classes, SIZE, SIZE, requires_grad=True)
    value = loss(logits, target)
    value.backward()
    ignored = (mask == IGNORE_INDEX)[0]
    assert torch.isfinite(value) and logits.grad[0][:, ignored].abs().sum() == 0
    changed = logits.detach().clone()
    changed[0][:, ignored] = torch.randn_like(changed[0][:, ignored]) * 10
    assert torch.allclose(loss(changed, target), value.detach(), atol=1e-6)


@pytest.mark.parametrize("variant", ["unet", "et-unet", "guided", "s-guided"])
@pytest.mark.parametrize("num_classes", [1, 3])
def test_every_variants_loss_is_unchanged_by_predictions_on_ignored_pixels(variant, num_classes):
    torch.manual_seed(0)
    model = EdgeGuidedSegmentationTask(variant=variant, overlap="ftl" if variant == "guided" else "dice",
                                       num_classes=num_classes, decoder_channels=[8, 8, 8, 8, 8])
    mask = mask_with_ignore_region(num_classes)
    target = mask[:, None].float() if num_classes == 1 else mask
    ignored = (mask == IGNORE_INDEX)[0]
    logits = torch.randn(1, num_classes, SIZE, SIZE)
    edge_logits = torch.randn(1, 1, SIZE, SIZE)
    out = logits if variant == "unet" else (logits, edge_logits)
    _, terms = model.terms_of(out, target)
    assert torch.isfinite(terms["loss"])
    moved_logits, moved_edges = logits.clone(), edge_logits.clone()
    moved_logits[0][:, ignored] += 25.0 * torch.randn_like(moved_logits[0][:, ignored])
    moved_edges[0][:, ignored] += 25.0 * torch.randn_like(moved_edges[0][:, ignored])
    moved = moved_logits if variant == "unet" else (moved_logits, moved_edges)
    _, again = model.terms_of(moved, target)
    for name, value in terms.items():
        assert torch.allclose(again[name], value, atol=1e-5), name
    elsewhere = logits.clone()
    elsewhere[0, 0, 8, 8] += 25.0  # a scored pixel: the loss must see it
    _, seen = model.terms_of(elsewhere if variant == "unet" else (elsewhere, edge_logits), target)
    assert not torch.allclose(seen["loss"], terms["loss"])


def test_ignored_pixels_are_not_scored():
    mask = mask_with_ignore_region(3)
    truth = mask.masked_fill(mask == IGNORE_INDEX, 0)
    right = torch.nn.functional.one_hot(truth, 3).permute(0, 3, 1, 2).float() * 10
    wrong_there = right.clone()
    wrong_there[:, :, :, 22:] = torch.tensor([0.0, 0.0, 10.0])[None, :, None, None]  # class 2 on ignored pixels
    assert per_image_class_dice_iou(wrong_there, mask)[1].tolist() == [[1.0, 1.0, 1.0]]
    binary = mask_with_ignore_region(1)[:, None].float()
    logits = torch.where(binary == 1, 10.0, -10.0)
    logits[..., 22:] = 10.0  # foreground predicted on every ignored pixel
    assert per_image_dice_iou(logits, binary)[0].tolist() == [1.0]
