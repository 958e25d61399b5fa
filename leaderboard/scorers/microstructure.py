"""Microstructure submissions (autoencoders, VAEs, GANs): generated images and, for a model that reconstructs, one
reconstruction per test image, scored by the harness's own code (``matcv.lightning_modules.microstructure``).

A fold's ``.npz``:

* ``item_ids``: the fold's test items;
* ``pred_<i>``: float32 (H, W) reconstruction of test item i in [-1, 1], for every test item, or for none (a model
  that does not reconstruct: ``mse``/``psnr``/``ssim`` are NaN, as in the harness);
* ``samples``: float32 (n, H, W) generated images in [-1, 1], 2 <= n <= ``MAX_SAMPLES`` (the harness draws
  ``n_samples`` or as many as there are test images).

Scores: per test image MSE/PSNR/SSIM (``reconstruction_scores``; fold value = their mean), and the fold's sample
metrics (``sample_scores``: S2 distance, volume fraction error, grain-size distance, diversity, FID/KID-domain)
of the samples against the fold's real test images. FID/KID-domain use the fold's domain feature extractor,
trained by ``cached_domain_extractor`` exactly as ``GenerativeEvaluation.prepare_from_training_data`` trains it
for the built-in models (same training images, labels, run seed, cache folder and epochs), so the harness's
cached file is reused where it exists. A network trained on another machine may differ slightly: FID/KID are
recomputed and shown but a claimed value is not compared.
"""

from __future__ import annotations

import inspect
import math
from collections import Counter
from pathlib import Path

import numpy as np

from matcv.leaderboard.scorers import (
    FoldTruth,
    Rejected,
    Scorer,
    Truth,
    mean_of,
    non_finite_problem,
    official_datamodules,
    predictions_by_item,
)

METRICS = ("s2_distance", "fid_domain", "kid_domain", "vf_error", "grain_size_distance", "diversity", "mse", "psnr",
           "ssim")
NOT_COMPARED = ("fid_domain", "kid_domain")  # depend on the extractor network trained on the scoring machine
RECONSTRUCTION_METRICS = ("mse", "psnr", "ssim")
SAMPLES_KEY = "samples"
MIN_SAMPLES, MAX_SAMPLES = 2, 4096


def builtin_extractor_epochs(entry: dict, evaluation_base: type, uses_extractor=lambda cls: True) -> int:
    """``extractor_epochs`` of the built-in models of the official (task YAML, profile): the domain extractor their
    FID-domain numbers were computed with (the most common value where they differ; the evaluation's default
    where none sets it). An ``entry`` describing one run (``matcv verify``) names the run's own
    ``extractor_epochs``."""
    from matcv.datamodules.core.config import TaskConfig, import_object

    if entry.get("extractor_epochs") is not None:
        return int(entry["extractor_epochs"])
    default = inspect.signature(evaluation_base.__init__).parameters["extractor_epochs"].default
    config = TaskConfig.load(entry["config"])
    counts: Counter = Counter()
    for model in config.model_names(entry["profile"]):
        resolved = config.resolve(entry["profile"], model)["model"]
        cls = import_object(resolved["class"])
        if not (isinstance(cls, type) and issubclass(cls, evaluation_base) and uses_extractor(cls)):
            continue
        own = inspect.signature(cls).parameters.get("extractor_epochs")
        own_default = default if own is None or own.default is inspect.Parameter.empty else own.default
        counts[int(resolved["args"].get("extractor_epochs", own_default))] += 1
    return counts.most_common(1)[0][0] if counts else int(default)


def image_problem(array: np.ndarray, shape: tuple[int, ...]) -> str | None:
    """Why ``array`` is not a float32 image (stack) of ``shape`` with values in [-1, 1] (None if it is)."""
    if array.dtype != np.float32:
        return f"dtype {array.dtype} (expected float32 images in [-1, 1])"
    if array.shape != shape:
        return f"shape {array.shape}, expected {shape}"
    problem = non_finite_problem(array)
    if problem:
        return problem
    if array.size and (array.min() < -1.0 or array.max() > 1.0):
        return f"values in [{float(array.min()):.4g}, {float(array.max()):.4g}], outside [-1, 1]"
    return None


def load_truth(entry: dict, official_dir: Path) -> Truth:
    """Per fold: the real test images in the harness's test order, how the source's images are read (image kind,
    periodic), and the fold's domain extractor."""
    from matcv.lightning_modules.microstructure import GenerativeEvaluation
    from matcv.lightning_modules.microstructure_scoring import fold_domain_extractor

    epochs = builtin_extractor_epochs(entry, GenerativeEvaluation)
    folds, data_sha256 = official_datamodules(entry, official_dir)
    truths = []
    for official in folds:
        datamodule = official.datamodule
        datamodule.setup("fit")  # every partition, as prepare_from_training_data sets it up
        test = datamodule.datasets["test"]
        real = test.images  # (N, 1, H, W) float32 in [-1, 1]
        shape = tuple(int(s) for s in real.shape[-2:])
        extractor = (str(fold_domain_extractor(datamodule, epochs)) if datamodule.num_labels >= 2 else None)
        targets = {item: real[i, 0].numpy() for i, item in enumerate(test.item_ids)}
        image_bytes = 4 * shape[0] * shape[1]
        truths.append(FoldTruth(
            list(test.item_ids), targets, (len(targets) + MAX_SAMPLES) * image_bytes + (1 << 20),
            {"real": real, "image_shape": shape, "image_kind": datamodule.image_kind,
             "periodic": bool(datamodule.periodic), "extractor_path": extractor, "extractor_epochs": epochs,
             "batch_size": int(datamodule.batch_size)}))
    return Truth(truths, data_sha256)


def _samples(arrays: dict[str, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    samples = arrays.get(SAMPLES_KEY)
    if samples is None:
        raise Rejected(f"the file needs a {SAMPLES_KEY!r} array: (n, {shape[0]}, {shape[1]}) float32 generated "
                       f"images in [-1, 1]")
    if samples.ndim != 3 or not MIN_SAMPLES <= samples.shape[0] <= MAX_SAMPLES:
        raise Rejected(f"{SAMPLES_KEY}: shape {samples.shape}, expected (n, {shape[0]}, {shape[1]}) with "
                       f"{MIN_SAMPLES} <= n <= {MAX_SAMPLES}")
    problem = image_problem(samples, (samples.shape[0], *shape))
    if problem:
        raise Rejected(f"{SAMPLES_KEY}: {problem}")
    return samples


def score_fold(arrays: dict[str, np.ndarray], item_ids: list[str], truth: FoldTruth):
    import torch

    from matcv.lightning_modules.microstructure_scoring import reconstruction_scores, sample_scores

    context = truth.context
    shape = context["image_shape"]
    samples = _samples(arrays, shape)
    reconstructs = any(key != SAMPLES_KEY for key in arrays)
    rows = [{"item_id": item} for item in truth.item_ids]  # the harness's test order
    if reconstructs:
        predictions = predictions_by_item(arrays, item_ids, extra_keys=(SAMPLES_KEY,))
        for item in truth.item_ids:
            problem = image_problem(predictions[item], shape)
            if problem:
                raise Rejected(f"reconstruction of {item!r}: {problem}")
        reconstructed = torch.from_numpy(np.stack([predictions[item] for item in truth.item_ids]))[:, None]
        real = context["real"]
        step = context["batch_size"]  # scored batch by batch, as test_step does
        for start in range(0, len(rows), step):
            scores = reconstruction_scores(reconstructed[start:start + step], real[start:start + step])
            for k, row in enumerate(rows[start:start + step]):
                row.update({name: float(values[k]) for name, values in scores.items()})
    summary = sample_scores(torch.from_numpy(samples)[:, None], context["real"], context["image_kind"],
                            context["periodic"], context["extractor_path"])
    metrics = {name: summary[name] for name in METRICS if name in summary}
    metrics.update(mean_of(rows, RECONSTRUCTION_METRICS) if reconstructs
                   else {name: math.nan for name in RECONSTRUCTION_METRICS})
    return {name: metrics[name] for name in METRICS}, rows


SCORERS = {"microstructure": Scorer(METRICS, load_truth, score_fold,
                                    compared=tuple(m for m in METRICS if m not in NOT_COMPARED))}
