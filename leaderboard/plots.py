"""Leaderboard picture: every fold's score per model, with mean ± std, ranked like the table."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from datamodules.atomic_io import atomic_write_bytes  # noqa: E402


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
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return atomic_write_bytes(path, buffer.getvalue())
