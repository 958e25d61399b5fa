"""Segment-and-rate (one encoder, a mask head and a rating head, one joint loss) and the rater whose backbone
starts from a UNet encoder trained on the fold's training masks, on tiny generated panels."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from matcv.benchmarks.harness.runner import run_benchmark
from matcv.lightning_modules import segmentation_pretrained_rater as pretrained_rater
from matcv.lightning_modules.segment_and_rate import SegmentAndRate
from tests.conftest import tiny_rating_config

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.filterwarnings("ignore::UserWarning")]

SMALL_UNET = {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}
JOINT = {"class": "matcv.lightning_modules.segment_and_rate.SegmentAndRate",
         "args": {"head": "ce", "lr": 3.0e-3, "mask_weight": 1.0, "arch_kwargs": SMALL_UNET}}
SEG_PRETRAINED = {"class": "matcv.lightning_modules.segmentation_pretrained_rater.SegmentationPretrainedRater",
                  "args": {"backbone": "resnet18", "head": "ce", "seg_max_epochs": 1,
                           "seg_arch_kwargs": {"decoder_channels": [16, 8, 8, 4, 4]}}}


def _batch(n: int = 2, size: int = 64) -> dict:
    generator = torch.Generator().manual_seed(0)
    mask = torch.zeros(n, 1, size, size)
    mask[:, :, size // 2 - 4:size // 2 + 4, :] = 1.0  # a horizontal band, like a scribe's creep
    return {"image": torch.randn(n, 3, size, size, generator=generator), "rating": torch.tensor([5, 8][:n]),
            "mask": mask, "item_id": [f"photo{i}.png" for i in range(n)]}


@pytest.mark.parametrize("head", ["ce", "corn"])
def test_joint_loss_has_both_terms_and_both_heads_get_gradients(head):
    torch.manual_seed(0)
    model = SegmentAndRate(head=head, arch_kwargs=SMALL_UNET, mask_weight=2.5)
    batch = _batch()
    total, rating_loss, mask_loss, logits, mask_logits = model.joint_loss(batch)
    assert rating_loss > 0 and mask_loss > 0
    assert torch.allclose(total, rating_loss + 2.5 * mask_loss)
    assert logits.shape == (2, 5 if head == "ce" else 4) and mask_logits.shape == (2, 1, 64, 64)
    assert torch.allclose(model(batch["image"]), logits)  # forward: the rating logits of the same encoder pass
    total.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    # (encoder_depth 3: layer2 is the deepest stage used; smp keeps layer3/4 unused)
    for part in ("head.", "net.decoder.", "net.segmentation_head.", "net.encoder.conv1.", "net.encoder.layer2."):
        got = [g for name, g in grads.items() if name.startswith(part)]
        assert got and all(g is not None for g in got), f"{part} got no gradient"
        assert sum(float(g.abs().sum()) for g in got) > 0, f"{part} got zero gradients"

    # Without the mask term the decoder learns nothing: the weight really weighs the mask loss.
    model.zero_grad(set_to_none=True)
    model.hparams.mask_weight = 0.0
    model.joint_loss(batch)[0].backward()
    assert all(p.grad is None or not p.grad.any() for p in model.net.decoder.parameters())


def test_a_batch_without_masks_is_refused_with_the_reason():
    model = SegmentAndRate(arch_kwargs=SMALL_UNET)
    batch = _batch()
    del batch["mask"]
    with pytest.raises(RuntimeError, match="prepare_from_training_data"):
        model.training_step(batch, 0)


def test_a_training_step_updates_encoder_and_both_heads():
    torch.manual_seed(0)
    model = SegmentAndRate(arch_kwargs=SMALL_UNET, lr=1e-2)
    batch = _batch()
    photos = [{k: v[i] for k, v in batch.items()} for i in range(2)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(photos, batch_size=2))
    assert trainer.global_step == 1
    assert {"train_loss", "train_rating_loss", "train_mask_loss"} <= set(trainer.callback_metrics)
    after = model.state_dict()
    for key in ("head.weight", "net.segmentation_head.0.weight", "net.encoder.conv1.weight"):
        assert not torch.equal(before[key], after[key]), f"{key} did not move"


def test_one_fold_records_ratings_dice_and_in_domain_weights(tmp_path):
    config = tiny_rating_config(tmp_path, {"segment-and-rate": JOINT, "seg-pretrained-resnet18": SEG_PRETRAINED})
    bench = run_benchmark(config, folds=[0], output_dir=tmp_path / "runs", accelerator="cpu", progress=False)
    records = {r["model"]: r for r in bench.records.load()}
    for name in ("segment-and-rate",):
        record = records[name]
        assert record["status"] == "ok", record.get("traceback")
        assert set(record["metrics"]) >= {"accuracy", "qwk", "mae"}
        assert record["n_items"]["test"] == len(record["per_image"]) > 0
        assert record["details"]["weights"] == {"source": "none", "file": None, "sha256": None,
                                                "pretrained_on": "none"}
        for row in record["per_image"]:
            assert row["rating"] in range(5, 10) and row["predicted"] in range(5, 10)
            assert row["abs_error"] == abs(row["predicted"] - row["rating"])
            assert 0.0 <= row["dice"] <= 1.0 and 0.0 <= row["iou"] <= row["dice"] + 1e-9
    record = records["seg-pretrained-resnet18"]
    assert record["status"] == "ok", record.get("traceback")
    assert record["details"]["weights"] == {"source": pretrained_rater.SOURCE, "file": None, "sha256": None,
                                            "pretrained_on": "in-domain"}
    pretraining = record["details"]["segmentation_pretraining"]
    assert pretraining["epochs"] == 1 and pretraining["train_items"] == record["n_items"]["train"]
    assert all(row["predicted"] in range(5, 10) for row in record["per_image"])


def test_seg_pretrained_backbone_starts_from_the_segmenter_trained_on_training_items_only(tmp_path, monkeypatch):
    from matcv.benchmarks.harness.prepare import prepare_benchmark
    from matcv.datamodules.core.config import TaskConfig
    from matcv.datamodules.corrosion import CorrosionPanelsDataModule

    built, trained_on = [], []

    class WatchedSegmenter(pretrained_rater.SmpSegmentationTask):
        """The real segmentation task, remembering itself and the photos it trains on; validating is a failure."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            built.append(self)

        def training_step(self, batch, batch_idx):
            trained_on.extend(batch["item_id"])
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch, batch_idx):
            raise AssertionError(f"the segmentation stage looked at validation photos {batch['item_id']}")

    monkeypatch.setattr(pretrained_rater, "SmpSegmentationTask", WatchedSegmenter)
    config = TaskConfig.load(tiny_rating_config(tmp_path, {"seg-pretrained-resnet18": SEG_PRETRAINED}))
    bench = prepare_benchmark(config, "quick", None, tmp_path / "runs", progress=False)
    datamodule = CorrosionPanelsDataModule(fold_manifest_path=str(bench.fold_manifest_path), fold=0,
                                           data_root=str(bench.data_root), seed=0, target="rating", image_size=64,
                                           batch_size=4, augmentation="combination")
    L.seed_everything(0, verbose=False)
    model = pretrained_rater.SegmentationPretrainedRater(**SEG_PRETRAINED["args"])
    datamodule.setup("fit")
    from_scratch = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.prepare_from_training_data(datamodule)

    assert len(built) == 1
    encoder = built[0].net.encoder.state_dict()
    backbone = model.backbone.state_dict()
    assert set(backbone) == set(encoder)
    for key, tensor in backbone.items():
        assert torch.equal(tensor.cpu(), encoder[key].cpu()), f"{key} is not the segmentation encoder's"
    moved = [k for k in backbone if k.endswith("weight") and not torch.equal(backbone[k], from_scratch[k])]
    assert "conv1.weight" in moved  # the rater's own random start was replaced
    assert model.weights_facts.pretrained_on == "in-domain"

    train = set(datamodule.datasets["train"].item_ids)
    held_out = set(datamodule.datasets["val"].item_ids) | set(datamodule.datasets["test"].item_ids)
    assert set(trained_on) == train and not set(trained_on) & held_out
    assert model.pretraining["items_seen"] == sorted(train) and model.pretraining["items_evaluated"] == []

    # The same fold read as rating+mask replaces the run's partitions: same photos, now with masks and ratings.
    from matcv.lightning_modules.segment_and_rate import give_masks

    before = {p: list(datamodule.datasets[p].item_ids) for p in ("train", "val", "test")}
    give_masks(datamodule)
    assert {p: list(datamodule.datasets[p].item_ids) for p in before} == before
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["mask"].shape == (len(batch["image"]), 1, 64, 64) and set(batch["mask"].unique().tolist()) <= {0, 1}
    assert all(int(r) in range(5, 10) for r in batch["rating"])
