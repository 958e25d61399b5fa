"""Binary segmentation tasks: smp architectures trained with BCE + Dice (seed 000, eq. 1).

``SegmentationEvaluation`` owns what every segmentation model shares — per-image Dice and IoU on
validation and test (smp.metrics, threshold 0.5) and the list of per-image test scores the harness
records — so a trained network and an untrained baseline are scored by the same code.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import segmentation_models_pytorch as smp
import torch
from torch import nn

from lightning_modules.segmentation_figures import save_segmentation_examples


def per_image_dice_iou(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Dice (F1) and IoU of each image of a batch; an empty prediction of an empty mask scores 1."""
    stats = smp.metrics.get_stats(logits.sigmoid(), target.long(), mode="binary", threshold=threshold)
    dice = smp.metrics.f1_score(*stats, reduction="none", zero_division=1.0)
    iou = smp.metrics.iou_score(*stats, reduction="none", zero_division=1.0)
    return dice.flatten(), iou.flatten()


class SegmentationEvaluation(L.LightningModule):
    """Validation/test scoring shared by all binary segmentation models."""

    monitor = "val_dice"  # checkpoint selection: grouped validation split only, never test
    mode = "max"
    requires_training = True
    n_figure_examples = 6
    ddp_find_unused_parameters = False  # what this model needs from a DDP Trainer

    def __init__(self) -> None:
        super().__init__()
        self.threshold = 0.5
        self.test_results: list[dict] = []
        self._val_scores: list[torch.Tensor] = []

    def _score(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self(batch["image"])
        dice, iou = per_image_dice_iou(logits, batch["mask"], self.threshold)
        return logits, dice, iou

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits, dice, iou = self._score(batch)
        self.log("val_loss", self.loss(logits, batch["mask"]), batch_size=len(dice), sync_dist=True)
        self.log("val_dice", dice.mean(), batch_size=len(dice), sync_dist=True, prog_bar=True)
        self.log("val_iou", iou.mean(), batch_size=len(dice), sync_dist=True)

    def on_test_epoch_start(self) -> None:
        self.test_results = []
        self.test_examples: dict[str, np.ndarray] = {}  # item id -> probability map, for the figure

    def test_step(self, batch: dict, batch_idx: int) -> None:
        logits, dice, iou = self._score(batch)
        for item, d, i in zip(batch["item_id"], dice.tolist(), iou.tolist()):
            self.test_results.append({"item_id": item, "dice": d, "iou": i})
        for item, probability in zip(batch["item_id"], logits.sigmoid()[:, 0]):
            if len(self.test_examples) < self.n_figure_examples:
                self.test_examples[item] = probability.float().cpu().numpy()
        self.log("test_dice", dice.mean(), batch_size=len(dice))
        self.log("test_iou", iou.mean(), batch_size=len(dice))

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.zeros((), device=logits.device)

    def save_test_figure(self, path: Path, datamodule) -> Path | None:
        """Photo / probability / error overlay of the first test images (the harness calls this)."""
        if not self.test_examples:
            return None
        test = datamodule.datasets["test"]
        index = {item: i for i, item in enumerate(test.item_ids)}
        scores = {r["item_id"]: r["dice"] for r in self.test_results}
        items = list(self.test_examples)
        return save_segmentation_examples(
            path, [test.images[index[i]] for i in items], [test.masks[index[i]] for i in items],
            [self.test_examples[i] for i in items], [f"{Path(i).name}  Dice {scores[i]:.3f}" for i in items],
            self.threshold)


class BinarySegmentationTask(SegmentationEvaluation):
    """Any smp architecture (``unet``, ``unetplusplus``, ``fpn``, ...) with any smp/timm encoder by name.

    Encoders start from random weights (``encoder_weights=None``): nothing is downloaded. A local
    weights file for the encoder (a plain state dict, loaded with ``weights_only=True``) may be given.
    """

    def __init__(
        self,
        arch: str = "unet",
        encoder_name: str = "resnet18",
        encoder_weights_path: str | None = None,
        in_channels: int = 3,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        bce_weight: float = 1.0,
        dice_weight: float = 1.0,
        arch_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = smp.create_model(arch, encoder_name=encoder_name, encoder_weights=None,
                                    in_channels=in_channels, classes=1, **(arch_kwargs or {}))
        if encoder_weights_path:
            load_encoder_weights(self.net.encoder, encoder_weights_path)
        # A shallower encoder (encoder_depth < 5) keeps smp's deepest encoder stages unused: DDP must know.
        self.ddp_find_unused_parameters = (arch_kwargs or {}).get("encoder_depth", 5) < 5
        self.bce = nn.BCEWithLogitsLoss()
        self.dice = smp.losses.DiceLoss(mode="binary", from_logits=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.hparams.bce_weight * self.bce(logits, target) + self.hparams.dice_weight * self.dice(logits, target)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch["image"]), batch["mask"])
        self.log("train_loss", loss, batch_size=len(batch["image"]), on_epoch=True, on_step=False, prog_bar=True,
                 sync_dist=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load a local encoder state dict safely (no pickle execution); name what does not fit."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights file {path} not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    own = encoder.state_dict()
    matching = {k: v for k, v in state.items() if k in own and getattr(v, "shape", None) == own[k].shape}
    if not matching:
        raise ValueError(f"{path}: none of its tensors match the encoder (file has e.g. {list(state)[:3]})")
    missing = [k for k in own if k not in matching]
    if missing:
        raise ValueError(f"{path}: {len(missing)} encoder tensors missing or of another shape, e.g. {missing[:5]}")
    # smp encoders override load_state_dict (dropping classifier heads), so compare keys ourselves.
    encoder.load_state_dict(matching)


class ConstantMaskBaseline(SegmentationEvaluation):
    """Predict-nothing (value 0) or predict-everything (value 1): the floor every model must clear."""

    requires_training = False

    def __init__(self, value: int = 0) -> None:
        super().__init__()
        if value not in (0, 1):
            raise ValueError(f"a constant mask is all 0 or all 1, got {value!r}")
        self.save_hyperparameters()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logit = 20.0 if self.hparams.value else -20.0
        return torch.full((images.shape[0], 1, *images.shape[2:]), logit, device=images.device)
