"""Accuracy against training cost, one picture per task: every model on every benchmark of the task as a
point at (training seconds per fold, log scale; first metric's mean), with the mean's confidence interval
(else the std between folds) as error bars. One panel per first metric (a task's benchmarks may rank by
different metrics, e.g. Dice on synthetic panels, IoU on the superalloy). The hardware the runs were timed
on is named under the axis: seconds on different machines are not comparable."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from matcv.datamodules.core.atomic_io import save_figure  # noqa: E402
from matcv.leaderboard.ranking import Board  # noqa: E402

MARKERS = "osD^v<>Pp*hX"


def _number(row: dict, column: str) -> float:
    try:
        value = float(row.get(column, math.nan))
    except (TypeError, ValueError):
        return math.nan
    return value


def format_params(value: float) -> str:
    """7812345 -> "7.8M", 120000 -> "120k"; NaN -> ""."""
    if math.isnan(value):
        return ""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.0f}"


def cost_points(boards: list[Board]) -> tuple[pd.DataFrame, list[str]]:
    """One row per model per board with a training time and a score: board, model, metric, fit_s, y,
    err_low, err_high (distances below/above y, NaN without either), error ("CI", "std" or ""), params,
    hardware. Also notes naming the boards that give no point and why."""
    rows, notes = [], []
    for board in boards:
        table = board.table
        if table.empty:
            continue
        if "fit_s_mean" not in table:
            notes.append(f"{board.name}: no training time (fit_s_mean) in its table.")
            continue
        n_before = len(rows)
        for row in table.to_dict("records"):
            fit_s, y = _number(row, "fit_s_mean"), _number(row, f"{board.metric}_mean")
            if math.isnan(y) or math.isnan(fit_s) or fit_s <= 0:  # a log axis has no place for 0 s
                continue
            low, high = _number(row, f"{board.metric}_ci_low"), _number(row, f"{board.metric}_ci_high")
            std = _number(row, f"{board.metric}_std")
            if not (math.isnan(low) or math.isnan(high)):
                error, below, above = "CI", y - low, high - y
            elif not math.isnan(std):
                error, below, above = "std", std, std
            else:
                error, below, above = "", math.nan, math.nan
            hardware = row.get("hardware")
            rows.append({"board": board.name, "model": str(row["model"]), "metric": board.metric, "fit_s": fit_s,
                         "y": y, "err_low": below, "err_high": above, "error": error,
                         "params": _number(row, "params"),
                         "hardware": "" if hardware is None or pd.isna(hardware) else str(hardware)})
        if len(rows) == n_before:
            notes.append(f"{board.name}: no model with both a training time and a {board.metric} value.")
    return pd.DataFrame(rows), notes


def _hardware_line(points: pd.DataFrame) -> str:
    machines = sorted(set(points["hardware"]) - {""})
    if not machines:
        return "hardware not recorded"
    if len(machines) == 1:
        return f"on {machines[0]}"
    return "on different hardware (times not comparable): " + "; ".join(machines)


def cost_plot(path: str | Path, task: str, boards: list[Board]) -> tuple[Path | None, list[str]]:
    """Write the picture of ``task`` (PNG, atomically); (its path, or None when no board gives a point;
    notes on what is missing). Points are labelled with the model (and its parameter count where the table
    has one); colour and marker say the board."""
    points, notes = cost_points(boards)
    if points.empty:
        Path(path).unlink(missing_ok=True)  # an older picture would no longer describe the tables
        return None, notes + ["No model has both a training time and a score: no accuracy-vs-cost plot."]
    metrics = list(dict.fromkeys(points["metric"]))
    board_names = list(dict.fromkeys(points["board"]))
    colours = plt.get_cmap("tab10")
    figure, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 4.6), squeeze=False)
    for axis, metric in zip(axes[0], metrics, strict=True):
        shown = points[points["metric"] == metric]
        for index, board in enumerate(board_names):
            mine = shown[shown["board"] == board]
            if mine.empty:
                continue
            style = {"color": colours(index % 10), "marker": MARKERS[index % len(MARKERS)]}
            errors = np.vstack([mine["err_low"].to_numpy(float), mine["err_high"].to_numpy(float)])
            # A CI need not hold the mean (e.g. a bootstrap of another statistic): a bar never points inwards.
            errors = np.clip(np.nan_to_num(errors), 0, None)
            axis.errorbar(mine["fit_s"], mine["y"], yerr=errors, fmt="none", ecolor=style["color"],
                          alpha=0.6, capsize=3)
            axis.scatter(mine["fit_s"], mine["y"], s=36, label=board, zorder=3, **style)
            for row in mine.to_dict("records"):
                label = row["model"] + (f" ({format_params(row['params'])})" if not math.isnan(row["params"]) else "")
                axis.annotate(label, (row["fit_s"], row["y"]), textcoords="offset points", xytext=(4, 3),
                              fontsize=7, color=style["color"])
        axis.set_xscale("log")
        axis.set_xlabel(f"training seconds per fold (log scale), {_hardware_line(shown)}", fontsize=8)
        kinds = set(shown["error"]) - {""}
        bars = {"CI": "CI of the mean", "std": "± std between folds"}
        axis.set_ylabel(f"{metric} (mean; bars: {' or '.join(bars[k] for k in sorted(kinds)) or 'none'})",
                        fontsize=8)
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=7, title="benchmark", title_fontsize=7, loc="best")
    labels = "model (parameters)" if points["params"].notna().any() else "model"
    figure.suptitle(f"{task}: accuracy against training cost (labels: {labels})", fontsize=9)
    figure.tight_layout()
    return save_figure(path, figure, dpi=110), notes
