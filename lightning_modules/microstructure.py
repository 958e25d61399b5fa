"""Microstructure autoencoders and GANs (issue 5; SCIENCE.md §2, seed 002 §5–10), scored on held-out groups.

``GenerativeEvaluation`` owns what every model of the task shares, so an autoencoder, a VAE, DCGAN and the
real-image reference are scored by the same code:

* per test image (models that reconstruct): MSE, PSNR and SSIM of the reconstruction, images in [-1, 1]
  (data range 2);
* per fold, on ``n_samples`` generated images against the fold's real held-out (test) images:
  - ``s2_distance``: RMS difference of the mean two-point statistics S2 (FFT autocorrelation of the phase
    indicator / grey level) — the physically meaningful comparison of seed 002;
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

Generation is seeded (``sample_seed`` + fold), so a model's scores repeat exactly on the same CPU.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure

from matcv.datamodules.core.atomic_io import save_figure, save_png
from matcv.datamodules.microstructure_images import to_uint8
from matcv.datamodules.core.cache import default_cache_dir
from matcv.lightning_modules.domain_features import cached_domain_extractor, fid_kid_domain, inception_fid
from matcv.lightning_modules.microstructure_metrics import (
    diversity_ratio,
    grain_areas_from_boundaries,
    grain_size_distance,
    phase_indicator,
    s2_distance,
    two_point_statistics,
    volume_fraction_error,
)
from matcv.lightning_modules.microstructure_nets import (
    ConvVAE,
    DCGANDiscriminator,
    DCGANGenerator,
    build_seed_autoencoder,
    dcgan_weights_init,
    vae_loss,
)

DATA_RANGE = 2.0  # images live in [-1, 1]
RECONSTRUCTION_METRICS = ("mse", "psnr", "ssim")
SAMPLE_METRICS = ("s2_distance", "vf_error", "grain_size_distance", "diversity", "fid_domain", "kid_domain")


@torch.no_grad()
def seeded_samples(module: torch.nn.Module, draw, seed: int) -> torch.Tensor:
    """``draw(generator)``'s images with the module in eval mode (BatchNorm's running statistics, the same output
    for the same seed), as float CPU tensors clipped to [-1, 1]; the module's train/eval mode is restored."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    was_training = module.training
    module.eval()
    try:
        return draw(generator).detach().float().cpu().clamp(-1, 1)
    finally:
        module.train(was_training)


def reconstruction_scores(reconstructed: torch.Tensor, original: torch.Tensor) -> dict[str, np.ndarray]:
    """Per image: MSE, PSNR (dB, data range 2) and SSIM (torchmetrics, Gaussian window 11, data range 2)."""
    mse = ((reconstructed - original) ** 2).flatten(1).mean(1)
    psnr = 10.0 * torch.log10(DATA_RANGE**2 / mse.clamp_min(1e-12))
    ssim = structural_similarity_index_measure(reconstructed, original, data_range=DATA_RANGE, reduction="none")
    return {"mse": mse.cpu().numpy(), "psnr": psnr.cpu().numpy(), "ssim": ssim.reshape(-1).cpu().numpy()}


def fold_domain_extractor(datamodule, epochs: int) -> Path:
    """The fold's FID-domain feature extractor: trained on the set-up datamodule's *training* part (images and
    labels) with the fold's run seed, cached under the matcv cache (``cached_domain_extractor``), so every model
    of a fold, and the leaderboard's rescoring of a submission, use the same file."""
    train = datamodule.datasets["train"]
    return cached_domain_extractor(train.images, train.labels, datamodule.num_labels,
                                   seed=int(getattr(datamodule, "seed", 0)),
                                   cache_dir=default_cache_dir() / "domain-extractors", epochs=epochs)


def sample_scores(generated: torch.Tensor, real: torch.Tensor, image_kind: str, periodic: bool,
                  extractor_path: str | Path | None = None,
                  inception_weights_path: str | None = None) -> dict[str, float]:
    """Every fold-level sample metric of the module doc: generated vs real held-out images, both (N, 1, H, W) in
    [-1, 1]; FID/KID-domain NaN without an extractor."""
    fake_indicator, real_indicator = phase_indicator(generated, image_kind), phase_indicator(real, image_kind)
    scores = {
        "s2_distance": s2_distance(fake_indicator, real_indicator, periodic=periodic),
        "vf_error": volume_fraction_error(fake_indicator, real_indicator),
        "grain_size_distance": (grain_size_distance(fake_indicator, real_indicator, periodic=periodic)
                                if image_kind == "grain-boundary" else math.nan),
        "diversity": diversity_ratio(generated, real),
        "n_generated": float(len(generated)),
    }
    if extractor_path is not None:
        scores.update(fid_kid_domain(generated, real, extractor_path))
    else:
        scores.update({"fid_domain": math.nan, "kid_domain": math.nan})
    if inception_weights_path:
        scores.update(inception_fid(generated, real, inception_weights_path))
    return {name: float(value) for name, value in scores.items()}


class GenerativeEvaluation(L.LightningModule):
    """Test scoring, sampling metrics and figures shared by all microstructure models (module doc).

    A subclass implements ``generate(n, generator)`` and, if it reconstructs, ``reconstruct(images)``.
    """

    monitor = "val_mse"
    mode = "min"
    requires_training = True
    reconstructs = True
    ddp_find_unused_parameters = False

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
        self.fold_seed = int(getattr(datamodule, "seed", 0))
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


def tile(images: torch.Tensor, columns: int = 8, gap: int = 2) -> np.ndarray:
    """(N, 1, H, W) in [-1, 1] -> one uint8 grid image, white gaps between tiles."""
    pictures = to_uint8(images[:, 0])
    n, h, w = pictures.shape
    rows = max(1, math.ceil(n / columns))
    grid = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap), 255, np.uint8)
    for k in range(n):
        r, c = divmod(k, columns)
        grid[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = pictures[k]
    return grid


def _mean_s2_profiles(indicator: torch.Tensor, periodic: bool) -> tuple[np.ndarray, np.ndarray]:
    """S2 along x and along y through r = 0 of the set's mean S2 map, from r = 0 outwards."""
    s2 = two_point_statistics(indicator, periodic=periodic).mean(0).cpu().numpy()
    cy, cx = s2.shape[0] // 2, s2.shape[1] // 2
    return s2[cy, cx:], s2[cy:, cx]


def save_generation_figure(path: Path, real: torch.Tensor, reconstructed: torch.Tensor | None,
                           generated: torch.Tensor, image_kind: str, periodic: bool, title: str,
                           n_shown: int = 6) -> Path:
    """Rows of real / reconstructed / generated images, then S2 (and grain sizes) of real vs generated."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers and CI
    import matplotlib.pyplot as plt

    rows = [("real (held-out)", real[:n_shown])]
    if reconstructed is not None:
        rows.append(("reconstructed", reconstructed[:n_shown]))
    rows.append(("generated", generated[:n_shown]))
    plots = 2 if image_kind == "grain-boundary" else 1
    figure = plt.figure(figsize=(2.0 * n_shown, 2.1 * len(rows) + 3.0))
    grid = figure.add_gridspec(len(rows) + 1, max(n_shown, 2 * plots), height_ratios=[1] * len(rows) + [1.5])
    for r, (label, images) in enumerate(rows):
        for c in range(n_shown):
            axis = figure.add_subplot(grid[r, c])
            if c < len(images):
                axis.imshow(images[c, 0].numpy(), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if c == 0:
                axis.set_ylabel(label, fontsize=8)
    width = max(n_shown, 2 * plots) // plots
    real_ind, fake_ind = phase_indicator(real, image_kind), phase_indicator(generated, image_kind)
    axis = figure.add_subplot(grid[len(rows), 0:width])
    for name, indicator, style in (("real", real_ind, "-"), ("generated", fake_ind, "--")):
        along_x, along_y = _mean_s2_profiles(indicator, periodic)
        axis.plot(along_x, "C0" + style, label=f"{name}, along x")
        axis.plot(along_y, "C1" + style, label=f"{name}, along y")
    axis.set_xlabel("shift r (px)")
    axis.set_ylabel("S2(r)")
    axis.set_title("two-point statistics (mean over images)", fontsize=9)
    axis.legend(fontsize=7)
    if image_kind == "grain-boundary":
        axis = figure.add_subplot(grid[len(rows), width:2 * width])
        for name, indicator in (("real", real_ind), ("generated", fake_ind)):
            areas = np.concatenate([grain_areas_from_boundaries(b.numpy() > 0.5, periodic) for b in indicator]
                                   or [np.zeros(0)])
            if len(areas):
                axis.hist(np.log10(areas), bins=30, alpha=0.5, density=True, label=f"{name} ({len(areas)} grains)")
        axis.set_xlabel("log10 grain area (px)")
        axis.set_title("grain-size distribution", fontsize=9)
        axis.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return save_figure(path, figure, dpi=90)


# --------------------------------------------------------------------------------------------------
# The models
# --------------------------------------------------------------------------------------------------

class AutoencoderTask(GenerativeEvaluation):
    """One of the seed's convolutional autoencoders (layer tables of §5–9), MSE loss, Adam.

    Sampling "from the latent space" (seed §5, §7): the encoder's outputs on the training part are fitted
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
            raise ValueError(f"the seed's {self.hparams.architecture!r} autoencoder takes {expected[0]}x{expected[1]} "
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
                 **evaluation):
        super().__init__(**evaluation)
        self.save_hyperparameters()
        self.net = ConvVAE(image_size=tuple(image_size), latent_dim=latent_dim, channels=tuple(channels), beta=beta)

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

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        total, mse, kl = self._losses(batch["image"])
        n = len(batch["image"])
        self.log_dict({"val_loss": total, "val_mse": mse, "val_kl": kl}, batch_size=n, sync_dist=True)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        mu, _ = self.net.encode(images)
        return self.net.decode(mu)  # the mean reconstruction: deterministic

    def generate(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.net.decode(torch.randn((n, self.hparams.latent_dim), generator=generator).to(self.device))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class DCGANTask(GenerativeEvaluation):
    """DCGAN (Radford et al. 2016; seed 002 §10): BCE-with-logits adversarial losses, one Adam per network
    (lr 2e-4, beta1 0.5), manual optimisation (one discriminator step, then one generator step per batch).

    The checkpoint is selected on ``val_s2_distance``: S2 of a fixed set of samples against the validation
    images, because a GAN's losses say little about its samples.
    """

    monitor = "val_s2_distance"
    reconstructs = False

    def __init__(self, image_size: int = 128, nz: int = 100, ngf: int = 64, ndf: int = 64, lr: float = 2e-4,
                 beta1: float = 0.5, n_validation_samples: int = 32, **evaluation):
        super().__init__(**evaluation)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = DCGANGenerator(nz=nz, ngf=ngf, image_size=image_size, channels=1)
        self.discriminator = DCGANDiscriminator(ndf=ndf, image_size=image_size, channels=1)
        self.generator.apply(dcgan_weights_init)
        self.discriminator.apply(dcgan_weights_init)
        self._validation_images: list[torch.Tensor] = []

    def check_image_shape(self, shape: tuple[int, int]) -> None:
        size = self.hparams.image_size
        if tuple(shape) != (size, size):
            raise ValueError(f"DCGANTask was built for {size}x{size} images, the data has {shape[0]}x{shape[1]}: "
                             f"set image_size (64 or 128) in the model's args")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        real = batch["image"]
        n = len(real)
        opt_g, opt_d = self.optimizers()
        fake = self.generator(torch.randn(n, self.hparams.nz, device=self.device))
        ones, zeros = torch.ones(n, device=self.device), torch.zeros(n, device=self.device)
        d_real = self.discriminator(real).reshape(-1)
        d_fake = self.discriminator(fake.detach()).reshape(-1)
        loss_d = F.binary_cross_entropy_with_logits(d_real, ones) + F.binary_cross_entropy_with_logits(d_fake, zeros)
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()
        loss_g = F.binary_cross_entropy_with_logits(self.discriminator(fake).reshape(-1), ones)
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
        return self.generator(torch.randn((n, self.hparams.nz), generator=generator).to(self.device))

    def configure_optimizers(self):
        betas = (self.hparams.beta1, 0.999)
        return [torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr, betas=betas),
                torch.optim.Adam(self.discriminator.parameters(), lr=self.hparams.lr, betas=betas)]


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
