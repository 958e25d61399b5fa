"""Learning curves: a model's test score against the share of its fold's training groups it was trained on.

``matcv bench --train-fraction 0.25,0.5,1`` (or a profile's ``train_fractions``) trains every model x fold again
on nested, seeded subsets of the fold's training groups, on the same validation and test parts, so the scores
at every fraction are comparable. This module turns those runs into a table (``learning_curve_table``: per
model and fraction the mean and std over folds of the fold values, a fold value being the mean over its seeds),
a figure (score against fraction, error bars = std over folds) and a Markdown section, written beside a
benchmark's leaderboard as ``<task>__<dataset>__<profile>__learning_curve.{md,csv,png}`` when its folder has
runs at more than one fraction. The leaderboard's own rows hold the fraction-1 runs only
(``matcv.leaderboard.build.full_data_records``).

Reading it (Cortes et al. 1994; Hestness et al. 2017): a curve still rising at fraction 1 says more data (more
specimens) would help; a curve that is flat well below the best model's score says the model or its training is
the limit, not the amount of data (compare with training for more epochs).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from matcv.datamodules.core.atomic_io import atomic_write_text, save_figure  # noqa: E402
from matcv.datamodules.core.config import fraction_label  # noqa: E402
from matcv.datamodules.core.records import OK, TABLE_KEYS, RunRecords  # noqa: E402
from matcv.leaderboard.build import choose_benchmark, own_manifest_sha256, train_fraction_of  # noqa: E402
from matcv.leaderboard.comparison import BenchmarkId, benchmark_of, select_latest_runs, usable_records  # noqa: E402
from matcv.leaderboard.statistics import seed_spread  # noqa: E402

COLUMNS = ["model", "train_fraction", "mean", "std", "n_folds"]
SUFFIX = "__learning_curve"


def _fraction_runs(records: list[dict], benchmark: BenchmarkId | None = None) -> dict[float, list[dict]]:
    """fraction -> the successful records of one benchmark at that fraction (``benchmark``, by default that of
    the newest successful run: scores on other folds or data are not comparable)."""
    ok = [r for r in usable_records(records) if r["status"] == OK]
    if not ok:
        return {}
    benchmark = benchmark or choose_benchmark(ok)
    by_fraction: dict[float, list[dict]] = {}
    for record in ok:
        if benchmark_of(record) == benchmark:
            by_fraction.setdefault(train_fraction_of(record), []).append(record)
    return dict(sorted(by_fraction.items()))


def learning_curve_table(records: list[dict], metric: str) -> pd.DataFrame:
    """Per model and training fraction: ``mean`` and ``std`` (sample std; NaN with one fold) over folds of
    ``metric``, a fold's value being the mean over its seeds, and ``n_folds``. Of each (model, fold, replicate,
    fraction) the latest successful record of the newest benchmark is used. Rows by model (first-seen order),
    then fraction ascending; columns ``COLUMNS``."""
    rows = []
    by_fraction = _fraction_runs(records)
    models = list(dict.fromkeys(r["model"] for runs in by_fraction.values() for r in runs))
    for model in models:
        for fraction, runs in by_fraction.items():
            folds = select_latest_runs([r for r in runs if r["model"] == model]).folds_of(model)
            if not folds:
                continue
            spread = seed_spread([[r["metrics"].get(metric, math.nan) for r in seeds] for seeds in folds.values()])
            rows.append({"model": model, "train_fraction": fraction, "mean": spread.mean, "std": spread.std,
                         "n_folds": len(folds)})
    return pd.DataFrame(rows, columns=COLUMNS)


def training_groups(records: list[dict]) -> dict[float, float]:
    """fraction -> the mean number of training groups its runs kept per fold (records that say so), for the
    figure's axis: a fraction means little without the number of specimens behind it."""
    counts = {}
    for fraction, runs in _fraction_runs(records).items():
        kept = [r["n_train_groups"] for r in runs if isinstance(r.get("n_train_groups"), int)]
        if kept:
            counts[fraction] = float(np.mean(kept))
    return counts


def write_learning_curve_figure(table: pd.DataFrame, metric: str, path: str | Path, title: str,
                                log_x: bool = False, groups: dict[float, float] | None = None) -> Path:
    """Score against training fraction, one line per model, error bars = std over folds. ``groups`` (fraction ->
    mean training groups per fold) labels the ticks with the number of groups too; ``log_x``: a log2 x axis,
    for fractions that halve."""
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for model, rows in table.groupby("model", sort=False):
        rows = rows.sort_values("train_fraction")
        axis.errorbar(rows["train_fraction"], rows["mean"], yerr=rows["std"].fillna(0.0), marker="o", capsize=4,
                      label=model)
    fractions = sorted(table["train_fraction"].unique())
    if log_x:
        axis.set_xscale("log", base=2)
    groups = groups or {}
    axis.set_xticks(fractions, [fraction_label(f) + (f"\n({groups[f]:.3g} groups)" if f in groups else "")
                                for f in fractions])
    axis.minorticks_off()
    axis.set_xlabel("share of each fold's training groups trained on")
    axis.set_ylabel(f"test {metric} (mean ± std over folds)")
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, frameon=False)
    figure.tight_layout()
    return save_figure(path, figure, dpi=110)


def _cell(value: float) -> str:
    return "–" if isinstance(value, float) and math.isnan(value) else f"{value:.4f}"


def learning_curve_markdown(table: pd.DataFrame, metric: str, figure: str | None, title: str,
                            groups: dict[float, float] | None = None, lower_is_better: bool = False) -> str:
    """The Markdown section: the figure, the table, and how to read it."""
    groups = groups or {}
    better = "lower" if lower_is_better else "higher"
    lines = [f"## Learning curve: {title}", ""]
    if figure:
        lines += [f"![learning curve]({figure})", ""]
    lines += [f"Test {metric} ({better} is better) of every model trained on a share of each fold's training "
              "groups (specimens, never single photos), the subsets nested and the same for every model; the "
              "validation and test parts are those of the full runs, so the scores are comparable. Mean ± std over "
              "folds (a fold's value is the mean over its seeds). The leaderboard's rows are the fraction-1 runs.",
              "", "| model | train fraction | training groups per fold | " + f"{metric} mean | std | folds |",
              "|---|---|---|---|---|---|"]
    for row in table.itertuples(index=False):
        kept = f"{groups[row.train_fraction]:.3g}" if row.train_fraction in groups else "–"
        lines.append(f"| {row.model} | {fraction_label(row.train_fraction)} | {kept} | {_cell(row.mean)} | "
                     f"{_cell(row.std)} | {row.n_folds} |")
    lines += ["", "How to read it: a curve still rising at fraction 1 says more data (more specimens) would help; a "
              "flat curve well below the best model's says the model or its training is the limit, not the amount "
              "of data (compare with training for more epochs). Error bars that overlap between fractions mean the "
              "folds cannot tell those amounts of data apart. Cost: each fraction f is one more run of every "
              "model x fold at about f of its training time.", ""]
    return "\n".join(lines)


def write_learning_curves(records_path: str | Path, out_dir: str | Path, metric: str | None,
                          benchmark: BenchmarkId | None = None, lower_is_better: bool = False) -> Path | None:
    """``<task>__<dataset>__<profile>__learning_curve.{md,csv,png}`` under ``out_dir`` for the benchmark folder
    of ``records_path`` when it has successful runs at more than one training fraction; the Markdown's path, or
    None (nothing to draw). ``benchmark``: the (fold manifest, data) shown, by default the leaderboard's choice."""
    if metric is None:
        return None
    records = RunRecords(records_path).load(TABLE_KEYS)
    if not records:
        return None
    benchmark = benchmark or choose_benchmark(records, own_manifest_sha256(Path(records_path).parent))
    records = [r for r in records if benchmark_of(r) == benchmark]
    if len(_fraction_runs(records, benchmark)) < 2:
        return None
    task, dataset, profile = records[-1]["task"], records[-1]["dataset"], records[-1]["profile"]
    stem = Path(out_dir) / f"{task}__{dataset}__{profile}{SUFFIX}"
    table = learning_curve_table(records, metric)
    groups = training_groups(records)
    title = f"{task} on {dataset}, profile {profile}"
    fractions = sorted(groups or table["train_fraction"].unique())
    # Halving fractions (0.125, 0.25, 0.5, 1) crowd the left of a linear axis.
    log_x = len(fractions) > 2 and max(fractions) / min(fractions) >= 8
    figure = write_learning_curve_figure(table, metric, stem.with_suffix(".png"), title, log_x=log_x, groups=groups)
    atomic_write_text(stem.with_suffix(".csv"), table.to_csv(index=False))
    return atomic_write_text(stem.with_suffix(".md"), learning_curve_markdown(table, metric, figure.name, title,
                                                                             groups, lower_is_better))
