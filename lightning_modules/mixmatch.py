"""MixMatch (Berthelot et al. 2019): a rater that also learns from unlabelled photos of the dataset.

Yin 2024 (PhD dissertation, WPI; Yin et al., BMVC 2021) rate scribed panels from a few hundred rated photos and
try MixMatch with unlabelled photos. Each training step follows Algorithm 1 of Berthelot et al. (2019):

1. the labelled batch (already augmented by the DataModule) with one-hot targets;
2. K augmentations of each unlabelled photo (the DataModule's ``PhotoViews``);
3. label guessing: the model's class probabilities averaged over the K views, sharpened with temperature T;
4. the labelled and all K x unlabelled examples are shuffled together (W) and each is MixUp-ed with a partner of
   W, the mixing weight lambda' = max(lambda, 1 - lambda), lambda ~ Beta(alpha, alpha), so a mixed example stays
   closer to its own input (per example, as the authors' code does);
5. loss = cross-entropy on the mixed labelled examples + lambda_u x ramp x mean squared error between the
   predicted and the mixed guessed probabilities of the mixed unlabelled ones (Eq. 4-5), ramp rising linearly
   from 0 to 1 over the first ``rampup_fraction`` of the training steps.

Not taken over from the authors' CIFAR set-up: the exponential moving average of the weights and their weight
decay (the other raters of the benchmark use neither, so the comparison isolates the unlabelled photos).

Why written here: the maintained implementation, USB (``semilearn``, Wang et al. 2022), runs MixMatch inside its
own trainer (``AlgorithmBase``: argparse settings, its own loop and hooks, tensorboard/wandb/aim loggers,
transformers and torchaudio among its requirements) and draws MixUp from numpy's unseeded global RNG; its step
cannot be called from a Lightning module. The algorithm itself is a few lines (below, tested on hand-computed
cases in tests/test_mixmatch.py); randomness comes from torch's global RNG, which the harness seeds.

Unlabelled photos come from the dataset's own manifest (empty rating cells): the DataModule hands a model with
``uses_unlabelled = True`` batches ``{"labelled": ..., "unlabelled": ...}``, each unlabelled photo as K views,
and keeps out the unlabelled photos of the panels held out for validation and test. A fold without unlabelled
photos trains supervised only (plain cross-entropy, said once in the log).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from matcv.lightning_modules.rating import RatingTask

log = logging.getLogger(__name__)


def sharpen(probabilities: torch.Tensor, temperature: float) -> torch.Tensor:
    """Sharpen(p, T)_i = p_i^(1/T) / sum_j p_j^(1/T) over the last dimension (Berthelot et al. 2019, Eq. 7)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    powered = probabilities.clamp_min(0) ** (1.0 / temperature)
    return powered / powered.sum(-1, keepdim=True)


def mixup(x1: torch.Tensor, y1: torch.Tensor, x2: torch.Tensor, y2: torch.Tensor,
          lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MixMatch's MixUp (Eq. 8-11): lambda' = max(lambda, 1 - lambda) per example, x' = lambda' x1 + (1 - lambda')
    x2, likewise the targets; ``lam`` has one value per example (first dimension)."""
    lam = torch.maximum(lam, 1 - lam)
    lx = lam.view(-1, *([1] * (x1.dim() - 1))).to(x1.dtype)
    ly = lam.view(-1, *([1] * (y1.dim() - 1))).to(y1.dtype)
    return lx * x1 + (1 - lx) * x2, ly * y1 + (1 - ly) * y2


def guess_labels(view_probabilities: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, K, C) class probabilities of K augmentations of B unlabelled photos -> their sharpened mean (B, C)."""
    return sharpen(view_probabilities.mean(1), temperature)


def mix_batches(x: torch.Tensor, p: torch.Tensor, u: torch.Tensor, q: torch.Tensor, lam: torch.Tensor,
                order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Steps 4-6 of Algorithm 1: X' = MixUp(X̂, W[:|X̂|]), U' = MixUp(Û, W[|X̂|:]) with W = concat(X̂, Û) in
    ``order`` (a permutation); ``lam`` one value per example of concat(X̂, Û). Returns (X', p', U', q')."""
    inputs, targets = torch.cat([x, u]), torch.cat([p, q])
    mixed_x, mixed_y = mixup(inputs, targets, inputs[order], targets[order], lam)
    n = len(x)
    return mixed_x[:n], mixed_y[:n], mixed_x[n:], mixed_y[n:]


def linear_rampup(step: int, length: float) -> float:
    """0 at step 0, rising linearly to 1 at ``length`` steps, 1 after (1 at once when ``length`` <= 0)."""
    return 1.0 if length <= 0 else float(min(max(step / length, 0.0), 1.0))


class MixMatchRater(RatingTask):
    """A timm backbone with a cross-entropy head, trained with MixMatch on the fold's labelled and unlabelled
    photos (module doc). Evaluated exactly as ``RatingTask`` (validation QWK, test per photo)."""

    uses_unlabelled = True  # the DataModule then adds unlabelled batches to the training batches

    def __init__(
        self,
        backbone: str = "resnet18",
        ratings: Sequence[int] = (5, 6, 7, 8, 9),
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        k_augmentations: int = 2,
        temperature: float = 0.5,
        alpha: float = 0.75,
        lambda_u: float = 75.0,
        rampup_fraction: float = 0.4,
        in_channels: int = 3,
        pretrained: str = "none",
        weights_path: str | None = None,
        pretrained_on: str | None = None,
        backbone_args: dict | None = None,
    ) -> None:
        # Soft (guessed, mixed) targets need class probabilities: the cross-entropy head only.
        super().__init__(backbone=backbone, head="ce", ratings=ratings, in_channels=in_channels, lr=lr,
                         weight_decay=weight_decay, pretrained=pretrained, weights_path=weights_path,
                         pretrained_on=pretrained_on, backbone_args=backbone_args)
        if k_augmentations < 1 or temperature <= 0 or alpha <= 0 or lambda_u < 0 or not 0 <= rampup_fraction <= 1:
            raise ValueError("MixMatch needs k_augmentations >= 1, temperature > 0, alpha > 0, lambda_u >= 0 and "
                             f"0 <= rampup_fraction <= 1; got {k_augmentations}, {temperature}, {alpha}, "
                             f"{lambda_u}, {rampup_fraction}")
        # (RatingTask's save_hyperparameters already holds these arguments too: Lightning collects the whole
        # chain of constructors' arguments.)
        self.unlabelled_offered = 0
        self._unlabelled_seen: set[str] = set()
        self._said_supervised = False

    @property
    def unlabelled_views(self) -> int:
        """K: augmentations per unlabelled photo, asked by the DataModule's unlabelled loader."""
        return int(self.hparams.k_augmentations)

    def prepare_from_training_data(self, datamodule) -> None:
        self.unlabelled_offered = int(getattr(datamodule, "n_unlabelled", 0))

    def on_train_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None:
            self.unlabelled_offered = int(getattr(datamodule, "n_unlabelled", 0))
        if not self.unlabelled_offered and not self._said_supervised:
            self._said_supervised = True
            log.warning("MixMatch: this fold has no unlabelled photos (rows with an empty rating whose panel is not "
                        "held out): training on the labelled photos only, with plain cross-entropy")

    def _rampup_steps(self) -> float:
        trainer = getattr(self, "_trainer", None)
        total = getattr(trainer, "estimated_stepping_batches", None) if trainer is not None else None
        if total is None or not math.isfinite(total):
            return 0.0
        return self.hparams.rampup_fraction * float(total)

    def mixmatch_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        """Algorithm 1 on one batch ``{"labelled": ..., "unlabelled": ...}``: the loss and its parts."""
        labelled, unlabelled = batch["labelled"], batch["unlabelled"]
        x = labelled["image"]
        p = F.one_hot(self.rating_index(labelled["rating"]), self.num_classes).to(x.dtype)
        views = unlabelled["image"]  # (B, K, C, H, W)
        b, k = views.shape[:2]
        u = views.flatten(0, 1)
        with torch.no_grad():  # the guesses are targets: no gradient through them
            q = guess_labels(F.softmax(self(u), dim=1).view(b, k, -1), self.hparams.temperature)
        q = q.repeat_interleave(k, dim=0)  # every view of a photo takes the photo's guess
        n = len(x) + len(u)
        alpha = torch.tensor(float(self.hparams.alpha))
        lam = torch.distributions.Beta(alpha, alpha).sample((n,)).to(x.device)
        order = torch.randperm(n).to(x.device)
        mixed_x, mixed_p, mixed_u, mixed_q = mix_batches(x, p, u, q, lam, order)
        # One forward over all mixed examples: BatchNorm sees labelled and unlabelled inputs in one batch.
        logits = self(torch.cat([mixed_x, mixed_u]))
        logits_x, logits_u = logits[: len(x)], logits[len(x):]
        loss_x = -(mixed_p * F.log_softmax(logits_x, dim=1)).sum(1).mean()
        loss_u = F.mse_loss(F.softmax(logits_u, dim=1), mixed_q)  # mean over photos and classes: 1/(L |U'|)
        weight = self.hparams.lambda_u * linear_rampup(self.global_step, self._rampup_steps())
        self._unlabelled_seen.update(unlabelled["item_id"])
        return {"loss": loss_x + weight * loss_u, "loss_x": loss_x, "loss_u": loss_u,
                "lambda_u": torch.tensor(weight)}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if "labelled" not in batch:  # a fold without unlabelled photos: supervised (on_train_start said so)
            return super().training_step(batch, batch_idx)
        if "unlabelled" not in batch or batch["unlabelled"] is None:
            return super().training_step(batch["labelled"], batch_idx)
        parts = self.mixmatch_loss(batch)
        size = len(batch["labelled"]["image"])
        self.log("train_loss", parts["loss"], batch_size=size, on_epoch=True, on_step=False, prog_bar=True,
                 sync_dist=True)
        for name in ("loss_x", "loss_u", "lambda_u"):
            self.log(f"train_{name}", parts[name], batch_size=size, on_epoch=True, on_step=False, sync_dist=True)
        return parts["loss"]

    def test_details(self) -> dict:
        # The record says how many unlabelled photos the fold offered and how many training drew at least once.
        return {**super().test_details(),
                "unlabelled": {"photos": self.unlabelled_offered, "photos_seen": len(self._unlabelled_seen),
                               "k_augmentations": self.unlabelled_views}}

    def figure_title(self) -> str:
        return f"{self.hparams.backbone} / MixMatch"
