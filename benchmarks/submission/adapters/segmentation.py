"""Segmentation submissions: hard test masks (``uint8``: 0/1, or class indices on multi-class data; the size the
harness scores), from a factory's ``nn.Module`` (images (B, 3, H, W) -> logits (B, C, H, W), C = 1 for binary
data, the number of classes otherwise) or a ``SegmentationEvaluation`` subclass."""

from __future__ import annotations

import numpy as np
import torch

from matcv.benchmarks.submission.models import RecordsSubmission, TaskAdapter, build_factory_network, prediction_arrays
from matcv.lightning_modules.edge_losses import RegionLoss
from matcv.lightning_modules.segmentation import SegmentationEvaluation


class RecordsTestMasks(RecordsSubmission):
    """Keeps the masks ``predicted_mask`` returns during test (the ones ``test_step`` scored)."""

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self._submitted_ids, self._submitted_masks = [], []
        self._pending_mask = None

    def predicted_mask(self, logits: torch.Tensor) -> torch.Tensor:
        mask = super().predicted_mask(logits)
        if not self.training:
            self._pending_mask = mask.detach().cpu().numpy().astype(np.uint8)
        return mask

    def on_test_batch_end(self, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        super().on_test_batch_end(outputs, batch, batch_idx, dataloader_idx)
        predicted, self._pending_mask = self._pending_mask, None
        if predicted is None:
            raise RuntimeError(f"{type(self).__name__}.test_step did not call predicted_mask(): "
                               f"its test predictions cannot be recorded")
        if len(predicted) != len(batch["item_id"]):
            raise RuntimeError(f"predicted {len(predicted)} masks for a batch of {len(batch['item_id'])} images")
        self._submitted_ids += list(batch["item_id"])
        self._submitted_masks += list(predicted)

    def submission_arrays(self) -> dict[str, np.ndarray]:
        return prediction_arrays(self._submitted_ids, self._submitted_masks, np.uint8)


class ExternalSegmentationModel(RecordsTestMasks, SegmentationEvaluation):
    """Trains the ``nn.Module`` an external factory builds: BCE + Dice (seed 000, eq. 1) on binary data,
    cross-entropy + Dice on multi-class data; Adam. The number of classes is the data's (read from the
    DataModule before training); the factory must output that many logit maps (pass it in the
    hyper-parameters if the factory needs to be told)."""

    def __init__(self, factory: str, factory_args: dict | None = None, lr: float = 1e-3,
                 weight_decay: float = 0.0) -> None:
        super().__init__(num_classes=1)
        self.save_hyperparameters()
        self.net = build_factory_network(factory, factory_args)
        self.region_loss = RegionLoss(1, overlap="dice")

    def prepare_from_training_data(self, datamodule) -> None:
        """Binary or multi-class, as the data is (the harness calls this before fitting)."""
        num_classes = int(getattr(datamodule, "num_classes", 1))
        if num_classes != self.num_classes:
            self.num_classes = num_classes
            self.class_names = list(getattr(datamodule, "class_names", [])) or [f"class{c}" for c in range(num_classes)]
            self.region_loss = RegionLoss(num_classes, overlap="dice")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.net(images)
        expected = (images.shape[0], self.num_classes, *images.shape[2:])
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


ADAPTER = TaskAdapter(
    evaluation_base="matcv.lightning_modules.segmentation.SegmentationEvaluation",
    recording_mixin=f"{__name__}.RecordsTestMasks",
    factory_model=f"{__name__}.ExternalSegmentationModel",
    factory_contract="images (B, 3, H, W) -> logits (B, 1, H, W)",
)
