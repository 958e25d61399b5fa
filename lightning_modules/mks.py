"""First-order MKS (materials knowledge system; Kalidindi et al., pymks's ``LocalizationModel``): the
simple, physics-shaped baseline of the 3-D localization task (Pelz, Unit 4, §5; Tran, Rodgers & Wildey 2020, §4).

The first-order localization linkage writes the local response as a periodic convolution of the phase
indicator fields m_h with influence coefficients α_h,

    ε(x) = Σ_h Σ_r α_h(r) m_h(x − r)      ⇔      ε̂(k) = Σ_h α̂_h(k) m̂_h(k)   (DFT, every frequency k apart),

so the influence coefficients are fitted frequency by frequency, by least squares over the training
volumes. It is exact for a linear (low-contrast, first-order perturbation) response and degrades as the
stiffness contrast grows — the reason high contrast is the interesting regime.

Why a single state plus a constant, not the raw two-state fit: with two phases m0 + m1 = 1, so
m̂0(k) = −m̂1(k) at every k ≠ 0 and the 2 × 2 normal equations are singular at every frequency but
k = 0 (only α̂1 − α̂0 is identifiable there). pymks hides this with a pseudo-inverse; here the model is
written in the identifiable form

    ε(x) = c + (β ⊛ m1)(x),     β = α1 − α0 (the stiff-phase kernel),  c a constant,

fitted in closed form: β̂(k) = Σ_s conj(m̂1_s(k)) ε̂_s(k) / Σ_s |m̂1_s(k)|² for k ≠ 0 (one complex
least-squares problem per frequency, all frequencies at once), and at k = 0 a real two-parameter least
squares of each volume's mean strain on its volume fraction, mean ε_s = c + β̂(0)·vf_s. Swapping the
labels (m1 ↔ 1 − m1) flips β and shifts c, so predictions do not depend on the labelling convention. The
equivalent two-state coefficients are returned as ``influence_coefficients`` in the gauge α0 = c·δ,
α1 = c·δ + β (δ the unit impulse at r = 0): ε = α0 ⊛ m0 + α1 ⊛ m1 holds exactly.

An optional Tikhonov term (``regularization`` λ, relative to the mean of Σ_s|m̂1_s(k)|² over k ≠ 0) damps
frequencies the training microstructures barely excite; frequencies they do not excite at all get β̂ = 0.
Sums run over chunks of training volumes (memory stays bounded at 8550 × 51³), never over frequencies.
"""

from __future__ import annotations

import numpy as np

SPATIAL_AXES = (1, 2, 3)


def _as_volumes(values, name: str) -> np.ndarray:
    array = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=np.float64)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise ValueError(f"{name} must be (n, N, N, N) or (N, N, N), got shape {array.shape}")
    return array


class FirstOrderMKS:
    """First-order MKS localization model on a fixed periodic grid (see the module docstring).

    ``fit(phases, strains)`` with phases (n, N, N, N) in {0, 1} (1 = the stiff phase, though any labelling
    gives the same predictions) and strains (n, N, N, N); ``predict(phases)`` returns float64 strains.
    """

    def __init__(self, regularization: float = 0.0, chunk_size: int = 128) -> None:
        if regularization < 0:
            raise ValueError(f"regularization must be ≥ 0, got {regularization}")
        self.regularization = regularization
        self.chunk_size = chunk_size
        self.grid_shape: tuple[int, int, int] | None = None
        self.kernel_spectrum: np.ndarray | None = None  # β̂ on the rfftn half-grid
        self.constant: float | None = None

    def fit(self, phases, strains) -> FirstOrderMKS:
        phases, strains = _as_volumes(phases, "phases"), _as_volumes(strains, "strains")
        if phases.shape != strains.shape:
            raise ValueError(f"phases {phases.shape} and strains {strains.shape} differ in shape")
        grid = phases.shape[1:]
        numerator = denominator = 0.0
        for start in range(0, len(phases), self.chunk_size):
            m_hat = np.fft.rfftn(phases[start:start + self.chunk_size], axes=SPATIAL_AXES)
            e_hat = np.fft.rfftn(strains[start:start + self.chunk_size], axes=SPATIAL_AXES)
            numerator = numerator + (m_hat.conj() * e_hat).sum(axis=0)
            denominator = denominator + (m_hat.real ** 2 + m_hat.imag ** 2).sum(axis=0)
        denominator = np.asarray(denominator).copy()
        denominator[0, 0, 0] = 0.0  # k = 0 is fitted with the constant below
        excited = denominator > 1e-12 * max(float(denominator.max()), 1e-300)
        ridge = self.regularization * float(denominator[excited].mean()) if excited.any() else 0.0
        spectrum = np.zeros_like(numerator)
        spectrum[excited] = numerator[excited] / (denominator[excited] + ridge)

        # k = 0: mean strain of each volume against its stiff-phase fraction (min-norm if all fractions agree).
        fractions = phases.mean(axis=SPATIAL_AXES)
        mean_strains = strains.mean(axis=SPATIAL_AXES)
        design = np.stack([np.ones_like(fractions), fractions], axis=1)
        (constant, kernel_integral), *_ = np.linalg.lstsq(design, mean_strains, rcond=None)
        spectrum[0, 0, 0] = kernel_integral  # β̂(0) = Σ_r β(r)

        self.grid_shape = tuple(int(n) for n in grid)
        self.kernel_spectrum = spectrum
        self.constant = float(constant)
        return self

    def _check_fitted(self, grid: tuple[int, ...]) -> None:
        if self.kernel_spectrum is None:
            raise RuntimeError("FirstOrderMKS.predict before fit")
        if tuple(grid) != self.grid_shape:
            raise ValueError(f"influence coefficients were fitted on a {self.grid_shape} grid, not {tuple(grid)}")

    def predict(self, phases) -> np.ndarray:
        """Strain fields (n, N, N, N), float64, of microstructures on the fitted grid."""
        phases = _as_volumes(phases, "phases")
        self._check_fitted(phases.shape[1:])
        out = np.empty(phases.shape, dtype=np.float64)
        for start in range(0, len(phases), self.chunk_size):
            chunk = phases[start:start + self.chunk_size]
            response = np.fft.rfftn(chunk, axes=SPATIAL_AXES) * self.kernel_spectrum
            out[start:start + len(chunk)] = self.constant + np.fft.irfftn(response, s=self.grid_shape,
                                                                          axes=SPATIAL_AXES)
        return out

    @property
    def stiff_phase_kernel(self) -> np.ndarray:
        """β(r) = α1(r) − α0(r) in real space, (N, N, N): r = 0 at index (0, 0, 0), periodic."""
        self._check_fitted(self.grid_shape or ())
        return np.fft.irfftn(self.kernel_spectrum, s=self.grid_shape)

    @property
    def influence_coefficients(self) -> np.ndarray:
        """(2, N, N, N) real-space α0, α1 in the gauge α0 = c·δ, α1 = c·δ + β, so that
        ε = α0 ⊛ m0 + α1 ⊛ m1 with m0 = 1 − m1 reproduces ``predict`` exactly."""
        kernel = self.stiff_phase_kernel
        impulse = np.zeros_like(kernel)
        impulse[0, 0, 0] = self.constant
        return np.stack([impulse, impulse + kernel])
