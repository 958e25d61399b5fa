"""Leaderboard pictures: every fold's score per model (mean ± std), and how often each model took each place
on the test images; models in the table's order."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from matcv.datamodules.core.atomic_io import save_figure  # noqa: E402


def per_fold_plot(path: str | Path, per_fold: dict[str, list[float]], metric: str, title: str) -> Path:
    """Dots = folds, diamond and bar = mean ± sample std; best model on top."""
    models = list(per_fold)[::-1]  # per_fold is ranked best first; matplotlib draws bottom-up
    figure, axis = plt.subplots(figsize=(7, 0.5 * len(models) + 1.4))
    for y, model in enumerate(models):
        values = np.asarray(per_fold[model], float)
        axis.scatter(values, np.full_like(values, y), s=18, color="tab:blue", alpha=0.7, zorder=2)
        std = values.std(ddof=1) if len(values) > 1 else 0.0
        axis.errorbar(values.mean(), y, xerr=std, fmt="D", color="black", capsize=4, markersize=5, zorder=3)
    axis.set_yticks(range(len(models)), models)
    axis.set_xlabel(f"{metric} per test fold (dots), mean ± std (diamond)")
    axis.set_title(title, fontsize=9)
    axis.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return save_figure(path, figure, dpi=110)


def rank_share_plot(path: str | Path, shares, metric: str, title: str) -> Path:
    """Stacked bars: the share of test images on which each model ranked 1st, 2nd, ... (ties split evenly);
    ``shares`` is models x places (``matcv.leaderboard.comparison.rank_shares``), best model first."""
    models = list(shares.index)[::-1]  # matplotlib draws bottom-up
    places = list(shares.columns)
    colours = plt.get_cmap("RdYlGn_r")(np.linspace(0.1, 0.9, len(places)))
    figure, axis = plt.subplots(figsize=(7, 0.5 * len(models) + 1.6))
    left = np.zeros(len(models))
    for place, colour in zip(places, colours, strict=True):
        widths = shares.loc[models, place].to_numpy(float)
        axis.barh(range(len(models)), widths, left=left, color=colour, edgecolor="white", label=f"place {place}")
        left += widths
    mean_rank = {m: float((shares.loc[m].to_numpy(float) * np.asarray(places, float)).sum()) for m in models}
    axis.set_yticks(range(len(models)), [f"{m} (mean {mean_rank[m]:.2f})" for m in models])
    axis.set_xlim(0, 1)
    axis.set_xlabel(f"share of test images by {metric} rank among the models (ties split evenly)")
    axis.set_title(title, fontsize=9)
    axis.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False)
    figure.tight_layout()
    return save_figure(path, figure, dpi=110, bbox_inches="tight")
