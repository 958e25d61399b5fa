"""ET-UNet: a UNet (smp) with ET-Net's Edge Guidance Module and Weighted Aggregation Module.

ET-Net (Zhang et al., MICCAI 2019), as Yin 2024, Figure 10, puts it onto UNet:
* **EGM** on the two earliest encoder stages after the stem (1/4 and 1/8 resolution): each goes through a
  1x1 + 3x3 conv, the coarser is upsampled, both are concatenated; one 1x1 branch predicts the edge map
  Ŷ_edge (supervised by the Canny edges of the mask, eq. 3), another gives edge-attention features.
* **WAM** on the last three decoder stages (1/4, 1/2, full resolution): each is re-weighted channel-wise
  (1x1 conv, then global pooling -> 1x1 -> 1x1 -> sigmoid gates), upsampled and summed from coarse to fine,
  concatenated with the EGM features and fused by a 1x1 conv before the segmentation head.
The encoder and decoder blocks are smp's, so any smp encoder name works and a UNet and an ET-UNet built
with the same encoder share the same backbone.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class EdgeGuidanceModule(nn.Module):
    def __init__(self, fine_channels: int, coarse_channels: int, edge_channels: int = 32, out_channels: int = 32):
        super().__init__()
        self.fine = nn.Sequential(conv_bn_relu(fine_channels, edge_channels, 1),
                                  conv_bn_relu(edge_channels, edge_channels, 3))
        self.coarse = nn.Sequential(conv_bn_relu(coarse_channels, edge_channels, 1),
                                    conv_bn_relu(edge_channels, edge_channels, 3))
        self.edge_head = nn.Sequential(conv_bn_relu(2 * edge_channels, edge_channels, 1),
                                       nn.Conv2d(edge_channels, 1, kernel_size=1))
        self.features = conv_bn_relu(2 * edge_channels, out_channels, 1)

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (edge logits, edge-attention features), both at the fine stage's resolution."""
        coarse = F.interpolate(self.coarse(coarse), size=fine.shape[-2:], mode="bilinear", align_corners=False)
        both = torch.cat([self.fine(fine), coarse], dim=1)
        return self.edge_head(both), self.features(both)


class WeightedBlock(nn.Module):
    """1x1 conv, then a channel gate computed from the block's own global average (squeeze-excitation-like).

    The gate has no BatchNorm (ET-Net's has): on globally pooled 1x1 maps it fails for a batch of one.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.project = conv_bn_relu(in_channels, out_channels, 1)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(out_channels, out_channels, 1),
                                  nn.ReLU(inplace=True), nn.Conv2d(out_channels, out_channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(x)
        return x * self.gate(x)


class WeightedAggregationModule(nn.Module):
    def __init__(self, decoder_channels: list[int], edge_feature_channels: int, channels: int = 32):
        super().__init__()
        self.weighted = nn.ModuleList(WeightedBlock(c, channels) for c in decoder_channels)
        self.fuse = conv_bn_relu(channels + edge_feature_channels, channels, 1)

    def forward(self, decoder_stages: list[torch.Tensor], edge_features: torch.Tensor) -> torch.Tensor:
        """Coarse-to-fine weighted sum of ``decoder_stages`` fused with the EGM features, at the finest size."""
        aggregated = None
        for block, stage in zip(self.weighted, decoder_stages):
            weighted = block(stage)
            if aggregated is not None:
                weighted = weighted + F.interpolate(aggregated, size=stage.shape[-2:], mode="bilinear",
                                                    align_corners=False)
            aggregated = weighted
        edge_features = F.interpolate(edge_features, size=aggregated.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([aggregated, edge_features], dim=1))


def decoder_stages(decoder: nn.Module, features: list[torch.Tensor]) -> list[torch.Tensor]:
    """Every block output of smp's UnetDecoder, coarse to fine.

    smp's own ``forward`` returns only the last one; this is the same loop (smp 0.5-0.6) keeping them all.
    """
    spatial_shapes = [f.shape[2:] for f in features][::-1]
    features = features[1:][::-1]  # drop the input-resolution "feature", start from the deepest stage
    head, skips = features[0], features[1:]
    x = decoder.center(head)
    outputs = []
    for i, block in enumerate(decoder.blocks):
        height, width = spatial_shapes[i + 1]
        x = block(x, height, width, skip_connection=skips[i] if i < len(skips) else None)
        outputs.append(x)
    return outputs


class ETUNet(nn.Module):
    """UNet + EGM + WAM. ``forward`` returns (segmentation logits, edge logits), both at input resolution."""

    EGM_STAGES = (2, 3)  # smp encoder features: 0 input, 1 stem (1/2), 2 first stage (1/4), 3 second (1/8)
    WAM_STAGES = 3  # the last three decoder blocks

    def __init__(self, encoder_name: str = "resnet18", in_channels: int = 3, classes: int = 1,
                 decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16), guidance_channels: int = 32):
        super().__init__()
        self.unet = smp.Unet(encoder_name, encoder_weights=None, in_channels=in_channels, classes=classes,
                             decoder_channels=list(decoder_channels))
        self.unet.segmentation_head = None  # replaced: the WAM's output feeds the head below
        encoder_channels = self.unet.encoder.out_channels
        fine, coarse = (encoder_channels[i] for i in self.EGM_STAGES)
        self.egm = EdgeGuidanceModule(fine, coarse, guidance_channels, guidance_channels)
        self.wam = WeightedAggregationModule(list(decoder_channels[-self.WAM_STAGES:]), guidance_channels,
                                             guidance_channels)
        self.head = nn.Conv2d(guidance_channels, classes, kernel_size=3, padding=1)

    @property
    def encoder(self) -> nn.Module:
        return self.unet.encoder

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.unet.encoder(images)
        stages = decoder_stages(self.unet.decoder, features)
        edge_logits, edge_features = self.egm(*(features[i] for i in self.EGM_STAGES))
        segmentation = self.head(self.wam(stages[-self.WAM_STAGES:], edge_features))
        edge_logits = F.interpolate(edge_logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return segmentation, edge_logits
