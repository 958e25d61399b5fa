"""The losses of DeepSC-Edge (Yin 2024, Part III, eq. 1–8) and the edge maps they compare.

* ``canny_edge_targets``: Y_edge, kornia's deterministic Canny on the ground-truth mask (every class
  boundary of a multi-class mask, OR-ed into one map).
* ``soft_edge_map``: Ŷ_edge*, the edge map of the *prediction*. Canny's non-maximum suppression and
  hysteresis are thresholds with no gradient, so the prediction's edges use Canny's differentiable
  gradient step (Sobel magnitude), scaled so an ideal 0 -> 1 step reads 1. Canny's Gaussian smoothing is
  left out: it would spread a sharp predicted boundary over ~4 px against a 1-px target (Sobel: 2 px).
* ``RegionLoss``: BCE (or cross-entropy) + Dice, eq. (1), or + Focal Tversky, eqs. (7)-(8), which "+FTL"
  models use in place of Dice everywhere, edge terms included.
* ``soft_guidance_weight``: 1 / (max(L_seg - θ, 0) + 1), the weight of L_edge* in S-Guided ET-UNet, eq. (6).

Ignored pixels (``IGNORE_INDEX`` in a user's mask, dataset.yaml's ``ignore``) are neither learnt nor scored, as
in ``SmpSegmentationTask``: ``RegionLoss`` leaves them out of both its terms, and ``edge_targets`` draws no edge
along an ignore region (what lies under it is unknown) and marks every pixel within Canny's reach of one as
ignored in the edge target too, so no edge term reads them either.

Dice and Tversky come from segmentation-models-pytorch; FTL maps onto smp's TverskyLoss as
smp.alpha (FP weight) = 1 - α, smp.beta (FN weight) = α, smp.gamma = 1/β.
"""

from __future__ import annotations

import functools

import kornia
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from matcv.datamodules.dataset_description import IGNORE_INDEX

# Canny settings (kornia's defaults): a 0/1 mask step is far above both thresholds, so every
# boundary is a strong edge and the result does not depend on them.
CANNY_KERNEL, CANNY_SIGMA, CANNY_LOW, CANNY_HIGH = 5, 1.0, 0.1, 0.2

# Yin 2024, §4.4: the best settings found by its grid search. β: Table 5's ablation peaks at β = 1.5
# for α = 0.9 on three of the four models (Guided ET-UNet + FTL 0.8768, the value of Table 4).
DEFAULT_LAMBDA, DEFAULT_GAMMA, DEFAULT_THETA = 0.5, 1.0, 3.0
DEFAULT_FTL_ALPHA, DEFAULT_FTL_BETA = 0.90, 1.5
# How far an input pixel reaches into Canny's output: the Gaussian's half-width, Sobel's and the non-maximum
# suppression's neighbour (hysteresis only links edges that are strong on a 0/1 mask anyway).
CANNY_REACH = CANNY_KERNEL // 2 + 1 + 1


def one_hot_channels(mask: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, 1, H, W) 0/1 float mask, or (B, H, W) class indices -> (B, C, H, W) float indicator maps.

    A binary task has one channel (the foreground); a multi-class task one per class.
    """
    if num_classes == 1:
        return mask.float() if mask.dim() == 4 else mask[:, None].float()
    return F.one_hot(mask.long(), num_classes).permute(0, 3, 1, 2).float()


@torch.no_grad()
def canny_edge_targets(mask: torch.Tensor, num_classes: int = 1) -> torch.Tensor:
    """Y_edge: kornia Canny edges of every class's indicator map, OR-ed -> (B, 1, H, W) in {0, 1}."""
    channels = one_hot_channels(mask, num_classes)
    b, c, h, w = channels.shape
    # One map at a time: on a 0/1 mask, Canny's non-maximum suppression breaks exact ties between the two
    # pixels of a step, and a batched convolution rounds differently from a single one — batched, an
    # image's edge could move by a pixel depending on which images share its batch.
    edges = [kornia.filters.canny(single[None, None], low_threshold=CANNY_LOW, high_threshold=CANNY_HIGH,
                                  kernel_size=(CANNY_KERNEL, CANNY_KERNEL), sigma=(CANNY_SIGMA, CANNY_SIGMA))[1]
             for single in channels.reshape(b * c, h, w)]
    return torch.cat(edges).reshape(b, c, h, w).amax(dim=1, keepdim=True)


@torch.no_grad()
def edge_targets(mask: torch.Tensor, num_classes: int = 1) -> torch.Tensor:
    """``canny_edge_targets`` of a mask that may hold ignored pixels -> (B, 1, H, W): 0/1 edges, and
    IGNORE_INDEX within ``CANNY_REACH`` px of an ignored pixel (no edge is drawn along an ignore region, and
    the edges near one are unknown). Without ignored pixels: exactly ``canny_edge_targets``."""
    ignored = (mask == IGNORE_INDEX) if mask.dim() == 4 else (mask == IGNORE_INDEX)[:, None]
    if not bool(ignored.any()):
        return canny_edge_targets(mask, num_classes)
    filled = mask.masked_fill(mask == IGNORE_INDEX, 0)  # any class: the pixels it reaches are ignored below
    edges = canny_edge_targets(filled, num_classes)
    near = F.max_pool2d(ignored.float(), 2 * CANNY_REACH + 1, stride=1, padding=CANNY_REACH) > 0
    return edges.masked_fill(near, float(IGNORE_INDEX))


def _gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    return kornia.filters.sobel(x, normalized=True, eps=1e-6)


@functools.lru_cache(maxsize=None)
def _unit_step_response() -> float:
    """The largest Sobel gradient magnitude of an ideal 0 -> 1 step (0.5 with kornia's normalised kernel)."""
    step = torch.zeros(1, 1, 32, 32, dtype=torch.float64)
    step[..., 16:] = 1.0
    return float(_gradient_magnitude(step).max())


def soft_edge_map(probabilities: torch.Tensor) -> torch.Tensor:
    """Ŷ_edge*: differentiable edge strength in [0, 1] of (B, C, H, W) class probabilities -> (B, 1, H, W).

    A binary task passes its foreground probability (C = 1); a multi-class task its softmax, and a pixel
    is as much an edge as its strongest class boundary.
    """
    b, c, h, w = probabilities.shape
    magnitude = _gradient_magnitude(probabilities.reshape(b * c, 1, h, w)).reshape(b, c, h, w)
    return (magnitude.amax(dim=1, keepdim=True) / _unit_step_response()).clamp(0.0, 1.0)


def soft_guidance_weight(segmentation_loss: torch.Tensor, theta: float) -> torch.Tensor:
    """Eq. (6)'s weight of L_edge*: full (1) while L_seg <= θ, then 1 / (L_seg - θ + 1).

    Detached: the weight steers how much edge guidance the network gets; letting gradients through it
    would reward a *larger* segmentation loss (which shrinks the weighted edge term).
    """
    return 1.0 / (torch.clamp(segmentation_loss.detach() - theta, min=0.0) + 1.0)


class RegionLoss(nn.Module):
    """BCE + Dice (eq. 1), or BCE + Focal Tversky (eqs. 7-8) when ``overlap == "ftl"``.

    ``num_classes == 1``: binary maps (B, 1, H, W) with a 0/1 target; ``num_classes > 1``: (B, C, H, W)
    logits with a (B, H, W) class-index target, cross-entropy in place of BCE. ``from_logits=False`` takes
    probabilities instead (the prediction's edge map is one). The overlap term is computed over the whole
    batch, as smp does; a class absent from the batch contributes 0 to it. Target pixels equal to IGNORE_INDEX
    are left out of both terms (a target without any is computed exactly as before).
    """

    def __init__(self, num_classes: int = 1, overlap: str = "dice", ftl_alpha: float = DEFAULT_FTL_ALPHA,
                 ftl_beta: float = DEFAULT_FTL_BETA, ftl_smooth: float = 1.0, from_logits: bool = True) -> None:
        super().__init__()
        if overlap not in ("dice", "ftl"):
            raise ValueError(f"overlap must be 'dice' or 'ftl', got {overlap!r}")
        if not 0.0 <= ftl_alpha <= 1.0 or ftl_beta <= 0:
            raise ValueError(f"FTL needs 0 <= alpha <= 1 and beta > 0, got alpha={ftl_alpha}, beta={ftl_beta}")
        self.num_classes, self.from_logits = num_classes, from_logits
        mode = "binary" if num_classes == 1 else "multiclass"
        if overlap == "dice":
            self.overlap = smp.losses.DiceLoss(mode=mode, from_logits=from_logits)
        else:  # TI = (TP + ε) / (TP + α FN + (1 - α) FP + ε); FTL = (1 - TI)^(1/β)
            self.overlap = smp.losses.TverskyLoss(mode=mode, from_logits=from_logits, smooth=ftl_smooth,
                                                  alpha=1.0 - ftl_alpha, beta=ftl_alpha, gamma=1.0 / ftl_beta)
        # The same overlap term leaving IGNORE_INDEX pixels out (smp zeroes their prediction and target).
        self.overlap_ignoring = type(self.overlap)(mode=mode, from_logits=from_logits, ignore_index=IGNORE_INDEX,
                                                   **({} if overlap == "dice" else
                                                      {"smooth": ftl_smooth, "alpha": 1.0 - ftl_alpha,
                                                       "beta": ftl_alpha, "gamma": 1.0 / ftl_beta}))

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if bool((target == IGNORE_INDEX).any()):
            return self._ignoring(prediction, target)
        if self.num_classes == 1:
            if self.from_logits:
                pixelwise = F.binary_cross_entropy_with_logits(prediction, target.float())
            else:  # BCE on probabilities; clamped as torch's own BCE would overflow log(0)
                pixelwise = F.binary_cross_entropy(prediction.clamp(1e-6, 1 - 1e-6), target.float())
        else:
            pixelwise = F.cross_entropy(prediction, target.long())
        return pixelwise + self.overlap(prediction, target)

    def _ignoring(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Both terms over the pixels whose target is not IGNORE_INDEX (a mean over those pixels)."""
        if self.num_classes == 1:
            keep = (target != IGNORE_INDEX).float()
            truth = (target * keep).float()
            if self.from_logits:
                pixelwise = F.binary_cross_entropy_with_logits(prediction, truth, weight=keep, reduction="sum")
            else:
                pixelwise = F.binary_cross_entropy(prediction.clamp(1e-6, 1 - 1e-6), truth, weight=keep,
                                                   reduction="sum")
            pixelwise = pixelwise / keep.sum().clamp_min(1.0)
            return pixelwise + self.overlap_ignoring(prediction, target)
        pixelwise = F.cross_entropy(prediction, target.long(), ignore_index=IGNORE_INDEX)
        return pixelwise + self.overlap_ignoring(prediction, target.long())
