"""Output heads, losses and decoding for ordinal ratings (ASTM D1654 ratings 5–9, Yin 2024, Part II).

A rating of 6 predicted as 5 is a smaller mistake than 6 predicted as 9, and plain cross-entropy does not
know that. Three heads are compared on the same backbone:

- ``"ce"``: K logits, softmax cross-entropy (the nominal baseline; the only head with class weights);
- ``"coral"``: CORAL (Cao, Mirjalili & Raschka 2020), one shared weight vector and K−1 biases, logit k
  models P(y > k); rank-consistent by construction;
- ``"corn"``: CORN (Shi, Cao & Raschka 2023), K−1 free logits, logit k models P(y > k | y > k−1), trained on
  the conditional subsets; rank-consistent through the chain rule.

The losses, label encoding and label decoding are the ``coral-pytorch`` package's own (by the CORAL/CORN
authors), so our numbers mean what theirs mean. Labels everywhere in this module are class *indices*
0..K−1 (rating − lowest rating), never the rating itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from coral_pytorch.dataset import (
    corn_label_from_logits,
    levels_from_labelbatch,
    proba_to_label,
)
from coral_pytorch.layers import CoralLayer
from coral_pytorch.losses import coral_loss, corn_loss
from torch import nn

HEADS = ("ce", "coral", "corn")


def _check_head(head: str) -> None:
    if head not in HEADS:
        raise ValueError(f"unknown ordinal head {head!r}; valid heads: {', '.join(HEADS)}")


def _n_outputs(head: str, num_classes: int) -> int:
    """Logits a head emits for K classes: K for cross-entropy, K−1 thresholds for CORAL/CORN."""
    return num_classes if head == "ce" else num_classes - 1


def make_head(head: str, in_features: int, num_classes: int) -> nn.Module:
    """The last layer of a rating model: features (N, in_features) -> logits (N, K) or (N, K−1)."""
    _check_head(head)
    if num_classes < 2:
        raise ValueError(f"an ordinal head needs at least 2 classes, got {num_classes}")
    if head == "ce":
        return nn.Linear(in_features, num_classes)
    if head == "coral":
        # One weight vector shared by all thresholds + K−1 biases (pre-initialised descending, the
        # package default), which is what makes CORAL's cumulative probabilities rank-consistent.
        return CoralLayer(in_features, num_classes)
    return nn.Linear(in_features, num_classes - 1)


def _check_logits(head: str, logits: torch.Tensor, num_classes: int | None = None) -> None:
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, outputs), got shape {tuple(logits.shape)}")
    if num_classes is not None and logits.shape[1] != _n_outputs(head, num_classes):
        raise ValueError(f"head {head!r} with {num_classes} classes expects {_n_outputs(head, num_classes)} "
                         f"logits per example, got {logits.shape[1]}")
    if num_classes is None and logits.shape[1] < 1:
        raise ValueError("logits have no columns")


def head_loss(head: str, logits: torch.Tensor, labels: torch.Tensor, num_classes: int,
              class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean training loss of a batch; ``labels`` are class indices 0..K−1.

    The three losses are on different scales (CE: nats per example; CORAL: summed over the K−1 binary
    tasks per example; CORN: mean over the (example, task) pairs it uses), so compare heads by their
    rating metrics, never by loss values.
    """
    _check_head(head)
    if class_weights is not None and head != "ce":
        raise ValueError(f"class_weights are only supported for the 'ce' head, not {head!r}")
    _check_logits(head, logits, num_classes)
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels must be (N,) with N = {logits.shape[0]}, got shape {tuple(labels.shape)}")
    if labels.numel() == 0:
        raise ValueError("empty batch")  # corn_loss would divide by zero, cross-entropy would give nan
    # One host copy: the range check needs it, and levels_from_labelbatch loops over Python ints anyway.
    # Out-of-range labels would otherwise be a device-side assert (CE on GPU) or silently wrong (CORN).
    host_labels = labels.detach().long().cpu()
    if int(host_labels.min()) < 0 or int(host_labels.max()) >= num_classes:
        raise ValueError(f"labels must be class indices in 0..{num_classes - 1}, got "
                         f"{int(host_labels.min())}..{int(host_labels.max())} (pass rating − lowest rating)")
    labels = labels.long()
    if head == "ce":
        weight = None if class_weights is None else class_weights.to(device=logits.device, dtype=logits.dtype)
        return F.cross_entropy(logits, labels, weight=weight)
    if head == "coral":
        # levels_from_labelbatch builds its tensor on the CPU in float32: move it to the logits.
        levels = levels_from_labelbatch(host_labels.tolist(), num_classes=num_classes)
        return coral_loss(logits, levels.to(device=logits.device, dtype=logits.dtype))
    return corn_loss(logits, labels, num_classes)


def _class_probabilities(exceed: torch.Tensor) -> torch.Tensor:
    """P(y > k) for k = 0..K−2 (N, K−1) -> P(y = k) for k = 0..K−1 (N, K).

    p_0 = 1 − P(y>0), p_k = P(y>k−1) − P(y>k), p_{K−1} = P(y>K−2). The differences telescope to 1; they
    can only go negative where CORAL's thresholds are out of order (biases not yet sorted early in
    training), so negatives are clipped and the row renormalised. CORN's chained products never need it.
    """
    ones = torch.ones_like(exceed[:, :1])
    padded = torch.cat([ones, exceed, torch.zeros_like(ones)], dim=1)
    probabilities = (padded[:, :-1] - padded[:, 1:]).clamp_min(0)
    # The positive parts of differences from 1 down to 0 add up to at least 1: no division by zero.
    return probabilities / probabilities.sum(dim=1, keepdim=True)


def head_decode(head: str, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted class index (N,) and class probabilities (N, K), rows summing to 1.

    For CORAL and CORN the index is the package's own rule: the number of thresholds with P(y > k) > 0.5,
    which is the median class when the P(y > k) decrease (always for CORN). It is not always the argmax of
    the returned probabilities (the mode); we keep the package's rule so that results are comparable with
    the CORAL/CORN papers.
    """
    _check_head(head)
    _check_logits(head, logits)
    if head == "ce":
        probabilities = logits.softmax(dim=1)
        return probabilities.argmax(dim=1), probabilities
    if head == "coral":
        exceed = torch.sigmoid(logits)
        return proba_to_label(exceed).long(), _class_probabilities(exceed)
    # CORN: logit k is conditional on y > k−1; the chain rule gives the unconditional P(y > k).
    exceed = torch.cumprod(torch.sigmoid(logits), dim=1)
    return corn_label_from_logits(logits).long(), _class_probabilities(exceed)
