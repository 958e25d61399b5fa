"""Segment AND rate: one smp encoder, a segmentation decoder on the corrosion mask and a rating head on its
deepest features, trained jointly.

Yin 2024 (Part II, future work) asks for a model that learns the corrosion mask and the rating together: the
mask tells the encoder *where* the creep is, which ~100 ratings alone barely can. ``SegmentAndRate`` is that
model: an smp network (``arch``, default UNet; ``encoder_name``, default resnet18) whose encoder feeds both
its own decoder (Dice + BCE on the mask, as ``SmpSegmentationTask``) and, through global average pooling, a
rating head of ``lightning_modules.ordinal`` (``ce``, ``coral`` or ``corn``). The loss is
``rating loss + mask_weight * (BCE + Dice)``; the checkpoint is chosen on ``val_qwk`` as every rater's.

Its batches need photo, rating and mask together, which the rating task's DataModule (``target: rating``) does
not give: ``prepare_from_training_data`` builds the same fold with ``target: rating+mask`` (same items, order,
training statistics and augmentation: checked) and puts its partitions in the run's DataModule, so the
harness's Trainer trains on them. Scored as every rater (``RatingEvaluation``); each test record also carries
the ``dice`` and ``iou`` of its predicted mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from matcv.datamodules.corrosion import CorrosionPanelsDataModule
from matcv.lightning_modules.edge_losses import RegionLoss
from matcv.lightning_modules.ordinal import HEADS, head_decode, make_head
from matcv.lightning_modules.pretrained_weights import create_smp_model
from matcv.lightning_modules.rating import RatingTask
from matcv.lightning_modules.segmentation import per_image_dice_iou


def panel_datamodule_like(datamodule, target: str, batch_size: int | None = None) -> CorrosionPanelsDataModule:
    """The run's fold as a corrosion-panel DataModule of another ``target`` ("mask", "rating+mask"): the same
    data, fold manifest, seed, image size, augmentation and rating classes as ``datamodule``."""
    if not isinstance(datamodule, CorrosionPanelsDataModule):
        raise TypeError(f"the corrosion masks are read by CorrosionPanelsDataModule; this run's DataModule is "
                        f"{type(datamodule).__name__}")
    settings = datamodule.hparams
    if settings.get("labels") is not None:
        raise ValueError("a classification's labels (dataset.yaml) have no corrosion masks: a model that learns the "
                         "mask needs the corrosion panels' manifest (mask_path and rating columns)")
    twin = CorrosionPanelsDataModule(
        fold_manifest_path=datamodule.fold_manifest_path, fold=datamodule.fold, data_root=datamodule.data_root,
        seed=datamodule.seed, target=target, image_size=datamodule.image_size,
        batch_size=batch_size or datamodule.batch_size, num_workers=datamodule.num_workers,
        augment=datamodule.augment, augmentation=datamodule.augmentation,
        rating_classes=settings.get("rating_classes"))
    if hasattr(datamodule, "train_fraction"):  # a learning curve's run: the same share of the training groups
        twin.train_fraction = datamodule.train_fraction
    return twin


def give_masks(datamodule) -> None:
    """Replace the partitions of the run's (set-up) rating DataModule by those of its ``rating+mask`` twin, after
    checking that they hold the same photos in the same order, standardised by the same statistics."""
    twin = panel_datamodule_like(datamodule, "rating+mask")
    twin.setup("fit")
    for partition in ("train", "val", "test"):
        ours, theirs = datamodule.datasets[partition], twin.datasets[partition]
        if list(ours.item_ids) != list(theirs.item_ids):
            raise RuntimeError(f"the rating+mask DataModule's {partition} part differs from the run's "
                               f"({len(theirs.item_ids)} vs {len(ours.item_ids)} photos, or another order)")
        if not (np.allclose(ours.mean, theirs.mean) and np.allclose(ours.std, theirs.std)):
            raise RuntimeError(f"the rating+mask DataModule standardises the {partition} photos differently")
    datamodule.datasets.update(twin.datasets)


class SegmentAndRate(RatingTask):
    """One smp encoder, two heads (mask, rating), one joint loss weighted by ``mask_weight``.

    ``pretrained`` / ``weights_path`` / ``pretrained_on`` start the encoder as ``SmpSegmentationTask``'s
    (``lightning_modules.pretrained_weights``), recorded in ``details["weights"]``.
    """

    def __init__(self, head: str = "ce", ratings: Sequence[int] = (5, 6, 7, 8, 9), arch: str = "unet",
                 encoder_name: str = "resnet18", arch_kwargs: dict | None = None, mask_weight: float = 1.0,
                 lr: float = 1e-3, weight_decay: float = 0.0, class_weights: Sequence[float] | None = None,
                 pretrained: str = "none", weights_path: str | None = None, pretrained_on: str | None = None) -> None:
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if not mask_weight >= 0:
            raise ValueError(f"mask_weight must be >= 0, got {mask_weight!r}")
        # RatingTask's rating steps and state on an smp network instead of a timm backbone: its __init__ (which
        # builds the backbone) is skipped in the MRO, its init_training_state gives the rest.
        super(RatingTask, self).__init__(ratings)
        self.save_hyperparameters(ignore=["pretrained", "weights_path", "pretrained_on"])
        self.net, self.weights_facts = create_smp_model(arch, encoder_name, 3, 1, pretrained, weights_path,
                                                        pretrained_on, **(arch_kwargs or {}))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = make_head(head, self.net.encoder.out_channels[-1], self.num_classes)
        self.mask_loss = RegionLoss(1, overlap="dice")  # BCE + Dice, SmpSegmentationTask's default loss
        self.ddp_find_unused_parameters = (arch_kwargs or {}).get("encoder_depth", 5) < 5
        self.init_training_state(3, class_weights)

    def prepare_from_training_data(self, datamodule) -> None:
        super().prepare_from_training_data(datamodule)
        give_masks(datamodule)

    def forward_both(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rating logits (B, K or K-1), mask logits (B, 1, H, W)) from one pass of the encoder."""
        self.net.check_input_shape(images)
        features = self.net.encoder(images)
        mask_logits = self.net.segmentation_head(self.net.decoder(features))
        return self.head(self.pool(features[-1])), mask_logits

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Rating logits only, as every rater's forward (``matcv predict``)."""
        return self.head(self.pool(self.net.encoder(images)[-1]))

    def _masks(self, batch: dict) -> torch.Tensor:
        if "mask" not in batch:
            raise RuntimeError(f"{type(self).__name__} learns from photo, rating and mask together, and this batch "
                               f"has no mask: prepare_from_training_data(datamodule) must run first (it gives the "
                               f"DataModule the fold's masks)")
        return batch["mask"]

    def joint_loss(self, batch: dict) -> tuple[torch.Tensor, ...]:
        """(total loss, rating term, mask term, rating logits, mask logits) of a batch."""
        logits, mask_logits = self.forward_both(batch["image"])
        rating_loss = self._loss(logits, self.rating_index(batch["rating"]))
        mask_loss = self.mask_loss(mask_logits, self._masks(batch))
        return rating_loss + self.hparams.mask_weight * mask_loss, rating_loss, mask_loss, logits, mask_logits

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, rating_loss, mask_loss, _, _ = self.joint_loss(batch)
        size = len(batch["image"])
        for name, value in (("train_loss", loss), ("train_rating_loss", rating_loss), ("train_mask_loss", mask_loss)):
            self.log(name, value, batch_size=size, on_epoch=True, on_step=False, prog_bar=name == "train_loss",
                     sync_dist=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, rating_loss, mask_loss, logits, mask_logits = self.joint_loss(batch)
        labels = self.rating_index(batch["rating"])
        predicted, _ = head_decode(self.hparams.head, logits)
        self.val_accuracy.update(predicted, labels)
        self.val_qwk.update(predicted, labels)
        dice, _ = per_image_dice_iou(mask_logits, batch["mask"])
        size = len(labels)
        self.log("val_loss", loss, batch_size=size, sync_dist=True)
        self.log("val_rating_loss", rating_loss, batch_size=size, sync_dist=True)
        self.log("val_mask_loss", mask_loss, batch_size=size, sync_dist=True)
        self.log("val_dice", dice.mean(), batch_size=size, sync_dist=True)
        self.log("val_accuracy", self.val_accuracy, batch_size=size, prog_bar=True)
        self.log("val_qwk", self.val_qwk, batch_size=size, prog_bar=True)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        logits, mask_logits = self.forward_both(batch["image"])
        predicted, probabilities = head_decode(self.hparams.head, logits)
        confidence = probabilities.gather(1, predicted[:, None])[:, 0]
        items = list(batch["item_id"])
        self.record_predictions(items, batch["rating"].tolist(), [self.ratings[i] for i in predicted.tolist()],
                                confidence.tolist())
        dice, iou = per_image_dice_iou(mask_logits.float().cpu(), self._masks(batch).float().cpu())
        for record, d, i in zip(self.test_results[-len(items):], dice.tolist(), iou.tolist()):
            record.update({"dice": float(d), "iou": float(i)})

    def figure_title(self) -> str:
        return f"{self.hparams.arch}/{self.hparams.encoder_name} mask + {self.hparams.head} rating"
