"""LightningDataModule for photos of scribed corrosion panels (synthetic by default, or a user's own).

``prepare_data`` only generates (the synthetic panels, once, into the cache); ``setup`` reads the
manifest, checks the fold manifest against the data and for group leaks, and loads the fold's images.
Images are standardised with statistics of the fold's *training* partition only, so nothing of the
validation or test photos leaks into the inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from matcv.datamodules.augmentations import OneStreamCompose, build_augmentation
from matcv.datamodules.base import BenchmarkDataModule
from matcv.datamodules.dataset_description import DESCRIPTION_NAME, description_path, read_description
from matcv.datamodules.folds import FoldManifestError
from matcv.datamodules.manifest import (
    MANIFEST_NAME,
    MAX_LISTED_PROBLEMS,
    ManifestError,
    ManifestSpec,
    raise_problems,
    read_image,
    read_mask,
    scan_manifest,
)
from matcv.datamodules.panel_evaluation import PanelItemEvaluator
from matcv.datamodules.synthetic.panels import PanelGeneratorConfig, generate_panels

TARGETS = ("mask", "rating")


def resolve_data_root(data_root: str | Path | None, generator: dict | None = None, progress: bool = True) -> Path:
    """A user's data root as given, or the synthetic panels for ``generator`` settings (generated once)."""
    if data_root is not None:
        return Path(data_root)
    return generate_panels(PanelGeneratorConfig(**_tuples(generator or {})), progress=progress)


def _tuples(settings: dict) -> dict:
    # YAML gives lists; the generator's settings are hashed as tuples.
    return {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}


# The ASTM D1654 ratings the rating and ordinal tasks learn: the default ``ratings`` of their LightningModules
# (``lightning_modules.rating``), which this layer cannot import. A task whose models learn other ratings gives
# the same list to its DataModule (``rating_classes``), so that data they cannot learn fails the data check.
TASK_RATINGS: tuple[int, ...] = (5, 6, 7, 8, 9)


def manifest_spec(target: str, ratings: Sequence[int] | None = None) -> ManifestSpec:
    """What a manifest needs for ``target``: masks, or ratings among ``ratings`` (default ``TASK_RATINGS``),
    the classes the task learns."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    classes = tuple(int(r) for r in (TASK_RATINGS if ratings is None else ratings)) if target == "rating" else None
    # Labels of a user's own classification (dataset.yaml) may lie outside ASTM's 0..10.
    span = (0, 10) if ratings is None or not classes else (min(0, *classes), max(10, *classes))
    return ManifestSpec(group_column="panel_id", require_mask=target == "mask", require_rating=target == "rating",
                        rating_classes=classes, rating_range=span)


def refuse_described_masks(data_root: str | Path, target: str) -> None:
    """A folder whose dataset.yaml describes its masks (classes, colours, ignore) is not read here, where masks
    are binary {0,1}/{0,255}: say which DataModule reads it rather than report its class values as bad masks."""
    if target == "mask" and description_path(data_root).is_file():
        raise ManifestError(f"{description_path(data_root)}: this folder describes its masks in {DESCRIPTION_NAME}, "
                            f"which CorrosionPanelsDataModule (binary masks) does not read: run `matcv bench --task "
                            f"segmentation --data-root {data_root}` (it picks the DataModule for {DESCRIPTION_NAME}), "
                            f"or name matcv.datamodules.user_segmentation.UserSegmentationDataModule in your task YAML")


def label_classes(data_root: str | Path) -> list[str]:
    """The distinct values of a manifest's ``label`` (or ``rating``) column, sorted: a classification's classes
    when dataset.yaml lists no ``labels``. Numbers sort as numbers ("9" before "10")."""
    table = pd.read_csv(Path(data_root) / MANIFEST_NAME, dtype=str, keep_default_na=False, na_values=[""])
    column = "label" if "label" in table.columns else "rating" if "rating" in table.columns else None
    if column is None:
        raise ManifestError(f"{Path(data_root) / MANIFEST_NAME}: no 'label' (or 'rating') column to classify")
    values = {v.strip() for v in table[column].dropna() if v.strip()}
    return sorted(values, key=lambda v: (0, float(v), v) if _is_number(v) else (1, 0.0, v))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def scan_labelled(data_root: str | Path, spec: ManifestSpec, labels: Sequence[str] | None):
    """``scan_manifest`` of a rating/label manifest. With ``labels`` (a classification's classes: the label
    column's values, class index = position) each row's ``rating`` becomes its class index, and a value outside
    ``labels`` is a problem naming the row; without, ASTM-style integer ratings as ``spec`` says."""
    if labels is None:
        return scan_manifest(data_root, spec)
    labels = [str(v).strip() for v in labels]
    table, problems, unreadable = scan_manifest(data_root, replace(spec, require_rating=False, rating_classes=None))
    raw = pd.read_csv(Path(data_root) / MANIFEST_NAME, dtype=str, keep_default_na=False, na_values=[""])
    column = "label" if "label" in raw.columns else "rating" if "rating" in raw.columns else None
    if column is None:
        raise ManifestError(f"{Path(data_root) / MANIFEST_NAME}: missing column 'label' (or 'rating'); found "
                            f"{list(raw.columns)}")
    index = {value: k for k, value in enumerate(labels)}
    classes = []
    for row, image, value in zip(table["row"], table["image_path"], raw[column]):
        value = value.strip() if isinstance(value, str) else ""
        if value not in index:
            shown = repr(value) if value else "(empty)"
            problems.append(f"row {row} ({image}): {column} {shown} is not among the labels this task learns "
                            f"{labels} (dataset.yaml's labels, else the column's values)")
        classes.append(index.get(value))
    table["rating"] = classes
    return table, problems, unreadable


def _index(table, spec: ManifestSpec) -> dict:
    files = list(table["image_path"]) + (list(table["mask_path"]) if spec.require_mask else [])
    strata = list(table["rating"]) if "rating" in table and table["rating"].notna().all() else None
    return {"items": list(table["image_path"]), "groups": list(table[spec.group_column]), "strata": strata,
            "files": files}


def resize_photo(image: np.ndarray, size: int) -> np.ndarray:
    """Area-resize an RGB uint8 photo to size x size (no-op when it already is)."""
    if image.shape[:2] == (size, size):
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def standardize(image: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> float (3, H, W), standardised with the training fold's channel statistics."""
    x = (image.astype(np.float32) / 255.0 - mean) / std
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1).astype(np.float32)))


class PanelPhotos(Dataset):
    """Preloaded uint8 photos (+ masks / ratings) of one partition; augmentation on the fly."""

    def __init__(self, images: np.ndarray, masks: np.ndarray | None, ratings: np.ndarray | None,
                 item_ids: list[str], mean: np.ndarray, std: np.ndarray, augment: A.Compose | None = None):
        self.images, self.masks, self.ratings, self.item_ids = images, masks, ratings, item_ids
        self.mean, self.std, self.augment = mean.astype(np.float32), std.astype(np.float32), augment
        self._seeded_worker: int | None = None

    def _reseed_in_worker(self) -> None:
        # albumentations keeps its own RNG, copied verbatim into every DataLoader worker: give each
        # worker its own seed, derived from torch's (itself derived from the run's seed).
        worker = torch.utils.data.get_worker_info()
        if worker is not None and self._seeded_worker != worker.seed:
            self.augment.set_random_seed(worker.seed % 2**32)
            self._seeded_worker = worker.seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        image = self.images[index]
        mask = self.masks[index] if self.masks is not None else None
        if self.augment is not None:
            self._reseed_in_worker()
            out = self.augment(image=image, mask=mask) if mask is not None else self.augment(image=image)
            image, mask = out["image"], out.get("mask", mask)
        sample = {"image": standardize(image, self.mean, self.std), "item_id": self.item_ids[index]}
        if mask is not None:
            sample["mask"] = torch.from_numpy(np.ascontiguousarray(mask[None].astype(np.float32)))
        if self.ratings is not None:
            sample["rating"] = torch.tensor(int(self.ratings[index]))
        return sample


class CorrosionPanelsDataModule(BenchmarkDataModule):
    seeded_shuffle = False  # (see BenchmarkDataModule) this task's published runs shuffle from the global RNG

    def __init__(
        self,
        fold_manifest_path: str | Path,
        fold: int,
        data_root: str | Path | None = None,
        generator: dict | None = None,
        target: str = "mask",
        image_size: int = 128,
        batch_size: int = 8,
        num_workers: int = 0,
        augment: bool = True,
        augmentation: str | None = None,
        seed: int = 0,
        rating_classes: Sequence[int] | None = None,
        labels: Sequence[str] | None = None,
    ):
        super().__init__(fold_manifest_path, fold, data_root, seed, generator=generator, batch_size=batch_size,
                         num_workers=num_workers)
        self.save_hyperparameters()
        # Not called ``ratings``: Lightning merges the DataModule's hparams with the model's, whose ``ratings``
        # would clash with it.
        self.spec = manifest_spec(target, rating_classes)
        self.labels = labels  # a classification's classes (the label column's values); None: integer ratings
        self.target, self.image_size, self.augment, self.augmentation = target, image_size, augment, augmentation
        self.native_sizes: dict[str, tuple[int, int]] = {}

    @staticmethod
    def prepare_dataset(data_root: str | Path | None, generator: dict | None = None, progress: bool = True) -> Path:
        """The harness's hook: where the data is, generating the synthetic panels first if needed."""
        return resolve_data_root(data_root, generator, progress)

    @staticmethod
    def index_dataset(data_root: str | Path, target: str = "mask", rating_classes: Sequence[int] | None = None,
                      labels: Sequence[str] | None = None, **_unused) -> dict:
        """Items, groups, strata and files of a data root, for fold manifests and data hashes."""
        refuse_described_masks(data_root, target)
        spec = manifest_spec(target, rating_classes)
        table, problems, _ = scan_labelled(data_root, spec, labels)
        raise_problems(problems, Path(data_root) / MANIFEST_NAME)
        return _index(table, spec)

    @staticmethod
    def check_dataset(data_root: str | Path, target: str = "mask", progress: bool = True,
                      rating_classes: Sequence[int] | None = None, labels: Sequence[str] | None = None,
                      **_unused) -> dict:
        """``index_dataset`` after reading every image (and mask): one error listing every problem, those of the
        manifest's rows (paths, groups, ratings) and those of the files, so one pass finds them all."""
        refuse_described_masks(data_root, target)
        spec = manifest_spec(target, rating_classes)
        root = Path(data_root)
        table, problems, unreadable = scan_labelled(root, spec, labels)
        bad_files = []
        for record in tqdm(list(table.itertuples(index=False)), desc="checking images", unit="image",
                           disable=not progress):
            if (record.row, "image_path") in unreadable:
                continue
            try:
                image = read_image(root, record)
                if spec.require_mask and (record.row, "mask_path") not in unreadable:
                    read_mask(root, record, image.shape[:2])
            except ManifestError as error:
                bad_files.append(str(error))
        if problems or bad_files:
            everything = problems + bad_files
            shown = everything[:MAX_LISTED_PROBLEMS]
            more = f"\n  ... and {len(everything) - len(shown)} more" if len(everything) > len(shown) else ""
            count = f"{len(everything)} problem(s)" if problems else f"{len(bad_files)} bad file(s)"
            raise ManifestError(f"{root / MANIFEST_NAME}: {count}:\n  " + "\n  ".join(shown) + more)
        return {**_index(table, spec), "notes": list(table.attrs.get("notes", []))}

    @classmethod
    def dataset_name(cls, data_root: str | Path, generated: bool) -> str:
        """A user's folder: its dataset.yaml's ``name`` when it gives one (the rating tasks read that folder
        too), else the folder's name; generated data: named by its generator (``BenchmarkDataModule``)."""
        description = None if generated else read_description(data_root)
        if description is not None and description.name:
            return description.name
        return super().dataset_name(data_root, generated)

    def build_datasets(self) -> None:
        refuse_described_masks(self.data_root, self.target)
        table, problems, _ = scan_labelled(self.data_root, self.spec, self.labels)
        raise_problems(problems, Path(self.data_root) / MANIFEST_NAME)

        def groups(column: str | None) -> dict:
            # Folds are checked against the column they were grouped by: the specimen group, or any other
            # column of a user's manifest.
            column = column or self.spec.group_column
            if column not in table.columns:
                raise FoldManifestError(f"{self.fold_manifest_path} groups by {column!r}, which the data's "
                                        f"manifest does not have")
            return dict(zip(table["image_path"], table[column]))

        folds = self.fold_items(groups)
        by_item = {record.image_path: record for record in table.itertuples(index=False)}
        loaded = {p: self._load([by_item[i] for i in folds[p]]) for p in ("train", "val", "test")}
        train_pixels = loaded["train"][0].reshape(-1, 3).astype(np.float64) / 255.0
        mean, std = train_pixels.mean(0), train_pixels.std(0) + 1e-6
        augment = None
        if self.augment and self.augmentation:  # named augmentations (build_augmentation), or "combination"
            augment = build_augmentation(self.augmentation, self.image_size, self.seed)
        elif self.augment:  # flips keep a scribe a straight line along the panel's axis; seeded for determinism
            augment = OneStreamCompose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)], self.image_size, self.seed)
        for partition, (images, masks, ratings, ids) in loaded.items():
            self.datasets[partition] = PanelPhotos(images, masks, ratings, ids, mean, std,
                                                   augment if partition == "train" else None)
        if self.target == "mask":
            self.item_evaluator = PanelItemEvaluator.for_items(table, self.datasets["test"].item_ids, self.data_root,
                                                               self.native_sizes, self.image_size)

    def _load(self, records: list) -> tuple:
        size = self.image_size
        images, masks, ratings = [], [], []
        for record in records:
            image = read_image(self.data_root, record)
            self.native_sizes[record.image_path] = image.shape[:2]
            if self.target == "mask":
                mask = read_mask(self.data_root, record, image.shape[:2])
                if mask.shape != (size, size):  # area-weighted, like the generator's camera
                    mask = (cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA) >= 0.5)
                masks.append(mask.astype(np.uint8))
            if self.target == "rating":
                ratings.append(int(record.rating))
            images.append(resize_photo(image, size))
        return (np.stack(images), np.stack(masks) if masks else None,
                np.array(ratings) if ratings else None, [r.image_path for r in records])
