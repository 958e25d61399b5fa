"""LightningDataModule for photos of scribed corrosion panels (synthetic by default, or a user's own).

``prepare_data`` only generates (the synthetic panels, once, into the cache); ``setup`` reads the
manifest, checks the fold manifest against the data and for group leaks, and loads the fold's images.
Images are standardised with statistics of the fold's *training* partition only, so nothing of the
validation or test photos leaks into the inputs.

Unlabelled photos (rating target: rows with an empty rating cell, ``manifest.unlabelled_rows``) are in no fold.
A fold offers them as ``datasets["unlabelled"]`` (standardised like the training part) when their group is in
its training part or is the group of no labelled photo, so a held-out panel's unlabelled photos never reach
training. Only a model with ``uses_unlabelled = True`` gets them: its training batches are
``{"labelled": ..., "unlabelled": ...}`` (``train_dataloader``); every other model trains exactly as before.
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
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset, RandomSampler
from tqdm.auto import tqdm

from matcv.datamodules.augmentations import OneStreamCompose, build_augmentation
from matcv.datamodules.base import BenchmarkDataModule
from matcv.datamodules.dataset_description import DESCRIPTION_NAME, description_path, read_description
from matcv.datamodules.folds import PER_ITEM_GROUP_COLUMNS, FoldManifestError, published_split_manifest
from matcv.datamodules.manifest import (
    MANIFEST_NAME,
    MAX_LISTED_PROBLEMS,
    ManifestError,
    ManifestSpec,
    raise_problems,
    read_image,
    read_mask,
    scan_manifest,
    unlabelled_rows,
)
from matcv.datamodules.panel_evaluation import PanelItemEvaluator
from matcv.datamodules.synthetic.panels import PanelGeneratorConfig, generate_panels

TARGETS = ("mask", "rating", "rating+mask")
# "rating+mask": every photo with both its rating and its corrosion mask (a model that learns both at once,
# ``lightning_modules.segment_and_rate``); the manifest must then have both columns.
SPLIT_MODES = ("grouped", "manifest")
# "grouped": the harness draws grouped folds; "manifest": the manifest's ``split`` column, run as the
# published-split protocol (``fixed_fold_manifest``), a group it puts in two partitions declared, not refused.


def target_has_masks(target: str) -> bool:
    return target in ("mask", "rating+mask")


def target_has_ratings(target: str) -> bool:
    return target in ("rating", "rating+mask")


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


def manifest_spec(target: str, ratings: Sequence[int] | None = None, check_split: bool = False) -> ManifestSpec:
    """What a manifest needs for ``target``: masks, or ratings among ``ratings`` (default ``TASK_RATINGS``),
    the classes the task learns. ``check_split``: a ``split`` column's values too (a group in two splits is a
    warning: the published-split protocol runs it declared; grouped CV ignores the column)."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    classes = (tuple(int(r) for r in (TASK_RATINGS if ratings is None else ratings)) if target_has_ratings(target)
               else None)
    # Labels of a user's own classification (dataset.yaml) may lie outside ASTM's 0..10.
    span = (0, 10) if ratings is None or not classes else (min(0, *classes), max(10, *classes))
    return ManifestSpec(group_column="panel_id", require_mask=target_has_masks(target),
                        require_rating=target_has_ratings(target),
                        rating_classes=classes, rating_range=span,
                        # An empty rating is an unlabelled photo (module doc); a classification's empty label
                        # stays a problem (``scan_labelled`` reads labels without ``require_rating``).
                        allow_unlabelled=target == "rating",
                        check_split=check_split, split_leaks="warning")


def refuse_described_masks(data_root: str | Path, target: str) -> None:
    """A folder whose dataset.yaml describes its masks (classes, colours, ignore) is not read here, where masks
    are binary {0,1}/{0,255}: say which DataModule reads it rather than report its class values as bad masks."""
    if target_has_masks(target) and description_path(data_root).is_file():
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
    # Unlabelled photos are in no fold (not items), but they are part of the data: the data hash covers them.
    files = list(table["image_path"]) + (list(table["mask_path"]) if spec.require_mask else [])
    unlabelled = unlabelled_rows(table, spec)
    if not unlabelled.any():  # exactly the index of before unlabelled photos existed: same folds, same hash
        strata = list(table["rating"]) if "rating" in table and table["rating"].notna().all() else None
        return {"items": list(table["image_path"]), "groups": list(table[spec.group_column]), "strata": strata,
                "files": files}
    labelled = table[~unlabelled]
    return {"items": list(labelled["image_path"]), "groups": list(labelled[spec.group_column]),
            "strata": [int(r) for r in labelled["rating"]], "files": files,
            "unlabelled": list(table["image_path"][unlabelled])}


def unlabelled_note(table, spec: ManifestSpec) -> str | None:
    """What ``matcv data --check`` says of a manifest's unlabelled photos, or None when it has none."""
    unlabelled = unlabelled_rows(table, spec)
    if not unlabelled.any():
        return None
    groups = set(table[spec.group_column][unlabelled])
    shared = groups & set(table[spec.group_column][~unlabelled])
    return (f"{int(unlabelled.sum())} unlabelled photo(s) (empty rating) in {len(groups)} group(s), "
            f"{len(shared)} of them shared with labelled photos: in no fold, never validated or tested on; only "
            f"semi-supervised models (e.g. resnet18-mixmatch) train on them, in a fold whose held-out groups "
            f"they are not in")


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


class PhotoViews(Dataset):
    """``views`` independently augmented copies of each photo of ``photos``, stacked: ``image`` (views, C, H, W);
    MixMatch guesses an unlabelled photo's label from several augmentations of it (Berthelot et al. 2019)."""

    def __init__(self, photos: PanelPhotos, views: int = 1):
        if views < 1:
            raise ValueError(f"views must be >= 1, got {views}")
        self.photos, self.views = photos, int(views)

    def __len__(self) -> int:
        return len(self.photos)

    def __getitem__(self, index: int) -> dict:
        samples = [self.photos[index] for _ in range(self.views)]
        return {"image": torch.stack([s["image"] for s in samples]), "item_id": samples[0]["item_id"]}


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
        split: str = "grouped",
    ):
        if split not in SPLIT_MODES:
            raise ValueError(f"split must be one of {SPLIT_MODES}, got {split!r}")
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
        spec = manifest_spec(target, rating_classes, check_split=True)
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
        note = unlabelled_note(table, spec)
        return {**_index(table, spec), "notes": list(table.attrs.get("notes", [])) + ([note] if note else []),
                "warnings": list(table.attrs.get("warnings", []))}

    @staticmethod
    def fixed_fold_manifest(data_root: str | Path, split: str = "grouped", target: str = "mask",
                            rating_classes: Sequence[int] | None = None, labels: Sequence[str] | None = None,
                            **_unused) -> dict | None:
        """split="manifest": the manifest's ``split`` column (train/val/test on every row) as a one-fold manifest,
        the published-split protocol: a group in two partitions is declared there, not refused, and unlabelled
        photos stay out of the fold as in grouped CV. "grouped": None (the harness draws grouped folds)."""
        if split not in SPLIT_MODES:
            raise ValueError(f"split must be one of {SPLIT_MODES}, got {split!r}")
        if split == "grouped":
            return None
        refuse_described_masks(data_root, target)
        spec = manifest_spec(target, rating_classes, check_split=True)
        manifest = Path(data_root) / MANIFEST_NAME
        table, problems, _ = scan_labelled(data_root, spec, labels)
        if "split" not in table.columns:
            problems.append("split 'manifest' needs a 'split' column (train/val/test) in the manifest")
        raise_problems(problems, manifest)
        labelled = table[~unlabelled_rows(table, spec)]
        rows = list(zip(labelled["image_path"], labelled[spec.group_column], labelled["split"]))
        return published_split_manifest(rows, f"the split column of {manifest}", spec.group_column)

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
        unlabelled = unlabelled_rows(table, self.spec)
        table, unlabelled_table = table[~unlabelled], table[unlabelled]
        grouped_by: list[str] = []

        def groups(column: str | None) -> dict:
            # Folds are checked against the column they were grouped by: the specimen group, or any other
            # column of a user's manifest.
            column = column or self.spec.group_column
            if column not in table.columns:
                raise FoldManifestError(f"{self.fold_manifest_path} groups by {column!r}, which the data's "
                                        f"manifest does not have")
            grouped_by.append(column)
            return dict(zip(table["image_path"], table[column]))

        folds = self.fold_items(groups)
        by_item = {record.image_path: record for record in table.itertuples(index=False)}
        loaded = {p: self._load([by_item[i] for i in folds[p]]) for p in ("train", "val", "test")}
        train_pixels = loaded["train"][0].reshape(-1, 3).astype(np.float64) / 255.0
        mean, std = train_pixels.mean(0), train_pixels.std(0) + 1e-6
        augment = self._augmentation(self.seed)
        for partition, (images, masks, ratings, ids) in loaded.items():
            self.datasets[partition] = PanelPhotos(images, masks, ratings, ids, mean, std,
                                                   augment if partition == "train" else None)
        usable = self._usable_unlabelled(table, unlabelled_table, folds["train"], grouped_by[-1])
        if usable:
            images, _, _, ids = self._load(usable, ratings_known=False)
            # Augmented by a stream of their own, so the labelled photos' augmentations are those of every
            # other model's run on this fold.
            self.datasets["unlabelled"] = PanelPhotos(images, None, None, ids, mean, std,
                                                      self._augmentation(self.seed + 1))
        if self.target == "mask":
            self.item_evaluator = PanelItemEvaluator.for_items(table, self.datasets["test"].item_ids, self.data_root,
                                                               self.native_sizes, self.image_size)

    def _augmentation(self, seed: int):
        if self.augment and self.augmentation:  # named augmentations (build_augmentation), or "combination"
            return build_augmentation(self.augmentation, self.image_size, seed)
        if self.augment:  # flips keep a scribe a straight line along the panel's axis; seeded for determinism
            return OneStreamCompose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)], self.image_size, seed)
        return None

    @staticmethod
    def _usable_unlabelled(labelled, unlabelled, train_items: Sequence[str], column: str) -> list:
        """The unlabelled rows this fold may train on: those whose group (in the fold manifest's group column) is
        in the training part or is no labelled photo's group. A group held out for validation or test keeps its
        unlabelled photos out of training too: they are photos of the very specimens being tested."""
        if unlabelled.empty:
            return []
        if column in PER_ITEM_GROUP_COLUMNS:  # item-level folds: each photo is its own group
            return list(unlabelled.itertuples(index=False))
        group_of = dict(zip(labelled["image_path"], labelled[column]))
        held_out = set(group_of.values()) - {group_of[item] for item in train_items}
        return [record for record in unlabelled.itertuples(index=False)
                if isinstance(getattr(record, column), str) and getattr(record, column) not in held_out]

    @property
    def n_unlabelled(self) -> int:
        """How many unlabelled photos this fold offers for training (after ``setup``)."""
        return len(self.datasets.get("unlabelled", ()))

    def unlabelled_dataloader(self, views: int = 1, num_samples: int | None = None,
                              batch_size: int | None = None) -> DataLoader:
        """Shuffled batches of the fold's unlabelled photos, each photo as ``views`` augmentations
        (``PhotoViews``); ``num_samples`` photos an epoch (cycling through them in new orders), default all."""
        if "unlabelled" not in self.datasets:
            raise ValueError(f"fold {self.fold} of {self.data_root} has no unlabelled photos to train on (rows with "
                             f"an empty rating whose group is not held out)")
        dataset = PhotoViews(self.datasets["unlabelled"], views)
        # As the labelled loader: a generator of its own when seeded_shuffle, else the global RNG (seeded).
        generator = torch.Generator().manual_seed(self.seed + 1) if self.seeded_shuffle else None
        sampler = RandomSampler(dataset, num_samples=num_samples or len(dataset), generator=generator)
        return DataLoader(dataset, batch_size=batch_size or self.batch_size, sampler=sampler,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self):
        """The training part's batches; for a model with ``uses_unlabelled`` (and a fold with unlabelled photos)
        ``{"labelled": batch, "unlabelled": batch}``, as many unlabelled photos as labelled ones per epoch."""
        labelled = super().train_dataloader()
        model = self.trainer.lightning_module if self.trainer is not None else None
        if not getattr(model, "uses_unlabelled", False) or "unlabelled" not in self.datasets:
            return labelled
        unlabelled = self.unlabelled_dataloader(getattr(model, "unlabelled_views", 1), len(self.datasets["train"]))
        return CombinedLoader({"labelled": labelled, "unlabelled": unlabelled}, mode="max_size_cycle")

    def _load(self, records: list, ratings_known: bool = True) -> tuple:
        size = self.image_size
        images, masks, ratings = [], [], []
        for record in records:
            image = read_image(self.data_root, record)
            self.native_sizes[record.image_path] = image.shape[:2]
            if self.spec.require_mask:
                mask = read_mask(self.data_root, record, image.shape[:2])
                if mask.shape != (size, size):  # area-weighted, like the generator's camera
                    mask = (cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA) >= 0.5)
                masks.append(mask.astype(np.uint8))
            if self.spec.require_rating and ratings_known:
                ratings.append(int(record.rating))
            images.append(resize_photo(image, size))
        return (np.stack(images), np.stack(masks) if masks else None,
                np.array(ratings) if ratings else None, [r.image_path for r in records])
