"""AlloyGAN domain metrics on synthetic measurements whose answers are known (Yin 2024, §5.6.5)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from matcv.lightning_modules.alloygan_metrics import (
    alloy_wise,
    arm_spacing_fit,
    domain_metrics,
    modification_effect,
    si_trend,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: see conftest


RATES = np.array([2.5, 10, 57, 143])


# --- Si trend -----------------------------------------------------------------------------------------

def test_si_trend_monotone_and_slope():
    si = np.array([5, 7, 9.5, 12, 22])
    fraction = 0.01 * si + 0.02
    out = si_trend(si, fraction, expected=fraction + np.array([0.01, -0.01, 0.02, 0, 0]))
    assert out["si_spearman"] == pytest.approx(1.0)
    assert out["si_slope"] == pytest.approx(0.01, abs=1e-12)
    assert out["si_fraction_mae"] == pytest.approx(0.04 / 5)
    # monotone but non-linear still gives ρ = 1; decreasing gives −1
    assert si_trend(si, np.sqrt(si))["si_spearman"] == pytest.approx(1.0)
    assert si_trend(si, -si)["si_spearman"] == pytest.approx(-1.0)


def test_si_trend_nan_cases():
    # 2 distinct Si values (a leave-alloy-out fold can hold only two): ρ with tied ranks, worked by hand:
    # Si ranks (1.5, 1.5, 3.5, 3.5), fraction ranks 1..4 -> ρ = 1 / sqrt(1.25)
    out = si_trend([7, 7, 22, 22], [0.1, 0.12, 0.3, 0.31])
    assert out["si_spearman"] == pytest.approx(1 / np.sqrt(1.25)) and math.isnan(out["si_fraction_mae"])
    assert out["si_slope"] == pytest.approx((0.305 - 0.11) / 15)
    one = si_trend([7, 7, 7], [0.1, 0.2, 0.3])
    assert math.isnan(one["si_spearman"]) and math.isnan(one["si_slope"])
    # non-finite pairs are dropped: the NaN row leaves (5, 0.1) and (9, 0.3)
    assert si_trend([5, 7, 9], [0.1, np.nan, 0.3])["si_spearman"] == pytest.approx(1.0)
    assert math.isnan(si_trend([5, 7, 9], [0.2, 0.2, 0.2])["si_spearman"])  # constant fraction
    with pytest.raises(ValueError):
        si_trend([1, 2, 3], [0.1, 0.2])


# --- arm spacing, eq. 11 ------------------------------------------------------------------------------

def test_perfect_power_law():
    rates = np.repeat(RATES, 3)
    out = arm_spacing_fit(rates, 45.0 * rates ** (-1 / 3))
    assert out["lambda2_n"] == pytest.approx(1 / 3, abs=1e-9)
    assert out["lambda2_k"] == pytest.approx(45.0, abs=1e-9)
    assert out["lambda2_r2"] == pytest.approx(1.0, abs=1e-9)


def test_noise_lowers_r2_and_nan_is_ignored():
    rng = np.random.default_rng(0)
    rates = np.repeat(RATES, 10)
    clean = 45.0 * rates ** (-1 / 3)
    noisy = clean * np.exp(rng.normal(0, 0.15, rates.size))
    out = arm_spacing_fit(rates, noisy)
    assert 0.3 < out["lambda2_r2"] < 0.99
    assert out["lambda2_n"] == pytest.approx(1 / 3, abs=0.1)
    # NaN / non-positive measurements are dropped, not propagated
    with_nan = np.append(clean, [np.nan, 0.0, -1.0])
    ok = arm_spacing_fit(np.append(rates, [10, 10, 10]), with_nan)
    assert ok["lambda2_r2"] == pytest.approx(1.0, abs=1e-9) and ok["lambda2_k"] == pytest.approx(45.0)


def test_arm_spacing_nan_cases():
    out = arm_spacing_fit([10, 10, 10], [20, 21, 22])
    assert all(math.isnan(v) for v in out.values())
    out = arm_spacing_fit([2.5, 10, 57], [np.nan, np.nan, 20])
    assert all(math.isnan(v) for v in out.values())
    flat = arm_spacing_fit(RATES, [20, 20, 20, 20])  # n = 0: CR^0 constant, R² undefined
    assert flat["lambda2_n"] == pytest.approx(0.0, abs=1e-12) and math.isnan(flat["lambda2_r2"])


# --- Sr/P modification --------------------------------------------------------------------------------

def _modification_table():
    rows = []
    for alloy in ("A356", "A393"):
        for rate in (10.0, 57.0):
            for image in range(2):
                rows.append((alloy, rate, 0, 20.0 + image, 40.0 + 2 * image))
                rows.append((alloy, rate, 1, 2 * (20.0 + image), (40.0 + 2 * image) / 2))
    rows.append(("A360", 10.0, 0, 5.0, 50.0))  # never modified: no pair
    rows.append(("A393", 143.0, 1, 5.0, 50.0))  # modified only at 143: no pair
    return pd.DataFrame(rows, columns=["alloy", "cooling_rate", "modified", "count", "size"])


def test_modification_doubled_count_halved_size():
    t = _modification_table()
    out = modification_effect(t.alloy, t.cooling_rate, t.modified, t["count"], t["size"])
    assert out["srp_count_log2_ratio"] == pytest.approx(1.0)
    assert out["srp_size_log2_ratio"] == pytest.approx(-1.0)
    assert out["srp_pairs"] == 4


def test_modification_nan_cases():
    t = _modification_table()
    unmod = t[t.modified == 0]
    out = modification_effect(unmod.alloy, unmod.cooling_rate, unmod.modified, unmod["count"], unmod["size"])
    assert out["srp_pairs"] == 0
    assert math.isnan(out["srp_count_log2_ratio"]) and math.isnan(out["srp_size_log2_ratio"])
    # zero particles in the modified images: count ratio is −inf → that pair is skipped; NaN sizes ignored
    out = modification_effect(["A", "A"], [10, 10], [0, 1], [4.0, 0.0], [8.0, np.nan])
    assert out["srp_pairs"] == 1
    assert math.isnan(out["srp_count_log2_ratio"]) and math.isnan(out["srp_size_log2_ratio"])
    # booleans are accepted for `modified`
    out = modification_effect(["A", "A"], [10, 10], [False, True], [4.0, 16.0], [8.0, 1.0])
    assert out["srp_count_log2_ratio"] == pytest.approx(2.0) and out["srp_size_log2_ratio"] == pytest.approx(-3.0)


# --- table and alloy-wise -----------------------------------------------------------------------------

def test_domain_metrics_union():
    si_of = {"A356": 7.0, "A393": 22.0, "A360": 9.5}
    t = _modification_table()
    table = pd.DataFrame({
        "alloy": t.alloy, "Si": t.alloy.map(si_of), "cooling_rate": t.cooling_rate, "modified": t.modified,
        "si_area_fraction": 0.01 * t.alloy.map(si_of), "lambda2_px": 45.0 * t.cooling_rate ** (-1 / 3),
        "particle_count_per_10k_px": t["count"], "mean_particle_area_px": t["size"],
    })
    out = domain_metrics(table)
    assert set(out) == {"si_spearman", "si_slope", "si_fraction_mae", "lambda2_n", "lambda2_k", "lambda2_r2",
                        "srp_count_log2_ratio", "srp_size_log2_ratio", "srp_pairs"}
    assert out["si_spearman"] == pytest.approx(1.0) and math.isnan(out["si_fraction_mae"])
    assert out["lambda2_n"] == pytest.approx(1 / 3) and out["lambda2_r2"] == pytest.approx(1.0)
    assert out["srp_count_log2_ratio"] == pytest.approx(1.0) and out["srp_pairs"] == 4
    table["si_area_fraction_expected"] = table["si_area_fraction"] + 0.01
    assert domain_metrics(table)["si_fraction_mae"] == pytest.approx(0.01)
    with pytest.raises(KeyError, match="lambda2_px"):
        domain_metrics(table.drop(columns="lambda2_px"))


def test_alloy_wise():
    mean, std = alloy_wise({"A339": 10.0, "A308": 20.0, "A319": 30.0})
    assert mean == pytest.approx(20.0) and std == pytest.approx(10.0)  # sample std (ddof 1)
    mean, std = alloy_wise({"A339": 12.5})
    assert mean == 12.5 and math.isnan(std)
    assert all(math.isnan(v) for v in alloy_wise({}))


# --- the per-epoch learning-curve metric of the GANs --------------------------------------------------

def test_si_fraction_spearman_follows_the_dark_area_of_the_images():
    import torch

    from matcv.lightning_modules.alloygan import si_fraction_spearman

    si = torch.tensor([5.0, 7.0, 9.5, 12.0, 22.0])
    conditions = torch.zeros(5, 8)
    conditions[:, 0] = si
    images = torch.ones(5, 1, 32, 32)  # light (α-Al) everywhere
    for k in range(5):
        images[k, 0, : 4 * (k + 1)] = -1.0  # a dark (Si) band growing with Si wt%
    assert si_fraction_spearman(images, conditions) == pytest.approx(1.0)
    assert si_fraction_spearman(images.flip(0), conditions) == pytest.approx(-1.0)
    # a collapsed generator (the same image for every condition) has no trend: NaN, not 0
    assert math.isnan(si_fraction_spearman(images[:1].expand(5, -1, -1, -1), conditions))
