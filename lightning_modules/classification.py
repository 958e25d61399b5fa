"""Generic image classification: a timm backbone, and a non-neural baseline on colour and texture statistics.

The classes are a data folder's labels (``benchmarks/configs/classification.yaml``): the DataModule gives each
photo its class index (0..n-1) under the ``rating`` key, so the rating task's network and scoring are reused as
they are (``RatingTask``, ``RatingEvaluation``); only what is ordinal there is not here: the checkpoint is chosen
by validation accuracy, not quadratic kappa, since unordered classes have no distance.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from matcv.lightning_modules.rating import RatingTask
from matcv.lightning_modules.rating_baselines import PhotoFeatureBaseline

CLASSIFIERS = ("majority", "logistic", "random_forest")


class ClassificationTask(RatingTask):
    """``RatingTask`` over unordered classes: cross-entropy, checkpoint by validation accuracy."""

    monitor = "val_accuracy"
    mode = "max"


def colour_texture_features(image: np.ndarray) -> np.ndarray:
    """Per channel mean, std and 10/50/90th percentiles, plus the mean and std of the grey gradient magnitude
    (a crude texture measure): 17 numbers that need no training and no knowledge of the subject."""
    pixels = image.reshape(-1, image.shape[-1]).astype(np.float32)
    pixels = pixels / 255.0 if image.dtype == np.uint8 else pixels
    grey = pixels.mean(1).reshape(image.shape[:2])
    gy, gx = np.gradient(grey)
    magnitude = np.hypot(gx, gy)
    return np.concatenate([pixels.mean(0), pixels.std(0), *np.percentile(pixels, [10, 50, 90], axis=0),
                           [magnitude.mean(), magnitude.std()]]).astype(np.float32)


class ColourTextureBaseline(PhotoFeatureBaseline):
    """Not trained by Lightning: fitted on the training partition's raw photos (``fit_baseline``), then it labels
    test photos by their item ids. ``majority`` always answers the training part's most frequent class (the floor
    every model must beat); ``logistic`` / ``random_forest`` learn from ``colour_texture_features``."""

    monitor = "val_accuracy"
    mode = "max"
    photo_features = staticmethod(colour_texture_features)

    def __init__(self, classifier: str = "logistic", ratings: Sequence[int] = (5, 6, 7, 8, 9), seed: int = 0):
        if classifier not in CLASSIFIERS:
            raise ValueError(f"classifier must be one of {CLASSIFIERS}, got {classifier!r}")
        if classifier == "majority":
            model = DummyClassifier(strategy="most_frequent")
        elif classifier == "logistic":
            model = LogisticRegression(max_iter=2000)
        else:
            model = RandomForestClassifier(n_estimators=200, min_samples_leaf=2, random_state=seed)
        super().__init__(make_pipeline(StandardScaler(), model), ratings)
        self.save_hyperparameters()

    def figure_title(self) -> str:
        return f"colour/texture statistics + {self.hparams.classifier}"
