"""A user's own 3-D localization networks, outside matcv.

``build`` returns a plain ``nn.Module`` mapping centred phases (B, 1, N, N, N) to a standardised strain field
(B, 1, N, N, N): a tiny fully convolutional net with circular padding (the volumes are periodic).
``TinyLightningLocalizer`` is the LightningModule-class variant (a ``LocalizationEvaluation`` subclass with its
own training step and optimiser); ``RidgeMKS`` subclasses the built-in MKS baseline (fitted in closed form).
"""

import torch
from torch import nn

from matcv.lightning_modules.localization import PHASE_CENTRE, LocalizationEvaluation, MKSTask


class TinyPeriodicConvNet(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(1, width, 3, padding=1, padding_mode="circular"), nn.ReLU(),
            nn.Conv3d(width, width, 3, padding=2, dilation=2, padding_mode="circular"), nn.ReLU(),
            nn.Conv3d(width, 1, 1),
        )

    def forward(self, phases):
        return self.body(phases)


def build(width: int = 4) -> nn.Module:
    return TinyPeriodicConvNet(width)


def build_wrong_shape(width: int = 4) -> nn.Module:
    """A factory whose network breaks the contract: it drops the channel axis."""
    return nn.Sequential(TinyPeriodicConvNet(width), nn.Flatten(1, 2))


class TinyLightningLocalizer(LocalizationEvaluation):
    """A LightningModule-class submission: scoring (and standardisation) from LocalizationEvaluation."""

    def __init__(self, lr: float = 3e-3, width: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = TinyPeriodicConvNet(width)

    def predict_normalized(self, microstructure):
        return self.net(microstructure - PHASE_CENTRE)

    def training_step(self, batch, batch_idx):
        predicted = self.predict_normalized(batch["microstructure"])
        return nn.functional.mse_loss(predicted, self.normalize_strain(batch["strain"]))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class RidgeMKS(MKSTask):
    """The built-in first-order MKS with a ridge penalty by default."""

    def __init__(self, regularization: float = 1e-3) -> None:
        super().__init__(regularization=regularization)
