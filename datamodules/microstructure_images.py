"""What every microstructure-image source hands to the autoencoder / GAN task (issue 5).

A source (Gaussian random fields, Potts grain growth, UHCSDB micrographs) is a LightningDataModule whose
``datasets[p]`` (p in train/val/test) are ``MicrostructureImages``: one-channel float images in [-1, 1]
(the models end in Tanh), one ``item_id`` each, and an integer ``label`` that the domain feature extractor
of FID/KID-domain is trained to predict on the training part (a generator setting, a microconstituent).

After ``setup`` the datamodule also tells the task how to read its images:
  image_kind   "grey" (S2 of the grey level), "binary" (phase 1 = pixel > 0) or "grain-boundary"
               (boundary pixels > 0; grains are the connected regions between them)
  periodic     True when the images wrap around (generated on a torus), so S2 may use the periodic FFT
  num_labels   how many distinct labels the training part has (labels are 0..num_labels-1 there)
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import Dataset

from matcv.datamodules.loaders import SeededFoldLoaders

IMAGE_KINDS = ("grey", "binary", "grain-boundary")


def to_unit_range(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 grey levels 0..255 -> float32 in [-1, 1] (0 -> -1, 255 -> 1)."""
    return (np.asarray(images_uint8, np.float32) / 127.5 - 1.0).astype(np.float32)


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Images in [-1, 1] -> uint8 0..255 (clipped), for PNGs and for torch-fidelity."""
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    return np.clip(np.rint((array + 1.0) * 127.5), 0, 255).astype(np.uint8)


class MicrostructureImages(Dataset):
    """Images (N, 1, H, W) float32 in [-1, 1] with their item ids and labels; the items are dicts."""

    def __init__(self, images: np.ndarray, item_ids: list[str], labels: np.ndarray | list[int]):
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"images must be (N, 1, H, W), got {images.shape}")
        if not (len(images) == len(item_ids) == len(labels)):
            raise ValueError(f"{len(images)} images, {len(item_ids)} item ids and {len(labels)} labels")
        if images.size and (images.min() < -1.0 - 1e-6 or images.max() > 1.0 + 1e-6):
            raise ValueError(f"images must lie in [-1, 1], got [{images.min()}, {images.max()}]")
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.item_ids = list(item_ids)
        self.labels = torch.as_tensor(np.asarray(labels, np.int64))

    def __len__(self) -> int:
        return len(self.item_ids)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "item_id": self.item_ids[index], "label": self.labels[index]}


def labels_of(keys: list[str], known: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Integer labels for string keys: indices into ``known`` (default: the sorted distinct keys), -1 for
    a key not in it (a held-out group the feature extractor never saw)."""
    known = sorted(set(keys)) if known is None else list(known)
    index = {key: i for i, key in enumerate(known)}
    return np.array([index.get(key, -1) for key in keys], np.int64), known


class MicrostructureImageDataModule(SeededFoldLoaders, L.LightningDataModule):
    """Seeded loaders over ``datasets`` (``SeededFoldLoaders``); subclasses fill ``datasets``, ``image_kind``,
    ``periodic`` and ``num_labels`` in ``setup``."""

    image_kind: str = "grey"
    periodic: bool = False

    def __init__(self, batch_size: int = 16, num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.datasets: dict[str, MicrostructureImages] = {}
        self.num_labels = 0

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.datasets["train"].images.shape[-2:])
