"""Over-sampling of training images and crops that hold a rare class (dataset.yaml's ``oversample``).

A class covering a fraction of a percent of the pixels (cracks in an SEM micrograph) is in few random crops, so a
network can lower its loss most by never predicting it. Two remedies, both off unless dataset.yaml asks:

- image over-sampling: a ``WeightedRandomSampler`` draws every training image holding a rare-class pixel
  ``factor`` times as often as one without (class-aware sampling, Shen et al. 2016), seeded by the run;
- crop placement (crop mode): with probability ``crop_probability`` a training crop is placed over a random
  rare-class pixel of its image (as nnU-Net's foreground over-sampling does, Isensee et al. 2021), else anywhere.

Only the training partition is touched: validation and test are scored on whole images, as always.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler


def rare_class_indices(class_names: Sequence[str], wanted: Sequence[str]) -> tuple[int, ...]:
    """The mask indices of the ``wanted`` classes; ValueError naming a class the data does not have."""
    missing = [c for c in wanted if c not in class_names]
    if missing:
        raise ValueError(f"rare class(es) {missing} are not among the data's classes {list(class_names)}")
    return tuple(list(class_names).index(c) for c in wanted)


def holds_rare_class(masks: Sequence[np.ndarray], classes: Sequence[int]) -> np.ndarray:
    """(n,) bool: whether each mask has at least one pixel of one of ``classes`` (ignored pixels never count)."""
    return np.array([bool(np.isin(mask, classes).any()) for mask in masks], dtype=bool)


def image_weights(masks: Sequence[np.ndarray], classes: Sequence[int], factor: float) -> np.ndarray:
    """Sampling weight of each training image: ``factor`` for one holding a rare class, 1 for the others."""
    if factor < 1:
        raise ValueError(f"an over-sampling factor is at least 1, got {factor}")
    return np.where(holds_rare_class(masks, classes), float(factor), 1.0)


def rare_class_sampler(masks: Sequence[np.ndarray], classes: Sequence[int], factor: float, seed: int | None,
                       samples_per_image: int = 1) -> WeightedRandomSampler:
    """A sampler over a training dataset of ``len(masks) * samples_per_image`` entries (entry ``i`` comes from image
    ``i // samples_per_image``, as ``RandomCrops`` orders its crops): drawn with replacement, as many per epoch as
    the dataset has, each image weighted by ``image_weights``. ``seed``: a generator of its own (the DataModule's
    seed, so a run repeats); None: torch's global RNG (replicates, which the harness seeds one by one)."""
    weights = np.repeat(image_weights(masks, classes, factor), samples_per_image)
    generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    return WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), num_samples=len(weights),
                                 replacement=True, generator=generator)


class RareClassCrops:
    """Where to put a training crop so that it holds a rare-class pixel: ``origin(image_index, rng)`` gives
    (top, left), or None to let the caller draw a uniform crop (no rare pixel in that image, or the coin said no).
    The rare pixels of every image are found once (flat indices: a rare class has few)."""

    def __init__(self, masks: Sequence[np.ndarray], classes: Sequence[int], crop_size: int, probability: float):
        if not 0 <= probability <= 1:
            raise ValueError(f"crop_probability must be 0-1, got {probability}")
        self.crop_size, self.probability = int(crop_size), float(probability)
        self.shapes = [mask.shape[:2] for mask in masks]
        self.pixels = [np.flatnonzero(np.isin(mask, classes)) for mask in masks]

    def origin(self, image_index: int, rng: np.random.Generator) -> tuple[int, int] | None:
        pixels = self.pixels[image_index]
        # The coin is drawn for every crop, rare pixels or not, so one image's content does not shift the
        # stream of the crops after it.
        if rng.random() >= self.probability or pixels.size == 0:
            return None
        height, width = self.shapes[image_index]
        y, x = divmod(int(pixels[rng.integers(pixels.size)]), width)
        size = self.crop_size
        # Uniform among the windows inside the image that contain (y, x).
        top = int(rng.integers(max(0, y - size + 1), min(y, height - size) + 1))
        left = int(rng.integers(max(0, x - size + 1), min(x, width - size) + 1))
        return top, left
