"""Localization submissions: the predicted strain field ε11 of every test volume (float32 (N, N, N), physical
units: what ``LocalizationEvaluation.forward`` returns, the field ``test_step`` scores), from a factory's
``nn.Module`` (centred phases (B, 1, N, N, N) -> standardised strain (B, 1, N, N, N)) or a
``LocalizationEvaluation`` subclass."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from matcv.benchmarks.submission.models import RecordsSubmission, TaskAdapter, build_factory_network, prediction_arrays
from matcv.lightning_modules.localization import PHASE_CENTRE, _TrainedLocalizationTask


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


class ExternalLocalizationModel(RecordsTestFields, _TrainedLocalizationTask):
    """Trains the ``nn.Module`` an external factory builds, as ``UNet3DTask`` trains its U-Net: the phases
    centred (m − PHASE_CENTRE, in {−0.5, 0.5}), MSE against the strain standardised with training-fold
    statistics, Adam; predictions are turned back into physical units by ``LocalizationEvaluation.forward``."""

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
                             f"strain field {expected}, got "
                             f"{tuple(field.shape) if torch.is_tensor(field) else type(field).__name__}")
        return field

    def training_loss(self, batch: dict) -> torch.Tensor:
        predicted = self.predict_normalized(batch["microstructure"])
        return F.mse_loss(predicted, self.normalize_strain(batch["strain"]))


ADAPTER = TaskAdapter(
    evaluation_base="matcv.lightning_modules.localization.LocalizationEvaluation",
    recording_mixin=f"{__name__}.RecordsTestFields",
    factory_model=f"{__name__}.ExternalLocalizationModel",
    factory_contract="centred phases m − 0.5 (B, 1, N, N, N) -> standardised strain ε11 (B, 1, N, N, N)",
)
