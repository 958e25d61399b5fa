"""Corrosion rating from a photo: any timm backbone with a cross-entropy, CORAL or CORN head.

Ratings are ordinal (ASTM D1654, 5..9 here), so the same backbone is benchmarked with a plain
cross-entropy head and with two ordinal heads (``matcv.lightning_modules.ordinal``); the leaderboard then
answers Yin 2024's (Part II, Table 2) "ordinal vs cross-entropy" question. Backbones start from random weights unless
``pretrained: imagenet`` (timm's published weights) or a local ``weights_path`` is given
(``lightning_modules.pretrained_weights``); where they came from goes to the record's ``details["weights"]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassCohenKappa

from matcv.lightning_modules.base import BenchmarkModule
from matcv.lightning_modules.ordinal import HEADS, head_decode, head_loss, make_head
from matcv.lightning_modules.pretrained_weights import WeightsFacts, create_timm_backbone
from matcv.lightning_modules.rating_metrics import (
    confusion,
    rating_metrics,
    save_confusion_figure,
)


class RatingEvaluation(BenchmarkModule):
    """Test scoring shared by every rating model, trained or not: one record per test photo, fold-level
    metrics (accuracy, macro-F1, QWK, MAE, within-1) and the fold's confusion matrix."""

    monitor = "val_qwk"  # quadratic-weighted kappa on the grouped validation split
    mode = "max"

    def __init__(self, ratings: Sequence[int] = (5, 6, 7, 8, 9)) -> None:
        super().__init__()
        self.ratings = [int(r) for r in ratings]
        self.num_classes = len(self.ratings)
        self.test_results: list[dict] = []

    def on_test_epoch_start(self) -> None:
        self.test_results = []

    def record_predictions(self, items: Sequence[str], true: Sequence[int], predicted: Sequence[int],
                           confidence: Sequence[float]) -> None:
        for item, t, p, c in zip(items, true, predicted, confidence):
            self.test_results.append({"item_id": item, "rating": int(t), "predicted": int(p), "confidence": float(c),
                                      "correct": float(p == t), "abs_error": float(abs(p - t))})

    def _true_and_predicted(self) -> tuple[list[int], list[int]]:
        return [r["rating"] for r in self.test_results], [r["predicted"] for r in self.test_results]

    def test_summary(self) -> dict[str, float]:
        return rating_metrics(*self._true_and_predicted(), self.ratings)

    # Where the network's starting weights came from (none for a model without one): record details["weights"].
    weights_facts: WeightsFacts = WeightsFacts()

    def test_details(self) -> dict:
        return {"confusion": {"labels": self.ratings, "rows": "true", "columns": "predicted",
                              "matrix": confusion(*self._true_and_predicted(), self.ratings).tolist()},
                "weights": self.weights_facts.as_dict()}

    def save_test_figure(self, path: Path, datamodule=None) -> Path | None:
        if not self.test_results:
            return None
        matrix = confusion(*self._true_and_predicted(), self.ratings)
        return save_confusion_figure(path, matrix, self.ratings, self.figure_title())

    def figure_title(self) -> str:
        return type(self).__name__


class RatingTask(RatingEvaluation):
    def __init__(
        self,
        backbone: str = "resnet18",
        head: str = "ce",
        ratings: Sequence[int] = (5, 6, 7, 8, 9),
        backbone_weights_path: str | None = None,
        in_channels: int = 3,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        class_weights: Sequence[float] | None = None,
        pretrained: str = "none",
        weights_path: str | None = None,
        pretrained_on: str | None = None,
        backbone_args: dict | None = None,
    ) -> None:
        super().__init__(ratings)
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        # The starting weights' source is not needed to rebuild a trained checkpoint (`matcv predict`): left out
        # of the hyper-parameters, so loading one never downloads or looks for a file.
        self.save_hyperparameters(ignore=["pretrained", "weights_path", "pretrained_on", "backbone_weights_path"])
        if backbone_weights_path and weights_path:
            raise ValueError("give weights_path or its alias backbone_weights_path, not both")
        self.backbone, self.weights_facts = create_timm_backbone(
            backbone, in_channels, pretrained, weights_path or backbone_weights_path, pretrained_on,
            **(backbone_args or {}))  # timm keywords fixed at build, e.g. a ViT's or Swin's img_size, window_size
        self.head = make_head(head, self.backbone.num_features, self.num_classes)
        self.init_training_state(in_channels, class_weights)

    def init_training_state(self, in_channels: int, class_weights: Sequence[float] | None) -> None:
        """What the training, validation and test steps use besides the network (also called by a model that
        brings its own network in place of backbone + head)."""
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weights, persistent=False)
        # torchmetrics: synchronised across DDP processes, unlike a hand-rolled accumulation.
        self.val_accuracy = MulticlassAccuracy(self.num_classes, average="micro")
        self.val_qwk = MulticlassCohenKappa(self.num_classes, weights="quadratic")
        # The training fold's channel statistics travel with the weights, so `matcv predict` can standardise
        # new photos exactly as the training photos were.
        self.register_buffer("input_mean", torch.zeros(in_channels))
        self.register_buffer("input_std", torch.ones(in_channels))
        self.register_buffer("image_size", torch.tensor(0))
        lookup = torch.full((max(self.ratings) + 1,), -1, dtype=torch.long)  # rating -> class index, -1 = unknown
        lookup[torch.tensor(self.ratings)] = torch.arange(self.num_classes)
        self.register_buffer("index_of_rating", lookup, persistent=False)

    def set_input_normalization_from(self, datamodule) -> None:
        """The training part's channel mean and std and the image size (the harness calls this before fitting)."""
        train = datamodule.datasets["train"]
        self.set_input_normalization(train.mean, train.std, datamodule.image_size)

    def set_input_normalization(self, mean, std, image_size: int) -> None:
        self.input_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.input_std.copy_(torch.as_tensor(std, dtype=torch.float32))
        self.image_size.fill_(int(image_size))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))

    def rating_index(self, ratings: torch.Tensor) -> torch.Tensor:
        index = self.index_of_rating.to(ratings.device)[ratings.long().clamp(0, len(self.index_of_rating) - 1)]
        in_table = (ratings.long() >= 0) & (ratings.long() < len(self.index_of_rating))
        index = torch.where(in_table, index, -1)
        if (index < 0).any():
            raise ValueError(f"rating(s) {ratings[index < 0].unique().tolist()} not among the task's ratings {self.ratings}")
        return index

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return head_loss(self.hparams.head, logits, labels, self.num_classes, self.class_weights)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._loss(self(batch["image"]), self.rating_index(batch["rating"]))
        self.log("train_loss", loss, batch_size=len(batch["image"]), on_epoch=True, on_step=False, prog_bar=True,
                 sync_dist=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch["image"])
        labels = self.rating_index(batch["rating"])
        predicted, _ = head_decode(self.hparams.head, logits)
        self.val_accuracy.update(predicted, labels)
        self.val_qwk.update(predicted, labels)
        size = len(labels)
        self.log("val_loss", self._loss(logits, labels), batch_size=size, sync_dist=True)
        self.log("val_accuracy", self.val_accuracy, batch_size=size, prog_bar=True)
        self.log("val_qwk", self.val_qwk, batch_size=size, prog_bar=True)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        predicted, probabilities = head_decode(self.hparams.head, self(batch["image"]))
        confidence = probabilities.gather(1, predicted[:, None])[:, 0]
        self.record_predictions(batch["item_id"], batch["rating"].tolist(),
                                [self.ratings[i] for i in predicted.tolist()], confidence.tolist())

    def figure_title(self) -> str:
        return f"{self.hparams.backbone} / {self.hparams.head}"

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
