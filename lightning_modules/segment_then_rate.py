"""Segment, then rate: an smp network segments the corrosion, the ASTM D1654 procedure rates its mask.

The rating models learn the rating from ~100 photos end to end; the procedure the standard prescribes instead
measures creep from the scribe at 12 stations and looks the rating up in a table (``measurements.astm``). This
model follows the standard: a small UNet is trained on the training fold's *masks* (the same fold, images and
augmentation as the rating models, read by a ``target: mask`` twin of the task's DataModule), and each test photo
is rated by the procedure on its predicted mask. ``AstmFromMaskBaseline`` is the same procedure on the true
mask, so each test record carries both, splitting the error in two:

* ``rating_from_true_mask``: the procedure on the true mask (its miss is the procedure's error, ``procedure_error``);
* ``predicted``: the procedure on the predicted mask (its distance to the above is the mask's error, ``mask_error``);
* ``dice``: the predicted mask against the true one.

Not trained by the harness's Trainer (its batches have no masks): ``fit_baseline`` trains the segmentation
network with a Trainer of its own, keeping the weights of the best validation Dice, before the harness tests.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import lightning as L
import numpy as np
import torch

from matcv.datamodules.corrosion import CorrosionPanelsDataModule
from matcv.datamodules.panel_evaluation import rate_mask, rescale_lines
from matcv.datamodules.synthetic.panels import parse_scribe_lines
from matcv.lightning_modules.rating_baselines import AstmFromMaskBaseline
from matcv.lightning_modules.segmentation import SmpSegmentationTask, per_image_dice_iou, tiled_logits


class _KeepBest(L.Callback):
    """Keeps a copy of the weights at the best value of ``monitor`` (in memory: nothing to clean up)."""

    def __init__(self, monitor: str, mode: str) -> None:
        self.monitor, self.mode = monitor, mode
        self.best: float | None = None
        self.state: dict | None = None

    def on_validation_epoch_end(self, trainer, module) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or trainer.sanity_checking:
            return
        value = float(value)
        if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
            self.best, self.state = value, copy.deepcopy(module.state_dict())


class SegmentThenRate(AstmFromMaskBaseline):
    """A small smp network (``arch``, ``encoder_name``, ``arch_kwargs``; ``pretrained`` / ``weights_path`` as
    ``SmpSegmentationTask``) trained ``max_epochs`` on the fold's masks, then the ASTM procedure on its masks."""

    def __init__(self, ratings: Sequence[int] = (5, 6, 7, 8, 9), arch: str = "unet", encoder_name: str = "resnet18",
                 arch_kwargs: dict | None = None, lr: float = 1e-3, max_epochs: int = 20,
                 batch_size: int | None = None, accelerator: str = "auto", scribe_width_mm: float | None = None,
                 pretrained: str = "none", weights_path: str | None = None, pretrained_on: str | None = None) -> None:
        super().__init__(ratings, scribe_width_mm)
        self.save_hyperparameters(ignore=["pretrained", "weights_path", "pretrained_on"])
        # Built here, not when fitting: the run seed fixes its initialisation, and ImageNet weights that cannot
        # be had fail the model's build.
        self.segmenter = SmpSegmentationTask(arch=arch, encoder_name=encoder_name, arch_kwargs=arch_kwargs, lr=lr,
                                             pretrained=pretrained, weights_path=weights_path,
                                             pretrained_on=pretrained_on)
        self.weights_facts = self.segmenter.weights_facts
        self._test_items: dict[str, tuple[torch.Tensor, np.ndarray]] = {}
        self._native_sizes: dict[str, tuple[int, int]] = {}

    def mask_datamodule(self, datamodule) -> CorrosionPanelsDataModule:
        """The fold's photos with their masks: the rating DataModule's settings, ``target: mask``."""
        settings = datamodule.hparams
        masks = CorrosionPanelsDataModule(
            fold_manifest_path=datamodule.fold_manifest_path, fold=datamodule.fold, data_root=datamodule.data_root,
            seed=datamodule.seed, target="mask", image_size=datamodule.image_size,
            batch_size=self.hparams.batch_size or datamodule.batch_size, num_workers=datamodule.num_workers,
            augment=datamodule.augment, augmentation=datamodule.augmentation,
            rating_classes=settings.get("rating_classes"))
        masks.train_fraction = datamodule.train_fraction  # a learning curve's run: the same training groups
        return masks

    def fit_baseline(self, datamodule) -> None:
        super().fit_baseline(datamodule)  # the manifest's scribe lines, mm per pixel and the scribe width
        masks = self.mask_datamodule(datamodule)
        masks.setup("fit")
        self.segmenter.prepare_from_training_data(masks)
        keep = _KeepBest(self.segmenter.monitor, self.segmenter.mode)
        trainer = L.Trainer(max_epochs=self.hparams.max_epochs, accelerator=self.hparams.accelerator, devices=1,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, num_sanity_val_steps=0, callbacks=[keep],
                            deterministic="warn")
        trainer.fit(self.segmenter, datamodule=masks)
        if keep.state is not None:
            self.segmenter.load_state_dict(keep.state)
        test = masks.datasets["test"]
        # The mask DataModule's own test tensors: standardised by the same training part's statistics.
        self._test_items = {item: (test[i]["image"], test.masks[i].astype(bool)) for i, item in enumerate(test.item_ids)}
        self._native_sizes = dict(masks.native_sizes)  # (height, width) of each photo before resizing
        self.segmenter.eval()

    def _procedure(self, item: str, mask: np.ndarray) -> int:
        row = self._rows[item]
        native_width = self._native_width(item)
        scale = mask.shape[1] / native_width  # the DataModule resized the photo to image_size
        lines = rescale_lines(parse_scribe_lines(row.scribe_lines_px), scale)
        return self.clip(rate_mask(mask, lines, self._scribe_width_mm, float(row.mm_per_px) / scale))

    def _native_width(self, item: str) -> int:
        return int(self._native_sizes[item][1])

    def test_step(self, batch: dict, batch_idx: int) -> None:
        items = list(batch["item_id"])
        missing = [i for i in items if i not in self._test_items]
        if missing:
            raise RuntimeError(f"{type(self).__name__}: test items {missing[:3]} were not in the mask DataModule's "
                               f"test part (fit_baseline must run first, on the same fold)")
        images = torch.stack([self._test_items[i][0] for i in items]).to(self.device)
        with torch.no_grad():
            logits = tiled_logits(self.segmenter, images, max(images.shape[-2:]))
        predicted = (logits.sigmoid() > self.segmenter.threshold).cpu().numpy()[:, 0]
        truths = np.stack([self._test_items[i][1] for i in items])
        dice, _ = per_image_dice_iou(logits.cpu(), torch.from_numpy(truths[:, None].astype(np.float32)))
        ratings = [self._procedure(i, m) for i, m in zip(items, predicted)]
        from_truth = [self._procedure(i, m) for i, m in zip(items, truths)]
        self.record_predictions(items, batch["rating"].tolist(), ratings, [1.0] * len(items))
        for record, true_mask_rating, score in zip(self.test_results[-len(items):], from_truth, dice.tolist()):
            record.update({"rating_from_true_mask": true_mask_rating,
                           "procedure_error": float(abs(true_mask_rating - record["rating"])),
                           "mask_error": float(abs(record["predicted"] - true_mask_rating)),
                           "dice": float(score)})

    def rate(self, items: Sequence[str]) -> tuple[list[int], list[float]]:
        raise RuntimeError(f"{type(self).__name__} rates predicted masks in test_step")

    def figure_title(self) -> str:
        return f"{self.hparams.arch}/{self.hparams.encoder_name} mask + ASTM procedure"
