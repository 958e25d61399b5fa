"""The test figures of the microstructure task: a grid of generated images, and real / reconstructed / generated
images beside the two-point statistics (and, for grain-boundary images, the grain sizes) of real vs generated."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from matcv.datamodules.core.atomic_io import save_figure
from matcv.datamodules.microstructure_images import to_uint8
from matcv.lightning_modules.microstructure_metrics import (
    grain_areas_from_boundaries,
    phase_indicator,
    two_point_statistics,
)


def tile(images: torch.Tensor, columns: int = 8, gap: int = 2) -> np.ndarray:
    """(N, 1, H, W) in [-1, 1] -> one uint8 grid image, white gaps between tiles."""
    pictures = to_uint8(images[:, 0])
    n, h, w = pictures.shape
    rows = max(1, math.ceil(n / columns))
    grid = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap), 255, np.uint8)
    for k in range(n):
        r, c = divmod(k, columns)
        grid[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = pictures[k]
    return grid


def _mean_s2_profiles(indicator: torch.Tensor, periodic: bool) -> tuple[np.ndarray, np.ndarray]:
    """S2 along x and along y through r = 0 of the set's mean S2 map, from r = 0 outwards."""
    s2 = two_point_statistics(indicator, periodic=periodic).mean(0).cpu().numpy()
    cy, cx = s2.shape[0] // 2, s2.shape[1] // 2
    return s2[cy, cx:], s2[cy:, cx]


def save_generation_figure(path: Path, real: torch.Tensor, reconstructed: torch.Tensor | None,
                           generated: torch.Tensor, image_kind: str, periodic: bool, title: str,
                           n_shown: int = 6) -> Path:
    """Rows of real / reconstructed / generated images, then S2 (and grain sizes) of real vs generated."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers and CI
    import matplotlib.pyplot as plt

    rows = [("real (held-out)", real[:n_shown])]
    if reconstructed is not None:
        rows.append(("reconstructed", reconstructed[:n_shown]))
    rows.append(("generated", generated[:n_shown]))
    plots = 2 if image_kind == "grain-boundary" else 1
    figure = plt.figure(figsize=(2.0 * n_shown, 2.1 * len(rows) + 3.0))
    grid = figure.add_gridspec(len(rows) + 1, max(n_shown, 2 * plots), height_ratios=[1] * len(rows) + [1.5])
    for r, (label, images) in enumerate(rows):
        for c in range(n_shown):
            axis = figure.add_subplot(grid[r, c])
            if c < len(images):
                axis.imshow(images[c, 0].numpy(), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if c == 0:
                axis.set_ylabel(label, fontsize=8)
    width = max(n_shown, 2 * plots) // plots
    real_ind, fake_ind = phase_indicator(real, image_kind), phase_indicator(generated, image_kind)
    axis = figure.add_subplot(grid[len(rows), 0:width])
    for name, indicator, style in (("real", real_ind, "-"), ("generated", fake_ind, "--")):
        along_x, along_y = _mean_s2_profiles(indicator, periodic)
        axis.plot(along_x, "C0" + style, label=f"{name}, along x")
        axis.plot(along_y, "C1" + style, label=f"{name}, along y")
    axis.set_xlabel("shift r (px)")
    axis.set_ylabel("S2(r)")
    axis.set_title("two-point statistics (mean over images)", fontsize=9)
    axis.legend(fontsize=7)
    if image_kind == "grain-boundary":
        axis = figure.add_subplot(grid[len(rows), width:2 * width])
        for name, indicator in (("real", real_ind), ("generated", fake_ind)):
            areas = np.concatenate([grain_areas_from_boundaries(b.numpy() > 0.5, periodic) for b in indicator]
                                   or [np.zeros(0)])
            if len(areas):
                axis.hist(np.log10(areas), bins=30, alpha=0.5, density=True, label=f"{name} ({len(areas)} grains)")
        axis.set_xlabel("log10 grain area (px)")
        axis.set_title("grain-size distribution", fontsize=9)
        axis.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return save_figure(path, figure, dpi=90)
