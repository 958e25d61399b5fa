"""A user's own segmentation network, outside matcv: ``build`` returns a plain ``nn.Module`` mapping images
(B, 3, H, W) to ``classes`` logit maps (B, classes, H, W): 1 for binary data; ``TinyLightningSegmenter`` is the
LightningModule-class variant."""

import torch
from torch import nn

from matcv.lightning_modules.segmentation import SegmentationEvaluation


class TinyFCN(nn.Module):
    def __init__(self, width: int = 8, classes: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.ReLU(),
            nn.Conv2d(width, classes, 1),
        )

    def forward(self, images):
        return self.body(images)


def build(width: int = 8, classes: int = 1) -> nn.Module:
    return TinyFCN(width, classes)


class TinyLightningSegmenter(SegmentationEvaluation):
    """A LightningModule class submission: the harness's contract (scoring from SegmentationEvaluation),
    its own training step and optimiser."""

    def __init__(self, lr: float = 3e-3, width: int = 4) -> None:
        super().__init__(num_classes=1)
        self.save_hyperparameters()
        self.net = TinyFCN(width)

    def forward(self, images):
        return self.net(images)

    def loss(self, logits, target):
        return nn.functional.binary_cross_entropy_with_logits(logits, target)

    def training_step(self, batch, batch_idx):
        return self.loss(self(batch["image"]), batch["mask"])

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
