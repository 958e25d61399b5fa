"""Rating and ordinal submissions: the predicted ASTM D1654 rating of every test photo (a 0-d ``int64`` array,
one of the task's ratings), from a factory's ``nn.Module`` (images (B, 3, H, W) -> logits (B, number of
ratings)) or a ``RatingEvaluation`` subclass.

Both tasks take the same two kinds of model. A factory's network is trained with cross-entropy (the ``ce``
head of ``RatingTask``) and Adam, for ``rating`` and ``ordinal`` alike; a model with an ordinal loss (CORAL,
CORN, ...) is submitted as a LightningModule class (a ``RatingEvaluation`` subclass whose ``test_step`` calls
``record_predictions``), which trains however it likes.
"""

from __future__ import annotations

import numpy as np

from matcv.benchmarks.submission.models import RecordsSubmission, TaskAdapter, prediction_arrays
from matcv.lightning_modules.factory_tasks import FactoryRatingTask


class RecordsTestRatings(RecordsSubmission):
    """The ratings ``record_predictions`` kept during test (``test_results``: the ones ``test_summary`` scored)."""

    def submission_arrays(self) -> dict[str, np.ndarray]:
        results = self.test_results
        if not results:
            raise RuntimeError(f"{type(self).__name__} recorded no test predictions: its test_step must call "
                               f"record_predictions() (RatingEvaluation)")
        return prediction_arrays([r["item_id"] for r in results], [r["predicted"] for r in results], np.int64)


class ExternalRatingModel(RecordsTestRatings, FactoryRatingTask):
    """A submitted factory's network, trained as the built-in ``FactoryRatingTask`` trains one (cross-entropy),
    with its test ratings recorded."""


ADAPTER = TaskAdapter(
    evaluation_base="matcv.lightning_modules.rating.RatingEvaluation",
    recording_mixin=f"{__name__}.RecordsTestRatings",
    factory_model=f"{__name__}.ExternalRatingModel",
    factory_contract="images (B, 3, H, W) -> logits (B, number of ratings), trained with cross-entropy "
                     "(for an ordinal loss submit a RatingEvaluation subclass)",
)
