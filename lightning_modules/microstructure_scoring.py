"""How a microstructure generative model is scored, as functions: per test image (reconstruction) and per fold
(generated samples against the real held-out images).

The task's ``GenerativeEvaluation`` (``matcv.lightning_modules.microstructure``), AlloyGAN's evaluation, the
submission adapters and the leaderboard's rescoring of a submission all call these, so a built-in model and a
submitted one are scored by one piece of code. The physical statistics themselves are in
``microstructure_metrics``, the domain feature extractor in ``domain_features``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from matcv.datamodules.core.cache import default_cache_dir
from matcv.lightning_modules.domain_features import cached_domain_extractor, fid_kid_domain, inception_fid
from matcv.lightning_modules.microstructure_metrics import (
    diversity_ratio,
    grain_size_distance,
    phase_indicator,
    s2_distance,
    volume_fraction_error,
)

DATA_RANGE = 2.0  # images live in [-1, 1]
RECONSTRUCTION_METRICS = ("mse", "psnr", "ssim")
SAMPLE_METRICS = ("s2_distance", "vf_error", "grain_size_distance", "diversity", "fid_domain", "kid_domain")


@torch.no_grad()
def seeded_samples(module: torch.nn.Module, draw, seed: int) -> torch.Tensor:
    """``draw(generator)``'s images with the module in eval mode (BatchNorm's running statistics, the same output
    for the same seed), as float CPU tensors clipped to [-1, 1]; the module's train/eval mode is restored."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    was_training = module.training
    module.eval()
    try:
        return draw(generator).detach().float().cpu().clamp(-1, 1)
    finally:
        module.train(was_training)


def reconstruction_scores(reconstructed: torch.Tensor, original: torch.Tensor) -> dict[str, np.ndarray]:
    """Per image: MSE, PSNR (dB, data range 2) and SSIM (torchmetrics, Gaussian window 11, data range 2)."""
    mse = ((reconstructed - original) ** 2).flatten(1).mean(1)
    psnr = 10.0 * torch.log10(DATA_RANGE**2 / mse.clamp_min(1e-12))
    ssim = structural_similarity_index_measure(reconstructed, original, data_range=DATA_RANGE, reduction="none")
    return {"mse": mse.cpu().numpy(), "psnr": psnr.cpu().numpy(), "ssim": ssim.reshape(-1).cpu().numpy()}


def fold_domain_extractor(datamodule, epochs: int) -> Path:
    """The fold's FID-domain feature extractor: trained on the set-up datamodule's *training* part (images and
    labels) with the fold's run seed, cached under the matcv cache (``cached_domain_extractor``), so every model
    of a fold, and the leaderboard's rescoring of a submission, use the same file."""
    train = datamodule.datasets["train"]
    return cached_domain_extractor(train.images, train.labels, datamodule.num_labels,
                                   seed=int(datamodule.seed),
                                   cache_dir=default_cache_dir() / "domain-extractors", epochs=epochs)


def sample_scores(generated: torch.Tensor, real: torch.Tensor, image_kind: str, periodic: bool,
                  extractor_path: str | Path | None = None,
                  inception_weights_path: str | None = None) -> dict[str, float]:
    """Every fold-level sample metric (``SAMPLE_METRICS``, the module doc of ``matcv.lightning_modules.microstructure``):
    generated vs real held-out images, both (N, 1, H, W) in [-1, 1]; FID/KID-domain NaN without an extractor."""
    fake_indicator, real_indicator = phase_indicator(generated, image_kind), phase_indicator(real, image_kind)
    scores = {
        "s2_distance": s2_distance(fake_indicator, real_indicator, periodic=periodic),
        "vf_error": volume_fraction_error(fake_indicator, real_indicator),
        "grain_size_distance": (grain_size_distance(fake_indicator, real_indicator, periodic=periodic)
                                if image_kind == "grain-boundary" else math.nan),
        "diversity": diversity_ratio(generated, real),
        "n_generated": float(len(generated)),
    }
    if extractor_path is not None:
        scores.update(fid_kid_domain(generated, real, extractor_path))
    else:
        scores.update({"fid_domain": math.nan, "kid_domain": math.nan})
    if inception_weights_path:
        scores.update(inception_fid(generated, real, inception_weights_path))
    return {name: float(value) for name, value in scores.items()}
