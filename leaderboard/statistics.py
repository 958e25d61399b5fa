"""The leaderboard's statistics, as pure functions on arrays and DataFrames: group means, cluster-bootstrap and
fold t-intervals, the paired Wilcoxon signed-rank test, Holm's step-down correction, "tied with the best", and
the spread of training seeds within folds beside the spread between folds.

Why groups. The photos of one panel, the crops of one micrograph, the volumes of one filter family share their
specimen: their scores move together, so counting them as independent tests inflates the evidence
(pseudo-replication, Hurlbert 1984). Grouped cross-validation already keeps a group inside one test fold; the
statistics then use one number per group (the mean of its items' scores) as the unit of observation, as the
cluster bootstrap does (Field & Welsh 2007).

Why seeds apart from folds. A fold's score mixes which groups were held out with the training run's own noise
(initialisation, data order); with several seeds per fold the two are told apart: the std between folds of
the per-fold means, and the std between seeds inside a fold (Bouthillier et al. 2021).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy.stats import permutation_test, rankdata, wilcoxon
from scipy.stats import t as student_t

CONFIDENCE = 0.95
N_RESAMPLES = 4000  # percentile limits of a 95 % interval are stable to ~0.01 sd at this many resamples
BOOTSTRAP_SEED = 20_240_418  # fixed: the same records always give the same table

EXACT_PERMUTATION_MAX_N = 13  # scipy's limit for an exact test with ties or zeros (2^13 sign patterns)

GROUP_BOOTSTRAP = "group bootstrap"
T_OVER_FOLDS = "t over folds"


def group_means(scores: pd.DataFrame, groups: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Items x columns (index = item ids) -> groups x columns: each group's mean over its items, groups sorted.

    ``groups`` maps item id -> group; an item it does not list (or ``groups`` None) is a group of its own."""
    groups = groups or {}
    labels = pd.Index([str(groups.get(item, item)) for item in scores.index], name="group")
    if scores.empty:
        return pd.DataFrame(columns=scores.columns, index=pd.Index([], name="group"), dtype=float)
    return scores.astype(float).groupby(labels, sort=True).mean()


def bootstrap_means(values: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """(n_resamples, k) means of ``values`` (n_groups, k) over groups drawn with replacement.

    An explicit resampling rather than ``scipy.stats.bootstrap``: one draw of groups serves every column, so a
    model's interval, its difference to the baseline and to the best all come from the same resamples (paired),
    and the draw is a multinomial count per group, which stays small in memory for many groups."""
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    n = values.shape[0]
    if n == 0:
        return np.full((n_resamples, values.shape[1]), math.nan)
    return _resample_counts(n, n_resamples, seed) @ values / n


@lru_cache(maxsize=4)
def _resample_counts(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """How often each of ``n`` groups is drawn in each resample (rows sum to n); cached, as a table's metrics
    share their groups, and read-only, as it is shared."""
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_resamples)
    counts.flags.writeable = False
    return counts


def percentile_interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper percentile limits per column of bootstrap ``samples`` (n_resamples, k)."""
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(samples, [tail, 1.0 - tail], axis=0)
    return low, high


def cluster_bootstrap_interval(group_values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE,
                               n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED
                               ) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Percentile interval of the mean of ``group_values`` (one value per group; a 2-D array: one column per
    quantity) with groups resampled; NaN with fewer than two groups (one group gives no spread to resample)."""
    values = np.asarray(group_values, dtype=float)
    columns = 1 if values.ndim == 1 else values.shape[1]
    if values.shape[0] < 2:
        low = high = np.full(columns, math.nan)
    else:
        low, high = percentile_interval(bootstrap_means(values, n_resamples, seed), confidence)
    return (float(low[0]), float(high[0])) if values.ndim == 1 else (low, high)


def t_interval(values: Iterable[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t interval of the mean of per-fold ``values`` (n_folds - 1 degrees of freedom), for metrics that
    exist only per fold (QWK, FID, ...); NaN values are left out, NaN with fewer than two folds."""
    array = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if array.size < 2:
        return math.nan, math.nan
    half = student_t.ppf((1.0 + confidence) / 2.0, array.size - 1) * array.std(ddof=1) / math.sqrt(array.size)
    return float(array.mean() - half), float(array.mean() + half)


def wilcoxon_p(differences: Iterable[float]) -> float:
    """Two-sided paired Wilcoxon signed-rank p-value (Wilcoxon 1945) of model - baseline differences.

    scipy drops zero differences ("wilcox"), uses the exact distribution for small samples without zeros
    or ties and the normal approximation otherwise. All differences zero = no evidence of any difference:
    p = 1 (scipy would return NaN). No differences at all: NaN.
    """
    differences = np.asarray(list(differences), dtype=float)
    if differences.size == 0:
        return math.nan
    if np.all(differences == 0):
        return 1.0
    nonzero = differences[differences != 0]
    ties_or_zeros = nonzero.size < differences.size or np.unique(np.abs(nonzero)).size < nonzero.size
    if ties_or_zeros and differences.size <= EXACT_PERMUTATION_MAX_N:
        # What scipy's "auto" does here (the exact sign-flip permutation distribution of the signed-rank sum), with
        # a vectorised statistic: scipy's own evaluates the 2^n sign patterns one by one, seconds per test at n = 13
        # and there are groups x models x metrics of them. Ranks of |d| do not change when signs flip.
        ranks = np.zeros(differences.size)
        ranks[differences != 0] = rankdata(np.abs(nonzero))
        return float(permutation_test((differences,), lambda x, axis: np.sum((x > 0) * ranks, axis=axis),
                                      permutation_type="samples", vectorized=True, n_resamples=np.inf,
                                      alternative="two-sided").pvalue)
    return float(wilcoxon(differences, alternative="two-sided").pvalue)


def holm(p_values: Iterable[float]) -> np.ndarray:
    """Holm's (1979) step-down adjustment of the p-values of k tests (NaN entries are no test and stay NaN).

    Sorted ascending, the i-th smallest (i = 1..k) is multiplied by k - i + 1; a running maximum keeps the
    adjusted values in the order of the raw ones, and 1 caps them. Rejecting where the adjusted p < alpha keeps
    the chance of any false rejection among the k at most alpha, without assuming the tests independent."""
    p = np.asarray(list(p_values), dtype=float)
    adjusted = np.full(p.shape, math.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    k = len(order)
    running = 0.0
    for i, index in enumerate(order):
        running = max(running, min(1.0, (k - i) * p[index]))
        adjusted[index] = running
    return adjusted


def tied_with_best(boot: np.ndarray, point: np.ndarray, higher_is_better: bool = True,
                   confidence: float = CONFIDENCE) -> tuple[int | None, np.ndarray]:
    """(index of the best column by ``point``, per column: is it the best or does the interval of its difference
    to the best include 0?). ``boot`` (n_resamples, k) are resampled means from ``bootstrap_means``, so the
    differences are paired; without finite estimates no column is best and none tied."""
    point = np.asarray(point, dtype=float)
    tied = np.zeros(point.shape, dtype=bool)
    finite = np.flatnonzero(np.isfinite(point))
    if finite.size == 0:
        return None, tied
    best = int(finite[np.argmax(point[finite])] if higher_is_better else finite[np.argmin(point[finite])])
    low, high = percentile_interval(boot - boot[:, [best]], confidence)
    tied[finite] = (low[finite] <= 0.0) & (high[finite] >= 0.0)
    tied[best] = True
    return best, tied


@dataclass(frozen=True)
class SeedSpread:
    """One model's metric over its runs: ``fold_values`` (per fold, the mean over that fold's seeds), their
    mean and sample std (between folds), ``seed_std`` (the std across seeds inside a fold, averaged over the
    folds with at least two finite seeds; NaN with one seed) and ``n_seeds`` (seeds per fold, min over folds)."""

    fold_values: list[float]
    mean: float
    std: float
    seed_std: float
    n_seeds: int


def seed_spread(values_by_fold: Sequence[Sequence[float]]) -> SeedSpread:
    """The between-fold and within-fold (seed) spread of one metric; ``values_by_fold``: per fold, the metric of
    each seed (replicate) run on it. A fold whose seeds all lack the metric is NaN, and so is then the mean."""
    fold_values, seed_stds = [], []
    for values in values_by_fold:
        array = np.asarray([math.nan if v is None else v for v in values], dtype=float)
        finite = array[~np.isnan(array)]
        fold_values.append(float(finite.mean()) if finite.size else math.nan)
        if finite.size > 1:
            seed_stds.append(float(finite.std(ddof=1)))
    folds = np.asarray(fold_values, dtype=float)
    mean = float(folds.mean()) if folds.size else math.nan
    std = float(folds.std(ddof=1)) if folds.size > 1 else math.nan
    return SeedSpread(fold_values, mean, std, float(np.mean(seed_stds)) if seed_stds else math.nan,
                      min((len(values) for values in values_by_fold), default=0))
