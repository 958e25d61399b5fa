"""The LightningModules behind ``matcv submit`` (kept apart so that the CLI does not import torch to parse
arguments): the trainer of an external factory's ``nn.Module``, and the recording of test predictions."""

from __future__ import annotations

import re

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from benchmarks.config import import_object
from benchmarks.submit import TRAINING_KEYS, SubmissionError
from lightning_modules.edge_losses import RegionLoss
from lightning_modules.segmentation import SegmentationEvaluation


class PredictionRecorder(Callback):
    """Collects the hard test predictions (item id -> mask) that ``test_step`` scored."""

    def __init__(self) -> None:
        self.predictions: dict[str, np.ndarray] = {}

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self.predictions = {}

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        predicted = getattr(pl_module, "_recorded_mask", None)
        pl_module._recorded_mask = None
        if predicted is None:
            raise RuntimeError(f"{type(pl_module).__name__}.test_step did not call predicted_mask(): "
                               f"its test predictions cannot be recorded")
        if len(predicted) != len(batch["item_id"]):
            raise RuntimeError(f"predicted {len(predicted)} masks for a batch of {len(batch['item_id'])} images")
        for item, mask in zip(batch["item_id"], predicted):
            self.predictions[item] = mask


RECORDER = PredictionRecorder()  # one submission at a time per process


class RecordsTestPredictions:
    """Mixin: keep the masks ``predicted_mask`` returns during test for ``RECORDER``."""

    def predicted_mask(self, logits: torch.Tensor) -> torch.Tensor:
        mask = super().predicted_mask(logits)
        if not self.training:
            self._recorded_mask = mask.detach().cpu().numpy().astype(np.uint8)
        return mask

    def configure_callbacks(self):
        own = super().configure_callbacks()
        own = list(own) if isinstance(own, (list, tuple)) else ([own] if own else [])
        return own + [RECORDER]


class ExternalSegmentationModel(RecordsTestPredictions, SegmentationEvaluation):
    """Trains the ``nn.Module`` an external factory builds: BCE + Dice (seed 000, eq. 1), Adam."""

    def __init__(self, factory: str, factory_args: dict | None = None, lr: float = 1e-3,
                 weight_decay: float = 0.0) -> None:
        super().__init__(num_classes=1)
        self.save_hyperparameters()
        net = import_object(factory)(**(factory_args or {}))
        if not isinstance(net, nn.Module):
            raise TypeError(f"{factory} returned {type(net).__name__}, expected a torch.nn.Module")
        self.net = net
        self.region_loss = RegionLoss(1, overlap="dice")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.net(images)
        expected = (images.shape[0], 1, *images.shape[2:])
        if not torch.is_tensor(logits) or tuple(logits.shape) != expected:
            raise ValueError(f"{self.hparams.factory} must map images {tuple(images.shape)} to logits {expected}, "
                             f"got {tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__}")
        return logits

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.region_loss(logits, target)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch["image"]), batch["mask"])
        self.log("train_loss", loss, batch_size=len(batch["image"]), on_epoch=True, on_step=False)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


def model_class(task: str, reference: str, hyperparameters: dict) -> tuple[str, dict, str]:
    """(class reference for the harness, its args, kind) of a factory or LightningModule class reference."""
    target = import_object(reference)
    extra = {k: v for k, v in hyperparameters.items() if k not in TRAINING_KEYS}
    if isinstance(target, type) and issubclass(target, L.LightningModule):
        if not issubclass(target, SegmentationEvaluation):
            raise SubmissionError(f"{reference} is a LightningModule but not a SegmentationEvaluation subclass: "
                                  f"its test predictions could not be recorded and scored")
        # The class itself plus the recording mixin, registered here so that the harness can import it.
        attribute = "Submitted_" + re.sub(r"\W", "_", reference)
        globals()[attribute] = type(attribute, (RecordsTestPredictions, target), {"__module__": __name__})
        return f"{__name__}.{attribute}", extra, "lightning_module"
    if callable(target):
        args = {"factory": reference, "factory_args": extra,
                **{k: hyperparameters[k] for k in ("lr", "weight_decay") if k in hyperparameters}}
        return f"{__name__}.ExternalSegmentationModel", args, "factory"
    raise SubmissionError(f"{reference} is neither a factory (callable) nor a LightningModule class")
