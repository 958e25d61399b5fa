"""Scores of a predicted local strain field against the true one (3-D localization task; Tran, Rodgers & Wildey 2020, §4).

* ``mase`` — Yang et al. 2019 (Acta Mater. 166, 335): mean over the voxels of one volume of |ε̂ − ε|,
  divided by that volume's mean true strain, in percent. The task's headline number is the mean of it
  over test volumes (their code: ``mean(mase) * 100``).
* ``r2_all_voxels`` — coefficient of determination 1 − SS_res / SS_tot over *all* voxels pooled. It
  penalises bias and scale errors, so it is the stricter number.
* ``squared_pearson_r2`` — the Sandia report's R² (Tran et al. 2020, §4.5, eq. 1): the squared Pearson correlation.
  It is blind to any affine error (a prediction 2ε̂ + 5 scores the same), which is why it is named apart.
  The report estimated it on a Monte-Carlo subsample; here it is exact over all voxels.
* ``per_phase_mae`` — MAE inside each phase: high-contrast errors concentrate in the compliant matrix
  near stiff inclusions, which a single number hides.

``PooledRegressionStats`` accumulates what both R² need over many test batches (Chan et al.'s pairwise
merge of centred sums, in float64), so a fold's pooled R² needs no copy of all its voxels.
All functions take numpy arrays or torch tensors.
"""

from __future__ import annotations

import math

import numpy as np


def as_float64(values) -> np.ndarray:
    """numpy float64 view of an array or a (possibly CUDA, possibly grad-tracking) tensor."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def mase(pred, true) -> float:
    """MASE (%) of one volume: mean |ε̂ − ε| / mean(ε) × 100 (the whole array is the volume)."""
    pred, true = as_float64(pred), as_float64(true)
    if pred.shape != true.shape:
        raise ValueError(f"prediction {pred.shape} and truth {true.shape} differ in shape")
    return float(np.abs(pred - true).mean() / true.mean() * 100.0)


def per_volume_mase(pred, true) -> np.ndarray:
    """(B,) MASE (%) of each volume of a batch; every axis after the first belongs to the volume."""
    pred, true = as_float64(pred), as_float64(true)
    if pred.shape != true.shape:
        raise ValueError(f"prediction {pred.shape} and truth {true.shape} differ in shape")
    axes = tuple(range(1, pred.ndim))
    return np.abs(pred - true).mean(axis=axes) / true.mean(axis=axes) * 100.0


class PooledRegressionStats:
    """Running sums for pooled R² (coefficient of determination) and squared Pearson r over any number of
    ``update(pred, true)`` calls; each batch is centred on its own means and merged exactly (Chan et al.),
    which keeps float64 accurate over 10^8 voxels."""

    def __init__(self) -> None:
        self.count = 0
        self.mean_true = 0.0
        self.mean_pred = 0.0
        self.sum_sq_true = 0.0  # Σ (ε − mean ε)²  = SS_tot
        self.sum_sq_pred = 0.0
        self.sum_cross = 0.0  # Σ (ε − mean ε)(ε̂ − mean ε̂)
        self.sum_sq_error = 0.0  # Σ (ε̂ − ε)²  = SS_res

    def update(self, pred, true) -> None:
        pred, true = as_float64(pred).ravel(), as_float64(true).ravel()
        if pred.shape != true.shape:
            raise ValueError(f"prediction {pred.shape} and truth {true.shape} differ in size")
        n = pred.size
        if n == 0:
            return
        batch_mean_true, batch_mean_pred = true.mean(), pred.mean()
        centred_true, centred_pred = true - batch_mean_true, pred - batch_mean_pred
        delta_true, delta_pred = batch_mean_true - self.mean_true, batch_mean_pred - self.mean_pred
        total = self.count + n
        weight = self.count * n / total
        self.sum_sq_true += centred_true @ centred_true + delta_true * delta_true * weight
        self.sum_sq_pred += centred_pred @ centred_pred + delta_pred * delta_pred * weight
        self.sum_cross += centred_true @ centred_pred + delta_true * delta_pred * weight
        self.sum_sq_error += float(np.square(pred - true).sum())
        self.mean_true += delta_true * n / total
        self.mean_pred += delta_pred * n / total
        self.count = total

    def r2(self) -> float:
        """1 − SS_res / SS_tot (NaN for a constant truth)."""
        return 1.0 - self.sum_sq_error / self.sum_sq_true if self.sum_sq_true > 0 else math.nan

    def squared_pearson(self) -> float:
        """r² of Pearson's correlation (NaN when either side is constant)."""
        denominator = self.sum_sq_true * self.sum_sq_pred
        return self.sum_cross ** 2 / denominator if denominator > 0 else math.nan


def r2_all_voxels(pred, true) -> float:
    """Coefficient of determination 1 − SS_res / SS_tot over all voxels of all volumes given, pooled."""
    stats = PooledRegressionStats()
    stats.update(pred, true)
    return stats.r2()


def squared_pearson_r2(pred, true) -> float:
    """The Sandia report's "R²": squared Pearson correlation over all voxels given (affine-invariant)."""
    stats = PooledRegressionStats()
    stats.update(pred, true)
    return stats.squared_pearson()


def per_phase_mae(pred, true, phases) -> dict[str, float]:
    """Mean |ε̂ − ε| over the voxels of phase 0 and of phase 1; NaN for a phase the volume lacks."""
    pred, true = as_float64(pred), as_float64(true)
    phases = as_float64(phases)
    if not pred.shape == true.shape == phases.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape}, truth {true.shape}, phases {phases.shape}")
    error = np.abs(pred - true)
    scores = {}
    for phase in (0, 1):
        inside = phases == phase
        scores[f"mae_phase{phase}"] = float(error[inside].mean()) if inside.any() else math.nan
    return scores
