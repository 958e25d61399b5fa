"""The train/val/test DataLoaders most DataModules of matcv share."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader


class SeededFoldLoaders:
    """Mixin for a LightningDataModule with ``datasets`` (train/val/test), ``batch_size``, ``num_workers`` and
    ``seed``: training batches are shuffled by a generator seeded from ``seed``, so a run repeats exactly;
    validation and test keep the manifest's order. The last partial training batch is kept (small datasets
    cannot spare it)."""

    def _loader(self, partition: str, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(self.datasets[partition], batch_size=self.batch_size, shuffle=shuffle, generator=generator,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
