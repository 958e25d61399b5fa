"""Segmentation tasks: smp architectures trained with BCE + Dice, and their shared scoring.

``SegmentationEvaluation`` owns what every segmentation model shares — per-image Dice and IoU on
validation and test (smp.metrics, threshold 0.5) and the list of per-image test scores the harness
records — so a trained network and an untrained baseline are scored by the same code.

A user's data (``datamodules/user_segmentation.py``) may mark pixels as ignored (class index
``IGNORE_INDEX``): they are left out of every score, and ``SmpSegmentationTask`` leaves them out of its loss.
Its whole test images may be larger than the training crops: the DataModule's ``eval_tile_size`` then has
them scored tile by tile (overlapping tiles, logits averaged), every pixel once. In resize mode its test images
are resized but their masks native: the logits are then upsampled to the mask's size (``at_mask_size``) and
scored there, so crop and resize modes report scores on the same pixels.

Rare classes: a multi-class test record also counts, per class, the pixels predicted (``pred_px_<class>``) and
true (``true_px_<class>``), so a table can say which class a model never predicts; ``SmpSegmentationTask`` takes
another loss (``loss``, ``class_weights``, or dataset.yaml's ``loss:``; ``lightning_modules.segmentation_losses``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from matcv.datamodules.dataset_description import IGNORE_INDEX
from matcv.lightning_modules.base import BenchmarkModule
from matcv.lightning_modules.edge_losses import RegionLoss
from matcv.lightning_modules.pretrained_weights import create_smp_model, load_local_weights
from matcv.lightning_modules.segmentation_losses import (
    INVERSE_FREQUENCY,
    build_loss,
    class_pixel_counts,
    inverse_frequency_weights,
    loss_spec,
    training_masks,
)
from matcv.lightning_modules.segmentation_figures import (
    save_class_map_examples,
    save_segmentation_examples,
)


def _ignored(target: torch.Tensor) -> torch.Tensor | None:
    """The ignored pixels of a target, or None when it has none (the usual case: scores computed as always)."""
    ignored = target == IGNORE_INDEX
    return ignored if bool(ignored.any()) else None


def per_image_dice_iou(logits: torch.Tensor, target: torch.Tensor,
                       threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Dice (F1) and IoU of each image of a batch; an empty prediction of an empty mask scores 1. Ignored
    pixels count as true negatives, which neither Dice nor IoU reads."""
    probabilities, target = logits.sigmoid(), target.long()
    ignored = _ignored(target)
    if ignored is not None:
        probabilities, target = probabilities.masked_fill(ignored, 0.0), target.masked_fill(ignored, 0)
    stats = smp.metrics.get_stats(probabilities, target, mode="binary", threshold=threshold)
    dice = smp.metrics.f1_score(*stats, reduction="none", zero_division=1.0)
    iou = smp.metrics.iou_score(*stats, reduction="none", zero_division=1.0)
    return dice.flatten(), iou.flatten()


def per_image_class_dice_iou(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-class: (B, C) Dice and IoU of every class on every image (argmax prediction). A class absent
    from both truth and prediction scores 1 on that image, so mean IoU is the usual per-image mIoU. Ignored
    pixels are left out."""
    target = target.long()
    stats = smp.metrics.get_stats(logits.argmax(dim=1), target, mode="multiclass", num_classes=logits.shape[1],
                                  ignore_index=IGNORE_INDEX if _ignored(target) is not None else None)
    dice = smp.metrics.f1_score(*stats, reduction="none", zero_division=1.0)
    iou = smp.metrics.iou_score(*stats, reduction="none", zero_division=1.0)
    return dice, iou


class SegmentationEvaluation(BenchmarkModule):
    """Validation/test scoring shared by all segmentation models, binary (``num_classes == 1``: a
    (B, 1, H, W) logit map, sigmoid) or multi-class (``num_classes > 1``: (B, C, H, W), softmax).

    Per test image: ``dice`` and ``iou`` (for multi-class: their means over classes, i.e. mIoU) and, for
    multi-class, ``dice_<class>`` / ``iou_<class>`` (a class absent from both truth and prediction scores 1) and
    the pixel counts ``pred_px_<class>`` / ``true_px_<class>`` (ignored pixels not counted). A datamodule with an ``item_evaluator`` adds what its
    data knows per item (the corrosion panels: difficulty flags, false positives on stains, the ASTM
    rating measured from the predicted mask).
    """

    monitor = "val_dice"  # checkpoint selection: grouped validation split only, never test
    mode = "max"
    n_figure_examples = 6
    learns_ignored_pixels = False  # True where ``loss`` leaves IGNORE_INDEX pixels out (else such data is refused)

    def __init__(self, num_classes: int = 1, class_names: list[str] | None = None) -> None:
        super().__init__()
        if class_names is not None and len(class_names) != max(num_classes, 2):
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else [f"class{i}" for i in range(max(num_classes, 2))]
        self.threshold = 0.5
        self.test_results: list[dict] = []

    def prepare_from_training_data(self, datamodule) -> None:
        """Refuse data this model cannot learn, before any training: another number of classes than its outputs
        (a DataModule that states ``num_classes``), or ignored pixels its loss would take for a class."""
        super().prepare_from_training_data(datamodule)
        wanted = getattr(datamodule, "num_classes", None)
        if wanted is not None and int(wanted) != self.num_classes:
            names = list(getattr(datamodule, "class_names", []))
            raise ValueError(f"{type(self).__name__} has num_classes={self.num_classes} but the data has "
                             f"{len(names) or wanted} classes {names} (a model needs num_classes={wanted}: 1 for two "
                             f"classes, else one per class); set num_classes and class_names in the task YAML, or run "
                             f"`matcv bench --data-root`, which sets them from the data's dataset.yaml")
        ignored = getattr(datamodule, "has_ignored_pixels", False)
        if ignored and self.requires_training and not self.learns_ignored_pixels:
            raise ValueError(f"{type(self).__name__} cannot learn from masks with ignored pixels (dataset.yaml's "
                             f"'ignore'): its loss has no ignore index and would learn them as a class; train "
                             f"SmpSegmentationTask models on this data, or give masks without ignored pixels")

    def test_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of whole test images: in one pass, or tile by tile where the DataModule says so
        (``eval_tile_size``: a user's images at native resolution, larger than the training crops)."""
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        tile = getattr(datamodule, "eval_tile_size", None)
        return self(images) if tile is None else tiled_logits(self, images, int(tile))

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
        logits = at_mask_size(self.test_logits(batch["image"]), batch["mask"])
        scores = self._scores(logits, batch["mask"])
        predicted = self.predicted_mask(logits).cpu().numpy()
        truth = batch["mask"].cpu().numpy().reshape(predicted.shape)
        evaluator = self._item_evaluator()
        for k, (item, row) in enumerate(zip(batch["item_id"], scores)):
            extra = evaluator(item, predicted[k], truth[k]) if evaluator is not None else {}
            counts = self._pixel_counts(predicted[k], truth[k]) if self.num_classes > 1 else {}
            self.test_results.append({"item_id": item, **row, **counts, **extra})
            if len(self.test_examples) < self.n_figure_examples:
                shown = logits[k, 0].sigmoid() if self.num_classes == 1 else predicted[k]
                self.test_examples[item] = np.asarray(shown.float().cpu() if torch.is_tensor(shown) else shown)
        self.log("test_dice", float(np.mean([s["dice"] for s in scores])), batch_size=len(scores))
        self.log("test_iou", float(np.mean([s["iou"] for s in scores])), batch_size=len(scores))

    def _pixel_counts(self, predicted: np.ndarray, truth: np.ndarray) -> dict[str, int]:
        """Multi-class: pixels predicted as / truly of each class on one test image, ignored pixels left out
        (what says that a model never predicts a rare class, which its per-class IoU of 1 on images without the
        class hides)."""
        scored = truth != IGNORE_INDEX
        predicted_counts = np.bincount(predicted[scored].ravel(), minlength=self.num_classes)
        true_counts = np.bincount(truth[scored].ravel().astype(np.int64), minlength=self.num_classes)
        counts = {f"pred_px_{name}": int(n) for name, n in zip(self.class_names, predicted_counts)}
        counts.update({f"true_px_{name}": int(n) for name, n in zip(self.class_names, true_counts)})
        return counts

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
        truths = [test.masks[index[i]] for i in items]
        images = [_displayable(test.images[index[i]], np.shape(truth)) for i, truth in zip(items, truths)]
        if self.num_classes == 1:
            return save_segmentation_examples(
                path, images, truths, [self.test_examples[i] for i in items],
                [f"{Path(i).name}  Dice {scores[i]['dice']:.3f}" for i in items], self.threshold)
        return save_class_map_examples(path, images, truths, [self.test_examples[i] for i in items],
                                       [f"{Path(i).name}  mIoU {scores[i]['iou']:.3f}" for i in items],
                                       self.class_names)


def _displayable(image: np.ndarray, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """uint8 RGB of a stored test image (16-bit sources are kept as floats in [0, 1]), at its mask's ``shape``
    (a resized test image is shown at the native size it was scored at)."""
    image = np.asarray(image)
    image = image if image.dtype == np.uint8 else np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    if shape is not None and image.shape[:2] != tuple(shape[-2:]):
        resized = F.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None].float(), size=tuple(shape[-2:]),
                                mode="bilinear", align_corners=False)
        image = resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    return image


def at_mask_size(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits (B, C, h, w) brought to the size of their mask (B, H, W) or (B, 1, H, W): unchanged when the sizes
    agree; else bilinear on the logits (before any threshold or argmax). Resize mode scores this way: the
    prediction at the image's native size against the native mask, whose class indices are never interpolated."""
    size = tuple(mask.shape[-2:])
    if tuple(logits.shape[-2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


NETWORK_MULTIPLE = 32  # five 2x down-samplings of a UNet encoder


def _pad(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pad (bottom, right) to height x width: mirrored where the image is large enough, else repeated edges."""
    bottom, right = height - images.shape[-2], width - images.shape[-1]
    if bottom == 0 and right == 0:
        return images
    mode = "reflect" if bottom < images.shape[-2] and right < images.shape[-1] else "replicate"
    return F.pad(images, (0, right, 0, bottom), mode=mode)


def tiled_logits(network, images: torch.Tensor, tile: int) -> torch.Tensor:
    """Logits of whole images (B, 3, H, W) of any size: padded to a multiple of 32 and, where larger than
    ``tile``, predicted in tiles of ``tile`` px with half-tile overlap whose logits are averaged, then cut back
    to H x W. Every pixel is predicted with the context the network was trained with (crops of ``tile``)."""
    height, width = images.shape[-2:]
    if height <= tile and width <= tile:
        padded = _pad(images, -(-height // NETWORK_MULTIPLE) * NETWORK_MULTIPLE,
                      -(-width // NETWORK_MULTIPLE) * NETWORK_MULTIPLE)
        return network(padded)[..., :height, :width]
    stride = max(1, tile // 2)  # tiles are multiples of 32; where they start is free

    def span(size: int) -> int:  # at least one tile, and a whole number of strides after it
        return tile + -(-max(size - tile, 0) // stride) * stride

    padded = _pad(images, span(height), span(width))
    total, count = None, torch.zeros(padded.shape[-2:], device=images.device)
    for top in range(0, padded.shape[-2] - tile + 1, stride):
        for left in range(0, padded.shape[-1] - tile + 1, stride):
            window = (..., slice(top, top + tile), slice(left, left + tile))
            logits = network(padded[window])
            if total is None:
                total = torch.zeros((*logits.shape[:2], *padded.shape[-2:]), dtype=logits.dtype, device=logits.device)
            total[window] += logits
            count[top:top + tile, left:left + tile] += 1
    return (total / count)[..., :height, :width]


class SmpSegmentationTask(SegmentationEvaluation):
    """Any smp architecture (``unet``, ``unetplusplus``, ``fpn``, ...) with any smp/timm encoder by name,
    trained with BCE + Dice, or cross-entropy + Dice for ``num_classes > 1``.

    ``loss`` (a name: ce | dice | focal | tversky | lovasz, or ``{name:, alpha:, beta:, gamma:, class_weights:}``)
    and ``class_weights`` (one per class, or "inverse_frequency": from the training part's masks) choose another
    loss (``segmentation_losses``); without them the data's dataset.yaml ``loss:`` is used, if it has one, else
    the default. The model's arguments win over dataset.yaml's.

    Encoders start from random weights unless ``pretrained: imagenet`` (smp's published weights, from
    ``$MATCV_WEIGHTS_DIR`` or the hub) or ``weights_path`` (alias ``encoder_weights_path``: a local safetensors
    file or weights-only state dict; ``pretrained_on`` says what on) is given: ``lightning_modules.pretrained_weights``,
    whose facts go to the record's ``details["weights"]``.
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
        loss: str | dict | None = None,
        class_weights: list[float] | str | None = None,
        pretrained: str = "none",
        weights_path: str | None = None,
        pretrained_on: str | None = None,
    ) -> None:
        super().__init__(num_classes, class_names)
        # Where the starting weights came from is not needed to rebuild a trained checkpoint (its weights are
        # in it): left out of the hyper-parameters, so loading one never downloads or looks for a file.
        self.save_hyperparameters(ignore=["pretrained", "weights_path", "pretrained_on", "encoder_weights_path"])
        if encoder_weights_path and weights_path:
            raise ValueError("give weights_path or its alias encoder_weights_path, not both")
        self.net, self.weights_facts = create_smp_model(
            arch, encoder_name, in_channels, num_classes, pretrained, weights_path or encoder_weights_path,
            pretrained_on, **(arch_kwargs or {}))
        # A shallower encoder (encoder_depth < 5) keeps smp's deepest encoder stages unused: DDP must know.
        self.ddp_find_unused_parameters = (arch_kwargs or {}).get("encoder_depth", 5) < 5
        self.region_loss = RegionLoss(num_classes, overlap="dice")
        self.loss_spec = loss_spec(loss, class_weights, max(num_classes, 2))
        self.resolved_class_weights: list[float] | None = None
        # Another loss is built now when nothing about it waits for the data (an inverse-frequency one does).
        needs_data = self.loss_spec is not None and self.loss_spec.class_weights == INVERSE_FREQUENCY
        self.chosen_loss = build_loss(self.loss_spec, num_classes) if self.loss_spec and not needs_data else None

    learns_ignored_pixels = True

    def prepare_from_training_data(self, datamodule) -> None:
        """The checks of ``SegmentationEvaluation``, then the loss: the model's own, else dataset.yaml's; class
        weights "inverse_frequency" from the training masks only."""
        super().prepare_from_training_data(datamodule)
        if self.loss_spec is None:
            description = getattr(datamodule, "description", None)
            source = getattr(description, "source", "dataset.yaml")
            self.loss_spec = loss_spec(getattr(description, "loss", None), None, max(self.num_classes, 2), source)
        if self.loss_spec is None:
            return
        weights = None
        if self.loss_spec.class_weights == INVERSE_FREQUENCY:
            counts = class_pixel_counts(training_masks(datamodule), max(self.num_classes, 2))
            weights = inverse_frequency_weights(counts)
        self.resolved_class_weights = weights
        self.chosen_loss = build_loss(self.loss_spec, self.num_classes, weights)

    def test_details(self) -> dict | None:
        """Where the encoder's weights came from; the loss trained with, when it is not the default (its class
        weights resolved)."""
        details = {"weights": self.weights_facts.as_dict()}
        if self.loss_spec is None:
            return details
        weights = self.resolved_class_weights
        weights = weights if weights is not None else self.loss_spec.class_weights
        return {**details, "loss": {"name": self.loss_spec.name, "class_weights": list(weights) if weights is not None else None,
                         **{k: getattr(self.loss_spec, k) for k in ("alpha", "beta", "gamma")
                            if getattr(self.loss_spec, k) is not None}}}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.loss_spec is not None:
            if self.chosen_loss is None:
                raise RuntimeError("class_weights 'inverse_frequency' are computed from the training masks: "
                                   "call prepare_from_training_data(datamodule) before training")
            return self.chosen_loss(logits, target)
        if _ignored(target) is None:
            return self.region_loss(logits, target)
        return ignoring_region_loss(logits, target, self.num_classes)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch["image"]), batch["mask"])
        self.log("train_loss", loss, batch_size=len(batch["image"]), on_epoch=True, on_step=False, prog_bar=True,
                 sync_dist=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


def ignoring_region_loss(logits: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """RegionLoss's BCE/CE + Dice with IGNORE_INDEX pixels left out of both terms."""
    if num_classes == 1:
        keep = (target != IGNORE_INDEX).float()
        pixelwise = F.binary_cross_entropy_with_logits(logits, (target * keep).float(), weight=keep, reduction="sum")
        pixelwise = pixelwise / keep.sum().clamp_min(1.0)
        overlap = smp.losses.DiceLoss(mode="binary", from_logits=True, ignore_index=IGNORE_INDEX)
    else:
        pixelwise = F.cross_entropy(logits, target.long(), ignore_index=IGNORE_INDEX)
        overlap = smp.losses.DiceLoss(mode="multiclass", from_logits=True, ignore_index=IGNORE_INDEX)
    return pixelwise + overlap(logits, target.long() if num_classes > 1 else target)


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load a local encoder state dict safely (no pickle execution); name what does not fit."""
    load_local_weights(encoder, path, None, "the encoder")


class ConstantMaskBaseline(SegmentationEvaluation):
    """Predict-nothing (value 0) or predict-everything (value 1): the floor every model must clear. On
    multi-class data (``num_classes > 1``) it predicts class ``value`` everywhere (0: all background)."""

    requires_training = False

    def __init__(self, value: int = 0, num_classes: int = 1, class_names: list[str] | None = None) -> None:
        super().__init__(num_classes, class_names)  # binary by default: the corrosion task's floor
        if num_classes == 1 and value not in (0, 1):
            raise ValueError(f"a constant mask is all 0 or all 1, got {value!r}")
        if num_classes > 1 and not (isinstance(value, int) and 0 <= value < num_classes):
            raise ValueError(f"a constant class map is one of the classes 0..{num_classes - 1}, got {value!r}")
        self.save_hyperparameters()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.num_classes > 1:
            logits = torch.full((images.shape[0], self.num_classes, *images.shape[2:]), -20.0, device=images.device)
            logits[:, self.hparams.value] = 20.0
            return logits
        logit = 20.0 if self.hparams.value else -20.0
        return torch.full((images.shape[0], 1, *images.shape[2:]), logit, device=images.device)
