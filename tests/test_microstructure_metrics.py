"""Physical sample metrics (S2, volume fraction, grain sizes, diversity) against hand-computed values, and
FID/KID-domain through torch-fidelity with a tiny extractor trained here."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from matcv.lightning_modules import domain_features as df
from matcv.lightning_modules.microstructure_metrics import (
    diversity_ratio,
    grain_areas_from_boundaries,
    grain_size_distance,
    phase_indicator,
    s2_distance,
    two_point_statistics,
    volume_fraction,
    volume_fraction_error,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: see conftest


def stripes(size: int = 16) -> torch.Tensor:
    """Vertical stripes of period 4: columns 1, 1, 0, 0, ... (one image, (1, H, W))."""
    row = torch.tensor([1.0, 1.0, 0.0, 0.0]).repeat(size // 4)
    return row.expand(size, size).clone()[None]


def checkerboard(size: int = 16) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return ((y + x) % 2 == 0).to(torch.float32)[None]


def at(s2: torch.Tensor, dy: int, dx: int) -> float:
    """S2 map entry for the shift (dy, dx) (r = 0 at the centre)."""
    h, w = s2.shape[-2:]
    return float(s2[..., h // 2 + dy, w // 2 + dx])


# ---------------------------------------------------------------- S2


def test_s2_of_stripes_is_analytic():
    s2 = two_point_statistics(stripes(), periodic=True)[0]
    expected_x = [0.5, 0.25, 0.0, 0.25]
    for dx in range(-8, 8):
        assert at(s2, 0, dx) == pytest.approx(expected_x[dx % 4], abs=1e-12)
    for dy in range(-8, 8):
        assert at(s2, dy, 0) == pytest.approx(0.5, abs=1e-12)
        assert at(s2, dy, 1) == pytest.approx(0.25, abs=1e-12)


def test_s2_of_checkerboard_is_analytic():
    s2 = two_point_statistics(checkerboard(), periodic=True)[0]
    assert at(s2, 0, 0) == pytest.approx(0.5, abs=1e-12)
    assert at(s2, 0, 1) == pytest.approx(0.0, abs=1e-12)
    assert at(s2, 1, 0) == pytest.approx(0.0, abs=1e-12)
    assert at(s2, 1, 1) == pytest.approx(0.5, abs=1e-12)
    assert at(s2, -3, 2) == pytest.approx(0.0, abs=1e-12)


def test_s2_at_zero_is_volume_fraction_and_nonperiodic_constant():
    rng = np.random.default_rng(0)
    binary = torch.from_numpy(rng.random((5, 20, 24)) < np.array([0.1, 0.3, 0.5, 0.7, 0.9])[:, None, None])
    binary = binary.to(torch.float32)
    for periodic in (True, False):
        s2 = two_point_statistics(binary, periodic=periodic)
        assert s2.shape == (5, 20, 24)
        np.testing.assert_allclose(s2[:, 10, 12].numpy(), volume_fraction(binary).numpy(), atol=1e-12)
    constant = torch.full((2, 17, 32), 0.3)
    s2 = two_point_statistics(constant, periodic=False)
    np.testing.assert_allclose(s2.numpy(), 0.09, atol=1e-12)
    # non-periodic counts only the overlapping pairs: stripes with shift dx = 2 never agree, dx = 4 always
    s2_np = two_point_statistics(stripes(), periodic=False)[0]
    assert at(s2_np, 0, 2) == pytest.approx(0.0, abs=1e-12)
    assert at(s2_np, 0, 4) == pytest.approx(0.5, abs=1e-12)  # 12 overlapping columns, all pairs agree, vf 0.5


def test_s2_nonperiodic_differs_from_periodic_across_the_wrap():
    """Bright columns at both edges: neighbours across the wrap periodically, far apart otherwise."""
    image = torch.zeros(1, 8, 8)
    image[0, :, 0] = image[0, :, 7] = 1.0
    periodic = two_point_statistics(image, periodic=True)[0]
    open_ = two_point_statistics(image, periodic=False)[0]
    assert at(periodic, 0, 0) == pytest.approx(0.25) and at(open_, 0, 0) == pytest.approx(0.25)
    assert at(periodic, 0, 1) == pytest.approx(0.125)  # column 7 -> column 0 across the wrap
    assert at(open_, 0, 1) == pytest.approx(0.0, abs=1e-12)
    assert at(open_, 0, -1) == pytest.approx(0.0, abs=1e-12)
    assert at(open_, 3, 0) == pytest.approx(0.25)  # same columns, 5 overlapping rows: 2 * 5 / (5 * 8)


def test_s2_distance_values():
    a = torch.cat([stripes(), checkerboard()])
    assert s2_distance(a, a) == 0.0
    # hand count on the 9x9 window (max_shift = 16 // 4 = 4): 22 shifts differ by 0.5, 36 by 0.25
    expected = math.sqrt((22 * 0.25 + 36 * 0.0625) / 81)
    assert s2_distance(stripes(), checkerboard()) == pytest.approx(expected, abs=1e-12)
    assert s2_distance(stripes(), checkerboard(), max_shift=0) == pytest.approx(0.0, abs=1e-12)  # same vf
    with pytest.raises(ValueError, match="max_shift"):
        s2_distance(stripes(), checkerboard(), max_shift=8)
    with pytest.raises(ValueError, match="compared shift by shift"):
        s2_distance(stripes(16), stripes(20))


def test_phase_indicator_and_validation():
    images = torch.tensor([[[[-1.0, -0.2], [0.0, 0.6]]]])
    np.testing.assert_allclose(phase_indicator(images, "grey")[0].numpy(), [[0.0, 0.4], [0.5, 0.8]], atol=1e-7)
    np.testing.assert_array_equal(phase_indicator(images, "binary")[0].numpy(), [[0, 0], [0, 1]])
    np.testing.assert_array_equal(phase_indicator(images, "grain-boundary")[0].numpy(), [[0, 0], [0, 1]])
    with pytest.raises(ValueError, match="image_kind"):
        phase_indicator(images, "gray")
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        phase_indicator(images[:, 0], "binary")
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        two_point_statistics(images)


def test_volume_fraction_error():
    generated = torch.zeros(2, 4, 4)
    generated[0, :2] = 1.0  # vf 0.5
    generated[1, :1] = 1.0  # vf 0.25
    real = torch.zeros(1, 4, 4)
    real[0, :, :1] = 1.0  # vf 0.25
    np.testing.assert_allclose(volume_fraction(generated).numpy(), [0.5, 0.25])
    assert volume_fraction_error(generated, real) == pytest.approx(0.125)
    assert volume_fraction_error(real, real) == 0.0


# ---------------------------------------------------------------- grains


def cross_boundary(rows=(7,), cols=(7,), size: int = 16) -> np.ndarray:
    boundary = np.zeros((size, size), bool)
    boundary[list(rows), :] = True
    boundary[:, list(cols)] = True
    return boundary


def test_grain_areas_on_hand_made_boundaries():
    one_cross = cross_boundary()
    # rows 0-6 (7) / 8-15 (8) times columns 0-6 (7) / 8-15 (8)
    assert grain_areas_from_boundaries(one_cross, periodic=False).tolist() == [49, 56, 56, 64]
    # on a torus row 15 touches row 0 and column 15 column 0: the four rectangles are one grain of 15 x 15
    assert grain_areas_from_boundaries(one_cross, periodic=True).tolist() == [225]
    two_crosses = cross_boundary(rows=(0, 7), cols=(0, 7))
    # boundaries on the edges too: rows 1-6 (6) / 8-15 (8), same columns; the wrap meets a boundary, no merging
    for periodic in (False, True):
        assert grain_areas_from_boundaries(two_crosses, periodic=periodic).tolist() == [36, 48, 48, 64]
    # only horizontal wrap merges: boundary rows 0 and 7, one boundary column 7
    mixed = cross_boundary(rows=(0, 7), cols=(7,))
    assert grain_areas_from_boundaries(mixed, periodic=False).tolist() == [42, 48, 56, 64]
    assert grain_areas_from_boundaries(mixed, periodic=True).tolist() == [90, 120]
    # a lone pixel walled in by boundary is dropped as noise (min_area = 2) unless asked for
    walled = one_cross.copy()
    walled[2:5, 2:5] = True
    walled[3, 3] = False
    assert grain_areas_from_boundaries(walled, periodic=False).tolist() == [40, 56, 56, 64]
    assert grain_areas_from_boundaries(walled, periodic=False, min_area=1).tolist() == [1, 40, 56, 56, 64]
    assert grain_areas_from_boundaries(np.ones((8, 8), bool), periodic=True).size == 0
    with pytest.raises(ValueError, match="boolean or 0/1"):
        grain_areas_from_boundaries(np.full((8, 8), -1.0), periodic=True)


def test_grain_size_distance():
    a = torch.from_numpy(np.stack([cross_boundary(), cross_boundary(rows=(0, 7), cols=(0, 7))])).float()
    assert grain_size_distance(a, a, periodic=False) == 0.0
    small = torch.from_numpy(cross_boundary(rows=(0, 4, 8, 12), cols=(0, 4, 8, 12))[None]).float()  # 16 grains of 9
    big = torch.from_numpy(cross_boundary(rows=(0, 8), cols=(0, 8))[None]).float()  # 4 grains of 49
    assert grain_size_distance(small, big, periodic=True) == pytest.approx(math.log10(49 / 9), abs=1e-12)
    # Only boundary, no grain: scored as grains of min_area (2 px) against the real 49-px grains.
    assert grain_size_distance(torch.ones(1, 8, 8), big, periodic=True) == pytest.approx(math.log10(49 / 2))
    assert math.isnan(grain_size_distance(big, torch.ones(1, 8, 8), periodic=True))  # no real grains


# ---------------------------------------------------------------- diversity


def test_diversity_ratio():
    rng = np.random.default_rng(1)
    real = torch.from_numpy(rng.uniform(-1, 1, (12, 1, 16, 16))).float()
    collapsed = real[3:4].expand(10, 1, 16, 16)
    assert diversity_ratio(collapsed, real) == 0.0
    shuffled = real[torch.from_numpy(rng.permutation(12))]
    assert diversity_ratio(shuffled, real) == pytest.approx(1.0, abs=1e-12)  # all 66 pairs, same multiset
    sampled = diversity_ratio(shuffled, real, max_pairs=30)  # random pair subsets of both sets
    assert 0.8 < sampled < 1.25
    assert diversity_ratio(shuffled, real, max_pairs=30) == sampled  # deterministic
    assert diversity_ratio(0.5 * real, real) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least 2"):
        diversity_ratio(real[:1], real)


# ---------------------------------------------------------------- FID / KID-domain


def smooth_fields(n: int, sigma: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """Periodic Gaussian-filtered noise scaled into [-1, 1] (Gaussian random field-like)."""
    noise = rng.standard_normal((n, size, size))
    k = np.fft.fftfreq(size)
    kernel = np.exp(-2 * (np.pi * sigma) ** 2 * (k[:, None] ** 2 + k[None, :] ** 2))
    fields = np.fft.ifft2(np.fft.fft2(noise) * kernel).real
    fields /= 3 * fields.std(axis=(1, 2), keepdims=True)
    return np.clip(fields, -1, 1)[:, None].astype(np.float32)


@pytest.fixture(scope="module")
def domain_data():
    rng = np.random.default_rng(0)
    sigmas = (1.0, 2.5, 5.0)
    images = np.concatenate([smooth_fields(24, s, 32, rng) for s in sigmas])
    labels = np.repeat(np.arange(len(sigmas)), 24)
    return torch.from_numpy(images), torch.from_numpy(labels)


@pytest.fixture(scope="module")
def extractor_path(domain_data, tmp_path_factory):
    images, labels = domain_data
    return df.cached_domain_extractor(images, labels, 3, seed=0, cache_dir=tmp_path_factory.mktemp("extractor"),
                                      epochs=4, batch_size=16)


def test_fid_kid_domain_separates_noise_from_fields(domain_data, extractor_path, tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))  # where torch-fidelity would cache features / download weights
    images, _ = domain_data
    order = torch.from_numpy(np.random.default_rng(2).permutation(len(images)))
    half_a, half_b = images[order[:36]], images[order[36:]]
    itself = df.fid_kid_domain(half_a, half_a, extractor_path, cuda=False)
    halves = df.fid_kid_domain(half_a, half_b, extractor_path, cuda=False)
    # pixels of each real image permuted at random: same histogram, no spatial correlation
    gen = torch.Generator().manual_seed(3)
    noise = torch.stack([img.flatten()[torch.randperm(img.numel(), generator=gen)].view_as(img) for img in half_b])
    against_noise = df.fid_kid_domain(noise, half_a, extractor_path, kid_subset_size=20, cuda=False)
    assert set(itself) == {"fid_domain", "kid_domain", "kid_domain_std"}
    assert abs(itself["fid_domain"]) < 1e-3 * against_noise["fid_domain"]
    assert abs(itself["fid_domain"]) < 1e-6
    assert against_noise["fid_domain"] > 10 * halves["fid_domain"] > 0
    assert against_noise["kid_domain"] > 10 * abs(halves["kid_domain"])
    assert against_noise["kid_domain"] > 0
    assert not home.exists()  # cache=False: nothing written under TORCH_HOME


def test_extractor_reads_one_or_three_channels_as_the_same_image(domain_data, extractor_path):
    df.register_domain_extractor()
    df.register_domain_extractor()  # idempotent
    extractor = df.DomainFeatureExtractor(df.DOMAIN_EXTRACTOR_NAME, ["domain"],
                                          feature_extractor_weights_path=str(extractor_path), verbose=False)
    uint8 = df.UInt8Images(domain_data[0][:4]).images
    assert uint8.dtype == torch.uint8 and uint8.shape == (4, 1, 32, 32)
    (one,) = extractor(uint8)
    (three,) = extractor(uint8.repeat(1, 3, 1, 1))
    assert one.shape == (4, 64) and one.dtype == torch.float32
    torch.testing.assert_close(one, three)
    # torch-fidelity's uint8 is mapped back to [-1, 1] exactly as to_uint8 quantised it
    net = df.load_domain_extractor(extractor_path)
    with torch.no_grad():
        torch.testing.assert_close(one, net.features(uint8.float() / 127.5 - 1.0))
        assert (one - net.features(domain_data[0][:4])).abs().max() < 0.05 * one.abs().max()
    with pytest.raises(ValueError, match="uint8"):
        extractor(uint8.float())


def test_training_is_deterministic_from_seed(domain_data):
    images, labels = domain_data[0][::4], domain_data[1][::4]
    global_rng = torch.get_rng_state()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = df.train_domain_extractor(images, labels, 3, seed=5, epochs=1, batch_size=8)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    torch.manual_seed(456)  # a different global state must not matter
    b = df.train_domain_extractor(images, labels, 3, seed=5, epochs=1, batch_size=8)
    c = df.train_domain_extractor(images, labels, 3, seed=6, epochs=1, batch_size=8)
    torch.set_rng_state(global_rng)
    assert a["num_classes"] == 3 and a["feature_dim"] == 64
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert not torch.equal(a["state_dict"]["head.weight"], c["state_dict"]["head.weight"])
    with pytest.raises(ValueError, match="labels must lie"):
        df.train_domain_extractor(images, labels - 1, 3, seed=0, epochs=1)
    with pytest.raises(ValueError, match="at least 32"):
        df.train_domain_extractor(images[:, :, :16, :16], labels, 3, seed=0, epochs=1)


def test_cache_trains_once(domain_data, tmp_path, monkeypatch):
    images, labels = domain_data[0][::6], domain_data[1][::6]
    calls = []
    real_train = df.train_domain_extractor

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(df, "train_domain_extractor", counting)
    first = df.cached_domain_extractor(images, labels, 3, seed=0, cache_dir=tmp_path, epochs=1)
    mtime = first.stat().st_mtime_ns
    second = df.cached_domain_extractor(images, labels, 3, seed=0, cache_dir=tmp_path, epochs=1, progress=False)
    assert second == first and len(calls) == 1 and first.stat().st_mtime_ns == mtime
    changed = images.clone()
    changed[0, 0, 0, 0] = -changed[0, 0, 0, 0] + 0.5
    third = df.cached_domain_extractor(changed, labels, 3, seed=0, cache_dir=tmp_path, epochs=1)
    assert third != first and len(calls) == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left
    assert df.load_domain_extractor(first).feature_dim == 64


MARKER: list[str] = []


def _payload(marker: str) -> str:
    """Would run at unpickling time; a weights-only load must refuse before calling it."""
    Path(marker).write_text("unpickled")
    MARKER.append(marker)
    return marker


class Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return _payload, (self.marker,)


def test_pickle_payloads_are_refused(tmp_path):
    marker = tmp_path / "executed"
    evil = tmp_path / "evil.pt"
    buffer = io.BytesIO()
    torch.save({"state_dict": {"head.weight": Payload(str(marker))}, "num_classes": 2, "feature_dim": 64}, buffer)
    evil.write_bytes(buffer.getvalue())
    images = torch.zeros(4, 1, 32, 32)
    with pytest.raises(ValueError, match="weights-only"):
        df.load_domain_extractor(evil)
    with pytest.raises(ValueError, match="weights-only"):
        df.fid_kid_domain(images, images, evil, cuda=False)
    with pytest.raises(ValueError, match="weights-only"):
        df.inception_fid(images, images, evil, cuda=False)
    assert not marker.exists() and MARKER == []


def test_inception_fid_missing_weights(tmp_path):
    missing = tmp_path / "nowhere" / "weights-inception-2015-12-05-6726825d.pth"
    images = torch.zeros(2, 1, 32, 32)
    with pytest.raises(FileNotFoundError, match="weights-inception-2015-12-05-6726825d.pth"):
        df.inception_fid(images, images, missing)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        df.fid_kid_domain(images, images, missing)


def test_inception_fid_runs_offline_with_a_local_state_dict(tmp_path, monkeypatch):
    """End to end through torch-fidelity's Inception-v3 with random weights (the real file cannot be had
    offline): the weights-only loader, 3-channel tiling and registration work, and nothing is downloaded."""
    import torch_fidelity.feature_extractor_inceptionv3 as fi

    def no_download(*args, **kwargs):
        raise AssertionError("torch-fidelity tried to download weights")

    monkeypatch.setattr(fi, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(fi.FeatureExtractorInceptionV3, "INPUT_IMAGE_SIZE", 75)  # smallest Inception input: fast
    with monkeypatch.context() as patch:  # a random-init state dict of the right layout
        patch.setattr(fi, "load_state_dict_from_url", lambda *args, **kwargs: {})
        patch.setattr(fi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state, strict=True: None)
        state = fi.FeatureExtractorInceptionV3("layout", ["2048"]).state_dict()
    weights = tmp_path / "inception.pth"
    torch.save(state, weights)
    rng = np.random.default_rng(4)
    images = torch.from_numpy(rng.uniform(-1, 1, (3, 1, 32, 32))).float()
    # layer "64": a 2048-d FID spends ~15 s in torch-fidelity's eigvals on this CPU; the loading path is the same
    result = df.inception_fid(images, images, weights, cuda=False, feature_layer="64")
    assert set(result) == {"fid_inception", "kid_inception", "kid_inception_std"}
    assert abs(result["fid_inception"]) < 1e-6


def test_resize_images_shrinks_by_area_and_enlarges_back():
    from matcv.lightning_modules.microstructure_nets import resize_images

    images = torch.zeros(2, 1, 8, 8)
    images[:, :, :, :4] = 1.0  # left half on
    small = resize_images(images, (4, 4))
    assert small.shape == (2, 1, 4, 4)
    assert torch.allclose(small[:, :, :, :2], torch.ones(2, 1, 4, 2))  # area mean of 2x2 blocks
    assert torch.allclose(small.mean(), images.mean())
    assert resize_images(small, (8, 8)).shape == (2, 1, 8, 8)
    assert resize_images(images, (8, 8)) is images


def test_dcgan_trains_below_the_data_resolution_and_samples_at_it():
    from matcv.lightning_modules.microstructure import DCGANTask

    task = DCGANTask(image_size=32, nz=8, ngf=4, ndf=4, d_lr=4e-4, real_label=0.9, spectral_norm=True)
    task.check_image_shape((128, 128))  # 128 = 4 x 32: allowed
    with pytest.raises(ValueError, match="power-of-two fraction"):
        task.check_image_shape((96, 96))
    task.image_shape = (128, 128)
    samples = task.sample(3, seed=0)
    assert samples.shape == (3, 1, 128, 128)
    assert torch.equal(samples, task.sample(3, seed=0))  # seeded
    g_opt, d_opt = task.configure_optimizers()
    assert d_opt.param_groups[0]["lr"] == 4e-4 and g_opt.param_groups[0]["lr"] == task.hparams.lr
    with pytest.raises(ValueError, match="real_label"):
        DCGANTask(image_size=32, real_label=0.3)


def test_diff_augment_only_moves_pixels_and_passes_gradients():
    from matcv.lightning_modules.microstructure_nets import diff_augment

    torch.manual_seed(0)
    images = torch.randn(6, 1, 16, 16, requires_grad=True)
    out = diff_augment(images)
    assert out.shape == images.shape
    # flips and circular shifts permute each image's pixels: same sorted values per image
    assert torch.equal(out.detach().flatten(1).sort(1).values, images.detach().flatten(1).sort(1).values)
    out.square().sum().backward()
    assert torch.allclose(images.grad, 2 * images.detach())  # a permutation's gradient, pixel for pixel
