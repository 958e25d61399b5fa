"""FFT (Moulinec–Suquet) solver for periodic linear elasticity of two-phase voxel microstructures.

Why: the 3-D localization task (Yang et al. Acta Mater. 166 (2019) 335; Tran, Rodgers & Wildey 2020, §4) predicts the local
strain field ε11 of a two-phase composite under a macroscopic strain. The published finite-element targets
only come as a tiny sample, so the ground truth for generated microstructures is computed here, batched and
on CPU or GPU with ``torch.fft``.

Physics: both phases are isotropic with the same Poisson ratio ν; phase 0 (soft) has Young's modulus 1,
phase 1 (stiff) has Young's modulus ``contrast``. The voxel grid is periodic with voxel size 1 and a
macroscopic strain E (default e1⊗e1, the MKS setting whose target is ε11 / E11) is imposed as the mean strain.

Scheme (Moulinec & Suquet, CMAME 157 (1998) 69, "basic scheme"), a fixed-point iteration on the strain:

    σ = C(x):ε                                     (real space, per voxel)
    ε̂(ξ) ← ε̂(ξ) − Γ̂⁰(ξ):σ̂(ξ)   for ξ ≠ 0,   ε̂(0) = E   (Fourier space)

with the Green operator of a homogeneous isotropic reference medium (λ0, μ0) applied to a symmetric σ̂:

    Γ̂⁰:σ̂ = [ξ⊗(σ̂ξ) + (σ̂ξ)⊗ξ] / (2μ0|ξ|²) − (λ0+μ0)/(μ0(λ0+2μ0)) · ξ⊗ξ (ξ·σ̂ξ)/|ξ|⁴.

The reference Lamé constants are the mid-points of the two phases' Lamé constants: that keeps the basic
scheme convergent for any contrast (the reference is stiffer than half of either phase) with a contraction
factor ≈ (contrast − 1)/(contrast + 1), i.e. tens of iterations at contrast 10 and a few hundred at contrast 50.

``scheme="cg"`` solves the same Lippmann–Schwinger equation Γ⁰:C:ε = 0 (ε = E + compatible fluctuation) by
conjugate gradients (Zeman et al., J. Comput. Phys. 229 (2010) 8065) with the same Green operator and the same
stopping rule: ~√contrast instead of ~contrast iterations (51 instead of 261 at contrast 50 on 51³ grids).

Convergence is checked on equilibrium, per volume, before each update (Moulinec & Suquet's criterion):

    residual = sqrt(Σ_ξ |ξ·σ̂(ξ)|²) / |σ̂(0)|   with ξ = 2π k / N (voxel size 1), |·| the Frobenius norm,

which by Parseval is the RMS of div σ divided by the norm of the mean stress. A volume stops when
residual < tol; the batch stops when every volume has stopped (converged volumes are frozen and dropped from
the work, so batched and one-by-one solutions are the same). ``iterations`` counts stress evaluations /
equilibrium checks, i.e. strain updates + 1: a homogeneous grid, already in equilibrium under the uniform
initial strain, needs exactly 1. Not converging within ``max_iterations`` issues a ``RuntimeWarning`` (it does
not raise: the caller gets the field and ``converged``/``residual`` to decide).

Even grid sizes: at a Nyquist frequency (k = N/2 along some axis) the sign of that wave-vector component is
ambiguous for a real field, so Γ̂⁰ is set to zero at every frequency having a Nyquist component and those
frequencies are left out of the residual: the strain keeps no Nyquist-frequency content (its initial value).
Odd grid sizes have no such frequency and are the recommended choice; on even grids the solution is exact
only where the true field has no Nyquist content (e.g. slabs of even width starting at even indices).

Finite elements (``discretization`` other than "fft"): one 8-node trilinear hexahedron per voxel, nodes at the
voxel corners, total displacement E·x + u with u periodic, solved for u by preconditioned conjugate gradients
(``_hexahedral_scheme``). "hex8-bbar-yang2019" reproduces the published finite-element labels of Yang et al.
(2019) (0.0002 % MASE on all ten volumes of their contrast-10 sample, i.e. their rounding, against 0.0002–0.027 %
for the periodic "hex8-bbar"): their model ties u1 across the x1 faces everywhere (u1(L, y, z) = u1(0, y, z) + E11 L)
but, on the lines where an x1 face meets an x2 or x3 face (corners excepted), not across the x2 / x3 faces, so u1
there has two independent copies, one on each side; everything else is periodic. That is a slit along those
eight edge lines, not a periodic medium: ε11 of the elements next to them differs from the periodic solution
(0.1–1 % MASE on dense two-phase volumes), and results depend on where the periodic cell is cut.

Conventions: tensors are returned in full 3×3 form, (B, 3, 3, Nx, Ny, Nz), with *tensor* shear components
(ε12 = ε21 = γ12 / 2). The 6×6 stiffnesses (:func:`effective_stiffness`, :func:`voigt_reuss_bounds`) are in
Voigt notation ordered (11, 22, 33, 23, 13, 12) with *engineering* shear strains (γij = 2εij), so that
σ_voigt = C ε_voigt and C44 = μ for an isotropic material.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

# Symmetric tensors are carried as 6 components in Voigt order (11, 22, 33, 23, 13, 12).
_VOIGT_PAIRS = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
# _FULL_FROM_VOIGT[i][j] = index of component ij among the 6.
_FULL_FROM_VOIGT = ((0, 5, 4), (5, 1, 3), (4, 3, 2))


@dataclass
class ElasticSolution:
    """Solution of :func:`solve_elasticity` for a batch of B volumes on an (Nx, Ny, Nz) grid."""

    strain: torch.Tensor      # (B, 3, 3, Nx, Ny, Nz) full strain tensor field (tensor shear components)
    stress: torch.Tensor      # (B, 3, 3, Nx, Ny, Nz) stress C(x):strain
    iterations: torch.Tensor  # (B,) int64, stress evaluations / equilibrium checks each volume needed
    residual: torch.Tensor    # (B,) final equilibrium residual sqrt(Σ|ξ·σ̂|²)/|σ̂(0)|
    converged: torch.Tensor   # (B,) bool, residual < tol


def lame_constants(young: float, poisson: float) -> tuple[float, float]:
    """Lamé constants (λ, μ) of an isotropic material from Young's modulus and Poisson's ratio."""
    if not (math.isfinite(young) and young > 0):
        raise ValueError(f"Young's modulus must be a finite positive number, got {young!r}")
    if not (-1.0 < poisson < 0.5):
        raise ValueError(f"Poisson's ratio must lie in (-1, 0.5) for a stable isotropic solid, got {poisson!r}")
    lam = young * poisson / ((1.0 + poisson) * (1.0 - 2.0 * poisson))
    mu = young / (2.0 * (1.0 + poisson))
    return lam, mu


def isotropic_stiffness_voigt(young: float, poisson: float) -> np.ndarray:
    """6×6 isotropic stiffness, Voigt order (11, 22, 33, 23, 13, 12), engineering shear strains."""
    lam, mu = lame_constants(young, poisson)
    stiffness = np.zeros((6, 6))
    stiffness[:3, :3] = lam
    stiffness[np.arange(3), np.arange(3)] = lam + 2.0 * mu
    stiffness[np.arange(3, 6), np.arange(3, 6)] = mu
    return stiffness


def _check_contrast(contrast: float) -> float:
    contrast = float(contrast)
    if not (math.isfinite(contrast) and contrast > 0):
        raise ValueError(f"contrast (Young's modulus of the stiff phase 1 / soft phase 0) must be a finite "
                         f"positive number, got {contrast!r}")
    return contrast


def _as_phase_tensor(phases, device) -> tuple[torch.Tensor, bool]:
    """(B, Nx, Ny, Nz) tensor of 0/1 on ``device`` and whether the input was a single (Nx, Ny, Nz) volume."""
    if isinstance(phases, torch.Tensor):
        tensor = phases.detach()
    else:
        array = np.asarray(phases)
        if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            raise ValueError(f"phases must be a numeric array of 0 (soft) and 1 (stiff), got dtype {array.dtype}")
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device is not None:
        tensor = tensor.to(device)
    if tensor.ndim not in (3, 4):
        raise ValueError(f"phases must have shape (Nx, Ny, Nz) or (B, Nx, Ny, Nz), got shape {tuple(tensor.shape)}")
    if tensor.numel() == 0:
        raise ValueError(f"phases is empty (shape {tuple(tensor.shape)})")
    if tensor.is_complex():
        raise ValueError("phases must be real 0/1 values, got a complex tensor")
    is_valid = (tensor == 0) | (tensor == 1)
    if not bool(is_valid.all()):
        bad = torch.unique(tensor[~is_valid])[:5].tolist()
        raise ValueError(f"phases must contain only 0 (soft) and 1 (stiff); found other values, e.g. {bad}")
    single = tensor.ndim == 3
    return (tensor.unsqueeze(0) if single else tensor), single


def _macro_strain_voigt(macro_strain, batch: int, dtype, device) -> torch.Tensor:
    """(B, 6) mean strain in tensor components from a (3, 3) or (B, 3, 3) symmetric macroscopic strain."""
    if macro_strain is None:
        macro = torch.zeros(3, 3, dtype=torch.float64)
        macro[0, 0] = 1.0
    else:
        macro = torch.as_tensor(np.asarray(macro_strain.cpu() if isinstance(macro_strain, torch.Tensor)
                                           else macro_strain, dtype=np.float64))
    if macro.shape == (3, 3):
        macro = macro.expand(batch, 3, 3)
    if macro.shape != (batch, 3, 3):
        raise ValueError(f"macro_strain must have shape (3, 3) or ({batch}, 3, 3), got {tuple(macro.shape)}")
    if not bool(torch.isfinite(macro).all()):
        raise ValueError("macro_strain contains non-finite values")
    scale = macro.abs().amax(dim=(1, 2))
    if bool((scale == 0).any()):
        raise ValueError("macro_strain must be non-zero (the residual is relative to the mean stress)")
    if bool(((macro - macro.transpose(1, 2)).abs().amax(dim=(1, 2)) > 1e-12 * scale).any()):
        raise ValueError("macro_strain must be a symmetric strain tensor (tensor shear components, "
                         "E12 = E21 = γ12/2)")
    voigt = torch.stack([macro[:, i, j] for i, j in _VOIGT_PAIRS], dim=1)
    return voigt.to(dtype=dtype, device=device)


def _frequency_grids(shape: tuple[int, int, int], dtype, device):
    """Unit wave vectors n = ξ/|ξ| (zero at ξ = 0 and at Nyquist frequencies), |ξ|² and Hermitian weights.

    Grids have the ``rfftn`` half-spectrum shape (Nx, Ny, Nz//2 + 1) with a trailing axis of 1 so that they
    broadcast against ``torch.view_as_real`` views (…, 2) of complex tensors.
    """
    nx, ny, nz = shape
    axes = []
    nyquist = []
    for size, frequencies in ((nx, torch.fft.fftfreq(nx, dtype=torch.float64)),
                              (ny, torch.fft.fftfreq(ny, dtype=torch.float64)),
                              (nz, torch.fft.rfftfreq(nz, dtype=torch.float64))):
        axes.append(2.0 * math.pi * frequencies)
        # fftfreq returns -0.5 at the Nyquist index of an even size (rfftfreq +0.5): both mean k = N/2.
        nyquist.append((frequencies.abs() == 0.5) if size % 2 == 0 else torch.zeros_like(frequencies, dtype=torch.bool))
    xi = torch.stack(torch.meshgrid(*axes, indexing="ij"))  # (3, Nx, Ny, Nz//2+1)
    has_nyquist = nyquist[0][:, None, None] | nyquist[1][None, :, None] | nyquist[2][None, None, :]
    xi_squared = (xi ** 2).sum(0)
    solved = (xi_squared > 0) & ~has_nyquist  # frequencies the Green operator acts on
    unit = torch.where(solved, xi / xi_squared.clamp_min(1e-300).sqrt(), torch.zeros_like(xi))
    xi_squared = torch.where(solved, xi_squared, torch.zeros_like(xi_squared))
    # rfftn keeps half of the spectrum: every kz column except kz = 0 (and the even-size Nyquist column,
    # excluded anyway) stands for itself and its complex conjugate in the full sum over ξ.
    weight = torch.full((nz // 2 + 1,), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    weighted_xi_squared = xi_squared * weight
    unit = unit.to(dtype=dtype, device=device)[..., None]
    return unit, weighted_xi_squared.to(dtype=dtype, device=device)


def _stress(strain: torch.Tensor, lam: torch.Tensor, two_mu: torch.Tensor) -> torch.Tensor:
    """σ = λ tr(ε) I + 2μ ε for (A, 6, …) strains and (A, …) Lamé fields."""
    stress = strain * two_mu[:, None]
    stress[:, :3] += (lam * strain[:, :3].sum(1))[:, None]
    return stress


def _full_tensor(voigt: torch.Tensor) -> torch.Tensor:
    """(B, 6, …) Voigt-ordered tensor components -> (B, 3, 3, …) full symmetric tensors."""
    index = torch.tensor(_FULL_FROM_VOIGT, device=voigt.device).reshape(-1)
    full = voigt.index_select(1, index)
    return full.reshape(voigt.shape[0], 3, 3, *voigt.shape[2:])


SCHEMES = ("basic", "cg")


def solve_elasticity(phases, contrast: float, poisson: float = 0.3, macro_strain=None, *, dtype=torch.float64,
                     device=None, tol: float = 1e-6, max_iterations: int = 1000,
                     scheme: str = "basic", discretization: str = "fft") -> ElasticSolution:
    """Strain and stress fields of periodic two-phase voxel volumes under a macroscopic strain.

    Args:
        phases: (Nx, Ny, Nz) or (B, Nx, Ny, Nz) numpy array or torch tensor of 0 (soft, E = 1) and 1 (stiff,
            E = ``contrast``); any grid sizes (odd recommended, see the module docstring).
        contrast: Young's modulus of phase 1 divided by that of phase 0.
        poisson: Poisson's ratio of both phases.
        macro_strain: imposed mean strain, symmetric (3, 3) or per volume (B, 3, 3), tensor shear components;
            default e1⊗e1 (ε11 = 1, the rest 0).
        dtype: torch.float64 (default) or torch.float32.
        device: where to compute; default the device of a torch ``phases``, else the CPU.
        tol: equilibrium residual sqrt(Σ_ξ |ξ·σ̂|²)/|σ̂(0)| below which a volume has converged. float32
            round-off floors the residual at ≈ 6e-7 (contrast 10) to ≈ 2e-6 (contrast 50) on 21³ grids: use
            tol ≥ 1e-5 with float32.
        max_iterations: stress evaluations allowed per volume; a ``RuntimeWarning`` reports volumes that did
            not converge (their last iterate is returned with ``converged`` False).
        scheme: ``"basic"`` (Moulinec–Suquet fixed point, the module docstring) or ``"cg"`` (conjugate gradients
            on the Lippmann–Schwinger equation, Zeman et al. 2010: iterations grow like √contrast instead of
            contrast, ~5x fewer at contrast 50). Both stop on the same equilibrium residual. Used by
            ``discretization="fft"`` only.
        discretization: ``"fft"`` (default: the voxel Green operator above), ``"hex8-bbar"`` (the periodic
            finite-element problem of the voxel mesh with 8-node trilinear hexahedra and Hughes' B-bar, the
            element of the published finite-element localization data), ``"hex8-bbar-yang2019"`` (the same element
            with the boundary ties of those published data, which it reproduces to their rounding; see "Finite
            elements" below) or ``"hex8"`` (the same element with full 2×2×2 Gauss integration). The hexahedral
            ones are solved by conjugate gradients preconditioned with the reference medium's stiffness inverted
            in Fourier space (Schneider, Merkert & Kabel 2017); strain and stress are element means (one element
            per voxel), the residual is the RMS nodal force over the norm of the mean stress.

    Returns:
        :class:`ElasticSolution` with a batch axis even for a single volume.
    """
    contrast = _check_contrast(contrast)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if not (tol > 0):
        raise ValueError(f"tol must be positive, got {tol!r}")
    if int(max_iterations) < 1:
        raise ValueError(f"max_iterations must be at least 1, got {max_iterations!r}")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    if discretization not in DISCRETIZATIONS:
        raise ValueError(f"discretization must be one of {DISCRETIZATIONS}, got {discretization!r}")
    lam_soft, mu_soft = lame_constants(1.0, poisson)
    lam_stiff, mu_stiff = lame_constants(contrast, poisson)
    phase, _ = _as_phase_tensor(phases, device)
    device = phase.device
    batch, shape = phase.shape[0], tuple(phase.shape[1:])

    # Reference medium: mid-point of the phases' Lamé constants.
    lam_ref, mu_ref = 0.5 * (lam_soft + lam_stiff), 0.5 * (mu_soft + mu_stiff)
    stiff = phase.to(dtype)
    lam = lam_soft + (lam_stiff - lam_soft) * stiff
    two_mu = 2.0 * (mu_soft + (mu_stiff - mu_soft) * stiff)
    macro = _macro_strain_voigt(macro_strain, batch, dtype, device)
    result = _Result(batch, shape, dtype, device)
    if discretization == "fft":
        green = _GreenOperator(shape, lam_ref, mu_ref, dtype, device)
        iterate = _basic_scheme if scheme == "basic" else _conjugate_gradient_scheme
        iterate(green, lam, two_mu, macro, result, tol, int(max_iterations))
    else:
        operator = _HexOperator(shape, discretization, lam_soft / mu_soft, mu_ref, dtype, device)
        _hexahedral_scheme(operator, lam, two_mu, macro, result, tol, int(max_iterations))
        scheme = "pcg"

    not_converged = int((~result.converged).sum())
    if not_converged:
        warnings.warn(f"FFT elasticity solver: {not_converged} of {batch} volume(s) did not reach tol={tol:g} in "
                      f"{int(max_iterations)} iterations (worst residual {float(result.residuals.max()):.3g}); "
                      f"contrast {contrast:g}, dtype {dtype}, discretization {discretization}, scheme {scheme}"
                      + ("; float32 round-off floors the residual near 1e-6, use tol >= 1e-5"
                         if dtype == torch.float32 else ""), RuntimeWarning, stacklevel=2)
    return ElasticSolution(strain=_full_tensor(result.strain), stress=_full_tensor(result.stress),
                           iterations=result.iterations, residual=result.residuals, converged=result.converged)


_SPATIAL_DIMS = (-3, -2, -1)


class _GreenOperator:
    """Γ̂⁰ of the isotropic reference medium (λ0, μ0) and the equilibrium residual, on rfftn spectra viewed as
    real (…, 2) tensors. Factors are precomputed once (grid-sized, broadcast over the batch and the re/im axis):
    Γ̂⁰:σ̂ = [n⊗t + t⊗n]/(2μ0) − coupling · n⊗n (n·t) with n = ξ/|ξ| and t = σ̂n; zero where n = 0."""

    def __init__(self, shape: tuple[int, int, int], lam_ref: float, mu_ref: float, dtype, device) -> None:
        self.shape, self.lam_ref, self.mu_ref = shape, lam_ref, mu_ref
        coupling = (lam_ref + mu_ref) / (mu_ref * (lam_ref + 2.0 * mu_ref))
        unit, weighted_xi_squared = _frequency_grids(shape, dtype, device)
        self.normal = unit.unbind(0)
        self.normal_over_mu = [component / mu_ref for component in self.normal]
        self.normal_over_two_mu = [component / (2.0 * mu_ref) for component in self.normal]
        self.coupled_normal_pairs = [coupling * self.normal[k] * self.normal[h] for k, h in _VOIGT_PAIRS]
        spectrum_shape = unit.shape[1:-1]
        self.divergence_weights = weighted_xi_squared[None, ..., None].expand(3, *spectrum_shape, 2).reshape(-1)

    def traction(self, stress_re: torch.Tensor) -> torch.Tensor:
        """t = σ̂n of (A, 6, Nx, Ny, Nzr, 2) spectra; |ξ| t is the Fourier transform of div σ."""
        traction = stress_re.new_empty((stress_re.shape[0], 3) + stress_re.shape[2:])
        for i in range(3):
            row = [stress_re[:, _FULL_FROM_VOIGT[i][j]] for j in range(3)]
            torch.mul(row[0], self.normal[0], out=traction[:, i])
            traction[:, i].addcmul_(row[1], self.normal[1]).addcmul_(row[2], self.normal[2])
        return traction

    def residual(self, traction: torch.Tensor, stress_re: torch.Tensor) -> torch.Tensor:
        """(A,) float64 sqrt(Σ_ξ|ξ·σ̂|²)/|σ̂(0)|."""
        divergence_sq = traction.reshape(traction.shape[0], -1).square() @ self.divergence_weights
        mean_stress = stress_re[:, :, 0, 0, 0, 0]  # σ̂(0) is real
        mean_stress_norm = (mean_stress[:, :3].square().sum(1) + 2.0 * mean_stress[:, 3:].square().sum(1)).sqrt()
        # Unnormalised FFT: σ̂(0) = N<σ> and, by Parseval, Σ_ξ|ξ·σ̂|² = N²<|div σ|²>, so the N's cancel.
        return divergence_sq.to(torch.float64).sqrt() / mean_stress_norm.to(torch.float64)

    def apply(self, traction: torch.Tensor) -> torch.Tensor:
        """Γ⁰:σ in real space, (A, 6, Nx, Ny, Nz), from the traction spectrum of σ."""
        t = traction.unbind(1)
        normal_traction = t[0] * self.normal[0]
        normal_traction.addcmul_(t[1], self.normal[1]).addcmul_(t[2], self.normal[2])
        correction = torch.empty((traction.shape[0], 6) + traction.shape[2:], dtype=traction.dtype,
                                 device=traction.device)
        for c, (k, h) in enumerate(_VOIGT_PAIRS):
            out = correction[:, c]
            if k == h:
                torch.mul(t[k], self.normal_over_mu[k], out=out)
            else:
                torch.mul(t[k], self.normal_over_two_mu[h], out=out)
                out.addcmul_(t[h], self.normal_over_two_mu[k])
            out.addcmul_(normal_traction, self.coupled_normal_pairs[c], value=-1.0)
        # Γ̂⁰ vanishes at ξ = 0, so applying it never changes a mean strain.
        return torch.fft.irfftn(torch.view_as_complex(correction), s=self.shape, dim=_SPATIAL_DIMS)

    def energy_product(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """(A,) Σ_x u : C⁰ : v of (A, 6, …) tensor-component fields (shear components count twice)."""
        trace = u[:, :3].sum(1) * v[:, :3].sum(1)
        contraction = (u[:, :3] * v[:, :3]).sum(1) + 2.0 * (u[:, 3:] * v[:, 3:]).sum(1)
        return (self.lam_ref * trace + 2.0 * self.mu_ref * contraction).flatten(1).sum(1)


class _Result:
    """Per-volume outputs, filled as volumes finish (converged volumes are frozen and leave the work arrays)."""

    def __init__(self, batch: int, shape, dtype, device) -> None:
        self.strain = torch.empty((batch, 6, *shape), dtype=dtype, device=device)
        self.stress = torch.empty_like(self.strain)
        self.iterations = torch.zeros(batch, dtype=torch.int64, device=device)
        self.residuals = torch.full((batch,), float("nan"), dtype=torch.float64, device=device)
        self.converged = torch.zeros(batch, dtype=torch.bool, device=device)

    def finish(self, finished, strain, stress, iteration: int, residual, tol: float) -> None:
        """Store the volumes ``finished`` (their batch indices) with their final fields and residuals."""
        self.strain[finished] = strain
        self.stress[finished] = stress
        self.iterations[finished] = iteration
        self.residuals[finished] = residual
        self.converged[finished] = residual < tol


def _basic_scheme(green: _GreenOperator, lam, two_mu, macro, result: _Result, tol: float, max_iterations: int) -> None:
    """Moulinec–Suquet: ε ← ε − Γ⁰:σ(ε), from the uniform strain E."""
    batch = lam.shape[0]
    strain = macro[:, :, None, None, None].expand(batch, 6, *green.shape).clone()
    active = torch.arange(batch, device=lam.device)  # volumes still iterating; `strain` etc. hold only these
    for iteration in range(1, max_iterations + 1):
        stress = _stress(strain, lam, two_mu)
        stress_re = torch.view_as_real(torch.fft.rfftn(stress, dim=_SPATIAL_DIMS))  # (A, 6, Nx, Ny, Nzr, 2)
        traction = green.traction(stress_re)
        residual = green.residual(traction, stress_re)
        done = residual < tol
        if iteration == max_iterations:
            done = torch.ones_like(done)
        if bool(done.any()):
            result.finish(active[done], strain[done], stress[done], iteration, residual[done], tol)
            if bool(done.all()):
                return
            keep = ~done
            active, strain, lam, two_mu, traction = active[keep], strain[keep], lam[keep], two_mu[keep], traction[keep]
        strain -= green.apply(traction)


def _conjugate_gradient_scheme(green: _GreenOperator, lam, two_mu, macro, result: _Result, tol: float,
                               max_iterations: int) -> None:
    """Conjugate gradients for the strain fluctuation x (compatible, zero mean) of Γ⁰:C:(E + x) = 0
    (Zeman, Vondřejc, Novák & Marek, J. Comput. Phys. 229 (2010) 8065). With the reference medium's energy
    product <u, v> = Σ u:C⁰:v, A = Γ⁰C is symmetric positive definite on compatible zero-mean fields
    (<Γ⁰Cx, C⁰y> = <Cx, Γ⁰C⁰y> = <Cx, y>), so plain CG applies, preconditioned by C⁰ (here a medium with the
    phases' Poisson ratio, so that the spectrum spans just the contrast). The stress spectrum is updated
    linearly along with x (σ̂ += α·FFT(Cp)), so each iteration costs one forward and one inverse FFT, as
    the basic scheme does, and the equilibrium residual is checked on it before each update."""
    batch = lam.shape[0]
    strain_of = lambda fluctuation, mean: fluctuation + mean[:, :, None, None, None]  # noqa: E731
    fluctuation = torch.zeros((batch, 6, *green.shape), dtype=lam.dtype, device=lam.device)
    stress_hat = torch.fft.rfftn(_stress(strain_of(fluctuation, macro), lam, two_mu), dim=_SPATIAL_DIMS)
    active = torch.arange(batch, device=lam.device)
    residual_field = direction = energy = None
    for iteration in range(1, max_iterations + 1):
        stress_re = torch.view_as_real(stress_hat)
        traction = green.traction(stress_re)
        residual = green.residual(traction, stress_re)
        done = residual < tol
        if iteration == max_iterations:
            done = torch.ones_like(done)
        if bool(done.any()):
            strain = strain_of(fluctuation[done], macro[done])
            stress = _stress(strain, lam[done], two_mu[done])
            result.finish(active[done], strain, stress, iteration, residual[done], tol)
            if bool(done.all()):
                return
            keep = ~done
            active, fluctuation, macro = active[keep], fluctuation[keep], macro[keep]
            lam, two_mu = lam[keep], two_mu[keep]
            stress_hat, traction = stress_hat[keep], traction[keep]
            if residual_field is not None:
                residual_field, direction, energy = residual_field[keep], direction[keep], energy[keep]
        if residual_field is None:  # r0 = b − A·0 = −Γ⁰:C:E
            residual_field = -green.apply(traction)
            direction = residual_field.clone()
            energy = green.energy_product(residual_field, residual_field)
        stiff_direction = _stress(direction, lam, two_mu)
        stiff_direction_hat = torch.fft.rfftn(stiff_direction, dim=_SPATIAL_DIMS)
        operator_direction = green.apply(green.traction(torch.view_as_real(stiff_direction_hat)))
        step = energy / green.energy_product(direction, operator_direction)
        fluctuation += step[:, None, None, None, None] * direction
        stress_hat += step[:, None, None, None, None].to(stress_hat.dtype) * stiff_direction_hat
        residual_field -= step[:, None, None, None, None] * operator_direction
        new_energy = green.energy_product(residual_field, residual_field)
        direction = residual_field + (new_energy / energy)[:, None, None, None, None] * direction
        energy = new_energy


# --- finite-element discretisations: 8-node hexahedra on the voxel mesh -------------------------------------

DISCRETIZATIONS = ("fft", "hex8", "hex8-bbar", "hex8-bbar-yang2019")
# Gauss–Legendre points of [0, 1]: 2×2×2 integrates the stiffness of a trilinear brick exactly.
_GAUSS_1D = (0.5 - 0.5 / math.sqrt(3.0), 0.5 + 0.5 / math.sqrt(3.0))
# Node a of a voxel element sits at corner (bx, by, bz) = _HEX_CORNERS[a]; element dofs are ordered (component, node).
_HEX_CORNERS = tuple(itertools.product((0, 1), repeat=3))


def _hex8_gradients(point) -> np.ndarray:
    """(3, 8) gradients ∂N_a/∂x_d of the trilinear shape functions of the unit brick at ``point``."""
    gradients = np.empty((3, 8))
    for a, corner in enumerate(_HEX_CORNERS):
        factors = [x if c else 1.0 - x for x, c in zip(point, corner)]
        for d in range(3):
            others = [factors[o] for o in range(3) if o != d]
            gradients[d, a] = (1.0 if corner[d] else -1.0) * others[0] * others[1]
    return gradients


def _strain_matrix(gradients: np.ndarray) -> np.ndarray:
    """(6, 24) tensor strain components (11, 22, 33, 23, 13, 12) from the element dofs (component, node)."""
    matrix = np.zeros((6, 3, 8))
    for row, (i, j) in enumerate(_VOIGT_PAIRS):
        matrix[row, i] += 0.5 * gradients[j]
        matrix[row, j] += 0.5 * gradients[i]
    return matrix.reshape(6, 24)


def hex8_element_matrices(discretization: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stiffness parts (K_λ, K_μ), both (24, 24), with K = λ K_λ + μ K_μ, and the (6, 24) element-mean strain.

    ``"hex8"``: full 2×2×2 Gauss integration (exact for a brick). ``"hex8-bbar"``: Hughes' B-bar (Hughes 1980,
    "Generalization of selective integration procedures to anisotropic and nonlinear media"): the volumetric
    strain at each Gauss point is replaced by its element mean, which removes the volumetric over-stiffness of
    the trilinear brick; that is the selectively reduced integration of the finite-element data this scheme is
    meant to reproduce. The element-mean strain is the same for both (the mean of the B-bar strain is the mean
    strain), and so is the element-mean stress C:<ε>.
    """
    if discretization not in ("hex8", "hex8-bbar"):
        raise ValueError(f"no hexahedral element for discretization {discretization!r}")
    strains = [_strain_matrix(_hex8_gradients(point)) for point in itertools.product(_GAUSS_1D, repeat=3)]
    mean_strain = sum(strains) / len(strains)
    if discretization == "hex8-bbar":
        def dilatation(matrix):  # the volumetric part (tr ε / 3) I of a strain matrix
            part = np.zeros_like(matrix)
            part[:3] = matrix[:3].sum(0) / 3.0
            return part
        strains = [matrix - dilatation(matrix) + dilatation(mean_strain) for matrix in strains]
    trace = np.zeros((6, 6))
    trace[:3, :3] = 1.0  # σ = λ tr(ε) I ...
    doubled = np.diag([2.0, 2.0, 2.0, 4.0, 4.0, 4.0])  # ... + 2μ ε, contracted with tensor shear components twice
    weight = 1.0 / len(strains)  # Gauss weights of a unit brick
    stiffness_lambda = sum(weight * matrix.T @ trace @ matrix for matrix in strains)
    stiffness_mu = sum(weight * matrix.T @ doubled @ matrix for matrix in strains)
    return stiffness_lambda, stiffness_mu, mean_strain


class _HexOperator:
    """Matrix-free assembled stiffness of the voxel mesh (one node per voxel corner, N nodes per axis, periodic)
    and its preconditioner, acting on flat dof vectors (A, 3·Nx·Ny·Nz [+ jumps]).

    The product is element by element: the 24 dofs of every element are 8 shifted views of the nodal field padded
    by one periodic layer, one (24, 24) matmul serves all elements and volumes (both phases share ν, so every element
    stiffness is μ_e times one matrix), and the element forces are added back into the padded layout, whose extra
    layer is then folded onto its periodic images. Slices rather than index gathers and scatter-adds: several times
    faster on CPUs and a fixed summation order (deterministic on GPUs too).

    ``"hex8-bbar-yang2019"`` adds one dof per node of the x1-face edges (the lines where an x1 face meets an x2 or
    x3 face, corners excluded) for the second copy of u1 there: the published finite-element data of Yang et al.
    (2019) tie u1 on those lines only across the x1 faces, not across the x2 / x3 faces (module docstring,
    "Finite elements"). In the padded layout the two copies are the u1 values at x1 ∈ {0, N} on the planes
    x2 = 0 and x2 = N (x3 = 0 and x3 = N); the dofs are their mean, the grid node u, and a jump d, the copies
    being u ∓ d/2, so the grid block of the operator is the periodic one and the jumps couple to it only through
    their (antisymmetric) difference (50 iterations at contrast 50 on 21³, periodic 41, a one-sided jump 75).

    The homogeneous reference medium's assembled stiffness K⁰ is a convolution on the periodic node grid, so in
    Fourier space it is a 3×3 Hermitian block per frequency, K̂⁰(ξ) = Σ_ab e^{-iξ·a} K⁰_ab e^{iξ·b} over the
    element's corners a, b; its inverse (zero at ξ = 0, the rigid translations) is the preconditioner (Schneider,
    Merkert & Kabel 2017; Leuschner & Fritzen 2018), with a diagonal (Jacobi) block for the jump dofs.
    """

    def __init__(self, shape, discretization: str, lame_ratio: float, mu_ref: float, dtype, device) -> None:
        self.shape = shape
        nx, ny, nz = shape
        self.count = nx * ny * nz
        self.split_x1_edges = discretization == "hex8-bbar-yang2019"
        k_lambda, k_mu, mean_strain = hex8_element_matrices("hex8" if discretization == "hex8" else "hex8-bbar")
        per_mu = lame_ratio * k_lambda + k_mu  # element stiffness / μ_e, as λ_e = lame_ratio · μ_e in both phases
        self.stiffness = torch.from_numpy(per_mu).to(dtype=dtype, device=device)
        self.mean_strain = torch.from_numpy(mean_strain).to(dtype=dtype, device=device)
        # Element dofs (component, corner) of the linear field E·x for the six unit strains (Voigt order, shear
        # components 1/2): Σ_e forces_e · these = M <σ> (energy identity a(u, E·x) = ∫ σ(u) : E).
        corners = np.array(_HEX_CORNERS, dtype=float)  # (8, 3)
        unit_fields = np.zeros((24, 6))
        for column, (i, j) in enumerate(_VOIGT_PAIRS):
            unit = np.zeros((3, 3))
            unit[i, j] = unit[j, i] = 1.0 if i == j else 0.5
            unit_fields[:, column] = (corners @ unit.T).T.reshape(24)  # (E x_a)_i at dof (i, a)
        self.unit_fields = torch.from_numpy(unit_fields).to(dtype=dtype, device=device)
        self.jump_count = (ny - 1) + (nz - 1) if self.split_x1_edges else 0
        self.size = 3 * self.count + self.jump_count

        reference = torch.from_numpy(mu_ref * per_mu).reshape(3, 8, 3, 8).to(torch.complex128)
        axes = [2.0 * math.pi * torch.fft.fftfreq(nx, dtype=torch.float64),
                2.0 * math.pi * torch.fft.fftfreq(ny, dtype=torch.float64),
                2.0 * math.pi * torch.fft.rfftfreq(nz, dtype=torch.float64)]
        xi = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (Nx, Ny, Nzr, 3)
        phase = torch.exp(1j * (xi @ torch.from_numpy(corners).T))  # (Nx, Ny, Nzr, 8): e^{iξ·b}
        symbol = torch.einsum("...a,iajb,...b->...ij", phase.conj(), reference, phase)
        symbol[0, 0, 0] = torch.eye(3, dtype=symbol.dtype)  # ξ = 0: rigid translation, handled below
        inverse = torch.linalg.inv(symbol)
        inverse[0, 0, 0] = 0.0  # keeps every iterate's mean displacement at zero
        complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        self.inverse_symbol = inverse.permute(3, 4, 0, 1, 2).to(dtype=complex_dtype, device=device).contiguous()

    def _padded(self, dofs: torch.Tensor) -> torch.Tensor:
        """(A, 3, Nx+1, Ny+1, Nz+1) nodal displacements with the periodic layer (and the jumps) filled in."""
        nx, ny, nz = self.shape
        grid = dofs[:, :3 * self.count].reshape(dofs.shape[0], 3, nx, ny, nz)
        padded = torch.nn.functional.pad(grid, (0, 1, 0, 1, 0, 1), mode="circular")
        if self.split_x1_edges:
            half = 0.5 * dofs[:, 3 * self.count:, None]
            along_x3, along_x2 = half[:, :nz - 1].transpose(1, 2), half[:, nz - 1:].transpose(1, 2)
            padded[:, 0, ::nx, ny, 1:nz] += along_x3
            padded[:, 0, ::nx, 0, 1:nz] -= along_x3
            padded[:, 0, ::nx, 1:ny, nz] += along_x2
            padded[:, 0, ::nx, 1:ny, 0] -= along_x2
        return padded

    def element_dofs(self, dofs: torch.Tensor) -> torch.Tensor:
        """(A, 24, M) element dofs, ordered (component, corner), from (A, size) dof vectors."""
        nx, ny, nz = self.shape
        padded = self._padded(dofs)
        elements = padded.new_empty((dofs.shape[0], 3, 8, nx, ny, nz))
        for a, (bx, by, bz) in enumerate(_HEX_CORNERS):
            elements[:, :, a] = padded[:, :, bx:bx + nx, by:by + ny, bz:bz + nz]
        return elements.reshape(dofs.shape[0], 24, self.count)

    def assemble(self, element_forces: torch.Tensor) -> torch.Tensor:
        """(A, size) dof forces from (A, 24, M) element forces: the transpose of :meth:`element_dofs`."""
        nx, ny, nz = self.shape
        batch = element_forces.shape[0]
        forces = element_forces.reshape(batch, 3, 8, nx, ny, nz)
        padded = element_forces.new_zeros((batch, 3, nx + 1, ny + 1, nz + 1))
        for a, (bx, by, bz) in enumerate(_HEX_CORNERS):
            padded[:, :, bx:bx + nx, by:by + ny, bz:bz + nz] += forces[:, :, a]
        parts = []
        if self.split_x1_edges:  # the copies' forces act on their jump (±1/2) and, folded below, on their mean
            parts = [0.5 * (padded[:, 0, ::nx, ny, 1:nz] - padded[:, 0, ::nx, 0, 1:nz]).sum(1),
                     0.5 * (padded[:, 0, ::nx, 1:ny, nz] - padded[:, 0, ::nx, 1:ny, 0]).sum(1)]
        padded[:, :, 0] += padded[:, :, nx]
        padded[:, :, :, 0] += padded[:, :, :, ny]
        padded[:, :, :, :, 0] += padded[:, :, :, :, nz]
        grid = padded[:, :, :nx, :ny, :nz].reshape(batch, 3 * self.count)
        return torch.cat([grid, *parts], dim=1) if parts else grid

    def apply(self, dofs: torch.Tensor, mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K u (A, size) and the mean stress of u, (A, 6) tensor components, for (A, M) shear moduli."""
        forces = torch.matmul(self.stiffness, self.element_dofs(dofs))
        forces *= mu[:, None]
        return self.assemble(forces), forces.sum(-1) @ self.unit_fields / self.count

    def jump_diagonal(self, mu: torch.Tensor) -> torch.Tensor | None:
        """(A, jumps) diagonal of K on the jump dofs: the u1-u1 entry (the same for every corner) times (1/2)²,
        summed over the eight elements that use either copy."""
        if not self.split_x1_edges:
            return None
        nx, ny, nz = self.shape
        volume = mu.reshape(mu.shape[0], nx, ny, nz)
        ends = volume[:, 0] + volume[:, nx - 1]  # the two x1 layers of elements touching an x1 face
        sides = ends[:, 0] + ends[:, ny - 1]  # the element rows on either side of the x2 faces, along x3
        along_x3 = sides[:, :nz - 1] + sides[:, 1:]  # copies at x3 = 1..N-1
        sides = ends[:, :, 0] + ends[:, :, nz - 1]
        along_x2 = sides[:, :ny - 1] + sides[:, 1:]
        return 0.25 * self.stiffness[0, 0] * torch.cat([along_x3, along_x2], dim=1)

    def precondition(self, residual: torch.Tensor, jump_diagonal: torch.Tensor | None) -> torch.Tensor:
        """(K⁰)⁻¹ r by FFT on the grid dofs (the reference medium's displacement under the nodal forces r), Jacobi
        on the jump dofs."""
        batch = residual.shape[0]
        grid = residual[:, :3 * self.count].reshape(batch, 3, *self.shape)
        spectrum = torch.fft.rfftn(grid, dim=_SPATIAL_DIMS)
        solved = torch.empty_like(spectrum)
        for i in range(3):  # the 3×3 block per frequency, written out: no (A, 3, 3, ...) temporary
            row = solved[:, i]
            torch.mul(self.inverse_symbol[i, 0], spectrum[:, 0], out=row)
            row.addcmul_(self.inverse_symbol[i, 1], spectrum[:, 1]).addcmul_(self.inverse_symbol[i, 2], spectrum[:, 2])
        grid = torch.fft.irfftn(solved, s=self.shape, dim=_SPATIAL_DIMS).reshape(batch, 3 * self.count)
        if jump_diagonal is None:
            return grid
        return torch.cat([grid, residual[:, 3 * self.count:] / jump_diagonal], dim=1)


def _mean_stress(strain: torch.Tensor, lam: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """(A, 6) volume mean of λ tr(ε) I + 2μ ε over (A, 6, M) element strains and (A, M) Lamé fields."""
    mean = 2.0 * (strain * mu[:, None]).mean(-1)
    mean[:, :3] += (lam * strain[:, :3].sum(1)).mean(-1)[:, None]
    return mean


def _frobenius(voigt: torch.Tensor) -> torch.Tensor:
    return (voigt[:, :3].square().sum(1) + 2.0 * voigt[:, 3:].square().sum(1)).sqrt().to(torch.float64)


def _hexahedral_scheme(operator: _HexOperator, lam, two_mu, macro, result: _Result, tol: float,
                       max_iterations: int) -> None:
    """Preconditioned conjugate gradients for the periodic nodal displacement fluctuation u of K u = −f(E).

    The total displacement is E·x + u with u periodic (plus the jump dofs of ``"hex8-bbar-yang2019"``); f(E) are
    the nodal forces of the uniform strain E. K is symmetric positive semi-definite (null space: translations,
    excluded by keeping the mean of u at zero, which the preconditioner does), so plain PCG applies with the
    reference medium's K⁰ as preconditioner; the spectrum of (K⁰)⁻¹K spans the contrast, so iterations grow like
    √contrast. Stopping rule, checked before each update as in the other schemes: RMS of the nodal force residual
    (the discrete div σ, voxel size 1) over the norm of the mean stress, both tracked linearly along with u; a
    homogeneous grid has no residual at all and stops at the first check.
    """
    batch = lam.shape[0]
    count = operator.count
    lam = lam.reshape(batch, count)
    mu = 0.5 * two_mu.reshape(batch, count)
    # f(E): the element forces of the linear field E·x (element dofs E x_a, a linear map of the Voigt components,
    # shear counted twice as E12 = E21), assembled.
    weights = torch.tensor([1.0, 1.0, 1.0, 2.0, 2.0, 2.0], dtype=lam.dtype, device=lam.device)
    linear_field = (macro * weights) @ operator.unit_fields.T  # (A, 24)
    element_forces = (linear_field @ operator.stiffness.T)[:, :, None] * mu[:, None]
    residual_field = -operator.assemble(element_forces)
    mean_stress = _mean_stress(macro[:, :, None].expand(batch, 6, count), lam, mu)
    jump_diagonal = operator.jump_diagonal(mu)
    displacement = torch.zeros_like(residual_field)
    active = torch.arange(batch, device=lam.device)
    node_count = float(count)
    direction = product = None
    for iteration in range(1, max_iterations + 1):
        force_rms = residual_field.to(torch.float64).square().sum(1)
        residual = (force_rms / node_count).sqrt() / _frobenius(mean_stress)
        done = residual < tol
        if iteration == max_iterations:
            done = torch.ones_like(done)
        if bool(done.any()):
            strain_fluctuation = torch.matmul(operator.mean_strain, operator.element_dofs(displacement[done]))
            strain = strain_fluctuation + macro[done][:, :, None]
            stress = _stress(strain, lam[done], 2.0 * mu[done])
            result.finish(active[done], strain.reshape(-1, 6, *operator.shape),
                          stress.reshape(-1, 6, *operator.shape), iteration, residual[done], tol)
            if bool(done.all()):
                return
            keep = ~done
            active, displacement, residual_field = active[keep], displacement[keep], residual_field[keep]
            lam, mu, macro, mean_stress = lam[keep], mu[keep], macro[keep], mean_stress[keep]
            if jump_diagonal is not None:
                jump_diagonal = jump_diagonal[keep]
            if direction is not None:
                direction, product = direction[keep], product[keep]
        preconditioned = operator.precondition(residual_field, jump_diagonal)
        new_product = (residual_field * preconditioned).sum(1)
        direction = preconditioned if direction is None else (
            preconditioned.add_((new_product / product)[:, None] * direction))
        product = new_product
        operator_direction, direction_mean_stress = operator.apply(direction, mu)
        step = product / (direction * operator_direction).sum(1)
        displacement.addcmul_(step[:, None], direction)
        residual_field.addcmul_(step[:, None], operator_direction, value=-1.0)
        mean_stress.addcmul_(step[:, None], direction_mean_stress)


def local_strain_11(phases, contrast: float, poisson: float = 0.3, **kwargs) -> tuple[np.ndarray, ElasticSolution]:
    """ε11 / E11 as float64 numpy, (B, Nx, Ny, Nz) or (Nx, Ny, Nz) for a single volume, and the full solution.

    ``kwargs`` go to :func:`solve_elasticity` (default macro strain e1⊗e1); E11 must be non-zero.
    """
    phase, single = _as_phase_tensor(phases, kwargs.get("device"))
    macro = _macro_strain_voigt(kwargs.get("macro_strain"), phase.shape[0], torch.float64, "cpu")[:, 0]
    if bool((macro == 0).any()):
        raise ValueError("local_strain_11 normalises by the applied E11, which is zero in macro_strain")
    solution = solve_elasticity(phase, contrast, poisson, **kwargs)
    strain_11 = solution.strain[:, 0, 0].detach().to("cpu", torch.float64).numpy() / macro.numpy()[:, None, None, None]
    return (strain_11[0] if single else strain_11), solution


def effective_stiffness(phases, contrast, poisson=0.3, **kwargs) -> np.ndarray:
    """(B, 6, 6) effective (homogenised) stiffness from six unit load cases, Voigt order (11, 22, 33, 23, 13, 12).

    Column j is the mean stress under the unit Voigt strain e_j with *engineering* shear (γ = 1, i.e. tensor
    ε = 1/2 for j ≥ 3), so σ_voigt = C ε_voigt and an isotropic phase gives C44 = μ. ``kwargs`` go to
    :func:`solve_elasticity` (``macro_strain`` is not allowed). Accepts a single volume too (B = 1).
    """
    if "macro_strain" in kwargs:
        raise ValueError("effective_stiffness applies its own six unit load cases; do not pass macro_strain")
    phase, _ = _as_phase_tensor(phases, kwargs.get("device"))
    columns = []
    for load_case, (i, j) in enumerate(_VOIGT_PAIRS):
        macro = np.zeros((3, 3))
        macro[i, j] = macro[j, i] = 1.0 if i == j else 0.5  # engineering shear γij = 1
        solution = solve_elasticity(phase, contrast, poisson, macro_strain=macro, **kwargs)
        mean_stress = solution.stress.mean(dim=(-3, -2, -1)).to("cpu", torch.float64)  # (B, 3, 3)
        columns.append(torch.stack([mean_stress[:, a, b] for a, b in _VOIGT_PAIRS], dim=1))
    return torch.stack(columns, dim=2).numpy()


def voigt_reuss_bounds(volume_fraction_stiff: float, contrast: float, poisson: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Voigt (arithmetic mean of stiffnesses) and Reuss (inverse of the mean compliance) 6×6 stiffnesses.

    Same Voigt convention as :func:`effective_stiffness`; ``volume_fraction_stiff`` is the fraction of phase 1.
    """
    if not (0.0 <= volume_fraction_stiff <= 1.0):
        raise ValueError(f"volume_fraction_stiff must lie in [0, 1], got {volume_fraction_stiff!r}")
    contrast = _check_contrast(contrast)
    soft, stiff = isotropic_stiffness_voigt(1.0, poisson), isotropic_stiffness_voigt(contrast, poisson)
    fraction = float(volume_fraction_stiff)
    voigt = (1.0 - fraction) * soft + fraction * stiff
    reuss = np.linalg.inv((1.0 - fraction) * np.linalg.inv(soft) + fraction * np.linalg.inv(stiff))
    return voigt, reuss
