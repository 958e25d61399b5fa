"""Localization submissions: the predicted strain field ε11 of every test volume (float32 (N, N, N), physical
units: what ``LocalizationEvaluation.forward`` returns, the field ``test_step`` scores), from a factory's
``nn.Module`` (centred phases (B, 1, N, N, N) -> standardised strain (B, 1, N, N, N)) or a
``LocalizationEvaluation`` subclass."""

from __future__ import annotations

import numpy as np
import torch

from matcv.benchmarks.submission.models import RecordsSubmission, TaskAdapter, prediction_arrays
from matcv.lightning_modules.factory_tasks import FactoryLocalizationTask


class RecordsTestFields(RecordsSubmission):
    """Keeps the fields ``forward`` returns during test: ``LocalizationEvaluation.test_step`` scores exactly
    ``self(microstructure).float()`` of each batch, once per batch."""

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self._submitted_ids, self._submitted_fields = [], []
        self._pending_fields = None
        self._recording_test = True

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self._recording_test = False

    def forward(self, microstructure: torch.Tensor) -> torch.Tensor:
        field = super().forward(microstructure)
        if getattr(self, "_recording_test", False):
            if self._pending_fields is not None:
                raise RuntimeError(f"{type(self).__name__}.test_step called forward() more than once for one batch: "
                                   f"the field it scored cannot be told apart, so its predictions cannot be "
                                   f"recorded")
            self._pending_fields = field.detach().float().cpu().numpy()[:, 0]  # (B, N, N, N), as test_step's
        return field

    def on_test_batch_end(self, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        super().on_test_batch_end(outputs, batch, batch_idx, dataloader_idx)
        predicted, self._pending_fields = self._pending_fields, None
        if predicted is None:
            raise RuntimeError(f"{type(self).__name__}.test_step did not call forward(): its test predictions "
                               f"cannot be recorded")
        if len(predicted) != len(batch["item_id"]):
            raise RuntimeError(f"predicted {len(predicted)} strain fields for a batch of {len(batch['item_id'])} "
                               f"volumes")
        self._submitted_ids += list(batch["item_id"])
        self._submitted_fields += list(predicted)

    def submission_arrays(self) -> dict[str, np.ndarray]:
        return prediction_arrays(self._submitted_ids, self._submitted_fields, np.float32)


class ExternalLocalizationModel(RecordsTestFields, FactoryLocalizationTask):
    """A submitted factory's network, trained as the built-in ``FactoryLocalizationTask`` trains one, with the
    strain fields it predicted at test recorded."""


ADAPTER = TaskAdapter(
    evaluation_base="matcv.lightning_modules.localization.LocalizationEvaluation",
    recording_mixin=f"{__name__}.RecordsTestFields",
    factory_model=f"{__name__}.ExternalLocalizationModel",
    factory_contract="centred phases m − 0.5 (B, 1, N, N, N) -> standardised strain ε11 (B, 1, N, N, N)",
)
