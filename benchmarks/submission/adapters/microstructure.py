"""Microstructure submissions (autoencoders, VAEs, GANs): a ``GenerativeEvaluation`` subclass only (a generative
model is no single image -> output network, so there is no factory form). Recorded for the scorer
(``leaderboard/scorers/microstructure.py``): the reconstruction of every test image (models that reconstruct)
and the samples the harness scored, as float32 images in [-1, 1]."""

from __future__ import annotations

import numpy as np
import torch

from matcv.benchmarks.submission.models import RecordsSubmission, TaskAdapter, prediction_arrays
from matcv.lightning_modules.microstructure_scoring import reconstruction_scores


class RecordsGeneratedImages(RecordsSubmission):
    """Keeps what ``GenerativeEvaluation`` scored at test: ``pred_<i>`` = the reconstruction of test image i
    (``test_step``'s, clamped to [-1, 1]; none for a model that does not reconstruct) and ``samples`` = the
    images ``on_test_epoch_end`` generated, (n, H, W)."""

    def test_step(self, batch: dict, batch_idx: int):
        """``GenerativeEvaluation.test_step``, then its reconstruction scores recomputed on the CPU from the
        reconstruction it kept, as the leaderboard's scorer computes them: on a GPU, SSIM's convolutions run in
        cuDNN (TF32 allowed by default) and the MSE reductions in another order, which can make the claimed scores
        of a valid submission differ from the CPU's by rounding, beyond the validation's 1e-6 (PSNR is ~5-40 dB)."""
        output = super().test_step(batch, batch_idx)
        if self.reconstructs:
            rows = self.test_results[len(self.test_results) - len(batch["item_id"]):]
            if [row["item_id"] for row in rows] != list(batch["item_id"]) or not self._reconstructed:
                raise RuntimeError(f"{type(self).__name__}.test_step must keep GenerativeEvaluation's test_results "
                                   f"and reconstructions (call super().test_step)")
            scores = reconstruction_scores(self._reconstructed[-1].float(), batch["image"].detach().float().cpu())
            for k, row in enumerate(rows):
                row.update({name: float(values[k]) for name, values in scores.items()})
        return output

    def submission_arrays(self) -> dict[str, np.ndarray]:
        item_ids = [row["item_id"] for row in self.test_results]
        if self._generated is None:
            raise RuntimeError(f"{type(self).__name__} generated no samples at test: GenerativeEvaluation's "
                               f"on_test_epoch_end did not run (an overriding method must call super())")
        reconstructions = []
        if self.reconstructs:
            reconstructed = torch.cat(self._reconstructed) if self._reconstructed else torch.zeros(0)
            if len(reconstructed) != len(item_ids):
                raise RuntimeError(f"recorded {len(reconstructed)} reconstructions for {len(item_ids)} test images")
            reconstructions = list(reconstructed[:, 0].float().numpy())
        arrays = prediction_arrays(item_ids, reconstructions, np.float32)
        arrays["samples"] = np.ascontiguousarray(self._generated[:, 0].float().numpy(), dtype=np.float32)
        return arrays


ADAPTER = TaskAdapter(
    evaluation_base="matcv.lightning_modules.microstructure.GenerativeEvaluation",
    recording_mixin=f"{__name__}.RecordsGeneratedImages",
    factory_model=None,  # GANs and autoencoders: LightningModule classes only
    factory_contract="a GenerativeEvaluation subclass (generate(n, generator), optionally reconstruct(images))",
)
