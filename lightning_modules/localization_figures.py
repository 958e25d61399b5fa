"""The test figure of the 3-D localization task: mid-slices of microstructure, true and predicted strain, error."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from matcv.datamodules.core.atomic_io import save_figure


def mid_slice(volume) -> np.ndarray:
    """The plane through the middle of the last axis: it contains axis 0 (the loading direction x1)."""
    volume = np.asarray(volume)
    return np.array(volume[:, :, volume.shape[2] // 2], dtype=np.float32)


def save_localization_examples(path: str | Path, phases: list[np.ndarray], truths: list[np.ndarray],
                               predictions: list[np.ndarray], titles: list[str]) -> Path:
    """One row per volume; true and predicted ε11 share one colour scale over all rows, the error a
    symmetric diverging one, so rows and columns compare at a glance. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers and CI
    import matplotlib.pyplot as plt

    low = min(float(np.min(a)) for a in truths + predictions)
    high = max(float(np.max(a)) for a in truths + predictions)
    errors = [p - t for p, t in zip(predictions, truths)]
    bound = max(float(np.max(np.abs(e))) for e in errors) or 1.0
    rows = len(phases)
    figure, axes = plt.subplots(rows, 4, figsize=(12, 2.8 * rows), squeeze=False)
    for row in range(rows):
        panels = [(phases[row], "gray", 0.0, 1.0, titles[row] + "\nphases (1 = stiff); x1 down, x3 = N/2"),
                  (truths[row], "viridis", low, high, "true ε11 / applied"),
                  (predictions[row], "viridis", low, high, "predicted ε11 / applied"),
                  (errors[row], "RdBu_r", -bound, bound, "predicted − true")]
        for axis, (picture, cmap, vmin, vmax, label) in zip(axes[row], panels):
            image = axis.imshow(picture, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            figure.colorbar(image, ax=axis, fraction=0.046, pad=0.03)
            axis.set_title(label, fontsize=7)
            axis.axis("off")
    figure.tight_layout()
    return save_figure(path, figure, dpi=100)
