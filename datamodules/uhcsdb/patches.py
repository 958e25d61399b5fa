"""Random patches of a rescaled micrograph: how many, and where.

Each micrograph gives ``floor(H * W / (ph * pw) * redundancy)`` random crops (DeCost et al.'s patch count,
redundancy 1.5), so every region is covered about 1.5 times on average whatever the image's size.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_PATCH = (48, 64)  # the autoencoder's patch; the DCGAN profile uses (64, 64)
DEFAULT_REDUNDANCY = 1.5


def crop_count(height: int, width: int, patch_size: tuple[int, int] = DEFAULT_PATCH,
               redundancy: float = DEFAULT_REDUNDANCY, cap: int | None = None) -> int:
    """floor(H * W / (ph * pw) * r) random crops of an H x W image, at most ``cap``."""
    count = math.floor(height * width / (patch_size[0] * patch_size[1]) * redundancy)
    return count if cap is None else min(count, cap)


def draw_crops(image: np.ndarray, count: int, patch_size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """``count`` patches (count, ph, pw) at uniformly random offsets (every position equally likely)."""
    patch_h, patch_w = patch_size
    tops = rng.integers(0, image.shape[0] - patch_h + 1, size=count)
    lefts = rng.integers(0, image.shape[1] - patch_w + 1, size=count)
    windows = np.lib.stride_tricks.sliding_window_view(image, (patch_h, patch_w))
    return windows[tops, lefts].copy()
