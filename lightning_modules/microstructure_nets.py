"""Networks (plain ``nn.Module``s, no Lightning) for the microstructure autoencoder and GAN tasks.

Source: Sandia report SAND2020-10580 (Tran, Rodgers & Wildey 2020, "Reification of latent microstructures",
§5–10). The report gives each autoencoder only as a ``torchsummary`` table (layer type, output
shape, parameter count); the kernel size k, stride s and padding p of every layer were solved so that
*every* output shape and *every* per-layer parameter count of the tables is reproduced exactly (checked
layer by layer in ``tests/test_microstructure_nets.py``):

* ``smooth_autoencoder``        §5    synthetic 2-D smooth microstructures, 128×128, 8,801 params;
* ``binary_autoencoder``        §6    synthetic 2-D binary microstructures, 128×128, 15,833 params;
* ``grain_growth_autoencoder``  §7    kMC/GG (SPPARKS grain growth), 128×128, 8,793 params;
* ``additive_autoencoder``      §8    kMC/additive (SPPARKS Potts), 128×128, 14,847 params;
* ``uhcsdb_autoencoder``        §9.4  UHCSDB patches, 48×64, 5,855 params.

Shape arithmetic used throughout (floor division):
Conv2d / MaxPool2d  out = (in + 2p − k) // s + 1;  ConvTranspose2d  out = (in − 1)·s − 2p + k.

Deviations from the report, and why:

* §7 (kMC/GG): the table's decoder ends at 112×112 although its input is 128×128 — a mismatch in the
  report's own architecture. The decoder reproduces the table (112×112, 8,793 params); ``forward`` then
  resizes to the input's (H, W) with a parameter-free bilinear ``F.interpolate`` so that a reconstruction
  loss against the input is defined. The resize adds no parameters; ``decode`` alone still returns 112×112.
* §6 (binary): ``torchsummary`` counts BatchNorm's trainable weight and bias only (2·C); the running
  mean/variance are buffers, so the parameter count matches without change.
* §10 names DCGAN [Radford et al. 2016] for the 64×64 UHCSDB GAN without a table; ``DCGANGenerator`` and
  ``DCGANDiscriminator`` follow PyTorch's DCGAN tutorial layout (which is the paper's), extended by one
  block for 128×128. The discriminator returns raw logits (no sigmoid) for ``BCEWithLogitsLoss``.
* §11 reports that a VAE was "very challenging to train" but gives no architecture; ``ConvVAE`` is this
  suite's own small convolutional β-VAE baseline for the same data, not a reproduction.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SEED_AUTOENCODERS",
    "ConvAutoencoder",
    "ConvVAE",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "additive_autoencoder",
    "binary_autoencoder",
    "build_seed_autoencoder",
    "count_parameters",
    "dcgan_weights_init",
    "grain_growth_autoencoder",
    "smooth_autoencoder",
    "trace_shapes",
    "uhcsdb_autoencoder",
    "vae_loss",
]

# Layers that leave (C, H, W) unchanged, for the analytic shape walk in ``trace_shapes``.
_SHAPE_PRESERVING = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.BatchNorm2d, nn.Identity,
                     nn.Dropout, nn.Dropout2d)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters, as ``torchsummary``'s "Total params" counts them."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _pair(value) -> tuple[int, int]:
    if isinstance(value, str):
        raise TypeError(f"string padding {value!r} is not supported by the shape walk")
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _layer_output_shape(layer: nn.Module, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """(C, H, W) after ``layer`` for an input of ``shape``, from the layer's hyper-parameters alone."""
    channels, height, width = shape
    if isinstance(layer, _SHAPE_PRESERVING):
        return shape
    if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
        if isinstance(layer, nn.MaxPool2d) and layer.ceil_mode:
            raise TypeError("MaxPool2d(ceil_mode=True) is not supported by the shape walk")
        k, s, p, d = (_pair(layer.kernel_size), _pair(layer.stride), _pair(layer.padding),
                      _pair(layer.dilation))
        out_channels = layer.out_channels if isinstance(layer, nn.Conv2d) else channels
        size = [(n + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i, n in enumerate((height, width))]
        return out_channels, size[0], size[1]
    if isinstance(layer, nn.ConvTranspose2d):
        k, s, p, d = (_pair(layer.kernel_size), _pair(layer.stride), _pair(layer.padding),
                      _pair(layer.dilation))
        op = _pair(layer.output_padding)
        size = [(n - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op[i] + 1 for i, n in enumerate((height, width))]
        return layer.out_channels, size[0], size[1]
    raise TypeError(f"no shape rule for layer type {type(layer).__name__}")


def trace_shapes(layers: nn.Sequential, input_shape: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """(C, H, W) after every layer of ``layers`` for an input (C, H, W), computed without running it
    (so BatchNorm running statistics are never touched)."""
    shapes, shape = [], tuple(input_shape)
    for layer in layers:
        shape = _layer_output_shape(layer, shape)
        if min(shape) < 1:
            raise ValueError(f"input {tuple(input_shape)} shrinks to {shape} at {layer}")
        shapes.append(shape)
    return shapes


class ConvAutoencoder(nn.Module):
    """Convolutional autoencoder: ``encoder`` and ``decoder`` are ``nn.Sequential``s.

    ``forward(x)`` returns a reconstruction of x's size. If ``resize_to_input`` is set and the decoder's
    output size differs from the input's, the output is bilinearly resized (parameter-free) to the input's
    (H, W); a convex combination of Tanh outputs stays in [−1, 1].
    """

    def __init__(self, encoder: nn.Sequential, decoder: nn.Sequential, in_channels: int = 1,
                 resize_to_input: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.in_channels = in_channels
        self.resize_to_input = resize_to_input

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.decode(self.encode(x))
        if self.resize_to_input and out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out

    def latent_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        """The encoder's output (C, h, w) for an input of spatial size (H, W)."""
        height, width = input_shape[-2:]
        return trace_shapes(self.encoder, (self.in_channels, int(height), int(width)))[-1]


# --- seed autoencoders (report §5–9.4) -----------------------------------------------------------------

def smooth_autoencoder() -> ConvAutoencoder:
    """§5, synthetic smooth microstructures, 1×128×128 → latent 8×10×10 → 1×128×128, 8,801 params."""
    encoder = nn.Sequential(
        nn.Conv2d(1, 16, 3, stride=3, padding=1), nn.ReLU(), nn.MaxPool2d(2, stride=2),  # 43, 21
        nn.Conv2d(16, 8, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2, stride=1),  # 11, 10
    )
    decoder = nn.Sequential(
        nn.ConvTranspose2d(8, 16, 3, stride=2), nn.ReLU(),             # 21
        nn.ConvTranspose2d(16, 8, 7, stride=3, padding=1), nn.ReLU(),  # 65
        nn.ConvTranspose2d(8, 1, 2, stride=2, padding=1), nn.Tanh(),   # 128
    )
    return ConvAutoencoder(encoder, decoder)


def binary_autoencoder() -> ConvAutoencoder:
    """§6, synthetic binary microstructures, 1×128×128 → latent 32×10×10 → 1×128×128, 15,833 params."""
    encoder = nn.Sequential(
        nn.Conv2d(1, 16, 3, stride=3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2, stride=2),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2, stride=1),
    )
    decoder = nn.Sequential(
        nn.ConvTranspose2d(32, 16, 3, stride=2), nn.ReLU(),            # 21
        nn.ConvTranspose2d(16, 8, 7, stride=3, padding=1), nn.ReLU(),  # 65
        nn.ConvTranspose2d(8, 1, 2, stride=2, padding=1), nn.Tanh(),   # 128
    )
    return ConvAutoencoder(encoder, decoder)


def grain_growth_autoencoder() -> ConvAutoencoder:
    """§7, kMC/GG, 1×128×128 → latent 4×4×4 → decoder 1×112×112 (as the table) → resized to 128×128.

    The report's table ends at 112×112 for a 128×128 input (its own mismatch); the decoder reproduces the
    table exactly (8,793 params) and ``forward`` bilinearly resizes to the input size, adding no params.
    """
    encoder = nn.Sequential(
        nn.Conv2d(1, 16, 3, stride=3, padding=1), nn.ReLU(), nn.MaxPool2d(2, stride=2),  # 43, 21
        nn.Conv2d(16, 8, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2, stride=1),  # 11, 10
        nn.Conv2d(8, 4, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2, stride=1),   # 5, 4
    )
    decoder = nn.Sequential(
        nn.ConvTranspose2d(4, 16, 3, stride=2), nn.ReLU(),             # 9
        nn.ConvTranspose2d(16, 8, 7, stride=3, padding=1), nn.ReLU(),  # 29
        nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1), nn.ReLU(),   # 57
        nn.ConvTranspose2d(4, 1, 2, stride=2, padding=1), nn.Tanh(),   # 112 (table), not 128
    )
    return ConvAutoencoder(encoder, decoder, resize_to_input=True)


def additive_autoencoder() -> ConvAutoencoder:
    """§8, kMC/additive, 1×128×128 → latent 32×2×2 → 1×128×128, 14,847 params."""
    encoder = nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=3, padding=1), nn.ReLU(), nn.MaxPool2d(2, stride=2),   # 43, 21
        nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2, stride=1),   # 11, 10
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2, stride=1),  # 5, 4
        nn.Conv2d(16, 32, 2, stride=1), nn.ReLU(), nn.MaxPool2d(2, stride=1),            # 3, 2
    )
    decoder = nn.Sequential(
        nn.ConvTranspose2d(32, 16, 3, stride=2), nn.ReLU(),            # 5
        nn.ConvTranspose2d(16, 8, 7, stride=3, padding=1), nn.ReLU(),  # 17
        nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1), nn.ReLU(),   # 33
        nn.ConvTranspose2d(4, 2, 2, stride=2, padding=1), nn.ReLU(),   # 64
        nn.ConvTranspose2d(2, 1, 4, stride=2, padding=1), nn.Tanh(),   # 128
    )
    return ConvAutoencoder(encoder, decoder)


def uhcsdb_autoencoder() -> ConvAutoencoder:
    """§9.4, UHCSDB patches, 1×48×64 → latent 8×8×12 → 1×48×64, 5,855 params."""
    encoder = nn.Sequential(
        nn.Conv2d(1, 2, 3, stride=1, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=1),  # 48×64, 46×62
        nn.Conv2d(2, 4, 3, stride=1, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=1),  # 46×62, 44×60
        nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=1),  # 22×30, 20×28
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=1),  # 10×14, 8×12
    )
    decoder = nn.Sequential(
        nn.ConvTranspose2d(8, 8, 3, stride=1, padding=1), nn.ReLU(),  # 8×12
        nn.ConvTranspose2d(8, 8, 5, stride=1, padding=1), nn.ReLU(),  # 10×14
        nn.ConvTranspose2d(8, 8, 5, stride=2, padding=1), nn.ReLU(),  # 21×29
        nn.ConvTranspose2d(8, 4, 5, stride=2, padding=1), nn.ReLU(),  # 43×59
        nn.ConvTranspose2d(4, 2, 5, stride=1, padding=1), nn.ReLU(),  # 45×61
        nn.ConvTranspose2d(2, 1, 6, stride=1, padding=1), nn.Tanh(),  # 48×64
    )
    return ConvAutoencoder(encoder, decoder)


# name -> (builder, parameter count of the report's table, input (H, W))
SEED_AUTOENCODERS: dict[str, tuple[Callable[[], ConvAutoencoder], int, tuple[int, int]]] = {
    "smooth": (smooth_autoencoder, 8_801, (128, 128)),
    "binary": (binary_autoencoder, 15_833, (128, 128)),
    "grain_growth": (grain_growth_autoencoder, 8_793, (128, 128)),
    "additive": (additive_autoencoder, 14_847, (128, 128)),
    "uhcsdb": (uhcsdb_autoencoder, 5_855, (48, 64)),
}


def build_seed_autoencoder(name: str) -> ConvAutoencoder:
    """Build one of the report's autoencoders by registry name (see ``SEED_AUTOENCODERS``)."""
    try:
        builder = SEED_AUTOENCODERS[name][0]
    except KeyError:
        raise ValueError(f"unknown seed autoencoder {name!r}; valid names: {sorted(SEED_AUTOENCODERS)}") from None
    return builder()


# --- convolutional β-VAE ---------------------------------------------------------------------------------

def vae_loss(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
             beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """β-VAE loss → (total, recon_mse, kl), with total = recon_mse + beta · kl.

    * recon_mse: per-pixel MSE, averaged over pixels, channels and batch (comparable with the plain AEs);
    * kl: KL(q(z|x) ‖ N(0, I)) = −½ Σ_j (1 + logvar_j − mu_j² − exp(logvar_j)), summed over the latent
      dimensions, averaged over the batch, then divided by the number of values per image (C·H·W).

    Dividing the KL by C·H·W puts both terms on the same per-pixel scale: C·H·W · total is the batch mean of
    (summed squared error + β·KL), i.e. the negative ELBO (β = 1) of a Gaussian decoder with fixed variance
    ½, up to a constant. So β = 1 is the proper ELBO whatever the image size, and the MSE term reads the same
    as the plain AEs' loss.
    """
    recon_mse = F.mse_loss(recon, x)
    kl_per_image = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)
    kl = kl_per_image.mean() / x[0].numel()
    return recon_mse + beta * kl, recon_mse, kl


class ConvVAE(nn.Module):
    """Small convolutional β-VAE (this suite's baseline; the report gives no VAE architecture, §11).

    Encoder: per entry of ``channels`` a Conv(k4, s2, p1)-BN-LeakyReLU(0.2) block (halves H and W), flatten,
    linear heads ``fc_mu`` and ``fc_logvar``. Decoder: linear → ReLU → reshape to the encoder's last
    feature map → as many ConvTranspose(k4, s2, p1)-BN-ReLU blocks (each doubles H and W) → Conv(k3, p1) to
    ``in_channels`` → Tanh. When H and W are divisible by 2**len(channels) (64×64, 128×128 and 48×64 with
    the default three blocks) the decoder returns exactly (H, W); otherwise the halving floors, and the
    output is bilinearly resized to (H, W) at the end (``self.resize_output`` says which case holds).

    ``forward`` samples z with the reparameterization trick in training mode and uses z = mu in eval mode
    (deterministic reconstructions for validation metrics); ``beta`` is stored for the training task to
    pass to ``vae_loss``.
    """

    def __init__(self, image_size: int | Sequence[int] = (64, 64), latent_dim: int = 32,
                 channels: Sequence[int] = (16, 32, 64), beta: float = 1.0, in_channels: int = 1) -> None:
        super().__init__()
        height, width = (image_size, image_size) if isinstance(image_size, int) else map(int, image_size)
        if not channels:
            raise ValueError("channels must name at least one encoder block")
        self.image_size = (height, width)
        self.latent_dim = latent_dim
        self.beta = beta
        self.in_channels = in_channels

        blocks, previous = [], in_channels
        for width_out in channels:
            # bias=False: BatchNorm's shift makes a conv bias redundant.
            blocks += [nn.Conv2d(previous, width_out, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(width_out), nn.LeakyReLU(0.2)]
            previous = width_out
        self.encoder = nn.Sequential(*blocks)
        # k4 s2 p1 maps n -> n // 2.
        self.feature_shape = (channels[-1], height >> len(channels), width >> len(channels))
        if min(self.feature_shape[1:]) < 1:
            raise ValueError(f"image_size {self.image_size} is too small for {len(channels)} stride-2 blocks")
        flat = math.prod(self.feature_shape)
        self.fc_mu = nn.Linear(flat, latent_dim)
        self.fc_logvar = nn.Linear(flat, latent_dim)

        # ReLU after the linear layer: without it linear -> ConvTranspose would be one linear map.
        self.fc_decode = nn.Sequential(nn.Linear(latent_dim, flat), nn.ReLU())
        up_channels = list(reversed(channels)) + [channels[0]]
        blocks = []
        for c_in, c_out in itertools.pairwise(up_channels):
            blocks += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU()]
        blocks += [nn.Conv2d(channels[0], in_channels, 3, padding=1), nn.Tanh()]
        self.decoder = nn.Sequential(*blocks)
        decoded = (self.feature_shape[1] << len(channels), self.feature_shape[2] << len(channels))
        self.resize_output = decoded != self.image_size

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(x).flatten(1)
        return self.fc_mu(features), self.fc_logvar(features)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """z = mu + exp(½ logvar) · ε, ε ~ N(0, I) (differentiable in mu and logvar)."""
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self.decoder(self.fc_decode(z).view(-1, *self.feature_shape))
        if self.resize_output:
            out = F.interpolate(out, size=self.image_size, mode="bilinear", align_corners=False)
        return out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar) if self.training else mu
        return self.decode(z), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode n draws z ~ N(0, I) → (n, in_channels, H, W). Call ``eval()`` first for BatchNorm's
        running statistics; no gradients are tracked."""
        device = next(self.parameters()).device
        # Draw on the generator's own device (a CPU generator cannot fill a CUDA tensor), then move.
        draw_device = generator.device if generator is not None else device
        z = torch.randn(n, self.latent_dim, generator=generator, device=draw_device).to(device)
        return self.decode(z)


# --- DCGAN (Radford et al. 2016; PyTorch DCGAN tutorial layout) -----------------------------------------

def dcgan_depth(image_size: int) -> int:
    """Number of stride-2 stages between 4×4 and image_size (2 for 32, 3 for 64, 4 for 128)."""
    if image_size not in (32, 64, 128):
        raise ValueError(f"DCGAN image_size must be 32, 64 or 128, got {image_size}")
    return int(math.log2(image_size)) - 3


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, *size): area averaging when shrinking (no aliasing of thin features), bilinear when
    enlarging. Lets a GAN train at a lower resolution than the data and still be scored at the data's."""
    size = tuple(int(s) for s in size)
    if tuple(images.shape[-2:]) == size:
        return images
    if images.shape[-2] >= size[0] and images.shape[-1] >= size[1]:
        return F.interpolate(images, size=size, mode="area")
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


def diff_augment(images: torch.Tensor) -> torch.Tensor:
    """Differentiable augmentation (Zhao et al. 2020, "DiffAugment"): per image a random horizontal and vertical
    flip and a random circular shift of up to 1/8 of each side, applied to real AND generated images before the
    discriminator, so it cannot memorise ~100 training images while the generator still gets gradients through
    the (differentiable) transforms. Flips and shifts leave a stationary microstructure's statistics unchanged.
    Draws from torch's global generator (seeded by the run)."""
    n, _, height, width = images.shape
    out = []
    flips = torch.rand(n, 2) < 0.5
    shifts = torch.stack([torch.randint(-(height // 8), height // 8 + 1, (n,)),
                          torch.randint(-(width // 8), width // 8 + 1, (n,))], dim=1)
    for k in range(n):
        image = images[k]
        dims = [d for d, flip in zip((1, 2), flips[k].tolist()) if flip]
        if dims:
            image = image.flip(dims)
        out.append(image.roll(shifts=(int(shifts[k, 0]), int(shifts[k, 1])), dims=(1, 2)))
    return torch.stack(out)


def spectral_normalize(module: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) of every conv / transposed conv of ``module``, in place: each
    weight is divided by its largest singular value (one power iteration per step), which bounds the
    discriminator's Lipschitz constant and keeps its gradients informative on small data."""
    for name, child in module.named_children():
        if isinstance(child, (nn.Conv2d, nn.ConvTranspose2d)):
            setattr(module, name, nn.utils.parametrizations.spectral_norm(child))
        else:
            spectral_normalize(child)
    return module


def dcgan_weights_init(module: nn.Module) -> None:
    """The paper's initialization, for ``model.apply``: conv and transposed-conv weights ~ N(0, 0.02);
    BatchNorm weight ~ N(1, 0.02), bias 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGANGenerator(nn.Module):
    """DCGAN generator: z (N, nz) or (N, nz, 1, 1) → images (N, channels, S, S) in [−1, 1], S ∈ {32, 64, 128}.

    ConvTranspose(k4, s1, p0) from 1×1 to 4×4 with ngf·2^d channels, then d ConvTranspose(k4, s2, p1)-BN-ReLU
    blocks halving the channels, then ConvTranspose(k4, s2, p1) to ``channels`` + Tanh (d = 3 for 64, the
    tutorial's network; d = 4 for 128). No conv biases (BatchNorm follows, as in the tutorial). Weights are
    initialized with ``dcgan_weights_init`` on construction.
    """

    def __init__(self, nz: int = 100, ngf: int = 64, image_size: int = 64, channels: int = 1) -> None:
        super().__init__()
        depth = dcgan_depth(image_size)
        self.nz, self.image_size, self.channels = nz, image_size, channels
        width = ngf * 2 ** depth
        layers = [nn.ConvTranspose2d(nz, width, 4, 1, 0, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
        for _ in range(depth):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(width // 2), nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.apply(dcgan_weights_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() == 2:
            z = z[:, :, None, None]
        if z.dim() != 4 or z.shape[1:] != (self.nz, 1, 1):
            raise ValueError(f"z must be (N, {self.nz}) or (N, {self.nz}, 1, 1), got {tuple(z.shape)}")
        return self.main(z)


def dcgan_discriminator_layers(in_channels: int, ndf: int, image_size: int) -> nn.Sequential:
    """The DCGAN discriminator's stack for ``in_channels`` input planes of side ``image_size`` (32, 64 or 128):
    Conv(k4, s2, p1)-LeakyReLU, then Conv-BN-LeakyReLU blocks doubling the width down to 4×4, then a 4×4 conv to
    one logit. Shared by ``DCGANDiscriminator`` and AlloyGAN's conditional one (image + condition planes)."""
    width = ndf
    layers = [nn.Conv2d(in_channels, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
    for _ in range(dcgan_depth(image_size)):
        layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False),
                   nn.BatchNorm2d(width * 2), nn.LeakyReLU(0.2, inplace=True)]
        width *= 2
    layers += [nn.Conv2d(width, 1, 4, 1, 0, bias=False)]
    return nn.Sequential(*layers)


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator: images (N, channels, S, S), S ∈ {32, 64, 128} → logits of shape (N,).

    Conv(k4, s2, p1)-LeakyReLU(0.2) (no BatchNorm on the first layer, as in the paper), then Conv(k4, s2, p1)-
    BN-LeakyReLU blocks doubling the channels down to 4×4, then Conv(k4, s1, p0) to a 1×1 logit. No sigmoid:
    train with ``BCEWithLogitsLoss`` (numerically stable). Returns (N,), like the tutorial's ``.view(-1)``.
    Weights are initialized with ``dcgan_weights_init`` on construction.
    """

    def __init__(self, ndf: int = 64, image_size: int = 64, channels: int = 1) -> None:
        super().__init__()
        self.image_size, self.channels = image_size, channels
        self.main = dcgan_discriminator_layers(channels, ndf, image_size)
        self.apply(dcgan_weights_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(-1)
