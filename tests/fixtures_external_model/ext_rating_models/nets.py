"""A user's own rating networks, outside matcv: ``build`` returns a plain ``nn.Module`` mapping photos
(B, 3, H, W) to one logit per rating (B, 5) (trained by matcv with cross-entropy); ``TinyOrdinalRater`` is the
LightningModule-class variant with its own ordinal (CORN) loss, for the ``ordinal`` task."""

import torch
from torch import nn

from matcv.lightning_modules.ordinal import head_decode, head_loss, make_head
from matcv.lightning_modules.rating import RatingEvaluation


class TinyCNN(nn.Module):
    """Two convolutions, global average pooling, a linear layer: features (B, width) or logits (B, outputs)."""

    def __init__(self, width: int = 8, outputs: int | None = 5) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.out = nn.Linear(width, outputs) if outputs else nn.Identity()

    def forward(self, images):
        return self.out(self.body(images))


def build(width: int = 8, num_ratings: int = 5) -> nn.Module:
    return TinyCNN(width, num_ratings)


class TinyOrdinalRater(RatingEvaluation):
    """A LightningModule class submission: the harness's scoring contract (RatingEvaluation), its own CORN head,
    loss, validation metric and optimiser."""

    monitor, mode = "val_loss", "min"

    def __init__(self, lr: float = 3e-3, width: int = 8) -> None:
        super().__init__()  # ratings 5..9
        self.save_hyperparameters()
        self.features = TinyCNN(width, outputs=None)
        self.head = make_head("corn", width, self.num_classes)

    def forward(self, images):
        return self.head(self.features(images))

    def labels(self, ratings):
        return ratings.long() - self.ratings[0]  # class indices 0..K-1 (ratings 5..9 are consecutive)

    def training_step(self, batch, batch_idx):
        return head_loss("corn", self(batch["image"]), self.labels(batch["rating"]), self.num_classes)

    def validation_step(self, batch, batch_idx):
        loss = head_loss("corn", self(batch["image"]), self.labels(batch["rating"]), self.num_classes)
        self.log("val_loss", loss, batch_size=len(batch["image"]))

    def test_step(self, batch, batch_idx):
        predicted, probabilities = head_decode("corn", self(batch["image"]))
        confidence = probabilities.gather(1, predicted[:, None])[:, 0]
        self.record_predictions(batch["item_id"], batch["rating"].tolist(),
                                [self.ratings[i] for i in predicted.tolist()], confidence.tolist())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
