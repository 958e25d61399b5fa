"""Rating and ordinal submissions: one predicted ASTM D1654 rating per test photo (a 0-d integer array, e.g. 7,
one of the task's ratings), scored exactly as ``RatingEvaluation.test_summary`` scores the built-in models:
``matcv.lightning_modules.rating_metrics.rating_metrics(true, predicted, ratings)`` over the fold's test photos.

Both tasks share the corrosion panels DataModule with ``target: rating``; they differ only in the order of
their metrics (the leaderboard ranks by the first: accuracy for ``rating``, quadratic-weighted kappa for
``ordinal``), which is read from their task YAMLs.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np

from matcv.datamodules.core.config import TaskConfig
from matcv.leaderboard.scorers import (
    FoldTruth,
    Rejected,
    Scorer,
    Truth,
    official_datamodules,
    predictions_by_item,
)
from matcv.lightning_modules.rating import RatingEvaluation
from matcv.lightning_modules.rating_metrics import rating_metrics

# The task's rating scale: the one every rating model scores on (RatingEvaluation's default; the task YAMLs
# do not override it). Fold metrics use it as the labels (macro-F1 over all of them, K x K kappa).
RATINGS: tuple[int, ...] = tuple(
    int(r) for r in inspect.signature(RatingEvaluation.__init__).parameters["ratings"].default)


def load_truth(entry: dict, official_dir: Path) -> Truth:
    """The true rating of every test photo of every fold, read by the task's DataModule as the harness reads it."""
    folds, data_sha256 = official_datamodules(entry, official_dir)
    truths = []
    for official in folds:
        official.datamodule.setup("test")
        test = official.datamodule.datasets["test"]
        targets = {item: int(rating) for item, rating in zip(test.item_ids, test.ratings)}
        outside = sorted(set(targets.values()) - set(RATINGS))
        if outside:  # the built-in models could not score these either (RatingTask.rating_index refuses them)
            raise Rejected(f"the official data of fold {official.fold} has ratings {outside} outside the task's "
                           f"ratings {list(RATINGS)}: it cannot be scored")
        longest = max((len(item) for item in targets), default=1)
        # item_ids (UTF-32) + one small .npy (header + 8 bytes) per photo, with room to spare
        max_bytes = len(targets) * (4 * longest + 1024) + (1 << 20)
        truths.append(FoldTruth(list(targets), targets, max_bytes, {"ratings": RATINGS}))
    return Truth(truths, data_sha256)


def check_rating(prediction: np.ndarray, ratings: tuple[int, ...]) -> str | None:
    if prediction.dtype.kind not in "iu":
        return f"dtype {prediction.dtype} (expected an integer rating, e.g. int64)"
    if prediction.shape != ():
        return f"shape {prediction.shape} (expected a 0-d array: one rating per photo)"
    value = prediction.item()  # a Python int: no wrap-around of huge unsigned values
    if value not in ratings:
        return f"rating {value} is not one of the task's ratings {list(ratings)}"
    return None


def score_fold(arrays: dict[str, np.ndarray], item_ids: list[str], truth: FoldTruth):
    ratings = truth.context["ratings"]
    true, predicted, rows = [], [], []
    for item, prediction in predictions_by_item(arrays, item_ids).items():
        problem = check_rating(prediction, ratings)
        if problem:
            raise Rejected(f"prediction for {item!r}: {problem}")
        t, p = truth.targets[item], int(prediction.item())
        true.append(t)
        predicted.append(p)
        error = abs(p - t)
        # The built-in models' per-image records, less the confidence (RatingEvaluation.record_predictions):
        # no per-photo value is named after a leaderboard metric, in theirs or here, so the per-item rank
        # column stays empty rather than ranking submissions without the built-in models.
        rows.append({"item_id": item, "rating": t, "predicted": p, "correct": float(error == 0),
                     "abs_error": float(error)})
    return rating_metrics(true, predicted, ratings), rows


def task_metrics(task: str) -> tuple[str, ...]:
    """The metric columns of a built-in task YAML, in its order (every one computed by ``rating_metrics``)."""
    metrics = tuple(TaskConfig.load(task).metrics)
    unknown = set(metrics) - set(rating_metrics([RATINGS[0]], [RATINGS[0]], RATINGS))
    if unknown:
        raise ValueError(f"task {task!r} lists metrics {sorted(unknown)} that rating_metrics does not compute")
    return metrics


SCORERS = {task: Scorer(task_metrics(task), load_truth, score_fold) for task in ("rating", "ordinal")}
