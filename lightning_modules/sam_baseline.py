"""Segment Anything (Kirillov et al. 2023) as a baseline of the corrosion segmentation board, from a local checkpoint.

Yin 2024 notes that SAM does not segment thin corrosion; ``SamBaseline`` puts a number on it. SAM needs a prompt:
each panel's scribe lines (the manifest's ``scribe_lines_px``) give one box per line, widened by ``box_margin_px``
(pixels of the image the model is given, i.e. after the DataModule's resize); the masks of a panel's boxes are
united (pixel-wise maximum of their logits). A panel without scribe lines is prompted with the whole image. The
prompts are inputs, like the photo: no label of a validation or test item is read to make them.

Two modes:
* ``zero-shot``: SAM as published; per box the best of its three masks by SAM's own predicted IoU.
* ``decoder-finetuned``: image and prompt encoders frozen, the mask decoder (single-mask output) fine-tuned on the
  fold's training photos with BCE + Dice for ``epochs`` epochs in ``fit_baseline`` (no augmentation: a flip would
  have to move the box with it); the epoch with the best validation Dice is kept, epoch 0 (the published decoder)
  included.

Weights are never downloaded: ``checkpoint`` is a local file (absolute, from the working directory, or a name in
``$MATCV_WEIGHTS_DIR``; default ``$MATCV_SAM_CHECKPOINT``) read weights-only (``pretrained_weights.read_state_dict``);
a missing one fails at build, naming the file and the official URL. Its sha256 goes to the record's
``details["weights"]``.
``model_type: tiny-test`` is a 64-px, randomly initialisable SAM of ~76k parameters, for tests only.
"""

from __future__ import annotations

import copy
import os
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from segment_anything import SamPredictor, sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from torch import nn

from matcv.datamodules.core.atomic_io import sha256_file
from matcv.datamodules.manifest import MANIFEST_NAME
from matcv.datamodules.synthetic.panels import parse_scribe_lines
from matcv.lightning_modules.edge_losses import RegionLoss
from matcv.lightning_modules.pretrained_weights import (
    WEIGHTS_DIR_ENV,
    WeightsFacts,
    load_state_strictly,
    read_state_dict,
    resolve_weights_path,
)
from matcv.lightning_modules.segmentation import SegmentationEvaluation, per_image_dice_iou

MODES = ("zero-shot", "decoder-finetuned")
TINY_TEST = "tiny-test"
# Meta's published checkpoints (Apache-2.0), https://github.com/facebookresearch/segment-anything
CHECKPOINT_URLS = {
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
}
MODEL_TYPES = (*CHECKPOINT_URLS, TINY_TEST)
TINY_IMAGE_SIZE = 64
RANDOM_TINY = "random"  # checkpoint of the `tiny-test` architecture in smoke tests: random weights, no file
CHECKPOINT_ENV = "MATCV_SAM_CHECKPOINT"  # the checkpoint when the YAML gives none: one YAML entry, any machine


def build_tiny_sam(img_size: int = TINY_IMAGE_SIZE, patch_size: int = 16, embed_dim: int = 32,
                   prompt_dim: int = 32) -> Sam:
    """SAM's architecture shrunk to a 64-px input, a 1-block ViT and 32-channel prompts: what the tests load."""
    grid = img_size // patch_size
    return Sam(
        image_encoder=ImageEncoderViT(img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=1,
                                      num_heads=2, mlp_ratio=4, out_chans=prompt_dim, qkv_bias=True,
                                      norm_layer=partial(nn.LayerNorm, eps=1e-6), use_rel_pos=True,
                                      window_size=2, global_attn_indexes=(0,)),
        prompt_encoder=PromptEncoder(embed_dim=prompt_dim, image_embedding_size=(grid, grid),
                                     input_image_size=(img_size, img_size), mask_in_chans=8),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer_dim=prompt_dim, iou_head_depth=2,
                                 iou_head_hidden_dim=32,
                                 transformer=TwoWayTransformer(depth=1, embedding_dim=prompt_dim, mlp_dim=64,
                                                               num_heads=2)),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])


def build_sam(model_type: str) -> Sam:
    """A randomly initialised SAM of ``model_type`` (its weights come from the checkpoint afterwards)."""
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
    return build_tiny_sam() if model_type == TINY_TEST else sam_model_registry[model_type](checkpoint=None)


def resolve_checkpoint(checkpoint: str | Path | None, model_type: str) -> Path:
    """The local checkpoint file; a missing one names where the official file is published."""
    url = CHECKPOINT_URLS.get(model_type, "(none: tiny-test weights are made by the tests)")
    checkpoint = checkpoint or os.environ.get(CHECKPOINT_ENV)
    if not checkpoint:
        raise FileNotFoundError(f"SamBaseline needs checkpoint (or ${CHECKPOINT_ENV}): the path of a SAM "
                                f"{model_type} checkpoint (download {url}); SAM is never downloaded by matcv")
    try:
        return resolve_weights_path(checkpoint)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"SAM {model_type} checkpoint: {error}. Download the official file from {url} "
                                f"and give its path (or its name under ${WEIGHTS_DIR_ENV})") from error


def scribe_boxes(lines: list[tuple[float, float, float, float]], native_hw: tuple[int, int],
                 image_hw: tuple[int, int], margin_px: float) -> np.ndarray:
    """(n, 4) XYXY boxes, one per scribe line (native-photo pixel-centre coordinates), in the coordinates of the
    photo resized to ``image_hw``, widened by ``margin_px`` on every side and kept inside the image. No line:
    one box of the whole image."""
    height, width = image_hw
    if not lines:
        return np.array([[0.0, 0.0, width - 1.0, height - 1.0]])
    scale_y, scale_x = height / native_hw[0], width / native_hw[1]
    boxes = []
    for x0, y0, x1, y1 in lines:
        xs = [(x + 0.5) * scale_x - 0.5 for x in (x0, x1)]
        ys = [(y + 0.5) * scale_y - 0.5 for y in (y0, y1)]
        boxes.append([max(min(xs) - margin_px, 0.0), max(min(ys) - margin_px, 0.0),
                      min(max(xs) + margin_px, width - 1.0), min(max(ys) + margin_px, height - 1.0)])
    return np.array(boxes, dtype=np.float64)


def manifest_scribe_lines(data_root: str | Path) -> dict[str, list[tuple[float, float, float, float]]]:
    """item id (image_path) -> its scribe lines; empty for a manifest without ``scribe_lines_px`` or a blank cell."""
    path = Path(data_root) / MANIFEST_NAME
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "scribe_lines_px" not in table.columns:
        return {item: [] for item in table["image_path"]}
    lines = {}
    for row, (item, text) in enumerate(zip(table["image_path"], table["scribe_lines_px"]), start=2):
        try:
            lines[item] = parse_scribe_lines(text) if text.strip() else []
        except ValueError as error:
            raise ValueError(f"{path} line {row} ({item}): {error}") from error
    return lines


def _uint8_photo(image: np.ndarray) -> np.ndarray:
    # SAM normalises 0..255 RGB itself; 16-bit sources are stored as floats in [0, 1].
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


class SamBaseline(SegmentationEvaluation):
    """SAM prompted with boxes around the scribe lines, zero-shot or with its mask decoder fine-tuned (module
    docstring). Scored by ``SegmentationEvaluation`` like every segmentation model."""

    requires_training = False  # zero-shot needs nothing; the decoder is fine-tuned in fit_baseline

    def __init__(self, checkpoint: str | None = None, model_type: str = "vit_b", mode: str = "zero-shot",
                 box_margin_px: float = 8.0, epochs: int = 5, lr: float = 1e-4, batch_size: int = 4,
                 num_classes: int = 1, class_names: list[str] | None = None) -> None:
        super().__init__(num_classes, class_names)
        if num_classes != 1:
            raise ValueError(f"SamBaseline segments one foreground (num_classes=1), got num_classes={num_classes}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if box_margin_px < 0 or epochs < 0 or batch_size < 1:
            raise ValueError(f"need box_margin_px >= 0, epochs >= 0, batch_size >= 1; got {box_margin_px}, "
                             f"{epochs}, {batch_size}")
        # The checkpoint's path is where it lies on this machine, not a hyper-parameter of the result.
        self.save_hyperparameters(ignore=["checkpoint"])
        self.sam = build_sam(model_type)
        if checkpoint == RANDOM_TINY and model_type == TINY_TEST:
            # The task YAMLs' `tiny` smoke profile: every model of a YAML builds and takes a step there, and CI has
            # no SAM checkpoint. Only the tiny test architecture may run from random weights, and it says so.
            self.weights_facts = WeightsFacts("none", None, None, "none")
        elif checkpoint == RANDOM_TINY:
            raise ValueError(f"checkpoint {RANDOM_TINY!r} (random weights) is only for model_type {TINY_TEST!r}, the "
                             f"smoke-test architecture; SAM {model_type} needs its checkpoint file")
        else:
            path = resolve_checkpoint(checkpoint, model_type)
            load_state_strictly(self.sam, read_state_dict(path), path, f"SAM {model_type}")
            self.weights_facts = WeightsFacts("local-file", path.name, sha256_file(path), "other")
        for part in (self.sam.image_encoder, self.sam.prompt_encoder):
            part.requires_grad_(False)
        self.sam.mask_decoder.requires_grad_(mode == "decoder-finetuned")
        self.sam.eval()
        self.region_loss = RegionLoss(1, overlap="dice")  # BCE + Dice, as the trained models of the board
        self.finetuning: dict | None = None
        self._lines: dict[str, list] | None = None
        self._batch_items: list[str] = []

    @property
    def multimask(self) -> bool:
        # Zero-shot picks among SAM's three masks; the fine-tuned decoder is trained on its single output.
        return self.hparams.mode == "zero-shot"

    def prepare_from_training_data(self, datamodule) -> None:
        super().prepare_from_training_data(datamodule)
        if self.hparams.mode == "decoder-finetuned" and getattr(datamodule, "has_ignored_pixels", False):
            raise ValueError("SamBaseline (decoder-finetuned) cannot learn from masks with ignored pixels "
                             "(dataset.yaml's 'ignore'): use mode zero-shot, or masks without ignored pixels")

    # ------------------------------------------------------------------ prompts and predictions

    def boxes_for(self, datamodule, item: str, image_hw: tuple[int, int]) -> np.ndarray:
        """The box prompts of one item of ``datamodule`` (its manifest's scribe lines, read once)."""
        if self._lines is None:
            self._lines = manifest_scribe_lines(datamodule.data_root)
        native = datamodule.native_sizes.get(item, image_hw)
        return scribe_boxes(self._lines.get(item, []), native, image_hw, self.hparams.box_margin_px)

    def embed(self, photo: np.ndarray) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
        """SAM's image embedding of one RGB photo (frozen encoder), with its resized and original sizes."""
        predictor = SamPredictor(self.sam)
        predictor.set_image(_uint8_photo(photo))
        return predictor.features, predictor.input_size, predictor.original_size

    def decode(self, embedded: tuple, boxes: np.ndarray) -> torch.Tensor:
        """(1, H, W) logits of one embedded photo (``embed``'s triple): a mask per box (the best-scoring of three
        in zero-shot), united."""
        features, input_size, original_size = embedded
        features = features.to(self.device)
        transform = SamPredictor(self.sam).transform
        boxes_t = torch.as_tensor(transform.apply_boxes(boxes, original_size), dtype=torch.float32,
                                  device=features.device)
        with torch.no_grad():
            sparse, dense = self.sam.prompt_encoder(points=None, boxes=boxes_t, masks=None)
        low_res, scores = self.sam.mask_decoder(
            image_embeddings=features, image_pe=self.sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=self.multimask)
        if self.multimask:
            low_res = low_res[torch.arange(len(low_res)), scores.argmax(dim=1)][:, None]
        masks = self.sam.postprocess_masks(low_res, input_size, original_size)  # (n, 1, H, W)
        return masks.amax(dim=0)

    def forward(self, images: torch.Tensor, boxes: list[np.ndarray] | None = None) -> torch.Tensor:
        """(B, 1, H, W) logits of (B, 3, H, W) RGB photos in 0..255 (not standardised: SAM normalises them),
        prompted with ``boxes`` (one (n, 4) XYXY array per image; default: the whole image)."""
        photos = [np.clip(np.rint(image.permute(1, 2, 0).float().cpu().numpy()), 0, 255).astype(np.uint8)
                  for image in images]
        if boxes is None:
            boxes = [scribe_boxes([], photo.shape[:2], photo.shape[:2], 0.0) for photo in photos]
        with torch.no_grad():
            return torch.stack([self.decode(self.embed(photo), box) for photo, box in zip(photos, boxes)])

    def item_logits(self, datamodule, partition: str, items: list[str]) -> torch.Tensor:
        """(B, 1, H, W) logits of items of a partition, from the DataModule's stored photos (the batch's images
        are standardised with the fold's statistics; SAM wants the photo)."""
        dataset = datamodule.datasets[partition]
        index = {item: k for k, item in enumerate(dataset.item_ids)}
        photos = [_uint8_photo(dataset.images[index[item]]) for item in items]
        boxes = [self.boxes_for(datamodule, item, photo.shape[:2]) for item, photo in zip(items, photos)]
        with torch.no_grad():
            return torch.stack([self.decode(self.embed(photo), box) for photo, box in zip(photos, boxes)])

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._batch_items = list(batch["item_id"])  # what test_logits prompts: the scoring is the shared one
        super().test_step(batch, batch_idx)

    def test_logits(self, images: torch.Tensor) -> torch.Tensor:
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        if datamodule is None or not hasattr(datamodule, "native_sizes"):
            raise RuntimeError("SamBaseline is tested through a Trainer with a corrosion-panel DataModule: its "
                               "prompts come from the manifest's scribe lines of each item")
        return self.item_logits(datamodule, "test", self._batch_items).to(images.device)

    # ------------------------------------------------------------------ decoder fine-tuning

    def fit_baseline(self, datamodule) -> None:
        """decoder-finetuned: ``epochs`` epochs of BCE + Dice on the training photos, the mask decoder only; the
        epoch (0 = published decoder) of best mean validation Dice is kept."""
        if self.hparams.mode != "decoder-finetuned":
            return
        train = self._embedded_partition(datamodule, "train")
        val = self._embedded_partition(datamodule, "val")
        decoder = self.sam.mask_decoder
        optimiser = torch.optim.Adam(decoder.parameters(), lr=self.hparams.lr)
        history = [{"epoch": 0, "train_loss": None, "val_dice": self._mean_dice(val)}]
        best = (history[0]["val_dice"], 0, copy.deepcopy(decoder.state_dict()))
        size = self.hparams.batch_size
        for epoch in range(1, self.hparams.epochs + 1):
            decoder.train()
            order, losses = torch.randperm(len(train)).tolist(), []  # global RNG: seeded by the harness
            for start in range(0, len(order), size):
                chosen = [train[k] for k in order[start:start + size]]
                logits = torch.stack([self.decode(embedded, boxes) for embedded, boxes, _ in chosen])
                masks = torch.stack([mask for _, _, mask in chosen]).to(logits.device)
                loss = self.region_loss(logits, masks)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                losses.append(float(loss.detach()))
            decoder.eval()
            val_dice = self._mean_dice(val)
            history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_dice": val_dice})
            # Without validation items the last epoch is kept (nothing to choose by).
            if val_dice is None or best[0] is None or val_dice > best[0]:
                best = (val_dice, epoch, copy.deepcopy(decoder.state_dict()))
        decoder.load_state_dict(best[2])
        self.finetuning = {"best_epoch": best[1], "history": history}

    def _embedded_partition(self, datamodule, partition: str) -> list:
        """(embedding, boxes, mask) of every photo of a partition: the frozen encoder runs once per photo."""
        dataset = datamodule.datasets.get(partition)
        if dataset is None or len(dataset.item_ids) == 0:
            return []
        out = []
        for item, image, mask in zip(dataset.item_ids, dataset.images, dataset.masks):
            photo = _uint8_photo(image)
            features, input_size, original_size = self.embed(photo)
            out.append(((features.cpu(), input_size, original_size),
                        self.boxes_for(datamodule, item, photo.shape[:2]),
                        torch.from_numpy(np.asarray(mask, dtype=np.float32)[None])))
        return out

    def _mean_dice(self, embedded: list) -> float | None:
        if not embedded:
            return None
        with torch.no_grad():
            logits = torch.stack([self.decode(e, boxes) for e, boxes, _ in embedded])
            dice, _ = per_image_dice_iou(logits.cpu(), torch.stack([m for _, _, m in embedded]))
        return float(dice.mean())

    def test_details(self) -> dict:
        details: dict = {"weights": self.weights_facts.as_dict(),
                         "sam": {"model_type": self.hparams.model_type, "mode": self.hparams.mode,
                                 "box_margin_px": self.hparams.box_margin_px}}
        if self.finetuning is not None:
            details["sam"]["finetuning"] = self.finetuning
        return details
