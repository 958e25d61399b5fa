"""Baselines that stay on the rating leaderboard (Pelz, Unit 4, §5: "use the simplest model that survives
grouped CV").

* ``HandCraftedRatingBaseline`` — colour statistics of the scribe band and an estimate of its width, fed to a
  scikit-learn classifier fitted on the fold's training photos. What a deep model must beat.
* ``AstmFromMaskBaseline`` — the ASTM D1654 procedure (creep at 12 stations, the table) applied to the
  *ground-truth* mask: an upper bound showing how much of the rating the mask explains.

Neither is trained by a Lightning Trainer: the harness calls ``fit_baseline(datamodule)`` and then tests
them like any model, so they are scored by the same code (``RatingEvaluation``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from matcv.datamodules.measurements.astm import measure_creep_along_lines, rating_from_creep
from matcv.datamodules.manifest import load_manifest, open_image
from matcv.datamodules.synthetic.panels import parse_scribe_lines
from matcv.lightning_modules.rating import RatingEvaluation


def scribe_band_features(image: np.ndarray) -> np.ndarray:
    """Hand-crafted features of one RGB uint8 photo with (near-)vertical scribes.

    Rust is redder than blue (R - B high) whatever the coating, so the column profile of R - B, relative
    to the photo's median, marks the corroded band(s): its peak height, the number of columns above half
    the peak around it (band width, as a fraction of the photo width) and the colour statistics inside vs
    outside the band.
    """
    rgb = image.astype(np.float32) / 255.0
    redness = rgb[..., 0] - rgb[..., 2]
    profile = redness.mean(axis=0) - np.median(redness)
    centre = int(profile.argmax())
    peak = float(profile[centre])
    band = np.zeros_like(profile, bool)
    if peak > 0:  # the contiguous columns around the strongest band, down to half its height
        left, right = centre, centre
        while left > 0 and profile[left - 1] >= 0.5 * peak:
            left -= 1
        while right < len(profile) - 1 and profile[right + 1] >= 0.5 * peak:
            right += 1
        band[left:right + 1] = True
    inside, outside = rgb[:, band].reshape(-1, 3), rgb[:, ~band].reshape(-1, 3)
    inside = inside if inside.size else np.zeros((1, 3), np.float32)
    outside = outside if outside.size else np.zeros((1, 3), np.float32)
    width_fraction = band.mean()
    strong = (profile >= 0.25 * peak).mean() if peak > 0 else 0.0
    return np.concatenate([
        [peak, width_fraction, strong, redness.std(), (redness > np.median(redness) + 0.1).mean()],
        inside.mean(0), inside.std(0), outside.mean(0), outside.std(0), inside.mean(0) - outside.mean(0),
    ]).astype(np.float32)


class _TestItemsBaseline(RatingEvaluation):
    """Baseline not trained by Lightning; a subclass's ``rate(items) -> (ratings, confidences)`` rates test
    photos by their item ids (after ``fit_baseline``)."""

    requires_training = False

    def __init__(self, ratings: Sequence[int] = (5, 6, 7, 8, 9)) -> None:
        super().__init__(ratings)
        # A parameter-free module still needs a device anchor for Lightning.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(f"{type(self).__name__} rates photos through test_step, not forward")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        predicted, confidence = self.rate(list(batch["item_id"]))
        self.record_predictions(batch["item_id"], batch["rating"].tolist(), predicted, confidence)

    def clip(self, rating: int) -> int:
        # The leaderboard's classes are the task's ratings; a rating beyond them counts as the nearest one.
        return int(min(max(rating, self.ratings[0]), self.ratings[-1]))


class PhotoFeatureBaseline(_TestItemsBaseline):
    """A scikit-learn ``classifier`` (a pipeline) on ``photo_features(image)`` of the raw photos: fitted on the
    training partition, it rates test photos by their item ids. Subclasses name the features (the class attribute
    ``photo_features = staticmethod(...)``) and the classifier."""

    def __init__(self, classifier, ratings: Sequence[int] = (5, 6, 7, 8, 9)) -> None:
        super().__init__(ratings)
        self.classifier = classifier
        self._images: dict[str, np.ndarray] = {}

    def fit_baseline(self, datamodule) -> None:
        train = datamodule.datasets["train"]
        features = np.stack([self.photo_features(image) for image in train.images])
        self.classifier.fit(features, np.asarray(train.ratings))
        test = datamodule.datasets["test"]
        self._images = dict(zip(test.item_ids, test.images))  # raw photos, not the standardised tensors

    def rate(self, items: Sequence[str]) -> tuple[list[int], list[float]]:
        probabilities = self.classifier.predict_proba(np.stack([self.photo_features(self._images[i]) for i in items]))
        classes = self.classifier.classes_
        best = probabilities.argmax(1)
        return [self.clip(int(classes[b])) for b in best], probabilities.max(1).tolist()


class HandCraftedRatingBaseline(PhotoFeatureBaseline):
    photo_features = staticmethod(scribe_band_features)

    def __init__(self, classifier: str = "random_forest", ratings: Sequence[int] = (5, 6, 7, 8, 9), seed: int = 0):
        if classifier == "random_forest":
            model = RandomForestClassifier(n_estimators=300, min_samples_leaf=2, random_state=seed)
        elif classifier == "logistic":
            model = LogisticRegression(max_iter=2000)
        else:
            raise ValueError(f"classifier must be 'random_forest' or 'logistic', got {classifier!r}")
        super().__init__(make_pipeline(StandardScaler(), model), ratings)
        self.save_hyperparameters()

    def figure_title(self) -> str:
        return f"hand-crafted features + {self.hparams.classifier}"


class AstmFromMaskBaseline(_TestItemsBaseline):
    """Needs the manifest's ``mask_path``, ``scribe_lines_px`` and ``mm_per_px`` (the synthetic panels have
    them); the scribe width comes from the data root's ``generator.json`` unless given."""

    REQUIRED_COLUMNS = ("mask_path", "scribe_lines_px", "mm_per_px")

    def __init__(self, ratings: Sequence[int] = (5, 6, 7, 8, 9), scribe_width_mm: float | None = None):
        super().__init__(ratings)
        self.save_hyperparameters()
        self._rows: dict[str, object] = {}
        self._root: Path | None = None
        self._scribe_width_mm = scribe_width_mm

    def fit_baseline(self, datamodule) -> None:
        self._root = Path(datamodule.data_root)
        table = load_manifest(self._root, datamodule.spec)
        missing = [c for c in self.REQUIRED_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"{self._root / 'manifest.csv'} lacks column(s) {missing}, which the ASTM-from-mask "
                             f"baseline needs (the synthetic panels have them)")
        if self._scribe_width_mm is None:
            settings = self._root / "generator.json"
            if not settings.is_file():
                raise ValueError(f"{settings} not found: give scribe_width_mm to the ASTM-from-mask baseline")
            self._scribe_width_mm = float(json.loads(settings.read_text())["scribe_width_mm"])
        self._rows = {row.image_path: row for row in table.itertuples(index=False)}

    def rate(self, items: Sequence[str]) -> tuple[list[int], list[float]]:
        ratings = []
        for item in items:
            row = self._rows[item]
            with open_image(self._root / row.mask_path) as handle:  # a decompression bomb is a bad file
                mask = np.asarray(handle.convert("L")) > 0
            creep, _ = measure_creep_along_lines(mask, parse_scribe_lines(row.scribe_lines_px),
                                                 self._scribe_width_mm, float(row.mm_per_px))
            ratings.append(self.clip(rating_from_creep(creep)))
        return ratings, [1.0] * len(ratings)

    def figure_title(self) -> str:
        return "ASTM procedure on the true mask"
