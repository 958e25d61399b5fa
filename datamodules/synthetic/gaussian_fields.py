"""Random two-phase microstructures from filtered noise (Yang et al. 2019; Tran, Rodgers & Wildey 2020, §2.6 and §4).

A microstructure is uniform white noise smoothed by an anisotropic Gaussian (one standard deviation per
axis, in voxels) and thresholded so that an exact share of the voxels becomes the stiff phase (1) and the
rest the soft phase (0). Names like ``M_gaussian_3_7_5_vf_25_75`` in the source mean sigma = (3, 7, 5)
and volume fractions drawn between 25 % and 75 %.

Why it is done this way:
- The filter is applied in Fourier space (the Gaussian's transfer function on the FFT grid), so the result
  is *periodic*: the elasticity solver assumes periodic boundaries, and a microstructure that is not
  periodic would have a spurious interface across the wrap. It also works for any sigma, even one larger
  than the volume, where a truncated real-space kernel would have to wrap around several times.
- The threshold is a rank, not a level: the ``round(vf * size**d)`` highest filtered values become phase 1,
  so the volume fraction is exact (up to one voxel of rounding) whatever the noise.
- Everything is a function of the numpy Generator passed in, so a dataset is reproducible item by item.
- The functions work in any dimension (the number of sigmas); 2-D fields use the same code.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def periodic_gaussian_filter(field: np.ndarray, sigmas: Sequence[float]) -> np.ndarray:
    """``field`` convolved with a periodic Gaussian of standard deviation ``sigmas[a]`` voxels along axis a.

    The transfer function exp(-2 pi^2 sigma^2 f^2) (f in cycles per voxel) is the Fourier transform of the
    continuous Gaussian, so the result is the convolution with the Gaussian summed over all periodic images.
    A sigma of 0 leaves that axis unfiltered.
    """
    field = np.asarray(field, dtype=np.float64)
    if len(sigmas) != field.ndim:
        raise ValueError(f"need one sigma per axis: {len(sigmas)} sigma(s) for a {field.ndim}-D field")
    if any(s < 0 for s in sigmas):
        raise ValueError(f"sigmas must be >= 0, got {tuple(sigmas)}")
    spectrum = np.fft.rfftn(field)
    transfer = np.ones(spectrum.shape)
    for axis, (n, sigma) in enumerate(zip(field.shape, sigmas)):
        # rfftn halves the last axis only.
        freq = np.fft.rfftfreq(n) if axis == field.ndim - 1 else np.fft.fftfreq(n)
        shape = [1] * field.ndim
        shape[axis] = len(freq)
        transfer = transfer * np.exp(-2.0 * np.pi**2 * sigma**2 * freq**2).reshape(shape)
    return np.fft.irfftn(spectrum * transfer, s=field.shape)


def threshold_at_fraction(field: np.ndarray, volume_fraction: float) -> np.ndarray:
    """uint8 phases: the ``round(volume_fraction * field.size)`` largest values are 1, the others 0.

    By rank (argpartition), so the count is exact even where values tie; a level taken from
    np.quantile would not be.
    """
    if not 0.0 <= volume_fraction <= 1.0:
        raise ValueError(f"volume_fraction must be in [0, 1], got {volume_fraction}")
    flat = np.asarray(field).ravel()
    n_stiff = round(volume_fraction * flat.size)
    phases = np.zeros(flat.size, np.uint8)
    if n_stiff > 0:
        phases[np.argpartition(flat, flat.size - n_stiff)[flat.size - n_stiff:]] = 1
    return phases.reshape(np.shape(field))


def gaussian_microstructure(size: int | Sequence[int], sigmas: Sequence[float], volume_fraction: float,
                            rng: np.random.Generator) -> np.ndarray:
    """A periodic two-phase microstructure, uint8 of shape ``(size,) * len(sigmas)`` (or ``size`` if a shape).

    Phase 1 (the stiff phase) fills exactly ``round(volume_fraction * n_voxels)`` voxels. ``sigmas`` are the
    Gaussian's standard deviations per axis in voxels: a larger sigma along an axis gives grains elongated
    along it. Deterministic from ``rng``.
    """
    shape = (int(size),) * len(sigmas) if np.isscalar(size) else tuple(int(n) for n in size)
    if len(shape) != len(sigmas):
        raise ValueError(f"shape {shape} and sigmas {tuple(sigmas)} differ in dimension")
    if min(shape) < 1:
        raise ValueError(f"size must be positive, got {shape}")
    noise = rng.random(shape)
    return threshold_at_fraction(periodic_gaussian_filter(noise, sigmas), volume_fraction)
