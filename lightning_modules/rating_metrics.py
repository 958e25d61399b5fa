"""Fold-level scores of predicted vs true corrosion ratings, and a confusion-matrix figure.

Ratings are ordinal (Yin 2024, Part II): accuracy alone hides whether a miss is one grade off or four, and
a rare rating can vanish in it. So every rating model reports accuracy, macro-F1 (each rating
counts equally), quadratic-weighted kappa (agreement beyond chance, penalising far misses more), MAE in
rating units and accuracy within ±1 rating. Inputs are the ratings themselves (e.g. 5..9), not class
indices; ``labels`` fixes the rating scale, so folds missing a rating still give comparable K×K outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import cohen_kappa_score, confusion_matrix, f1_score  # noqa: E402

from matcv.datamodules.core.atomic_io import save_figure  # noqa: E402


def _ratings(values: Sequence[int] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    integral = np.issubdtype(array.dtype, np.integer) or (
        np.issubdtype(array.dtype, np.number) and bool(np.all(array == np.round(array))))
    if array.size and not integral:
        raise ValueError(f"{name} must be integer ratings, got {array.dtype}")
    return array.astype(np.int64)


def _checked(true: Sequence[int] | np.ndarray, predicted: Sequence[int] | np.ndarray,
             labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    true, predicted = _ratings(true, "true"), _ratings(predicted, "predicted")
    labels = [int(label) for label in labels]
    if len(true) != len(predicted):
        raise ValueError(f"{len(true)} true ratings but {len(predicted)} predictions")
    if len(true) == 0:
        raise ValueError("no ratings to score")
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate labels: {labels}")
    # sklearn silently drops samples whose rating is not in `labels` from kappa and the confusion matrix
    # (a prediction of 4 on a 5..9 scale would vanish and could raise kappa): refuse instead.
    outside = sorted((set(true.tolist()) | set(predicted.tolist())) - set(labels))
    if outside:
        raise ValueError(f"ratings {outside} are not among labels {labels}")
    return true, predicted, labels


def rating_metrics(true: Sequence[int] | np.ndarray, predicted: Sequence[int] | np.ndarray,
                   labels: Sequence[int]) -> dict[str, float]:
    """accuracy, macro_f1, qwk, mae (rating units) and within_1 of one fold's predictions.

    macro_f1 averages over all of ``labels``: a rating absent from both truth and predictions of a fold
    counts as F1 = 0 (zero_division=0), so a fold missing a rating scores lower than one that has it.
    """
    true, predicted, labels = _checked(true, predicted, labels)
    error = np.abs(predicted - true)
    if len(set(true.tolist()) | set(predicted.tolist())) == 1:
        # Every truth and prediction is one rating: chance agreement is then total, so kappa is 0/0 and
        # sklearn returns nan. A fold whose panels are all rating 8, all predicted 8, is perfect, not
        # undefined; the 0.0 branch only guards the rule (one class everywhere means all are right).
        qwk = 1.0 if np.all(error == 0) else 0.0
    else:
        qwk = float(cohen_kappa_score(true, predicted, labels=labels, weights="quadratic"))
    return {
        "accuracy": float(np.mean(error == 0)),
        "macro_f1": float(f1_score(true, predicted, labels=labels, average="macro", zero_division=0)),
        "qwk": qwk,
        "mae": float(np.mean(error)),
        "within_1": float(np.mean(error <= 1)),
    }


def confusion(true: Sequence[int] | np.ndarray, predicted: Sequence[int] | np.ndarray,
              labels: Sequence[int]) -> np.ndarray:
    """K×K counts, rows = true rating, columns = predicted rating, both in ``labels`` order."""
    true, predicted, labels = _checked(true, predicted, labels)
    return confusion_matrix(true, predicted, labels=labels)


def save_confusion_figure(path: str | Path, matrix: np.ndarray, labels: Sequence[int], title: str) -> Path:
    """Heat map of a confusion matrix with the count in each cell, written atomically as PNG."""
    matrix = np.asarray(matrix)
    if matrix.shape != (len(labels), len(labels)):
        raise ValueError(f"matrix shape {matrix.shape} does not match {len(labels)} labels")
    size = 1.2 + 0.55 * len(labels)
    figure, axis = plt.subplots(figsize=(size + 0.8, size))
    image = axis.imshow(matrix, cmap="Blues", vmin=0, vmax=max(float(matrix.max()), 1.0))
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    ticks = np.arange(len(labels))
    axis.set_xticks(ticks, [str(label) for label in labels])
    axis.set_yticks(ticks, [str(label) for label in labels])
    axis.set_xlabel("predicted rating")
    axis.set_ylabel("true rating")
    axis.set_title(title, fontsize=9)
    dark = 0.5 * max(float(matrix.max()), 1.0)  # white text on dark cells so counts stay legible
    for row in range(matrix.shape[0]):
        for column in range(matrix.shape[1]):
            value = matrix[row, column]
            text = f"{value:g}" if np.issubdtype(matrix.dtype, np.floating) else str(value)
            axis.text(column, row, text, ha="center", va="center", fontsize=8,
                      color="white" if value > dark else "black")
    figure.tight_layout()
    return save_figure(path, figure, dpi=110)
