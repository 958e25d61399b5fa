"""A rater whose backbone starts from an encoder pre-trained, in domain, to segment the fold's training masks.

ImageNet weights help a rater trained on ~100 photos (Yin 2024, Table 1); the corrosion masks are a second,
in-domain source of pre-training that the data already has. ``SegmentationPretrainedRater`` first trains a
UNet (smp, ``seg_arch`` with encoder ``backbone``) on the masks of the fold's *training* photos only (no
validation, no test photo is seen: a fixed number of epochs, the last weights kept), then copies its encoder
into the timm backbone of an otherwise ordinary ``RatingTask`` (smp's ResNet encoders and timm's ResNets name
their tensors alike; every tensor must fit), which the harness then fine-tunes on the ratings. The record's
``details["weights"]`` says ``pretrained_on: in-domain`` and ``details["segmentation_pretraining"]`` what the
segmentation stage saw.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import lightning as L
import torch

from matcv.lightning_modules.pretrained_weights import WeightsFacts, load_state_strictly
from matcv.lightning_modules.rating import RatingTask
from matcv.lightning_modules.segment_and_rate import panel_datamodule_like
from matcv.lightning_modules.segmentation import SmpSegmentationTask

SOURCE = "segmentation of the fold's training masks"


class _SeenItems(L.Callback):
    """The item ids of every batch the segmentation stage trained or validated on (what the test checks)."""

    def __init__(self) -> None:
        self.train: set[str] = set()
        self.evaluated: set[str] = set()

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.train.update(batch["item_id"])

    def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0) -> None:
        self.evaluated.update(batch["item_id"])


def train_segmentation_encoder(datamodule, encoder_name: str, arch: str = "unet", arch_kwargs: dict | None = None,
                               lr: float = 1e-3, max_epochs: int = 20, batch_size: int | None = None,
                               accelerator: str = "auto") -> tuple[dict[str, torch.Tensor], dict]:
    """Train an smp ``arch`` with encoder ``encoder_name`` on the training part's masks of the fold of
    ``datamodule`` (a corrosion-panel DataModule); its encoder's state dict (CPU copies) and what it saw."""
    started = time.time()
    masks = panel_datamodule_like(datamodule, "mask", batch_size)
    masks.setup("fit")
    segmenter = SmpSegmentationTask(arch=arch, encoder_name=encoder_name, arch_kwargs=arch_kwargs, lr=lr)
    segmenter.prepare_from_training_data(masks)
    seen = _SeenItems()
    # Only the training loader: no validation photo may choose or shape the weights the rater starts from.
    trainer = L.Trainer(max_epochs=max_epochs, accelerator=accelerator, devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[seen], deterministic="warn")
    trainer.fit(segmenter, train_dataloaders=masks.train_dataloader())
    state = {k: v.detach().cpu().clone() for k, v in segmenter.net.encoder.state_dict().items()}
    loss = trainer.callback_metrics.get("train_loss")
    facts = {"arch": arch, "encoder": encoder_name, "epochs": int(trainer.current_epoch),
             "train_items": len(masks.datasets["train"]), "items_seen": sorted(seen.train),
             "items_evaluated": sorted(seen.evaluated),
             "final_train_loss": float(loss) if loss is not None else None, "seconds": time.time() - started}
    return state, facts


class SegmentationPretrainedRater(RatingTask):
    """``RatingTask`` (timm ``backbone``, ``head``) whose backbone starts from the encoder of a UNet trained
    ``seg_max_epochs`` on the fold's training masks (``seg_arch``, ``seg_arch_kwargs``, ``seg_lr``,
    ``seg_batch_size``; on ``accelerator``)."""

    def __init__(self, backbone: str = "resnet18", head: str = "ce", ratings: Sequence[int] = (5, 6, 7, 8, 9),
                 lr: float = 1e-3, weight_decay: float = 0.0, class_weights: Sequence[float] | None = None,
                 seg_arch: str = "unet", seg_arch_kwargs: dict | None = None, seg_lr: float = 1e-3,
                 seg_max_epochs: int = 20, seg_batch_size: int | None = None, accelerator: str = "auto") -> None:
        if (seg_arch_kwargs or {}).get("encoder_depth", 5) != 5:
            raise ValueError("the rater's backbone is the segmentation network's whole encoder: seg_arch_kwargs "
                             "cannot shorten it (encoder_depth must be 5; make the decoder smaller instead)")
        import segmentation_models_pytorch as smp

        if backbone not in smp.encoders.get_encoder_names():
            raise ValueError(f"backbone {backbone!r} is no smp encoder, so no UNet can pre-train it: use a name both "
                             f"timm and smp know with the same tensors (resnet18, resnet34, resnet50, ...)")
        super().__init__(backbone=backbone, head=head, ratings=ratings, lr=lr, weight_decay=weight_decay,
                         class_weights=class_weights)
        self.save_hyperparameters()
        self.pretraining: dict | None = None  # what the segmentation stage saw (record details)
        self.segmentation_encoder_state: dict[str, torch.Tensor] | None = None

    def prepare_from_training_data(self, datamodule) -> None:
        super().prepare_from_training_data(datamodule)
        hp = self.hparams
        state, self.pretraining = train_segmentation_encoder(
            datamodule, hp.backbone, hp.seg_arch, hp.seg_arch_kwargs, hp.seg_lr, hp.seg_max_epochs,
            hp.seg_batch_size, hp.accelerator)
        load_state_strictly(self.backbone, state, f"the {hp.seg_arch} encoder trained on the fold's masks",
                            f"timm backbone {hp.backbone}")
        self.segmentation_encoder_state = state
        self.weights_facts = WeightsFacts(source=SOURCE, pretrained_on="in-domain")

    def test_details(self) -> dict:
        details = super().test_details()
        if self.pretraining is not None:
            details["segmentation_pretraining"] = {k: v for k, v in self.pretraining.items()
                                                   if k not in ("items_seen", "items_evaluated")}
        return details

    def figure_title(self) -> str:
        return f"{self.hparams.backbone} (segmentation-pretrained) / {self.hparams.head}"
