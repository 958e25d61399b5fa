"""Microstructure autoencoders and GANs, scored on held-out groups.

``GenerativeEvaluation`` owns what every model of the task shares, so an autoencoder, a VAE, DCGAN and the
real-image reference are scored by the same code:

* per test image (models that reconstruct): MSE, PSNR and SSIM of the reconstruction, images in [-1, 1]
  (data range 2);
* per fold, on ``n_samples`` generated images against the fold's real held-out (test) images:
  - ``s2_distance``: RMS difference of the mean two-point statistics S2 (FFT autocorrelation of the phase
    indicator / grey level) — the physically meaningful comparison;
  - ``vf_error``: |volume fraction generated − real| of the phase indicator (phase 1 / boundary pixels /
    grey level);
  - ``grain_size_distance``: Wasserstein-1 distance of log10 grain areas (decades), grain-boundary sources
    only (NaN elsewhere);
  - ``diversity``: mean pairwise distance of generated samples over that of real images (≈ 1 as diverse
    as the data; → 0 mode collapse);
  - ``fid_domain`` / ``kid_domain``: FID / KID (torch-fidelity) in the feature space of a CNN trained on the
    *training* part to tell its labels apart (``matcv.lightning_modules.domain_features``), never Inception FID;
    ``fid_inception`` too when ``inception_weights_path`` names a local weights file.
* ``save_test_figure``: real | reconstructed | generated images, S2 of real vs generated, and (Potts) the
  grain-size distributions; ``samples.png`` (an 8×8 grid of generated images) beside it.

Generation is seeded (``sample_seed`` + fold), so a model's scores repeat exactly on the same CPU. The scoring
functions are in ``microstructure_scoring`` (the leaderboard rescoring submissions calls them too), the figures
in ``microstructure_figures``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from matcv.datamodules.core.atomic_io import save_png
from matcv.lightning_modules.base import BenchmarkModule
from matcv.lightning_modules.microstructure_figures import save_generation_figure, tile
from matcv.lightning_modules.microstructure_metrics import diversity_ratio, phase_indicator, s2_distance
from matcv.lightning_modules.microstructure_nets import (
    ConvVAE,
    DCGANDiscriminator,
    DCGANGenerator,
    build_seed_autoencoder,
    dcgan_weights_init,
    diff_augment,
    resize_images,
    spectral_normalize,
    vae_loss,
)
from matcv.lightning_modules.microstructure_scoring import (
    RECONSTRUCTION_METRICS,
    fold_domain_extractor,
    reconstruction_scores,
    sample_scores,
    seeded_samples,
)


class GenerativeEvaluation(BenchmarkModule):
    """Test scoring, sampling metrics and figures shared by all microstructure models (module doc).

    A subclass implements ``generate(n, generator)`` and, if it reconstructs, ``reconstruct(images)``.
    """

    monitor = "val_mse"
    mode = "min"
    reconstructs = True

    def __init__(self, n_samples: int | None = None, sample_seed: int = 0, extractor_epochs: int = 15,
                 inception_weights_path: str | None = None) -> None:
        super().__init__()
        self.n_samples, self.sample_seed = n_samples, sample_seed
        self.extractor_epochs, self.inception_weights_path = extractor_epochs, inception_weights_path
        self.image_kind, self.periodic = "grey", False
        self.image_shape: tuple[int, int] | None = None
        self.extractor_path: str | None = None
        self.fold_seed = 0
        self.test_results: list[dict] = []
        self._real: list[torch.Tensor] = []
        self._reconstructed: list[torch.Tensor] = []
        self._generated: torch.Tensor | None = None
        self._summary: dict[str, float] = {}

    # ---- what the training part tells the evaluation ----
    def prepare_from_training_data(self, datamodule) -> None:
        """Read how the source's images are scored, check their size, and train (or reuse) the fold's
        domain feature extractor on the training part only."""
        datamodule.setup("fit")
        self.image_kind, self.periodic = datamodule.image_kind, bool(datamodule.periodic)
        self.image_shape = tuple(int(s) for s in datamodule.image_shape)
        self.check_image_shape(self.image_shape)
        self.fold_seed = int(datamodule.seed)
        if datamodule.num_labels >= 2:  # one class gives the extractor nothing to learn
            self.extractor_path = str(fold_domain_extractor(datamodule, self.extractor_epochs))

    def check_image_shape(self, shape: tuple[int, int]) -> None:
        """A subclass with a fixed input size raises here, naming the size it needs."""

    # ---- what a subclass provides ----
    def generate(self, n: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define generate(n, generator)")

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not reconstruct images")

    # ---- test ----
    def on_test_epoch_start(self) -> None:
        self.test_results, self._real, self._reconstructed = [], [], []
        self._generated, self._summary = None, {}

    def test_step(self, batch: dict, batch_idx: int) -> None:
        images = batch["image"]
        self._real.append(images.detach().cpu())
        rows = [{"item_id": item} for item in batch["item_id"]]
        if self.reconstructs:
            reconstructed = self.reconstruct(images).clamp(-1, 1)
            self._reconstructed.append(reconstructed.detach().cpu())
            scores = reconstruction_scores(reconstructed, images)
            for k, row in enumerate(rows):
                row.update({name: float(values[k]) for name, values in scores.items()})
        self.test_results.extend(rows)

    def sample(self, n: int, seed: int) -> torch.Tensor:
        return seeded_samples(self, lambda generator: self.generate(n, generator), seed)

    def on_test_epoch_end(self) -> None:
        real = torch.cat(self._real)
        n = self.n_samples or len(real)
        self._generated = self.sample(n, self.sample_seed * 1000 + self.fold_seed)
        self._summary = self.score_samples(self._generated, real)
        if not self.reconstructs:
            self._summary.update({name: math.nan for name in RECONSTRUCTION_METRICS})

    def score_samples(self, generated: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
        """Every fold-level sample metric of the module doc, generated vs real held-out images."""
        return sample_scores(generated, real, self.image_kind, self.periodic, self.extractor_path,
                             self.inception_weights_path)

    def test_summary(self) -> dict[str, float]:
        return dict(self._summary)

    def test_details(self) -> dict:
        """Which feature extractor scored the fold (one file per fold, shared by every model: the FID-domain
        of two models is comparable only if this matches) and how many samples were drawn."""
        return {"domain_extractor": Path(self.extractor_path).name if self.extractor_path else None,
                "n_generated": int(self._summary.get("n_generated", 0)), "image_kind": self.image_kind}

    # ---- figures ----
    def save_test_figure(self, path: Path, datamodule) -> Path | None:
        if self._generated is None or not self._real:
            return None
        path = Path(path)
        grid = tile(self._generated[:64], columns=8)
        save_png(path.with_name("samples.png"), grid)
        return save_generation_figure(path, torch.cat(self._real), torch.cat(self._reconstructed)
                                      if self._reconstructed else None, self._generated, self.image_kind,
                                      self.periodic, title=f"{type(self).__name__}: {self._caption()}")

    def _caption(self) -> str:
        parts = [f"{name} {self._summary[name]:.4g}" for name in ("s2_distance", "fid_domain", "diversity")
                 if name in self._summary and not math.isnan(self._summary[name])]
        return ", ".join(parts)


# --------------------------------------------------------------------------------------------------
# The models
# --------------------------------------------------------------------------------------------------

class AutoencoderTask(GenerativeEvaluation):
    """One of the convolutional autoencoders of Tran, Rodgers & Wildey 2020 (SAND2020-10580; layer tables of §5–9), MSE loss, Adam.

    Sampling "from the latent space" (Tran et al. 2020, §5, §7): the encoder's outputs on the training part are fitted
    by an independent Gaussian per latent element, and samples drawn from it (clamped at 0: the latent is
    a ReLU/max-pool output, never negative) are decoded. Fitted at test time from the training part only.
    """

    def __init__(self, architecture: str = "binary", lr: float = 1e-3, weight_decay: float = 0.0, **evaluation):
        super().__init__(**evaluation)
        self.save_hyperparameters()
        self.net = build_seed_autoencoder(architecture)
        self.register_buffer("latent_mean", torch.zeros(0), persistent=False)
        self.register_buffer("latent_std", torch.zeros(0), persistent=False)

    def check_image_shape(self, shape: tuple[int, int]) -> None:
        from matcv.lightning_modules.microstructure_nets import SEED_AUTOENCODERS

        expected = tuple(SEED_AUTOENCODERS[self.hparams.architecture][2])
        if tuple(shape) != expected:
            raise ValueError(f"the Sandia report's {self.hparams.architecture!r} autoencoder takes {expected[0]}x{expected[1]} "
                             f"images, the data has {shape[0]}x{shape[1]}: choose another architecture")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = F.mse_loss(self.net(batch["image"]), batch["image"])
        self.log("train_loss", loss, batch_size=len(batch["image"]), on_epoch=True, on_step=False, prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss = F.mse_loss(self.net(batch["image"]), batch["image"])
        self.log("val_mse", loss, batch_size=len(batch["image"]), prog_bar=True, sync_dist=True)

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self.fit_latent_distribution(self.trainer.datamodule.datasets["train"].images)

    @torch.no_grad()
    def fit_latent_distribution(self, train_images: torch.Tensor) -> None:
        latents = torch.cat([self.net.encode(chunk.to(self.device)) for chunk in train_images.split(64)])
        self.latent_mean, self.latent_std = latents.mean(0), latents.std(0, unbiased=False)

    def generate(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self.latent_mean.numel() == 0:
            raise RuntimeError("fit_latent_distribution(training images) must run before sampling")
        noise = torch.randn((n, *self.latent_mean.shape), generator=generator).to(self.device)
        images = self.net.decode((self.latent_mean + self.latent_std * noise).clamp_min(0.0))
        if self.net.resize_to_input and images.shape[-2:] != tuple(self.image_shape):
            # The §7 table's decoder ends at 112² for 128² inputs; forward() resizes the same way.
            images = F.interpolate(images, size=tuple(self.image_shape), mode="bilinear", align_corners=False)
        return images

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


class VAETask(GenerativeEvaluation):
    """A convolutional VAE (``ConvVAE``): reconstruction MSE + beta·KL, samples decoded from N(0, I).
    The checkpoint is selected on the validation loss (the same objective), not on MSE alone, which a VAE
    could lower by ignoring the prior."""

    monitor = "val_loss"

    def __init__(self, image_size: tuple[int, int] | list[int] = (128, 128), latent_dim: int = 32,
                 channels: tuple[int, ...] | list[int] = (16, 32, 64), beta: float = 1.0, lr: float = 1e-3,
                 n_validation_samples: int = 32, **evaluation):
        super().__init__(**evaluation)
        self.save_hyperparameters()
        self.net = ConvVAE(image_size=tuple(image_size), latent_dim=latent_dim, channels=tuple(channels), beta=beta)
        self._validation_images: list[torch.Tensor] = []

    def check_image_shape(self, shape: tuple[int, int]) -> None:
        if tuple(shape) != tuple(self.hparams.image_size):
            raise ValueError(f"VAETask was built for {tuple(self.hparams.image_size)} images, the data has {shape}: "
                             f"set image_size in the model's args")

    def _losses(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        reconstructed, mu, logvar = self.net(images)
        return vae_loss(reconstructed, images, mu, logvar, self.hparams.beta)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        total, mse, kl = self._losses(batch["image"])
        n = len(batch["image"])
        self.log_dict({"train_loss": total, "train_mse": mse, "train_kl": kl}, batch_size=n, on_epoch=True,
                      on_step=False)
        return total

    def on_validation_epoch_start(self) -> None:
        self._validation_images = []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        total, mse, kl = self._losses(batch["image"])
        n = len(batch["image"])
        self.log_dict({"val_loss": total, "val_mse": mse, "val_kl": kl}, batch_size=n, sync_dist=True)
        self._validation_images.append(batch["image"].detach().cpu())

    def on_validation_epoch_end(self) -> None:
        # The learning curve of the samples (not of the loss): diversity of decoded N(0, I) draws with the same
        # noise every epoch, against the validation images; -> 0 when the decoder ignores z (posterior collapse).
        real = torch.cat(self._validation_images)
        if len(real) >= 2:
            generated = self.sample(self.hparams.n_validation_samples, seed=self.sample_seed)
            self.log("val_diversity", diversity_ratio(generated, real), sync_dist=True)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        mu, _ = self.net.encode(images)
        return self.net.decode(mu)  # the mean reconstruction: deterministic

    def generate(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.net.decode(torch.randn((n, self.hparams.latent_dim), generator=generator).to(self.device))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class DCGANTask(GenerativeEvaluation):
    """DCGAN (Radford et al. 2016; Tran et al. 2020, §10): BCE-with-logits adversarial losses, one Adam per network
    (lr 2e-4, beta1 0.5), manual optimisation (one discriminator step, then one generator step per batch).

    The checkpoint is selected on ``val_s2_distance``: S2 of a fixed set of samples against the validation
    images, because a GAN's losses say little about its samples.

    Options for small CPU budgets, all off by default (the defaults are the paper's DCGAN):
    ``image_size`` smaller than the data (a power-of-two fraction of it) trains both networks at that resolution
    (real images area-averaged down) and scores samples enlarged back to the data's size; ``d_lr`` gives the
    discriminator its own learning rate (two time-scale update rule, Heusel et al. 2017); ``real_label`` < 1 is
    one-sided label smoothing (Salimans et al. 2016); ``spectral_norm`` normalises the discriminator's convs
    (Miyato et al. 2018); ``diff_augment`` shows the discriminator randomly flipped / shifted real and generated
    images (Zhao et al. 2020), against a discriminator that memorises a few dozen training images.
    """

    monitor = "val_s2_distance"
    reconstructs = False

    def __init__(self, image_size: int = 128, nz: int = 100, ngf: int = 64, ndf: int = 64, lr: float = 2e-4,
                 beta1: float = 0.5, n_validation_samples: int = 32, d_lr: float | None = None,
                 real_label: float = 1.0, spectral_norm: bool = False, diff_augment: bool = False, **evaluation):
        super().__init__(**evaluation)
        if not 0.5 < real_label <= 1.0:
            raise ValueError(f"real_label must be in (0.5, 1] (one-sided label smoothing), got {real_label}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = DCGANGenerator(nz=nz, ngf=ngf, image_size=image_size, channels=1)
        self.discriminator = DCGANDiscriminator(ndf=ndf, image_size=image_size, channels=1)
        self.generator.apply(dcgan_weights_init)
        self.discriminator.apply(dcgan_weights_init)
        if spectral_norm:
            spectral_normalize(self.discriminator)
        self._validation_images: list[torch.Tensor] = []

    def check_image_shape(self, shape: tuple[int, int]) -> None:
        size = self.hparams.image_size
        factor = shape[0] // size if shape[0] % size == 0 else 0
        if shape[0] != shape[1] or factor < 1 or factor & (factor - 1):
            raise ValueError(f"DCGANTask was built for {size}x{size} images, the data has {shape[0]}x{shape[1]}: "
                             f"set image_size (32, 64 or 128; the data's side or a power-of-two fraction of it)")

    # The data's image size travels with the weights: a checkpoint trained below it still samples at that size.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.image_shape is not None:
            checkpoint["data_image_shape"] = list(self.image_shape)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "data_image_shape" in checkpoint:
            self.image_shape = tuple(int(s) for s in checkpoint["data_image_shape"])

    def _net_size(self, images: torch.Tensor) -> torch.Tensor:
        size = self.hparams.image_size
        return resize_images(images, (size, size))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        real = self._net_size(batch["image"])
        n = len(real)
        opt_g, opt_d = self.optimizers()
        fake = self.generator(torch.randn(n, self.hparams.nz, device=self.device))
        ones, zeros = torch.ones(n, device=self.device), torch.zeros(n, device=self.device)
        seen = diff_augment if self.hparams.diff_augment else (lambda images: images)
        d_real = self.discriminator(seen(real)).reshape(-1)
        d_fake = self.discriminator(seen(fake.detach())).reshape(-1)
        loss_d = (F.binary_cross_entropy_with_logits(d_real, ones * self.hparams.real_label)
                  + F.binary_cross_entropy_with_logits(d_fake, zeros))
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()
        loss_g = F.binary_cross_entropy_with_logits(self.discriminator(seen(fake)).reshape(-1), ones)
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()
        self.log_dict({"train_loss_d": loss_d, "train_loss_g": loss_g,
                       "train_d_real": torch.sigmoid(d_real).mean(), "train_d_fake": torch.sigmoid(d_fake).mean()},
                      batch_size=n, on_epoch=True, on_step=False, prog_bar=True)

    def on_validation_epoch_start(self) -> None:
        self._validation_images = []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._validation_images.append(batch["image"].detach().cpu())

    def on_validation_epoch_end(self) -> None:
        real = torch.cat(self._validation_images)
        generated = self.sample(self.hparams.n_validation_samples, seed=self.sample_seed)  # the same z every epoch
        indicator = phase_indicator(real, self.image_kind)
        distance = s2_distance(phase_indicator(generated, self.image_kind), indicator, periodic=self.periodic)
        self.log("val_s2_distance", distance, prog_bar=True, sync_dist=True)
        self.log("val_diversity", diversity_ratio(generated, real), sync_dist=True)

    def generate(self, n: int, generator: torch.Generator) -> torch.Tensor:
        images = self.generator(torch.randn((n, self.hparams.nz), generator=generator).to(self.device))
        return resize_images(images, self.image_shape) if self.image_shape is not None else images

    def configure_optimizers(self):
        betas = (self.hparams.beta1, 0.999)
        d_lr = self.hparams.lr if self.hparams.d_lr is None else self.hparams.d_lr
        return [torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr, betas=betas),
                torch.optim.Adam(self.discriminator.parameters(), lr=d_lr, betas=betas)]


class TrainingImagesReference(GenerativeEvaluation):
    """Not a model: "generates" by drawing real images of the *training* part, so its sample metrics are
    what a generator that reproduced the training data exactly would score against held-out groups — the
    reference every generator's row should be read against (it is not zero: held-out settings differ)."""

    requires_training = False
    reconstructs = False

    def __init__(self, **evaluation):
        super().__init__(**evaluation)
        self.save_hyperparameters()
        self._train_images: torch.Tensor | None = None

    def fit_baseline(self, datamodule) -> None:
        self._train_images = datamodule.datasets["train"].images

    def generate(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self._train_images is None:
            raise RuntimeError("fit_baseline(datamodule) must run before sampling")
        # With replacement only when the training part is smaller than the request.
        count = len(self._train_images)
        index = (torch.randperm(count, generator=generator)[:n] if n <= count
                 else torch.randint(count, (n,), generator=generator))
        return self._train_images[index]
