"""Leaderboard tables from run records: mean ± std over grouped folds, per-fold values, fold counts.

For each (task, dataset, profile) the latest successful record of every (model, fold) on the
benchmark's current fold manifest is used; failed runs are listed under the table with their errors.
Written as Markdown (with a per-fold plot, PNG) and CSV, atomically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.records import FAILED, OK, RunRecords
from datamodules.atomic_io import atomic_write_text
from leaderboard.plots import per_fold_plot


def _mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else math.nan


@dataclass
class Leaderboard:
    table: pd.DataFrame  # ranked by the first metric
    failed: list[dict]  # failed runs not superseded by a successful one
    fold_manifest_sha256: str | None  # the folds every row was scored on
    per_fold: dict[str, list[float]] = field(default_factory=dict)  # model -> first metric per fold, ranked


def leaderboard_table(records: list[dict], metrics: list[str]) -> Leaderboard:
    ok = [r for r in records if r.get("status") == OK]
    if not ok:
        return Leaderboard(pd.DataFrame(), [r for r in records if r.get("status") == FAILED], None)
    # Results on different folds are not comparable: keep the fold manifest of the latest run.
    manifest = ok[-1]["fold_manifest_sha256"]
    latest: dict[tuple[str, int], dict] = {}
    for record in ok:
        if record["fold_manifest_sha256"] == manifest:
            latest[(record["model"], record["fold"])] = record
    done = {(r["model"], r["fold"]) for r in latest.values()}
    failed = [r for r in records if r.get("status") == FAILED and r.get("fold_manifest_sha256") == manifest
              and (r["model"], r["fold"]) not in done]
    rows, first_metric = [], {}
    for model in dict.fromkeys(r["model"] for r in latest.values()):
        runs = sorted((r for r in latest.values() if r["model"] == model), key=lambda r: r["fold"])
        row = {"model": model, "n_folds": len(runs), "folds": ",".join(str(r["fold"]) for r in runs)}
        for metric in metrics:
            values = [r["metrics"][metric] for r in runs]
            row[f"{metric}_mean"], row[f"{metric}_std"] = _mean_std(values)
            row[f"{metric}_per_fold"] = " ".join(f"{v:.4f}" for v in values)
        first_metric[model] = [float(r["metrics"][metrics[0]]) for r in runs]
        row["fit_s_mean"] = float(np.mean([r["durations"]["fit_s"] for r in runs]))
        row["config_hash"] = runs[-1]["config_hash"]
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(f"{metrics[0]}_mean", ascending=False, kind="stable").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    # Unrounded values for the plot, in the table's ranking.
    return Leaderboard(table, failed, manifest, {model: first_metric[model] for model in table["model"]})


def format_mean_std(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}" if not math.isnan(std) else f"{mean:.4f}"


def render_markdown(title: str, board: Leaderboard, metrics: list[str], records: list[dict],
                    plot_name: str | None = None) -> str:
    table, failed, manifest = board.table, board.failed, board.fold_manifest_sha256
    lines = [f"# {title}", ""]
    if table.empty:
        lines.append("No successful runs yet.")
    else:
        example = next(r for r in records if r.get("fold_manifest_sha256") == manifest)
        lines += [f"Grouped cross-validation on fold manifest `{manifest[:12]}` "
                  f"(`{example.get('fold_manifest', '')}`), data `{example['data_sha256'][:12]}`; "
                  f"mean ± std over folds (sample std), ranked by {metrics[0]}.", ""]
        header = ["rank", "model", "folds"] + [f"{m} (mean ± std)" for m in metrics] + [f"{metrics[0]} per fold", "fit s/fold"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for row in table.itertuples(index=False):
            r = row._asdict()
            cells = [str(r["rank"]), r["model"], str(r["n_folds"])]
            cells += [format_mean_std(r[f"{m}_mean"], r[f"{m}_std"]) for m in metrics]
            cells += [r[f"{metrics[0]}_per_fold"], f"{r['fit_s_mean']:.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
        if plot_name:
            lines += ["", f"![{metrics[0]} per fold]({plot_name})"]
    if failed:
        lines += ["", "Failed runs (not in the table):", ""]
        lines += [f"- {r['model']} fold {r['fold']}: {r.get('error', 'unknown error')}" for r in failed]
    return "\n".join(lines) + "\n"


def write_leaderboard(records_path: str | Path, out_dir: str | Path, metrics: list[str]) -> list[Path]:
    """Write ``<task>__<dataset>__<profile>.md`` and ``.csv`` under ``out_dir``; return the Markdown paths."""
    records = RunRecords(records_path).load()
    written = []
    keys = dict.fromkeys((r["task"], r["dataset"], r["profile"]) for r in records)
    for task, dataset, profile in keys:
        subset = [r for r in records if (r["task"], r["dataset"], r["profile"]) == (task, dataset, profile)]
        board = leaderboard_table(subset, metrics)
        stem = Path(out_dir) / f"{task}__{dataset}__{profile}"
        title = f"matcv leaderboard: {task} on {dataset}, profile {profile}"
        plot = None
        if board.per_fold:
            plot = per_fold_plot(stem.with_suffix(".png"), board.per_fold, metrics[0], title)
        markdown = render_markdown(title, board, metrics, subset, plot.name if plot else None)
        atomic_write_text(stem.with_suffix(".csv"), board.table.to_csv(index=False))
        written.append(atomic_write_text(stem.with_suffix(".md"), markdown))
    return written

