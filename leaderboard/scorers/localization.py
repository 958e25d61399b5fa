"""Localization submissions: one predicted strain field ε11 per test volume (``pred_<i>``: float32 or float64,
shape (N, N, N), physical units, i.e. what ``LocalizationEvaluation.forward`` returns for that volume), scored
exactly as ``LocalizationEvaluation.test_step`` / ``test_summary`` score the built-in models:

* per volume: ``mase`` (%), the volume's own ``r2`` and ``mae_phase0`` / ``mae_phase1``
  (``matcv.lightning_modules.localization_metrics``), on the (1, N, N, N) arrays ``test_step`` scores;
* per fold: ``mase`` and the per-phase MAE as the NaN-ignoring mean over volumes, ``r2`` pooled over every
  voxel of the fold's test volumes (``PooledRegressionStats``, updated volume by volume in the test set's
  order, as ``test_step`` does), not a mean of per-volume R².

Strain has no bounded range, so beyond the shape only the dtype (float32 or float64) and finiteness are checked.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from matcv.leaderboard.scorers import (
    FoldTruth,
    Rejected,
    Scorer,
    Truth,
    non_finite_problem,
    official_datamodules,
    predictions_by_item,
)
from matcv.lightning_modules.localization_metrics import PooledRegressionStats, mase, per_phase_mae, r2_all_voxels

METRICS = ("mase", "r2", "mae_phase0", "mae_phase1")  # the order of benchmarks/configs/localization.yaml
ACCEPTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# A float64 field is the largest accepted prediction: 8 bytes per voxel, plus room for the .npy headers and the
# item ids (a zip bomb is refused before it is read).
BYTES_PER_VOXEL = 8
SLACK_BYTES = 1 << 20


def load_truth(entry: dict, official_dir: Path) -> Truth:
    """Per fold, the test strains and microstructures as ``test_step`` scores them: (1, N, N, N) arrays of the
    same values (float32 strains; the 0/1 phases kept in their stored dtype, which ``per_phase_mae`` turns into
    the same float64 as the float32 batch), in the test set's order (the test partition is never augmented)."""
    folds, data_sha256 = official_datamodules(entry, official_dir)
    truths = []
    for official in folds:
        official.datamodule.setup("test")
        test = official.datamodule.datasets["test"]
        targets = {}
        for i, item in enumerate(test.item_ids):
            strain = np.ascontiguousarray(test.strains[i], dtype=np.float32)[None]
            phases = np.ascontiguousarray(test.microstructures[i])[None]
            targets[item] = {"strain": strain, "phases": phases}
        voxels = sum(t["strain"].size for t in targets.values())
        truths.append(FoldTruth(list(test.item_ids), targets, voxels * BYTES_PER_VOXEL + SLACK_BYTES))
    return Truth(truths, data_sha256)


def check_strain_field(prediction: np.ndarray, truth: np.ndarray) -> str | None:
    """None for an acceptable field of the truth's (N, N, N) shape, else what is wrong with it."""
    expected = truth.shape[1:]
    if prediction.shape != expected:
        return f"shape {prediction.shape}, the ground truth's is {expected} (one (N, N, N) strain field per volume)"
    if prediction.dtype not in ACCEPTED_DTYPES:
        return f"dtype {prediction.dtype} (expected a float32 or float64 strain field)"
    return non_finite_problem(prediction)


def volume_scores(predicted: np.ndarray, truth: np.ndarray, phases: np.ndarray) -> dict[str, float]:
    """One volume's row, as ``test_step`` computes it (all three arrays (1, N, N, N))."""
    return {"mase": mase(predicted, truth), "r2": r2_all_voxels(predicted, truth),
            **per_phase_mae(predicted, truth, phases)}


def nan_mean(values: list[float]) -> float:
    """``test_summary``'s fold mean: NaN values (a phase a volume lacks) are left out; NaN when all are."""
    array = np.array(values, dtype=np.float64)
    kept = array[~np.isnan(array)]
    return float(np.mean(kept)) if kept.size else math.nan


def score_fold(arrays: dict[str, np.ndarray], item_ids: list[str], truth: FoldTruth):
    predictions = predictions_by_item(arrays, item_ids)
    for item in item_ids:
        problem = check_strain_field(predictions[item], truth.targets[item]["strain"])
        if problem:
            raise Rejected(f"prediction for {item!r}: {problem}")
    rows, pooled = [], PooledRegressionStats()
    for item in truth.item_ids:  # test-set order: the pooled sums are merged in the order test_step merges them
        target = truth.targets[item]
        predicted = predictions[item][None]  # (1, N, N, N), as test_step's predicted[k]
        rows.append({"item_id": item, **volume_scores(predicted, target["strain"], target["phases"])})
        pooled.update(predicted, target["strain"])
    metrics = {"mase": nan_mean([r["mase"] for r in rows]), "r2": pooled.r2(),
               "mae_phase0": nan_mean([r["mae_phase0"] for r in rows]),
               "mae_phase1": nan_mean([r["mae_phase1"] for r in rows])}
    return metrics, rows


# No relative tolerance: the harness scores the very float32 arrays that are recorded, with the same float64
# numpy code in the same order, so the recomputed metrics equal the claimed ones to the last bit.
SCORERS = {"localization": Scorer(METRICS, load_truth, score_fold)}
