"""The microstructure AE / VAE / DCGAN networks against the Sandia report's torchsummary tables (Tran, Rodgers &
Wildey 2020, §5–9.4), the VAE loss's closed form, and the PyTorch DCGAN tutorial's parameter counts."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from matcv.lightning_modules.microstructure_nets import (
    SEED_AUTOENCODERS,
    ConvAutoencoder,
    ConvVAE,
    DCGANDiscriminator,
    DCGANGenerator,
    build_seed_autoencoder,
    count_parameters,
    dcgan_weights_init,
    vae_loss,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: see conftest


C, R, M, T, B = "Conv2d", "ReLU", "MaxPool2d", "ConvTranspose2d", "BatchNorm2d"

# The report's torchsummary tables, transcribed row by row: (layer type, output (C, H, W), params).
SEED_TABLES = {
    "smooth": [  # §5
        (C, (16, 43, 43), 160), (R, (16, 43, 43), 0), (M, (16, 21, 21), 0),
        (C, (8, 11, 11), 1160), (R, (8, 11, 11), 0), (M, (8, 10, 10), 0),
        (T, (16, 21, 21), 1168), (R, (16, 21, 21), 0),
        (T, (8, 65, 65), 6280), (R, (8, 65, 65), 0),
        (T, (1, 128, 128), 33), ("Tanh", (1, 128, 128), 0),
    ],
    "binary": [  # §6
        (C, (16, 43, 43), 160), (B, (16, 43, 43), 32), (R, (16, 43, 43), 0), (M, (16, 21, 21), 0),
        (C, (32, 11, 11), 4640), (B, (32, 11, 11), 64), (R, (32, 11, 11), 0), (M, (32, 10, 10), 0),
        (T, (16, 21, 21), 4624), (R, (16, 21, 21), 0),
        (T, (8, 65, 65), 6280), (R, (8, 65, 65), 0),
        (T, (1, 128, 128), 33), ("Tanh", (1, 128, 128), 0),
    ],
    "grain_growth": [  # §7 (ends at 112×112 for a 128×128 input, as printed)
        (C, (16, 43, 43), 160), (R, (16, 43, 43), 0), (M, (16, 21, 21), 0),
        (C, (8, 11, 11), 1160), (R, (8, 11, 11), 0), (M, (8, 10, 10), 0),
        (C, (4, 5, 5), 292), (R, (4, 5, 5), 0), (M, (4, 4, 4), 0),
        (T, (16, 9, 9), 592), (R, (16, 9, 9), 0),
        (T, (8, 29, 29), 6280), (R, (8, 29, 29), 0),
        (T, (4, 57, 57), 292), (R, (4, 57, 57), 0),
        (T, (1, 112, 112), 17), ("Tanh", (1, 112, 112), 0),
    ],
    "additive": [  # §8
        (C, (4, 43, 43), 40), (R, (4, 43, 43), 0), (M, (4, 21, 21), 0),
        (C, (8, 11, 11), 296), (R, (8, 11, 11), 0), (M, (8, 10, 10), 0),
        (C, (16, 5, 5), 1168), (R, (16, 5, 5), 0), (M, (16, 4, 4), 0),
        (C, (32, 3, 3), 2080), (R, (32, 3, 3), 0), (M, (32, 2, 2), 0),
        (T, (16, 5, 5), 4624), (R, (16, 5, 5), 0),
        (T, (8, 17, 17), 6280), (R, (8, 17, 17), 0),
        (T, (4, 33, 33), 292), (R, (4, 33, 33), 0),
        (T, (2, 64, 64), 34), (R, (2, 64, 64), 0),
        (T, (1, 128, 128), 33), ("Tanh", (1, 128, 128), 0),
    ],
    "uhcsdb": [  # §9.4
        (C, (2, 48, 64), 20), (R, (2, 48, 64), 0), (M, (2, 46, 62), 0),
        (C, (4, 46, 62), 76), (R, (4, 46, 62), 0), (M, (4, 44, 60), 0),
        (C, (8, 22, 30), 296), (R, (8, 22, 30), 0), (M, (8, 20, 28), 0),
        (C, (8, 10, 14), 584), (R, (8, 10, 14), 0), (M, (8, 8, 12), 0),
        (T, (8, 8, 12), 584), (R, (8, 8, 12), 0),
        (T, (8, 10, 14), 1608), (R, (8, 10, 14), 0),
        (T, (8, 21, 29), 1608), (R, (8, 21, 29), 0),
        (T, (4, 43, 59), 804), (R, (4, 43, 59), 0),
        (T, (2, 45, 61), 202), (R, (2, 45, 61), 0),
        (T, (1, 48, 64), 73), ("Tanh", (1, 48, 64), 0),
    ],
}
TABLE_TOTALS = {"smooth": 8801, "binary": 15833, "grain_growth": 8793, "additive": 14847, "uhcsdb": 5855}


def _summary(model: ConvAutoencoder, size: tuple[int, int]) -> list[tuple[str, tuple[int, ...], int]]:
    """torchsummary-equivalent rows from a real forward pass: a hook on every encoder/decoder layer."""
    rows, handles = [], []
    for layer in [*model.encoder, *model.decoder]:
        def hook(module, _inputs, output):
            rows.append((type(module).__name__, tuple(output.shape[1:]),
                         sum(p.numel() for p in module.parameters())))
        handles.append(layer.register_forward_hook(hook))
    model.eval()
    with torch.no_grad():
        model(torch.zeros(2, 1, *size))
    for handle in handles:
        handle.remove()
    return rows


def test_registry_matches_tables():
    assert set(SEED_AUTOENCODERS) == set(SEED_TABLES)
    for name, (_builder, params, _size) in SEED_AUTOENCODERS.items():
        assert params == TABLE_TOTALS[name] == sum(row[2] for row in SEED_TABLES[name])


@pytest.mark.parametrize("name", sorted(SEED_TABLES))
def test_seed_autoencoder_reproduces_table(name):
    builder, params, size = SEED_AUTOENCODERS[name]
    model = builder()
    assert _summary(model, size) == SEED_TABLES[name]
    assert count_parameters(model) == count_parameters(model, trainable_only=False) == params


@pytest.mark.parametrize("name", sorted(SEED_TABLES))
def test_forward_returns_input_shape_and_latent_shape(name):
    model = build_seed_autoencoder(name)
    size = SEED_AUTOENCODERS[name][2]
    x = torch.rand(3, 1, *size) * 2 - 1
    model.eval()
    with torch.no_grad():
        out = model(x)
        latent = model.encode(x)
    assert out.shape == x.shape
    assert out.abs().max() <= 1.0
    assert tuple(latent.shape[1:]) == model.latent_shape(size)
    assert model.latent_shape(size) == SEED_TABLES[name][len(model.encoder) - 1][1]


def test_grain_growth_decoder_is_112_and_resize_adds_no_parameters():
    model = build_seed_autoencoder("grain_growth")
    x = torch.rand(2, 1, 128, 128)
    with torch.no_grad():
        assert model.decode(model.encode(x)).shape == (2, 1, 112, 112)
        assert model(x).shape == (2, 1, 128, 128)
    assert count_parameters(model) == 8793
    # the other seed AEs need no resize: their decoders already return the input size
    assert [n for n in SEED_AUTOENCODERS if build_seed_autoencoder(n).resize_to_input] == ["grain_growth"]


def test_latent_shape_at_other_sizes_matches_a_forward_pass():
    model = build_seed_autoencoder("smooth")
    with torch.no_grad():
        assert tuple(model.encode(torch.zeros(1, 1, 96, 80)).shape[1:]) == model.latent_shape((96, 80))


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="grain_growth"):
        build_seed_autoencoder("nope")


def _smooth_batch(n: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """Smooth fields in [−1, 1]: upsampled noise through tanh (like the §2.1 synthetic microstructures)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 1, size[0] // 8, size[1] // 8, generator=g)
    return torch.tanh(2 * nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False))


@pytest.mark.parametrize("name", sorted(SEED_TABLES))
def test_seed_autoencoder_learns(name):
    torch.manual_seed(0)
    model = build_seed_autoencoder(name)
    x = _smooth_batch(2, SEED_AUTOENCODERS[name][2])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    # Fixed seed: the §9.4 net's 2-channel ReLU layers can all die at an unlucky initialization.
    for _ in range(15):
        loss = nn.functional.mse_loss(model(x), x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.95 * losses[0]


# --- VAE ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(64, 64), (128, 128), (48, 64)])
def test_vae_shapes(size):
    torch.manual_seed(0)
    vae = ConvVAE(image_size=size, latent_dim=8)
    assert not vae.resize_output  # these sizes decode exactly, no interpolation
    x = torch.rand(3, 1, *size) * 2 - 1
    recon, mu, logvar = vae(x)
    assert recon.shape == x.shape and mu.shape == logvar.shape == (3, 8)
    assert recon.abs().max() <= 1.0
    vae.eval()
    assert vae.sample(5).shape == (5, 1, *size)
    assert vae.decode(torch.zeros(2, 8)).shape == (2, 1, *size)


def test_vae_sample_generator_reproducible_and_no_grad():
    vae = ConvVAE(image_size=64, latent_dim=4).eval()
    a = vae.sample(2, generator=torch.Generator().manual_seed(1))
    b = vae.sample(2, generator=torch.Generator().manual_seed(1))
    c = vae.sample(2, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not a.requires_grad


def test_vae_resizes_sizes_that_do_not_halve_evenly():
    vae = ConvVAE(image_size=(60, 60), latent_dim=4)
    assert vae.resize_output
    assert vae(torch.zeros(2, 1, 60, 60))[0].shape == (2, 1, 60, 60)
    with pytest.raises(ValueError):
        ConvVAE(image_size=(4, 4))


def test_vae_eval_forward_is_deterministic_and_uses_mu():
    vae = ConvVAE(image_size=64, latent_dim=4).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        r1, mu, _ = vae(x)
        r2, _, _ = vae(x)
        assert torch.equal(r1, r2) and torch.allclose(r1, vae.decode(mu))


def test_vae_loss_kl_zero_at_prior():
    x = torch.rand(3, 1, 8, 8)
    total, recon, kl = vae_loss(x.clone(), x, torch.zeros(3, 5), torch.zeros(3, 5), beta=1.0)
    assert kl.item() == pytest.approx(0.0, abs=1e-7)
    assert recon.item() == 0.0 and total.item() == pytest.approx(0.0, abs=1e-7)


def test_vae_loss_matches_closed_form():
    # image 0: mu = (1, 0), var = (1, 2) -> KL = ½(1 + 1 − 1 − 0) + ½(0 + 2 − 1 − ln 2) = 1 − ½ ln 2
    # image 1: mu = (0, 2), var = (1, 1) -> KL = ½ · 4 = 2
    mu = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    x = torch.zeros(2, 1, 2, 2)
    recon = torch.full_like(x, 0.5)  # MSE = 0.25
    total, recon_mse, kl = vae_loss(recon, x, mu, logvar, beta=3.0)
    expected_kl = ((1 - 0.5 * math.log(2.0)) + 2.0) / 2 / 4  # batch mean, per pixel (4 pixels)
    assert recon_mse.item() == pytest.approx(0.25)
    assert kl.item() == pytest.approx(expected_kl, rel=1e-6)
    assert total.item() == pytest.approx(0.25 + 3.0 * expected_kl, rel=1e-6)


def test_vae_learns():
    torch.manual_seed(0)
    vae = ConvVAE(image_size=64, latent_dim=8)
    x = _smooth_batch(8, (64, 64))
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        recon, mu, logvar = vae(x)
        total, _, _ = vae_loss(recon, x, mu, logvar, beta=vae.beta)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(total.item())
    assert losses[-1] < 0.9 * losses[0]


# --- DCGAN -------------------------------------------------------------------------------------------------

def _tutorial_counts(nz=100, ngf=64, ndf=64, nc=3):
    """Layer by layer for the tutorial's 64×64 DCGAN: bias-free convs (in·out·4·4) + BN (2·C)."""
    def conv(cin, cout):
        return cin * cout * 16

    generator = (conv(nz, ngf * 8) + conv(ngf * 8, ngf * 4) + conv(ngf * 4, ngf * 2) + conv(ngf * 2, ngf)
                 + conv(ngf, nc) + 2 * (ngf * 8 + ngf * 4 + ngf * 2 + ngf))
    discriminator = (conv(nc, ndf) + conv(ndf, ndf * 2) + conv(ndf * 2, ndf * 4) + conv(ndf * 4, ndf * 8)
                     + conv(ndf * 8, 1) + 2 * (ndf * 2 + ndf * 4 + ndf * 8))
    return generator, discriminator


def test_dcgan_tutorial_parameter_counts():
    assert _tutorial_counts() == (3_576_704, 2_765_568)
    assert count_parameters(DCGANGenerator(nz=100, ngf=64, image_size=64, channels=3)) == 3_576_704
    assert count_parameters(DCGANDiscriminator(ndf=64, image_size=64, channels=3)) == 2_765_568
    g1, d1 = _tutorial_counts(nc=1)
    assert count_parameters(DCGANGenerator()) == g1
    assert count_parameters(DCGANDiscriminator()) == d1


@pytest.mark.parametrize("size", [64, 128])
def test_dcgan_shapes_range_and_logits(size):
    torch.manual_seed(0)
    gen = DCGANGenerator(nz=16, ngf=8, image_size=size)
    disc = DCGANDiscriminator(ndf=8, image_size=size)
    fake = gen(torch.randn(3, 16))
    assert fake.shape == (3, 1, size, size)
    assert fake.min() >= -1.0 and fake.max() <= 1.0
    logits = disc(fake)
    assert logits.shape == (3,)
    # logits, not probabilities: BCEWithLogits applies; a sigmoid output would never leave (0, 1)
    assert isinstance(disc.main[-1], nn.Conv2d)
    loss = nn.functional.binary_cross_entropy_with_logits(logits, torch.ones(3))
    loss.backward()
    assert gen.main[0].weight.grad is not None


def test_dcgan_generator_accepts_both_z_layouts():
    gen = DCGANGenerator(nz=16, ngf=8).eval()
    z = torch.randn(2, 16)
    with torch.no_grad():
        assert torch.equal(gen(z), gen(z[:, :, None, None]))
    with pytest.raises(ValueError):
        gen(torch.randn(2, 15))


def test_dcgan_rejects_other_sizes():
    for size in (16, 48, 96):  # 32, 64 and 128 are DCGAN sizes (4x4 doubled 3, 4 or 5 times)
        with pytest.raises(ValueError):
            DCGANGenerator(image_size=size)
        with pytest.raises(ValueError):
            DCGANDiscriminator(image_size=size)


def test_dcgan_weights_init():
    torch.manual_seed(0)
    gen = DCGANGenerator(nz=100, ngf=64)  # initialized on construction
    conv_weights = torch.cat([m.weight.flatten() for m in gen.modules() if isinstance(m, nn.ConvTranspose2d)])
    bn_weights = torch.cat([m.weight for m in gen.modules() if isinstance(m, nn.BatchNorm2d)])
    bn_biases = torch.cat([m.bias for m in gen.modules() if isinstance(m, nn.BatchNorm2d)])
    assert conv_weights.mean().abs() < 1e-3 and conv_weights.std().item() == pytest.approx(0.02, rel=0.02)
    assert bn_weights.mean().item() == pytest.approx(1.0, abs=5e-3)
    assert bn_weights.std().item() == pytest.approx(0.02, rel=0.2)
    assert torch.count_nonzero(bn_biases) == 0
    # applying it to a default-initialized conv with bias zeroes the bias
    conv = nn.Conv2d(3, 4, 3)
    dcgan_weights_init(conv)
    assert torch.count_nonzero(conv.bias) == 0
