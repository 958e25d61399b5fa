"""The DataModule contract of the benchmark harness, with its shared parts written once.

The harness never builds a DataModule to learn about the data: before any run it calls class-level hooks to
locate (or generate) the data, index and check every file, name the data's folder and, for published data,
take the publisher's split. Each run then builds one DataModule per fold, whose ``setup`` reads that fold
through ``folds.load_fold`` (so every task checks group leaks and the data's identity the same way) and
whose loaders are seeded by the run. A learning curve's run trains on a share of the fold's training groups
(``train_fraction``), cut here, once for every task (``training_subset``). A new dataset is a subclass with ``prepare_dataset``,
``index_dataset`` and ``build_datasets``; the other hooks have defaults.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import ClassVar

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from matcv.datamodules.core.config import check_train_fractions, fraction_label
from matcv.datamodules.folds import load_fold, read_fold_manifest

PARTITIONS = ("train", "val", "test")


def training_subset(train_items: list[str], groups: Mapping[str, str], fraction: float, seed: int,
                    where: str = "this fold") -> tuple[list[str], list[str]]:
    """The items of a share ``fraction`` of the training groups, and those groups: a permutation of the sorted
    training groups drawn from ``seed`` (the fold's run seed), its first ceil(fraction x groups). Groups, never
    items: every photo of a kept panel stays. The same permutation for every fraction makes the subsets nested
    (0.25's inside 0.5's) and the same for every model and replicate of the fold. Items keep the manifest's
    order; fraction 1 returns them untouched."""
    fraction = check_train_fractions([fraction], "train_fraction")[0]
    names = sorted({groups[item] for item in train_items})
    if fraction == 1.0:
        return list(train_items), names
    wanted = fraction * len(names)
    if wanted < 1:  # ceil would quietly round it up to one group: a larger share than was asked for
        raise ValueError(f"train_fraction {fraction_label(fraction)} of {where}'s {len(names)} training group(s) is "
                         f"{wanted:.2f} group(s), less than one: use a fraction >= 1/{len(names)} "
                         f"({1 / max(len(names), 1):.3f})")
    # round(): 0.3 x 10 is 3.0000000000000004 in floating point, which must keep 3 groups, not 4.
    n_kept = math.ceil(round(wanted, 9))
    order = np.random.default_rng(seed).permutation(len(names))
    kept = sorted(names[i] for i in order[:n_kept])
    chosen = set(kept)
    return [item for item in train_items if groups[item] in chosen], kept


class BenchmarkDataModule(L.LightningDataModule):
    """One fold of one dataset: ``datasets[p]`` for p in train/val/test after ``setup``.

    Training batches are shuffled by a generator seeded from ``seed``, so a run repeats exactly; validation
    and test keep the fold manifest's order. The last partial training batch is kept (small datasets cannot
    spare it).
    """

    # Per-test-item extras (``item_evaluator(item_id, predicted, truth) -> dict``) a DataModule may set in
    # setup; segmentation models add them to their per-item results.
    item_evaluator: Callable | None = None
    # False: shuffle from torch's global RNG (seeded by the harness) instead of a generator of the loader's
    # own. The corrosion and superalloy DataModules shuffled that way before this base existed; they keep it,
    # so their published runs repeat batch for batch.
    seeded_shuffle: ClassVar[bool] = True
    # Validation / test batch size; None: ``batch_size``. 1 where whole images of different sizes cannot be
    # stacked.
    eval_batch_size: ClassVar[int | None] = None
    # A published dataset's one name, wherever its copy lies (the data hash tells copies apart); None: the
    # name follows the data's folder.
    published_name: ClassVar[str | None] = None

    def __init__(self, fold_manifest_path: str | Path, fold: int, data_root: str | Path | None = None,
                 seed: int = 0, *, generator: dict | None = None, batch_size: int = 8, num_workers: int = 0,
                 train_fraction: float = 1.0):
        super().__init__()
        self.fold_manifest_path, self.fold = Path(fold_manifest_path), int(fold)
        self.data_root: Path | None = Path(data_root) if data_root is not None else None
        self.seed = int(seed)
        self.generator = generator  # settings of the built-in data generator, used when data_root is None
        self.batch_size, self.num_workers = batch_size, num_workers
        self.datasets: dict[str, Dataset] = {}
        # The share of the fold's training groups to train on. Subclasses do not take it as an argument: the
        # harness sets it after building the DataModule (as it sets ``seeded_shuffle``), before ``setup``.
        self.train_fraction = check_train_fractions([train_fraction], "train_fraction")[0]
        # What ``fold_items`` kept of the training part: fraction, groups and items used and available.
        self.train_subset: dict | None = None

    # The harness's class-level hooks.

    @classmethod
    def prepare_dataset(cls, data_root: str | Path | None, generator: dict | None = None,
                        progress: bool = True) -> Path:
        """Where the data is: ``data_root`` (or a default location), generating the built-in data first when
        there is nothing to point at."""
        raise NotImplementedError(f"{cls.__name__} does not say where its data is (prepare_dataset)")

    @classmethod
    def index_dataset(cls, data_root: str | Path, **datamodule_args) -> dict:
        """``items``, their ``groups``, ``strata`` (or None) and the ``files`` (relative) the data hash covers,
        from names and headers alone: what fold manifests are drawn from."""
        raise NotImplementedError(f"{cls.__name__} does not index its data (index_dataset)")

    @classmethod
    def check_dataset(cls, data_root: str | Path, progress: bool = True, **datamodule_args) -> dict:
        """``index_dataset`` after reading every file, so bad data fails before any training; subclasses that
        can read their files say so by overriding it."""
        return cls.index_dataset(data_root, **datamodule_args)

    @classmethod
    def dataset_name(cls, data_root: str | Path, generated: bool) -> str:
        """The benchmark folder's name for the data: ``published_name`` if set. Otherwise, generated data lives in
        a cache folder named by a hash of its settings, so its parent (the generator) is part of the name; a
        user's folder is named as it is."""
        if cls.published_name is not None:
            return cls.published_name
        root = Path(data_root)
        return f"{root.parent.name}-{root.name}" if generated else root.resolve().name

    @classmethod
    def fixed_fold_manifest(cls, data_root: str | Path, **datamodule_args) -> dict | None:
        """A publisher's own split as a fold manifest, or None: the harness draws grouped folds itself."""
        return None

    # Lightning.

    def prepare_data(self) -> None:
        self.data_root = self.prepare_dataset(self.data_root, self.generator)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        # Every process resolves the root itself: under DDP only rank 0 ran prepare_data (which generates).
        self.prepare_data()
        self.build_datasets()

    def build_datasets(self) -> None:
        """Fill ``datasets`` (train/val/test) with fold ``fold`` of the data under the resolved ``data_root``."""
        raise NotImplementedError(f"{type(self).__name__} does not build its datasets (build_datasets)")

    def fold_items(self, groups_by_item: Mapping[str, str] | Callable[[str | None], Mapping[str, str]],
                   source: str | None = None) -> dict[str, list[str]]:
        """The item ids of this fold's train/val/test, after ``folds.load_fold``'s checks against the data; the
        training part cut to ``train_fraction`` of its groups (the manifest's groups), val and test untouched."""
        items = load_fold(self.fold_manifest_path, self.fold, groups_by_item, source=source)
        groups = read_fold_manifest(self.fold_manifest_path)[0]["groups"]
        train, kept = training_subset(items["train"], groups, self.train_fraction, self.seed,
                                      where=f"fold {self.fold} of {self.fold_manifest_path}")
        self.train_subset = {"fraction": self.train_fraction, "n_groups": len(kept),
                             "n_groups_total": len({groups[item] for item in items["train"]}),
                             "n_items": len(train), "n_items_total": len(items["train"]), "groups": kept}
        return {**items, "train": train}

    def dataloader(self, partition: str) -> DataLoader:
        train = partition == "train"
        generator = torch.Generator().manual_seed(self.seed) if train and self.seeded_shuffle else None
        batch_size = self.batch_size if train or self.eval_batch_size is None else self.eval_batch_size
        return DataLoader(self.datasets[partition], batch_size=batch_size, shuffle=train, generator=generator,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self.dataloader("train")

    def val_dataloader(self) -> DataLoader:
        return self.dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.dataloader("test")
