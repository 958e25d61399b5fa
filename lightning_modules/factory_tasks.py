"""Tasks that train a plain ``nn.Module`` built by a factory function, one per task family.

A network needs no LightningModule of its own when the task's usual training fits it: the factory
(``package.module:name``, called with ``factory_args``) builds the ``nn.Module`` and one of these tasks trains and
scores it through the task's evaluation class. A new segmentation network is then a factory function plus one
YAML entry::

    my-net:
      class: matcv.lightning_modules.factory_tasks.FactorySegmentationTask
      args: {factory: my_package.nets:build, factory_args: {width: 16}, lr: 1.0e-3}

``matcv submit`` trains a submitted factory with the same classes (its adapters add only the recording of the
test predictions), so a built-in factory model and a submitted one are trained identically.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from matcv.datamodules.core.config import import_object
from matcv.lightning_modules.edge_losses import DEFAULT_FTL_ALPHA, DEFAULT_FTL_BETA, RegionLoss
from matcv.lightning_modules.localization import PHASE_CENTRE, TrainedLocalizationTask
from matcv.lightning_modules.rating import RatingTask
from matcv.lightning_modules.segmentation import SegmentationEvaluation


def build_factory_network(factory: str, factory_args: dict | None) -> nn.Module:
    """The ``nn.Module`` a factory returns (checked to be one: anything else would fail later, less clearly)."""
    net = import_object(factory)(**(factory_args or {}))
    if not isinstance(net, nn.Module):
        raise TypeError(f"{factory} returned {type(net).__name__}, expected a torch.nn.Module")
    return net


def _shape_of(output) -> object:
    return tuple(output.shape) if torch.is_tensor(output) else type(output).__name__


class FactorySegmentationTask(SegmentationEvaluation):
    """Segmentation with a factory's network (images (B, 3, H, W) -> logits (B, C, H, W)): BCE + Dice on binary
    data (Yin 2024, eq. 1), cross-entropy + Dice on multi-class data; Adam. The number of classes is the
    data's (read from the DataModule before training), so one factory serves binary and multi-class data; the
    factory must output that many logit maps (pass it in ``factory_args`` if the factory needs to be told)."""

    def __init__(self, factory: str, factory_args: dict | None = None, lr: float = 1e-3,
                 weight_decay: float = 0.0, overlap: str = "dice", ftl_alpha: float = DEFAULT_FTL_ALPHA,
                 ftl_beta: float = DEFAULT_FTL_BETA) -> None:
        super().__init__(num_classes=1)
        self.save_hyperparameters()
        self.net = build_factory_network(factory, factory_args)
        # overlap "ftl": Focal Tversky in place of Dice, as the DeepSC-Edge "+FTL" models (edge_guided.py) train.
        self.region_loss = RegionLoss(1, overlap, ftl_alpha, ftl_beta)

    def prepare_from_training_data(self, datamodule) -> None:
        """Binary or multi-class, as the data is (the harness calls this before fitting)."""
        num_classes = int(getattr(datamodule, "num_classes", 1))
        if num_classes != self.num_classes:
            self.num_classes = num_classes
            self.class_names = list(getattr(datamodule, "class_names", [])) or [f"class{c}" for c in range(num_classes)]
            self.region_loss = RegionLoss(num_classes, self.hparams.overlap, self.hparams.ftl_alpha,
                                          self.hparams.ftl_beta)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.net(images)
        expected = (images.shape[0], self.num_classes, *images.shape[2:])
        if not torch.is_tensor(logits) or tuple(logits.shape) != expected:
            raise ValueError(f"{self.hparams.factory} must map images {tuple(images.shape)} to logits {expected}, "
                             f"got {_shape_of(logits)}")
        return logits

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.region_loss(logits, target)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch["image"]), batch["mask"])
        self.log("train_loss", loss, batch_size=len(batch["image"]), on_epoch=True, on_step=False)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


class FactoryRatingTask(RatingTask):
    """Rating classification with a factory's network (images (B, 3, H, W) -> logits (B, number of ratings)),
    trained as ``RatingTask`` trains its ``ce`` head: ratings mapped to class indices (``rating_index``),
    cross-entropy, Adam, validation QWK for checkpoint selection. Only the network comes from the factory; an
    ordinal loss (CORAL, CORN) needs a head of its own, so it takes a LightningModule rather than a factory."""

    def __init__(self, factory: str, factory_args: dict | None = None, lr: float = 1e-3, weight_decay: float = 0.0,
                 ratings: Sequence[int] | None = None, head: str = "ce") -> None:
        if head != "ce":
            raise ValueError(f"a factory's network is trained with cross-entropy (head 'ce'), not {head!r}: submit a "
                             f"LightningModule class (a RatingEvaluation subclass) for an ordinal loss")
        # RatingTask's training, validation, test and optimiser steps, on the factory's network instead of a
        # timm backbone + head: its __init__ (which builds those) is skipped in the MRO; the state those steps use
        # comes from its init_training_state.
        super(RatingTask, self).__init__(*([] if ratings is None else [ratings]))  # None: the task's ratings (5..9)
        # (explicit: Lightning collects __init__ arguments only from an __init__ that calls super() bare)
        self.save_hyperparameters({"factory": factory, "factory_args": factory_args, "lr": lr,
                                   "weight_decay": weight_decay, "ratings": list(self.ratings), "head": head})
        self.net = build_factory_network(factory, factory_args)
        self.init_training_state(in_channels=3, class_weights=None)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.net(images)
        expected = (images.shape[0], self.num_classes)
        if not torch.is_tensor(logits) or tuple(logits.shape) != expected:
            raise ValueError(f"{self.hparams.factory} must map images {tuple(images.shape)} to logits {expected} "
                             f"(one per rating {self.ratings}), got {_shape_of(logits)}")
        return logits

    def figure_title(self) -> str:
        return f"{self.hparams.factory} / ce"


class FactoryLocalizationTask(TrainedLocalizationTask):
    """3-D localization with a factory's network (centred phases (B, 1, N, N, N) -> standardised strain
    (B, 1, N, N, N)), trained as ``UNet3DTask`` trains its U-Net: the phases centred (m − PHASE_CENTRE, in
    {−0.5, 0.5}), MSE against the strain standardised with training-fold statistics, Adam; predictions are
    turned back into physical units by ``LocalizationEvaluation.forward``."""

    def __init__(self, factory: str, factory_args: dict | None = None, lr: float = 1e-3,
                 weight_decay: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = build_factory_network(factory, factory_args)

    def predict_normalized(self, microstructure: torch.Tensor) -> torch.Tensor:
        field = self.net(microstructure - PHASE_CENTRE)
        expected = tuple(microstructure.shape)
        if not torch.is_tensor(field) or tuple(field.shape) != expected:
            raise ValueError(f"{self.hparams.factory} must map centred phases {expected} to the standardised "
                             f"strain field {expected}, got {_shape_of(field)}")
        return field

    def training_loss(self, batch: dict) -> torch.Tensor:
        predicted = self.predict_normalized(batch["microstructure"])
        return F.mse_loss(predicted, self.normalize_strain(batch["strain"]))
