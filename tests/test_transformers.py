"""Transformer models: MedT's gated axial attention against a hand-computed case, MedT's shapes, and one training step
of each transformer model family (the YAML models' own steps: tests/test_every_model.py)."""

from __future__ import annotations

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch

from matcv.lightning_modules.factory_tasks import FactorySegmentationTask
from matcv.lightning_modules.medt import GatedAxialAttention, GatedAxialBlock, MedT
from matcv.lightning_modules.rating import RatingTask

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Sequence length 3, one head of dimension 2: fixed weights of the q, k, v projection (rows: q1 q2 k1 k2 v1 v2)
# and of the relative position tables (rows: offsets -2..2).
W_QKV = np.array([[1.0, 0.5], [-0.5, 1.0], [0.3, -0.2], [0.8, 0.4], [1.0, 0.0], [0.2, -1.0]])
R_Q = np.array([[0.1, 0.2], [-0.3, 0.4], [0.5, -0.1], [0.0, 0.3], [-0.2, -0.2]])
R_K = np.array([[0.3, -0.1], [0.2, 0.2], [-0.4, 0.1], [0.1, 0.5], [0.6, 0.0]])
R_V = np.array([[1.0, -1.0], [0.5, 0.5], [0.0, 1.0], [-0.5, 0.2], [0.3, 0.3]])
X = np.array([[0.5, -1.0, 2.0], [1.5, 0.3, -0.7]])  # (channels, positions)


def fixed_attention(axis: str, gates: tuple[float, float, float, float]) -> GatedAxialAttention:
    layer = GatedAxialAttention(channels=2, heads=1, span=3, axis=axis)
    with torch.no_grad():
        layer.to_qkv.weight.copy_(torch.tensor(W_QKV, dtype=torch.float32)[:, :, None, None])
        for table, values in ((layer.relative_q, R_Q), (layer.relative_k, R_K), (layer.relative_v, R_V)):
            table.copy_(torch.tensor(values, dtype=torch.float32))
        for gate, value in zip((layer.gate_q, layer.gate_k, layer.gate_v1, layer.gate_v2), gates):
            gate.fill_(value)
    return layer


def expected_output(gates: tuple[float, float, float, float]) -> np.ndarray:
    """Valanarasu et al. 2021, eq. 3, written out: y_i = sum_j softmax_j(q_i·k_j + G_Q q_i·r^q_(j-i)
    + G_K k_j·r^k_(j-i)) (G_V1 v_j + G_V2 r^v_(j-i))."""
    g_q, g_k, g_v1, g_v2 = gates
    q, k, v = (W_QKV[2 * n:2 * n + 2] @ X for n in range(3))  # (2, 3) each: column j is position j
    out = np.zeros((2, 3))
    for i in range(3):
        logits = np.array([q[:, i] @ k[:, j] + g_q * q[:, i] @ R_Q[j - i + 2] + g_k * k[:, j] @ R_K[j - i + 2]
                           for j in range(3)])
        weights = np.exp(logits - logits.max())
        weights /= weights.sum()
        out[:, i] = sum(weights[j] * (g_v1 * v[:, j] + g_v2 * R_V[j - i + 2]) for j in range(3))
    return out


@pytest.mark.parametrize("gates", [(0.1, 0.1, 1.0, 0.1), (0.7, -0.4, 0.9, 1.3)])
def test_gated_axial_attention_matches_the_paper_formula(gates):
    expected = expected_output(gates)
    width = fixed_attention("width", gates)(torch.tensor(X, dtype=torch.float32)[None, :, None, :])  # (1, 2, 1, 3)
    np.testing.assert_allclose(width[0, :, 0, :].detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    # The same sequence down a column: the height axis gives the same numbers.
    height = fixed_attention("height", gates)(torch.tensor(X, dtype=torch.float32)[None, :, :, None])
    np.testing.assert_allclose(height[0, :, :, 0].detach().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_closed_positional_gates_leave_plain_attention():
    """G_Q = G_K = G_V2 = 0, G_V1 = 1: softmax(q·k) v, no positional term at all (unscaled, as the paper writes)."""
    layer = fixed_attention("width", (0.0, 0.0, 1.0, 0.0))
    x = torch.tensor(X, dtype=torch.float32)[None, :, None, :]
    q, k, v = (torch.tensor(W_QKV[2 * n:2 * n + 2] @ X, dtype=torch.float32).T for n in range(3))  # (3, 2)
    plain = torch.softmax(q @ k.T, dim=-1) @ v
    torch.testing.assert_close(layer(x)[0, :, 0, :].T, plain)
    # Opened, the positional terms change the output.
    assert not torch.allclose(fixed_attention("width", (0.5, 0.5, 1.0, 0.5))(x)[0, :, 0, :].T, plain, atol=1e-3)


def test_gates_are_learnable_and_start_as_released():
    layer = GatedAxialAttention(channels=8, heads=2, span=5, axis="height")
    gates = {name: getattr(layer, name).item() for name in ("gate_q", "gate_k", "gate_v1", "gate_v2")}
    assert gates == pytest.approx({"gate_q": 0.1, "gate_k": 0.1, "gate_v1": 1.0, "gate_v2": 0.1})
    x = torch.randn(2, 8, 5, 4)
    layer(x).square().sum().backward()
    assert all(getattr(layer, name).grad is not None and float(getattr(layer, name).grad) != 0 for name in gates)


def test_shapes_and_limits():
    torch.manual_seed(0)
    layer = GatedAxialAttention(channels=8, heads=4, span=6, axis="height")
    assert layer(torch.randn(2, 8, 6, 3)).shape == (2, 8, 6, 3)
    with pytest.raises(ValueError, match="longer than this attention's span 6"):
        layer(torch.randn(1, 8, 7, 3))
    with pytest.raises(ValueError, match="cannot be split into 3 heads"):
        GatedAxialAttention(channels=8, heads=3, span=4, axis="width")
    block = GatedAxialBlock(8, 8, heads=2, span=8, stride=2)
    assert block(torch.randn(2, 8, 8, 8)).shape == (2, 16, 4, 4)
    net = MedT(in_channels=3, num_classes=3, img_size=64, width=4, heads=2, patches_per_side=2).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, 64, 64)).shape == (2, 3, 64, 64)
        assert net(torch.randn(1, 3, 40, 50)).shape == (1, 3, 40, 50)  # padded to whole patches
        assert net(torch.randn(1, 3, 96, 80)).shape == (1, 3, 96, 80)  # larger than built: tiles of 64 px
    with pytest.raises(ValueError, match="multiple of patches_per_side"):
        MedT(img_size=96, patches_per_side=2)


def test_checkpointed_attention_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = GatedAxialBlock(8, 4, heads=2, span=8)
    recomputed = GatedAxialBlock(8, 4, heads=2, span=8, checkpoint=True)
    recomputed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 8, 8, 8)
    for block in (plain, recomputed):
        block(x).square().sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), recomputed.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def _segmentation_step(task: FactorySegmentationTask, size: int = 64) -> float:
    torch.manual_seed(0)
    images = torch.randn(2, 3, size, size)
    mask = (torch.rand(2, 1, size, size) > 0.7).float()
    optimizer = task.configure_optimizers()
    before = [p.detach().clone() for p in task.parameters()]
    loss = task.loss(task(images), mask)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, task.parameters())), "the step changed no weight"
    return float(loss)


@pytest.mark.parametrize("overlap", ["dice", "ftl"])
def test_segformer_and_medt_train_with_the_unet_losses(overlap):
    segformer = FactorySegmentationTask("segmentation_models_pytorch:create_model", overlap=overlap, ftl_alpha=0.9,
                                        factory_args={"arch": "segformer", "encoder_name": "mit_b0",
                                                      "encoder_weights": None, "classes": 1})
    assert isinstance(segformer.net, smp.Segformer)
    medt = FactorySegmentationTask("matcv.lightning_modules.medt:MedT", overlap=overlap, ftl_alpha=0.9,
                                   factory_args={"img_size": 64, "width": 4, "heads": 2, "patches_per_side": 2})
    overlap_loss = smp.losses.TverskyLoss if overlap == "ftl" else smp.losses.DiceLoss
    for task in (segformer, medt):
        assert isinstance(task.region_loss.overlap, overlap_loss)
        _segmentation_step(task)


@pytest.mark.parametrize(("backbone", "backbone_args"), [
    ("vit_tiny_patch16_224", {"img_size": 64, "depth": 2}),
    ("swin_tiny_patch4_window7_224", {"img_size": 64, "window_size": 4, "embed_dim": 24, "depths": [1, 1],
                                      "num_heads": [1, 2]}),
])
@pytest.mark.parametrize("head", ["ce", "corn"])
def test_transformer_raters_take_a_step(backbone, backbone_args, head):
    torch.manual_seed(0)
    task = RatingTask(backbone=backbone, head=head, lr=3e-4, backbone_args=backbone_args)
    assert task.backbone.patch_embed.img_size == (64, 64)  # built for the profile's size, not timm's 224
    images, ratings = torch.randn(4, 3, 64, 64), torch.tensor([5, 6, 8, 9])
    optimizer = task.configure_optimizers()
    loss = task._loss(task(images), task.rating_index(ratings))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
