"""3-D localization tasks: predict the local strain field ε11 (normalised by the applied macroscopic strain,
mean ≈ 1) of a periodic two-phase composite from its voxel microstructure (Yang et al., Acta Mater. 166
(2019) 335).

``LocalizationEvaluation`` owns what every model of the task shares, so a trained network and the MKS
baseline are scored by the same code:
  * targets standardised with *training-fold* statistics only (``prepare_from_training_data``, which the
    harness calls before fitting); mean and std are buffers, so a checkpoint carries them and a reloaded
    model predicts in physical units from ``forward`` / ``predict_volume``;
  * validation: MSE in standardised units (``val_loss``) and MASE (``val_mase``, the checkpoint monitor);
  * test: per volume MASE, R², MAE per phase; ``test_summary()`` pools R² over all test voxels;
  * ``save_test_figure``: mid-slices of microstructure | true ε11 | predicted ε11 | error.

Models (all see the phases as m − 0.5, Yang et al.'s fixed centring: data-independent, so nothing leaks,
and zero padding inside a window then means "neither phase"):
  * ``CPNetTask`` — the Sandia report's CPNet (902,183 parameters for strideGap 7):
    an 11³ window → the strideGap³ block at its centre, swept over the periodic volume.
  * ``WindowCNNTask`` — Yang et al. 2019: an 11³ periodic window → the strain of its focal voxel, with the
    layer sizes of the authors' released code (NU-CUCIS/Deep_learning_localization).
  * ``UNet3DTask`` — a small fully convolutional 3-D U-Net with circular padding: the whole field at once.
  * ``MKSTask`` — first-order MKS (lightning_modules/mks.py), fitted in closed form, not by a Trainer.

Every volume is periodic: windows are cut with wrap-around (``periodic_windows``), never zero-filled. The
networks are in ``localization_nets``, the test figure in ``localization_figures``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from matcv.lightning_modules.base import BenchmarkModule
from matcv.lightning_modules.localization_figures import mid_slice, save_localization_examples
from matcv.lightning_modules.localization_metrics import (
    PooledRegressionStats,
    mase,
    per_phase_mae,
    per_volume_mase,
    r2_all_voxels,
)
from matcv.lightning_modules.localization_nets import CPNet, PeriodicUNet3D, YangWindowCNN
from matcv.lightning_modules.mks import FirstOrderMKS

PHASE_CENTRE = 0.5  # networks see m − 0.5 ∈ {−0.5, 0.5} (Yang et al.'s input scaling)


# --------------------------------------------------------------------------------------------------
# Periodic windows and the sweeps that assemble whole fields from local predictions
# --------------------------------------------------------------------------------------------------

def periodic_windows(volumes: torch.Tensor, corners: torch.Tensor, size: int) -> torch.Tensor:
    """Cubes of side ``size`` cut from periodic volumes with wrap-around.

    volumes (B, C, N0, N1, N2); corners (B, K, 3) integer (any value: taken modulo N) giving each cube's
    lowest corner. Returns (B, K, C, size, size, size). One linear index per voxel keeps memory at one
    int64 per gathered voxel.
    """
    batch, channels, *shape = volumes.shape
    offsets = torch.arange(size, device=volumes.device)
    x, y, z = ((corners[..., axis, None].long() + offsets) % shape[axis] for axis in range(3))  # (B, K, S)
    linear = (x[:, :, :, None, None] * (shape[1] * shape[2]) + y[:, :, None, :, None] * shape[2]
              + z[:, :, None, None, :])  # (B, K, S, S, S)
    n_windows = corners.shape[1]
    flat = volumes.reshape(batch, channels, -1)
    index = linear.reshape(batch, 1, -1).expand(batch, channels, -1)
    picked = flat.gather(2, index).reshape(batch, channels, n_windows, size, size, size)
    return picked.transpose(1, 2)


def block_origins(shape: Sequence[int], block: int, device=None) -> torch.Tensor:
    """(M, 3) lowest corners of the blocks tiling a volume of ``shape`` (ceil(N / block) per axis)."""
    counts = [math.ceil(n / block) for n in shape]
    axes = [torch.arange(c, device=device) * block for c in counts]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def predict_by_blocks(volumes: torch.Tensor, block_predictor: Callable[[torch.Tensor], torch.Tensor],
                      block: int, window: int, chunk_size: int = 4096) -> torch.Tensor:
    """Sweep a block predictor over periodic volumes (CPNet's forward prediction mode).

    ``block_predictor`` maps windows (M, C, window³) to the (M, block³) field of the block centred in each
    window. Blocks tile the volume from the origin; where N is not a multiple of ``block`` (51 with
    strideGap 7) the last block of an axis runs past N, its windows wrap periodically, and the surplus
    is cropped — each kept voxel is still predicted from its true periodic neighbourhood.
    Returns (B, 1, N0, N1, N2).
    """
    if (window - block) % 2 or window < block:
        raise ValueError(f"a block of {block} cannot sit centred in a window of {window}")
    batch, _, *shape = volumes.shape
    margin = (window - block) // 2
    origins = block_origins(shape, block, volumes.device)
    blocks = volumes.new_empty(batch, len(origins), block ** 3)
    for b in range(batch):
        for start in range(0, len(origins), chunk_size):
            corners = origins[start:start + chunk_size] - margin
            windows = periodic_windows(volumes[b:b + 1], corners[None], window)[0]
            blocks[b, start:start + len(corners)] = block_predictor(windows).reshape(len(corners), -1)
    counts = [math.ceil(n / block) for n in shape]
    field = blocks.reshape(batch, *counts, block, block, block).permute(0, 1, 4, 2, 5, 3, 6)
    field = field.reshape(batch, *(c * block for c in counts))
    return field[:, None, :shape[0], :shape[1], :shape[2]]


def predict_by_voxels(volumes: torch.Tensor, voxel_predictor: Callable[[torch.Tensor], torch.Tensor],
                      window: int, chunk_size: int = 4096) -> torch.Tensor:
    """Evaluate a focal-voxel predictor (windows (M, C, window³) → (M,)) at every voxel of periodic volumes,
    ``chunk_size`` windows at a time (memory stays bounded at 51³). Returns (B, 1, N0, N1, N2)."""
    if window % 2 == 0:
        raise ValueError(f"a focal voxel needs an odd window, got {window}")
    batch, _, *shape = volumes.shape
    focal = torch.stack(torch.meshgrid(*(torch.arange(n, device=volumes.device) for n in shape), indexing="ij"),
                        dim=-1).reshape(-1, 3)
    out = volumes.new_empty(batch, len(focal))
    for b in range(batch):
        for start in range(0, len(focal), chunk_size):
            corners = focal[start:start + chunk_size] - window // 2
            windows = periodic_windows(volumes[b:b + 1], corners[None], window)[0]
            out[b, start:start + len(corners)] = voxel_predictor(windows).reshape(-1)
    return out.reshape(batch, 1, *shape)


# --------------------------------------------------------------------------------------------------
# Shared evaluation
# --------------------------------------------------------------------------------------------------

class LocalizationEvaluation(BenchmarkModule):
    """Standardisation, validation/test scoring and the test figure shared by all localization models.

    A subclass implements ``predict_normalized(microstructure) -> (B, 1, N, N, N)`` in standardised
    strain units (or overrides ``forward`` for a baseline that predicts physical units directly).
    """

    monitor = "val_mase"  # checkpoint selection: grouped validation split only, never test
    mode = "min"
    n_figure_examples = 3

    def __init__(self) -> None:
        super().__init__()
        # Persistent buffers: a checkpoint carries the training-fold statistics with the weights.
        self.register_buffer("strain_mean", torch.zeros(()))
        self.register_buffer("strain_std", torch.ones(()))
        self.register_buffer("normalization_fitted", torch.zeros((), dtype=torch.bool))
        self.test_results: list[dict] = []
        self.test_examples: dict[str, np.ndarray] = {}
        self._pooled = PooledRegressionStats()

    # ---- standardisation (training fold only) ----
    def prepare_from_training_data(self, datamodule) -> None:
        """Store mean and std of the training fold's strains (float64 sums over volume chunks)."""
        strains = datamodule.datasets["train"].strains
        count, total, total_sq = 0, 0.0, 0.0
        for start in range(0, len(strains), 64):
            chunk = np.asarray(strains[start:start + 64], dtype=np.float64)
            count += chunk.size
            total += chunk.sum()
            total_sq += np.square(chunk).sum()
        if count == 0:
            raise ValueError("the training fold has no strain fields")
        mean = total / count
        std = math.sqrt(max(total_sq / count - mean * mean, 0.0))
        self.strain_mean.fill_(mean)
        self.strain_std.fill_(std if std > 0 else 1.0)
        self.normalization_fitted.fill_(True)

    def on_fit_start(self) -> None:
        # Safety net for callers other than the harness: never train against unset statistics.
        if not bool(self.normalization_fitted):
            datamodule = self.trainer.datamodule  # None when fitted on bare dataloaders
            if datamodule is not None:
                self.prepare_from_training_data(datamodule)
            else:
                warnings.warn(f"{type(self).__name__}: no training statistics; targets are not standardised")

    def normalize_strain(self, strain: torch.Tensor) -> torch.Tensor:
        return (strain - self.strain_mean) / self.strain_std

    def denormalize_strain(self, values: torch.Tensor) -> torch.Tensor:
        return values * self.strain_std + self.strain_mean

    # ---- prediction ----
    def predict_normalized(self, microstructure: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define predict_normalized (or override forward)")

    def forward(self, microstructure: torch.Tensor) -> torch.Tensor:
        """(B, 1, N, N, N) phases → strain field in physical units (the datamodule's units)."""
        return self.denormalize_strain(self.predict_normalized(microstructure))

    @torch.no_grad()
    def predict_volume(self, microstructure) -> torch.Tensor:
        """Strain of one (N, N, N) or a batch (B, 1, N, N, N) of microstructures, in eval mode."""
        volumes = torch.as_tensor(np.asarray(microstructure) if not torch.is_tensor(microstructure)
                                  else microstructure, dtype=torch.float32, device=self.device)
        single = volumes.ndim == 3
        volumes = volumes[None, None] if single else volumes
        was_training = self.training
        self.eval()
        try:
            field = self(volumes)
        finally:
            self.train(was_training)
        return field[0, 0] if single else field

    # ---- validation ----
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        microstructure, strain = batch["microstructure"], batch["strain"]
        predicted = self.predict_normalized(microstructure)
        loss = F.mse_loss(predicted, self.normalize_strain(strain))
        n = len(strain)
        self.log("val_loss", loss, batch_size=n, sync_dist=True)
        scores = per_volume_mase(self.denormalize_strain(predicted), strain)
        self.log("val_mase", float(scores.mean()), batch_size=n, sync_dist=True, prog_bar=True)

    # ---- test ----
    def on_test_epoch_start(self) -> None:
        self.test_results = []
        self.test_examples = {}
        self._pooled = PooledRegressionStats()

    def test_step(self, batch: dict, batch_idx: int) -> None:
        microstructure, strain = batch["microstructure"], batch["strain"]
        predicted = self(microstructure).float().cpu().numpy()
        truth = strain.float().cpu().numpy()
        phases = microstructure.cpu().numpy()
        for k, item in enumerate(batch["item_id"]):
            self.test_results.append({"item_id": item, "mase": mase(predicted[k], truth[k]),
                                      "r2": r2_all_voxels(predicted[k], truth[k]),
                                      **per_phase_mae(predicted[k], truth[k], phases[k])})
            self._pooled.update(predicted[k], truth[k])
            if len(self.test_examples) < self.n_figure_examples:
                self.test_examples[item] = mid_slice(predicted[k, 0])
        self.log("test_mase", float(np.mean([r["mase"] for r in self.test_results[-len(truth):]])),
                 batch_size=len(truth))

    def test_summary(self) -> dict[str, float]:
        """Fold-level scores: R² pooled over every voxel of every test volume (coefficient of determination,
        and the Sandia report's squared Pearson r), MASE as the mean of per-volume MASE (Yang et al.)."""
        rows = self.test_results
        if not rows:
            return {}

        def mean_of(key: str) -> float:
            values = np.array([r[key] for r in rows], dtype=np.float64)
            return float(np.mean(values[~np.isnan(values)])) if (~np.isnan(values)).any() else math.nan

        return {"r2": self._pooled.r2(), "r2_pearson": self._pooled.squared_pearson(),
                "mase": mean_of("mase"), "r2_per_volume": mean_of("r2"),
                "mae_phase0": mean_of("mae_phase0"), "mae_phase1": mean_of("mae_phase1")}

    def save_test_figure(self, path: Path, datamodule) -> Path | None:
        """Mid-slices of the first test volumes: microstructure | true ε11 | predicted ε11 | error."""
        if not self.test_examples:
            return None
        test = datamodule.datasets["test"]
        index = {item: i for i, item in enumerate(test.item_ids)}
        scores = {r["item_id"]: r for r in self.test_results}
        items = list(self.test_examples)
        return save_localization_examples(
            path, [mid_slice(test.microstructures[index[i]]) for i in items],
            [mid_slice(test.strains[index[i]]) for i in items], [self.test_examples[i] for i in items],
            [f"{i}  MASE {scores[i]['mase']:.2f} %" for i in items])


class TrainedLocalizationTask(LocalizationEvaluation):
    """A network trained by Lightning: Adam, MSE in standardised units; ``training_loss(batch)``."""

    def training_loss(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define training_loss(batch)")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.training_loss(batch)
        self.log("train_loss", loss, batch_size=len(batch["strain"]), on_epoch=True, on_step=False,
                 prog_bar=True, sync_dist=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


# --------------------------------------------------------------------------------------------------
# CPNet
# --------------------------------------------------------------------------------------------------

class CPNetTask(TrainedLocalizationTask):
    """CPNet trained on the blocks of the training volumes, swept over whole periodic volumes to predict.

    Training: each volume of a batch is tiled by strideGap³ blocks on a grid shifted by a random offset
    (so over epochs every voxel is a block corner as often as any other; a 21³ volume gives 27 blocks);
    ``train_blocks_per_volume`` keeps a random subset of them per volume. Prediction tiles from the origin
    (see ``predict_by_blocks`` for N not a multiple of strideGap, e.g. 51 with 7: pad periodically, crop).
    """

    def __init__(self, stride_gap: int = 7, window_size: int = 11, train_blocks_per_volume: int | None = None,
                 inference_chunk: int = 4096, lr: float = 1e-3, weight_decay: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = CPNet(stride_gap, window_size)

    def _blocks(self, windows: torch.Tensor) -> torch.Tensor:
        return self.net(windows)

    def predict_normalized(self, microstructure: torch.Tensor) -> torch.Tensor:
        hp = self.hparams
        return predict_by_blocks(microstructure - PHASE_CENTRE, self._blocks, hp.stride_gap, hp.window_size,
                                 hp.inference_chunk)

    def training_loss(self, batch: dict) -> torch.Tensor:
        microstructure, strain = batch["microstructure"], batch["strain"]
        hp = self.hparams
        batch_size, _, *shape = microstructure.shape
        origins = block_origins(shape, hp.stride_gap, microstructure.device)
        shift = torch.randint(0, hp.stride_gap, (batch_size, 1, 3), device=microstructure.device)
        corners = origins[None] + shift  # (B, M, 3), wrapped modulo N by periodic_windows
        if hp.train_blocks_per_volume and hp.train_blocks_per_volume < len(origins):
            keep = torch.rand(batch_size, len(origins), device=microstructure.device).argsort(dim=1)
            corners = corners.gather(1, keep[:, :hp.train_blocks_per_volume, None].expand(-1, -1, 3))
        margin = (hp.window_size - hp.stride_gap) // 2
        windows = periodic_windows(microstructure - PHASE_CENTRE, corners - margin, hp.window_size).flatten(0, 1)
        targets = periodic_windows(self.normalize_strain(strain), corners, hp.stride_gap).flatten(0, 1)
        return F.mse_loss(self.net(windows), targets.reshape(len(targets), -1))


# --------------------------------------------------------------------------------------------------
# Yang et al. 2019 local-window CNN
# --------------------------------------------------------------------------------------------------

class WindowCNNTask(TrainedLocalizationTask):
    """Yang et al. 2019: a periodic 11³ window around each focal voxel → that voxel's strain.

    Training draws ``voxels_per_volume`` random focal voxels from every volume of a batch (so an epoch
    sees n_train × voxels_per_volume windows; the authors swept all 9261 voxels of each 21³ volume in
    batches of 252). Whole volumes are predicted voxel by voxel, ``inference_chunk`` windows at a time.
    Defaults follow the contrast-10 script (lr 1e-3, L2 1e-4; use lr 5e-4, weight_decay 5e-4 for
    contrast 50). Keras's l2(λ) penalty is approximated by Adam's coupled ``weight_decay`` (it also decays
    biases, and the loss scale differs: standardised targets here, strain × 10⁴ there).
    """

    def __init__(self, window_size: int = 11, conv_channels: Sequence[int] = (128, 256),
                 hidden_units: Sequence[int] = (2048, 1024), conv_dims: int = 2, voxels_per_volume: int = 128,
                 inference_chunk: int = 4096, lr: float = 1e-3, weight_decay: float = 1e-4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = YangWindowCNN(window_size, conv_channels, hidden_units, conv_dims)

    def _voxels(self, windows: torch.Tensor) -> torch.Tensor:
        return self.net(windows)

    def predict_normalized(self, microstructure: torch.Tensor) -> torch.Tensor:
        return predict_by_voxels(microstructure - PHASE_CENTRE, self._voxels, self.hparams.window_size,
                                 self.hparams.inference_chunk)

    def training_loss(self, batch: dict) -> torch.Tensor:
        microstructure, strain = batch["microstructure"], batch["strain"]
        batch_size, _, *shape = microstructure.shape
        count, window = self.hparams.voxels_per_volume, self.hparams.window_size
        focal = torch.stack([torch.randint(0, n, (batch_size, count), device=microstructure.device)
                             for n in shape], dim=-1)
        windows = periodic_windows(microstructure - PHASE_CENTRE, focal - window // 2, window).flatten(0, 1)
        targets = periodic_windows(self.normalize_strain(strain), focal, 1).reshape(-1)
        return F.mse_loss(self.net(windows), targets)


# --------------------------------------------------------------------------------------------------
# Periodic 3-D U-Net
# --------------------------------------------------------------------------------------------------

class UNet3DTask(TrainedLocalizationTask):
    """The whole strain field from the whole microstructure in one pass (periodic 3-D U-Net)."""

    def __init__(self, base_channels: int = 16, depth: int = 2, lr: float = 1e-3, weight_decay: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = PeriodicUNet3D(1, base_channels, depth)

    def predict_normalized(self, microstructure: torch.Tensor) -> torch.Tensor:
        return self.net(microstructure - PHASE_CENTRE)

    def training_loss(self, batch: dict) -> torch.Tensor:
        predicted = self.predict_normalized(batch["microstructure"])
        return F.mse_loss(predicted, self.normalize_strain(batch["strain"]))


# --------------------------------------------------------------------------------------------------
# First-order MKS baseline
# --------------------------------------------------------------------------------------------------

class MKSTask(LocalizationEvaluation):
    """First-order MKS (lightning_modules/mks.py) on the leaderboard: fitted in closed form on the fold's
    training volumes by ``fit_baseline``, then tested by the same code as the networks. It predicts
    physical units directly, so it needs no standardisation."""

    requires_training = False

    def __init__(self, regularization: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.mks = FirstOrderMKS(regularization=regularization)
        # A parameter-free module still needs a device anchor for Lightning.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def fit_baseline(self, datamodule) -> None:
        train = datamodule.datasets["train"]
        self.mks.fit(train.microstructures, train.strains)

    def forward(self, microstructure: torch.Tensor) -> torch.Tensor:
        predicted = self.mks.predict(microstructure[:, 0])
        return torch.as_tensor(predicted, dtype=torch.float32, device=microstructure.device)[:, None]

    def predict_normalized(self, microstructure: torch.Tensor) -> torch.Tensor:
        return self.normalize_strain(self(microstructure))
