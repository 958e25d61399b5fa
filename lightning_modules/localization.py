"""3-D localization tasks: predict the local strain field ε11 (normalised by the applied macroscopic strain,
mean ≈ 1) of a periodic two-phase composite from its voxel microstructure (SCIENCE.md §4; seed 002 §4;
Yang et al., Acta Mater. 166 (2019) 335).

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
  * ``CPNetTask`` — the Sandia report's CPNet (seed 002 §4.3; 902,183 parameters for strideGap 7):
    an 11³ window → the strideGap³ block at its centre, swept over the periodic volume.
  * ``WindowCNNTask`` — Yang et al. 2019: an 11³ periodic window → the strain of its focal voxel, with the
    layer sizes of the authors' released code (NU-CUCIS/Deep_learning_localization).
  * ``UNet3DTask`` — a small fully convolutional 3-D U-Net with circular padding: the whole field at once.
  * ``MKSTask`` — first-order MKS (lightning_modules/mks.py), fitted in closed form, not by a Trainer.

Every volume is periodic: windows are cut with wrap-around (``periodic_windows``), never zero-filled.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from matcv.datamodules.core.atomic_io import save_figure
from matcv.lightning_modules.localization_metrics import (
    PooledRegressionStats,
    mase,
    per_phase_mae,
    per_volume_mase,
    r2_all_voxels,
)
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

class LocalizationEvaluation(L.LightningModule):
    """Standardisation, validation/test scoring and the test figure shared by all localization models.

    A subclass implements ``predict_normalized(microstructure) -> (B, 1, N, N, N)`` in standardised
    strain units (or overrides ``forward`` for a baseline that predicts physical units directly).
    """

    monitor = "val_mase"  # checkpoint selection: grouped validation split only, never test
    mode = "min"
    requires_training = True
    n_figure_examples = 3
    ddp_find_unused_parameters = False

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
            datamodule = getattr(self.trainer, "datamodule", None)
            if datamodule is not None and hasattr(datamodule, "datasets"):
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


def mid_slice(volume) -> np.ndarray:
    """The plane through the middle of the last axis: it contains axis 0 (the loading direction x1)."""
    volume = np.asarray(volume)
    return np.array(volume[:, :, volume.shape[2] // 2], dtype=np.float32)


def save_localization_examples(path: str | Path, phases: list[np.ndarray], truths: list[np.ndarray],
                               predictions: list[np.ndarray], titles: list[str]) -> Path:
    """One row per volume; true and predicted ε11 share one colour scale over all rows, the error a
    symmetric diverging one, so rows and columns compare at a glance. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers and CI
    import matplotlib.pyplot as plt

    low = min(float(np.min(a)) for a in truths + predictions)
    high = max(float(np.max(a)) for a in truths + predictions)
    errors = [p - t for p, t in zip(predictions, truths)]
    bound = max(float(np.max(np.abs(e))) for e in errors) or 1.0
    rows = len(phases)
    figure, axes = plt.subplots(rows, 4, figsize=(12, 2.8 * rows), squeeze=False)
    for row in range(rows):
        panels = [(phases[row], "gray", 0.0, 1.0, titles[row] + "\nphases (1 = stiff); x1 down, x3 = N/2"),
                  (truths[row], "viridis", low, high, "true ε11 / applied"),
                  (predictions[row], "viridis", low, high, "predicted ε11 / applied"),
                  (errors[row], "RdBu_r", -bound, bound, "predicted − true")]
        for axis, (picture, cmap, vmin, vmax, label) in zip(axes[row], panels):
            image = axis.imshow(picture, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            figure.colorbar(image, ax=axis, fraction=0.046, pad=0.03)
            axis.set_title(label, fontsize=7)
            axis.axis("off")
    figure.tight_layout()
    return save_figure(path, figure, dpi=100)


class _TrainedLocalizationTask(LocalizationEvaluation):
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
# CPNet (seed 002 §4.3)
# --------------------------------------------------------------------------------------------------

class CPNet(nn.Module):
    """The Sandia report's CPNet, layer for layer (seed 002 §4.3, torchsummary table, 902,183 parameters
    for strideGap 7): an 11³ window → the strideGap³ block at its centre.

    The table fixes each layer's output shape and parameter count; what it leaves open is chosen as the
    simplest fit: the "keeping" MaxPool3d layers are kernel 3 / stride 1 / padding 1, the 6 → 5 one kernel 2
    / stride 1; the strided convolutions are kernel 3 / stride 2 / padding 1 (11 → 6, 5 → 3). The flatten
    between the features and the dense head is a view in ``forward`` (torchsummary lists no layer for it).
    """

    def __init__(self, stride_gap: int = 7, window_size: int = 11) -> None:
        super().__init__()
        self.stride_gap, self.window_size = stride_gap, window_size
        self.features = nn.Sequential(
            nn.Conv3d(1, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(), nn.MaxPool3d(3, stride=1, padding=1),
            nn.Conv3d(8, 16, 3, stride=2, padding=1), nn.BatchNorm3d(16), nn.ReLU(),
            nn.MaxPool3d(3, stride=1, padding=1),
            nn.Conv3d(16, 32, 3, padding=1), nn.BatchNorm3d(32), nn.ReLU(), nn.MaxPool3d(2, stride=1),
            nn.Conv3d(32, 64, 3, stride=2, padding=1), nn.BatchNorm3d(64), nn.ReLU(),
            nn.MaxPool3d(3, stride=1, padding=1),
        )
        with torch.no_grad():
            n_features = self.features.eval()(torch.zeros(1, 1, window_size, window_size, window_size)).numel()
        self.features.train()
        block = stride_gap ** 3
        self.head = nn.Sequential(nn.Linear(n_features, block), nn.ReLU(), nn.Linear(block, block), nn.ReLU(),
                                  nn.Linear(block, block))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """(M, 1, 11, 11, 11) → (M, strideGap³), the block in row-major (x, y, z) order."""
        return self.head(self.features(windows).flatten(1))


class CPNetTask(_TrainedLocalizationTask):
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

class YangWindowCNN(nn.Module):
    """Yang et al. 2019's focal-voxel CNN, with the layer sizes of the authors' released scripts
    (github.com/NU-CUCIS/Deep_learning_localization, ``contrast10_localization.py`` /
    ``contrast50_localization.py``): on the 11³ window,
        conv 3×3 valid, 128 filters, ReLU → conv 3×3 valid, 256 filters, ReLU → flatten (7·7·256)
        → dense 2048 ReLU → dense 1024 ReLU → dense 1,
    Glorot-normal weights, zero biases. The released code ("2DCNN") treats the window's last axis as the 11
    input channels of 2-D convolutions (Keras channels-last), which is ``conv_dims=2`` (28.1 M parameters);
    ``conv_dims=3`` uses true 3-D convolutions of the same widths (one input channel; the dense layer then
    has 256·7³ inputs, ≈ 182 M parameters — only practical with smaller widths).
    """

    def __init__(self, window_size: int = 11, conv_channels: Sequence[int] = (128, 256),
                 hidden_units: Sequence[int] = (2048, 1024), conv_dims: int = 2) -> None:
        super().__init__()
        if conv_dims not in (2, 3):
            raise ValueError(f"conv_dims must be 2 (slices as channels, as released) or 3, got {conv_dims}")
        self.conv_dims = conv_dims
        conv = nn.Conv2d if conv_dims == 2 else nn.Conv3d
        channels = window_size if conv_dims == 2 else 1
        layers: list[nn.Module] = []
        for width in conv_channels:
            layers += [conv(channels, width, 3), nn.ReLU()]
            channels = width
        self.features = nn.Sequential(*layers)
        side = window_size - 2 * len(conv_channels)
        if side < 1:
            raise ValueError(f"{len(conv_channels)} valid 3×3 convolutions do not fit an {window_size} window")
        dense: list[nn.Module] = []
        width = channels * side ** conv_dims
        for units in hidden_units:
            dense += [nn.Linear(width, units), nn.ReLU()]
            width = units
        dense.append(nn.Linear(width, 1))
        self.head = nn.Sequential(*dense)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.Linear)):
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """(M, 1, S, S, S) → (M,) strain of each window's centre voxel."""
        x = windows[:, 0].permute(0, 3, 1, 2) if self.conv_dims == 2 else windows  # last axis → channels
        return self.head(self.features(x).flatten(1)).squeeze(1)


class WindowCNNTask(_TrainedLocalizationTask):
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

def _periodic_conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, 3, padding=1, padding_mode="circular", bias=False),
        nn.BatchNorm3d(out_channels), nn.ReLU(inplace=True),
        nn.Conv3d(out_channels, out_channels, 3, padding=1, padding_mode="circular", bias=False),
        nn.BatchNorm3d(out_channels), nn.ReLU(inplace=True),
    )


class PeriodicUNet3D(nn.Module):
    """A small 3-D U-Net (``depth`` poolings, ``base_channels`` doubling per level) with circular padding in
    every convolution, so the field is treated as periodic.

    Grid sizes that 2^depth does not divide (21 → 24, 51 → 52 for depth 2) are padded circularly (half on
    each side) and the output is cropped back. The padded volume is then treated as periodic with period
    24, so voxels within a receptive field of the seam see ≤ 3 duplicated planes instead of their exact
    periodic neighbours: a small, documented approximation (exact when N is a multiple of 2^depth). The
    alternatives were worse here: a stride-free dilated net is not a U-Net, and a margin covering the whole
    receptive field would cost ~20× the compute at 21³.
    """

    def __init__(self, in_channels: int = 1, base_channels: int = 16, depth: int = 2) -> None:
        super().__init__()
        self.depth = depth
        widths = [base_channels * 2 ** level for level in range(depth + 1)]
        self.encoders = nn.ModuleList()
        channels = in_channels
        for width in widths[:-1]:
            self.encoders.append(_periodic_conv_block(channels, width))
            channels = width
        self.bottleneck = _periodic_conv_block(channels, widths[-1])
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(depth)):
            self.upsamplers.append(nn.ConvTranspose3d(widths[level + 1], widths[level], 2, stride=2))
            self.decoders.append(_periodic_conv_block(2 * widths[level], widths[level]))
        self.head = nn.Conv3d(widths[0], 1, 1)

    def forward(self, volumes: torch.Tensor) -> torch.Tensor:
        shape = volumes.shape[-3:]
        multiple = 2 ** self.depth
        extra = [(-n) % multiple for n in shape]
        padding: list[int] = []
        for more in reversed(extra):  # F.pad takes the last axis first
            padding += [more // 2, more - more // 2]
        x = F.pad(volumes, padding, mode="circular") if any(extra) else volumes
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = F.max_pool3d(x, 2)
        x = self.bottleneck(x)
        for upsample, decoder, skip in zip(self.upsamplers, self.decoders, reversed(skips)):
            x = decoder(torch.cat([upsample(x), skip], dim=1))
        x = self.head(x)
        starts = [more // 2 for more in extra]
        return x[..., starts[0]:starts[0] + shape[0], starts[1]:starts[1] + shape[1], starts[2]:starts[2] + shape[2]]


class UNet3DTask(_TrainedLocalizationTask):
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
