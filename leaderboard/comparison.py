"""Per-image comparison of models against a baseline, at the level of groups: rank, difference, W-Inc, Wilcoxon p
with Holm's correction, bootstrap intervals, "tied with the best", difficulty slices.

Fold means hide how models differ image by image. In K-fold cross-validation every item is tested exactly
once per model (per seed), so the per-item scores of all models run on one fold manifest and one data version
pair up by ``item_id`` (dissertation "DeepSC-Edge", Table 4; runs on other data were scored against another
ground truth and are never paired). A model run with several seeds (``replicate``) scores an item once per
seed: its item score is the mean over them.

Items of one group (the photos of a panel, the crops of a micrograph) are not independent tests, so the
statistics are computed over groups (``matcv.leaderboard.statistics``): an item's group is its per-image
record's ``group``, else the fold manifest's ``groups`` map (the file the records name, else the benchmark
folder's own ``fold_manifest.json``, either only if its sha256 is the records' one), else the item itself.
Per-item scores are averaged within each group, then:

- rank (per item, kept as it was): on each image the models are ranked by score (1 = best, ties share the
  average rank), then a model's ranks are averaged over the images;
- group score: mean over groups of the group means, with a 95 % cluster-bootstrap interval (groups resampled);
- diff: mean over groups of (model - baseline), with its paired bootstrap interval;
- W-Inc: the difference weighted per group by the baseline's rank there, so groups the baseline finds hard
  (large rank number) count more: sum_g r_g^base (s_g - s_g^base) / sum_g r_g^base;
- p: two-sided paired Wilcoxon signed-rank test of model vs baseline over the groups, and ``p_holm`` the same
  Holm-corrected over the k models compared with the baseline; ``item_p`` is the test over items (secondary:
  it treats the items of a group as independent, so it overstates the evidence);
- tied with the best: the bootstrap interval of (model - best model) includes 0.

Difficulty slices average a metric over the items carrying a flag (thin corrosion, under coating, water
stain, ...) and average per-item values (false positives on stains, rating from the mask) where they
were measurable. Only items scored by every compared model count everywhere, so all numbers in one table
are on the same images. Pure functions on record dicts; ``matcv.leaderboard.build`` renders them.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from matcv.datamodules.core.atomic_io import sha256_bytes
from matcv.datamodules.core.records import OK, RESULT_KEYS, record_problem
from matcv.leaderboard.statistics import (
    bootstrap_means,
    group_means,
    holm,
    percentile_interval,
    tied_with_best,
    wilcoxon_p,
)

__all__ = ["BenchmarkId", "ItemGroups", "RunSelection", "benchmark_of", "compare_to_baseline", "difficulty_slices",
           "format_p", "item_groups", "item_ranks", "paired_item_scores", "per_item_records", "rank_shares",
           "replicate_of", "scores_of", "select_latest_runs", "usable_records", "wilcoxon_p"]


# A benchmark's identity for the tables: (fold manifest sha256, data sha256). Runs on other folds are not
# comparable, and neither are runs on another version of the data (their scores are against other ground truth).
BenchmarkId = tuple[str, str]
RunKey = tuple[str, int, int]  # (model, fold, replicate)


def benchmark_of(record: dict) -> BenchmarkId:
    return record.get("fold_manifest_sha256"), record.get("data_sha256")


def replicate_of(record: dict) -> int:
    """Which of a model x fold's seeded repeats ``record`` is (0 for records written before repeats existed)."""
    return record.get("replicate", 0)


@dataclass
class RunSelection:
    """The runs a leaderboard is built from: latest successful record per (model, fold, replicate) on one
    benchmark (one fold manifest and one data version)."""

    fold_manifest_sha256: str | None
    runs: dict[RunKey, dict] = field(default_factory=dict)  # (model, fold, replicate) -> record, first-seen order
    data_sha256: str | None = None

    @property
    def benchmark(self) -> BenchmarkId | None:
        return None if self.fold_manifest_sha256 is None else (self.fold_manifest_sha256, self.data_sha256)

    def models(self) -> list[str]:
        return list(dict.fromkeys(model for model, _, _ in self.runs))

    def runs_of(self, model: str) -> list[dict]:
        """All of ``model``'s runs, by fold then replicate."""
        return sorted((r for (m, _, _), r in self.runs.items() if m == model),
                      key=lambda r: (r["fold"], replicate_of(r)))

    def folds_of(self, model: str) -> dict[int, list[dict]]:
        """fold -> ``model``'s runs on it (one per replicate), folds ascending."""
        folds: dict[int, list[dict]] = {}
        for run in self.runs_of(model):
            folds.setdefault(run["fold"], []).append(run)
        return folds


def _replicate_problem(record: dict) -> str | None:
    value = record.get("replicate", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return f"'replicate' must be an integer >= 0, got {value!r}"
    return None


def usable_records(records: list[dict]) -> list[dict]:
    """The records a table can read; any other is left out with a warning (records loaded with
    ``RunRecords.load(TABLE_KEYS)`` were checked already, naming their line)."""
    usable = []
    for record in records:
        problem = record_problem(record, RESULT_KEYS)
        if problem is None:
            problem = _replicate_problem(record)
        if problem is None:
            usable.append(record)
        else:
            name = record.get("key", "without a key") if isinstance(record, dict) else "?"
            warnings.warn(f"leaving out run record {name}: {problem}", stacklevel=3)
    return usable


def select_latest_runs(records: list[dict], benchmark: BenchmarkId | None = None) -> RunSelection:
    """Results on different folds or data are not comparable: keep ``benchmark`` (by default the fold manifest
    and data of the latest successful run), and of each (model, fold, replicate) on it the latest successful
    record (a re-run supersedes an older one; the seeds of a model x fold are all kept)."""
    ok = [r for r in usable_records(records) if r["status"] == OK]
    if benchmark is None:
        if not ok:
            return RunSelection(None)
        benchmark = benchmark_of(ok[-1])
    runs: dict[RunKey, dict] = {}
    for record in ok:
        if benchmark_of(record) == benchmark:
            runs[(record["model"], record["fold"], replicate_of(record))] = record
    return RunSelection(benchmark[0], runs, benchmark[1])


def _per_item_replicates(selection: RunSelection) -> dict[str, dict[str, list[dict]]]:
    """model -> item_id -> that item's per-image records, one per replicate of the fold that tested it."""
    by_model: dict[str, dict[str, list[dict]]] = {}
    for model in selection.models():
        items: dict[str, list[dict]] = {}
        fold_of: dict[str, int] = {}
        for run in selection.runs_of(model):
            seen = set()
            for item in run.get("per_image") or []:
                item_id = item["item_id"]
                first_fold = fold_of.setdefault(item_id, run["fold"])
                if first_fold != run["fold"] or item_id in seen:  # an image paired with itself
                    where = (f"folds {first_fold} and {run['fold']}" if first_fold != run["fold"]
                             else f"run {run.get('key', '?')} twice")
                    raise ValueError(f"{model}: item {item_id!r} is tested in {where} of manifest "
                                     f"{selection.fold_manifest_sha256[:12]}; the folds are not a partition")
                seen.add(item_id)
                items.setdefault(item_id, []).append(item)
        by_model[model] = items
    return by_model


def _merge_replicates(entries: list[dict]) -> dict:
    """One item's per-image records of several seeds as one: numbers averaged where measurable (None/NaN
    left out), flags true if any seed's record says so, anything else (ids, group) from the first."""
    if len(entries) == 1:
        return entries[0]
    merged = {}
    for key in dict.fromkeys(k for entry in entries for k in entry):
        present = [entry[key] for entry in entries if entry.get(key) is not None]
        if not present:
            merged[key] = None
        elif all(isinstance(v, bool) for v in present):
            merged[key] = any(present)
        elif all(isinstance(v, (int, float)) for v in present):
            finite = [float(v) for v in present if not math.isnan(float(v))]
            merged[key] = sum(finite) / len(finite) if finite else math.nan
        else:
            merged[key] = present[0]
    return merged


def per_item_records(records: list[dict], selection: RunSelection | None = None) -> dict[str, dict[str, dict]]:
    """model -> item_id -> that item's per-image record, over the selected runs' test folds (one benchmark:
    scores computed against different ground truths are never paired); an item tested by several seeds of
    its fold gets the mean of their values (``_merge_replicates``)."""
    selection = selection or select_latest_runs(records)
    return {model: {item_id: _merge_replicates(entries) for item_id, entries in items.items()}
            for model, items in _per_item_replicates(selection).items()}


@dataclass(frozen=True)
class ItemGroups:
    """item_id -> group for the statistics, where the groups came from, and how many items had none."""

    groups: dict[str, str]
    source: str  # "per-image records", "fold manifest <path>", or a mix of these
    n_unknown: int = 0  # items of no known group, each treated as a group of its own

    @property
    def note(self) -> str:
        """How the table says where its groups came from."""
        if not self.groups:
            return "no per-image scores"
        if self.n_unknown and self.n_unknown == len(self.groups):
            return "groups unknown: items treated as groups"
        known = f"groups from the {self.source}"
        return known + (f"; groups unknown for {self.n_unknown} of {len(self.groups)} items: each treated as a "
                        f"group of its own" if self.n_unknown else "")


def _manifest_groups(selection: RunSelection, folder: str | Path | None) -> tuple[dict[str, str], str] | None:
    """The ``groups`` map of the fold manifest the selected runs used: the file their records name, else the
    benchmark folder's own ``fold_manifest.json``, either only if its sha256 is theirs (an edited or replaced
    manifest may group the items differently)."""
    candidates = [Path(r["fold_manifest"]) for r in selection.runs.values() if r.get("fold_manifest")]
    if folder is not None:
        candidates.append(Path(folder) / "fold_manifest.json")
    for path in dict.fromkeys(candidates):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if sha256_bytes(data) != selection.fold_manifest_sha256:
            continue
        try:
            groups = json.loads(data)["groups"]
            return {str(item): str(group) for item, group in groups.items()}, f"fold manifest `{path}`"
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            warnings.warn(f"{path}: no item -> group map under 'groups' ({type(error).__name__}: {error}); "
                          f"groups not read from it", stacklevel=3)
    return None


def item_groups(records: list[dict], folder: str | Path | None = None,
                selection: RunSelection | None = None) -> ItemGroups:
    """The group of every item the selected runs tested: its per-image ``group``, else the fold manifest's
    (``_manifest_groups``; ``folder``: the benchmark folder holding ``records.jsonl``), else the item itself."""
    selection = selection or select_latest_runs(records)
    groups: dict[str, str | None] = {}
    for run in selection.runs.values():
        for item in run.get("per_image") or []:
            if groups.get(item["item_id"]) is None:
                group = item.get("group")
                groups[item["item_id"]] = None if group is None else str(group)
    sources = ["per-image records"] if any(g is not None for g in groups.values()) else []
    missing = [item for item, group in groups.items() if group is None]
    if missing:
        found = _manifest_groups(selection, folder)
        if found is not None:
            manifest, source = found
            listed = [item for item in missing if item in manifest]
            groups.update({item: manifest[item] for item in listed})
            if listed:
                sources.append(source)
            missing = [item for item in missing if item not in manifest]
    # An item of unknown group stands alone; marked so that its name cannot coincide with a real group's.
    own = {item: f"{item} (own group)" for item in missing} if len(missing) < len(groups) else \
        {item: item for item in missing}
    groups.update(own)
    return ItemGroups(groups, " and ".join(sources) or "items", len(missing))


def _number(value) -> float:
    """A per-item value as a float; None (not measurable) and NaN both become NaN."""
    if value is None:
        return math.nan
    return float(value)


def scores_of(by_model: dict[str, dict[str, dict]], metric: str) -> pd.DataFrame:
    """Items x models table of ``metric`` from ``per_item_records``, only items scored by every compared model."""
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
    (its fold failed or is still missing) is dropped for all models, so every row is a fair pairing. A model's
    score of an item is the mean over the seeds (replicates) of its fold.
    """
    return scores_of(per_item_records(records), metric)


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


def compare_to_baseline(scores: pd.DataFrame, baseline: str | None, higher_is_better: bool = True,
                        groups: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per model (index ``model``) of the items x models ``scores``:

    - always: ``rank`` (mean per-item rank), ``n_items``, ``n_groups``, ``group_score`` (mean over groups of
      the group means) with its cluster-bootstrap interval ``ci_low``/``ci_high``, ``is_best`` and
      ``tied_best`` (the best model itself, or the interval of its difference to the best includes 0);
    - when the baseline is a column of ``scores``: ``diff`` (mean over groups of model - baseline) with
      ``diff_ci_low``/``diff_ci_high``, ``w_inc``, ``p`` (Wilcoxon over groups; NaN for the baseline itself),
      ``p_holm`` (Holm over the models compared with the baseline) and ``item_p`` (Wilcoxon over items).

    ``groups``: item -> group (``item_groups``); None or an item it lacks: the item is its own group. ``diff``
    and ``w_inc`` are raw differences model - baseline (positive = higher score), whatever the metric's
    direction; ranks and the best follow ``higher_is_better``. Intervals are NaN with fewer than two groups.
    """
    ranks = item_ranks(scores, higher_is_better)
    models = pd.Index(scores.columns, name="model")
    grouped = group_means(scores, groups)
    n_groups = len(grouped)
    values = grouped.to_numpy(float)
    point = values.mean(axis=0) if n_groups else np.full(len(models), math.nan)
    boot = bootstrap_means(values) if n_groups > 1 else np.full((1, len(models)), math.nan)
    low, high = percentile_interval(boot)
    best, tied = tied_with_best(boot, point, higher_is_better)
    result = pd.DataFrame({"rank": ranks.mean(axis=0), "n_items": len(scores), "n_groups": n_groups,
                           "group_score": point, "ci_low": low, "ci_high": high,
                           "is_best": [i == best for i in range(len(models))], "tied_best": tied}, index=models)
    if baseline is None or baseline not in scores.columns:
        return result
    base = models.get_loc(baseline)
    differences = grouped.sub(grouped[baseline], axis=0)
    base_ranks = item_ranks(grouped, higher_is_better)[baseline]
    diff_low, diff_high = percentile_interval(boot - boot[:, [base]])
    p = [math.nan if model == baseline else wilcoxon_p(differences[model]) for model in models]
    item_p = [math.nan if model == baseline else wilcoxon_p(scores[model] - scores[baseline]) for model in models]
    return result.assign(
        diff=differences.mean(axis=0) if n_groups else math.nan,
        diff_ci_low=diff_low, diff_ci_high=diff_high,
        w_inc=(differences.mul(base_ranks, axis=0).sum(axis=0) / base_ranks.sum()) if n_groups else math.nan,
        p=p, p_holm=holm(p), item_p=item_p)


def difficulty_slices(records: list[dict], metric: str, flags: Iterable[str],
                      item_values: Iterable[str] = (), by_model: dict[str, dict[str, dict]] | None = None
                      ) -> pd.DataFrame:
    """One row per compared model: ``metric`` on all paired items and on the items where each flag is true,
    and the mean of each per-item value where it was measurable (not None/NaN).

    Columns: ``model``, ``n_items``, ``{metric}_all``, then per flag ``{metric}_{flag}`` and ``n_{flag}``
    (items carrying it; the same for every model), then per value ``{value}`` and ``n_{value}`` (items where
    this model's value was measurable, which may differ between models: e.g. no rating from an empty mask).
    Items are the paired ones of ``paired_item_scores``; a flag is a property of the item, true if any
    model's record of it says so (missing or None = false). ``item_values`` may be a dict (name -> label).
    ``by_model``: ``per_item_records(records)`` when the caller has it already.
    """
    by_model = per_item_records(records) if by_model is None else by_model
    scores = scores_of(by_model, metric)
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
