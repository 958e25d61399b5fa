"""Domain measurements on one Al–Si micrograph (Yin 2024, §5.6.5).

Used twice: to check the synthetic generator against its own ground truth, and as the domain metrics on
*generated* (GAN) images. So every function takes any plausible grey image — numpy (H, W), float in [-1, 1]
or uint8 0..255 — and returns NaN rather than raising when an image has nothing to measure.

Grey levels (uint8) of ``matcv.datamodules.alloy_micrographs``' rendering, which these thresholds are set for:
α-Al 225, eutectic Al 175, intermetallics 125, Si 25, then a Gaussian blur (sigma 0.5 px) and noise (sd 4).

* ``SI_THRESHOLD`` = 100: "dark" (Si) is grey < 100. A *fixed* level, not Otsu: Otsu splits whichever two
  modes dominate an image (α-Al vs eutectic in a low-Si alloy, Si vs the rest in A393), so it would measure
  different phases on different images and a trend over alloys would compare unlike things. 100 is the
  midpoint of Si (25) and the eutectic Al around it (175), so a blurred straight Si edge keeps its area,
  and it stays 25 grey levels (> 6 noise sd) below the intermetallics (125), which are not Si.
* ``LIGHT_THRESHOLD`` = 200: α-Al (the dendrites) is grey > 200, the midpoint of α-Al (225) and eutectic
  Al (175), measured after a sigma-0.5 smoothing (against pixel noise; thin arms of fast-cooled alloys are 2–3 px wide).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

SI_THRESHOLD = 100  # uint8 grey level: Si (and any "black" phase) is darker than this (module doc)
LIGHT_THRESHOLD = 200  # uint8 grey level: α-Al dendrites are lighter than this after smoothing
LIGHT_SMOOTHING_SIGMA = 0.5
MIN_PARTICLE_AREA_PX = 2  # a 1-px dark speck is noise, not a Si particle
# Secondary arm spacing: directions scanned, shifts considered and the periodicity a direction must show.
SPACING_ANGLES = 36  # every 5 degrees over 180
MIN_SPACING_PX, MAX_SPACING_FRACTION = 3.0, 0.4  # periods from 3 px to 40 % of the shorter image side
# Periodicity of a direction: min(first-peak prominence, R(2P) - R(1.5P)) of the normalised autocorrelation.
# Smoothed random fields (sigma 1–8 px) reach <= 0.21, the generator's dendrites 0.3–1.2: below 0.25, NaN.
MIN_PERIODICITY = 0.25
SHORTEST_STRONG_FRACTION = 0.3  # among directions at least this periodic, the shortest period is λ2


def as_uint8(image) -> np.ndarray:
    """(H, W) uint8 from uint8 0..255 or float in [-1, 1] (a (1, H, W) torch/numpy image is squeezed)."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"expected a one-channel (H, W) image, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.integer):
        return np.clip(array, 0, 255).astype(np.uint8)
    array = np.nan_to_num(array.astype(np.float64), nan=0.0)
    return np.clip(np.rint((array + 1.0) * 127.5), 0, 255).astype(np.uint8)


def si_mask(image) -> np.ndarray:
    """The dark (Si) pixels after binarising at ``SI_THRESHOLD`` (seed: "black area after binarizing")."""
    return as_uint8(image) < SI_THRESHOLD


def si_area_fraction(image) -> float:
    """Fraction of the image that is dark (Si) after binarising."""
    return float(si_mask(image).mean())


def light_mask(image) -> np.ndarray:
    """The α-Al (light) pixels: grey > ``LIGHT_THRESHOLD`` after a light smoothing."""
    grey = cv2.GaussianBlur(as_uint8(image).astype(np.float32), (0, 0), LIGHT_SMOOTHING_SIGMA)
    return grey > LIGHT_THRESHOLD


def _autocorrelation(mask: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation (R(0) = 1) of a non-periodic mask, unbiased by overlap, fftshifted."""
    h, w = mask.shape
    x = mask.astype(np.float64) - mask.mean()
    shape = (2 * h, 2 * w)
    power = np.abs(np.fft.rfft2(x, shape)) ** 2
    corr = np.fft.irfft2(power, shape)
    ones = np.fft.irfft2(np.abs(np.fft.rfft2(np.ones_like(x), shape)) ** 2, shape)
    corr = np.fft.fftshift(corr / np.maximum(ones, 1.0))
    return corr / max(corr[h, w], 1e-12)


def _sample(profile: np.ndarray, position: float) -> float:
    """Linear interpolation of a profile at a fractional index; -1 (no repeat) beyond its end."""
    if position > len(profile) - 1:
        return -1.0
    low = int(position)
    high = min(low + 1, len(profile) - 1)
    return float(profile[low] + (position - low) * (profile[high] - profile[low]))


def _first_period(profile: np.ndarray, step: float, max_period: float) -> tuple[float, float]:
    """(period, prominence) of the first autocorrelation peak after its first minimum; (nan, 0) if none."""
    start = math.ceil(MIN_SPACING_PX / 2 / step)
    minimum = None
    for i in range(max(start, 1), len(profile) - 1):
        if minimum is None:
            if profile[i] <= profile[i - 1] and profile[i] < profile[i + 1]:
                minimum = i
        elif i * step > max_period + step:
            break
        elif profile[i] >= profile[i - 1] and profile[i] > profile[i + 1]:
            a, b, c = profile[i - 1], profile[i], profile[i + 1]
            denominator = a - 2 * b + c
            offset = 0.5 * (a - c) / denominator if denominator < 0 else 0.0
            period = (i + offset) * step
            if not MIN_SPACING_PX <= period <= max_period:
                return math.nan, 0.0
            # A periodic structure repeats: the correlation is high again at 2 periods and low at 1.5.
            # A smooth random field may show one bump, rarely the second one.
            second, between = (_sample(profile, k * period / step) for k in (2.0, 1.5))
            return period, float(min(b - profile[minimum], second - between))
    return math.nan, 0.0


def spacing_by_direction(image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(angles in radians, first period in px, its prominence) of the light mask's autocorrelation."""
    mask = light_mask(image)
    h, w = mask.shape
    angles = np.linspace(0.0, math.pi, SPACING_ANGLES, endpoint=False)
    periods = np.full(len(angles), math.nan)
    prominences = np.zeros(len(angles))
    if mask.mean() < 0.01 or mask.mean() > 0.99:
        return angles, periods, prominences
    corr = _autocorrelation(mask).astype(np.float32)
    step = 0.5
    radii = np.arange(0.0, 2 * MAX_SPACING_FRACTION * min(h, w) + 2, step)  # 2 periods
    for k, angle in enumerate(angles):
        xs = (w + radii * math.cos(angle)).astype(np.float32)[None]
        ys = (h + radii * math.sin(angle)).astype(np.float32)[None]
        profile = cv2.remap(corr, xs, ys, cv2.INTER_LINEAR)[0].astype(np.float64)
        periods[k], prominences[k] = _first_period(profile, step, MAX_SPACING_FRACTION * min(h, w))
    return angles, periods, prominences


def secondary_arm_spacing(image) -> float:
    """λ2 in pixels, from the image alone; NaN for an image without periodic dendrite arms.

    The light (α-Al) mask's autocorrelation is read along 36 directions; along each, the first peak after
    the first dip is the distance between neighbouring light arms separated by a dark (interdendritic)
    gap — Yin 2024's "distance between the neighbourhood white areas separated by a black arm". Secondary
    arms are the finest periodic light structure, and a line at an angle to the arm normal sees a longer
    period (λ2 / cos), while the trunk spacing λ1 is longer still; so λ2 is the *shortest* period among the
    directions whose periodicity is at least 0.3 x the best one. Periodicity = min(prominence of the first
    peak, R(2P) - R(1.5P)): a real period repeats. NaN when no direction reaches ``MIN_PERIODICITY``
    (noise, a uniform image, a fully eutectic one; near-eutectic A369/A339 with 5–10 % α-Al often too).
    """
    _, periods, prominences = spacing_by_direction(image)
    valid = np.isfinite(periods) & (prominences >= MIN_PERIODICITY)
    if not valid.any():
        return math.nan
    strong = valid & (prominences >= SHORTEST_STRONG_FRACTION * prominences[valid].max())
    return float(periods[strong].min())


def si_particle_stats(image) -> dict:
    """Connected (8-neighbour) dark particles of at least ``MIN_PARTICLE_AREA_PX`` pixels.

    Intermetallics are rendered mid-grey, above ``SI_THRESHOLD``, so they are not counted. Returns
    ``particle_count_per_10k_px``, ``mean_particle_area_px``, ``median_particle_area_px`` and
    ``max_particle_area_px`` (NaN areas when there is no particle).
    """
    mask = si_mask(image).astype(np.uint8)
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    areas = areas[areas >= MIN_PARTICLE_AREA_PX]
    if not len(areas):
        return {"particle_count_per_10k_px": 0.0, "mean_particle_area_px": math.nan,
                "median_particle_area_px": math.nan, "max_particle_area_px": math.nan}
    return {"particle_count_per_10k_px": float(len(areas) * 1e4 / mask.size),
            "mean_particle_area_px": float(areas.mean()), "median_particle_area_px": float(np.median(areas)),
            "max_particle_area_px": float(areas.max())}
