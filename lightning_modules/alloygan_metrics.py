"""AlloyGAN domain-science metrics over a SET of images (generated or real; Yin 2024, §5.6.5 / §5.7).

Inputs are per-image measurements already taken (by ``matcv.datamodules.measurements.alloy_measure``, which this module does
not import): ``si_area_fraction``, ``lambda2_px`` (secondary dendrite arm spacing, may be NaN),
``particle_count_per_10k_px``, ``mean_particle_area_px``. The three metrics:

1. ``si_trend``: the Si area fraction must rise with Si wt% (Spearman ρ, least-squares slope, and the MAE
   against ground-truth fractions when known).
2. ``arm_spacing_fit``: eq. (11) λ2 = k·CR^(−n), n > 0, fitted on log λ2 = log k − n·log CR; the reported
   R² is that of the LINEAR relation λ2 vs CR^(−n) (the seed: "a strong linear relationship between
   (CR)^(−n) and λ"), i.e. ordinary least squares of λ2 on CR^(−n) with intercept, R² = Pearson r².
3. ``modification_effect``: Sr/P should give more, smaller dark particles — log2 ratios modified /
   unmodified of the particle count and the mean particle size, at equal alloy and cooling rate.

``domain_metrics`` runs the three on a table; ``alloy_wise`` aggregates a per-alloy score as Table 8's
"alloy-wise" mean ± std.

Every function drops non-finite inputs pair-wise and returns NaN (never raises) when a quantity is
undefined for the data given.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "MEASUREMENT_COLUMNS",
    "TABLE_COLUMNS",
    "alloy_wise",
    "arm_spacing_fit",
    "domain_metrics",
    "modification_effect",
    "si_trend",
]

NAN = float("nan")
MEASUREMENT_COLUMNS = ("si_area_fraction", "lambda2_px", "particle_count_per_10k_px", "mean_particle_area_px")
TABLE_COLUMNS = ("alloy", "Si", "cooling_rate", "modified") + MEASUREMENT_COLUMNS


def _as_float(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        array = array.reshape(-1)
    return array


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs must have the same length, got {lengths}")


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line y = slope·x + intercept; x must have ≥ 2 distinct
    values."""
    x_mean, y_mean = x.mean(), y.mean()
    dx = x - x_mean
    slope = float(np.dot(dx, y - y_mean) / np.dot(dx, dx))
    return slope, float(y_mean - slope * x_mean)


def si_trend(si_wt, si_area_fraction, expected=None) -> dict[str, float]:
    """Trend of the measured Si area fraction with Si wt%.

    Returns ``si_spearman`` (Spearman ρ, NaN with < 2 distinct Si values or a constant fraction; two distinct
    values happen in leave-alloy-out folds, e.g. A360 and A332 share 9.5 wt%, and ρ then still says whether the
    fraction rises with Si),
    ``si_slope`` (least-squares slope of fraction vs wt%, NaN with < 2 distinct Si values) and
    ``si_fraction_mae`` (mean |measured − expected| over finite pairs; NaN if ``expected`` is None).
    """
    si, fraction = _as_float(si_wt, "si_wt"), _as_float(si_area_fraction, "si_area_fraction")
    _same_length(si_wt=si, si_area_fraction=fraction)
    keep = np.isfinite(si) & np.isfinite(fraction)
    si_k, fr_k = si[keep], fraction[keep]

    spearman = NAN
    if len(np.unique(si_k)) >= 2 and len(np.unique(fr_k)) >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spearman = float(stats.spearmanr(si_k, fr_k).statistic)
    slope = _ols(si_k, fr_k)[0] if len(np.unique(si_k)) >= 2 else NAN

    mae = NAN
    if expected is not None:
        exp = _as_float(expected, "expected")
        _same_length(si_area_fraction=fraction, expected=exp)
        both = np.isfinite(fraction) & np.isfinite(exp)
        if both.any():
            mae = float(np.mean(np.abs(fraction[both] - exp[both])))
    return {"si_spearman": spearman, "si_slope": slope, "si_fraction_mae": mae}


def arm_spacing_fit(cooling_rate, lambda2) -> dict[str, float]:
    """Fit eq. (11) λ2 = k·CR^(−n) and score its linearity.

    Uses the pairs with finite, positive CR and λ2. n and k come from least squares on
    log λ2 = log k − n·log CR (n is reported with its sign: n < 0 means λ2 grows with the cooling rate,
    physically wrong). ``lambda2_r2`` is the R² of the least-squares line (with intercept) λ2 vs CR^(−n) at
    the fitted n, i.e. the squared Pearson correlation of λ2 and CR^(−n); with exactly two distinct rates
    any data lie on a line through the two group means, so R² then only measures the within-rate scatter.
    All three are NaN with < 2 distinct rates; R² is NaN when λ2 or CR^(−n) is constant (n = 0).
    """
    rate, lam = _as_float(cooling_rate, "cooling_rate"), _as_float(lambda2, "lambda2")
    _same_length(cooling_rate=rate, lambda2=lam)
    keep = np.isfinite(rate) & np.isfinite(lam) & (rate > 0) & (lam > 0)
    rate, lam = rate[keep], lam[keep]
    result = {"lambda2_n": NAN, "lambda2_k": NAN, "lambda2_r2": NAN}
    if len(np.unique(rate)) < 2:
        return result
    slope, intercept = _ols(np.log(rate), np.log(lam))
    n, k = -slope, math.exp(intercept)
    x = rate ** (-n)
    r2 = NAN
    if np.ptp(x) > 0 and np.ptp(lam) > 0:
        r = float(np.corrcoef(x, lam)[0, 1])
        r2 = min(r * r, 1.0)
    result.update(lambda2_n=float(n), lambda2_k=float(k), lambda2_r2=r2)
    return result


def modification_effect(alloy, cooling_rate, modified, count, size) -> dict[str, float]:
    """Sr/P modification effect at equal (alloy, cooling rate).

    For every (alloy, cooling rate) present both modified and unmodified, the per-group means (over
    images, ignoring NaN) give log2(count_mod / count_unmod) and log2(size_mod / size_unmod); each is
    averaged over the pairs where both means are finite and > 0. Returns ``srp_count_log2_ratio``,
    ``srp_size_log2_ratio`` (expected > 0 and < 0 respectively) and ``srp_pairs`` (number of pairs present
    with both states, as a float); the ratios are NaN when no usable pair exists.
    """
    frame = pd.DataFrame({"alloy": np.asarray(alloy, dtype=object).reshape(-1),
                          "cooling_rate": _as_float(cooling_rate, "cooling_rate"),
                          "modified": _as_float(modified, "modified"),
                          "count": _as_float(count, "count"), "size": _as_float(size, "size")})
    frame = frame[np.isfinite(frame["cooling_rate"]) & np.isfinite(frame["modified"])]
    frame = frame.assign(modified=frame["modified"] != 0)
    means = frame.groupby(["alloy", "cooling_rate", "modified"])[["count", "size"]].mean()  # skips NaN
    count_ratios, size_ratios, pairs = [], [], 0
    for (_, _), group in means.groupby(level=["alloy", "cooling_rate"]):
        states = group.index.get_level_values("modified")
        if not (states.any() and (~states).any()):
            continue
        pairs += 1
        mod, unmod = group[states].iloc[0], group[~states].iloc[0]
        for name, out in (("count", count_ratios), ("size", size_ratios)):
            a, b = float(mod[name]), float(unmod[name])
            if math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0:
                out.append(math.log2(a / b))
    return {"srp_count_log2_ratio": float(np.mean(count_ratios)) if count_ratios else NAN,
            "srp_size_log2_ratio": float(np.mean(size_ratios)) if size_ratios else NAN,
            "srp_pairs": float(pairs)}


def domain_metrics(table: pd.DataFrame) -> dict[str, float]:
    """The union of ``si_trend``, ``arm_spacing_fit`` and ``modification_effect`` on a per-image table with
    columns ``TABLE_COLUMNS`` (and optionally ``si_area_fraction_expected``)."""
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise KeyError(f"domain_metrics table lacks columns {missing}; needs {list(TABLE_COLUMNS)}")
    expected = table["si_area_fraction_expected"] if "si_area_fraction_expected" in table.columns else None
    out: dict[str, float] = {}
    out.update(si_trend(table["Si"], table["si_area_fraction"], expected))
    out.update(arm_spacing_fit(table["cooling_rate"], table["lambda2_px"]))
    out.update(modification_effect(table["alloy"], table["cooling_rate"], table["modified"],
                                   table["particle_count_per_10k_px"], table["mean_particle_area_px"]))
    return out


def alloy_wise(values: Mapping[str, float]) -> tuple[float, float]:
    """Table 8's "alloy-wise" aggregate of a per-alloy score {alloy: value}: (mean, sample std, ddof = 1).
    The std is NaN for a single alloy; both are NaN for none. A NaN value propagates (it is not silently
    dropped: a missing alloy should be visible)."""
    array = np.asarray(list(values.values()), dtype=np.float64)
    if array.size == 0:
        return NAN, NAN
    mean = float(array.mean())
    std = float(array.std(ddof=1)) if array.size > 1 else NAN
    return mean, std
