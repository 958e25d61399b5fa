"""Segmentation submissions: one hard mask per test image (``uint8``, 0/1), scored by per-image Dice and IoU
exactly as ``lightning_modules.segmentation.per_image_dice_iou`` scores the built-in models."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from leaderboard.scorers import (
    FoldTruth,
    Rejected,
    Scorer,
    Truth,
    mean_of,
    non_finite_problem,
    official_datamodules,
    predictions_by_item,
)

METRICS = ("dice", "iou")


def load_truth(entry: dict, official_dir: Path) -> Truth:
    """The test masks exactly as the harness scores them (resized to the profile's image size)."""
    folds, data_sha256, _ = official_datamodules(entry, official_dir)
    truths = []
    for official in folds:
        official.datamodule.setup("test")
        test = official.datamodule.datasets["test"]
        targets = {item: np.asarray(mask) for item, mask in zip(test.item_ids, test.masks)}
        truths.append(FoldTruth(list(targets), targets, sum(t.size for t in targets.values()) * 8 + (1 << 20)))
    return Truth(truths, data_sha256)


def check_binary_mask(prediction: np.ndarray, truth: np.ndarray) -> str | None:
    if prediction.shape != truth.shape:
        return f"shape {prediction.shape}, the ground truth's is {truth.shape}"
    problem = non_finite_problem(prediction)
    if problem:
        return problem
    if not np.isin(prediction, (0, 1)).all():
        return "values other than 0 and 1 (expected a binary mask)"
    if truth.max(initial=0) > 1:
        return "the ground truth is multi-class: multi-class segmentation submissions are not supported yet"
    return None


def dice_iou(prediction: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Per-image Dice and IoU (an empty prediction of an empty mask: 1)."""
    p, t = prediction.astype(bool), truth.astype(bool)
    tp, fp, fn = int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())
    dice = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 1.0
    iou = tp / (tp + fp + fn) if tp + fp + fn else 1.0
    return {"dice": dice, "iou": iou}


def score_fold(arrays: dict[str, np.ndarray], item_ids: list[str], truth: FoldTruth):
    rows = []
    for item, prediction in predictions_by_item(arrays, item_ids).items():
        problem = check_binary_mask(prediction, truth.targets[item])
        if problem:
            raise Rejected(f"prediction for {item!r}: {problem}")
        rows.append({"item_id": item, **dice_iou(prediction, truth.targets[item])})
    return mean_of(rows, METRICS), rows


SCORERS = {"segmentation": Scorer(METRICS, load_truth, score_fold)}
