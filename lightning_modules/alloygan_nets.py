"""AlloyGAN (Yin 2024, §5.6): condition encoder with the chemistry prior, and the
conditional DCGAN-style generator / discriminator (plain ``nn.Module``s, no Lightning).

Condition vector per image, raw order ``CONDITION_COLUMNS`` = (Si, Fe, Cu, Mn, Mg, Ni in wt%, cooling rate
in K/s, Sr/P modified 0/1), Table 6.

Eq. (9): ``y = Concat(Norm(w ⊙ I1), Norm(I2))`` with w the Table 7 conversion factors (``CHEMISTRY_PRIOR``),
I1 the six element wt%, I2 (cooling rate, Sr/P). ``ConditionEncoder(mode="alloygan")`` implements it;
``ConditionEncoder(mode="cgan")`` is the standard cGAN baseline ("individually normalizes each raw input
feature"). See ``ConditionEncoder`` for the normalisation details (unified chemical scale, constant
features, extrapolation to unseen alloys).

Generator: z (N, nz) concatenated with y (N, 8) → (N, nz + 8, 1, 1) → ConvTranspose(k4, s1, p0) to 4×4 →
ConvTranspose(k4, s2, p1)-BN-LeakyReLU(0.2) up-blocks → ConvTranspose(k4, s2, p1) to ``channels`` → Tanh,
64×64 or 128×128 (Yin 2024 uses 128×128, nc = 1). Deviation from the DCGAN tutorial (ReLU in G): Yin 2024
says G's transposed-conv layers "include batch normalization and leaky ReLU activation functions", so G
uses LeakyReLU(0.2) as well.

Discriminator: y is broadcast to (N, 8, H, W) and concatenated with the image as extra channels (seed
Fig. 14, "concatenated with the respective images as additional channels"), then the DCGAN discriminator
layout: Conv(k4, s2, p1)-LeakyReLU(0.2) (no BN on the first layer), Conv(k4, s2, p1)-BN-LeakyReLU(0.2)
blocks down to 4×4, Conv(k4, s1, p0) → one raw logit per image, shape (N,). No sigmoid: train eq. (10)
with ``BCEWithLogitsLoss``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from matcv.lightning_modules.microstructure_nets import dcgan_depth, dcgan_discriminator_layers, dcgan_weights_init

__all__ = [
    "CHEMICAL_COLUMNS",
    "CHEMISTRY_PRIOR",
    "CONDITION_COLUMNS",
    "ENCODER_MODES",
    "MANUFACTURING_COLUMNS",
    "ConditionEncoder",
    "ConditionalDiscriminator",
    "ConditionalGenerator",
    "condition_matrix",
    "dcgan_weights_init",
]

CHEMICAL_COLUMNS: tuple[str, ...] = ("Si", "Fe", "Cu", "Mn", "Mg", "Ni")          # I1, wt%
MANUFACTURING_COLUMNS: tuple[str, ...] = ("cooling_rate", "modified")               # I2, K/s and 0/1
CONDITION_COLUMNS: tuple[str, ...] = CHEMICAL_COLUMNS + MANUFACTURING_COLUMNS

# Table 7: at% of the reaction product per wt% of the element
# (Si→Si, Fe→Al3Fe, Cu→Al2Cu, Mn→Al12Mn, Mg→Mg2Si, Ni→Al3Ni).
CHEMISTRY_PRIOR: dict[str, float] = {"Si": 0.036, "Fe": 0.018, "Cu": 0.016, "Mn": 0.018, "Mg": 0.021,
                                     "Ni": 0.017}

ENCODER_MODES = ("alloygan", "cgan")
N_CONDITIONS = len(CONDITION_COLUMNS)
_N_CHEM = len(CHEMICAL_COLUMNS)


def condition_matrix(rows: Sequence[Mapping[str, float]]) -> torch.Tensor:
    """Raw (N, 8) float64 condition tensor from records keyed by ``CONDITION_COLUMNS`` (``modified`` may be
    a bool)."""
    return torch.tensor([[float(row[c]) for c in CONDITION_COLUMNS] for row in rows], dtype=torch.float64)


class ConditionEncoder(nn.Module):
    """Raw conditions (N, 8) in ``CONDITION_COLUMNS`` order → normalised conditions y (N, 8), same order.

    ``mode="alloygan"`` (eq. 9): the chemical block is first weighted, w ⊙ I1 with w = ``CHEMISTRY_PRIOR``,
    and then min-max normalised with ONE min and ONE max taken over the whole weighted block (Yin 2024: "The
    features were then normalized with a unified scale from 0 to 1"). The unified scale is essential: a
    per-feature min-max would divide each element's column by its own w·(max − min) and cancel w exactly,
    making AlloyGAN identical to the cGAN. With one scale, Si (large wt% × the largest factor) keeps its
    dominant range and minor elements stay near 0. I2 (cooling rate, Sr/P) is min-max normalised per
    feature. ``mode="cgan"``: every raw feature is min-max normalised individually (no prior).

    ``fit(raw)`` must be given the TRAINING conditions only (the test alloys are unseen); the min/max are
    stored as buffers (``feature_min``/``feature_max``, per output column, already in the weighted space;
    in AlloyGAN mode the six chemical entries hold the same unified block min/max) so a checkpoint carries
    them. ``forward`` before ``fit`` raises.

    * Constant features (max == min over the training set, e.g. Sr/P when no training image is modified)
      map to 0 for every input: the training data give them no scale and the net never saw them vary.
    * Values outside the training range are NOT clamped: the map is affine, so an unseen alloy with more Si
      than any training alloy gets a value > 1 (linear extrapolation) — generating unseen compositions is
      the point of AlloyGAN.

    Normalisation is computed in float64; the output has the input's floating dtype (float32 for integer
    input) and the input's device.
    """

    def __init__(self, mode: str = "alloygan") -> None:
        super().__init__()
        if mode not in ENCODER_MODES:
            raise ValueError(f"mode must be one of {ENCODER_MODES}, got {mode!r}")
        self.mode = mode
        weights = torch.ones(N_CONDITIONS, dtype=torch.float64)
        if mode == "alloygan":
            weights[:_N_CHEM] = torch.tensor([CHEMISTRY_PRIOR[c] for c in CHEMICAL_COLUMNS], dtype=torch.float64)
        self.register_buffer("weights", weights)
        self.register_buffer("feature_min", torch.zeros(N_CONDITIONS, dtype=torch.float64))
        self.register_buffer("feature_max", torch.ones(N_CONDITIONS, dtype=torch.float64))
        self.register_buffer("fitted", torch.tensor(False))

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, fitted={bool(self.fitted)}"

    def _check(self, raw: torch.Tensor) -> torch.Tensor:
        raw = torch.as_tensor(raw)
        if raw.dim() != 2 or raw.shape[1] != N_CONDITIONS:
            raise ValueError(f"raw conditions must be (N, {N_CONDITIONS}) in order {CONDITION_COLUMNS}, "
                             f"got {tuple(raw.shape)}")
        return raw

    def weighted(self, raw: torch.Tensor) -> torch.Tensor:
        """w ⊙ raw (float64); identity on I2 and, in cGAN mode, everywhere."""
        raw = self._check(raw)
        return raw.to(device=self.weights.device, dtype=torch.float64) * self.weights

    @torch.no_grad()
    def fit(self, raw: torch.Tensor) -> ConditionEncoder:
        """Store the normalisation range of the TRAINING conditions raw (N, 8); returns self."""
        values = self.weighted(raw)
        if values.shape[0] == 0:
            raise ValueError("fit needs at least one condition row")
        if not torch.isfinite(values).all():
            raise ValueError("fit conditions must be finite")
        lo, hi = values.min(dim=0).values, values.max(dim=0).values
        if self.mode == "alloygan":  # one unified scale over the weighted chemical block
            lo[:_N_CHEM] = values[:, :_N_CHEM].min()
            hi[:_N_CHEM] = values[:, :_N_CHEM].max()
        self.feature_min.copy_(lo)
        self.feature_max.copy_(hi)
        self.fitted.fill_(True)
        return self

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        if not bool(self.fitted):
            raise RuntimeError("ConditionEncoder.fit(train_conditions) must be called before forward")
        raw = self._check(raw)
        out_dtype = raw.dtype if raw.is_floating_point() else torch.get_default_dtype()
        values = self.weighted(raw)
        span = self.feature_max - self.feature_min
        constant = span == 0
        y = (values - self.feature_min) / torch.where(constant, torch.ones_like(span), span)
        y = torch.where(constant, torch.zeros_like(y), y)
        return y.to(device=raw.device, dtype=out_dtype)


class ConditionalGenerator(nn.Module):
    """AlloyGAN / cGAN generator: (z (N, nz), y (N, n_conditions)) → images (N, channels, S, S) in [−1, 1],
    S ∈ {64, 128}. Layout in the module docstring; no conv biases before BatchNorm; weights initialized with
    ``dcgan_weights_init``. z may also be (N, nz, 1, 1)."""

    def __init__(self, nz: int = 100, n_conditions: int = N_CONDITIONS, ngf: int = 64, image_size: int = 128,
                 channels: int = 1) -> None:
        super().__init__()
        depth = dcgan_depth(image_size)
        self.nz, self.n_conditions, self.image_size, self.channels = nz, n_conditions, image_size, channels
        width = ngf * 2 ** depth
        layers = [nn.ConvTranspose2d(nz + n_conditions, width, 4, 1, 0, bias=False), nn.BatchNorm2d(width),
                  nn.LeakyReLU(0.2, inplace=True)]
        for _ in range(depth):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(width // 2), nn.LeakyReLU(0.2, inplace=True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.apply(dcgan_weights_init)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if z.dim() == 4 and z.shape[2:] == (1, 1):
            z = z.flatten(1)
        if z.dim() != 2 or z.shape[1] != self.nz:
            raise ValueError(f"z must be (N, {self.nz}) or (N, {self.nz}, 1, 1), got {tuple(z.shape)}")
        if y.dim() != 2 or y.shape != (z.shape[0], self.n_conditions):
            raise ValueError(f"y must be ({z.shape[0]}, {self.n_conditions}), got {tuple(y.shape)}")
        h = torch.cat([z, y.to(z.dtype)], dim=1)[:, :, None, None]
        return self.main(h)


class ConditionalDiscriminator(nn.Module):
    """AlloyGAN / cGAN discriminator: (x (N, channels, S, S), y (N, n_conditions)) → logits (N,), S ∈ {64,
    128}. y enters as n_conditions constant extra image channels. Weights initialized with
    ``dcgan_weights_init``."""

    def __init__(self, n_conditions: int = N_CONDITIONS, ndf: int = 64, image_size: int = 128,
                 channels: int = 1) -> None:
        super().__init__()
        self.n_conditions, self.image_size, self.channels = n_conditions, image_size, channels
        self.main = dcgan_discriminator_layers(channels + n_conditions, ndf, image_size)
        self.apply(dcgan_weights_init)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        expected = (self.channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x must be (N, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        if y.dim() != 2 or y.shape != (x.shape[0], self.n_conditions):
            raise ValueError(f"y must be ({x.shape[0]}, {self.n_conditions}), got {tuple(y.shape)}")
        planes = y.to(x.dtype)[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        return self.main(torch.cat([x, planes], dim=1)).view(-1)
