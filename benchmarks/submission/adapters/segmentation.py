"""Segmentation submissions: hard test masks (``uint8``: 0/1, or class indices on multi-class data; the size the
harness scores), from a factory's ``nn.Module`` (images (B, 3, H, W) -> logits (B, C, H, W), C = 1 for binary
data, the number of classes otherwise) or a ``SegmentationEvaluation`` subclass."""

from __future__ import annotations

import numpy as np
import torch

from matcv.benchmarks.submission.models import RecordsSubmission, TaskAdapter, prediction_arrays
from matcv.lightning_modules.factory_tasks import FactorySegmentationTask


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


class ExternalSegmentationModel(RecordsTestMasks, FactorySegmentationTask):
    """A submitted factory's network, trained as the built-in ``FactorySegmentationTask`` trains one, with its
    test masks recorded."""


ADAPTER = TaskAdapter(
    evaluation_base="matcv.lightning_modules.segmentation.SegmentationEvaluation",
    recording_mixin=f"{__name__}.RecordsTestMasks",
    factory_model=f"{__name__}.ExternalSegmentationModel",
    factory_contract="images (B, 3, H, W) -> logits (B, 1, H, W)",
)
