"""Self-supervised pretraining of a rater's encoder on the fold's own training photos, then supervised fine-tuning.

Yin et al. (2021) compare raters trained from scratch, from ImageNet weights and after PIRL pretraining on their
own panel photos. ``SelfSupervisedRatingTask`` is a ``RatingTask`` whose ``on_fit_start`` first pretrains its
backbone without labels, on the photos of the training partition only (the DataModule's ``datasets["train"]``:
never a validation or test photo), then the Trainer fine-tunes it exactly as it trains the from-scratch twin. Two
methods, chosen by the YAML's ``pretraining: {method: ...}``:

* ``pirl`` (Misra & van der Maaten 2020): a photo's augmented view and a jigsaw of another view of it must map to
  the same embedding, against negatives from a memory bank (lightly's ``NTXentLoss`` with its memory bank).
* ``mae`` (He et al. 2022): a ViT encodes a random quarter of the patches; a small decoder (lightly's masked
  vision transformer modules) reconstructs the hidden ones. Only the encoder is kept.

The pretraining heads and decoder live only during pretraining: the fine-tuned network, its checkpoint and its
parameter count are those of the twin. Pretraining is seeded (its own RNG stream, forked from the run's, so the
fine-tuning draws the same batches as the twin), and what it did goes to the record's ``details``: ``weights``
(``pretrained_on: in-domain``) and ``pretraining`` (loss per epoch, seconds, the photos it saw).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from matcv.lightning_modules.pretrained_weights import WeightsFacts
from matcv.lightning_modules.rating import RatingTask

METHODS = ("pirl", "mae")


@dataclass(frozen=True)
class PretrainingSettings:
    """The YAML's ``pretraining:`` block (unknown keys are an error naming them)."""

    method: str
    epochs: int = 10
    lr: float = 1.0e-3
    weight_decay: float = 1.0e-4
    batch_size: int = 32
    seed: int | None = None            # None: the run's seed (torch's initial seed, set by the harness)
    crop_scale: tuple[float, float] = (0.3, 1.0)   # random-resized-crop area range of the views
    # PIRL
    temperature: float = 0.1
    memory_bank_size: int = 64         # negatives kept from earlier batches (a few batches of a small fold)
    projection_dim: int = 128
    jigsaw_grid: int = 3               # 3 x 3 tiles, as PIRL
    # MAE
    mask_ratio: float = 0.75
    decoder_dim: int = 128
    decoder_depth: int = 1
    decoder_heads: int = 4

    @classmethod
    def from_dict(cls, settings: dict | None) -> PretrainingSettings:
        if not isinstance(settings, dict) or "method" not in settings:
            raise ValueError(f"pretraining must be a mapping with a method among {METHODS}, got {settings!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"pretraining: unknown option(s) {unknown}; known: {sorted(known)}")
        values = dict(settings)
        if "crop_scale" in values:
            values["crop_scale"] = tuple(float(v) for v in values["crop_scale"])
        made = cls(**values)
        if made.method not in METHODS:
            raise ValueError(f"pretraining.method must be one of {METHODS}, got {made.method!r}")
        if made.epochs < 1 or made.batch_size < 2:
            raise ValueError(f"pretraining needs epochs >= 1 and batch_size >= 2 (contrast needs two photos), got "
                             f"epochs={made.epochs}, batch_size={made.batch_size}")
        if not 0.0 < made.mask_ratio < 1.0:
            raise ValueError(f"pretraining.mask_ratio must lie in (0, 1), got {made.mask_ratio}")
        return made


@dataclass(frozen=True)
class SelfSupervisedFacts(WeightsFacts):
    """``WeightsFacts`` of weights pretrained inside the run: sha256 of the pretrained encoder's tensors."""

    epochs: int = 0


def random_views(images: torch.Tensor, scale: tuple[float, float] = (0.3, 1.0),
                 jitter: float = 0.2) -> torch.Tensor:
    """A random resized crop (area fraction in ``scale``, aspect 3/4..4/3), a horizontal and a vertical flip and a
    brightness/contrast jitter per image, batched on the images' device (one ``grid_sample``; torch's global RNG).
    The inputs are standardised photos, so the jitter is an affine change of their values."""
    b = images.shape[0]
    device, dtype = images.device, images.dtype
    area = torch.empty(b, device=device).uniform_(*scale)
    log_ratio = torch.empty(b, device=device).uniform_(math.log(3 / 4), math.log(4 / 3))
    ratio = torch.exp(log_ratio)
    sx = torch.sqrt(area * ratio).clamp(max=1.0)
    sy = torch.sqrt(area / ratio).clamp(max=1.0)
    tx = (torch.rand(b, device=device) * 2 - 1) * (1 - sx)
    ty = (torch.rand(b, device=device) * 2 - 1) * (1 - sy)
    fx = torch.where(torch.rand(b, device=device) < 0.5, -1.0, 1.0)
    fy = torch.where(torch.rand(b, device=device) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=device, dtype=dtype)
    theta[:, 0, 0], theta[:, 0, 2] = sx * fx, tx
    theta[:, 1, 1], theta[:, 1, 2] = sy * fy, ty
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    views = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    contrast = 1 + (torch.rand(b, 1, 1, 1, device=device, dtype=dtype) * 2 - 1) * jitter
    brightness = (torch.rand(b, 1, 1, 1, device=device, dtype=dtype) * 2 - 1) * jitter
    return views * contrast + brightness


def jigsaw_tiles(images: torch.Tensor, grid: int = 3) -> torch.Tensor:
    """(B, C, H, W) -> (B, grid*grid, C, t, t): one random crop (3/4 of the cell's side) inside each cell of a
    grid x grid partition, the tiles of each image in a random order. lightly.transforms.Jigsaw does this on one
    PIL image with numpy's global RNG; this is its batched tensor form, seeded with the rest of the pretraining."""
    b, c, h, w = images.shape
    cell = min(h, w) // grid
    tile = max(1, (3 * cell) // 4)
    if tile < 8:
        raise ValueError(f"jigsaw tiles of {tile} px from {h}x{w} photos in a {grid}x{grid} grid are too small: "
                         f"use larger photos or a smaller pretraining.jigsaw_grid")
    slack = cell - tile
    offsets = torch.randint(0, slack + 1, (b, grid * grid, 2))
    rows = []
    for i in range(b):
        tiles = []
        for k in range(grid * grid):
            y = (k // grid) * cell + int(offsets[i, k, 0])
            x = (k % grid) * cell + int(offsets[i, k, 1])
            tiles.append(images[i, :, y:y + tile, x:x + tile])
        order = torch.randperm(grid * grid).tolist()
        rows.append(torch.stack([tiles[j] for j in order]))
    return torch.stack(rows)


class PirlObjective(nn.Module):
    """PIRL's objective with lightly's parts: the image branch's projection head (``SimCLRProjectionHead``) and
    ``NTXentLoss`` with its memory bank of negatives. What lightly lacks, written here, is PIRL's jigsaw-patch
    branch: every tile through the same encoder, a per-tile projection, the tiles' embeddings concatenated (in
    shuffled order) and merged into one embedding of the photo. lightly's memory bank is a FIFO queue of recent
    embeddings (MoCo-style), where PIRL keeps a running average per photo; with a few hundred photos the two
    hold about the same negatives."""

    def __init__(self, encoder: nn.Module, num_features: int, settings: PretrainingSettings) -> None:
        super().__init__()
        from lightly.loss import NTXentLoss
        from lightly.models.modules.heads import SimCLRProjectionHead

        self.encoder, self.settings = encoder, settings
        dim = settings.projection_dim
        self.image_head = SimCLRProjectionHead(num_features, num_features, dim)
        self.tile_head = nn.Linear(num_features, dim)
        self.merge = nn.Linear(settings.jigsaw_grid ** 2 * dim, dim)
        self.loss = NTXentLoss(temperature=settings.temperature,
                               memory_bank_size=(settings.memory_bank_size, dim) if settings.memory_bank_size else 0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        scale = self.settings.crop_scale
        z_image = self.image_head(self.encoder(random_views(images, scale)))
        tiles = jigsaw_tiles(random_views(images, scale), self.settings.jigsaw_grid)
        b, n = tiles.shape[:2]
        z_tiles = self.tile_head(self.encoder(tiles.flatten(0, 1))).view(b, n * self.settings.projection_dim)
        return self.loss(z_image, self.merge(z_tiles))


class MaeObjective(nn.Module):
    """MAE (He et al. 2022) with lightly's masked ViT encoder (``MaskedVisionTransformerTIMM``, around the rater's
    own timm ViT) and decoder (``MaskedVisionTransformerDecoderTIMM``); loss: mean squared error on the hidden
    patches' pixels, each patch normalised by its own mean and variance (MAE's normalised-pixel target)."""

    def __init__(self, vit: nn.Module, settings: PretrainingSettings) -> None:
        super().__init__()
        from lightly.models.modules import MaskedVisionTransformerTIMM
        from lightly.models.modules.masked_vision_transformer_decoder_timm import MaskedVisionTransformerDecoderTIMM
        from timm.models.vision_transformer import VisionTransformer

        if not isinstance(vit, VisionTransformer):
            raise ValueError(f"pretraining method mae needs a timm VisionTransformer backbone, got "
                             f"{type(vit).__name__} (use pirl for a CNN)")
        self.settings = settings
        self.patch_size = int(vit.patch_embed.patch_size[0])
        self.encoder = MaskedVisionTransformerTIMM(vit=vit)   # MAE's initialisation of the ViT, in place
        self.sequence_length = self.encoder.sequence_length
        self.decoder_embed = nn.Linear(vit.embed_dim, settings.decoder_dim)
        self.decoder = MaskedVisionTransformerDecoderTIMM(
            num_patches=vit.patch_embed.num_patches, embed_dim=settings.decoder_dim, depth=settings.decoder_depth,
            num_heads=settings.decoder_heads, num_prefix_tokens=vit.num_prefix_tokens)
        self.prediction = nn.Linear(settings.decoder_dim, self.patch_size ** 2 * vit.patch_embed.proj.in_channels)
        self.num_prefix_tokens = vit.num_prefix_tokens

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        from lightly.models import utils

        images = random_views(images, self.settings.crop_scale, jitter=0.0)
        b = images.shape[0]
        idx_keep, idx_mask = utils.random_token_mask((b, self.sequence_length), self.settings.mask_ratio,
                                                     device=images.device)
        encoded = self.encoder.encode(images, idx_keep=idx_keep)
        tokens = utils.repeat_token(self.decoder.mask_token, (b, self.sequence_length))
        tokens = utils.set_at_index(tokens, idx_keep, self.decoder_embed(encoded).type_as(tokens))
        predicted = self.prediction(utils.get_at_index(self.decoder(tokens), idx_mask))
        # idx_mask counts the class token as position 0; patchify has no such token.
        target = utils.get_at_index(utils.patchify(images, self.patch_size), idx_mask - self.num_prefix_tokens)
        target = utils.normalize_mean_var(target, dim=-1)
        return F.mse_loss(predicted, target)


def make_objective(encoder: nn.Module, settings: PretrainingSettings) -> nn.Module:
    if settings.method == "pirl":
        return PirlObjective(encoder, int(encoder.num_features), settings)
    return MaeObjective(encoder, settings)


@dataclass
class PretrainingResult:
    loss_per_epoch: list[float]
    items_seen: list[str]          # item ids, in the order the pretraining drew them (all epochs)
    seconds: float
    n_images: int
    encoder_sha256: str

    def summary(self, settings: PretrainingSettings) -> dict:
        """JSON-safe: the record's details["pretraining"] (no per-draw item list, only how many distinct)."""
        return {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()},
                "loss_per_epoch": [round(v, 6) for v in self.loss_per_epoch], "seconds": round(self.seconds, 3),
                "n_images": self.n_images, "encoder_sha256": self.encoder_sha256}


def tensors_sha256(module: nn.Module) -> str:
    """sha256 over a module's state (names, shapes and bytes): equal weights, equal digest."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(name.encode())
        digest.update(str(tuple(data.shape)).encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def pretrain(encoder: nn.Module, dataset: Dataset, settings: PretrainingSettings, seed: int,
             device: torch.device | str = "cpu", progress: bool = False,
             on_epoch: Callable[[int, float], None] | None = None) -> PretrainingResult:
    """Pretrain ``encoder`` in place on the photos of ``dataset`` (items are dicts with ``image`` and ``item_id``,
    as the DataModules give them; their own augmentation applies), ``settings.epochs`` passes; the last partial
    batch is kept unless it is a single photo (a contrast needs two). Everything random draws from torch's RNG
    seeded with ``seed`` inside a fork, so the caller's RNG stream is left as it was."""
    device = torch.device(device)
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    t0 = time.time()
    with torch.random.fork_rng(devices=devices), torch.enable_grad():
        torch.manual_seed(seed)
        objective = make_objective(encoder, settings).to(device)
        loader = DataLoader(dataset, batch_size=settings.batch_size, shuffle=True, num_workers=0,
                            drop_last=len(dataset) % settings.batch_size == 1,
                            generator=torch.Generator().manual_seed(seed))
        if len(loader) == 0:
            raise ValueError(f"pretraining needs at least 2 training photos, the fold has {len(dataset)}")
        optimizer = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=settings.lr,
                                      weight_decay=settings.weight_decay)
        was_training = encoder.training
        objective.train()
        losses, seen = [], []
        bar = tqdm(range(settings.epochs), desc=f"pretraining ({settings.method})", unit="epoch", disable=not progress)
        for epoch in bar:
            total, count = 0.0, 0
            for batch in loader:
                images = batch["image"].to(device)
                seen.extend(batch["item_id"])
                loss = objective(images)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total, count = total + float(loss.detach()) * len(images), count + len(images)
            losses.append(total / max(count, 1))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if on_epoch is not None:
                on_epoch(epoch, losses[-1])
        encoder.train(was_training)
    # MAE's initialisation freezes the ViT's (sine-cosine) position embedding: fine-tuning learns it again.
    for parameter in encoder.parameters():
        parameter.requires_grad_(True)
    return PretrainingResult(losses, seen, time.time() - t0, len(dataset), tensors_sha256(encoder))


class SelfSupervisedRatingTask(RatingTask):
    """A ``RatingTask`` whose backbone is pretrained without labels on the fold's training photos when fitting
    starts (``pretraining: {method: pirl|mae, epochs, lr, batch_size, ...}``), then fine-tuned with its head."""

    CHECKPOINT_KEY = "self_supervised_pretraining"

    def __init__(self, pretraining: dict, backbone: str = "resnet18", head: str = "ce",
                 ratings: Sequence[int] = (5, 6, 7, 8, 9), **kwargs) -> None:
        self.pretraining_settings = PretrainingSettings.from_dict(pretraining)
        if kwargs.get("pretrained", "none") not in (None, False, "none") or kwargs.get("weights_path") \
                or kwargs.get("backbone_weights_path"):
            raise ValueError("a self-supervised rater starts from random weights and pretrains them itself: leave "
                             "out pretrained / weights_path")
        super().__init__(backbone=backbone, head=head, ratings=ratings, **kwargs)
        self.pretraining_summary: dict | None = None
        self.pretraining_items: list[str] = []  # what the pretraining drew (tests check the partition)

    def on_fit_start(self) -> None:
        # A fit resumed from a checkpoint has it already (on_load_checkpoint ran first): never pretrain twice.
        if self.pretraining_summary is not None:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        datasets = getattr(datamodule, "datasets", None)
        if not isinstance(datasets, dict) or datasets.get("train") is None:
            raise RuntimeError(f"{type(self).__name__} pretrains on the DataModule's datasets['train'] (the fold's "
                               f"training photos): fit it with a matcv DataModule (trainer.fit(model, "
                               f"datamodule=...)) set up for 'fit'")
        self.run_pretraining(datasets["train"], progress=self.trainer.progress_bar_callback is not None)

    def run_pretraining(self, train_dataset: Dataset, progress: bool = False) -> PretrainingResult:
        settings = self.pretraining_settings
        seed = int(settings.seed if settings.seed is not None else torch.initial_seed() % 2**63)
        loggers = list(self._trainer.loggers) if self._trainer is not None else []

        def log_epoch(epoch: int, loss: float) -> None:
            for logger in loggers:
                logger.log_metrics({"pretrain_loss": loss, "pretrain_epoch": epoch}, step=epoch)

        result = pretrain(self.backbone, train_dataset, settings, seed, self.device, progress, log_epoch)
        self.pretraining_items = result.items_seen
        self.pretraining_summary = result.summary(settings) | {"seed": seed}
        self.weights_facts = self._facts()
        rank_zero_info(f"self-supervised {settings.method} pretraining: {settings.epochs} epochs on "
                       f"{result.n_images} training photos in {result.seconds:.1f} s, loss "
                       f"{result.loss_per_epoch[0]:.4f} -> {result.loss_per_epoch[-1]:.4f}")
        return result

    def _facts(self) -> SelfSupervisedFacts:
        summary = self.pretraining_summary or {}
        return SelfSupervisedFacts(
            source=f"self-supervised ({self.pretraining_settings.method}) on the fold's training photos",
            file=None, sha256=summary.get("encoder_sha256"), pretrained_on="in-domain",
            epochs=int(summary.get("epochs", self.pretraining_settings.epochs)))

    # DDP's spawned processes and the test's reload of the best checkpoint see only the checkpoint: the summary
    # travels in it.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.pretraining_summary is not None:
            checkpoint[self.CHECKPOINT_KEY] = self.pretraining_summary

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if checkpoint.get(self.CHECKPOINT_KEY) is not None:
            self.pretraining_summary = dict(checkpoint[self.CHECKPOINT_KEY])
            self.weights_facts = self._facts()

    def test_details(self) -> dict:
        details = super().test_details()
        if self.pretraining_summary is not None:
            details["pretraining"] = self.pretraining_summary
        return details

    def figure_title(self) -> str:
        return f"{self.hparams.backbone} / {self.hparams.head} / {self.pretraining_settings.method}"

