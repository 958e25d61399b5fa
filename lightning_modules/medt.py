"""MedT, the Medical Transformer (Valanarasu et al. 2021): gated axial attention, a global and a local branch.

The comparison network of DeepSC-Edge (Yin 2024, Part III). Written from the paper:

* ``GatedAxialAttention``: multi-head self-attention along one image axis (Ho et al. 2019; Wang et al. 2020's
  axial attention with relative positions) in which the relative positional terms of the query, key and value
  are scaled by learnable scalar gates G_Q, G_K, G_V1, G_V2 (the paper's eq. 3). For query position i and key
  position j of a row (or column)::

      y_i = sum_j softmax_j(q_i·k_j + G_Q q_i·r^q_(j-i) + G_K k_j·r^k_(j-i)) (G_V1 v_j + G_V2 r^v_(j-i))

  On a small data set the positional encodings are hard to learn; a gate near 0 lets the network ignore them.
  The gates start at the values of the authors' release (G_Q = G_K = G_V2 = 0.1, G_V1 = 1) and are trained,
  as the paper describes them.
* ``GatedAxialBlock``: the paper's encoder block, a bottleneck (1x1 conv down, height-axis then width-axis
  gated attention, 1x1 conv up) with a residual connection.
* ``MedT``: the Local-Global (LoGo) network. The global branch sees the whole image through 2 blocks; the local
  branch cuts the image into ``patches_per_side``² patches and runs each through 4 deeper blocks with its own
  decoder; the two full-resolution feature maps are added and a 1x1 convolution gives the logits.

Departures from the authors' release, for clarity: the three similarity terms are summed as the paper writes them
(the release batch-normalises each first, a detail of Wang et al.'s code) and q, k, v have the same width; the
local branch runs its patches as one batch (same weights, as in the release's loop over patches). ``width`` is
the release's base width (``int(64 * s)``, s = 0.125 gives 8), small enough to train on a CPU.

Used as a plain ``nn.Module`` through ``FactorySegmentationTask`` (``factory: matcv.lightning_modules.medt:MedT``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as recompute_in_backward

from matcv.lightning_modules.segmentation import tiled_logits

AXES = ("height", "width")
# Initial gates of the authors' release: the positional terms start small, the value term at full weight.
INITIAL_GATES = {"gate_q": 0.1, "gate_k": 0.1, "gate_v1": 1.0, "gate_v2": 0.1}
LOCAL_DOWNSAMPLING = 32  # the local branch halves a patch 5 times (stem, 3 strided blocks, first decoder conv)


class GatedAxialAttention(nn.Module):
    """Gated multi-head attention along one axis of (B, C, H, W) features -> (B, C, H, W).

    ``span`` is the longest sequence the relative position tables cover (offsets -(span-1)..span-1): the
    axis length of the largest input. The relative encodings r^q, r^k, r^v are shared by the heads (as in the
    authors' release); the gates are scalars of the layer.
    """

    def __init__(self, channels: int, heads: int, span: int, axis: str) -> None:
        super().__init__()
        if axis not in AXES:
            raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
        if channels % heads:
            raise ValueError(f"{channels} channels cannot be split into {heads} heads")
        if span < 1:
            raise ValueError(f"span must be at least 1, got {span}")
        self.channels, self.heads, self.span, self.axis = channels, heads, span, axis
        self.head_dim = channels // heads
        self.to_qkv = nn.Conv2d(channels, 3 * channels, kernel_size=1, bias=False)  # a linear map per position
        self.relative_q = nn.Parameter(torch.empty(2 * span - 1, self.head_dim))
        self.relative_k = nn.Parameter(torch.empty(2 * span - 1, self.head_dim))
        self.relative_v = nn.Parameter(torch.empty(2 * span - 1, self.head_dim))
        for name, value in INITIAL_GATES.items():
            setattr(self, name, nn.Parameter(torch.tensor(float(value))))
        # The release's scales: unit-variance q, k, v for unit-variance inputs, and positional terms to match.
        nn.init.normal_(self.to_qkv.weight, std=channels ** -0.5)
        for table in (self.relative_q, self.relative_k, self.relative_v):
            nn.init.normal_(table, std=self.head_dim ** -0.5)

    def relative_index(self, length: int) -> torch.Tensor:
        """(length, length) rows of the position tables: entry [i, j] is the row of the offset j - i."""
        if length > self.span:
            raise ValueError(f"a {self.axis} of {length} px is longer than this attention's span {self.span}: "
                             f"build the network for the larger image size")
        positions = torch.arange(length, device=self.relative_q.device)
        return positions[None, :] - positions[:, None] + self.span - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if c != self.channels:
            raise ValueError(f"expected {self.channels} channels, got input of shape {tuple(x.shape)}")
        qkv = self.to_qkv(x)
        # Every row (width axis) or column (height axis) becomes one sequence: (sequences, 3C, length).
        if self.axis == "width":
            sequences, length = qkv.permute(0, 2, 1, 3).reshape(b * h, 3 * c, w), w
        else:
            sequences, length = qkv.permute(0, 3, 1, 2).reshape(b * w, 3 * c, h), h
        # (N, heads, L, d) each
        q, k, v = sequences.reshape(-1, 3, self.heads, self.head_dim, length).transpose(-1, -2).unbind(1)
        index = self.relative_index(length)
        rows = index.expand(*q.shape[:2], length, length)
        # q_i·r^q_(j-i): each query against the whole table (one matmul), then the offsets each key needs; far
        # cheaper than materialising an (L, L, d) tensor of encodings.
        query_position = torch.gather(q @ self.relative_q.T, -1, rows)
        # k_j·r^k_(j-i): computed per key, then transposed into [query i, key j] order.
        key_position = torch.gather(k @ self.relative_k.T, -1, index.T.expand_as(rows)).transpose(-1, -2)
        logits = q @ k.transpose(-1, -2) + self.gate_q * query_position + self.gate_k * key_position
        attention = logits.softmax(dim=-1)  # (N, heads, L query, L key)
        # sum_j a_ij r^v_(j-i): the weights moved to their offsets (one per offset in a row), then one matmul.
        by_offset = attention.new_zeros(*attention.shape[:-1], 2 * self.span - 1).scatter(-1, rows, attention)
        out = self.gate_v1 * (attention @ v) + self.gate_v2 * (by_offset @ self.relative_v)
        out = out.transpose(-1, -2).reshape(-1, c, length)
        if self.axis == "width":
            return out.reshape(b, h, c, w).permute(0, 2, 1, 3)
        return out.reshape(b, w, c, h).permute(0, 2, 3, 1)


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
                         nn.BatchNorm2d(out_channels))


class GatedAxialBlock(nn.Module):
    """The paper's encoder block: 1x1 conv to ``planes``, gated axial attention along the height then the width
    (each followed by batch norm), average pooling when ``stride`` is 2, 1x1 conv to 2 x ``planes``, plus the
    input (projected where its shape differs). ``checkpoint``: recompute the attention in the backward pass
    instead of keeping its (B·W, heads, H, H) maps (memory for large images, at the cost of time)."""

    expansion = 2

    def __init__(self, in_channels: int, planes: int, heads: int, span: int, stride: int = 1,
                 checkpoint: bool = False) -> None:
        super().__init__()
        self.checkpoint = checkpoint
        out_channels = planes * self.expansion
        self.down = _conv_bn(in_channels, planes)
        self.height = GatedAxialAttention(planes, heads, span, "height")
        self.height_norm = nn.BatchNorm2d(planes)
        self.width = GatedAxialAttention(planes, heads, span, "width")
        self.width_norm = nn.BatchNorm2d(planes)
        self.pool = nn.AvgPool2d(stride, stride) if stride > 1 else nn.Identity()
        self.up = _conv_bn(planes, out_channels)
        self.skip = (_conv_bn(in_channels, out_channels, stride=stride)
                     if stride > 1 or in_channels != out_channels else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.down(x))
        out = self.width_norm(self._attend(self.width, self.height_norm(self._attend(self.height, out))))
        out = self.up(F.relu(self.pool(out)))
        return F.relu(out + self.skip(x))

    def _attend(self, attention: GatedAxialAttention, x: torch.Tensor) -> torch.Tensor:
        # Batch norms stay outside the checkpoint: a recomputed forward would update their statistics twice.
        if self.checkpoint and torch.is_grad_enabled():
            return recompute_in_backward(attention, x, use_reentrant=False)
        return attention(x)


def _stem(in_channels: int, width: int) -> nn.Sequential:
    """The release's convolutional stem: 7x7 stride-2 conv, then 3x3 convs out to 16 x width and back."""
    return nn.Sequential(_conv_bn(in_channels, width, 7, 2), nn.ReLU(), _conv_bn(width, 16 * width, 3), nn.ReLU(),
                         _conv_bn(16 * width, width, 3), nn.ReLU())


def _upsampled(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.relu(F.interpolate(conv(x), scale_factor=2.0, mode="bilinear", align_corners=False))


class MedT(nn.Module):
    """Medical Transformer for images of ``img_size`` px (or smaller, by whole local patches): (B, in_channels,
    H, W) -> logits (B, num_classes, H, W). H and W must be multiples of ``patches_per_side`` x 32 (the local
    branch halves a patch 5 times). ``checkpoint_attention``: see ``GatedAxialBlock`` (for 256 px and more)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 1, img_size: int = 128, width: int = 8,
                 heads: int = 8, patches_per_side: int = 4, checkpoint_attention: bool = False) -> None:
        super().__init__()
        tile = patches_per_side * LOCAL_DOWNSAMPLING
        if patches_per_side < 1 or img_size % tile:
            raise ValueError(f"MedT: img_size {img_size} must be a multiple of patches_per_side x "
                             f"{LOCAL_DOWNSAMPLING} = {tile} (each local patch is halved 5 times)")
        if (2 * width) % heads:
            raise ValueError(f"MedT: the first blocks have {2 * width} channels (2 x width), not divisible into "
                             f"{heads} heads")
        self.img_size, self.patches_per_side, self.num_classes = img_size, patches_per_side, num_classes
        w, patch = width, img_size // patches_per_side
        # Global branch: the whole image at half resolution, 2 blocks (the paper: a shallow global branch).
        self.stem = _stem(in_channels, w)
        self.layer1 = GatedAxialBlock(w, 2 * w, heads, img_size // 2, checkpoint=checkpoint_attention)
        self.layer2 = GatedAxialBlock(4 * w, 4 * w, heads, img_size // 2, stride=2, checkpoint=checkpoint_attention)
        self.decoder4 = nn.Conv2d(8 * w, 4 * w, 3, padding=1)
        self.decoder5 = nn.Conv2d(4 * w, 2 * w, 3, padding=1)
        # Local branch: every patch through 4 blocks and a decoder with skip connections, weights shared.
        self.stem_p = _stem(in_channels, w)
        self.layer1_p = GatedAxialBlock(w, 2 * w, heads, patch // 2, checkpoint=checkpoint_attention)
        self.layer2_p = GatedAxialBlock(4 * w, 4 * w, heads, patch // 2, stride=2, checkpoint=checkpoint_attention)
        self.layer3_p = GatedAxialBlock(8 * w, 8 * w, heads, patch // 4, stride=2,
                                        checkpoint=checkpoint_attention)
        self.layer4_p = GatedAxialBlock(16 * w, 16 * w, heads, patch // 8, stride=2,
                                        checkpoint=checkpoint_attention)
        self.decoder1_p = nn.Conv2d(32 * w, 32 * w, 3, stride=2, padding=1)
        self.decoder2_p = nn.Conv2d(32 * w, 16 * w, 3, padding=1)
        self.decoder3_p = nn.Conv2d(16 * w, 8 * w, 3, padding=1)
        self.decoder4_p = nn.Conv2d(8 * w, 4 * w, 3, padding=1)
        self.decoder5_p = nn.Conv2d(4 * w, 2 * w, 3, padding=1)
        self.decoderf = nn.Conv2d(2 * w, 2 * w, 3, padding=1)
        self.adjust = nn.Conv2d(2 * w, num_classes, 1)

    def global_branch(self, images: torch.Tensor) -> torch.Tensor:
        x1 = self.layer1(self.stem(images))
        x = _upsampled(self.decoder4, self.layer2(x1)) + x1
        return _upsampled(self.decoder5, x)

    def local_branch(self, images: torch.Tensor) -> torch.Tensor:
        b, c, h, w = images.shape
        n = self.patches_per_side
        ph, pw = h // n, w // n
        # (B, C, n*ph, n*pw) -> (B*n*n, C, ph, pw): every patch an image of its own.
        patches = images.reshape(b, c, n, ph, n, pw).permute(0, 2, 4, 1, 3, 5).reshape(b * n * n, c, ph, pw)
        x1 = self.layer1_p(self.stem_p(patches))
        x2 = self.layer2_p(x1)
        x3 = self.layer3_p(x2)
        x4 = self.layer4_p(x3)
        x = _upsampled(self.decoder1_p, x4) + x4
        x = _upsampled(self.decoder2_p, x) + x3
        x = _upsampled(self.decoder3_p, x) + x2
        x = _upsampled(self.decoder4_p, x) + x1
        x = _upsampled(self.decoder5_p, x)
        k = x.shape[1]
        return x.reshape(b, n, n, k, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(b, k, h, w)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Both branches on images whose sides are multiples of ``patches_per_side`` x 32, at most ``img_size``."""
        h, w = images.shape[-2:]
        tile = self.patches_per_side * LOCAL_DOWNSAMPLING
        if h % tile or w % tile or max(h, w) > self.img_size:
            raise ValueError(f"MedT built for {self.img_size} px with {self.patches_per_side}² patches takes "
                             f"images of at most {self.img_size} px whose sides are multiples of {tile}, "
                             f"got {h}x{w}")
        features = self.global_branch(images) + self.local_branch(images)
        return self.adjust(F.relu(self.decoderf(features)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of images of any size: padded (edges repeated) to whole local patches, or, larger than
        ``img_size`` (a whole test micrograph), predicted in overlapping tiles of ``img_size``: the relative
        position tables end there, as MedT's do."""
        h, w = images.shape[-2:]
        if max(h, w) > self.img_size:
            return tiled_logits(self.logits, images, self.img_size)
        unit = self.patches_per_side * LOCAL_DOWNSAMPLING
        padded = F.pad(images, (0, -w % unit, 0, -h % unit), mode="replicate") if h % unit or w % unit else images
        return self.logits(padded)[..., :h, :w]
