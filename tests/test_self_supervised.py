"""Self-supervised pretraining (PIRL, MAE) of a rater's encoder on the fold's training photos, then fine-tuning."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from matcv.benchmarks.cli import run_and_report
from matcv.datamodules.corrosion import CorrosionPanelsDataModule
from matcv.lightning_modules.self_supervised import (
    PretrainingSettings,
    SelfSupervisedRatingTask,
    make_objective,
    tensors_sha256,
)
from tests.conftest import tiny_rating_config

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.filterwarnings("ignore::UserWarning")]

# Tiny encoders: a ResNet-18 on 48 px photos (3x3 jigsaw tiles of 12 px) and a one-block ViT-Ti on 32 px ones.
PIRL = {"method": "pirl", "epochs": 2, "batch_size": 4, "memory_bank_size": 8, "projection_dim": 16, "lr": 1e-3}
MAE = {"method": "mae", "epochs": 2, "batch_size": 4, "decoder_dim": 32, "decoder_heads": 2, "lr": 1e-3}
VIT = {"backbone": "vit_tiny_patch16_224", "backbone_args": {"img_size": 32, "depth": 1}}
CASES = {"pirl": (PIRL, {"backbone": "resnet18"}, 48), "mae": (MAE, VIT, 32)}


def smooth_photos(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Standardised-looking photos with structure (upsampled coarse noise), so a masked patch is predictable."""
    coarse = torch.randn(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


class Photos(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "item_id": f"photo-{index}", "rating": torch.tensor(5 + index % 5)}


def build(case: str, init_seed: int = 0, **pretraining) -> SelfSupervisedRatingTask:
    settings, network, _ = CASES[case]
    torch.manual_seed(init_seed)
    return SelfSupervisedRatingTask(pretraining={**settings, **pretraining}, **network)


@pytest.mark.parametrize("method", ["pirl", "mae"])
def test_a_pretraining_step_lowers_its_loss_on_a_fixed_batch(method):
    settings, _, size = CASES[method]
    model = build(method)
    torch.manual_seed(1)
    objective = make_objective(model.backbone, PretrainingSettings.from_dict(settings))
    optimizer = torch.optim.AdamW(objective.parameters(), lr=1e-3)
    batch = smooth_photos(6, size)
    losses = []
    for _ in range(10):
        loss = objective(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    # The views are random each step: compare the first and last few steps, not two single draws.
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses


@pytest.mark.parametrize("method", ["pirl", "mae"])
def test_same_seed_gives_the_same_pretrained_weights(method):
    _, _, size = CASES[method]
    photos = Photos(smooth_photos(6, size))
    digests = []
    for seed in (3, 3, 4):
        model = build(method, seed=seed, epochs=1)  # the same initial weights; the pretraining's seed varies
        before = tensors_sha256(model.backbone)
        result = model.run_pretraining(photos)
        assert result.encoder_sha256 != before, "pretraining left the encoder as it was"
        assert len(result.loss_per_epoch) == 1
        digests.append(result.encoder_sha256)
    assert digests[0] == digests[1]
    assert digests[0] != digests[2]


def test_settings_name_unknown_options_and_methods():
    with pytest.raises(ValueError, match="unknown option"):
        PretrainingSettings.from_dict({"method": "pirl", "epoch": 3})
    with pytest.raises(ValueError, match="method must be one of"):
        PretrainingSettings.from_dict({"method": "simclr"})
    with pytest.raises(ValueError, match="timm VisionTransformer"):
        build("pirl", method="mae").run_pretraining(Photos(smooth_photos(4, 48)))


@pytest.fixture(scope="module")
def pirl_benchmark(tmp_path_factory):
    """The harness end to end on tiny generated panels: a PIRL rater, 2 grouped folds."""
    tmp = tmp_path_factory.mktemp("ssl")
    models = {"tiny-pirl": {"class": "matcv.lightning_modules.self_supervised.SelfSupervisedRatingTask",
                            "args": {"backbone": "resnet18", "head": "corn", "pretraining": PIRL}}}
    config = tiny_rating_config(tmp, models, image_size=48, n_panels=10)
    return run_and_report(config, output_dir=tmp / "runs", leaderboard_dir=tmp / "board", progress=False)


def test_the_record_says_in_domain_weights_and_logs_the_pretraining(pirl_benchmark):
    records = pirl_benchmark.records.load()
    assert len(records) == 2
    for record in records:
        assert record["status"] == "ok", record.get("traceback")
        weights = record["details"]["weights"]
        assert weights["pretrained_on"] == "in-domain"
        assert weights["source"] == "self-supervised (pirl) on the fold's training photos"
        assert weights["epochs"] == 2 and len(weights["sha256"]) == 64
        pretraining = record["details"]["pretraining"]
        assert len(pretraining["loss_per_epoch"]) == 2 and pretraining["method"] == "pirl"
        assert pretraining["n_images"] == record["n_items"]["train"]
        assert pretraining["encoder_sha256"] == weights["sha256"]


class FirstStepWeights(L.Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        self.digest = tensors_sha256(pl_module.backbone)


def test_pretraining_sees_only_training_photos_and_fine_tuning_starts_from_its_weights(pirl_benchmark, tmp_path):
    datamodule = CorrosionPanelsDataModule(fold_manifest_path=str(pirl_benchmark.fold_manifest_path), fold=0,
                                           data_root=str(pirl_benchmark.data_root), target="rating", image_size=32,
                                           batch_size=4, seed=0)
    datamodule.setup("fit")
    model = build("mae")
    initial = tensors_sha256(model.backbone)
    probe = FirstStepWeights()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = L.Trainer(max_steps=1, limit_val_batches=1, num_sanity_val_steps=0, accelerator="cpu", devices=1,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=[probe], default_root_dir=tmp_path)
        trainer.fit(model, datamodule=datamodule)
    train = set(datamodule.datasets["train"].item_ids)
    held_out = set(datamodule.datasets["val"].item_ids) | set(datamodule.datasets["test"].item_ids)
    seen = set(model.pretraining_items)
    assert seen == train  # every training photo, each epoch: 2 epochs -> twice the draws
    assert len(model.pretraining_items) == 2 * len(train)
    assert not seen & held_out
    pretrained = model.pretraining_summary["encoder_sha256"]
    assert pretrained != initial
    assert probe.digest == pretrained  # the supervised fit starts from the pretrained encoder
    assert model.weights_facts.as_dict()["pretrained_on"] == "in-domain"
