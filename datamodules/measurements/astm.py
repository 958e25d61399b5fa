"""ASTM D1654 scribe-creep rating: the table, and creep measured at stations along a scribe.

Creep is the distance corrosion extends from the scribe line, per side. With a corroded band of
width W around a scribe of width w0, creep c = (W - w0) / 2. The non-expert procedure of Yin 2024
(Part I, Fig. 2) measures the band at 12 stations along the scribe, averages, converts to mm and looks the
mean up in the table below.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

N_STATIONS = 12

# Upper-inclusive bin edges (mm) and their ratings: 0 -> 10, (0, 0.5] -> 9, ..., (13, 16] -> 1, > 16 -> 0.
CREEP_UPPER_EDGES_MM: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 13.0, 16.0)
RATINGS_FOR_EDGES: tuple[int, ...] = (10, 9, 8, 7, 6, 5, 4, 3, 2, 1)


def rating_from_creep(mean_creep_mm: float) -> int:
    """ASTM D1654 rating (0-10) of a mean creep in mm; bins are upper-inclusive."""
    c = float(mean_creep_mm)
    if not math.isfinite(c) or c < 0:
        raise ValueError(f"mean creep must be a finite, non-negative length in mm, got {mean_creep_mm!r}")
    for upper, rating in zip(CREEP_UPPER_EDGES_MM, RATINGS_FOR_EDGES):
        if c <= upper:
            return rating
    return 0


def creep_interval(rating: int) -> tuple[float, float]:
    """(lower, upper] creep interval in mm that maps to ``rating`` (rating 10 -> (0, 0), rating 0 -> (16, inf))."""
    if rating == 10:
        return (0.0, 0.0)
    if rating == 0:
        return (CREEP_UPPER_EDGES_MM[-1], math.inf)
    if rating not in RATINGS_FOR_EDGES:
        raise ValueError(f"ASTM D1654 ratings are integers 0..10, got {rating!r}")
    i = RATINGS_FOR_EDGES.index(rating)
    return (CREEP_UPPER_EDGES_MM[i - 1], CREEP_UPPER_EDGES_MM[i])


def station_positions(start: float, stop: float, n_stations: int = N_STATIONS) -> np.ndarray:
    """Centres of ``n_stations`` equal segments of [start, stop] (the stations along a scribe)."""
    return start + (np.arange(n_stations) + 0.5) * (stop - start) / n_stations


def measure_creep_mm(
    mask: np.ndarray,
    scribe_columns: Sequence[float],
    scribe_rows: tuple[float, float],
    scribe_width_mm: float,
    mm_per_px: float,
    n_stations: int = N_STATIONS,
) -> tuple[float, np.ndarray]:
    """Mean creep (mm) of a binary mask with vertical scribes, measured like the ASTM procedure.

    ``scribe_columns`` are the scribe centre lines in pixel coordinates (pixel j covers [j, j+1));
    ``scribe_rows`` the (first, last) row span of the scribes. At each station row, the corroded run
    through the scribe centre gives the band width W; creep = max(0, (W - w0) / 2). A station whose
    scribe centre is not corroded (a gap in discontinuous corrosion) has creep 0.
    Returns the mean over all stations of all scribes and the (n_scribes, n_stations) array.
    """
    mask = np.asarray(mask).astype(bool)
    rows = np.floor(station_positions(scribe_rows[0], scribe_rows[1], n_stations)).astype(int)
    creep = np.zeros((len(scribe_columns), n_stations))
    for s, column in enumerate(scribe_columns):
        centre = int(np.floor(column))
        for k, row in enumerate(rows):
            line = mask[row]
            if not line[centre]:
                continue
            left = centre
            while left > 0 and line[left - 1]:
                left -= 1
            right = centre
            while right < line.size - 1 and line[right + 1]:
                right += 1
            width_mm = (right - left + 1) * mm_per_px
            creep[s, k] = max(0.0, (width_mm - scribe_width_mm) / 2)
    return float(creep.mean()), creep


def measure_creep_along_lines(
    mask: np.ndarray,
    lines: Sequence[tuple[float, float, float, float]],
    scribe_width_mm: float,
    mm_per_px: float,
    n_stations: int = N_STATIONS,
    step_px: float = 0.25,
) -> tuple[float, np.ndarray]:
    """Mean creep (mm) measured on a photo's mask across scribes of any orientation.

    ``lines`` are the scribes' centre lines ``(x_top, y_top, x_bottom, y_bottom)`` in pixel-centre
    coordinates (the synthetic manifest's ``scribe_lines_px``). At each station the band is walked
    perpendicular to the scribe in ``step_px`` steps from the centre line until the mask ends; its width is
    the walked length. A station whose centre is not corroded (a gap) has creep 0. Unlike
    ``measure_creep_mm`` on the generator's fine raster, a photo quantises the band to its pixel size,
    so thin creep (ratings 8-9) needs photos fine enough to resolve it.
    """
    mask = np.asarray(mask).astype(bool)
    height, width = mask.shape
    offsets = np.arange(step_px / 2, math.hypot(height, width), step_px)
    creep = np.zeros((len(lines), n_stations))

    def inside_run(x: float, y: float, dx: float, dy: float) -> int:
        xs, ys = np.rint(x + offsets * dx).astype(int), np.rint(y + offsets * dy).astype(int)
        valid = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
        values = np.zeros(len(offsets), bool)
        values[valid] = mask[ys[valid], xs[valid]]
        return int(np.argmin(values)) if not values.all() else len(values)

    for s, (x0, y0, x1, y1) in enumerate(lines):
        length = math.hypot(x1 - x0, y1 - y0)
        nx, ny = -(y1 - y0) / length, (x1 - x0) / length  # unit normal to the scribe
        for k, t in enumerate((np.arange(n_stations) + 0.5) / n_stations):
            x, y = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
            row, col = int(np.rint(y)), int(np.rint(x))
            if not (0 <= row < height and 0 <= col < width and mask[row, col]):
                continue
            band_px = (inside_run(x, y, nx, ny) + inside_run(x, y, -nx, -ny)) * step_px
            creep[s, k] = max(0.0, (band_px * mm_per_px - scribe_width_mm) / 2)
    return float(creep.mean()), creep
