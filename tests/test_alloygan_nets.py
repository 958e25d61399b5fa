"""AlloyGAN condition encoder (eq. 9 with the Table 7 prior) on the Table 6 alloys worked by hand, and the
conditional generator / discriminator shapes and conditioning (Yin 2024, §5.6)."""

from __future__ import annotations

import pytest
import torch

from matcv.lightning_modules.alloygan_nets import (
    CHEMISTRY_PRIOR,
    CONDITION_COLUMNS,
    ConditionalDiscriminator,
    ConditionalGenerator,
    ConditionEncoder,
    condition_matrix,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: see conftest


# Table 6 (wt%): Si, Fe, Cu, Mn, Mg, Ni; Sr/P modification exists for A356, A369, A393.
TABLE6 = {
    "A356": (7, 0.5, 0.25, 0.35, 0.3, 0),
    "A360": (9.5, 0.6, 0.1, 0.05, 0.5, 0),
    "A369": (11.5, 1, 0.5, 0.25, 0.4, 0.05),
    "A339": (12, 1.2, 2, 0.5, 1, 1),
    "A393": (22, 1.3, 0.9, 0.1, 1, 2.3),
    "A355": (5, 0.65, 1.25, 0.55, 0.5, 0),
    "A308": (5.5, 0.8, 4.5, 0.5, 0.1, 0),
    "A319": (6, 1, 4, 0.4, 0.55, 0.35),
    "A332": (9.5, 0.9, 3, 0.5, 2.1, 0.5),
}
MODIFIABLE = {"A356", "A369", "A393"}
RATES = (2.5, 10, 57, 143)
W = [0.036, 0.018, 0.016, 0.018, 0.021, 0.017]


def rows(alloys=TABLE6, rates=RATES, allow_modified=True):
    out = []
    for name in alloys:
        for rate in rates:
            for modified in ((0, 1) if allow_modified and name in MODIFIABLE else (0,)):
                out.append([*TABLE6[name], rate, modified])
    return torch.tensor(out, dtype=torch.float64)


def raw(name, rate=10.0, modified=0):
    return torch.tensor([[*TABLE6[name], rate, modified]], dtype=torch.float64)


ALL = rows()


def test_constants():
    assert CONDITION_COLUMNS == ("Si", "Fe", "Cu", "Mn", "Mg", "Ni", "cooling_rate", "modified")
    assert [CHEMISTRY_PRIOR[c] for c in CONDITION_COLUMNS[:6]] == W
    assert ALL.shape == (9 * 4 + 3 * 4, 8)  # 36 unmodified + 12 modified condition rows


def test_alloygan_worked_example_a356():
    enc = ConditionEncoder("alloygan").fit(ALL)
    # w ⊙ I1 for A356 = [7·.036, .5·.018, .25·.016, .35·.018, .3·.021, 0]
    weighted = [0.252, 0.009, 0.004, 0.0063, 0.0063, 0.0]
    assert enc.weighted(raw("A356"))[0, :6].tolist() == pytest.approx(weighted, abs=1e-12)
    # unified block over the fitted set: min 0 (Ni of A356 etc.), max 22·0.036 = 0.792 (Si of A393)
    lo, hi = 0.0, 0.792
    assert enc.feature_min[:6].tolist() == pytest.approx([lo] * 6)
    assert enc.feature_max[:6].tolist() == pytest.approx([hi] * 6)
    y = enc(raw("A356", rate=10.0, modified=1))[0]
    expected_chem = [v / hi for v in weighted]
    assert expected_chem[0] == pytest.approx(0.3181818181818, abs=1e-12)  # 0.252 / 0.792
    assert y[:6].tolist() == pytest.approx(expected_chem, abs=1e-12)
    # I2 per feature: cooling rate (10 − 2.5)/(143 − 2.5), Sr/P (1 − 0)/(1 − 0)
    assert y[6].item() == pytest.approx(7.5 / 140.5, abs=1e-12)
    assert y[7].item() == 1.0
    # A393 Fe: 1.3·0.018 / 0.792 (Fe stays small next to Si: the prior's relative weight survives)
    assert enc(raw("A393"))[0, 1].item() == pytest.approx(1.3 * 0.018 / 0.792, abs=1e-12)
    assert enc(raw("A393"))[0, 0].item() == pytest.approx(1.0)


def test_alloygan_matches_hand_computation_for_all_rows():
    enc = ConditionEncoder("alloygan").fit(ALL)
    y = enc(ALL)
    assert y.dtype == torch.float64 and y.shape == ALL.shape
    for i, row in enumerate(ALL.tolist()):
        chem = [r * w for r, w in zip(row[:6], W)]
        want = [c / 0.792 for c in chem] + [(row[6] - 2.5) / 140.5, row[7]]
        assert y[i].tolist() == pytest.approx(want, abs=1e-12)
    assert y.min() == 0.0 and y.max() == 1.0


def test_cgan_per_feature_minmax():
    enc = ConditionEncoder("cgan").fit(ALL)
    y = enc(raw("A356"))[0]
    assert y[0].item() == pytest.approx((7 - 5) / (22 - 5), abs=1e-12)  # 0.1176...
    assert y[0].item() == pytest.approx(0.11764705882, abs=1e-10)
    assert y[1].item() == pytest.approx(0.0)                              # Fe 0.5 is the minimum
    assert enc(raw("A393"))[0, 1].item() == pytest.approx((1.3 - 0.5) / (1.3 - 0.5))  # = 1.0
    # every column spans exactly [0, 1] on the fitted set
    full = enc(ALL)
    assert full.min(dim=0).values.tolist() == pytest.approx([0.0] * 8)
    assert full.max(dim=0).values.tolist() == pytest.approx([1.0] * 8)


def test_prior_changes_relative_scale_of_si_vs_fe():
    a356, a393 = raw("A356"), raw("A393")
    ag, cg = ConditionEncoder("alloygan").fit(ALL), ConditionEncoder("cgan").fit(ALL)
    # A393's Fe: AlloyGAN 0.0295 (Si 1.0) vs cGAN 1.0 (as large as its Si)
    assert ag(a393)[0, 1] / ag(a393)[0, 0] == pytest.approx(1.3 * 0.018 / 0.792)
    assert cg(a393)[0, 1] / cg(a393)[0, 0] == pytest.approx(1.0)
    # a per-feature min-max of w ⊙ I1 would cancel w exactly: it equals the cGAN chemistry
    weighted = ag.weighted(ALL)[:, :6]
    per_feature = (weighted - weighted.min(0).values) / (weighted.max(0).values - weighted.min(0).values)
    assert torch.allclose(per_feature, cg(ALL)[:, :6])
    assert not torch.allclose(ag(a356), cg(a356))


def test_unseen_alloy_extrapolates_without_clamping():
    train = rows([a for a in TABLE6 if a != "A393"], rates=(2.5, 10, 57))  # A393 and 143 K/s held out
    ag = ConditionEncoder("alloygan").fit(train)
    assert ag.feature_max[0].item() == pytest.approx(12 * 0.036)  # A339's Si, 0.432
    y = ag(raw("A393", rate=143.0))[0]
    assert y[0].item() == pytest.approx(0.792 / 0.432)            # 1.8333 > 1
    assert y[6].item() == pytest.approx((143 - 2.5) / (57 - 2.5))  # 2.578 > 1
    cg = ConditionEncoder("cgan").fit(train)
    assert cg(raw("A393"))[0, 0].item() == pytest.approx((22 - 5) / (12 - 5))
    # below the training range goes negative
    low = torch.tensor([[1.0, 0, 0, 0, 0, 0, 1.0, 0]], dtype=torch.float64)
    assert cg(low)[0, 0].item() == pytest.approx((1 - 5) / 7)


def test_constant_feature_maps_to_zero():
    enc = ConditionEncoder("alloygan").fit(rows(allow_modified=False))  # no modified training image
    assert enc.feature_min[7] == enc.feature_max[7] == 0
    assert enc(raw("A356", modified=1))[0, 7].item() == 0.0
    assert enc(raw("A356", modified=0))[0, 7].item() == 0.0
    one = ConditionEncoder("cgan").fit(raw("A356"))  # one row: everything constant
    assert torch.equal(one(rows()), torch.zeros(ALL.shape, dtype=torch.float64))


def test_state_dict_round_trip_and_dtype():
    enc = ConditionEncoder("alloygan").fit(ALL)
    fresh = ConditionEncoder("alloygan")
    with pytest.raises(RuntimeError, match="fit"):
        fresh(ALL)
    fresh.load_state_dict(enc.state_dict())
    assert bool(fresh.fitted)
    assert torch.equal(fresh(ALL), enc(ALL))
    y32 = fresh(ALL.float())
    assert y32.dtype == torch.float32 and torch.allclose(y32.double(), enc(ALL), atol=1e-6)
    assert {"weights", "feature_min", "feature_max", "fitted"} <= set(enc.state_dict())


def test_condition_matrix_and_bad_inputs():
    m = condition_matrix([dict(zip(CONDITION_COLUMNS, [7, .5, .25, .35, .3, 0, 10, True]))])
    assert torch.equal(m, raw("A356", modified=1))
    with pytest.raises(ValueError):
        ConditionEncoder("other")
    with pytest.raises(ValueError):
        ConditionEncoder("cgan").fit(torch.zeros(3, 7))


@pytest.mark.parametrize("size", [64, 128])
def test_generator_discriminator_shapes(size):
    g = ConditionalGenerator(nz=16, ngf=8, image_size=size)
    d = ConditionalDiscriminator(ndf=8, image_size=size)
    y = ConditionEncoder("alloygan").fit(ALL)(ALL[:4]).float()
    x = g(torch.randn(4, 16), y)
    assert x.shape == (4, 1, size, size)
    assert x.abs().max() <= 1.0
    assert g(torch.randn(4, 16, 1, 1), y).shape == x.shape
    assert d(x, y).shape == (4,)
    assert g.main[0].in_channels == 16 + 8 and d.main[0].in_channels == 1 + 8
    with pytest.raises(ValueError):
        g(torch.randn(4, 16), y[:, :7])
    with pytest.raises(ValueError):
        d(x, y[:3])


def test_discriminator_sees_condition_and_generator_gets_gradients():
    torch.manual_seed(0)
    g = ConditionalGenerator(nz=16, ngf=8, image_size=64)
    d = ConditionalDiscriminator(ndf=8, image_size=64).eval()
    y = ConditionEncoder("alloygan").fit(ALL)(ALL[:4]).float()
    x = torch.rand(4, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        assert not torch.allclose(d(x, y), d(x, 1.0 - y))
        # the generator output depends on y too (eval: no batch statistics)
        g.eval()
        z = torch.randn(4, 16)
        assert not torch.allclose(g(z, y), g(z, 1.0 - y))
    g.train()
    fake = g(torch.randn(4, 16), y)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(d(fake, y), torch.ones(4))
    loss.backward()
    grads = [p.grad for p in g.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    assert g.main[0].weight.grad.abs().sum() > 0
