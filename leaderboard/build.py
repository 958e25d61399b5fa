"""Leaderboard tables from run records: mean ± std over grouped folds, per-fold values, fold counts.

A table shows one benchmark: one fold manifest and one data version (scores on other folds or on other
data are not comparable). For each (task, dataset, profile) the benchmark shown is the one the caller names
(``matcv bench``: the one it just ran), else the newest data version on the folder's own
``fold_manifest.json``, else the newest benchmark with a successful run; of it the latest successful record of
every (model, fold) is used; failed runs are listed under the table with their errors. Runs on other fold
manifests or data versions in the same folder are counted in a section of their own, never mixed in, and a
warning says the folder holds several.
With a task's ``comparison`` settings the table also compares models per test image against a baseline
(mean rank, increase, W-Inc, Wilcoxon p; see ``matcv.leaderboard.comparison``) and adds difficulty slices.
Written as Markdown (with a per-fold plot, PNG) and CSV, atomically.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from matcv.datamodules.core.config import ComparisonSpec
from matcv.datamodules.core.records import FAILED, OK, TABLE_KEYS, RunRecords
from matcv.datamodules.core.atomic_io import atomic_write_text, sha256_bytes
from matcv.leaderboard.comparison import (
    BenchmarkId,
    benchmark_of,
    compare_to_baseline,
    difficulty_slices,
    format_p,
    paired_item_scores,
    rank_shares,
    select_latest_runs,
    usable_records,
)
from matcv.leaderboard.plots import per_fold_plot, rank_share_plot


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


def leaderboard_table(records: list[dict], metrics: list[str], lower_is_better: Iterable[str] = (),
                      benchmark: BenchmarkId | None = None) -> Leaderboard:
    """The table of one benchmark of ``records``: ``benchmark`` (fold manifest sha256, data sha256), by
    default the one of the latest successful run."""
    # One selection for this table and the per-image comparison, so both describe the same runs.
    records = usable_records(records)
    selection = select_latest_runs(records, benchmark)
    manifest = selection.fold_manifest_sha256
    if manifest is None:
        return Leaderboard(pd.DataFrame(), [r for r in records if r.get("status") == FAILED], None)
    failed = [r for r in records if r.get("status") == FAILED and benchmark_of(r) == selection.benchmark
              and (r["model"], r["fold"]) not in selection.runs]
    if not selection.runs:  # the benchmark asked for has failed runs only
        return Leaderboard(pd.DataFrame(), failed, manifest, data_sha256=selection.data_sha256)
    rows, first_metric = [], {}
    for model in selection.models():
        runs = selection.runs_of(model)
        row = {"model": model, "n_folds": len(runs), "folds": ",".join(str(r["fold"]) for r in runs)}
        for metric in metrics:
            # A metric a record lacks (one written before the metric existed) does not apply to it: NaN, "–".
            values = [r["metrics"].get(metric, math.nan) for r in runs]
            row[f"{metric}_mean"], row[f"{metric}_std"] = _mean_std(values)
            row[f"{metric}_per_fold"] = " ".join("–" if math.isnan(v) else f"{v:.4f}" for v in values)
        first_metric[model] = [float(r["metrics"].get(metrics[0], math.nan)) for r in runs]
        row["fit_s_mean"] = float(np.mean([(r.get("durations") or {}).get("fit_s", math.nan) for r in runs]))
        row["config_hash"] = runs[-1].get("config_hash", "")
        rows.append(row)
    ascending = metrics[0] in set(lower_is_better)  # an error (MASE, MAE) ranks the smallest first
    table = pd.DataFrame(rows).sort_values(f"{metrics[0]}_mean", ascending=ascending, kind="stable").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    # Unrounded values for the plot, in the table's ranking.
    return Leaderboard(table, failed, manifest, {model: first_metric[model] for model in table["model"]}, ascending,
                       selection.data_sha256)


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


def comparison_tables(records: list[dict], spec: ComparisonSpec,
                      model_order: list[str] | None = None) -> ComparisonTables:
    """The comparison of ``records`` (one benchmark); slices and rank shares in ``model_order`` (the
    leaderboard's ranking) where given."""
    per_metric, shares = {}, pd.DataFrame()
    for metric in spec.metrics:
        scores = paired_item_scores(records, metric)
        higher_is_better = metric not in spec.lower_is_better
        per_metric[metric] = compare_to_baseline(scores, spec.baseline, higher_is_better)
        if metric == spec.metrics[0]:
            shares = rank_shares(scores, higher_is_better)
    slices = None
    if spec.slices or spec.item_values:
        slices = difficulty_slices(records, spec.metrics[0], spec.slices, spec.item_values)
    if model_order is not None:
        shares = shares.loc[[m for m in model_order if m in shares.index]]
        if slices is not None:
            slices = slices.set_index("model").loc[[m for m in model_order if m in set(slices["model"])]].reset_index()
    return ComparisonTables(spec, per_metric, slices, shares)


COMPARISON_COLUMNS = {"item_rank": "rank", "increase": "increase", "w_inc": "w_inc", "wilcoxon_p": "wilcoxon_p",
                      "n_items": "n_items"}  # table column suffix -> compare_to_baseline() column


def with_comparison_columns(table: pd.DataFrame, comparison: ComparisonTables) -> pd.DataFrame:
    """The leaderboard table plus ``{metric}_item_rank``, ``_increase``, ``_w_inc``, ``_wilcoxon_p`` and
    ``_n_items`` per comparison metric (NaN for a model without per-image scores; only ``_item_rank`` and
    ``_n_items`` when the baseline has no scores)."""
    table = table.copy()
    for metric, compared in comparison.per_metric.items():
        for suffix, column in COMPARISON_COLUMNS.items():
            if column in compared:
                values = table["model"].map(compared[column])
                table[f"{metric}_{suffix}"] = values.astype("Int64" if column == "n_items" else float)
    return table


def _cell(value: float, fmt: str) -> str:
    return "–" if value is None or math.isnan(value) else format(value, fmt)


def _comparison_header(comparison: ComparisonTables) -> tuple[list[str], list]:
    """Markdown header cells and, per cell, how to format a row's value."""
    header, formatters = [], []
    for metric, compared in comparison.per_metric.items():
        header.append(f"{metric} rank/img")
        formatters.append(lambda r, m=metric: _cell(r[f"{m}_item_rank"], ".2f"))
        if "increase" in compared:
            header += [f"{metric} inc.", f"{metric} W-Inc", f"{metric} p"]
            formatters += [lambda r, m=metric: _cell(r[f"{m}_increase"], "+.4f"),
                           lambda r, m=metric: _cell(r[f"{m}_w_inc"], "+.4f"),
                           lambda r, m=metric: format_p(r[f"{m}_wilcoxon_p"])]
    return header, formatters


def _comparison_notes(comparison: ComparisonTables, models: list[str]) -> list[str]:
    spec = comparison.spec
    counts = ", ".join(f"{metric}: {_n_paired(compared)} images" for metric, compared in comparison.per_metric.items())
    lines = [f"Per-image comparison on the test images scored by every compared model, each tested once in "
             f"its held-out fold ({counts})"
             + (f", baseline `{spec.baseline}`:" if _has_baseline(comparison) else ":"), ""]
    lines.append("- rank/img: the model's place on each test image (1 = best; tied models share the average place), "
                 "averaged over the images.")
    if _has_baseline(comparison):
        lines += ["- inc.: mean over images of (model score − baseline score).",
                  "- W-Inc: the increase weighted per image by the baseline's rank there, so images the baseline "
                  "finds hard count more: Σ r_base·(s − s_base) / Σ r_base.",
                  "- p: two-sided paired Wilcoxon signed-rank test vs the baseline on the same images (zero "
                  "differences dropped, all zero = 1); a small p says the difference is not chance, not that it "
                  "is large."]
    else:
        lines.append(f"- Baseline `{spec.baseline}` has no per-image scores on this fold manifest: increase, "
                     f"W-Inc and p are omitted." if spec.baseline else
                     "- No baseline named: increase, W-Inc and p are omitted.")
    if spec.lower_is_better & set(spec.metrics):
        lines.append(f"- Lower is better for {', '.join(sorted(spec.lower_is_better & set(spec.metrics)))}: "
                     f"rank 1 = lowest; inc. and W-Inc stay model − baseline.")
    compared_models = set().union(*(set(c.index) for c in comparison.per_metric.values()))
    missing = [m for m in models if m not in compared_models]
    if missing:
        lines.append(f"- No per-image scores (not compared, –): {', '.join(missing)}.")
    return lines


def _n_paired(compared: pd.DataFrame) -> int:
    """Images in a metric's comparison (the same for every compared model)."""
    return int(compared["n_items"].iloc[0]) if len(compared) else 0


def _has_baseline(comparison: ComparisonTables) -> bool:
    return all("increase" in compared for compared in comparison.per_metric.values())


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


def render_markdown(title: str, board: Leaderboard, metrics: list[str], records: list[dict],
                    plot_name: str | None = None, comparison: ComparisonTables | None = None,
                    rank_plot_name: str | None = None, others: dict[BenchmarkId, list[dict]] | None = None) -> str:
    """The table's Markdown; ``others``: the runs of the folder on other benchmarks, counted, not compared."""
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
        lines += [f"Grouped cross-validation on fold manifest `{manifest[:12]}` "
                  f"(`{example.get('fold_manifest', '')}`), data `{example['data_sha256'][:12]}`; "
                  f"mean ± std over folds (sample std), ranked by {metrics[0]}"
                  f"{' (lower is better)' if board.ascending else ''}.", ""]
        header = ["rank", "model", "folds"] + [f"{m} (mean ± std)" for m in metrics] + [f"{metrics[0]} per fold", "fit s/fold"]
        extra_header, extra_cells = _comparison_header(comparison) if comparison else ([], [])
        header += extra_header
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for r in table.to_dict("records"):
            cells = [str(r["rank"]), r["model"], str(r["n_folds"])]
            cells += [format_mean_std(r[f"{m}_mean"], r[f"{m}_std"]) for m in metrics]
            cells += [r[f"{metrics[0]}_per_fold"], f"{r['fit_s_mean']:.0f}"]
            cells += [format_cell(r) for format_cell in extra_cells]
            lines.append("| " + " | ".join(cells) + " |")
        if comparison:
            lines += [""] + _comparison_notes(comparison, list(table["model"]))
        if plot_name:
            lines += ["", f"![{metrics[0]} per fold]({plot_name})"]
        if rank_plot_name:
            lines += ["", f"![{comparison.spec.metrics[0]} rank per image]({rank_plot_name})"]
        if comparison and comparison.slices is not None:
            lines += [""] + render_slices(comparison)
    if failed:
        lines += ["", "Failed runs (not in the table):", ""]
        lines += [f"- {r['model']} fold {r['fold']}: {r.get('error', 'unknown error')}" for r in failed]
    if others:
        lines += [""] + render_other_benchmarks(others)
    return "\n".join(lines) + "\n"


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


def write_leaderboard(records_path: str | Path, out_dir: str | Path, metrics: list[str],
                      comparison: dict | None = None, lower_is_better: Iterable[str] = (),
                      benchmark: BenchmarkId | None = None) -> list[Path]:
    """Write ``<task>__<dataset>__<profile>.md`` and ``.csv`` under ``out_dir``; return the Markdown paths.

    ``comparison`` is the task YAML's ``comparison`` block (see ``ComparisonSpec``); with it the table gets
    the per-image comparison columns, the Markdown a difficulty-slices table (also written as
    ``<stem>__slices.csv``) and a rank-per-image plot (``<stem>__ranks.png``). None: the plain leaderboard.
    ``benchmark``: the (fold manifest sha256, data sha256) to show; by default ``choose_benchmark`` with the
    folder's own fold manifest.
    """
    spec = ComparisonSpec.parse(comparison, metrics) if comparison is not None else None
    records = RunRecords(records_path).load(TABLE_KEYS)
    own_manifest = own_manifest_sha256(Path(records_path).parent)
    written = []
    keys = dict.fromkeys((r["task"], r["dataset"], r["profile"]) for r in records)
    for task, dataset, profile in keys:
        everything = [r for r in records if (r["task"], r["dataset"], r["profile"]) == (task, dataset, profile)]
        shown = benchmark or choose_benchmark(everything, own_manifest)
        subset, others = split_by_benchmark(everything, shown)
        stem = Path(out_dir) / f"{task}__{dataset}__{profile}"
        if others:
            n_other = sum(len(runs) for runs in others.values())
            warnings.warn(f"{records_path} holds runs on {len(others) + 1} fold manifest/data pairs: "
                          f"{stem.name} shows fold manifest {shown[0][:12]}, data {str(shown[1])[:12]}; "
                          f"{n_other} run(s) on the others are listed there, not compared", stacklevel=2)
        board = leaderboard_table(subset, metrics, lower_is_better, shown)
        title = f"matcv leaderboard: {task} on {dataset}, profile {profile}"
        plot = rank_plot = tables = None
        if board.per_fold:
            plot = per_fold_plot(stem.with_suffix(".png"), board.per_fold, metrics[0], title)
        if spec is not None and not board.table.empty:
            tables = comparison_tables(subset, spec, list(board.table["model"]))
            board.table = with_comparison_columns(board.table, tables)
            if len(tables.rank_shares) > 1 and _n_paired(tables.per_metric[spec.metrics[0]]) > 0:
                rank_plot = rank_share_plot(stem.parent / f"{stem.name}__ranks.png", tables.rank_shares,
                                            spec.metrics[0], title)
            if tables.slices is not None:
                atomic_write_text(stem.parent / f"{stem.name}__slices.csv", tables.slices.to_csv(index=False))
        markdown = render_markdown(title, board, metrics, subset, plot.name if plot else None, tables,
                                   rank_plot.name if rank_plot else None, others)
        atomic_write_text(stem.with_suffix(".csv"), board.table.to_csv(index=False))
        written.append(atomic_write_text(stem.with_suffix(".md"), markdown))
    return written
