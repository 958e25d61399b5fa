"""Potts-model normal grain growth on a periodic square lattice, vectorised in torch (Tran, Rodgers & Wildey 2020, §2.4).

Science (mimicking SPPARKS ``app_style potts/neigh``):

- A 2-D square lattice of H x W sites, periodic in both directions. Every site carries a spin (a grain
  orientation) in 0..Q-1; Q = 2048 by default, as in the SPPARKS runs of Tran et al. 2020, so that two grains
  meeting with the same spin (and coalescing) is rare.
- Neighbourhood: the 8 Moore neighbours (4 orthogonal + 4 diagonal). With 8 neighbours the square lattice's
  boundary energy is much less anisotropic than with 4, so grains come out roughly equiaxed.
- Site energy E_i = number of the 8 neighbours whose spin differs from spin_i. The total energy is the number
  of unlike neighbour *pairs*, each pair counted once: E = sum_i E_i / 2 (every unlike pair appears in the
  site energy of both of its sites). It is proportional to the total grain-boundary length, the driving force
  of curvature-driven grain growth.
- Move: a candidate spin is taken from the neighbourhood (never a random one of the Q spins, which would
  almost never lower the energy: that is what makes Q = 2048 affordable). If it equals the site's own spin
  the move is null. Otherwise the change of the total energy is
  dE = (#neighbours equal to the old spin) - (#neighbours equal to the new spin) and the flip is accepted
  with probability min(1, exp(-dE/kT)) (Metropolis). At kT = 0 a flip is accepted iff dE <= 0, the SPPARKS
  convention (zero-energy flips are accepted, which lets boundaries wander even at kT = 0).
- Two candidate rules (``move=``):
  * ``"spparks"`` (default) is SPPARKS potts/neigh's ``site_event_rejection``: it lists the *distinct*
    unlike neighbour spins and draws an index uniformly in 0..7; an index past the end of that list is a
    null move ("null bin"). Each distinct unlike spin is proposed with probability 1/8 whatever its
    multiplicity. Drawn here as: pick a slot uniformly and make the move null unless that slot is the first
    slot (in ``NEIGHBOUR_OFFSETS`` order) holding its spin; each distinct spin owns exactly one first slot,
    so the proposal distribution is SPPARKS's, with no sorting and no extra random number.
  * ``"neighbour"``: the candidate is the spin of a uniformly chosen slot, so a spin is proposed with
    probability (multiplicity)/8.
  Energetics and growth law are the same; only the time scale differs. ``"neighbour"`` moves boundaries
  faster per MCS (a site on a flat boundary is offered the other grain's spin with probability 3/8 rather
  than 1/8). Measured on 256^2 at kT 0.5 (seed 1, t <= 400 resp. 2000 MCS): <A> = 0.19 t + 9.6 with
  ``"spparks"``, which reproduces the 0.19 t + 12 of docs/tasks/microstructure.md, and <A> = 1.03 t + 6.8 with ``"neighbour"``.
  SPPARKS is the default so that "N Monte Carlo steps" means what it means in the runs of Tran et al. 2020.
- One Monte Carlo step (MCS) = every site attempted once.
- Normal grain growth: the mean grain area grows about linearly in time, <A> = k t + A0 (parabolic growth of
  the mean radius). Measurements should stop while >= 200 grains remain, before the finite lattice (few big
  grains) biases the statistics.

Why it is vectorised with 4 sub-lattice colours: a site's flip only depends on its own spin and its 8
neighbours. Colour the sites by (i % 2, j % 2); two sites of the same colour differ by an even number of
rows and an even number of columns, so (on an even-sized periodic lattice) they are never 8-neighbours. All
sites of one colour can therefore be updated *at once*: their neighbourhoods contain no site of that colour,
so the simultaneous update equals sequential single-site updates of those sites in any order (this is
checked against a sequential reference in the tests). One MCS updates the 4 colours once each; the order of
the colours is a fresh random permutation per MCS drawn from the caller's generator (a fixed order would add a
small systematic drift of the update sequence; the permutation costs nothing). Odd lattice sizes break the
colouring across the periodic wrap (column W-1 and column 0 would have the same parity yet be neighbours),
so they raise ``ValueError``.

The lattice is held as its 4 sub-lattices, a (2, 2, H/2, W/2) tensor ``sub[a, b] = spins[a::2, b::2]``, so a
colour update touches only a quarter of the sites (no masked full-lattice arithmetic); the neighbour of
sub-lattice (a, b) at offset (di, dj) is the sub-lattice ((a+di) % 2, (b+dj) % 2) rolled by
(-((a+di) // 2), -((b+dj) // 2)) (``torch.roll`` makes it periodic).

Determinism: every random number (initial spins, colour orders, neighbour slots, Metropolis uniforms) comes
from one ``torch.Generator``, so the same seed on the same device gives identical spins. (CPU and CUDA
generators produce different streams, so a seed reproduces per device type.)

Analysis helpers (numpy): grains are the connected regions of equal spin (4-connectivity by default, merged
across the periodic wrap), their areas, and the grain-boundary image the autoencoders learn.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm.auto import tqdm

# The 8 Moore-neighbour offsets (row, column), in the fixed slot order used by the moves.
NEIGHBOUR_OFFSETS: tuple[tuple[int, int], ...] = (
    (-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
# The 4 colours (row parity, column parity); colour index = 2 * (i % 2) + (j % 2).
COLOURS: tuple[tuple[int, int], ...] = ((0, 0), (0, 1), (1, 0), (1, 1))
MOVES = ("neighbour", "spparks")
_SLOT_INDEX = torch.arange(len(NEIGHBOUR_OFFSETS)).view(-1, 1, 1)
SPIN_DTYPE = torch.int32  # halves memory traffic against int64; Q = 2048 fits with room to spare


# ---------------------------------------------------------------------------------------------------------
# Lattice geometry
# ---------------------------------------------------------------------------------------------------------

def lattice_shape(size: int | Sequence[int]) -> tuple[int, int]:
    """(H, W) from ``size`` (an int for a square lattice); ValueError unless both are even and positive."""
    if isinstance(size, (int, np.integer)):
        shape = (int(size), int(size))
    else:
        shape = tuple(int(n) for n in size)
        if len(shape) != 2:
            raise ValueError(f"the Potts lattice is 2-D: size must be an int or (H, W), got {tuple(size)}")
    if min(shape) < 2 or shape[0] % 2 or shape[1] % 2:
        raise ValueError(f"lattice size must be even and >= 2 along both axes, got {shape}: the 4-colour "
                         "(i % 2, j % 2) update needs even sizes, otherwise sites of one colour are neighbours "
                         "across the periodic wrap")
    return shape


def colour_map(shape: int | Sequence[int]) -> torch.Tensor:
    """(H, W) int64 colour index 2 * (i % 2) + (j % 2) of every site (the sites updated together)."""
    height, width = lattice_shape(shape)
    rows = torch.arange(height).remainder(2).unsqueeze(1)
    cols = torch.arange(width).remainder(2).unsqueeze(0)
    return 2 * rows + cols


def colour_masks(shape: int | Sequence[int]) -> torch.Tensor:
    """(4, H, W) bool: mask c selects the sites of colour c (partition of the lattice)."""
    colours = colour_map(shape)
    return torch.stack([colours == c for c in range(len(COLOURS))])


def to_sublattices(spins: torch.Tensor) -> torch.Tensor:
    """(H, W) -> a *copy* as (2, 2, H/2, W/2) with ``sub[a, b] == spins[a::2, b::2]``."""
    height, width = lattice_shape(tuple(spins.shape))
    sub = spins.reshape(height // 2, 2, width // 2, 2).permute(1, 3, 0, 2)
    # clone, not contiguous(): contiguous() may return the input's own storage (tiny lattices), and the
    # colour updates write into this tensor in place.
    return sub.clone(memory_format=torch.contiguous_format)


def from_sublattices(sub: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_sublattices`: (2, 2, h, w) -> a new (2h, 2w) tensor."""
    _, _, h, w = sub.shape
    return sub.permute(2, 0, 3, 1).reshape(2 * h, 2 * w)


# ---------------------------------------------------------------------------------------------------------
# Energy
# ---------------------------------------------------------------------------------------------------------

def site_energy(spins: torch.Tensor) -> torch.Tensor:
    """(H, W) integer spins -> (H, W) int64: number of the 8 periodic neighbours with a different spin."""
    spins = torch.as_tensor(spins)
    if spins.ndim != 2:
        raise ValueError(f"spins must be 2-D, got shape {tuple(spins.shape)}")
    energy = torch.zeros(spins.shape, dtype=torch.int64, device=spins.device)
    for di, dj in NEIGHBOUR_OFFSETS:
        # roll by (-di, -dj) puts the neighbour at (i + di, j + dj) onto site (i, j), periodically.
        energy += torch.roll(spins, shifts=(-di, -dj), dims=(0, 1)) != spins
    return energy


def total_energy(spins: torch.Tensor) -> int:
    """Number of unlike 8-neighbour pairs, each pair counted once (= sum of site energies / 2)."""
    return int(site_energy(spins).sum()) // 2


# ---------------------------------------------------------------------------------------------------------
# Monte Carlo
# ---------------------------------------------------------------------------------------------------------

def initial_spins(size: int | tuple[int, int], q: int, generator: torch.Generator) -> torch.Tensor:
    """(H, W) int32 spins, each uniform in 0..q-1, on the generator's device (a fully random "quench")."""
    shape = lattice_shape(size)
    if q < 1:
        raise ValueError(f"q (number of spin values) must be >= 1, got {q}")
    return torch.randint(0, q, shape, generator=generator, device=generator.device, dtype=SPIN_DTYPE)


def _check_kT(kT: float) -> float:
    if not kT >= 0.0:  # also rejects NaN
        raise ValueError(f"kT must be >= 0, got {kT}")
    return float(kT)


def _neighbour_stack(sub: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """(8, h, w): the spins at the 8 neighbour slots of every site of colour (a, b) (module doc)."""
    neighbours = []
    for di, dj in NEIGHBOUR_OFFSETS:
        p, r = a + di, b + dj
        shifts = (-(p // 2), -(r // 2))
        plane = sub[p % 2, r % 2]
        neighbours.append(plane if shifts == (0, 0) else torch.roll(plane, shifts=shifts, dims=(0, 1)))
    return torch.stack(neighbours)


def update_colour(sub: torch.Tensor, colour: tuple[int, int], slot: torch.Tensor, uniform: torch.Tensor | None,
                  kT: float, move: str = "spparks") -> None:
    """Attempt one move at every site of ``colour`` simultaneously, in place on the sub-lattices ``sub``.

    ``slot`` (h, w) int64 in 0..7 picks the neighbour slot (index into ``NEIGHBOUR_OFFSETS``); ``uniform``
    (h, w) in [0, 1) decides Metropolis acceptance at ``kT`` > 0 (None at kT = 0, where no random number is
    needed). Exposed with explicit random numbers so the tests can compare it with a sequential reference.
    """
    a, b = colour
    centre = sub[a, b]
    neighbours = _neighbour_stack(sub, a, b)
    candidate = neighbours.gather(0, slot.unsqueeze(0)).squeeze(0)
    same_as_candidate = neighbours == candidate
    # dE = unlike neighbours after - before = (#equal to old) - (#equal to new); 0 for a null move.
    # (Reductions over the slot axis are much faster into a small integer type than into int64.)
    delta = ((neighbours == centre).sum(0, dtype=torch.int16)
             - same_as_candidate.sum(0, dtype=torch.int16))
    if kT == 0.0:
        accept = delta <= 0  # kT = 0: SPPARKS accepts dE <= 0 (zero-energy flips included)
    else:
        # Metropolis u < min(1, exp(-dE/kT)) written as dE < -kT ln u: the same test (always true for
        # dE <= 0 because u < 1), without a table gather or an exp per site.
        accept = delta < torch.log(uniform).mul_(-kT)
    if move == "spparks":
        # Null unless the drawn slot is the first slot holding its spin: every distinct spin owns exactly one
        # first slot, so each is proposed with probability 1/8 whatever its multiplicity (module doc).
        earlier = _SLOT_INDEX.to(slot.device) < slot
        accept &= (same_as_candidate & earlier).sum(0, dtype=torch.uint8) == 0
    sub[a, b] = torch.where(accept, candidate, centre)


def sweep(sub: torch.Tensor, kT: float, generator: torch.Generator, move: str = "spparks") -> None:
    """One MCS in place on sub-lattices (:func:`to_sublattices`): the 4 colours in a random order.

    The loop body of :func:`simulate_grain_growth`; ``kT`` must be >= 0 (not re-checked here, per step).
    """
    _, _, h, w = sub.shape
    device = sub.device
    order = torch.randperm(len(COLOURS), generator=generator, device=device).tolist()
    for index in order:
        slot = torch.randint(0, len(NEIGHBOUR_OFFSETS), (h, w), generator=generator, device=device)
        # No uniforms at kT = 0: the decision is deterministic, and skipping them saves a third of the draws.
        uniform = None if kT == 0.0 else torch.rand((h, w), generator=generator, device=device)
        update_colour(sub, COLOURS[index], slot, uniform, kT, move)


def _check_move_and_generator(move: str, generator: torch.Generator, device: torch.device) -> None:
    if move not in MOVES:
        raise ValueError(f"move must be one of {MOVES}, got {move!r}")
    if generator.device.type != device.type:
        raise ValueError(f"the generator is on {generator.device} but the spins are on {device}")


def monte_carlo_step(spins: torch.Tensor, kT: float, generator: torch.Generator,
                     move: str = "spparks") -> torch.Tensor:
    """One MCS (every site attempted once, colours in random order); returns a *new* (H, W) tensor.

    ``spins`` is left untouched, keeps its dtype and device; ``generator`` must be on the same device.
    For many steps use :func:`simulate_grain_growth`, which avoids converting to and from sub-lattices every
    step (and draws the same random numbers, so it gives the same spins).
    """
    spins = torch.as_tensor(spins)
    lattice_shape(tuple(spins.shape))
    _check_move_and_generator(move, generator, spins.device)
    sub = to_sublattices(spins)
    sweep(sub, _check_kT(kT), generator, move)
    return from_sublattices(sub)


def simulate_grain_growth(size: int | tuple[int, int], kT: float, mc_steps: int, seed: int, q: int = 2048,
                          snapshot_steps: Sequence[int] = (), device: str | torch.device = "cpu",
                          progress: bool = False, move: str = "spparks",
                          ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Grow grains from a random quench for ``mc_steps`` MCS at temperature ``kT``.

    Returns the final spins and ``{step: spins}`` for each requested step (0 = the initial state, at most
    ``mc_steps``), all as int32 (H, W) tensors on the CPU (the consumers label grains and draw images in
    numpy; the simulation itself runs on ``device``). Deterministic from ``seed`` on a given device type:
    the generator is ``torch.Generator(device).manual_seed(seed)``, used first by :func:`initial_spins`,
    then by one :func:`monte_carlo_step` per step.

    Speed (2-core CPU, one torch thread): about 2 ms per MCS at 128^2 and 4-6 ms at 256^2. The per-colour
    tensors are small, so a second torch thread gains little, and on a CPU shared with other busy processes
    torch's intra-op threads can make a step 10x slower: call ``torch.set_num_threads(1)`` there
    (benchmarks/speed/microstructure_speed.py measures both).
    """
    device = torch.device(device)
    shape = lattice_shape(size)
    if mc_steps < 0:
        raise ValueError(f"mc_steps must be >= 0, got {mc_steps}")
    wanted = {int(step) for step in snapshot_steps}
    outside = sorted(step for step in wanted if not 0 <= step <= mc_steps)
    if outside:
        raise ValueError(f"snapshot steps {outside} are outside 0..{mc_steps}")
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    _check_move_and_generator(move, generator, device)
    kT = _check_kT(kT)

    spins = initial_spins(shape, q, generator)
    snapshots = {0: spins.cpu().clone()} if 0 in wanted else {}
    sub = to_sublattices(spins)
    for step in tqdm(range(1, mc_steps + 1), desc=f"Potts {shape[0]}x{shape[1]} kT {kT:g}", unit="MCS",
                     disable=not progress):
        sweep(sub, kT, generator, move)
        if step in wanted:
            snapshots[step] = from_sublattices(sub).cpu()
    return from_sublattices(sub).cpu(), snapshots


# ---------------------------------------------------------------------------------------------------------
# Grain analysis (numpy)
# ---------------------------------------------------------------------------------------------------------

def _as_numpy_2d(spins) -> np.ndarray:
    if isinstance(spins, torch.Tensor):
        spins = spins.detach().cpu().numpy()
    spins = np.asarray(spins)
    if spins.ndim != 2:
        raise ValueError(f"spins must be 2-D, got shape {spins.shape}")
    return spins


def grain_labels(spins: np.ndarray | torch.Tensor, periodic: bool = True, connectivity: int = 4) -> np.ndarray:
    """(H, W) int64 grain label 0..n-1 of every site: connected regions of equal spin.

    Sites are joined when they have the same spin and are 4-neighbours (``connectivity=8`` also joins
    diagonal neighbours). With ``periodic=True`` the lattice wraps, so a grain cut by an edge of the array is
    one grain. Two separate regions that happen to share a spin value are two grains. Implemented as the
    connected components of the graph of equal-spin neighbour pairs (wrap pairs included), which is the same
    as labelling the regions inside the array (scipy.ndimage.label) and then merging labels that touch across
    the edges, in one step. Labels are numbered in order of first appearance in raster order.

    4-connectivity (the default) is the usual image-analysis convention for grains; 8-connected regions of
    one spin that touch only at a corner are rare with Q = 2048 and only occur at a sub-grain scale.
    """
    spins = _as_numpy_2d(spins)
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    height, width = spins.shape
    index = np.arange(height * width).reshape(height, width)
    rows, cols = np.indices((height, width))
    # Half of the neighbour offsets suffice: the graph is undirected.
    offsets = [(0, 1), (1, 0)] + ([(1, 1), (1, -1)] if connectivity == 8 else [])
    sources, targets = [], []
    for di, dj in offsets:
        other_spins = np.roll(spins, (-di, -dj), axis=(0, 1))
        other_index = np.roll(index, (-di, -dj), axis=(0, 1))
        same = spins == other_spins
        if not periodic:
            same &= (rows + di >= 0) & (rows + di < height) & (cols + dj >= 0) & (cols + dj < width)
        sources.append(index[same])
        targets.append(other_index[same])
    sources, targets = np.concatenate(sources), np.concatenate(targets)
    graph = coo_matrix((np.ones(len(sources), np.int8), (sources, targets)), shape=(index.size, index.size))
    _, labels = connected_components(graph, directed=False)
    return labels.reshape(height, width).astype(np.int64)


def grain_areas(spins: np.ndarray | torch.Tensor, periodic: bool = True, connectivity: int = 4) -> np.ndarray:
    """Pixel (site) area of every grain, indexed by :func:`grain_labels`; sums to H * W."""
    return np.bincount(grain_labels(spins, periodic, connectivity).ravel())


def grain_boundary_image(spins: np.ndarray | torch.Tensor, periodic: bool = True) -> np.ndarray:
    """uint8 (H, W): 1 where a site differs from any of its 4 nearest neighbours (up, down, left, right).

    So a boundary between two grains is 2 pixels wide (one pixel on each side), symmetric under reflection
    and free of the half-pixel shift a "right or lower neighbour only" rule would give. With ``periodic``
    (default, as the simulation) the lattice wraps; otherwise sites on the array's edge are compared only
    with the neighbours inside it.
    """
    spins = _as_numpy_2d(spins)
    boundary = np.zeros(spins.shape, dtype=bool)
    if periodic:
        for shift, axis in ((1, 0), (-1, 0), (1, 1), (-1, 1)):
            boundary |= spins != np.roll(spins, shift, axis=axis)
    else:
        vertical = spins[1:, :] != spins[:-1, :]
        horizontal = spins[:, 1:] != spins[:, :-1]
        boundary[1:, :] |= vertical
        boundary[:-1, :] |= vertical
        boundary[:, 1:] |= horizontal
        boundary[:, :-1] |= horizontal
    return boundary.astype(np.uint8)
