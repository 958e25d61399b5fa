"""Validation of the hexahedral finite-element discretisations of the elasticity solver
(``discretization="hex8-bbar"`` / ``"hex8"`` in datamodules/synthetic/elastic_fft.py).

(a) the published finite-element strain sample (Yang et al. 2019), (b) an independent scipy.sparse assembly and
direct solve of the same periodic FE problem, (c) exact laminate strains, (d) effective stiffness inside the
Voigt–Reuss bounds, (e) homogeneous grids in one iteration; plus batching and float32. Small grids keep it fast.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg
import torch

from matcv.datamodules.synthetic.elastic_fft import (
    effective_stiffness,
    isotropic_stiffness_voigt,
    local_strain_11,
    solve_elasticity,
    voigt_reuss_bounds,
)
from tests.test_elastic_fft import MKS_DIR, POISSON, laminate, mase_percent, phase_moduli, random_two_phase

HEX = ("hex8-bbar", "hex8")


# --- (a) finite-element sample ------------------------------------------------------------------------------

needs_fe_sample = pytest.mark.skipif(not (MKS_DIR / "21_c10_sample.npy").exists(),
                                     reason=f"Yang 2019 FE sample not found at {MKS_DIR} (shared data not mounted)")


@needs_fe_sample
def test_published_boundary_ties_reproduce_the_finite_element_sample():
    phases = np.load(MKS_DIR / "21_c10_sample.npy")
    fe_strain = np.load(MKS_DIR / "21_c10_sample_strain.npy")
    strain_11, solution = local_strain_11(phases, contrast=10.0, discretization="hex8-bbar-yang2019", tol=1e-10)
    assert bool(solution.converged.all())
    # Measured 0.00018–0.00019 % on every volume, the stiff-voxel-on-the-x1-face one included: the labels' own
    # resolution (multiples of 2.5e-6, means of values rounded to 1e-5); no voxel is off by more than 9e-6.
    mase = mase_percent(strain_11, fe_strain)
    assert mase.max() <= 0.001, mase
    assert np.abs(strain_11 - fe_strain).max() < 1.5e-5


@needs_fe_sample
def test_periodic_bbar_differs_from_the_sample_only_at_the_x1_face_edges():
    phases = np.load(MKS_DIR / "21_c10_sample.npy")
    fe_strain = np.load(MKS_DIR / "21_c10_sample_strain.npy")
    strain_11, solution = local_strain_11(phases, contrast=10.0, discretization="hex8-bbar", tol=1e-10)
    assert bool(solution.converged.all())
    mase = mase_percent(strain_11, fe_strain)
    # Measured 0.0002–0.0016 % on nine volumes and 0.027 % on the one whose stiff voxel lies on the x1 = 0 face and
    # the x2 = 0 face. The differences sit in the elements along the edges of the x1 faces, antisymmetric across
    # the x2 / x3 faces: the published model's u1 is not periodic there ("hex8-bbar-yang2019", test above).
    assert np.median(mase) <= 0.001 and 0.01 <= mase.max() <= 0.03, mase
    edge = np.zeros((21, 21, 21), dtype=bool)
    for face in (0, 20):
        edge[face, [0, 20], :] = edge[face, :, [0, 20]] = True
    error = np.abs(strain_11 - fe_strain)
    # Mean error on those 160 of 9261 elements: 5–38x that of the rest (measured), in every volume.
    assert (error[:, edge].mean(1) > 4.0 * error[:, ~edge].mean(1)).all()
    # The stiff voxel itself, where the voxel Green operator is ≈ 40 % low and full integration 11 % high.
    # (the volume with its stiff voxel on the x1 = 0 face is left out: its label there is 0.2595, periodic 0.2923).
    inside = (phases == 1) & (np.arange(21)[None, :, None, None] % 20 != 0)
    assert inside.sum() == 9
    np.testing.assert_allclose(strain_11[inside], fe_strain[inside], rtol=2e-4)


# --- (b) independent sparse assembly --------------------------------------------------------------------------

def bbar_element(lam: float, mu: float) -> tuple[np.ndarray, np.ndarray]:
    """(24, 24) B-bar stiffness of the unit brick, dofs ordered (node, component), and the (6, 24) mean
    engineering strain matrix; nodes at corners (x, y, z) ∈ {0, 1}³ in lexicographic order."""
    corners = np.array(list(itertools.product((0, 1), repeat=3)), dtype=float)
    gauss = 0.5 + np.array([-0.5, 0.5]) / np.sqrt(3.0)

    def b_matrix(x):  # engineering strains (11, 22, 33, 23, 13, 12)
        shape = np.where(corners == 1, x, 1.0 - x)  # (8, 3) factors per node
        sign = np.where(corners == 1, 1.0, -1.0)
        grad = np.stack([sign[:, d] * np.prod(np.delete(shape, d, axis=1), axis=1) for d in range(3)], axis=1)
        b = np.zeros((6, 8, 3))
        for d in range(3):
            b[d, :, d] = grad[:, d]
        for row, (i, j) in zip((3, 4, 5), ((1, 2), (0, 2), (0, 1))):
            b[row, :, i], b[row, :, j] = grad[:, j], grad[:, i]
        return b.reshape(6, 24)

    points = [np.array(p) for p in itertools.product(gauss, repeat=3)]
    b_points = [b_matrix(p) for p in points]
    b_mean = np.mean(b_points, axis=0)
    volumetric = np.zeros((6, 6))
    volumetric[:3, :3] = 1.0 / 3.0
    b_bar = [b + volumetric @ (b_mean - b) for b in b_points]  # Hughes 1980: mean dilatation
    d = np.zeros((6, 6))
    d[:3, :3] = lam
    d += np.diag([2 * mu] * 3 + [mu] * 3)
    return sum(b.T @ d @ b for b in b_bar) / 8.0, b_mean


def sparse_fe_strain_11(phases: np.ndarray, contrast: float, split_x1_edges: bool = False) -> np.ndarray:
    """ε11 per element of the B-bar FE problem under E = e1⊗e1, assembled and solved directly: periodic, or with
    u1 on the x1-face edge lines (corners excepted) given a separate dof on the x2 = N / x3 = N side (the ties of
    the published data)."""
    shape = phases.shape
    nx, ny, nz = shape
    n_nodes = phases.size
    # Dof of component c at corner position (i, j, k), 0..N per axis: periodic images share one.
    padded = np.pad(np.arange(n_nodes).reshape(shape), [(0, 1)] * 3, mode="wrap")
    dof = 3 * padded[..., None] + np.arange(3)
    n_dofs = 3 * n_nodes
    if split_x1_edges:
        for k in range(1, nz):
            dof[[0, nx], ny, k, 0] = n_dofs  # one copy for both x1 faces: they stay tied
            n_dofs += 1
        for j in range(1, ny):
            dof[[0, nx], j, nz, 0] = n_dofs
            n_dofs += 1
    corners = list(itertools.product((0, 1), repeat=3))
    dofs = np.stack([dof[a:a + nx, b:b + ny, c:c + nz].reshape(-1, 3) for a, b, c in corners], axis=1).reshape(-1, 24)
    macro = np.array([1.0, 0, 0, 0, 0, 0])
    rows, cols, values = [], [], []
    force = np.zeros(n_dofs)
    b_mean = None
    for phase in (0, 1):
        young = contrast if phase else 1.0
        lam = young * POISSON / ((1 + POISSON) * (1 - 2 * POISSON))
        mu = young / (2 * (1 + POISSON))
        k_element, b_mean = bbar_element(lam, mu)
        d = isotropic_stiffness_voigt(young, POISSON)
        selected = dofs[phases.ravel() == phase]
        rows.append(np.repeat(selected, 24, axis=1).ravel())
        cols.append(np.tile(selected, (1, 24)).ravel())
        values.append(np.tile(k_element.ravel(), len(selected)))
        np.add.at(force, selected.ravel(), -np.tile(b_mean.T @ d @ macro, len(selected)))
    stiffness = scipy.sparse.csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                                        shape=(n_dofs, n_dofs))
    free = np.arange(3, n_dofs)  # node 0 pinned: removes the rigid translations
    displacement = np.zeros(n_dofs)
    displacement[free] = scipy.sparse.linalg.spsolve(stiffness[free][:, free].tocsc(), force[free])
    return (macro[0] + displacement[dofs] @ b_mean[0]).reshape(shape)


@pytest.mark.parametrize("discretization", ["hex8-bbar", "hex8-bbar-yang2019"])
def test_matrix_free_bbar_equals_direct_sparse_solve_at_contrast_50(discretization):
    phases = random_two_phase((8, 7, 9), sigma=1.0, seed=4)
    split = discretization == "hex8-bbar-yang2019"
    direct = sparse_fe_strain_11(phases, 50.0, split_x1_edges=split)
    strain_11, solution = local_strain_11(phases, 50.0, discretization=discretization, tol=1e-10)
    assert bool(solution.converged.all())
    np.testing.assert_allclose(strain_11, direct, rtol=0, atol=1e-8)  # measured ≈ 1e-11
    if split:  # the split changes the answer, most near the x1-face edges
        periodic = sparse_fe_strain_11(phases, 50.0)
        assert np.abs(periodic - direct).max() > 1e-3


# --- (c) laminates ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("discretization", HEX + ("hex8-bbar-yang2019",))
@pytest.mark.parametrize("normal_axis", [0, 2])
def test_laminate_strains_are_exact(discretization, normal_axis):
    # Piecewise-constant strain across the layers is a trilinear displacement field, so the FE solution is the
    # exact one (for B-bar too: a constant strain has a constant dilatation).
    shape, contrast = (9, 8, 7), 50.0
    phases = laminate(shape, normal_axis, stiff_layers=[1, 2, 5])
    fraction = np.array([1.0 - phases.mean(), phases.mean()])
    lam, mu, p_wave = phase_moduli(contrast)
    macro = np.zeros((3, 3))
    macro[normal_axis, normal_axis] = 1.0
    solution = solve_elasticity(phases, contrast, POISSON, macro_strain=macro, tol=1e-12,
                                discretization=discretization)
    expected = np.zeros((3, 3) + shape)
    expected[normal_axis, normal_axis] = ((1.0 / p_wave) / np.sum(fraction / p_wave))[phases]
    np.testing.assert_allclose(solution.strain[0].numpy(), expected, atol=1e-10)
    if discretization == "hex8-bbar-yang2019":
        return  # under shear its untied u1 copies open: not the periodic laminate (see the homogeneous test)
    shear = np.zeros((3, 3))
    in_plane = (normal_axis + 1) % 3
    shear[normal_axis, in_plane] = shear[in_plane, normal_axis] = 0.5
    solution = solve_elasticity(phases, contrast, POISSON, macro_strain=shear, tol=1e-12,
                                discretization=discretization)
    expected_shear = 0.5 * (1.0 / mu) / np.sum(fraction / mu)
    np.testing.assert_allclose(solution.strain[0, normal_axis, in_plane].numpy(), expected_shear[phases], atol=1e-10)


# --- (d) effective stiffness, (e) homogeneous grids ---------------------------------------------------------

@pytest.mark.parametrize("discretization", HEX)
def test_effective_stiffness_between_voigt_and_reuss(discretization):
    phases = random_two_phase((9, 9, 9), sigma=1.5, seed=1)
    c_eff = effective_stiffness(phases, 50.0, POISSON, tol=1e-9, discretization=discretization)[0]
    c_voigt, c_reuss = voigt_reuss_bounds(phases.mean(), 50.0, POISSON)
    scale = np.abs(c_voigt).max()
    np.testing.assert_allclose(c_eff, c_eff.T, atol=1e-6 * scale)
    assert np.linalg.eigvalsh(c_voigt - c_eff).min() > -1e-7 * scale
    assert np.linalg.eigvalsh(c_eff - c_reuss).min() > -1e-7 * scale


@pytest.mark.parametrize("discretization", HEX)
@pytest.mark.parametrize("phase", [0, 1])
def test_homogeneous_grid_in_one_iteration(discretization, phase):
    phases = np.full((7, 6, 5), phase, dtype=np.uint8)
    macro = np.array([[0.3, 0.1, 0.0], [0.1, -0.2, 0.05], [0.0, 0.05, 0.7]])
    solution = solve_elasticity(phases, 50.0, POISSON, macro_strain=macro, discretization=discretization)
    assert solution.iterations.tolist() == [1]
    np.testing.assert_allclose(solution.strain[0].numpy(), np.broadcast_to(macro[..., None, None, None],
                                                                          (3, 3, 7, 6, 5)), atol=1e-14)
    expected = isotropic_stiffness_voigt(50.0 if phase else 1.0, POISSON)
    np.testing.assert_allclose(effective_stiffness(phases, 50.0, POISSON, discretization=discretization)[0],
                               expected, rtol=1e-12, atol=1e-12)


def test_published_ties_keep_a_homogeneous_grid_uniform_under_normal_strains_only():
    # The split u1 copies feel the shear stresses σ12 / σ13 on the x2 / x3 faces: zero under normal strains,
    # so the uniform strain is the solution at the first check; a shear E12 opens them.
    phases = np.zeros((7, 6, 5), dtype=np.uint8)
    normal = np.diag([0.3, -0.2, 0.7])
    solution = solve_elasticity(phases, 50.0, POISSON, macro_strain=normal, discretization="hex8-bbar-yang2019")
    assert solution.iterations.tolist() == [1]
    np.testing.assert_allclose(solution.strain[0].numpy(), np.broadcast_to(normal[..., None, None, None],
                                                                          (3, 3, 7, 6, 5)), atol=1e-14)
    shear = np.array([[0.0, 0.5, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 0.0]])
    opened = solve_elasticity(phases, 50.0, POISSON, macro_strain=shear, tol=1e-10,
                              discretization="hex8-bbar-yang2019")
    assert opened.iterations.item() > 1 and float(opened.strain[0, 0, 1].std()) > 1e-3


# --- batching, precision, the other schemes ------------------------------------------------------------------

@pytest.mark.parametrize("discretization", ["hex8-bbar", "hex8-bbar-yang2019"])
def test_batched_equals_one_by_one_and_float32_agrees(discretization):
    phases = np.stack([random_two_phase((9, 8, 7), seed=seed) for seed in range(3)])
    phases[1] = 1
    batched = solve_elasticity(torch.from_numpy(phases), 50.0, tol=1e-8, discretization=discretization)
    assert batched.iterations[1] == 1 and batched.iterations[[0, 2]].min() > 5
    for index in range(3):
        single = solve_elasticity(phases[index], 50.0, tol=1e-8, discretization=discretization)
        assert single.iterations.item() == batched.iterations[index].item()
        torch.testing.assert_close(single.strain[0], batched.strain[index], rtol=0, atol=1e-12)
    single_32 = solve_elasticity(phases, 50.0, tol=1e-5, dtype=torch.float32, discretization=discretization)
    assert single_32.strain.dtype == torch.float32 and bool(single_32.converged.all())
    # The published ties' jump dofs (Jacobi-preconditioned) stop a little further from the solution at tol 1e-5.
    limit = 1e-4 if discretization == "hex8-bbar" else 3e-4  # measured 4e-5 and 1.3e-4
    assert float((single_32.strain.double() - batched.strain).abs().max()) < limit


def test_full_integration_differs_from_bbar_and_bad_name_raises():
    phases = random_two_phase((7, 7, 7), seed=5)
    bbar, _ = local_strain_11(phases, 50.0, discretization="hex8-bbar", tol=1e-10)
    full, _ = local_strain_11(phases, 50.0, discretization="hex8", tol=1e-10)
    assert np.abs(bbar - full).max() > 1e-3  # volumetric locking of full integration in the stiff phase
    with pytest.raises(ValueError, match="discretization must be one of"):
        solve_elasticity(phases, 10.0, discretization="tet4")


def test_generator_discretization_setting_keeps_old_dataset_names():
    from matcv.datamodules.synthetic.localization import DEFAULT_DISCRETIZATION, LocalizationGeneratorConfig

    fft = LocalizationGeneratorConfig(size=5, sigma_triples=((1.0, 1.0, 1.0),), discretization="fft")
    assert "discretization" not in fft.to_dict()  # datasets made before the setting keep their hash
    assert fft.fingerprint() == "c4263a39fd16a0c0"  # that hash, computed before the setting existed
    new = LocalizationGeneratorConfig(size=5, sigma_triples=((1.0, 1.0, 1.0),))
    assert DEFAULT_DISCRETIZATION == "hex8-bbar-yang2019"  # new settings: the published labels' FE model
    assert new.to_dict()["discretization"] == DEFAULT_DISCRETIZATION and new.fingerprint() != fft.fingerprint()
    periodic = LocalizationGeneratorConfig(size=5, sigma_triples=((1.0, 1.0, 1.0),), discretization="hex8-bbar")
    assert periodic.fingerprint() not in (fft.fingerprint(), new.fingerprint())
    with pytest.raises(ValueError, match="discretization must be one of"):
        LocalizationGeneratorConfig(size=5, discretization="tet4")
