"""DeepSC-Edge losses (Yin 2024, Part III, eq. 1–8) pinned on hand-computed cases, and the edge maps they use."""

from __future__ import annotations

import math

import kornia
import pytest
import torch

from matcv.lightning_modules.edge_guided import EdgeGuidedSegmentationTask
from matcv.lightning_modules.edge_losses import (
    RegionLoss,
    canny_edge_targets,
    soft_edge_map,
    soft_guidance_weight,
)
from matcv.lightning_modules.edge_guided_nets import ETUNet

# A 2x2 image: probabilities p and truth y.
#   TP = Σ p·y = 0.9 + 0.6 = 1.5;  FN = Σ (1-p)·y = 0.1 + 0.4 = 0.5;  FP = Σ p·(1-y) = 0.2 + 0.1 = 0.3
P = torch.tensor([[[[0.9, 0.2], [0.6, 0.1]]]])
Y = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
BCE = -(math.log(0.9) + math.log(0.8) + math.log(0.6) + math.log(0.9)) / 4  # 0.236173


def test_tversky_index_and_focal_tversky_by_hand():
    # α = 0.7 weights FN, 1-α = 0.3 weights FP, ε = 1:
    #   TI = (1.5 + 1) / (1.5 + 0.7·0.5 + 0.3·0.3 + 1) = 2.5 / 2.94 = 0.850340
    #   FTL = (1 - TI)^(1/β) with β = 2: 0.149660^0.5 = 0.386859
    ftl = RegionLoss(overlap="ftl", ftl_alpha=0.7, ftl_beta=2.0, ftl_smooth=1.0, from_logits=False)
    assert ftl.overlap(P, Y).item() == pytest.approx(0.386859, abs=1e-5)
    assert ftl(P, Y).item() == pytest.approx(BCE + 0.386859, abs=1e-5)  # BCE + FTL replaces BCE + Dice
    # α swapped (FP weighted 0.7): TI = 2.5 / 2.86 = 0.874126, FTL = 0.125874^0.5 = 0.354787 — α's side matters.
    swapped = RegionLoss(overlap="ftl", ftl_alpha=0.3, ftl_beta=2.0, ftl_smooth=1.0, from_logits=False)
    assert swapped.overlap(P, Y).item() == pytest.approx(0.354787, abs=1e-5)
    # β = 1 is the plain Tversky loss 1 - TI.
    tversky = RegionLoss(overlap="ftl", ftl_alpha=0.7, ftl_beta=1.0, ftl_smooth=1.0, from_logits=False)
    assert tversky.overlap(P, Y).item() == pytest.approx(1 - 2.5 / 2.94, abs=1e-5)


def test_dice_loss_by_hand_and_from_logits():
    # Soft Dice = 2 TP / (2 TP + FN + FP) = 3 / 3.8 = 0.789474 -> loss 0.210526 (smp: smooth 0)
    dice = RegionLoss(overlap="dice", from_logits=False)
    assert dice(P, Y).item() == pytest.approx(BCE + 1 - 3 / 3.8, abs=1e-5)
    logits = torch.logit(P)
    assert RegionLoss(overlap="dice")(logits, Y).item() == pytest.approx(BCE + 1 - 3 / 3.8, abs=1e-5)


def test_multiclass_region_loss_is_cross_entropy_plus_dice():
    logits = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    target = torch.randint(0, 3, (2, 8, 8), generator=torch.Generator().manual_seed(1))
    loss = RegionLoss(num_classes=3, overlap="dice")(logits, target)
    probabilities = logits.softmax(1)
    one_hot = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float()
    tp = (probabilities * one_hot).sum((0, 2, 3))
    dice = 2 * tp / (probabilities.sum((0, 2, 3)) + one_hot.sum((0, 2, 3)))
    expected = torch.nn.functional.cross_entropy(logits, target) + (1 - dice).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)


@pytest.mark.parametrize("segmentation_loss, weight", [(2.0, 1.0), (3.0, 1.0), (4.5, 1 / 2.5)])
def test_soft_guidance_weight_below_at_and_above_theta(segmentation_loss, weight):
    # eq. (6): 1 / (max(L_seg - θ, 0) + 1) with θ = 3: full weight up to θ, then 1 / (L - θ + 1)
    value = soft_guidance_weight(torch.tensor(segmentation_loss, requires_grad=True), theta=3.0)
    assert value.item() == pytest.approx(weight)
    assert not value.requires_grad  # a weight, not a path for gradients


def _square_mask(size: int = 24) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size)
    mask[..., 6:18, 8:16] = 1
    return mask


def test_edge_targets_are_kornia_canny_of_the_mask():
    mask = _square_mask()
    edges = canny_edge_targets(mask)
    _, canny = kornia.filters.canny(mask)
    assert torch.equal(edges, canny)
    # ... and they trace the square's boundary: every side has edge pixels, none far from the boundary.
    boundary = (torch.nn.functional.max_pool2d(mask, 3, 1, 1) - -torch.nn.functional.max_pool2d(-mask, 3, 1, 1)) > 0
    assert edges.bool().any() and (edges.bool() <= boundary).all()
    for side in (edges[0, 0, 5:8, 8:16], edges[0, 0, 16:19, 8:16], edges[0, 0, 6:18, 7:10], edges[0, 0, 6:18, 14:17]):
        assert side.sum() > 0


def test_multiclass_edge_targets_are_every_class_boundary():
    classes = torch.zeros(1, 24, 24, dtype=torch.long)
    classes[:, 2:10, 2:10] = 1
    classes[:, 14:22, 12:22] = 2
    edges = canny_edge_targets(classes, num_classes=3)
    one = kornia.filters.canny((classes == 1).float()[:, None])[1]
    two = kornia.filters.canny((classes == 2).float()[:, None])[1]
    assert torch.equal(edges.bool(), (one + two).bool() | kornia.filters.canny((classes == 0).float()[:, None])[1].bool())
    assert edges[..., 2:10, 2:10].sum() > 0 and edges[..., 14:22, 12:22].sum() > 0


def test_soft_edge_map_reads_one_on_a_sharp_boundary_and_passes_gradients():
    mask = _square_mask().requires_grad_()
    edges = soft_edge_map(mask)
    assert edges.max().item() == pytest.approx(1.0, abs=1e-4)
    assert edges[..., 10:14, 10:14].max().item() < 0.01  # flat inside (sqrt of Sobel's eps)
    assert edges[..., 0:3, :].max().item() < 0.01  # flat outside
    edges.sum().backward()
    assert mask.grad is not None and mask.grad.abs().sum() > 0


def test_each_variant_adds_the_terms_of_its_equation():
    torch.manual_seed(0)
    images, mask = torch.randn(2, 3, 64, 64), _square_mask(64).repeat(2, 1, 1, 1)
    for variant, expected_terms in [("unet", {"loss_seg"}), ("et-unet", {"loss_seg", "loss_edge"}),
                                    ("guided", {"loss_seg", "loss_edge", "loss_edge_star", "guidance_weight"}),
                                    ("s-guided", {"loss_seg", "loss_edge", "loss_edge_star", "guidance_weight"})]:
        task = EdgeGuidedSegmentationTask(variant=variant, edge_lambda=0.5, guidance_gamma=2.0, soft_theta=0.0)
        logits, terms = task.loss_terms(images, mask)
        assert logits.shape == (2, 1, 64, 64)
        assert set(terms) - {"loss"} == expected_terms
        total = terms["loss_seg"]
        if variant != "unet":
            total = total + 0.5 * terms["loss_edge"]  # eq. (2)
        if variant == "guided":
            assert terms["guidance_weight"].item() == 2.0  # eq. (5): γ
        if variant == "s-guided":  # eq. (6) with θ = 0: 1 / (L_seg + 1)
            assert terms["guidance_weight"].item() == pytest.approx(1 / (terms["loss_seg"].item() + 1))
        if "loss_edge_star" in terms:
            total = total + terms["guidance_weight"] * terms["loss_edge_star"]
        assert terms["loss"].item() == pytest.approx(total.item(), rel=1e-6)


def test_et_unet_outputs_and_multiclass_shapes():
    net = ETUNet("resnet18", in_channels=3, classes=3)
    segmentation, edges = net(torch.randn(1, 3, 64, 96))  # a batch of one trains too
    assert segmentation.shape == (1, 3, 64, 96) and edges.shape == (1, 1, 64, 96)
    task = EdgeGuidedSegmentationTask(variant="s-guided", overlap="ftl", num_classes=3,
                                      class_names=["matrix", "secondary", "tertiary"])
    classes = torch.randint(0, 3, (2, 64, 64))
    logits, terms = task.loss_terms(torch.randn(2, 3, 64, 64), classes)
    assert logits.shape == (2, 3, 64, 64) and torch.isfinite(terms["loss"])
    terms["loss"].backward()
    assert all(p.grad is not None for p in task.net.egm.parameters())  # the edge branch is trained


def test_unknown_variant_or_overlap_is_refused():
    with pytest.raises(ValueError, match="variant"):
        EdgeGuidedSegmentationTask(variant="et-net")
    with pytest.raises(ValueError, match="overlap"):
        EdgeGuidedSegmentationTask(overlap="focal")
