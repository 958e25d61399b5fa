"""Per-image comparison of models against a baseline: mean rank, increase, W-Inc, Wilcoxon p, difficulty slices.

Fold means hide how models differ image by image. In K-fold cross-validation every item is tested exactly
once per model, so the per-item scores of all models run on one fold manifest and one data version pair up
by ``item_id`` (dissertation "DeepSC-Edge", Table 4; runs on other data were scored against another ground
truth and are never paired):

- rank: on each image the models are ranked by score (1 = best, ties share the average rank), then a
  model's ranks are averaged over the images;
- increase: mean over images of (model score - baseline score);
- W-Inc: the increase weighted per image by the baseline's rank there, so images the baseline finds hard
  (large rank number) count more: sum_i r_i^base (s_i - s_i^base) / sum_i r_i^base;
- Wilcoxon p: two-sided paired signed-rank test of model vs baseline on the same images, so that a
  0.001 Dice "win" is not mistaken for one.

Difficulty slices average a metric over the items carrying a flag (thin corrosion, under coating, water
stain, ...) and average per-item values (false positives on stains, rating from the mask) where they
were measurable. Only items scored by every compared model count everywhere, so all numbers in one table
are on the same images. Pure functions on record dicts; ``matcv.leaderboard.build`` renders them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import rankdata, wilcoxon


from matcv.datamodules.core.records import OK, RESULT_KEYS, record_problem


# A benchmark's identity for the tables: (fold manifest sha256, data sha256). Runs on other folds are not
# comparable, and neither are runs on another version of the data (their scores are against other ground truth).
BenchmarkId = tuple[str, str]


def benchmark_of(record: dict) -> BenchmarkId:
    return record.get("fold_manifest_sha256"), record.get("data_sha256")


@dataclass
class RunSelection:
    """The runs a leaderboard is built from: latest successful record per (model, fold) on one benchmark
    (one fold manifest and one data version)."""

    fold_manifest_sha256: str | None
    runs: dict[tuple[str, int], dict] = field(default_factory=dict)  # (model, fold) -> record, first-seen order
    data_sha256: str | None = None

    @property
    def benchmark(self) -> BenchmarkId | None:
        return None if self.fold_manifest_sha256 is None else (self.fold_manifest_sha256, self.data_sha256)

    def models(self) -> list[str]:
        return list(dict.fromkeys(model for model, _ in self.runs))

    def runs_of(self, model: str) -> list[dict]:
        return sorted((r for (m, _), r in self.runs.items() if m == model), key=lambda r: r["fold"])


def usable_records(records: list[dict]) -> list[dict]:
    """The records a table can read; any other is left out with a warning (records loaded with
    ``RunRecords.load(TABLE_KEYS)`` were checked already, naming their line)."""
    usable = []
    for record in records:
        problem = record_problem(record, RESULT_KEYS)
        if problem is None:
            usable.append(record)
        else:
            name = record.get("key", "without a key") if isinstance(record, dict) else "?"
            warnings.warn(f"leaving out run record {name}: {problem}", stacklevel=3)
    return usable


def select_latest_runs(records: list[dict], benchmark: BenchmarkId | None = None) -> RunSelection:
    """Results on different folds or data are not comparable: keep ``benchmark`` (by default the fold manifest
    and data of the latest successful run), and of each (model, fold) on it the latest successful record (a
    re-run supersedes an older one)."""
    ok = [r for r in usable_records(records) if r["status"] == OK]
    if benchmark is None:
        if not ok:
            return RunSelection(None)
        benchmark = benchmark_of(ok[-1])
    runs: dict[tuple[str, int], dict] = {}
    for record in ok:
        if benchmark_of(record) == benchmark:
            runs[(record["model"], record["fold"])] = record
    return RunSelection(benchmark[0], runs, benchmark[1])


def per_item_records(records: list[dict]) -> dict[str, dict[str, dict]]:
    """model -> item_id -> that item's per-image record, over the selected runs' test folds (one benchmark:
    scores computed against different ground truths are never paired)."""
    selection = select_latest_runs(records)
    by_model: dict[str, dict[str, dict]] = {}
    for model in selection.models():
        items: dict[str, dict] = {}
        for run in selection.runs_of(model):
            for item in run.get("per_image") or []:
                if item["item_id"] in items:  # folds that overlap would pair an image with itself
                    raise ValueError(f"{model}: item {item['item_id']!r} is tested in more than one fold of "
                                     f"manifest {selection.fold_manifest_sha256[:12]}; the folds are not a partition")
                items[item["item_id"]] = item
        by_model[model] = items
    return by_model


def _number(value) -> float:
    """A per-item value as a float; None (not measurable) and NaN both become NaN."""
    if value is None:
        return math.nan
    return float(value)


def _paired_scores(by_model: dict[str, dict[str, dict]], metric: str) -> pd.DataFrame:
    columns = {model: {item_id: _number(item.get(metric)) for item_id, item in items.items()}
               for model, items in by_model.items()}
    # A model without any score for the metric (e.g. records from before per-image scores were kept)
    # is left out rather than emptying the comparison for everyone.
    columns = {model: scores for model, scores in columns.items() if any(not math.isnan(v) for v in scores.values())}
    if not columns:
        return pd.DataFrame(index=pd.Index([], name="item_id"))
    table = pd.DataFrame(columns)
    table.index.name = "item_id"
    return table.dropna(how="any")  # only items every compared model scored are paired


def paired_item_scores(records: list[dict], metric: str) -> pd.DataFrame:
    """Items x models table of ``metric`` on the selected runs, only items scored by every compared model.

    Models with no per-item score for ``metric`` at all are not columns; an item a model did not score
    (its fold failed or is still missing) is dropped for all models, so every row is a fair pairing.
    """
    return _paired_scores(per_item_records(records), metric)


def item_ranks(scores: pd.DataFrame, higher_is_better: bool = True) -> pd.DataFrame:
    """Per-image rank of each model (1 = best; tied models share the average of their places)."""
    if scores.empty:
        return scores.copy()
    values = scores.to_numpy(float)
    ranks = rankdata(-values if higher_is_better else values, method="average", axis=1)
    return pd.DataFrame(ranks, index=scores.index, columns=scores.columns)


def rank_shares(scores: pd.DataFrame, higher_is_better: bool = True) -> pd.DataFrame:
    """Models x places: the share of images on which a model took each place (1 = best).

    A tie splits evenly over the places the tied models occupy (two models tied for first get half of
    place 1 and half of place 2 each), so sum(place * share) equals the mean rank.
    """
    n_models = scores.shape[1]
    shares = pd.DataFrame(0.0, index=scores.columns, columns=range(1, n_models + 1))
    if scores.empty:
        return shares
    values = scores.to_numpy(float)
    values = values if higher_is_better else -values
    for row in values:
        for column, score in enumerate(row):
            better, tied = int((row > score).sum()), int((row == score).sum())
            for place in range(better + 1, better + tied + 1):
                shares.iloc[column, place - 1] += 1.0 / tied
    return shares / len(values)


def wilcoxon_p(differences: Iterable[float]) -> float:
    """Two-sided paired Wilcoxon signed-rank p-value of model - baseline differences.

    scipy drops zero differences ("wilcox"), uses the exact distribution for small samples without zeros
    or ties and the normal approximation otherwise. All differences zero = no evidence of any difference:
    p = 1 (scipy would return NaN). No items at all: NaN.
    """
    differences = np.asarray(list(differences), dtype=float)
    if differences.size == 0:
        return math.nan
    if np.all(differences == 0):
        return 1.0
    return float(wilcoxon(differences, alternative="two-sided").pvalue)


def compare_to_baseline(scores: pd.DataFrame, baseline: str | None, higher_is_better: bool = True) -> pd.DataFrame:
    """One row per model (index ``model``): mean per-image ``rank`` and ``n_items`` always; ``increase``,
    ``w_inc`` and ``wilcoxon_p`` vs ``baseline`` only when the baseline is a column of ``scores``.

    ``increase`` and ``w_inc`` are raw differences model - baseline (positive = higher score), whatever
    the metric's direction; ranks follow ``higher_is_better``. The baseline's own p is NaN.
    """
    ranks = item_ranks(scores, higher_is_better)
    result = pd.DataFrame({"rank": ranks.mean(axis=0), "n_items": len(scores)},
                          index=pd.Index(scores.columns, name="model"))
    if baseline is None or baseline not in scores.columns:
        return result
    base_scores, base_ranks = scores[baseline], ranks[baseline]
    increase, w_inc, p = {}, {}, {}
    for model in scores.columns:
        difference = scores[model] - base_scores
        increase[model] = float(difference.mean()) if len(difference) else math.nan
        w_inc[model] = float((base_ranks * difference).sum() / base_ranks.sum()) if len(difference) else math.nan
        p[model] = math.nan if model == baseline else wilcoxon_p(difference)
    return result.assign(increase=pd.Series(increase), w_inc=pd.Series(w_inc), wilcoxon_p=pd.Series(p))


def difficulty_slices(records: list[dict], metric: str, flags: Iterable[str],
                      item_values: Iterable[str] = ()) -> pd.DataFrame:
    """One row per compared model: ``metric`` on all paired items and on the items where each flag is true,
    and the mean of each per-item value where it was measurable (not None/NaN).

    Columns: ``model``, ``n_items``, ``{metric}_all``, then per flag ``{metric}_{flag}`` and ``n_{flag}``
    (items carrying it; the same for every model), then per value ``{value}`` and ``n_{value}`` (items where
    this model's value was measurable, which may differ between models: e.g. no rating from an empty mask).
    Items are the paired ones of ``paired_item_scores``; a flag is a property of the item, true if any
    model's record of it says so (missing or None = false). ``item_values`` may be a dict (name -> label).
    """
    by_model = per_item_records(records)
    scores = _paired_scores(by_model, metric)
    flags, item_values = list(flags), list(item_values)
    items = list(scores.index)
    flagged = {flag: [item for item in items if any(bool(by_model[m][item].get(flag)) for m in scores.columns)]
               for flag in flags}
    columns = ["model", "n_items", f"{metric}_all"] + [c for flag in flags for c in (f"{metric}_{flag}", f"n_{flag}")]
    columns += [c for name in item_values for c in (name, f"n_{name}")]
    rows = []
    for model in scores.columns:
        row = {"model": model, "n_items": len(items), f"{metric}_all": _mean(scores[model])}
        for flag in flags:
            row[f"{metric}_{flag}"] = _mean(scores.loc[flagged[flag], model])
            row[f"n_{flag}"] = len(flagged[flag])
        for name in item_values:
            values = np.array([_number(by_model[model][item].get(name)) for item in items], dtype=float)
            measured = values[~np.isnan(values)]
            row[name] = float(measured.mean()) if measured.size else math.nan
            row[f"n_{name}"] = int(measured.size)
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def _mean(values: pd.Series) -> float:
    return float(values.mean()) if len(values) else math.nan


def format_p(p: float) -> str:
    """0.0312 -> "0.031", below 0.001 -> "<0.001", NaN (the baseline itself) -> "–"."""
    if p is None or math.isnan(p):
        return "–"
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}"
