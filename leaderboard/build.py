"""Leaderboard tables from run records: mean ± std over grouped folds, seeds, intervals, costs, per-fold values.

A table shows one benchmark: one fold manifest and one data version (scores on other folds or on other
data are not comparable). For each (task, dataset, profile) the benchmark shown is the one the caller names
(``matcv bench``: the one it just ran), else the newest data version on the folder's own
``fold_manifest.json``, else the newest benchmark with a successful run; of it the latest successful record of
every (model, fold, replicate) is used; failed runs are listed under the table with their errors. Runs on other
fold manifests or data versions in the same folder are counted in a section of their own, never mixed in, and
a warning says the folder holds several. Runs on a share of the training groups (``train_fraction`` < 1, a
learning curve) never enter these tables: ``matcv.leaderboard.learning_curves`` shows them.

A model run with several seeds per fold (``replicate`` 0, 1, ...): a fold's value is the mean over its seeds;
``{m}_mean``/``{m}_std`` are over folds of those values (the spread of held-out groups), ``{m}_seed_std`` the
std between seeds inside a fold, averaged over folds (training noise). Every table metric gets a 95 % interval:
a t-interval over folds, replaced by a group bootstrap for a comparison metric a model has per-item scores of.
Costs: parameters, fit seconds per run, inference milliseconds per test item, and the hardware they ran on.

CSV columns (read by the HTML page and the cross-dataset ranking; keep them): ``rank``, ``model``, ``n_folds``,
``folds``, ``n_seeds``, ``n_runs``; per table metric ``{m}_mean``, ``{m}_std``, ``{m}_seed_std``, ``{m}_ci_low``,
``{m}_ci_high``, ``{m}_ci_kind`` ("group bootstrap" | "t over folds"), ``{m}_per_fold``; ``fit_s_mean``,
``infer_ms_per_item``, ``params``, ``hardware``, ``config_hash``, ``track`` (``matcv.leaderboard.model_cards``:
"from scratch", "pretrained (ImageNet)", ...; the Markdown's last column). With a task's ``comparison`` settings, per
comparison metric (``matcv.leaderboard.comparison``): ``{m}_item_rank``, ``{m}_n_items``, ``{m}_n_groups``,
``{m}_group_score``, ``{m}_ci_low``/``_ci_high``/``_ci_kind`` (group bootstrap where the model has per-item
scores), ``{m}_is_best``, ``{m}_tied_best``, and against the baseline ``{m}_diff``, ``{m}_diff_ci_low``,
``{m}_diff_ci_high``, ``{m}_w_inc``, ``{m}_p`` (Wilcoxon over groups), ``{m}_p_holm``, ``{m}_item_p``; the
Markdown adds difficulty slices. Multi-class segmentation (per-image records with ``dice_<class>`` and
``iou_<class>``) adds, per class, ``iou_<class>_mean``/``_std`` and ``dice_<class>_mean``/``_std`` (fold means of
the per-image values) and ``never_predicted`` (the classes the model predicted on no pixel of any test image,
";"-separated; empty: none; NaN: records without pixel counts), and the Markdown a "Per-class scores" section.
Written as Markdown (with a per-fold plot, PNG) and CSV, atomically.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from matcv.datamodules.core.config import ComparisonSpec
from matcv.datamodules.core.records import FAILED, OK, TABLE_KEYS, RunRecords
from matcv.datamodules.core.atomic_io import atomic_write_text, sha256_bytes
from matcv.datamodules.folds import protocol_note
from matcv.leaderboard.comparison import (
    BenchmarkId,
    ItemGroups,
    benchmark_of,
    compare_to_baseline,
    difficulty_slices,
    format_p,
    item_groups,
    per_item_records,
    rank_shares,
    replicate_of,
    scores_of,
    select_latest_runs,
    usable_records,
)
from matcv.leaderboard.model_cards import check_track, model_track
from matcv.leaderboard.plots import per_fold_plot, rank_share_plot
from matcv.leaderboard.statistics import GROUP_BOOTSTRAP, N_RESAMPLES, T_OVER_FOLDS, seed_spread, t_interval


def train_fraction_of(record: dict) -> float:
    """The share of its fold's training groups a run trained on (1.0: all of them, as every record written before
    learning curves existed did)."""
    value = record.get("train_fraction")
    if value is None and isinstance(record.get("config"), dict):
        value = record["config"].get("train_fraction")
    return 1.0 if value is None else float(value)


def full_data_records(records: list[dict]) -> list[dict]:
    """The runs trained on their fold's whole training part: a learning curve's smaller runs are a result of
    their own and must never be averaged into a model's row (they share its (model, fold, replicate))."""
    return [r for r in records if not isinstance(r, dict) or train_fraction_of(r) == 1.0]


def _mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else math.nan


@dataclass
class Leaderboard:
    table: pd.DataFrame  # ranked by the first metric
    failed: list[dict]  # failed runs not superseded by a successful one
    fold_manifest_sha256: str | None  # the folds every row was scored on
    per_fold: dict[str, list[float]] = field(default_factory=dict)  # model -> first metric per fold, ranked
    ascending: bool = False  # ranked smallest first (the first metric is an error)
    data_sha256: str | None = None  # the data version every row was scored on
    classes: list[str] = field(default_factory=list)  # multi-class segmentation: the per-class columns' classes


def hardware_of(record: dict) -> str:
    """Where a run ran, in words: its GPUs (``record["hardware"]["cuda_devices"]``) unless it ran on the CPU,
    else the CPU and its core count; "unknown" for records without provenance (submissions)."""
    info = record.get("hardware")
    if not isinstance(info, dict):
        return "unknown"
    devices = [str(name) for name in info.get("cuda_devices") or []]
    if devices and record.get("accelerator") != "cpu":  # a machine's GPUs say nothing of a run told to use the CPU
        return ", ".join(f"{n}× {name}" if n > 1 else name for name, n in Counter(devices).items())
    cpu, count = info.get("cpu"), info.get("cpu_count")
    if not cpu and not count:
        return "unknown"
    return f"CPU {cpu or '?'}" + (f" ({count} cores)" if count else "")


def _finite(value) -> float:
    """A recorded number as a float, NaN when absent or not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _costs(runs: list[dict]) -> dict:
    """``params`` (``n_parameters`` of the latest run reporting it), ``fit_s_mean`` (mean over runs),
    ``infer_ms_per_item`` (mean over runs of 1000 * test seconds / test items) and ``hardware``."""
    params = [_finite(r.get("n_parameters")) for r in runs]
    params = [p for p in params if not math.isnan(p)]
    durations = [r.get("durations") if isinstance(r.get("durations"), dict) else {} for r in runs]
    fit = [_finite(d.get("fit_s")) for d in durations]
    per_item = []
    for run, duration in zip(runs, durations, strict=True):
        n_test = _finite((run.get("n_items") or {}).get("test")) if isinstance(run.get("n_items"), dict) else math.nan
        test_s = _finite(duration.get("test_s"))
        if n_test > 0 and not math.isnan(test_s):
            per_item.append(1000.0 * test_s / n_test)
    return {"fit_s_mean": float(np.mean(fit)) if fit else math.nan,
            "infer_ms_per_item": float(np.mean(per_item)) if per_item else math.nan,
            "params": params[-1] if params else math.nan,
            "hardware": "; ".join(dict.fromkeys(hardware_of(r) for r in runs))}


PER_CLASS_METRICS = ("iou", "dice")  # per-image ``<metric>_<class>`` of multi-class segmentation records
NEVER_PREDICTED = "never_predicted"


def per_class_names(runs: Iterable[dict]) -> list[str]:
    """The classes whose per-image records carry both ``iou_<class>`` and ``dice_<class>`` (multi-class
    segmentation), in the records' order; none for binary records (plain ``dice``/``iou``)."""
    names: dict[str, None] = {}
    for run in runs:
        for item in run.get("per_image") or []:
            if isinstance(item, dict):
                for key in item:
                    if key.startswith("iou_") and len(key) > 4 and f"dice_{key[4:]}" in item:
                        names.setdefault(key[4:], None)
    return list(names)


def per_class_classes(columns: Iterable[str]) -> list[str]:
    """The classes of a table's per-class columns (``iou_<class>_mean`` beside ``dice_<class>_mean``), for a
    reader of the CSV; a table without ``never_predicted`` has none."""
    columns = list(columns)
    if NEVER_PREDICTED not in columns:
        return []
    present = set(columns)
    return [c.removeprefix("iou_").removesuffix("_mean") for c in columns
            if c.startswith("iou_") and c.endswith("_mean") and len(c) > len("iou__mean")
            and f"dice_{c.removeprefix('iou_')}" in present]


def _item_mean(run: dict, key: str) -> float:
    """The mean of a per-image value over a run's test images (those that have it); NaN when none has it."""
    values = [_finite(item.get(key)) for item in run.get("per_image") or [] if isinstance(item, dict)]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def never_predicted(runs: list[dict], classes: list[str]) -> str | float:
    """The classes a model predicted on no pixel of any of its test images (``pred_px_<class>`` summed over every
    run), ";"-separated ("" when it predicted each somewhere); NaN when its records have no pixel counts."""
    totals: dict[str, float] = {}
    for run in runs:
        for item in run.get("per_image") or []:
            if not isinstance(item, dict):
                continue
            for name in classes:
                value = _finite(item.get(f"pred_px_{name}"))
                if not math.isnan(value):
                    totals[name] = totals.get(name, 0.0) + value
    if not totals:
        return math.nan
    return ";".join(name for name in classes if name in totals and totals[name] == 0)


def _per_class_row(folds: dict[int, list[dict]], runs: list[dict], classes: list[str],
                   metrics: list[str]) -> dict:
    row = {}
    for name in classes:
        for metric in PER_CLASS_METRICS:
            key = f"{metric}_{name}"
            if key in metrics:  # already a table metric of the task: its columns are there
                continue
            spread = seed_spread([[_item_mean(r, key) for r in seeds] for seeds in folds.values()])
            row[f"{key}_mean"], row[f"{key}_std"] = spread.mean, spread.std
    row[NEVER_PREDICTED] = never_predicted(runs, classes)
    return row


def leaderboard_table(records: list[dict], metrics: list[str], lower_is_better: Iterable[str] = (),
                      benchmark: BenchmarkId | None = None) -> Leaderboard:
    """The table of one benchmark of ``records``: ``benchmark`` (fold manifest sha256, data sha256), by
    default the one of the latest successful run."""
    # One selection for this table and the per-image comparison, so both describe the same runs.
    records = usable_records(full_data_records(records))
    selection = select_latest_runs(records, benchmark)
    manifest = selection.fold_manifest_sha256
    if manifest is None:
        return Leaderboard(pd.DataFrame(), [r for r in records if r.get("status") == FAILED], None)
    failed = [r for r in records if r.get("status") == FAILED and benchmark_of(r) == selection.benchmark
              and (r["model"], r["fold"], replicate_of(r)) not in selection.runs]
    if not selection.runs:  # the benchmark asked for has failed runs only
        return Leaderboard(pd.DataFrame(), failed, manifest, data_sha256=selection.data_sha256)
    rows, first_metric = [], {}
    classes = per_class_names(selection.runs.values())
    for model in selection.models():
        folds, runs = selection.folds_of(model), selection.runs_of(model)
        row = {"model": model, "n_folds": len(folds), "folds": ",".join(str(fold) for fold in folds),
               "n_seeds": min(len(seeds) for seeds in folds.values()), "n_runs": len(runs)}
        for metric in metrics:
            # A metric a record lacks (one written before the metric existed) does not apply to it: NaN, "–".
            spread = seed_spread([[r["metrics"].get(metric, math.nan) for r in seeds] for seeds in folds.values()])
            row[f"{metric}_mean"], row[f"{metric}_std"], row[f"{metric}_seed_std"] = \
                spread.mean, spread.std, spread.seed_std
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = t_interval(spread.fold_values)
            row[f"{metric}_ci_kind"] = T_OVER_FOLDS  # a comparison metric's group bootstrap replaces it later
            row[f"{metric}_per_fold"] = " ".join("–" if math.isnan(v) else f"{v:.4f}" for v in spread.fold_values)
            if metric == metrics[0]:
                first_metric[model] = spread.fold_values
        row.update(_costs(runs))
        row["config_hash"] = runs[-1].get("config_hash", "")
        row["track"] = model_track(str(runs[-1].get("task", "")), model, runs)
        if classes:  # multi-class segmentation: per-class scores, after every existing column
            row.update(_per_class_row(folds, runs, classes, metrics))
        rows.append(row)
    ascending = metrics[0] in set(lower_is_better)  # an error (MASE, MAE) ranks the smallest first
    table = pd.DataFrame(rows).sort_values(f"{metrics[0]}_mean", ascending=ascending, kind="stable").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    # Unrounded values for the plot, in the table's ranking.
    return Leaderboard(table, failed, manifest, {model: first_metric[model] for model in table["model"]}, ascending,
                       selection.data_sha256, classes)


def format_mean_std(mean: float, std: float) -> str:
    if math.isnan(mean):  # a metric that does not apply to the model (e.g. reconstruction error of a GAN)
        return "–"
    return f"{mean:.4f} ± {std:.4f}" if not math.isnan(std) else f"{mean:.4f}"


@dataclass
class ComparisonTables:
    spec: ComparisonSpec
    per_metric: dict[str, pd.DataFrame]  # metric -> compare_to_baseline() (index = model)
    slices: pd.DataFrame | None  # difficulty_slices() of the first metric, None without slices
    rank_shares: pd.DataFrame  # first metric: models x places, share of images
    groups: ItemGroups | None = None  # the items' groups the statistics were computed over


def comparison_tables(records: list[dict], spec: ComparisonSpec, model_order: list[str] | None = None,
                      folder: str | Path | None = None) -> ComparisonTables:
    """The comparison of ``records`` (one benchmark); slices and rank shares in ``model_order`` (the
    leaderboard's ranking) where given. ``folder``: the benchmark folder, whose ``fold_manifest.json`` gives the
    items' groups when neither the per-image records nor the manifest file the records name do."""
    records = full_data_records(records)
    selection = select_latest_runs(records)
    by_model = per_item_records(records, selection)
    groups = item_groups(records, folder, selection)
    per_metric, shares = {}, pd.DataFrame()
    for metric in spec.metrics:
        scores = scores_of(by_model, metric)
        higher_is_better = metric not in spec.lower_is_better
        per_metric[metric] = compare_to_baseline(scores, spec.baseline, higher_is_better, groups.groups)
        if metric == spec.metrics[0]:
            shares = rank_shares(scores, higher_is_better)
    slices = None
    if spec.slices or spec.item_values:
        slices = difficulty_slices(records, spec.metrics[0], spec.slices, spec.item_values, by_model=by_model)
    if model_order is not None:
        shares = shares.loc[[m for m in model_order if m in shares.index]]
        if slices is not None:
            slices = slices.set_index("model").loc[[m for m in model_order if m in set(slices["model"])]].reset_index()
    return ComparisonTables(spec, per_metric, slices, shares, groups)


# table column suffix -> compare_to_baseline() column; the dtype of the table column
COMPARISON_COLUMNS = {"item_rank": ("rank", float), "n_items": ("n_items", "Int64"), "n_groups": ("n_groups", "Int64"),
                      "group_score": ("group_score", float), "is_best": ("is_best", "boolean"),
                      "tied_best": ("tied_best", "boolean"), "diff": ("diff", float),
                      "diff_ci_low": ("diff_ci_low", float), "diff_ci_high": ("diff_ci_high", float),
                      "w_inc": ("w_inc", float), "p": ("p", float), "p_holm": ("p_holm", float),
                      "item_p": ("item_p", float)}


def with_comparison_columns(table: pd.DataFrame, comparison: ComparisonTables) -> pd.DataFrame:
    """The leaderboard table plus the per-item comparison columns of every comparison metric (module doc;
    NaN/empty for a model without per-image scores; only the baseline-free ones when the baseline has no
    scores). A model with per-item scores of a metric gets its group-bootstrap interval in ``{m}_ci_low``,
    ``{m}_ci_high`` (``{m}_ci_kind`` "group bootstrap"); a table metric keeps its t-interval over folds for the
    other models."""
    table = table.copy()
    for metric, compared in comparison.per_metric.items():
        for suffix, (column, dtype) in COMPARISON_COLUMNS.items():
            if column in compared:
                table[f"{metric}_{suffix}"] = table["model"].map(compared[column]).astype(dtype)
        scored = table["model"].isin(compared.index)
        if f"{metric}_ci_low" not in table:  # a per-item score that is no table metric (e.g. `correct`)
            table[f"{metric}_ci_low"], table[f"{metric}_ci_high"] = math.nan, math.nan
            table[f"{metric}_ci_kind"] = ""
        for bound in ("ci_low", "ci_high"):
            table.loc[scored, f"{metric}_{bound}"] = table.loc[scored, "model"].map(compared[bound]).astype(float)
        table.loc[scored, f"{metric}_ci_kind"] = GROUP_BOOTSTRAP
    return table


def _cell(value: float, fmt: str) -> str:
    return "–" if value is None or pd.isna(value) else format(value, fmt)


def format_interval(low: float, high: float, fmt: str = ".4f") -> str:
    """"[0.5500, 0.6300]"; "–" when the interval could not be computed (one fold, one group)."""
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return "–"
    return f"[{low:{fmt}}, {high:{fmt}}]"


def _interval_cell(row: dict, metric: str) -> str:
    """A table metric's interval with its kind: (g) group bootstrap, (t) t over folds."""
    text = format_interval(row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high"))
    kind = row.get(f"{metric}_ci_kind")
    return text if text == "–" else text + (" (g)" if kind == GROUP_BOOTSTRAP else " (t)")


def _estimate_cell(row: dict, estimate: str, interval: str, fmt: str) -> str:
    """"0.6000 [0.4550, 0.7333]": ``row[estimate]`` and the interval ``{interval}_low``/``_high``."""
    if pd.isna(row[estimate]):
        return "–"
    return f"{row[estimate]:{fmt}} {format_interval(row[f'{interval}_low'], row[f'{interval}_high'], fmt)}"


def _p_cell(p: float, n) -> str:
    return "–" if p is None or pd.isna(p) else f"{format_p(p)} (n={int(n)})"


def _best_cell(row: dict, metric: str) -> str:
    if pd.isna(row.get(f"{metric}_is_best")):
        return "–"
    return "best" if row[f"{metric}_is_best"] else "tied" if row[f"{metric}_tied_best"] else "no"


def _comparison_header(comparison: ComparisonTables) -> tuple[list[str], list]:
    """Markdown header cells and, per cell, how to format a row's value."""
    header, formatters = [], []
    for metric, compared in comparison.per_metric.items():
        header += [f"{metric} rank/img", f"{metric} group mean [95% CI]"]
        formatters += [lambda r, m=metric: _cell(r[f"{m}_item_rank"], ".2f"),
                       lambda r, m=metric: _estimate_cell(r, f"{m}_group_score", f"{m}_ci", ".4f")]
        if "diff" in compared:
            header += [f"{metric} diff [95% CI]", f"{metric} W-Inc", f"{metric} p (groups)", f"{metric} p Holm",
                       f"{metric} item p (secondary)"]
            formatters += [lambda r, m=metric: _estimate_cell(r, f"{m}_diff", f"{m}_diff_ci", "+.4f"),
                           lambda r, m=metric: _cell(r[f"{m}_w_inc"], "+.4f"),
                           lambda r, m=metric: _p_cell(r[f"{m}_p"], r[f"{m}_n_groups"]),
                           lambda r, m=metric: _p_cell(r[f"{m}_p_holm"], r[f"{m}_n_groups"]),
                           lambda r, m=metric: _p_cell(r[f"{m}_item_p"], r[f"{m}_n_items"])]
    first = comparison.spec.metrics[0]
    header.append(f"vs best ({first})")
    formatters.append(lambda r: _best_cell(r, first))
    return header, formatters


def _comparison_notes(comparison: ComparisonTables, models: list[str]) -> list[str]:
    spec = comparison.spec
    counts = ", ".join(f"{metric}: {_n_paired(compared)} images in {_n_groups(compared)} groups"
                       for metric, compared in comparison.per_metric.items())
    groups = comparison.groups.note if comparison.groups is not None else "groups unknown: items treated as groups"
    lines = [f"Per-image comparison on the test images scored by every compared model, each tested once in "
             f"its held-out fold ({counts}; {groups})"
             + (f", baseline `{spec.baseline}`:" if _has_baseline(comparison) else ":"), ""]
    lines += ["- Why groups: the photos of one panel (the crops of one micrograph, the volumes of one filter family) "
              "share their specimen and are not independent tests. Each image's score is first averaged within its "
              "group (and over a model's seeds); the group means are the units of everything below but rank/img.",
              "- rank/img: the model's place on each test image (1 = best; tied models share the average place), "
              "averaged over the images.",
              f"- group mean [95% CI]: the mean over groups of the group means; the interval is a percentile "
              f"cluster bootstrap: the groups (not the images) are drawn with replacement {N_RESAMPLES} times, with a "
              f"fixed seed so that the table is reproducible. Few groups make it too narrow rather than too wide."]
    if _has_baseline(comparison):
        lines += ["- diff [95% CI]: mean over groups of (model − baseline); the interval comes from the same "
                  "resampled groups for both models, so it is paired.",
                  "- W-Inc: the difference weighted per group by the baseline's rank there, so groups the baseline "
                  "finds hard count more: Σ r_base·(s − s_base) / Σ r_base.",
                  "- p (groups): two-sided paired Wilcoxon signed-rank test vs the baseline over the n groups (zero "
                  "differences dropped, all zero = 1); a small p says the difference is not chance, not that it "
                  "is large. With 5 groups or fewer no p can fall below 0.05.",
                  "- p Holm: the p-values of the models compared with the baseline, Holm-corrected (step-down) per "
                  "metric, so that the chance of calling any of them different by mistake stays at most 5 % "
                  "(p Holm < 0.05).",
                  "- item p (secondary): the same test over images; it counts the images of one group as independent "
                  "and so overstates the evidence. Read p (groups)."]
    else:
        lines.append(f"- Baseline `{spec.baseline}` has no per-image scores on this fold manifest: diff, "
                     f"W-Inc and p are omitted." if spec.baseline else
                     "- No baseline named: diff, W-Inc and p are omitted.")
    first = spec.metrics[0]
    lines.append(f"- vs best: the model with the best group mean of {first} is *best*; *tied*: the 95 % interval of "
                 f"its difference to the best includes 0, so the data do not separate it from the best; *no*: "
                 f"its interval excludes 0.")
    if spec.lower_is_better & set(spec.metrics):
        lines.append(f"- Lower is better for {', '.join(sorted(spec.lower_is_better & set(spec.metrics)))}: "
                     f"rank 1 and the best = lowest; diff and W-Inc stay model − baseline.")
    compared_models = set().union(*(set(c.index) for c in comparison.per_metric.values()))
    missing = [m for m in models if m not in compared_models]
    if missing:
        lines.append(f"- No per-image scores (not compared, –): {', '.join(missing)}.")
    return lines


def _n_paired(compared: pd.DataFrame) -> int:
    """Images in a metric's comparison (the same for every compared model)."""
    return int(compared["n_items"].iloc[0]) if len(compared) else 0


def _n_groups(compared: pd.DataFrame) -> int:
    return int(compared["n_groups"].iloc[0]) if len(compared) else 0


def _has_baseline(comparison: ComparisonTables) -> bool:
    return all("diff" in compared for compared in comparison.per_metric.values())


def render_slices(comparison: ComparisonTables) -> list[str]:
    slices, spec = comparison.slices, comparison.spec
    metric = spec.metrics[0]
    lines = ["## Difficulty slices", ""]
    if slices is None or slices.empty:
        return lines + ["No per-image scores for the slices yet."]
    slices = slices.set_index("model")
    header, formatters = ["model", f"{metric}, all (n={int(slices['n_items'].iloc[0])})"], []
    formatters.append(lambda r: _cell(r[f"{metric}_all"], ".4f"))
    for flag in spec.slices:
        header.append(f"{metric}, {flag} (n={int(slices[f'n_{flag}'].iloc[0])})")
        formatters.append(lambda r, f=flag: _cell(r[f"{metric}_{f}"], ".4f"))
    for name, label in spec.item_values.items():
        counts = slices[f"n_{name}"]
        if counts.nunique() == 1:  # the same items for every model: say so once, in the header
            header.append(f"{label} (n={int(counts.iloc[0])})")
            formatters.append(lambda r, n=name: _cell(r[n], ".4f"))
        else:  # measurable on different items per model (e.g. no rating from an empty mask)
            header.append(label)
            formatters.append(lambda r, n=name: f"{_cell(r[n], '.4f')} (n={int(r[f'n_{n}'])})")
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, row in slices.iterrows():
        lines.append("| " + " | ".join([model] + [format_(row) for format_ in formatters]) + " |")
    lines += ["", f"- {metric}, <flag>: mean {metric} over the compared test images carrying the flag; "
                  f"n = number of those images."]
    if spec.item_values:
        lines.append("- " + "; ".join(f"{label} (`{name}`)" for name, label in spec.item_values.items())
                     + ": per-image values, averaged over the images where they were measurable; "
                       "n = number of those images.")
    return lines


def _never_cell(value) -> str:
    if not isinstance(value, str):  # NaN: records without pixel counts
        return "–"
    return f"never predicted: {value.replace(';', ', ')}" if value else "none"


def render_per_class(table: pd.DataFrame, classes: list[str]) -> list[str]:
    """The "Per-class scores" section: each class's IoU and Dice (mean ± std over folds) and the classes a model
    never predicted."""
    lines = ["## Per-class scores", ""]
    header = ["model"] + [f"{m} {name}" for name in classes for m in PER_CLASS_METRICS] + ["never predicted"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in table.to_dict("records"):
        cells = [r["model"]] + [format_mean_std(r.get(f"{m}_{name}_mean", math.nan), r.get(f"{m}_{name}_std", math.nan))
                                for name in classes for m in PER_CLASS_METRICS]
        lines.append("| " + " | ".join(cells + [_never_cell(r.get(NEVER_PREDICTED))]) + " |")
    lines += ["", "- iou/dice <class>: per test image (argmax prediction, ignored pixels left out), averaged over "
                  "each fold's test images; mean ± std over folds.",
              "- A class absent from both the truth and the prediction of an image scores 1 on that image (smp's "
              "zero_division=1, as the segmentation module computes it): a rare class's mean is lifted by the "
              "images without it, so read it together with never predicted.",
              "- never predicted: the classes the model gave no pixel on any of its test images (from the records' "
              "pred_px_<class>); –: records without pixel counts."]
    missing = [(r["model"], r[NEVER_PREDICTED]) for r in table.to_dict("records")
               if isinstance(r.get(NEVER_PREDICTED), str) and r[NEVER_PREDICTED]]
    lines += [f"- **{model}** never predicted: {value.replace(';', ', ')}." for model, value in missing]
    return lines


def _count_range(values: Iterable[int], noun: str) -> str:
    """"3 folds", "1–3 seeds"."""
    values = sorted({int(v) for v in values})
    count = f"{values[0]}" if len(values) == 1 else f"{values[0]}–{values[-1]}"
    return f"{count} {noun}{'' if values == [1] else 's'}"


def format_params(value: float) -> str:
    """11181642 -> "11.18 M", 5855 -> "5.9 k"; "–" when the records do not say."""
    if value is None or pd.isna(value):
        return "–"
    return f"{value / 1e6:.2f} M" if value >= 1e6 else f"{value / 1e3:.1f} k" if value >= 1e3 else f"{value:.0f}"


def _hardware_lines(table: pd.DataFrame) -> list[str]:
    """The hardware the table's runs ran on; a warning when it differs, since times are then not comparable."""
    users: dict[str, list[str]] = {}
    for model, hardware in zip(table["model"], table["hardware"], strict=True):
        for name in str(hardware).split("; "):
            users.setdefault(name, []).append(model)
    if len(users) == 1:
        return [f"Hardware: {next(iter(users))} (every run)."]
    return ["Runs used different hardware, so their times are not comparable: "
            + "; ".join(f"{name} ({', '.join(models)})" for name, models in users.items()) + "."]


def _multi_seed(table: pd.DataFrame) -> bool:
    return bool((table["n_runs"] > table["n_folds"]).any())


def render_intervals(table: pd.DataFrame, metrics: list[str]) -> list[str]:
    """Every table metric's 95 % interval (and, with several seeds, its seed std) per model."""
    seeds = _multi_seed(table)
    header = ["model"] + [c for m in metrics for c in ([f"{m} 95% CI"] + ([f"{m} seed std"] if seeds else []))]
    lines = ["## 95 % intervals" + (" and seed spread" if seeds else ""), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in table.to_dict("records"):
        cells = [r["model"]]
        for m in metrics:
            cells.append(_interval_cell(r, m))
            if seeds:
                cells.append(_cell(r[f"{m}_seed_std"], ".4f"))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "- (t): Student-t interval over folds (the per-fold values, n_folds − 1 degrees of freedom), for "
                  "metrics that exist per fold only (QWK, FID, ...): with 3 folds it is wide, as it should be.",
              "- (g): group bootstrap of the per-image scores (see the comparison notes), for the models with "
              "per-image scores of a comparison metric; it is centred on the group mean, not on the fold mean."]
    if seeds:
        lines.append("- seed std: the std between the seeds (training runs) of one fold, averaged over folds: the "
                     "training noise, apart from the fold-to-fold spread shown as ± in the table.")
    return lines


def render_markdown(title: str, board: Leaderboard, metrics: list[str], records: list[dict],
                    plot_name: str | None = None, comparison: ComparisonTables | None = None,
                    rank_plot_name: str | None = None, others: dict[BenchmarkId, list[dict]] | None = None,
                    protocol: str | None = None, track: str | None = None) -> str:
    """The table's Markdown; ``others``: the runs of the folder on other benchmarks, counted, not compared;
    ``protocol``: the fold manifest's protocol when it is not grouped CV (a publisher's split and its leaks);
    ``track``: the track the table was filtered to (None: every track)."""
    table, failed, manifest = board.table, board.failed, board.fold_manifest_sha256
    lines = [f"# {title}", ""]
    if table.empty:
        lines.append("No successful runs yet.")
        if manifest is not None and others:  # say which benchmark has no runs, the others being listed below
            example = next((r for r in records if benchmark_of(r) == (manifest, board.data_sha256)), {})
            lines += ["", f"Benchmark: fold manifest `{manifest[:12]}` (`{example.get('fold_manifest', '')}`), "
                          f"data `{str(board.data_sha256)[:12]}`."]
    else:
        example = next(r for r in records if benchmark_of(r) == (manifest, board.data_sha256))
        seeds = _multi_seed(table)
        first = metrics[0]
        how = f"Protocol: {protocol}, not grouped cross-validation;" if protocol else "Grouped cross-validation on"
        lines += [f"{how} fold manifest `{manifest[:12]}` "
                  f"(`{example.get('fold_manifest', '')}`), data `{example['data_sha256'][:12]}`; "
                  f"{_count_range(table['n_seeds'], 'seed')} × {_count_range(table['n_folds'], 'fold')}; "
                  f"mean ± std over folds (sample std{' of the per-fold means over seeds' if seeds else ''}), "
                  f"ranked by {first}{' (lower is better)' if board.ascending else ''}.",
                  *_hardware_lines(table), _tracks_line(table, track), ""]
        header = ["rank", "model", "folds"] + [f"{m} (mean ± std)" for m in metrics]
        header += [f"{first} 95% CI", f"{first} per fold"] + ([f"{first} seed std"] if seeds else [])
        header += ["seeds", "fit s/run", "infer ms/item", "params"]
        extra_header, extra_cells = _comparison_header(comparison) if comparison else ([], [])
        header += extra_header + ["track"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for r in table.to_dict("records"):
            cells = [str(r["rank"]), r["model"], str(r["n_folds"])]
            cells += [format_mean_std(r[f"{m}_mean"], r[f"{m}_std"]) for m in metrics]
            cells += [_interval_cell(r, first), r[f"{first}_per_fold"]]
            cells += [_cell(r[f"{first}_seed_std"], ".4f")] if seeds else []
            cells += [str(r["n_seeds"]), _cell(r["fit_s_mean"], ".0f"), _cell(r["infer_ms_per_item"], ".2f"),
                      format_params(r["params"])]
            cells += [format_cell(r) for format_cell in extra_cells]
            cells.append(r["track"])
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"- mean ± std: over the folds' values (each fold tests held-out groups)"
                      f"{', each the mean over its seeds' if seeds else ''}; 95% CI: see the intervals below; "
                      f"seeds: training runs per fold"
                      f"{'' if seeds else ' (one: the seed-to-seed spread is not measured)'}.",
                  "- fit s/run: training seconds per run; infer ms/item: 1000 × test seconds / test items, mean over "
                  "runs (data loading included); params: the model's parameter count as the run recorded it."]
        if comparison:
            lines += [""] + _comparison_notes(comparison, list(table["model"]))
        lines += [""] + render_intervals(table, metrics)
        if board.classes:
            lines += [""] + render_per_class(table, board.classes)
        if plot_name:
            lines += ["", f"![{metrics[0]} per fold]({plot_name})"]
        if rank_plot_name:
            lines += ["", f"![{comparison.spec.metrics[0]} rank per image]({rank_plot_name})"]
        if comparison and comparison.slices is not None:
            lines += [""] + render_slices(comparison)
    if failed:
        lines += ["", "Failed runs (not in the table):", ""]
        lines += [f"- {r['model']} fold {r['fold']}"
                  + (f" replicate {replicate_of(r)}" if replicate_of(r) else "")
                  + f": {r.get('error', 'unknown error')}" for r in failed]
    if others:
        lines += [""] + render_other_benchmarks(others)
    return "\n".join(lines) + "\n"


def _tracks_line(table: pd.DataFrame, track: str | None) -> str:
    """Which tracks the table holds (results with pretraining or extra data are not on equal terms)."""
    held = ", ".join(f'"{t}"' for t in dict.fromkeys(table["track"]))
    if track is not None:
        return f"Track: only \"{track}\" (filtered with `matcv leaderboard --track`); the unfiltered table has all."
    return f"Tracks: {held} (from the model cards, leaderboard/cards/; `matcv leaderboard --track` filters)."


OTHERS_HEADING = "## Other fold manifests / data versions in this folder"


def render_other_benchmarks(others: dict[BenchmarkId, list[dict]]) -> list[str]:
    """The section counting a folder's runs on other benchmarks (newest first): they are listed, never scored
    beside the table's runs."""
    total = sum(len(runs) for runs in others.values())
    lines = [OTHERS_HEADING, "",
             f"{total} run{'s' if total != 1 else ''} on other fold manifests or data versions, not compared with "
             f"the table above (scores on other folds or other data are not comparable):", ""]
    for (manifest, data), runs in others.items():
        ok = sum(r.get("status") == OK for r in runs)
        models = ", ".join(dict.fromkeys(r["model"] for r in runs))
        path = next((r.get("fold_manifest") for r in runs if r.get("fold_manifest")), "")
        lines.append(f"- fold manifest `{str(manifest)[:12]}`" + (f" (`{path}`)" if path else "")
                     + f", data `{str(data)[:12]}`: {len(runs)} run{'s' if len(runs) != 1 else ''} "
                       f"({ok} ok): {models}")
    return lines


def own_manifest_sha256(folder: str | Path) -> str | None:
    """sha256 of a benchmark folder's own ``fold_manifest.json`` (the folds ``matcv bench`` uses there by
    default), None without one."""
    path = Path(folder) / "fold_manifest.json"
    try:
        return sha256_bytes(path.read_bytes())
    except OSError:
        return None


def choose_benchmark(records: list[dict], own_manifest: str | None = None,
                     data_sha256: str | None = None) -> BenchmarkId | None:
    """Which benchmark of ``records`` a table shows when no caller names one: of the runs on ``own_manifest``
    (the folder's own folds) if there are any, and on ``data_sha256`` if given and there are any, the newest
    successful run's (fold manifest, data); without a successful run, the newest run's."""
    candidates = records
    for wanted, position in ((own_manifest, 0), (data_sha256, 1)):
        narrowed = [r for r in candidates if wanted is not None and benchmark_of(r)[position] == wanted]
        candidates = narrowed or candidates
    if not candidates:
        return None
    ok = [r for r in candidates if r.get("status") == OK]
    return benchmark_of((ok or candidates)[-1])


def split_by_benchmark(records: list[dict], benchmark: BenchmarkId | None
                       ) -> tuple[list[dict], dict[BenchmarkId, list[dict]]]:
    """(the records of ``benchmark``, the others grouped by their benchmark, newest first)."""
    mine, others = [], {}
    for record in records:
        if benchmark_of(record) == benchmark:
            mine.append(record)
        else:
            others.setdefault(benchmark_of(record), []).append(record)
    return mine, dict(reversed(list(others.items())))


def _protocol_note(folder: Path) -> str | None:
    """The folder's fold manifest's protocol other than grouped CV (``folds.protocol_note``), or None."""
    path = folder / "fold_manifest.json"
    try:
        manifest = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return None  # the table is still written; the manifest's own checks report a bad file
    return protocol_note(manifest) if isinstance(manifest, dict) else None


def write_leaderboard(records_path: str | Path, out_dir: str | Path, metrics: list[str],
                      comparison: dict | None = None, lower_is_better: Iterable[str] = (),
                      benchmark: BenchmarkId | None = None, track: str | None = None) -> list[Path]:
    """Write ``<task>__<dataset>__<profile>.md`` and ``.csv`` under ``out_dir``; return the Markdown paths.

    ``comparison`` is the task YAML's ``comparison`` block (see ``ComparisonSpec``); with it the table gets
    the per-image comparison columns, the Markdown a difficulty-slices table (also written as
    ``<stem>__slices.csv``) and a rank-per-image plot (``<stem>__ranks.png``). None: the plain leaderboard.
    ``benchmark``: the (fold manifest sha256, data sha256) to show; by default ``choose_benchmark`` with the
    folder's own fold manifest. ``track``: only the models of that track (``model_cards.TRACKS``); None: all.
    """
    check_track(track)
    spec = ComparisonSpec.parse(comparison, metrics) if comparison is not None else None
    records = full_data_records(RunRecords(records_path).load(TABLE_KEYS))
    own_manifest = own_manifest_sha256(Path(records_path).parent)
    written = []
    keys = dict.fromkeys((r["task"], r["dataset"], r["profile"]) for r in records)
    for task, dataset, profile in keys:
        everything = [r for r in records if (r["task"], r["dataset"], r["profile"]) == (task, dataset, profile)]
        shown = benchmark or choose_benchmark(everything, own_manifest)
        subset, others = split_by_benchmark(everything, shown)
        if track is not None:  # the models of other tracks leave the table and its comparisons alike
            runs_of = {}
            for record in subset:
                runs_of.setdefault(record.get("model"), []).append(record)
            subset = [r for r in subset if model_track(task, r.get("model"), runs_of[r.get("model")]) == track]
        stem = Path(out_dir) / f"{task}__{dataset}__{profile}"
        if others:
            n_other = sum(len(runs) for runs in others.values())
            warnings.warn(f"{records_path} holds runs on {len(others) + 1} fold manifest/data pairs: "
                          f"{stem.name} shows fold manifest {shown[0][:12]}, data {str(shown[1])[:12]}; "
                          f"{n_other} run(s) on the others are listed there, not compared", stacklevel=2)
        board = leaderboard_table(subset, metrics, lower_is_better, shown)
        title = f"matcv leaderboard: {task} on {dataset}, profile {profile}"
        note = _protocol_note(Path(records_path).parent)
        title += f" ({note})" if note else ""  # a publisher's split, and any leak it declares, in the title
        plot = rank_plot = tables = None
        if board.per_fold:
            plot = per_fold_plot(stem.with_suffix(".png"), board.per_fold, metrics[0], title)
        if spec is not None and not board.table.empty:
            tables = comparison_tables(subset, spec, list(board.table["model"]), Path(records_path).parent)
            board.table = with_comparison_columns(board.table, tables)
            if len(tables.rank_shares) > 1 and _n_paired(tables.per_metric[spec.metrics[0]]) > 0:
                rank_plot = rank_share_plot(stem.parent / f"{stem.name}__ranks.png", tables.rank_shares,
                                            spec.metrics[0], title)
            if tables.slices is not None:
                atomic_write_text(stem.parent / f"{stem.name}__slices.csv", tables.slices.to_csv(index=False))
        markdown = render_markdown(title, board, metrics, subset, plot.name if plot else None, tables,
                                   rank_plot.name if rank_plot else None, others, note, track)
        atomic_write_text(stem.with_suffix(".csv"), board.table.to_csv(index=False))
        written.append(atomic_write_text(stem.with_suffix(".md"), markdown))
    return written
