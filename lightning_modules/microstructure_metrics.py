"""Physical scores of *generated* microstructure images against *real* held-out ones (Tran, Rodgers & Wildey 2020, §2, §5–10).

Pixel losses and Inception-style feature distances say little about whether a generator has learnt a
microstructure. Tran et al. 2020 compare samples with the quantities a materials scientist would measure, so this
module provides them as pure functions (numpy / torch / scipy, no Lightning):

* ``phase_indicator`` — the field the statistics are taken of, following the datamodule's ``image_kind``:
  the grey level rescaled to [0, 1] ("grey"), or the 0/1 indicator of pixels > 0 ("binary": phase 1;
  "grain-boundary": boundary pixels).
* ``two_point_statistics`` — S2(r) = <I(x) I(x + r)>, the FFT autocorrelation of the indicator, with r = 0 at
  the centre of the map (``fftshift``). Periodic images (generated on a torus) use the circular
  autocorrelation; others are zero-padded and each shift is divided by its number of overlapping pixel
  pairs, so no spurious correlation across the wrap is introduced. S2(0) = mean of I², the volume fraction
  for a 0/1 indicator; S2 at long range tends to vf².
* ``s2_distance`` — RMS difference between the *mean* S2 maps of the two sets over the central window of
  shifts (default: up to a quarter of the smaller side, where the estimate is well sampled). This is the
  physically meaningful comparison of Tran et al. 2020 (§2, §5–10): it checks volume fraction, feature size and anisotropy.
* ``volume_fraction`` / ``volume_fraction_error`` — the first-order statistic on its own.
* ``grain_areas_from_boundaries`` / ``grain_size_distance`` — for grain-boundary images (Potts grain growth):
  grains are the 4-connected regions between boundary pixels, merged across the wrap when periodic; the
  distance is the Wasserstein-1 distance between the pooled log10 grain-area distributions, in decades
  (log scale because grain sizes are roughly log-normal and span orders of magnitude).
* ``diversity_ratio`` — mean pairwise L2 distance among generated samples over the same among real images:
  about 1 when the generator is as diverse as the data, towards 0 under mode collapse (Tran et al. 2020 saw it
  with DCGAN on UHCSDB, §10), a failure S2 of the *mean* map cannot see.

Images follow ``matcv.datamodules.microstructure_images``: tensors (N, 1, H, W) float in [-1, 1]. Indicators
are (N, H, W). Numerics are done in float64; results are Python floats or float64 tensors.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage
from scipy.stats import wasserstein_distance

IMAGE_KINDS = ("grey", "binary", "grain-boundary")  # as matcv.datamodules.microstructure_images.IMAGE_KINDS


def _as_tensor(values, name: str) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu()
    try:
        return torch.as_tensor(np.asarray(values))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a tensor or an array, got {type(values).__name__}") from error


def _indicator_stack(indicator, name: str = "indicator") -> torch.Tensor:
    """(N, H, W) float64 tensor, validated."""
    tensor = _as_tensor(indicator, name)
    if tensor.ndim != 3:
        raise ValueError(f"{name} must be (N, H, W) (use phase_indicator on (N, 1, H, W) images), "
                         f"got shape {tuple(tensor.shape)}")
    if tensor.shape[0] == 0 or tensor.shape[1] == 0 or tensor.shape[2] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(tensor.shape)}")
    if tensor.is_complex():
        raise ValueError(f"{name} must be real, got {tensor.dtype}")
    return tensor.to(torch.float64)


def phase_indicator(images, image_kind: str) -> torch.Tensor:
    """Images (N, 1, H, W) in [-1, 1] -> indicator (N, H, W) float32.

    "grey": (x + 1) / 2 in [0, 1] (S2 of the grey level); "binary" / "grain-boundary": (x > 0) as 0/1.
    """
    if image_kind not in IMAGE_KINDS:
        raise ValueError(f"image_kind must be one of {IMAGE_KINDS}, got {image_kind!r}")
    tensor = _as_tensor(images, "images")
    if tensor.ndim != 4 or tensor.shape[1] != 1:
        raise ValueError(f"images must be (N, 1, H, W), got shape {tuple(tensor.shape)}")
    tensor = tensor[:, 0].to(torch.float32)
    if image_kind == "grey":
        return ((tensor + 1.0) / 2.0).clamp(0.0, 1.0)
    return (tensor > 0).to(torch.float32)


def two_point_statistics(indicator, periodic: bool = True) -> torch.Tensor:
    """S2 map of each image, (N, H, W) float64, with r = 0 at index (H // 2, W // 2).

    Entry [n, H // 2 + dy, W // 2 + dx] = mean over x of I(x) I(x + (dy, dx)).
    periodic: circular autocorrelation / (H W). Otherwise the images are zero-padded to (2H, 2W) and each shift
    is divided by its number of overlapping pixel pairs (H - |dy|)(W - |dx|); the map is cropped back to (H, W),
    i.e. shifts dy in [-H // 2, H - H // 2 - 1] (likewise dx).
    """
    stack = _indicator_stack(indicator)
    _, height, width = stack.shape
    if periodic:
        spectrum = torch.fft.rfft2(stack)
        correlation = torch.fft.irfft2(spectrum * spectrum.conj(), s=(height, width)) / (height * width)
        return torch.fft.fftshift(correlation, dim=(-2, -1))
    spectrum = torch.fft.rfft2(stack, s=(2 * height, 2 * width))
    correlation = torch.fft.irfft2(spectrum * spectrum.conj(), s=(2 * height, 2 * width))
    correlation = torch.fft.fftshift(correlation, dim=(-2, -1))  # r = 0 at (H, W)
    top, left = height - height // 2, width - width // 2
    correlation = correlation[:, top:top + height, left:left + width]
    dy = torch.arange(height, dtype=torch.float64) - height // 2
    dx = torch.arange(width, dtype=torch.float64) - width // 2
    pairs = (height - dy.abs())[:, None] * (width - dx.abs())[None, :]
    return correlation / pairs


def s2_distance(generated_indicator, real_indicator, periodic: bool = True, max_shift: int | None = None) -> float:
    """RMS difference of the mean S2 maps of two sets over the window |dy|, |dx| <= max_shift.

    max_shift defaults to a quarter of the smaller image side; it may be at most (side - 1) // 2.
    """
    generated = _indicator_stack(generated_indicator, "generated_indicator")
    real = _indicator_stack(real_indicator, "real_indicator")
    if generated.shape[1:] != real.shape[1:]:
        raise ValueError(f"generated images are {tuple(generated.shape[1:])} but real ones "
                         f"{tuple(real.shape[1:])}: S2 maps are compared shift by shift")
    height, width = real.shape[1:]
    limit = (min(height, width) - 1) // 2
    if max_shift is None:
        max_shift = min(height, width) // 4
    if not isinstance(max_shift, (int, np.integer)) or isinstance(max_shift, bool) or not 0 <= max_shift <= limit:
        raise ValueError(f"max_shift must be an int in [0, {limit}] for {height}x{width} images, got {max_shift!r}")
    mean_generated = two_point_statistics(generated, periodic).mean(dim=0)
    mean_real = two_point_statistics(real, periodic).mean(dim=0)
    cy, cx = height // 2, width // 2
    window = (slice(cy - max_shift, cy + max_shift + 1), slice(cx - max_shift, cx + max_shift + 1))
    difference = mean_generated[window] - mean_real[window]
    return float(torch.sqrt((difference**2).mean()))


def volume_fraction(indicator) -> torch.Tensor:
    """Mean of the indicator over each image, (N,) float64 (phase-1 / boundary fraction; mean grey level)."""
    return _indicator_stack(indicator).mean(dim=(-2, -1))


def volume_fraction_error(generated_indicator, real_indicator) -> float:
    """|mean volume fraction of the generated set - that of the real set|."""
    generated = volume_fraction(_indicator_stack(generated_indicator, "generated_indicator"))
    real = volume_fraction(_indicator_stack(real_indicator, "real_indicator"))
    return float((generated.mean() - real.mean()).abs())


def _boolean_image(boundary, name: str = "boundary") -> np.ndarray:
    array = boundary.detach().cpu().numpy() if isinstance(boundary, torch.Tensor) else np.asarray(boundary)
    if array.ndim != 2:
        raise ValueError(f"{name} must be one (H, W) image, got shape {array.shape}")
    if array.dtype != bool:
        if not np.isin(array, (0, 1)).all():
            raise ValueError(f"{name} must be boolean or 0/1 (e.g. phase_indicator(images, 'grain-boundary') > 0.5)")
        array = array.astype(bool)
    return array


def grain_areas_from_boundaries(boundary, periodic: bool, min_area: int = 2) -> np.ndarray:
    """Areas (pixels, int64, ascending) of the grains of one boundary image (H, W) bool (True = boundary).

    Grains are the 4-connected regions of non-boundary pixels (``scipy.ndimage.label``); with ``periodic`` the
    regions touching opposite edges are merged across the wrap (the image is a torus). Regions smaller than
    ``min_area`` pixels are dropped: a lone pixel enclosed by boundary pixels is a thresholding / generator
    artefact, not a grain, and would otherwise dominate the log-area distribution.
    """
    boundary = _boolean_image(boundary)
    if min_area < 1:
        raise ValueError(f"min_area must be >= 1, got {min_area}")
    labels, count = ndimage.label(~boundary)  # default structure = 4-connectivity in 2-D
    if count == 0:
        return np.zeros(0, np.int64)
    parent = np.arange(count + 1)

    def root(label: int) -> int:
        while parent[label] != label:
            parent[label] = parent[parent[label]]
            label = parent[label]
        return label

    if periodic:
        pairs = np.concatenate([np.stack([labels[0, :], labels[-1, :]], axis=1),
                                np.stack([labels[:, 0], labels[:, -1]], axis=1)])
        pairs = np.unique(pairs[(pairs[:, 0] > 0) & (pairs[:, 1] > 0)], axis=0)
        for a, b in pairs:
            ra, rb = root(int(a)), root(int(b))
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([root(label) for label in range(count + 1)])
    sizes = np.bincount(roots[labels[labels > 0]], minlength=count + 1)
    areas = sizes[sizes > 0]
    return np.sort(areas[areas >= min_area]).astype(np.int64)


def _pooled_log_areas(boundaries, periodic: bool, name: str, min_area: int) -> np.ndarray:
    stack = _indicator_stack(boundaries, name)
    areas = [grain_areas_from_boundaries((image > 0.5).numpy(), periodic, min_area) for image in stack]
    pooled = np.concatenate(areas) if areas else np.zeros(0)
    return np.log10(pooled.astype(np.float64))


def grain_size_distance(generated_boundaries, real_boundaries, periodic: bool, min_area: int = 2) -> float:
    """Wasserstein-1 distance (decades) between the pooled log10 grain-area distributions of two sets.

    Inputs are boundary indicators (N, H, W) (``phase_indicator(images, "grain-boundary")``; > 0.5 = boundary).
    A generated set with no grain at all (only boundary, or only specks below ``min_area``) scores as if all its
    grains had the smallest countable area, ``min_area``: such a generator is ranked worst, not dropped as
    "not applicable". NaN only if the real set has no grains.
    """
    generated = _pooled_log_areas(generated_boundaries, periodic, "generated_boundaries", min_area)
    real = _pooled_log_areas(real_boundaries, periodic, "real_boundaries", min_area)
    if real.size == 0:
        return math.nan
    if generated.size == 0:
        generated = np.array([math.log10(min_area)])
    return float(wasserstein_distance(generated, real))


def _mean_pairwise_distance(images: torch.Tensor, max_pairs: int, seed: int, chunk: int = 256) -> float:
    flat = images.reshape(images.shape[0], -1).to(torch.float64)
    n = flat.shape[0]
    total = n * (n - 1) // 2
    if total <= max_pairs:
        first, second = torch.triu_indices(n, n, offset=1)
    else:
        rng = np.random.default_rng(seed)
        first = rng.integers(0, n, size=max_pairs)
        second = (first + rng.integers(1, n, size=max_pairs)) % n  # uniform over the other images
        first, second = torch.from_numpy(first), torch.from_numpy(second)
    distances = [torch.linalg.vector_norm(flat[first[i:i + chunk]] - flat[second[i:i + chunk]], dim=1)
                 for i in range(0, len(first), chunk)]
    return float(torch.cat(distances).mean())


def diversity_ratio(generated, real, max_pairs: int = 2000, seed: int = 0) -> float:
    """Mean pairwise L2 distance among generated images / the same among real images.

    All pairs are used when there are at most ``max_pairs`` of them, otherwise ``max_pairs`` random pairs drawn
    with ``seed`` (deterministic). ~1: as diverse as the real data; -> 0: mode collapse.
    """
    generated_t, real_t = _as_tensor(generated, "generated"), _as_tensor(real, "real")
    for name, tensor in (("generated", generated_t), ("real", real_t)):
        if tensor.ndim != 4 or tensor.shape[1] != 1:
            raise ValueError(f"{name} images must be (N, 1, H, W), got shape {tuple(tensor.shape)}")
        if tensor.shape[0] < 2:
            raise ValueError(f"{name} needs at least 2 images for pairwise distances, got {tensor.shape[0]}")
    if generated_t.shape[1:] != real_t.shape[1:]:
        raise ValueError(f"generated images are {tuple(generated_t.shape[1:])}, real ones {tuple(real_t.shape[1:])}")
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1, got {max_pairs}")
    real_distance = _mean_pairwise_distance(real_t, max_pairs, seed)
    if real_distance == 0.0:
        raise ValueError("the real images are all identical: diversity ratio undefined")
    return _mean_pairwise_distance(generated_t, max_pairs, seed) / real_distance
