"""Potts grain-growth simulator (datamodules/synthetic/potts.py): energies, the vectorised move, growth law, grains."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matcv.datamodules.synthetic.potts import (COLOURS, NEIGHBOUR_OFFSETS, colour_map, colour_masks, from_sublattices,
                               grain_areas, grain_boundary_image, grain_labels, initial_spins, monte_carlo_step,
                               simulate_grain_growth, site_energy, to_sublattices, total_energy, update_colour)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: see conftest


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def stripes(shape=(8, 8), width: int = 4, axis: int = 0) -> torch.Tensor:
    """Two grains: spin 0 in the first ``width`` rows (columns for axis=1), spin 1 in the rest."""
    index = torch.arange(shape[axis]) >= width
    spins = index.view(-1, 1) if axis == 0 else index.view(1, -1)
    return spins.expand(shape).to(torch.int32).clone()


# --- 1. energies on hand-worked lattices ----------------------------------------------------------------------

def test_total_energy_hand_worked_lattices():
    uniform = torch.zeros((4, 4), dtype=torch.int32)
    assert total_energy(uniform) == 0
    assert int(site_energy(uniform).sum()) == 0

    # Rows 0-1 spin 0, rows 2-3 spin 1 (4x4, periodic): every site has a full row of 3 unlike neighbours
    # (above it for rows 0 and 2 through the wrap, below it for rows 1 and 3) and 5 like ones, so E_i = 3 and
    # E = 16 * 3 / 2 = 24 (two boundaries of 4 sites, each site bonded to 3 across it: 2 * 4 * 3 = 24).
    half = stripes((4, 4), width=2)
    assert site_energy(half).eq(3).all()
    assert total_energy(half) == 24

    # Checkerboard (i + j) % 2: the 4 orthogonal neighbours differ, the 4 diagonal ones are equal:
    # E_i = 4, E = 16 * 4 / 2 = 32.
    i, j = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    checkerboard = ((i + j) % 2).to(torch.int32)
    assert site_energy(checkerboard).eq(4).all()
    assert total_energy(checkerboard) == 32

    # Columns alternating j % 2: left, right and the 4 diagonals differ, up and down agree: E_i = 6, E = 48.
    columns = (j % 2).to(torch.int32)
    assert total_energy(columns) == 48

    # One odd site in a uniform 4x4: it has E = 8, each of its 8 neighbours E = 1: E = (8 + 8) / 2 = 8.
    lone = uniform.clone()
    lone[1, 2] = 7
    energy = site_energy(lone)
    assert int(energy[1, 2]) == 8 and int(energy.sum()) == 16 and total_energy(lone) == 8

    # Non-square lattice: 4 x 6 with the same row stripes is still 3 per site, E = 24 * 3 / 2 = 36.
    assert total_energy(stripes((4, 6), width=2)) == 36


# --- 2. kT = 0 never raises the energy; kT > 0 can --------------------------------------------------------------

@pytest.mark.parametrize("move", ["spparks", "neighbour"])
def test_energy_never_increases_at_zero_temperature(move):
    g = generator(3)
    spins = initial_spins(64, q=2048, generator=g)
    energies = [total_energy(spins)]
    for _ in range(40):
        spins = monte_carlo_step(spins, 0.0, g, move=move)
        energies.append(total_energy(spins))
    steps = np.diff(energies)
    assert (steps <= 0).all(), f"energy increased at kT = 0: {energies}"
    assert energies[-1] < 0.5 * energies[0]  # and it really coarsens (from a random quench E_i is ~8)


def test_flat_boundary_is_stable_at_zero_temperature_and_roughens_when_hot():
    # A flat boundary site has 3 unlike neighbours; taking the other grain's spin gives 5: dE = +2.
    flat = stripes((16, 16), width=8)
    g = generator(4)
    cold = flat
    for _ in range(10):
        cold = monte_carlo_step(cold, 0.0, g)
    assert torch.equal(cold, flat)
    hot = monte_carlo_step(flat, 1.0, g)
    assert total_energy(hot) > total_energy(flat)


# --- the vectorised colour update equals sequential single-site updates -----------------------------------------

def sequential_update(spins: np.ndarray, colour, slot: np.ndarray, uniform, kT: float, move: str,
                      order: np.ndarray) -> np.ndarray:
    """Plain-Python reference: the sites of ``colour`` one by one (in ``order``), each from the current lattice."""
    spins = spins.copy()
    height, width = spins.shape
    sites = [(i, j) for i in range(colour[0], height, 2) for j in range(colour[1], width, 2)]
    for k in order:
        i, j = sites[k]
        si, sj = i // 2, j // 2
        old = spins[i, j]
        neighbours = [spins[(i + di) % height, (j + dj) % width] for di, dj in NEIGHBOUR_OFFSETS]
        s = int(slot[si, sj])
        new = neighbours[s]
        if move == "spparks" and neighbours.index(new) != s:
            continue  # not the first slot holding that spin: null move
        delta = sum(n == old for n in neighbours) - sum(n == new for n in neighbours)
        if kT == 0.0:
            accepted = delta <= 0
        else:
            accepted = uniform[si, sj] < min(1.0, np.exp(-delta / kT))
        if accepted:
            spins[i, j] = new
    return spins


@pytest.mark.parametrize("move", ["spparks", "neighbour"])
@pytest.mark.parametrize("kT", [0.0, 0.7])
def test_colour_update_matches_sequential_reference(move, kT):
    rng = np.random.default_rng(11)
    shape = (6, 8)
    for colour in COLOURS:
        for trial in range(3):
            # q = 3: many repeated neighbour spins, so null moves and multiplicities are exercised.
            spins = rng.integers(0, 3, shape).astype(np.int32)
            slot = rng.integers(0, 8, (shape[0] // 2, shape[1] // 2))
            uniform = rng.random(slot.shape).astype(np.float32)
            sub = to_sublattices(torch.from_numpy(spins))
            update_colour(sub, colour, torch.from_numpy(slot), None if kT == 0 else torch.from_numpy(uniform),
                          kT, move)
            order = rng.permutation(slot.size)  # any order: same-colour sites do not interact
            expected = sequential_update(spins, colour, slot, uniform, kT, move, order)
            np.testing.assert_array_equal(from_sublattices(sub).numpy(), expected,
                                          err_msg=f"colour {colour}, trial {trial}")


@pytest.mark.parametrize("move, expected", [
    # Neighbours in slot order: 5, 5, 7, 3, 5, 7, 9, 0 (the last equals the centre, 0).
    ("neighbour", [5, 5, 7, 3, 5, 7, 9, 0]),  # proposal frequency = multiplicity / 8
    ("spparks", [5, 0, 7, 3, 0, 0, 9, 0]),  # each distinct unlike spin once (1/8), the rest null
])
def test_proposal_distribution_over_the_eight_slots(move, expected):
    values = [5, 5, 7, 3, 5, 7, 9, 0]
    outcomes = []
    for s in range(8):
        spins = torch.zeros((6, 6), dtype=torch.int32)
        for (di, dj), value in zip(NEIGHBOUR_OFFSETS, values):
            spins[2 + di, 2 + dj] = value
        sub = to_sublattices(spins)
        slot = torch.zeros((3, 3), dtype=torch.int64)
        slot[1, 1] = s  # site (2, 2) of colour (0, 0)
        # kT huge: every proposal is accepted, so the outcome shows the proposal itself.
        update_colour(sub, (0, 0), slot, torch.full((3, 3), 0.5), 1e9, move)
        outcomes.append(int(from_sublattices(sub)[2, 2]))
    assert outcomes == expected


# --- 3. normal grain growth ----------------------------------------------------------------------------------------

def test_mean_grain_area_grows_linearly():
    # 160^2 at kT 0.5 to t = 400 MCS (SPPARKS move rule) keeps ~290 grains (>= 200, the stopping rule of docs/tasks/microstructure.md;
    # 128^2 would end at ~180), in about 2 s. Seeds 0-3 on 128^2 gave slopes 0.196-0.231 sites/MCS and
    # intercepts 8-11 (docs/tasks/microstructure.md: 0.19 t + 12 on 256^2), R^2 >= 0.993, and log-log slopes 0.69-0.74 over
    # t = 25..400: below the asymptotic 1 because the intercept (~10 sites, the quench's grain size) still
    # matters early on (for A = 0.2 t + 10 the local exponent rises from 0.33 at t = 25 to 0.89 at t = 400).
    times = [25, 50, 100, 200, 300, 400]
    _, snapshots = simulate_grain_growth(160, 0.5, times[-1], seed=7, snapshot_steps=times)
    areas = [grain_areas(snapshots[t]) for t in times]
    mean_area = np.array([a.mean() for a in areas])
    t = np.array(times, dtype=float)
    assert (np.diff(mean_area) > 0).all(), mean_area
    assert len(areas[-1]) >= 200
    slope, intercept = np.polyfit(t, mean_area, 1)
    residual = mean_area - (slope * t + intercept)
    r_squared = 1 - (residual ** 2).sum() / ((mean_area - mean_area.mean()) ** 2).sum()
    log_slope = np.polyfit(np.log(t), np.log(mean_area), 1)[0]
    assert 0.12 < slope < 0.30, slope
    assert 0 < intercept < 25, intercept
    assert r_squared > 0.97, r_squared
    assert 0.6 < log_slope < 1.2, log_slope


def test_neighbour_rule_grows_faster_per_step():
    # Same physics, shorter time scale: <A> ~ 1.0 t + 7 vs 0.2 t + 10 (module doc), i.e. ~67 vs ~22 sites at
    # t = 60 (measured 61 vs 22); a factor 2 leaves room for seed noise, equal rules would give a factor ~1.
    _, fast = simulate_grain_growth(96, 0.5, 60, seed=1, snapshot_steps=[60], move="neighbour")
    _, slow = simulate_grain_growth(96, 0.5, 60, seed=1, snapshot_steps=[60], move="spparks")
    assert grain_areas(fast[60]).mean() > 2 * grain_areas(slow[60]).mean()


# --- 4. determinism ---------------------------------------------------------------------------------------------

def test_same_seed_same_result_different_seed_different():
    final, snaps = simulate_grain_growth(32, 0.5, 12, seed=5, q=64, snapshot_steps=[0, 6, 12])
    again, snaps_again = simulate_grain_growth(32, 0.5, 12, seed=5, q=64, snapshot_steps=[0, 6, 12],
                                                progress=True)
    other, _ = simulate_grain_growth(32, 0.5, 12, seed=6, q=64)
    assert torch.equal(final, again)
    assert all(torch.equal(snaps[k], snaps_again[k]) for k in (0, 6, 12))
    assert torch.equal(snaps[12], final) and not torch.equal(snaps[0], snaps[6])
    assert not torch.equal(final, other)
    assert final.dtype == torch.int32 and final.shape == (32, 32) and final.device.type == "cpu"

    # The simulation is initial_spins + one monte_carlo_step per step on one generator.
    g = generator(5)
    spins = initial_spins(32, 64, g)
    assert torch.equal(spins, snaps[0])
    for _ in range(12):
        before = spins.clone()
        new = monte_carlo_step(spins, 0.5, g)
        assert torch.equal(spins, before)  # the input is left untouched
        spins = new
    assert torch.equal(spins, final)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="snapshot"):
        simulate_grain_growth(8, 0.5, 3, seed=0, snapshot_steps=[4])
    with pytest.raises(ValueError, match="kT"):
        simulate_grain_growth(8, -1.0, 3, seed=0)
    with pytest.raises(ValueError, match="move"):
        monte_carlo_step(torch.zeros((4, 4), dtype=torch.int32), 0.5, generator(), move="glauber")


# --- 5. lattice size and colours ------------------------------------------------------------------------------------

def test_odd_lattice_sizes_raise():
    with pytest.raises(ValueError, match="even"):
        initial_spins(63, 10, generator())
    with pytest.raises(ValueError, match="even"):
        initial_spins((64, 33), 10, generator())
    with pytest.raises(ValueError, match="even"):
        simulate_grain_growth(31, 0.5, 1, seed=0)
    with pytest.raises(ValueError, match="even"):
        monte_carlo_step(torch.zeros((6, 5), dtype=torch.int32), 0.5, generator())


@pytest.mark.parametrize("shape", [(4, 4), (6, 10), (64, 64)])
def test_colours_partition_the_lattice_and_are_never_neighbours(shape):
    masks = colour_masks(shape)
    assert masks.shape == (4, *shape)
    assert masks.sum(0).eq(1).all()  # every site has exactly one colour
    assert masks.sum((1, 2)).eq(shape[0] * shape[1] // 4).all()
    colours = colour_map(shape)
    for di, dj in NEIGHBOUR_OFFSETS:
        neighbour_colour = torch.roll(colours, shifts=(-di, -dj), dims=(0, 1))
        assert (neighbour_colour != colours).all(), f"same-colour neighbours at offset {(di, dj)}"
    # The sub-lattice planes the update works on are exactly the sites of each colour.
    spins = initial_spins(shape, 1000, generator(2))
    sub = to_sublattices(spins)
    for index, (a, b) in enumerate(COLOURS):
        assert torch.equal(sub[a, b].flatten(), spins[masks[index]])
    assert torch.equal(from_sublattices(sub), spins)


# --- 6. grains and boundaries ---------------------------------------------------------------------------------------

def test_grain_labels_merge_across_the_periodic_edges():
    spins = np.zeros((6, 6), dtype=np.int32)
    spins[:, [0, 5]] = 1  # a vertical band cut by the left/right wrap
    spins[[0, 0, 5, 5], [2, 3, 2, 3]] = 2  # a 2x2 blob cut by the top/bottom wrap
    labels = grain_labels(spins)
    assert labels.min() == 0 and labels.max() == 2  # three grains: background, band, blob
    assert len(np.unique(labels[:, [0, 5]])) == 1
    assert labels[0, 2] == labels[5, 3]
    assert sorted(grain_areas(spins)) == [4, 12, 20]
    assert sorted(grain_areas(spins, periodic=False)) == [2, 2, 6, 6, 20]

    # The four corners are one periodic grain (it wraps both ways), four grains without the wrap.
    corners = np.zeros((6, 6), dtype=np.int32)
    corners[[0, 0, 5, 5], [0, 5, 0, 5]] = 3
    assert sorted(grain_areas(corners)) == [4, 32]
    assert sorted(grain_areas(corners, periodic=False)) == [1, 1, 1, 1, 32]

    # Same spin, not touching: two grains. Touching only diagonally: two grains (4-), one grain (8-connected).
    apart = np.zeros((6, 6), dtype=np.int32)
    apart[1, 1] = apart[3, 3] = 4
    assert len(grain_areas(apart)) == 3
    diagonal = np.zeros((6, 6), dtype=np.int32)
    diagonal[1, 1] = diagonal[2, 2] = 4
    assert len(grain_areas(diagonal)) == 3
    assert len(grain_areas(diagonal, connectivity=8)) == 2
    # Tensors are accepted too, and the areas always sum to the lattice.
    spins = initial_spins(32, 50, generator(9))
    assert grain_areas(spins).sum() == 32 * 32


def test_grain_boundary_image_of_two_stripes():
    image = grain_boundary_image(stripes((8, 8), width=4, axis=0))
    assert image.dtype == np.uint8 and image.shape == (8, 8)
    # Boundaries between rows 3|4 and, through the wrap, 7|0: each is 2 pixels wide.
    np.testing.assert_array_equal(image.any(1), [1, 0, 0, 1, 1, 0, 0, 1])
    assert image[[0, 3, 4, 7]].all()
    # Without the wrap only the inner boundary remains; vertical stripes give the transpose.
    np.testing.assert_array_equal(grain_boundary_image(stripes((8, 8), 4, 0), periodic=False).any(1),
                                  [0, 0, 0, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(grain_boundary_image(stripes((8, 8), 4, 1)), image.T)
    assert not grain_boundary_image(np.zeros((8, 8), dtype=np.int32)).any()
