"""The networks of the 3-D localization task (``matcv.lightning_modules.localization`` trains and scores them).

* ``CPNet``: the CPNet of a Sandia National Laboratories report, an 11³ window → the strideGap³ block at its
  centre.
* ``YangWindowCNN``: Yang et al. 2019 (Acta Mater. 166, 335), an 11³ periodic window → its focal voxel's strain.
* ``PeriodicUNet3D``: a small 3-D U-Net with circular padding, the whole periodic field at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class CPNet(nn.Module):
    """The Sandia report's CPNet, layer for layer (its torchsummary table, 902,183 parameters for
    strideGap 7): an 11³ window → the strideGap³ block at its centre.

    The table fixes each layer's output shape and parameter count; what it leaves open is chosen as the
    simplest fit: the "keeping" MaxPool3d layers are kernel 3 / stride 1 / padding 1, the 6 → 5 one kernel 2
    / stride 1; the strided convolutions are kernel 3 / stride 2 / padding 1 (11 → 6, 5 → 3). The flatten
    between the features and the dense head is a view in ``forward`` (torchsummary lists no layer for it).
    """

    def __init__(self, stride_gap: int = 7, window_size: int = 11) -> None:
        super().__init__()
        self.stride_gap, self.window_size = stride_gap, window_size
        self.features = nn.Sequential(
            nn.Conv3d(1, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(), nn.MaxPool3d(3, stride=1, padding=1),
            nn.Conv3d(8, 16, 3, stride=2, padding=1), nn.BatchNorm3d(16), nn.ReLU(),
            nn.MaxPool3d(3, stride=1, padding=1),
            nn.Conv3d(16, 32, 3, padding=1), nn.BatchNorm3d(32), nn.ReLU(), nn.MaxPool3d(2, stride=1),
            nn.Conv3d(32, 64, 3, stride=2, padding=1), nn.BatchNorm3d(64), nn.ReLU(),
            nn.MaxPool3d(3, stride=1, padding=1),
        )
        with torch.no_grad():
            n_features = self.features.eval()(torch.zeros(1, 1, window_size, window_size, window_size)).numel()
        self.features.train()
        block = stride_gap ** 3
        self.head = nn.Sequential(nn.Linear(n_features, block), nn.ReLU(), nn.Linear(block, block), nn.ReLU(),
                                  nn.Linear(block, block))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """(M, 1, 11, 11, 11) → (M, strideGap³), the block in row-major (x, y, z) order."""
        return self.head(self.features(windows).flatten(1))


class YangWindowCNN(nn.Module):
    """Yang et al. 2019's focal-voxel CNN, with the layer sizes of the authors' released scripts
    (github.com/NU-CUCIS/Deep_learning_localization, ``contrast10_localization.py`` /
    ``contrast50_localization.py``): on the 11³ window,
        conv 3×3 valid, 128 filters, ReLU → conv 3×3 valid, 256 filters, ReLU → flatten (7·7·256)
        → dense 2048 ReLU → dense 1024 ReLU → dense 1,
    Glorot-normal weights, zero biases. The released code ("2DCNN") treats the window's last axis as the 11
    input channels of 2-D convolutions (Keras channels-last), which is ``conv_dims=2`` (28.1 M parameters);
    ``conv_dims=3`` uses true 3-D convolutions of the same widths (one input channel; the dense layer then
    has 256·7³ inputs, ≈ 182 M parameters — only practical with smaller widths).
    """

    def __init__(self, window_size: int = 11, conv_channels: Sequence[int] = (128, 256),
                 hidden_units: Sequence[int] = (2048, 1024), conv_dims: int = 2) -> None:
        super().__init__()
        if conv_dims not in (2, 3):
            raise ValueError(f"conv_dims must be 2 (slices as channels, as released) or 3, got {conv_dims}")
        self.conv_dims = conv_dims
        conv = nn.Conv2d if conv_dims == 2 else nn.Conv3d
        channels = window_size if conv_dims == 2 else 1
        layers: list[nn.Module] = []
        for width in conv_channels:
            layers += [conv(channels, width, 3), nn.ReLU()]
            channels = width
        self.features = nn.Sequential(*layers)
        side = window_size - 2 * len(conv_channels)
        if side < 1:
            raise ValueError(f"{len(conv_channels)} valid 3×3 convolutions do not fit an {window_size} window")
        dense: list[nn.Module] = []
        width = channels * side ** conv_dims
        for units in hidden_units:
            dense += [nn.Linear(width, units), nn.ReLU()]
            width = units
        dense.append(nn.Linear(width, 1))
        self.head = nn.Sequential(*dense)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.Linear)):
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """(M, 1, S, S, S) → (M,) strain of each window's centre voxel."""
        x = windows[:, 0].permute(0, 3, 1, 2) if self.conv_dims == 2 else windows  # last axis → channels
        return self.head(self.features(x).flatten(1)).squeeze(1)


def periodic_conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, 3, padding=1, padding_mode="circular", bias=False),
        nn.BatchNorm3d(out_channels), nn.ReLU(inplace=True),
        nn.Conv3d(out_channels, out_channels, 3, padding=1, padding_mode="circular", bias=False),
        nn.BatchNorm3d(out_channels), nn.ReLU(inplace=True),
    )


class PeriodicUNet3D(nn.Module):
    """A small 3-D U-Net (``depth`` poolings, ``base_channels`` doubling per level) with circular padding in
    every convolution, so the field is treated as periodic.

    Grid sizes that 2^depth does not divide (21 → 24, 51 → 52 for depth 2) are padded circularly (half on
    each side) and the output is cropped back. The padded volume is then treated as periodic with period
    24, so voxels within a receptive field of the seam see ≤ 3 duplicated planes instead of their exact
    periodic neighbours: a small, documented approximation (exact when N is a multiple of 2^depth). The
    alternatives were worse here: a stride-free dilated net is not a U-Net, and a margin covering the whole
    receptive field would cost ~20× the compute at 21³.
    """

    def __init__(self, in_channels: int = 1, base_channels: int = 16, depth: int = 2) -> None:
        super().__init__()
        self.depth = depth
        widths = [base_channels * 2 ** level for level in range(depth + 1)]
        self.encoders = nn.ModuleList()
        channels = in_channels
        for width in widths[:-1]:
            self.encoders.append(periodic_conv_block(channels, width))
            channels = width
        self.bottleneck = periodic_conv_block(channels, widths[-1])
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(depth)):
            self.upsamplers.append(nn.ConvTranspose3d(widths[level + 1], widths[level], 2, stride=2))
            self.decoders.append(periodic_conv_block(2 * widths[level], widths[level]))
        self.head = nn.Conv3d(widths[0], 1, 1)

    def forward(self, volumes: torch.Tensor) -> torch.Tensor:
        shape = volumes.shape[-3:]
        multiple = 2 ** self.depth
        extra = [(-n) % multiple for n in shape]
        padding: list[int] = []
        for more in reversed(extra):  # F.pad takes the last axis first
            padding += [more // 2, more - more // 2]
        x = F.pad(volumes, padding, mode="circular") if any(extra) else volumes
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = F.max_pool3d(x, 2)
        x = self.bottleneck(x)
        for upsample, decoder, skip in zip(self.upsamplers, self.decoders, reversed(skips)):
            x = decoder(torch.cat([upsample(x), skip], dim=1))
        x = self.head(x)
        starts = [more // 2 for more in extra]
        return x[..., starts[0]:starts[0] + shape[0], starts[1]:starts[1] + shape[1], starts[2]:starts[2] + shape[2]]
