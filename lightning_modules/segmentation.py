"""Segmentation tasks: smp architectures trained with BCE + Dice, and their shared scoring.

``SegmentationEvaluation`` owns what every segmentation model shares — per-image Dice and IoU on
validation and test (smp.metrics, threshold 0.5) and the list of per-image test scores the harness
records — so a trained network and an untrained baseline are scored by the same code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch
from torch import nn

from matcv.lightning_modules.base import BenchmarkModule
from matcv.lightning_modules.edge_losses import RegionLoss
from matcv.lightning_modules.segmentation_figures import (
    save_class_map_examples,
    save_segmentation_examples,
)


def per_image_dice_iou(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Dice (F1) and IoU of each image of a batch; an empty prediction of an empty mask scores 1."""
    stats = smp.metrics.get_stats(logits.sigmoid(), target.long(), mode="binary", threshold=threshold)
    dice = smp.metrics.f1_score(*stats, reduction="none", zero_division=1.0)
    iou = smp.metrics.iou_score(*stats, reduction="none", zero_division=1.0)
    return dice.flatten(), iou.flatten()


def per_image_class_dice_iou(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-class: (B, C) Dice and IoU of every class on every image (argmax prediction). A class absent
    from both truth and prediction scores 1 on that image, so mean IoU is the usual per-image mIoU."""
    stats = smp.metrics.get_stats(logits.argmax(dim=1), target.long(), mode="multiclass",
                                  num_classes=logits.shape[1])
    dice = smp.metrics.f1_score(*stats, reduction="none", zero_division=1.0)
    iou = smp.metrics.iou_score(*stats, reduction="none", zero_division=1.0)
    return dice, iou


class SegmentationEvaluation(BenchmarkModule):
    """Validation/test scoring shared by all segmentation models, binary (``num_classes == 1``: a
    (B, 1, H, W) logit map, sigmoid) or multi-class (``num_classes > 1``: (B, C, H, W), softmax).

    Per test image: ``dice`` and ``iou`` (for multi-class: their means over classes, i.e. mIoU) and, for
    multi-class, ``dice_<class>`` / ``iou_<class>``. A datamodule with an ``item_evaluator`` adds what its
    data knows per item (the corrosion panels: difficulty flags, false positives on stains, the ASTM
    rating measured from the predicted mask).
    """

    monitor = "val_dice"  # checkpoint selection: grouped validation split only, never test
    mode = "max"
    n_figure_examples = 6

    def __init__(self, num_classes: int = 1, class_names: list[str] | None = None) -> None:
        super().__init__()
        if class_names is not None and len(class_names) != max(num_classes, 2):
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else [f"class{i}" for i in range(max(num_classes, 2))]
        self.threshold = 0.5
        self.test_results: list[dict] = []

    def predicted_mask(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, H, W) hard prediction: 0/1 (binary) or class indices."""
        if self.num_classes == 1:
            return (logits[:, 0].sigmoid() >= self.threshold).to(torch.uint8)
        return logits.argmax(dim=1).to(torch.uint8)

    def _scores(self, logits: torch.Tensor, target: torch.Tensor) -> list[dict]:
        if self.num_classes == 1:
            dice, iou = per_image_dice_iou(logits, target, self.threshold)
            return [{"dice": d, "iou": i} for d, i in zip(dice.tolist(), iou.tolist())]
        dice, iou = per_image_class_dice_iou(logits, target)
        rows = []
        for d, i in zip(dice.tolist(), iou.tolist()):
            row = {"dice": float(np.mean(d)), "iou": float(np.mean(i))}
            row.update({f"dice_{name}": v for name, v in zip(self.class_names, d)})
            row.update({f"iou_{name}": v for name, v in zip(self.class_names, i)})
            rows.append(row)
        return rows

    def log_validation(self, logits: torch.Tensor, batch: dict, loss: torch.Tensor) -> None:
        scores = self._scores(logits, batch["mask"])
        n = len(scores)
        self.log("val_loss", loss, batch_size=n, sync_dist=True)
        self.log("val_dice", float(np.mean([s["dice"] for s in scores])), batch_size=n, sync_dist=True, prog_bar=True)
        self.log("val_iou", float(np.mean([s["iou"] for s in scores])), batch_size=n, sync_dist=True)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch["image"])
        self.log_validation(logits, batch, self.loss(logits, batch["mask"]))

    def on_test_epoch_start(self) -> None:
        self.test_results = []
        self.test_examples: dict[str, np.ndarray] = {}  # item id -> probability / class map, for the figure

    def _item_evaluator(self):
        # Tested outside a Trainer, or on bare dataloaders, there is no DataModule to ask.
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        return datamodule.item_evaluator if datamodule is not None else None

    def test_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch["image"])
        scores = self._scores(logits, batch["mask"])
        predicted = self.predicted_mask(logits).cpu().numpy()
        truth = batch["mask"].cpu().numpy().reshape(predicted.shape)
        evaluator = self._item_evaluator()
        for k, (item, row) in enumerate(zip(batch["item_id"], scores)):
            extra = evaluator(item, predicted[k], truth[k]) if evaluator is not None else {}
            self.test_results.append({"item_id": item, **row, **extra})
            if len(self.test_examples) < self.n_figure_examples:
                shown = logits[k, 0].sigmoid() if self.num_classes == 1 else predicted[k]
                self.test_examples[item] = np.asarray(shown.float().cpu() if torch.is_tensor(shown) else shown)
        self.log("test_dice", float(np.mean([s["dice"] for s in scores])), batch_size=len(scores))
        self.log("test_iou", float(np.mean([s["iou"] for s in scores])), batch_size=len(scores))

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.zeros((), device=logits.device)

    def save_test_figure(self, path: Path, datamodule) -> Path | None:
        """Photo / prediction / errors of the first test images (the harness calls this)."""
        if not self.test_examples:
            return None
        test = datamodule.datasets["test"]
        index = {item: i for i, item in enumerate(test.item_ids)}
        scores = {r["item_id"]: r for r in self.test_results}
        items = list(self.test_examples)
        images, truths = [test.images[index[i]] for i in items], [test.masks[index[i]] for i in items]
        if self.num_classes == 1:
            return save_segmentation_examples(
                path, images, truths, [self.test_examples[i] for i in items],
                [f"{Path(i).name}  Dice {scores[i]['dice']:.3f}" for i in items], self.threshold)
        return save_class_map_examples(path, images, truths, [self.test_examples[i] for i in items],
                                       [f"{Path(i).name}  mIoU {scores[i]['iou']:.3f}" for i in items],
                                       self.class_names)


class SmpSegmentationTask(SegmentationEvaluation):
    """Any smp architecture (``unet``, ``unetplusplus``, ``fpn``, ...) with any smp/timm encoder by name,
    trained with BCE + Dice, or cross-entropy + Dice for ``num_classes > 1``.

    Encoders start from random weights (``encoder_weights=None``): nothing is downloaded. A local
    weights file for the encoder (a plain state dict, loaded with ``weights_only=True``) may be given.
    """

    def __init__(
        self,
        arch: str = "unet",
        encoder_name: str = "resnet18",
        encoder_weights_path: str | None = None,
        in_channels: int = 3,
        num_classes: int = 1,
        class_names: list[str] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        arch_kwargs: dict | None = None,
    ) -> None:
        super().__init__(num_classes, class_names)
        self.save_hyperparameters()
        self.net = smp.create_model(arch, encoder_name=encoder_name, encoder_weights=None,
                                    in_channels=in_channels, classes=num_classes, **(arch_kwargs or {}))
        if encoder_weights_path:
            load_encoder_weights(self.net.encoder, encoder_weights_path)
        # A shallower encoder (encoder_depth < 5) keeps smp's deepest encoder stages unused: DDP must know.
        self.ddp_find_unused_parameters = (arch_kwargs or {}).get("encoder_depth", 5) < 5
        self.region_loss = RegionLoss(num_classes, overlap="dice")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.region_loss(logits, target)

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
        super().__init__()  # binary: the corrosion task's floor
        if value not in (0, 1):
            raise ValueError(f"a constant mask is all 0 or all 1, got {value!r}")
        self.save_hyperparameters()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logit = 20.0 if self.hparams.value else -20.0
        return torch.full((images.shape[0], 1, *images.shape[2:]), logit, device=images.device)
