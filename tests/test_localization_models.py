"""The 3-D localization models: metrics on hand-computed cases, CPNet's layer table, the periodic sweeps,
first-order MKS on an exactly linear response, and one quick Lightning fit + test of every task."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from matcv.lightning_modules.localization import (
    CPNetTask,
    MKSTask,
    UNet3DTask,
    WindowCNNTask,
    periodic_windows,
    predict_by_blocks,
    predict_by_voxels,
)
from matcv.lightning_modules.localization_metrics import (
    PooledRegressionStats,
    mase,
    per_phase_mae,
    per_volume_mase,
    r2_all_voxels,
    squared_pearson_r2,
)
from matcv.lightning_modules.localization_nets import CPNet, PeriodicUNet3D, YangWindowCNN
from matcv.lightning_modules.mks import FirstOrderMKS

# ---------------------------------------------------------------------------------------------- metrics


def test_mase_on_a_hand_computed_volume():
    true = np.array([1.0, 1.0, 2.0, 4.0])  # mean 2
    pred = np.array([1.0, 2.0, 2.0, 2.0])  # |error| 0, 1, 0, 2: mean 0.75
    assert mase(pred, true) == pytest.approx(0.75 / 2 * 100)
    batch = np.stack([pred, true])[:, None]
    assert per_volume_mase(batch, np.stack([true, true])[:, None]).tolist() == pytest.approx([37.5, 0.0])


def test_r2_and_squared_pearson_on_hand_computed_values():
    true = np.array([1.0, 2.0, 3.0, 4.0])  # SS_tot = 5
    pred = np.array([1.0, 2.0, 3.0, 5.0])  # SS_res = 1
    assert r2_all_voxels(pred, true) == pytest.approx(0.8)
    # Pearson: Σ cross 6.5, Σ pred² (centred) 8.75 -> r² = 6.5² / (5 · 8.75)
    assert squared_pearson_r2(pred, true) == pytest.approx(6.5 ** 2 / (5 * 8.75))
    # The Sandia R² cannot see an affine error; the coefficient of determination can.
    assert squared_pearson_r2(2 * true + 5, true) == pytest.approx(1.0)
    assert r2_all_voxels(2 * true + 5, true) < 0


def test_pooled_stats_over_batches_equal_one_pass_over_all_voxels():
    rng = np.random.default_rng(0)
    true = rng.normal(1.0, 0.3, size=(5, 7, 7, 7))
    pred = true + rng.normal(0.05, 0.1, size=true.shape)
    stats = PooledRegressionStats()
    for k in range(5):
        stats.update(torch.as_tensor(pred[k]), torch.as_tensor(true[k]))
    assert stats.r2() == pytest.approx(r2_all_voxels(pred, true), rel=1e-12)
    assert stats.squared_pearson() == pytest.approx(np.corrcoef(pred.ravel(), true.ravel())[0, 1] ** 2, rel=1e-12)


def test_per_phase_mae_and_an_absent_phase():
    pred, true = np.array([1.0, 2.0, 3.0, 6.0]), np.array([1.0, 1.0, 3.0, 4.0])
    scores = per_phase_mae(pred, true, np.array([0, 0, 1, 1]))
    assert scores == pytest.approx({"mae_phase0": 0.5, "mae_phase1": 1.0})
    only_matrix = per_phase_mae(pred, true, np.zeros(4))
    assert only_matrix["mae_phase0"] == pytest.approx(0.75) and math.isnan(only_matrix["mae_phase1"])


# ---------------------------------------------------------------------------------------------- CPNet

CPNET_TABLE = [  # Tran, Rodgers & Wildey 2020, §4.3, torchsummary of CPNet (strideGap 7)
    ("Conv3d", (8, 11, 11, 11), 224), ("BatchNorm3d", (8, 11, 11, 11), 16), ("ReLU", (8, 11, 11, 11), 0),
    ("MaxPool3d", (8, 11, 11, 11), 0),
    ("Conv3d", (16, 6, 6, 6), 3472), ("BatchNorm3d", (16, 6, 6, 6), 32), ("ReLU", (16, 6, 6, 6), 0),
    ("MaxPool3d", (16, 6, 6, 6), 0),
    ("Conv3d", (32, 6, 6, 6), 13856), ("BatchNorm3d", (32, 6, 6, 6), 64), ("ReLU", (32, 6, 6, 6), 0),
    ("MaxPool3d", (32, 5, 5, 5), 0),
    ("Conv3d", (64, 3, 3, 3), 55360), ("BatchNorm3d", (64, 3, 3, 3), 128), ("ReLU", (64, 3, 3, 3), 0),
    ("MaxPool3d", (64, 3, 3, 3), 0),
    ("Linear", (343,), 593047), ("ReLU", (343,), 0), ("Linear", (343,), 117992), ("ReLU", (343,), 0),
    ("Linear", (343,), 117992),
]


def test_cpnet_reproduces_the_seed_layer_table():
    net = CPNet(stride_gap=7)
    rows = []
    leaves = [m for m in net.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(lambda m, i, o: rows.append(
        (type(m).__name__, tuple(o.shape[1:]), sum(p.numel() for p in m.parameters())))) for m in leaves]
    net(torch.zeros(2, 1, 11, 11, 11))
    for hook in hooks:
        hook.remove()
    assert rows == CPNET_TABLE
    assert sum(p.numel() for p in net.parameters()) == 902_183
    assert all(p.requires_grad for p in net.parameters())


# ---------------------------------------------------------------------------------------------- sweeps


def test_periodic_windows_wrap_around():
    field = torch.arange(5 * 6 * 7, dtype=torch.float32).reshape(1, 1, 5, 6, 7)
    corners = torch.tensor([[[-2, 4, 6], [3, 0, -1]]])
    windows = periodic_windows(field, corners, 3)
    assert windows.shape == (1, 2, 1, 3, 3, 3)
    for k, corner in enumerate(corners[0].tolist()):
        expected = field[0, 0].numpy()
        for axis, start in enumerate(corner):
            expected = np.take(expected, range(start, start + 3), axis=axis, mode="wrap")
        assert np.array_equal(windows[0, k, 0].numpy(), expected)


@pytest.mark.parametrize("size, block, window", [(21, 7, 11), (10, 7, 11), (12, 5, 11), (9, 3, 5)])
def test_block_sweep_reassembles_the_field_with_periodic_wrap(size, block, window):
    torch.manual_seed(0)
    field = torch.rand(2, 1, size, size, size)
    margin = (window - block) // 2
    centre = lambda w: w[:, 0, margin:margin + block, margin:margin + block, margin:margin + block]
    assert torch.equal(predict_by_blocks(field, centre, block, window, chunk_size=5), field)
    # The window's low corner is `margin` voxels before the block: the field comes back rolled.
    corner = lambda w: w[:, 0, :block, :block, :block]
    assert torch.equal(predict_by_blocks(field, corner, block, window), field.roll((margin,) * 3, dims=(2, 3, 4)))


def test_voxel_sweep_reassembles_the_field_with_periodic_wrap():
    torch.manual_seed(0)
    field = torch.rand(2, 1, 9, 8, 7)
    centre = lambda w: w[:, 0, 5, 5, 5]
    assert torch.equal(predict_by_voxels(field, centre, 11, chunk_size=100), field)
    corner = lambda w: w[:, 0, 0, 0, 0]
    assert torch.equal(predict_by_voxels(field, corner, 11), field.roll((5, 5, 5), dims=(2, 3, 4)))


class _CentreBlock(nn.Module):
    def __init__(self, block: int, margin: int) -> None:
        super().__init__()
        self.block, self.margin = block, margin

    def forward(self, windows):
        m, s = self.margin, self.block
        return windows[:, 0, m:m + s, m:m + s, m:m + s].reshape(len(windows), -1)


def test_tasks_sweep_their_network_over_the_whole_volume():
    torch.manual_seed(0)
    phases = (torch.rand(2, 1, 21, 21, 21) > 0.5).float()
    cpnet = CPNetTask()
    cpnet.net = _CentreBlock(7, 2)
    assert torch.equal(cpnet(phases), phases - 0.5)  # untrained statistics: mean 0, std 1
    window = WindowCNNTask(conv_channels=(4,), hidden_units=(8,))
    window.net = _CentreBlock(1, 5)
    assert torch.equal(window(phases), phases - 0.5)


@pytest.mark.parametrize("make_task", [
    lambda: CPNetTask(),
    lambda: WindowCNNTask(conv_channels=(8, 16), hidden_units=(32, 16)),
    lambda: UNet3DTask(),
])
def test_forward_keeps_the_volume_shape(make_task):
    torch.manual_seed(0)
    task = make_task().eval()
    with torch.no_grad():
        out = task((torch.rand(2, 1, 21, 21, 21) > 0.5).float())
    assert out.shape == (2, 1, 21, 21, 21) and torch.isfinite(out).all()


def test_yang_default_architecture_sizes():
    net = YangWindowCNN()  # as released: 11 slices as channels, conv 128 / 256, dense 2048 / 1024 / 1
    counts = [p.numel() for p in net.parameters()]
    assert counts == [11 * 128 * 9, 128, 128 * 256 * 9, 256, 7 * 7 * 256 * 2048, 2048, 2048 * 1024, 1024, 1024, 1]
    assert sum(counts) == 28_099_329
    assert net(torch.zeros(3, 1, 11, 11, 11)).shape == (3,)
    assert YangWindowCNN(conv_channels=(4, 8), hidden_units=(16,), conv_dims=3)(torch.zeros(2, 1, 11, 11, 11)).shape == (2,)


def test_unet_is_periodic_when_the_grid_divides():
    torch.manual_seed(0)
    net = PeriodicUNet3D(base_channels=4, depth=2).eval()
    volume = torch.rand(1, 1, 12, 12, 12)
    with torch.no_grad():  # a shift by 2^depth voxels commutes with the network
        shifted = net(volume.roll(4, dims=2))
        assert torch.allclose(shifted, net(volume).roll(4, dims=2), atol=1e-5)
        assert net(torch.rand(1, 1, 21, 21, 21)).shape == (1, 1, 21, 21, 21)


# ---------------------------------------------------------------------------------------------- MKS


def linear_response(phases: np.ndarray, kernel: np.ndarray, constant: float) -> np.ndarray:
    """constant + periodic convolution of the phase-1 indicator with ``kernel``."""
    spectrum = np.fft.rfftn(kernel)
    return constant + np.fft.irfftn(np.fft.rfftn(phases, axes=(1, 2, 3)) * spectrum, s=kernel.shape, axes=(1, 2, 3))


def test_mks_recovers_an_exactly_linear_response():
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(9, 9, 9)) * 0.05
    phases = (rng.random((6, 9, 9, 9)) < rng.uniform(0.3, 0.7, size=(6, 1, 1, 1))).astype(np.uint8)
    strains = linear_response(phases, kernel, 0.8)
    model = FirstOrderMKS(chunk_size=4).fit(phases, strains)  # chunked sums: several chunks
    assert np.abs(model.stiff_phase_kernel - kernel).max() < 1e-8
    assert model.constant == pytest.approx(0.8, abs=1e-8)
    unseen = (rng.random((3, 9, 9, 9)) < 0.5).astype(np.uint8)
    assert np.abs(model.predict(unseen) - linear_response(unseen, kernel, 0.8)).max() < 1e-8
    # The two-state coefficients (gauge α0 = c·δ) give the same field: ε = α0 ⊛ m0 + α1 ⊛ m1.
    alpha = model.influence_coefficients
    two_state = sum(np.fft.irfftn(np.fft.rfftn(m, axes=(1, 2, 3)) * np.fft.rfftn(a), s=(9, 9, 9), axes=(1, 2, 3))
                    for m, a in ((1 - unseen, alpha[0]), (unseen, alpha[1])))
    assert np.abs(two_state - model.predict(unseen)).max() < 1e-8


def test_mks_does_not_depend_on_the_phase_labelling():
    rng = np.random.default_rng(2)
    phases = (rng.random((8, 7, 7, 7)) < 0.4).astype(np.uint8)
    strains = 1.0 + 0.5 * phases + rng.normal(0, 0.05, size=phases.shape)  # not linear: a least-squares fit
    swapped = 1 - phases
    unseen = (rng.random((2, 7, 7, 7)) < 0.5).astype(np.uint8)
    a = FirstOrderMKS().fit(phases, strains).predict(unseen)
    b = FirstOrderMKS().fit(swapped, strains).predict(1 - unseen)
    assert np.abs(a - b).max() < 1e-10
    with pytest.raises(ValueError, match="fitted on"):
        FirstOrderMKS().fit(phases, strains).predict(np.zeros((1, 5, 5, 5)))


# ---------------------------------------------------------------------------------------------- Lightning


class _Volumes(Dataset):
    def __init__(self, microstructures: np.ndarray, strains: np.ndarray, prefix: str) -> None:
        self.microstructures, self.strains = microstructures, strains
        self.item_ids = [f"{prefix}-{i}" for i in range(len(microstructures))]

    def __len__(self) -> int:
        return len(self.item_ids)

    def __getitem__(self, i: int) -> dict:
        return {"microstructure": torch.from_numpy(self.microstructures[i][None].astype(np.float32)),
                "strain": torch.from_numpy(self.strains[i][None].astype(np.float32)), "item_id": self.item_ids[i]}


class FakeLocalizationData(L.LightningDataModule):
    """Random two-phase volumes (14³: two CPNet blocks per axis; small, for speed) with a linear (MKS-like)
    strain response around 1."""

    def __init__(self, size: int = 14, counts=(2, 1, 2)) -> None:
        super().__init__()
        rng = np.random.default_rng(0)
        kernel = rng.normal(size=(size,) * 3) * 0.02
        self.datasets = {}
        for part, n in zip(("train", "val", "test"), counts):
            phases = (rng.random((n, size, size, size)) < 0.45).astype(np.uint8)
            self.datasets[part] = _Volumes(phases, linear_response(phases, kernel, 0.9).astype(np.float32), part)

    def train_dataloader(self):
        return DataLoader(self.datasets["train"], batch_size=2, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.datasets["val"], batch_size=2)

    def test_dataloader(self):
        return DataLoader(self.datasets["test"], batch_size=2)


@pytest.fixture(scope="module")
def data():
    return FakeLocalizationData()


def _trainer() -> L.Trainer:
    return L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, deterministic=True,
                     num_sanity_val_steps=0)


def _check_test_results(task, data) -> None:
    rows = task.test_results
    assert [r["item_id"] for r in rows] == data.datasets["test"].item_ids
    assert set(rows[0]) == {"item_id", "mase", "r2", "mae_phase0", "mae_phase1"}
    summary = task.test_summary()
    assert {"r2", "r2_pearson", "mase", "mae_phase0", "mae_phase1"} <= set(summary)
    assert summary["mase"] == pytest.approx(np.mean([r["mase"] for r in rows]))
    assert all(np.isfinite(v) for v in summary.values())


@pytest.mark.parametrize("make_task, prepare", [
    (lambda: CPNetTask(), True),
    (lambda: WindowCNNTask(conv_channels=(8, 16), hidden_units=(32, 16), voxels_per_volume=32), True),
    (lambda: UNet3DTask(base_channels=8), False),  # statistics from the on_fit_start safety net
])
def test_one_epoch_fit_and_test(make_task, prepare, data):
    L.seed_everything(0, verbose=False)
    task = make_task()
    if prepare:
        task.prepare_from_training_data(data)  # what the harness does before fitting
    trainer = _trainer()
    trainer.fit(task, datamodule=data)
    strains = data.datasets["train"].strains.astype(np.float64)
    assert bool(task.normalization_fitted)
    assert task.strain_mean.item() == pytest.approx(strains.mean(), rel=1e-5)
    assert task.strain_std.item() == pytest.approx(strains.std(), rel=1e-4)
    assert {"train_loss", "val_loss", "val_mase"} <= set(trainer.callback_metrics)
    assert "strain_mean" in task.state_dict() and "strain_std" in task.state_dict()
    trainer.test(task, datamodule=data, verbose=False)
    _check_test_results(task, data)


def test_mks_task_is_tested_without_training_and_draws_its_figure(data, tmp_path):
    task = MKSTask()
    assert task.requires_training is False
    task.fit_baseline(data)
    _trainer().test(task, datamodule=data, verbose=False)
    _check_test_results(task, data)
    # The response is exactly linear: first-order MKS is exact on it.
    assert task.test_summary()["r2"] == pytest.approx(1.0, abs=1e-6)
    assert task.test_summary()["mase"] < 1e-3
    figure = task.save_test_figure(tmp_path / "figures" / "test_examples.png", data)
    assert figure.is_file() and figure.read_bytes()[:4] == b"\x89PNG"
    assert not list((tmp_path / "figures").glob(".*.tmp"))  # atomic write left no temporary file
