"""Rating and ordinal submissions: the predicted ASTM D1654 rating of every test photo (a 0-d ``int64`` array,
one of the task's ratings), from a factory's ``nn.Module`` (images (B, 3, H, W) -> logits (B, number of
ratings)) or a ``RatingEvaluation`` subclass.

Both tasks take the same two kinds of model. A factory's network is trained with cross-entropy (the ``ce``
head of ``RatingTask``) and Adam, for ``rating`` and ``ordinal`` alike; a model with an ordinal loss (CORAL,
CORN, ...) is submitted as a LightningModule class (a ``RatingEvaluation`` subclass whose ``test_step`` calls
``record_predictions``), which trains however it likes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from matcv.benchmarks.submission.models import (
    RecordsSubmission,
    TaskAdapter,
    build_factory_network,
    prediction_arrays,
)
from matcv.lightning_modules.rating import RatingTask


class RecordsTestRatings(RecordsSubmission):
    """The ratings ``record_predictions`` kept during test (``test_results``: the ones ``test_summary`` scored)."""

    def submission_arrays(self) -> dict[str, np.ndarray]:
        results = self.test_results
        if not results:
            raise RuntimeError(f"{type(self).__name__} recorded no test predictions: its test_step must call "
                               f"record_predictions() (RatingEvaluation)")
        return prediction_arrays([r["item_id"] for r in results], [r["predicted"] for r in results], np.int64)


class ExternalRatingModel(RecordsTestRatings, RatingTask):
    """Trains the ``nn.Module`` an external factory builds as ``RatingTask`` trains its ``ce`` head: ratings
    mapped to class indices (``rating_index``), cross-entropy, Adam, validation QWK for checkpoint selection,
    test predictions recorded through ``record_predictions``. Only the network comes from the factory."""

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
                             f"(one per rating {self.ratings}), got "
                             f"{tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__}")
        return logits

    def figure_title(self) -> str:
        return f"{self.hparams.factory} / ce"


ADAPTER = TaskAdapter(
    evaluation_base="matcv.lightning_modules.rating.RatingEvaluation",
    recording_mixin=f"{__name__}.RecordsTestRatings",
    factory_model=f"{__name__}.ExternalRatingModel",
    factory_contract="images (B, 3, H, W) -> logits (B, number of ratings), trained with cross-entropy "
                     "(for an ordinal loss submit a RatingEvaluation subclass)",
)
