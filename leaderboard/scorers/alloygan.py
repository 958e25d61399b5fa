"""AlloyGAN submissions: one generated image per test image, drawn at that image's conditions (composition, cooling
rate, Sr/P modification), scored by the harness's own code (``matcv.lightning_modules.alloygan.score_generated``).

A fold's ``.npz``: ``item_ids`` (the fold's test items) and ``pred_<i>`` = float32 (H, W) image generated for test
item i's conditions, values in [-1, 1].

Scores, as ``AlloyEvaluation.on_test_epoch_end`` computes them: the generated images are measured (Si area
fraction, secondary arm spacing λ2, Si particle count and size) and compared with the test items' conditions and
the generator's expected Si fractions (``si_spearman``, ``si_fraction_mae``, ``lambda2_*``, ``srp_*``), and
FID/KID-domain against the real test images, over all of them and per alloy (``fid_domain_alloywise`` mean and
std). The domain extractor is the fold's, trained by ``cached_domain_extractor`` exactly as
``AlloyEvaluation.prepare_from_training_data`` trains it (reused from the cache where the harness left it); it
may differ on another machine, so FID/KID numbers are recomputed and shown but a claimed value is not compared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from matcv.leaderboard.scorers import FoldTruth, Rejected, Scorer, Truth, official_datamodules, predictions_by_item
from matcv.leaderboard.scorers.microstructure import builtin_extractor_epochs, image_problem

METRICS = ("fid_domain", "kid_domain", "fid_domain_alloywise", "fid_domain_alloywise_std", "si_spearman",
           "si_fraction_mae", "lambda2_measurable", "lambda2_n", "lambda2_r2", "srp_count_log2_ratio",
           "srp_size_log2_ratio")
NOT_COMPARED = ("fid_domain", "kid_domain", "fid_domain_alloywise", "fid_domain_alloywise_std")


def load_truth(entry: dict, official_dir: Path) -> Truth:
    """Per fold: the real test images, their raw conditions, alloys and expected Si fractions in the harness's test
    order, and the fold's domain extractor."""
    from matcv.lightning_modules.alloygan import AlloyEvaluation, expected_fractions
    from matcv.lightning_modules.microstructure_scoring import fold_domain_extractor

    epochs = builtin_extractor_epochs(entry, AlloyEvaluation, uses_extractor=lambda cls: cls.compares_to_real)
    folds, data_sha256 = official_datamodules(entry, official_dir)
    truths = []
    for official in folds:
        datamodule = official.datamodule
        datamodule.setup("fit")
        test = datamodule.datasets["test"]
        items = list(test.item_ids)
        real = test.images  # (N, 1, H, W) float32 in [-1, 1]
        shape = tuple(int(s) for s in real.shape[-2:])
        extractor = str(fold_domain_extractor(datamodule, epochs)) if datamodule.num_labels >= 2 else None
        targets = {item: real[i, 0].numpy() for i, item in enumerate(items)}
        truths.append(FoldTruth(
            items, targets, len(items) * 4 * shape[0] * shape[1] + (1 << 20),
            {"real": real, "image_shape": shape, "conditions": test.conditions.numpy(), "alloys": list(test.alloys),
             "expected": expected_fractions(datamodule, items), "extractor_path": extractor,
             "extractor_epochs": epochs}))
    return Truth(truths, data_sha256)


def score_fold(arrays: dict[str, np.ndarray], item_ids: list[str], truth: FoldTruth):
    import torch

    from matcv.lightning_modules.alloygan import score_generated

    context = truth.context
    predictions = predictions_by_item(arrays, item_ids)
    for item in truth.item_ids:
        problem = image_problem(predictions[item], context["image_shape"])
        if problem:
            raise Rejected(f"image generated for {item!r}: {problem}")
    generated = torch.from_numpy(np.stack([predictions[item] for item in truth.item_ids]))[:, None]
    summary, table, _ = score_generated(generated, context["real"], context["conditions"], truth.item_ids,
                                        context["alloys"], context["expected"], context["extractor_path"])
    rows = [{key: (value.item() if isinstance(value, np.generic) else value) for key, value in row.items()}
            for row in table.to_dict("records")]
    return {name: float(summary[name]) for name in METRICS}, rows


SCORERS = {"alloygan": Scorer(METRICS, load_truth, score_fold,
                              compared=tuple(m for m in METRICS if m not in NOT_COMPARED))}
