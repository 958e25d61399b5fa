"""Training losses of ``SmpSegmentationTask`` other than its default BCE/CE + Dice, for rare classes.

``loss:`` in a dataset.yaml, or the model's ``loss`` / ``class_weights`` arguments, name one of:

- ``ce``: cross-entropy (binary: BCE), optionally class-weighted (binary: ``pos_weight = w1 / w0``);
- ``dice``: soft Dice (Milletari et al. 2016), smp's ``DiceLoss``;
- ``focal``: focal loss (Lin et al. 2017), smp's ``FocalLoss`` (``alpha``, ``gamma``);
- ``tversky``: Tversky loss (Salehi et al. 2017), smp's ``TverskyLoss``: ``alpha`` weighs false positives,
  ``beta`` false negatives (default 0.3 / 0.7, Salehi's choice: missing a rare class costs more), ``gamma`` the
  focal exponent;
- ``lovasz``: Lovász hinge / softmax (Berman et al. 2018), smp's ``LovaszLoss`` (takes no class weights).

Every one leaves IGNORE_INDEX pixels out. ``class_weights`` is one weight per class or ``inverse_frequency``:
balanced weights ``N / (C · n_c)`` of the training part's pixel counts (``inverse_frequency_weights``), which
``SmpSegmentationTask.prepare_from_training_data`` computes before any fitting.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from matcv.datamodules.dataset_description import IGNORE_INDEX, INVERSE_FREQUENCY, LossSpec, parse_loss

DEFAULT_TVERSKY = (0.3, 0.7)  # (alpha: false positives, beta: false negatives), Salehi et al. 2017


def loss_spec(loss: str | dict | LossSpec | None, class_weights=None, n_classes: int = 0,
              source: str = "SmpSegmentationTask") -> LossSpec | None:
    """A checked ``LossSpec`` of a model's ``loss`` / ``class_weights`` arguments; None for the default loss."""
    if loss is None and class_weights is None:
        return None
    if isinstance(loss, LossSpec):
        raw = {k: getattr(loss, k) for k in ("name", "class_weights", "alpha", "beta", "gamma")}
    else:
        raw = {"name": loss} if isinstance(loss, str) or loss is None else dict(loss)
        raw["name"] = raw.get("name") or ("ce" if loss is None else None)  # weights alone: weighted cross-entropy
    if class_weights is not None:
        raw["class_weights"] = class_weights
    raw = {k: (list(v) if isinstance(v, tuple) else v) for k, v in raw.items() if v is not None}
    problems: list[str] = []
    spec = parse_loss(raw, n_classes, lambda key, text: problems.append(f"'{key}' {text}"))
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems))
    return None if spec.name == "default" and spec.class_weights is None else spec


def class_pixel_counts(masks: Sequence[np.ndarray], n_classes: int) -> np.ndarray:
    """Pixels of each class 0..n_classes-1 over ``masks`` (ignored pixels and other values not counted)."""
    counts = np.zeros(n_classes, np.int64)
    for mask in masks:
        counts += np.bincount(np.asarray(mask).ravel().astype(np.int64), minlength=256)[:n_classes]
    return counts


def inverse_frequency_weights(counts: Sequence[int]) -> list[float]:
    """Balanced class weights ``N / (C · n_c)`` of pixel counts, C the classes present; a class absent from the
    counts gets weight 1 (it has no pixel to weight; 1 keeps its false positives penalised as usual)."""
    counts = np.asarray(counts, dtype=float)
    present = counts > 0
    if not present.any():
        raise ValueError("no labelled pixel in the training masks: no class frequencies to invert")
    weights = np.ones_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return [float(w) for w in weights]


def training_masks(datamodule) -> list[np.ndarray]:
    """The class masks of the training part (what inverse-frequency weights may read; never val or test)."""
    train = getattr(datamodule, "datasets", {}).get("train")
    masks = getattr(train, "masks", None)
    if masks is None:
        raise ValueError(f"class_weights {INVERSE_FREQUENCY!r} needs the training masks, but "
                         f"{type(datamodule).__name__}'s training dataset has no 'masks'; give the weights as a list")
    return [np.asarray(m) for m in masks]


def _with_weights(cls, weights: list[float] | None, **kwargs) -> nn.Module:
    if weights is None:
        return cls(**kwargs)
    if "class_weights" not in inspect.signature(cls.__init__).parameters:
        raise ValueError(f"this segmentation-models-pytorch's {cls.__name__} takes no class_weights; upgrade it "
                         f"(pip install -U segmentation-models-pytorch) or drop class_weights")
    return cls(**kwargs, class_weights=weights)


class WeightedCrossEntropy(nn.Module):
    """Cross-entropy (multi-class) or BCE (binary, ``pos_weight = w1 / w0``) with ignored pixels left out."""

    def __init__(self, num_classes: int, weights: list[float] | None = None):
        super().__init__()
        self.num_classes, self.weights = num_classes, weights  # a plain list: no state in the checkpoint

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.num_classes > 1:
            weight = None if self.weights is None else torch.tensor(self.weights, dtype=logits.dtype,
                                                                    device=logits.device)
            return F.cross_entropy(logits, target.long(), weight=weight, ignore_index=IGNORE_INDEX)
        keep = (target != IGNORE_INDEX).to(logits.dtype)
        pos_weight = None
        if self.weights is not None:
            pos_weight = torch.tensor(self.weights[1] / max(self.weights[0], 1e-12), dtype=logits.dtype,
                                      device=logits.device)
        pixelwise = F.binary_cross_entropy_with_logits(logits, (target * keep).to(logits.dtype), weight=keep,
                                                       pos_weight=pos_weight, reduction="sum")
        return pixelwise / keep.sum().clamp_min(1.0)


class SmpLoss(nn.Module):
    """An smp loss with the target in the form it takes: class indices (multi-class), float 0/1 (binary)."""

    def __init__(self, loss: nn.Module, num_classes: int):
        super().__init__()
        self.loss, self.num_classes = loss, num_classes

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, target.long() if self.num_classes > 1 else target.to(logits.dtype))


def build_loss(spec: LossSpec, num_classes: int, weights: list[float] | None = None) -> nn.Module:
    """The loss module of ``spec`` for a model with ``num_classes`` outputs (1: binary); ``weights``: the class
    weights resolved (a list, or None), which replace ``spec.class_weights``."""
    if weights is None and spec.class_weights is not None:
        if spec.class_weights == INVERSE_FREQUENCY:
            raise ValueError(f"class_weights {INVERSE_FREQUENCY!r} are computed from the training masks: call "
                             f"prepare_from_training_data(datamodule) before using the loss")
        weights = list(spec.class_weights)
    n_weights = max(num_classes, 2)
    if weights is not None and len(weights) != n_weights:
        raise ValueError(f"{len(weights)} class weights for {n_weights} classes")
    mode = "binary" if num_classes == 1 else "multiclass"
    if spec.name == "ce":
        return WeightedCrossEntropy(num_classes, weights)
    if weights is not None and num_classes == 1 and spec.name in ("dice", "focal", "tversky"):
        raise ValueError(f"class weights on two classes (one output) apply to the 'ce' loss only (as BCE's "
                         f"pos_weight); smp's {spec.name} loss takes none in binary mode")
    if spec.name == "dice":
        loss = _with_weights(smp.losses.DiceLoss, weights, mode=mode, from_logits=True, ignore_index=IGNORE_INDEX)
    elif spec.name == "focal":
        gamma = 2.0 if spec.gamma is None else spec.gamma
        loss = _with_weights(smp.losses.FocalLoss, weights, mode=mode, alpha=spec.alpha, gamma=gamma,
                             ignore_index=IGNORE_INDEX)
    elif spec.name == "tversky":
        alpha = DEFAULT_TVERSKY[0] if spec.alpha is None else spec.alpha
        beta = DEFAULT_TVERSKY[1] if spec.beta is None else spec.beta
        loss = _with_weights(smp.losses.TverskyLoss, weights, mode=mode, from_logits=True, alpha=alpha, beta=beta,
                             gamma=1.0 if spec.gamma is None else spec.gamma, ignore_index=IGNORE_INDEX)
    elif spec.name == "lovasz":
        if weights is not None:
            raise ValueError("the lovasz loss takes no class weights")
        loss = smp.losses.LovaszLoss(mode=mode, from_logits=True, ignore_index=IGNORE_INDEX)
    else:
        raise ValueError(f"no loss {spec.name!r} to build (the default loss is the model's own)")
    return SmpLoss(loss, num_classes)
