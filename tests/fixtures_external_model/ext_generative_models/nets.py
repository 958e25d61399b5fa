"""A user's own generative models, outside matcv, submitted as LightningModule classes (the only form the
generative tasks accept): ``TinyAutoencoder`` reconstructs and samples microstructure images (a
``GenerativeEvaluation`` subclass); ``TinyAlloyGAN`` is a narrow conditional GAN for the AlloyGAN task (a
``ConditionalGANTask``, hence ``AlloyEvaluation``, subclass)."""

import torch
from torch import nn

from matcv.lightning_modules.alloygan import ConditionalGANTask
from matcv.lightning_modules.microstructure import GenerativeEvaluation


class TinyAutoencoder(GenerativeEvaluation):
    """Two stride-2 convolutions down, two up; samples are decoded from standard normal latent maps."""

    def __init__(self, width: int = 4, latent_channels: int = 2, lr: float = 3e-3, **evaluation) -> None:
        super().__init__(**evaluation)
        self.save_hyperparameters()
        self.encoder = nn.Sequential(nn.Conv2d(1, width, 3, 2, 1), nn.ReLU(),
                                     nn.Conv2d(width, latent_channels, 3, 2, 1))
        self.decoder = nn.Sequential(nn.ConvTranspose2d(latent_channels, width, 4, 2, 1), nn.ReLU(),
                                     nn.ConvTranspose2d(width, 1, 4, 2, 1), nn.Tanh())

    def check_image_shape(self, shape):
        if shape[0] % 4 or shape[1] % 4:
            raise ValueError(f"TinyAutoencoder needs image sides divisible by 4, got {shape}")

    def reconstruct(self, images):
        return self.decoder(self.encoder(images))

    def generate(self, n, generator):
        height, width = self.image_shape
        z = torch.randn((n, self.hparams.latent_channels, height // 4, width // 4), generator=generator)
        return self.decoder(z.to(self.device))

    def training_step(self, batch, batch_idx):
        return nn.functional.mse_loss(self.reconstruct(batch["image"]), batch["image"])

    def validation_step(self, batch, batch_idx):
        loss = nn.functional.mse_loss(self.reconstruct(batch["image"]), batch["image"])
        self.log("val_mse", loss, batch_size=len(batch["image"]))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class TinyAlloyGAN(ConditionalGANTask):
    """AlloyGAN (chemistry prior) with a 4-channel-wide generator and discriminator and an 8-d noise vector."""

    def __init__(self, nz: int = 8, ngf: int = 4, ndf: int = 4, **kwargs) -> None:
        super().__init__(prior="alloygan", nz=nz, ngf=ngf, ndf=ndf, **kwargs)


def build(width: int = 4) -> nn.Module:
    """A factory (a plain ``nn.Module``): the generative tasks refuse this form, they take LightningModule classes."""
    return nn.Sequential(nn.ConvTranspose2d(8, width, 4, 1, 0), nn.ReLU(), nn.ConvTranspose2d(width, 1, 4, 2, 1),
                         nn.Tanh())
