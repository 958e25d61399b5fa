"""Segmentation submissions: one hard mask per test image (``uint8``), scored per image as
``SegmentationEvaluation`` scores the built-in models:

* binary data (the corrosion panels): a 0/1 mask; Dice and IoU of ``per_image_dice_iou``;
* multi-class data (the NASA superalloy micrographs, ``datamodule.num_classes`` > 1): a class-index map
  (0..C-1); per class Dice and IoU as ``per_image_class_dice_iou`` (smp's multiclass stats, a class absent from
  both prediction and truth scores 1), ``dice``/``iou`` = their means over classes (mIoU), plus
  ``dice_<class>``/``iou_<class>``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from matcv.leaderboard.scorers import (
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
    folds, data_sha256 = official_datamodules(entry, official_dir)
    truths = []
    for official in folds:
        datamodule = official.datamodule
        datamodule.setup("test")
        test = datamodule.datasets["test"]
        num_classes = int(getattr(datamodule, "num_classes", 1))
        class_names = list(getattr(datamodule, "class_names", [])) or [f"class{c}" for c in range(num_classes)]
        targets = {item: np.asarray(mask) for item, mask in zip(test.item_ids, test.masks)}
        truths.append(FoldTruth(list(targets), targets, sum(t.size for t in targets.values()) * 8 + (1 << 20),
                                {"num_classes": num_classes, "class_names": class_names}))
    return Truth(truths, data_sha256)


def check_mask(prediction: np.ndarray, truth: np.ndarray, num_classes: int = 1) -> str | None:
    if prediction.shape != truth.shape:
        return f"shape {prediction.shape}, the ground truth's is {truth.shape}"
    problem = non_finite_problem(prediction)
    if problem:
        return problem
    if num_classes == 1 and not np.isin(prediction, (0, 1)).all():
        return "values other than 0 and 1 (expected a binary mask)"
    if num_classes > 1 and not np.isin(prediction, np.arange(num_classes)).all():
        return f"values other than the class indices 0..{num_classes - 1}"
    return None


def dice_iou(prediction: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Per-image Dice and IoU (an empty prediction of an empty mask: 1)."""
    p, t = prediction.astype(bool), truth.astype(bool)
    tp, fp, fn = int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())
    dice = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 1.0
    iou = tp / (tp + fp + fn) if tp + fp + fn else 1.0
    return {"dice": dice, "iou": iou}


def class_dice_iou(prediction: np.ndarray, truth: np.ndarray, class_names: list[str]) -> dict[str, float]:
    """Per-image scores of a class-index map: per class, then their means (``dice``, ``iou``)."""
    row, dices, ious = {}, [], []
    for c, name in enumerate(class_names):
        scores = dice_iou(prediction == c, truth == c)
        row[f"dice_{name}"], row[f"iou_{name}"] = scores["dice"], scores["iou"]
        dices.append(scores["dice"])
        ious.append(scores["iou"])
    return {"dice": float(np.mean(dices)), "iou": float(np.mean(ious)), **row}


def score_fold(arrays: dict[str, np.ndarray], item_ids: list[str], truth: FoldTruth):
    num_classes = truth.context.get("num_classes", 1)
    rows = []
    for item, prediction in predictions_by_item(arrays, item_ids).items():
        problem = check_mask(prediction, truth.targets[item], num_classes)
        if problem:
            raise Rejected(f"prediction for {item!r}: {problem}")
        scores = dice_iou(prediction, truth.targets[item]) if num_classes == 1 else \
            class_dice_iou(prediction, truth.targets[item], truth.context["class_names"])
        rows.append({"item_id": item, **scores})
    return mean_of(rows, METRICS), rows


SCORERS = {"segmentation": Scorer(METRICS, load_truth, score_fold)}
