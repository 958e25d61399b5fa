"""AlloyGAN submissions: an ``AlloyEvaluation`` subclass only (a conditional GAN is no single image -> output
network, so there is no factory form). Recorded for the scorer (``leaderboard/scorers/alloygan.py``): the image
generated for every test image's conditions, float32 in [-1, 1], the ones ``on_test_epoch_end`` scored."""

from __future__ import annotations

import numpy as np

from matcv.benchmarks.submission.models import RecordsSubmission, TaskAdapter, prediction_arrays


class RecordsConditionalImages(RecordsSubmission):
    """``pred_<i>`` = the image ``AlloyEvaluation.on_test_epoch_end`` generated for test item i's conditions."""

    def submission_arrays(self) -> dict[str, np.ndarray]:
        if self._examples is None:
            raise RuntimeError(f"{type(self).__name__} generated no test images: AlloyEvaluation's "
                               f"on_test_epoch_end did not run (an overriding method must call super())")
        _, generated, _, _ = self._examples
        item_ids = [row["item_id"] for row in self.test_results]
        if len(generated) != len(item_ids):
            raise RuntimeError(f"generated {len(generated)} images for {len(item_ids)} test images")
        return prediction_arrays(item_ids, list(generated[:, 0].float().numpy()), np.float32)


ADAPTER = TaskAdapter(
    evaluation_base="matcv.lightning_modules.alloygan.AlloyEvaluation",
    recording_mixin=f"{__name__}.RecordsConditionalImages",
    factory_model=None,  # GANs: LightningModule classes only
    factory_contract="an AlloyEvaluation subclass (generate_for(conditions, generator))",
)
