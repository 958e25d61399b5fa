"""ASTM D1654 rating table and creep measurement (datamodules/measurements/astm.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from matcv.datamodules.measurements import astm

# The ASTM D1654 table (as in docs/data.md), written out independently of the module: (upper-inclusive edge, rating).
TABLE = [(0.0, 10), (0.5, 9), (1.0, 8), (2.0, 7), (3.0, 6), (5.0, 5), (7.0, 4), (10.0, 3), (13.0, 2), (16.0, 1)]
# The rating of the bin that starts just above each edge.
NEXT_RATING = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]


def above(x: float) -> float:
    return float(np.nextafter(x, math.inf))


# --- rating_from_creep ----------------------------------------------------------------------------

@pytest.mark.parametrize(("edge", "rating"), TABLE)
def test_rating_at_each_edge_is_upper_inclusive(edge, rating):
    assert astm.rating_from_creep(edge) == rating


@pytest.mark.parametrize(("edge", "rating"), list(zip([e for e, _ in TABLE], NEXT_RATING)))
def test_rating_just_above_each_edge_falls_into_next_bin(edge, rating):
    assert astm.rating_from_creep(above(edge)) == rating
    assert astm.rating_from_creep(edge + 1e-9) == rating


def test_rating_spot_values_and_types():
    assert astm.rating_from_creep(0) == 10
    assert astm.rating_from_creep(-0.0) == 10
    assert astm.rating_from_creep(0.25) == 9
    assert astm.rating_from_creep(0.75) == 8
    assert astm.rating_from_creep(4) == 5
    assert astm.rating_from_creep(np.float32(6.0)) == 4
    assert astm.rating_from_creep(16.5) == 0
    assert astm.rating_from_creep(1e6) == 0
    assert isinstance(astm.rating_from_creep(np.float64(2.5)), int)


def test_table_constants_match_science_md():
    assert list(zip(astm.CREEP_UPPER_EDGES_MM, astm.RATINGS_FOR_EDGES)) == TABLE


@pytest.mark.parametrize("bad", [-1e-9, -0.5, -16.0, math.nan, np.nan, math.inf, -math.inf])
def test_rating_rejects_negative_nan_and_infinite(bad):
    with pytest.raises(ValueError, match="non-negative"):
        astm.rating_from_creep(bad)


# --- creep_interval -------------------------------------------------------------------------------

@pytest.mark.parametrize("rating", range(1, 10))
def test_creep_interval_round_trips(rating):
    lo, hi = astm.creep_interval(rating)
    assert lo < hi
    assert astm.rating_from_creep(hi) == rating  # upper edge included
    assert astm.rating_from_creep(above(lo)) == rating  # lower edge excluded ...
    assert astm.rating_from_creep(lo) == rating + 1  # ... it belongs to the better rating
    assert astm.rating_from_creep((lo + hi) / 2) == rating
    for t in np.linspace(0.01, 1.0, 25):
        assert astm.rating_from_creep(lo + t * (hi - lo)) == rating


def test_creep_interval_extremes():
    assert astm.creep_interval(10) == (0.0, 0.0)
    assert astm.rating_from_creep(astm.creep_interval(10)[1]) == 10
    lo, hi = astm.creep_interval(0)
    assert (lo, hi) == (16.0, math.inf)
    assert astm.rating_from_creep(above(lo)) == 0
    assert astm.rating_from_creep(1000.0) == 0


def test_creep_intervals_tile_the_half_line():
    # The lower end of rating r is the upper end of rating r + 1: no gap, no overlap.
    for rating in range(0, 10):
        assert astm.creep_interval(rating)[0] == astm.creep_interval(rating + 1)[1]


@pytest.mark.parametrize("bad", [-1, 11, 42])
def test_creep_interval_rejects_unknown_rating(bad):
    with pytest.raises(ValueError, match="0..10"):
        astm.creep_interval(bad)


# --- measure_creep_mm on hand-made masks -----------------------------------------------------------

MM_PER_PX = 0.1
W0 = 0.5  # scribe width, mm
ROWS = (10.0, 110.0)  # scribe row span


def station_rows(n: int = astm.N_STATIONS) -> list[int]:
    """Station rows computed by hand: centres of n equal segments of ROWS, floored."""
    return [int(math.floor(ROWS[0] + (k + 0.5) * (ROWS[1] - ROWS[0]) / n)) for k in range(n)]


def band_mask(shape=(120, 100), centre=50, left=10, right=10, rows=slice(10, 111)):
    """A vertical corroded band covering columns centre-left .. centre+right (inclusive)."""
    mask = np.zeros(shape, np.uint8)
    mask[rows, centre - left : centre + right + 1] = 1
    return mask


def expected_creep(width_px: int) -> float:
    return max(0.0, (width_px * MM_PER_PX - W0) / 2)


def test_station_positions_are_segment_centres():
    np.testing.assert_allclose(astm.station_positions(0, 12), np.arange(12) + 0.5)
    np.testing.assert_allclose(astm.station_positions(10, 110, 4), [22.5, 47.5, 72.5, 97.5])
    assert [int(r) for r in np.floor(astm.station_positions(*ROWS))] == station_rows()


def test_band_of_known_width_gives_known_creep():
    mask = band_mask(left=10, right=10)  # 21 px = 2.1 mm band, 0.5 mm scribe -> 0.8 mm per side
    mean, per_station = astm.measure_creep_mm(mask, [50.5], ROWS, W0, MM_PER_PX)
    assert per_station.shape == (1, astm.N_STATIONS)
    np.testing.assert_allclose(per_station, expected_creep(21))
    assert mean == pytest.approx(0.8)
    assert astm.rating_from_creep(mean) == 8


@pytest.mark.parametrize(("left", "right"), [(5, 15), (0, 20), (20, 0), (3, 3), (30, 12)])
def test_creep_is_band_width_minus_scribe_over_two_even_if_asymmetric(left, right):
    mask = band_mask(left=left, right=right)
    mean, per_station = astm.measure_creep_mm(mask, [50.5], ROWS, W0, MM_PER_PX)
    assert mean == pytest.approx(expected_creep(left + right + 1))
    np.testing.assert_allclose(per_station, expected_creep(left + right + 1))


def test_scribe_column_is_floored_to_its_pixel():
    mask = band_mask(left=4, right=4)  # columns 46..54
    for column in (50.0, 50.5, 50.99, 46.0, 54.9):
        assert astm.measure_creep_mm(mask, [column], ROWS, W0, MM_PER_PX)[0] == pytest.approx(expected_creep(9))
    # Centre line outside the band: the scribe is not corroded there at all.
    assert astm.measure_creep_mm(mask, [55.0], ROWS, W0, MM_PER_PX)[0] == 0.0
    assert astm.measure_creep_mm(mask, [45.9], ROWS, W0, MM_PER_PX)[0] == 0.0


def test_band_narrower_than_scribe_gives_zero_not_negative():
    mask = band_mask(left=1, right=1)  # 0.3 mm < 0.5 mm scribe
    mean, per_station = astm.measure_creep_mm(mask, [50.5], ROWS, W0, MM_PER_PX)
    assert mean == 0.0
    assert (per_station == 0).all()


def test_gap_row_at_a_station_gives_zero_there():
    mask = band_mask(left=10, right=10)
    rows = station_rows()
    mask[rows[3], :] = 0  # discontinuous corrosion: scribe not corroded at station 3
    mean, per_station = astm.measure_creep_mm(mask, [50.5], ROWS, W0, MM_PER_PX)
    assert per_station[0, 3] == 0.0
    others = np.delete(per_station[0], 3)
    np.testing.assert_allclose(others, 0.8)
    assert mean == pytest.approx(0.8 * 11 / 12)


def test_gap_only_at_scribe_centre_counts_as_gap():
    mask = band_mask(left=10, right=10)
    row = station_rows()[0]
    mask[row, 50] = 0  # corrosion on both sides, but the scribe centre itself is clean
    _, per_station = astm.measure_creep_mm(mask, [50.5], ROWS, W0, MM_PER_PX)
    assert per_station[0, 0] == 0.0
    assert per_station[0, 1] == pytest.approx(0.8)


def test_only_station_rows_count():
    mask = band_mask(left=10, right=10)
    stations = set(station_rows())
    for row in range(mask.shape[0]):
        if row not in stations:
            mask[row, :] = 1  # huge corrosion between the stations is not measured
    assert astm.measure_creep_mm(mask, [50.5], ROWS, W0, MM_PER_PX)[0] == pytest.approx(0.8)


def test_detached_spot_beside_the_band_is_not_creep():
    mask = band_mask(left=10, right=10)
    mask[:, 70:80] = 1  # a rust spot separated from the band by clean coating (columns 61..69)
    assert astm.measure_creep_mm(mask, [50.5], ROWS, W0, MM_PER_PX)[0] == pytest.approx(0.8)
    mask[:, 61:70] = 1  # now it touches the band: the run is 30 px wide (columns 40..79)
    assert astm.measure_creep_mm(mask, [50.5], ROWS, W0, MM_PER_PX)[0] == pytest.approx(expected_creep(40))


def test_band_running_to_the_image_edge():
    mask = band_mask(left=50, right=4)  # columns 0..54: the run stops at the image border
    assert astm.measure_creep_mm(mask, [50.5], ROWS, W0, MM_PER_PX)[0] == pytest.approx(expected_creep(55))
    mask = band_mask(left=4, right=49)  # columns 46..99
    assert astm.measure_creep_mm(mask, [50.5], ROWS, W0, MM_PER_PX)[0] == pytest.approx(expected_creep(54))


def test_two_scribes_are_averaged():
    mask = np.zeros((120, 120), bool)
    mask[:, 25 - 5 : 25 + 6] = True  # 11 px = 1.1 mm -> 0.3 mm creep
    mask[:, 85 - 15 : 85 + 16] = True  # 31 px = 3.1 mm -> 1.3 mm creep
    mean, per_station = astm.measure_creep_mm(mask, [25.5, 85.5], ROWS, W0, MM_PER_PX)
    assert per_station.shape == (2, astm.N_STATIONS)
    np.testing.assert_allclose(per_station[0], 0.3)
    np.testing.assert_allclose(per_station[1], 1.3)
    assert mean == pytest.approx(0.8)
    # A gap on one scribe lowers the mean by that station's share of all 24 stations.
    mask[station_rows()[5], 80:91] = False
    mean, per_station = astm.measure_creep_mm(mask, [25.5, 85.5], ROWS, W0, MM_PER_PX)
    assert per_station[1, 5] == 0.0 and per_station[0, 5] == pytest.approx(0.3)
    assert mean == pytest.approx((12 * 0.3 + 11 * 1.3) / 24)


def test_custom_station_count_and_scale():
    mask = band_mask(left=10, right=10)
    mean, per_station = astm.measure_creep_mm(mask, [50.5], ROWS, 1.0, 0.2, n_stations=4)
    assert per_station.shape == (1, 4)
    assert mean == pytest.approx((21 * 0.2 - 1.0) / 2)


def test_empty_mask_measures_zero():
    mean, per_station = astm.measure_creep_mm(np.zeros((120, 100)), [50.5], ROWS, W0, MM_PER_PX)
    assert mean == 0.0 and per_station.shape == (1, 12)


# --- measure_creep_along_lines: photos, scribes at any angle ------------------------------------------

def test_creep_along_a_tilted_band_matches_its_width():
    """A 10 px wide band along a line tilted by 30 degrees: width 10 px at 0.1 mm/px -> creep (1.0 - 0.5)/2."""
    yy, xx = np.mgrid[0:200, 0:200].astype(float)
    x0, y0, x1, y1 = 60.0, 20.0, 60.0 + 160 * np.tan(np.radians(30)), 180.0
    direction = np.array([x1 - x0, y1 - y0]) / np.hypot(x1 - x0, y1 - y0)
    distance = np.abs((xx - x0) * direction[1] - (yy - y0) * direction[0])
    mask = distance <= 5.0
    mean, per_station = astm.measure_creep_along_lines(mask, [(x0, y0, x1, y1)], 0.5, 0.1)
    assert per_station.shape == (1, 12)
    assert mean == pytest.approx(0.25, abs=0.05)


def test_creep_along_lines_gap_and_two_scribes():
    mask = np.zeros((120, 100), bool)
    mask[:, 18:23] = True  # 5 px band around x = 20
    mask[:, 76:85] = True  # 9 px band around x = 80
    mask[10:60, 18:23] = False  # a gap over the first half of scribe 1
    lines = [(20.0, 0.0, 20.0, 119.0), (80.0, 0.0, 80.0, 119.0)]
    mean, per_station = astm.measure_creep_along_lines(mask, lines, 0.2, 0.1)
    assert per_station[1] == pytest.approx(np.full(12, (0.9 - 0.2) / 2))
    stations_y = (np.arange(12) + 0.5) / 12 * 119
    in_gap = (stations_y >= 9.5) & (stations_y < 59.5)
    assert (per_station[0][in_gap] == 0).all()
    assert per_station[0][~in_gap] == pytest.approx((0.5 - 0.2) / 2)
    assert mean == pytest.approx(per_station.mean())
