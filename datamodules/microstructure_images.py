"""What every microstructure-image source hands to the autoencoder / GAN task.

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

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from matcv.datamodules.base import BenchmarkDataModule
from matcv.datamodules.manifest import (
    IMAGE_ERRORS,
    MAX_LISTED_PROBLEMS,
    ImageTooLargeError,
    ManifestError,
    open_image,
    path_problem,
)

IMAGE_KINDS = ("grey", "binary", "grain-boundary")
MANIFEST_NAME = "manifest.csv"
GENERATOR_NAME = "generator.json"


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


def read_settings(root: str | Path) -> dict:
    """The generator settings of a generated source (``generator.json``), {} for a user's folder."""
    path = Path(root) / GENERATOR_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


def load_grey(path: Path) -> np.ndarray | None:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        return None
    if image.ndim == 3:  # a colour copy of a grey micrograph: the grey level is what the models see
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
    if image.dtype == np.uint16:  # 16-bit micrographs: the top 8 bits
        image = (image >> 8).astype(np.uint8)
    return image if image.dtype == np.uint8 else None


def _too_large(path: Path) -> str | None:
    """Why PIL's header check refuses the file (more pixels than its decompression-bomb limit), or None.

    cv2 would allocate whatever a header claims, up to a gigapixel, before finding that the data is not there;
    PIL reads the header alone. A file PIL cannot identify is left to cv2, which reads more formats.
    """
    try:
        with open_image(path):
            return None
    except ImageTooLargeError as error:
        return str(error)
    except IMAGE_ERRORS:
        return None


def load_images(root: Path, paths: list[str], progress: bool = False) -> np.ndarray:
    """(N, H, W) uint8; one ManifestError naming every unreadable file, one outside the data root (absolute,
    ``..`` or a symbolic link), one too large to decode, or one whose size differs."""
    root = Path(root)
    images, problems = [], []
    for relative in tqdm(paths, desc="reading microstructures", unit="image", disable=not progress):
        outside = path_problem(root, relative, "image_path", "image", must_exist=False)
        too_large = None if outside else _too_large(root / relative)
        image = None if outside or too_large else load_grey(root / relative)
        if outside or too_large:
            problems.append(f"{root / relative}: {outside or too_large}")
        elif image is None:
            problems.append(f"{root / relative}: missing or not a readable 8/16-bit image")
        elif images and image.shape != images[0].shape:
            problems.append(f"{root / relative}: {image.shape[1]}x{image.shape[0]} px, but the first image is "
                            f"{images[0].shape[1]}x{images[0].shape[0]}: all images of a source must share a size")
        else:
            images.append(image)
    if problems:
        raise ManifestError(f"{len(problems)} bad microstructure image(s) in {root}:\n  "
                            + "\n  ".join(problems[:MAX_LISTED_PROBLEMS]))
    return np.stack(images) if images else np.zeros((0, 1, 1), np.uint8)


class MicrostructureImageDataModule(BenchmarkDataModule):
    """Seeded loaders over ``datasets`` (``BenchmarkDataModule``); subclasses fill ``datasets``, ``image_kind``,
    ``periodic``, ``num_labels`` and ``label_names`` in ``build_datasets``."""

    image_kind: str = "grey"
    periodic: bool = False

    def __init__(self, fold_manifest_path: str | Path, fold: int, data_root: str | Path | None = None,
                 seed: int = 0, *, generator: dict | None = None, batch_size: int = 16, num_workers: int = 0):
        super().__init__(fold_manifest_path, fold, data_root, seed, generator=generator, batch_size=batch_size,
                         num_workers=num_workers)
        self.num_labels = 0
        self.label_names: list[str] = []

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.datasets["train"].images.shape[-2:])


class ManifestImageDataModule(MicrostructureImageDataModule):
    """A source laid out as ``manifest.csv`` + same-size grey images (+ ``generator.json`` when generated).

    The harness's hooks follow from two functions a subclass names: ``read_manifest(root) -> table`` (checks
    the rows, one error for all) and ``index_table(table) -> dict`` (``index_dataset``'s answer).
    """

    read_manifest = None  # staticmethod(root: Path) -> pd.DataFrame with image_path and group columns
    index_table = None  # staticmethod(table: pd.DataFrame) -> dict (items, groups, strata, files)

    @classmethod
    def dataset_name(cls, data_root: str | Path, generated: bool) -> str:
        """The source's name for a generated dataset ("gaussian-binary", "alloy-micrographs"), else the base's."""
        return read_settings(data_root).get("source") or super().dataset_name(data_root, generated)

    @classmethod
    def index_dataset(cls, data_root: str | Path, **_unused) -> dict:
        return cls.index_table(cls.read_manifest(Path(data_root)))

    @classmethod
    def check_dataset(cls, data_root: str | Path, progress: bool = True, **_unused) -> dict:
        """``index_dataset`` after reading every image: one ManifestError listing every bad row and file.

        When the manifest's rows have problems, the images it lists are read all the same, so that one pass
        reports both (a user fixes the folder once, not once per kind of problem).
        """
        root = Path(data_root)
        try:
            table = cls.read_manifest(root)
        except ManifestError as rows_error:
            paths = _listed_paths(root)
            if paths:
                try:
                    load_images(root, paths, progress)
                except ManifestError as files_error:
                    raise ManifestError(f"{rows_error}\n{files_error}") from rows_error
            raise
        load_images(root, table["image_path"].tolist(), progress)
        return cls.index_table(table)


def _listed_paths(root: Path) -> list[str]:
    """The distinct non-empty ``image_path`` cells of a manifest whose rows have problems ([] if unreadable)."""
    try:
        column = pd.read_csv(root / MANIFEST_NAME, dtype=str, keep_default_na=False)["image_path"]
    except (OSError, ValueError, KeyError, pd.errors.ParserError):
        return []
    return [p for p in dict.fromkeys(column.tolist()) if p.strip()]

