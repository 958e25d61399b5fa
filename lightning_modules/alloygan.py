"""AlloyGAN and the standard cGAN (Yin 2024, Part IV), scored on alloys never seen in training.

One LightningModule, ``ConditionalGANTask``, with ``prior="alloygan"`` (the chemistry prior w of Table 7 applied
before one min-max scale over all element features, eq. 9) or ``prior="cgan"`` (every raw condition min-max
normalised on its own). The condition normaliser is fitted on the training alloys only
(``prepare_from_training_data``) and saved with the weights. Both models are DCGAN-style: conditions enter the
generator with the noise and the discriminator as extra image channels (eq. 10); Adam lr 2e-4, beta1 0.5, one
discriminator and one generator step per batch (manual optimisation).

Evaluation on the held-out alloys of a fold: one generated image per real test image, drawn with that image's
conditions (seeded), so generated and real sets have the same conditions.

* ``fid_domain`` / ``kid_domain``: torch-fidelity in the feature space of a CNN trained on the *training* alloys
  to tell their conditions apart (``matcv.lightning_modules.domain_features``; not Inception FID), over all test
  images ("overall", Table 8) and per test alloy (``fid_domain_alloywise`` mean and ``_std`` across alloys).
* the three domain metrics of Yin 2024, §5.6.5, measured on the images (``matcv.datamodules.measurements.alloy_measure``): the Si
  area fraction against Si wt% (Spearman ρ, slope, error against the generator's expected fraction), the
  secondary arm spacing against cooling rate (λ2 = k·CR^(−n): fitted n, R², and the share of images where λ2 is
  measurable at all), and the Sr/P effect (log2 change of
  Si particle count and size). ``RealHeldOutImages`` measures the real test images the same way: the ceiling.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from matcv.datamodules.core.atomic_io import save_figure
from matcv.datamodules.microstructure_images import to_uint8
from matcv.lightning_modules.alloygan_metrics import alloy_wise, domain_metrics, si_trend
from matcv.lightning_modules.alloygan_nets import ConditionalDiscriminator, ConditionalGenerator, ConditionEncoder
from matcv.lightning_modules.base import BenchmarkModule
from matcv.lightning_modules.domain_features import fid_kid_domain
from matcv.lightning_modules.microstructure_metrics import diversity_ratio, phase_indicator, s2_distance
from matcv.lightning_modules.microstructure_nets import diff_augment, resize_images
from matcv.lightning_modules.microstructure_scoring import fold_domain_extractor, seeded_samples

DOMAIN_METRICS = ("si_spearman", "si_slope", "si_fraction_mae", "lambda2_n", "lambda2_k", "lambda2_r2",
                  "srp_count_log2_ratio", "srp_size_log2_ratio")
MIN_IMAGES_FOR_ALLOY_FID = 4  # FID of fewer images per alloy is mostly noise


def measure_images(images: torch.Tensor) -> pd.DataFrame:
    """Per image: Si area fraction, λ2 (px), Si particle count per 10k px and mean particle area."""
    from matcv.datamodules.measurements.alloy_measure import secondary_arm_spacing, si_area_fraction, si_particle_stats

    rows = []
    for image in images[:, 0].cpu().numpy():
        particles = si_particle_stats(image)
        rows.append({"si_area_fraction": si_area_fraction(image), "lambda2_px": secondary_arm_spacing(image),
                     "particle_count_per_10k_px": particles["particle_count_per_10k_px"],
                     "mean_particle_area_px": particles["mean_particle_area_px"]})
    return pd.DataFrame(rows)


def si_fraction_spearman(images: torch.Tensor, conditions: torch.Tensor) -> float:
    """Spearman ρ of Si wt% (column 0 of the raw conditions (N, 8)) and the images' measured Si area fraction;
    NaN when undefined (fewer than two Si levels, or a constant fraction: a collapsed generator)."""
    from matcv.datamodules.measurements.alloy_measure import si_area_fraction

    fractions = [si_area_fraction(image) for image in images[:, 0].detach().cpu().numpy()]
    return si_trend(conditions[:, 0].detach().cpu().numpy(), fractions)["si_spearman"]


CONDITION_NAMES = ("Si", "Fe", "Cu", "Mn", "Mg", "Ni", "cooling_rate", "modified")


def expected_fractions(datamodule, item_ids: list[str]) -> np.ndarray | None:
    """The generator's true Si area fraction of each test item (NaN where unknown), None for data without one."""
    tables = getattr(datamodule, "tables", {})
    test = tables.get("test") if isinstance(tables, dict) else None
    if test is None or "si_area_fraction_expected" not in test.columns:
        return None
    by_item = dict(zip(test["image_path"], test["si_area_fraction_expected"].astype(float)))
    return np.array([by_item.get(i, math.nan) for i in item_ids])


def fid_scores(generated: torch.Tensor, real: torch.Tensor, alloys: np.ndarray,
               extractor_path) -> tuple[dict[str, float], dict[str, float]]:
    """FID/KID-domain over all test images and FID-domain per alloy (alloys with at least
    ``MIN_IMAGES_FOR_ALLOY_FID`` images): (scores, per-alloy FID)."""
    overall = fid_kid_domain(generated, real, extractor_path)
    per_alloy = {}
    for alloy in sorted(set(alloys)):
        chosen = torch.from_numpy(alloys == alloy)
        if int(chosen.sum()) >= MIN_IMAGES_FOR_ALLOY_FID:
            per_alloy[alloy] = fid_kid_domain(generated[chosen], real[chosen], extractor_path)["fid_domain"]
    mean, std = alloy_wise(per_alloy) if per_alloy else (math.nan, math.nan)
    return ({"fid_domain": overall["fid_domain"], "kid_domain": overall["kid_domain"],
             "fid_domain_alloywise": mean, "fid_domain_alloywise_std": std},
            {a: float(v) for a, v in per_alloy.items()})


def score_generated(generated: torch.Tensor, real: torch.Tensor, conditions: np.ndarray, item_ids: list[str],
                    alloys: list[str], expected: np.ndarray | None,
                    extractor_path=None) -> tuple[dict[str, float], pd.DataFrame, dict]:
    """A fold's scores of one generated image per real test image (same order, drawn at its raw ``conditions``
    (N, 8)): (fold summary, per-image table, details). The domain metrics come from the images measured here;
    FID/KID-domain (overall and alloy-wise) against ``real`` only with an ``extractor_path``, else NaN."""
    table = measure_images(generated)
    table.insert(0, "item_id", list(item_ids))
    table.insert(1, "alloy", list(alloys))
    for k, name in enumerate(CONDITION_NAMES):
        table[name] = conditions[:, k]
    if expected is not None:
        table["si_area_fraction_expected"] = expected
    summary = {name: float(value) for name, value in domain_metrics(table).items()}
    # λ2 is NaN on an image without a measurable dendrite pattern: how often it was measurable says whether a
    # generator draws dendrites at all (the fit above uses only the measurable ones).
    summary["lambda2_measurable"] = float(np.isfinite(table["lambda2_px"].to_numpy(float)).mean())
    details = {}
    if extractor_path is not None:
        scores, details["fid_domain_per_alloy"] = fid_scores(generated, real, np.array(alloys), extractor_path)
        summary.update(scores)
    else:
        summary.update({"fid_domain": math.nan, "kid_domain": math.nan, "fid_domain_alloywise": math.nan,
                        "fid_domain_alloywise_std": math.nan})
    return summary, table, details


class AlloyEvaluation(BenchmarkModule):
    """Test-time scoring shared by the GANs and the real-image ceiling (module doc).

    A subclass implements ``generate_for(conditions, generator) -> images`` (raw conditions (N, 8)).
    """

    monitor = "val_s2_distance"
    mode = "min"
    compares_to_real = True  # False: the images scored are the real ones (no FID against themselves)

    def __init__(self, sample_seed: int = 0, extractor_epochs: int = 15) -> None:
        super().__init__()
        self.sample_seed, self.extractor_epochs = sample_seed, extractor_epochs
        self.extractor_path: str | None = None
        self.fold_seed = 0
        self.test_results: list[dict] = []
        self._batches: list[dict] = []
        self._summary: dict[str, float] = {}
        self._details: dict = {}
        self._examples: tuple | None = None

    def prepare_from_training_data(self, datamodule) -> None:
        datamodule.setup("fit")
        self.fold_seed = int(datamodule.seed)
        self.extractor_path = str(fold_domain_extractor(datamodule, self.extractor_epochs))

    def generate_for(self, conditions: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define generate_for(conditions, generator)")

    def sample_for(self, conditions: torch.Tensor, seed: int) -> torch.Tensor:
        return seeded_samples(self, lambda generator: self.generate_for(conditions, generator), seed)

    def on_test_epoch_start(self) -> None:
        self.test_results, self._batches, self._summary, self._details = [], [], {}, {}

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._batches.append({"image": batch["image"].detach().cpu(), "conditions": batch["conditions"].detach().cpu(),
                              "item_id": list(batch["item_id"]), "alloy": list(batch["alloy"])})

    def on_test_epoch_end(self) -> None:
        real = torch.cat([b["image"] for b in self._batches])
        conditions = torch.cat([b["conditions"] for b in self._batches])
        item_ids = [i for b in self._batches for i in b["item_id"]]
        alloys = [a for b in self._batches for a in b["alloy"]]
        generated = self.sample_for(conditions, self.sample_seed * 1000 + self.fold_seed)
        raw = conditions.numpy()
        summary, table, details = score_generated(
            generated, real, raw, item_ids, alloys, self._expected_fractions(item_ids),
            self.extractor_path if self.compares_to_real else None)
        self._details.update(details)
        self._summary = summary
        self.test_results = table.to_dict("records")
        self._examples = (real, generated, alloys, raw)

    def _expected_fractions(self, item_ids: list[str]) -> np.ndarray | None:
        return expected_fractions(self.trainer.datamodule, item_ids)

    def test_summary(self) -> dict[str, float]:
        return dict(self._summary)

    def test_details(self) -> dict:
        return {"domain_extractor": Path(self.extractor_path).name if self.extractor_path else None, **self._details}

    def save_test_figure(self, path: Path, datamodule) -> Path | None:
        """Per held-out alloy, real (top) and generated (bottom) images at its conditions."""
        if self._examples is None:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        real, generated, alloys, raw = self._examples
        columns = []
        for alloy in dict.fromkeys(alloys):  # first occurrences, in order
            columns += [i for i, a in enumerate(alloys) if a == alloy][:3]
        columns = columns[:9]
        figure, axes = plt.subplots(2, len(columns), figsize=(1.9 * len(columns), 4.4), squeeze=False)
        for c, index in enumerate(columns):
            cond = raw[index]
            for r, images in enumerate((real, generated)):
                axes[r, c].imshow(to_uint8(images[index, 0]), cmap="gray", vmin=0, vmax=255)
                axes[r, c].set_xticks([])
                axes[r, c].set_yticks([])
            axes[0, c].set_title(f"{alloys[index]} {cond[6]:g} K/s{' Sr/P' if cond[7] > 0.5 else ''}", fontsize=7)
        axes[0, 0].set_ylabel("real (held out)", fontsize=8)
        axes[1, 0].set_ylabel("generated" if self.compares_to_real else "real", fontsize=8)
        figure.suptitle(f"{type(self).__name__}: unseen alloys", fontsize=9)
        figure.tight_layout()
        return save_figure(path, figure, dpi=90)


class ConditionalGANTask(AlloyEvaluation):
    """AlloyGAN (``prior="alloygan"``) or the standard cGAN (``prior="cgan"``); module doc.

    Small-budget options, off by default: ``image_size`` below the data's side trains both networks at that
    resolution (real images area-averaged down; samples enlarged back to the data's size before scoring);
    ``d_lr`` a separate discriminator learning rate (TTUR, Heusel et al. 2017); ``real_label`` < 1 one-sided
    label smoothing (Salimans et al. 2016); ``diff_augment`` randomly flips / shifts the images (not the
    condition planes) the discriminator sees, real and generated alike (Zhao et al. 2020)."""

    def __init__(self, prior: str = "alloygan", nz: int = 100, ngf: int = 64, ndf: int = 64, image_size: int = 128,
                 lr: float = 2e-4, beta1: float = 0.5, d_lr: float | None = None, real_label: float = 1.0,
                 diff_augment: bool = False, **evaluation) -> None:
        super().__init__(**evaluation)
        if not 0.5 < real_label <= 1.0:
            raise ValueError(f"real_label must be in (0.5, 1] (one-sided label smoothing), got {real_label}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.encoder = ConditionEncoder(prior)
        self.generator = ConditionalGenerator(nz=nz, n_conditions=8, ngf=ngf, image_size=image_size, channels=1)
        self.discriminator = ConditionalDiscriminator(n_conditions=8, ndf=ndf, image_size=image_size, channels=1)
        self._validation: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._seen_conditions: torch.Tensor | None = None
        self._data_shape: tuple[int, int] | None = None

    def prepare_from_training_data(self, datamodule) -> None:
        super().prepare_from_training_data(datamodule)
        train_conditions = datamodule.datasets["train"].conditions
        self._data_shape = tuple(int(s) for s in datamodule.datasets["train"].images.shape[-2:])
        self.encoder.fit(train_conditions)  # training alloys only
        self._seen_conditions = torch.unique(train_conditions.float(), dim=0)

    def forward(self, z: torch.Tensor, raw_conditions: torch.Tensor) -> torch.Tensor:
        return self.generator(z, self.encoder(raw_conditions))

    # The data's image size travels with the weights, so a checkpoint trained below it (``image_size``) still
    # generates at the data's size (``matcv generate``).
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self._data_shape is not None:
            checkpoint["data_image_shape"] = list(self._data_shape)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "data_image_shape" in checkpoint:
            self._data_shape = tuple(int(s) for s in checkpoint["data_image_shape"])

    def training_step(self, batch: dict, batch_idx: int) -> None:
        size = self.hparams.image_size
        real, y = resize_images(batch["image"], (size, size)), self.encoder(batch["conditions"])
        n = len(real)
        opt_g, opt_d = self.optimizers()
        fake = self.generator(torch.randn(n, self.hparams.nz, device=self.device), y)
        ones, zeros = torch.ones(n, device=self.device), torch.zeros(n, device=self.device)
        seen = diff_augment if self.hparams.diff_augment else (lambda images: images)
        d_real = self.discriminator(seen(real), y).reshape(-1)
        d_fake = self.discriminator(seen(fake.detach()), y).reshape(-1)
        loss_d = (F.binary_cross_entropy_with_logits(d_real, ones * self.hparams.real_label)
                  + F.binary_cross_entropy_with_logits(d_fake, zeros))
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()
        loss_g = F.binary_cross_entropy_with_logits(self.discriminator(seen(fake), y).reshape(-1), ones)
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()
        self.log_dict({"train_loss_d": loss_d, "train_loss_g": loss_g}, batch_size=n, on_epoch=True, on_step=False,
                      prog_bar=True)

    def on_validation_epoch_start(self) -> None:
        self._validation = []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._validation.append((batch["image"].detach().cpu(), batch["conditions"].detach().cpu()))

    def on_validation_epoch_end(self) -> None:
        """S2 (grey level, not periodic) of images generated for the validation alloys' conditions against the
        real validation images: the checkpoint is chosen on held-out alloys, never on the test ones.

        Also the learning curve of what the task measures (logged, never monitored): ``val_diversity`` of those
        images (-> 0 under mode collapse) and ``val_si_spearman``, the Spearman ρ of Si wt% and the generated
        images' Si (dark-phase) area fraction, over the validation conditions and — ``val_si_spearman_seen`` —
        over the training alloys' distinct conditions (does the generator follow Si at all, before asking it to
        extrapolate)."""
        real = torch.cat([images for images, _ in self._validation])
        conditions = torch.cat([c for _, c in self._validation])
        generated = self.sample_for(conditions, seed=self.sample_seed)  # the same noise every epoch
        distance = s2_distance(phase_indicator(generated, "grey"), phase_indicator(real, "grey"), periodic=False)
        self.log("val_s2_distance", distance, prog_bar=True)
        if len(real) >= 2:
            self.log("val_diversity", diversity_ratio(generated, real))
        self.log("val_si_spearman", si_fraction_spearman(generated, conditions))
        if self._seen_conditions is not None:
            seen = self.sample_for(self._seen_conditions, seed=self.sample_seed)
            self.log("val_si_spearman_seen", si_fraction_spearman(seen, self._seen_conditions))

    def generate_for(self, conditions: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn((len(conditions), self.hparams.nz), generator=generator).to(self.device)
        images = self(z, conditions.to(self.device, torch.float32))
        return resize_images(images, self._data_shape) if self._data_shape is not None else images

    def configure_optimizers(self):
        betas = (self.hparams.beta1, 0.999)
        d_lr = self.hparams.lr if self.hparams.d_lr is None else self.hparams.d_lr
        return [torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr, betas=betas),
                torch.optim.Adam(self.discriminator.parameters(), lr=d_lr, betas=betas)]


class RealHeldOutImages(AlloyEvaluation):
    """The ceiling: the real test images measured by the same domain metrics (no FID against themselves)."""

    requires_training = False
    compares_to_real = False

    def __init__(self, **evaluation) -> None:
        super().__init__(**evaluation)
        self.save_hyperparameters()

    def prepare_from_training_data(self, datamodule) -> None:
        self.fold_seed = int(datamodule.seed)  # no extractor: nothing is compared by FID

    def fit_baseline(self, datamodule) -> None:
        """Nothing to fit: the scored images are the test images themselves."""

    def on_test_epoch_end(self) -> None:
        self._current_real = torch.cat([b["image"] for b in self._batches])
        super().on_test_epoch_end()

    def generate_for(self, conditions: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self._current_real
