"""Rare classes in multi-class segmentation: per-class leaderboard columns, never-predicted classes, the loss
options (ignore index, inverse-frequency weights from the training part only) and the rare-class sampler."""

from __future__ import annotations

import json
import math
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from matcv.datamodules.dataset_description import DatasetDescriptionError, IGNORE_INDEX, parse_description
from matcv.datamodules.rare_class_sampling import RareClassCrops, holds_rare_class, rare_class_sampler
from matcv.leaderboard.build import leaderboard_table, render_markdown, write_leaderboard
from matcv.leaderboard.html import _builtin_section
from matcv.lightning_modules.segmentation import ConstantMaskBaseline, SmpSegmentationTask
from matcv.lightning_modules.segmentation_losses import (
    build_loss,
    class_pixel_counts,
    inverse_frequency_weights,
    loss_spec,
)
from tests.test_user_dataset import CLASSES, datamodule, description_text, make_folder

NAMES = ["background", "matrix", "crack"]
TINY = {"arch": "unet", "encoder_name": "resnet18", "arch_kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}}


# --- leaderboard -------------------------------------------------------------------------------------------

def _item(item_id: str, iou: list[float], pred_px: list[int]) -> dict:
    row = {"item_id": item_id, "iou": float(np.mean(iou)), "dice": float(np.mean(iou))}
    for name, value, pixels in zip(NAMES, iou, pred_px):
        row.update({f"iou_{name}": value, f"dice_{name}": 2 * value / (1 + value), f"pred_px_{name}": pixels,
                    f"true_px_{name}": 10})
    return row


def _records(model: str, crack_iou: float, predicts_crack: bool) -> list[dict]:
    records = []
    for fold in range(3):
        items = [_item(f"f{fold}_{k}", [0.9, 0.8, crack_iou + 0.01 * fold], [50, 40, 5 if predicts_crack else 0])
                 for k in range(2)]
        records.append({"key": f"{model}-{fold}", "task": "seg", "dataset": "sem", "profile": "quick",
                        "status": "ok", "model": model, "fold": fold, "fold_manifest_sha256": "m" * 64,
                        "data_sha256": "d" * 64, "fold_manifest": "runs/fold_manifest.json",
                        "metrics": {"iou": float(np.mean([i["iou"] for i in items])),
                                    "dice": float(np.mean([i["dice"] for i in items]))},
                        "per_image": items})
    return records


def test_per_class_columns_and_never_predicted_in_csv_markdown_and_html(tmp_path):
    records = _records("unet", 0.5, True) + _records("only-background", 0.0, False)
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    markdown = write_leaderboard(path, tmp_path / "out", ["iou", "dice"])[0]
    table = pd.read_csv(markdown.with_suffix(".csv"), keep_default_na=False)
    for name in NAMES:
        for column in (f"iou_{name}_mean", f"iou_{name}_std", f"dice_{name}_mean", f"dice_{name}_std"):
            assert column in table.columns
    unet = table.set_index("model").loc["unet"]
    assert float(unet["iou_crack_mean"]) == pytest.approx(0.51)  # fold means 0.50, 0.51, 0.52
    assert float(unet["iou_crack_std"]) == pytest.approx(0.01)
    assert unet["never_predicted"] == ""
    assert table.set_index("model").loc["only-background", "never_predicted"] == "crack"
    assert list(table["model"]) == ["unet", "only-background"]  # still ranked by the task's first metric
    text = markdown.read_text()
    assert "## Per-class scores" in text and "never predicted: crack" in text and "scores 1 on that image" in text
    page = _builtin_section(markdown)
    assert "Per-class scores" in page and "<td>crack</td>" in page
    assert "iou_crack (mean ± std)" not in page  # per-class scores are not shown as task metrics


def test_binary_records_get_no_per_class_columns():
    records = _records("unet", 0.5, True)
    for record in records:
        record["per_image"] = [{"item_id": i["item_id"], "dice": i["dice"], "iou": i["iou"]} for i in record["per_image"]]
    board = leaderboard_table(records, ["dice", "iou"])
    assert board.classes == [] and "never_predicted" not in board.table.columns
    assert not any(c.startswith(("iou_crack", "dice_crack", "iou_background")) for c in board.table.columns)
    assert "Per-class" not in render_markdown("t", board, ["dice", "iou"], records)


def test_a_model_predicting_only_background_is_reported(tmp_path):
    baseline = ConstantMaskBaseline(value=0, num_classes=3, class_names=NAMES)
    baseline.on_test_epoch_start()
    mask = torch.zeros(2, 16, 16, dtype=torch.int64)
    mask[:, 4:8, 4:8] = 1
    mask[0, 10, 10:14] = 2
    mask[1, 0, 0] = IGNORE_INDEX
    with pytest.warns(UserWarning):  # self.log outside a Trainer
        baseline.test_step({"image": torch.zeros(2, 3, 16, 16), "mask": mask, "item_id": ["a", "b"]}, 0)
    first, second = baseline.test_results
    assert first["pred_px_background"] == 256 and first["pred_px_crack"] == 0 and first["true_px_crack"] == 4
    assert second["pred_px_background"] == 255  # the ignored pixel is not counted
    assert first["iou_crack"] == 0.0 and second["iou_crack"] == 1.0  # absent from truth and prediction: 1
    record = {"key": "k", "task": "seg", "dataset": "sem", "profile": "quick", "status": "ok", "model": "zeros",
              "fold": 0, "fold_manifest_sha256": "m", "data_sha256": "d", "metrics": {"iou": 0.5},
              "per_image": baseline.test_results}
    board = leaderboard_table([record], ["iou"])
    assert board.table.loc[0, "never_predicted"] == "matrix;crack"


# --- losses ------------------------------------------------------------------------------------------------

def _batch(num_classes: int):
    generator = torch.Generator().manual_seed(0)
    if num_classes > 1:
        logits = torch.randn(2, num_classes, 8, 8, generator=generator, requires_grad=True)
        target = torch.randint(0, num_classes, (2, 8, 8), generator=generator)
    else:
        logits = torch.randn(2, 1, 8, 8, generator=generator, requires_grad=True)
        target = (torch.rand(2, 1, 8, 8, generator=generator) > 0.7).float()
    target[..., :2, :] = IGNORE_INDEX
    return logits, target


@pytest.mark.parametrize("num_classes", [3, 1])
@pytest.mark.parametrize("loss", [{"name": "ce"}, {"name": "ce", "class_weights": [1.0, 4.0, 9.0]},
                                  {"name": "dice"}, {"name": "dice", "class_weights": [1.0, 1.0, 5.0]},
                                  {"name": "focal", "alpha": 0.25}, {"name": "tversky", "alpha": 0.3, "beta": 0.7},
                                  {"name": "lovasz"}])
def test_every_loss_is_finite_and_ignores_ignored_pixels(loss, num_classes):
    if num_classes == 1 and loss.get("class_weights") is not None:
        loss = {**loss, "class_weights": loss["class_weights"][:2]}
        if loss["name"] != "ce":
            with pytest.raises(ValueError, match="'ce' loss only"):
                build_loss(loss_spec(loss, n_classes=2), num_classes)
            return
    module = build_loss(loss_spec(loss, n_classes=max(num_classes, 2)), num_classes)
    logits, target = _batch(num_classes)
    value = module(logits, target)
    assert torch.isfinite(value) and value.ndim == 0
    value.backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[..., :2, :].abs().max() == 0  # ignored pixels: no gradient
    changed = logits.detach().clone()
    changed[..., :2, :] = 50.0  # whatever is predicted on ignored pixels does not change the loss
    assert module(changed, target).item() == pytest.approx(value.item(), rel=1e-5, abs=1e-6)


def test_default_loss_is_unchanged_and_bad_options_are_named():
    torch.manual_seed(0)
    task = SmpSegmentationTask(**TINY, num_classes=3, class_names=NAMES)
    logits, target = _batch(3)
    target = target.clamp(max=2)
    assert task.loss_spec is None
    assert task.loss(logits, target).item() == pytest.approx(task.region_loss(logits, target).item())
    with pytest.raises(ValueError, match="loss.name"):
        SmpSegmentationTask(**TINY, num_classes=3, class_names=NAMES, loss="hinge")
    with pytest.raises(ValueError, match="3 weights for 2 classes|lists 3 weights"):
        SmpSegmentationTask(**TINY, loss="ce", class_weights=[1, 2, 3])
    with pytest.raises(DatasetDescriptionError, match="loss.name"):
        parse_description({"classes": [{"name": n, "value": i} for i, n in enumerate(NAMES)],
                           "loss": {"name": "hinge"}}, "dataset.yaml")


def test_inverse_frequency_weights_come_from_the_training_masks_only():
    train = [np.array([[0, 0, 0, 1], [0, 0, 1, 2]], np.uint8), np.array([[0, 0, 0, 0], [1, 1, IGNORE_INDEX, 0]],
                                                                           np.uint8)]
    crack_everywhere = [np.full((4, 4), 2, np.uint8)]  # validation and test: must not move the weights
    dm = SimpleNamespace(num_classes=3, class_names=NAMES, has_ignored_pixels=True, description=None,
                         datasets={"train": SimpleNamespace(masks=train), "val": SimpleNamespace(masks=crack_everywhere),
                                   "test": SimpleNamespace(masks=crack_everywhere)})
    counts = class_pixel_counts(train, 3)
    assert counts.tolist() == [10, 4, 1]  # the ignored pixel is not counted
    expected = [15 / (3 * 10), 15 / (3 * 4), 15 / (3 * 1)]
    assert inverse_frequency_weights(counts) == pytest.approx(expected)
    task = SmpSegmentationTask(**TINY, num_classes=3, class_names=NAMES, loss="focal", class_weights="inverse_frequency")
    with pytest.raises(RuntimeError, match="prepare_from_training_data"):
        task.loss(*_batch(3))
    task.prepare_from_training_data(dm)
    assert task.resolved_class_weights == pytest.approx(expected)
    assert task.test_details()["loss"] == {"name": "focal", "class_weights": pytest.approx(expected)}
    assert torch.isfinite(task.loss(*_batch(3)))
    assert inverse_frequency_weights([5, 0, 5]) == [1.0, 1.0, 1.0]  # an absent class keeps weight 1


def test_dataset_yaml_loss_is_used_when_the_model_names_none():
    description = parse_description({"classes": [{"name": n, "value": i} for i, n in enumerate(NAMES)],
                                     "loss": {"name": "ce", "class_weights": [1, 2, 3]}}, "dataset.yaml")
    dm = SimpleNamespace(num_classes=3, class_names=NAMES, has_ignored_pixels=False, description=description,
                         datasets={})
    task = SmpSegmentationTask(**TINY, num_classes=3, class_names=NAMES)
    task.prepare_from_training_data(dm)
    assert task.loss_spec.name == "ce" and task.test_details()["loss"]["class_weights"] == [1.0, 2.0, 3.0]
    logits, target = _batch(3)
    weighted = torch.nn.functional.cross_entropy(logits, target, weight=torch.tensor([1.0, 2.0, 3.0]),
                                                 ignore_index=IGNORE_INDEX)
    assert task.loss(logits, target).item() == pytest.approx(weighted.item())
    own = SmpSegmentationTask(**TINY, num_classes=3, class_names=NAMES, loss="dice")
    own.prepare_from_training_data(dm)
    assert own.loss_spec.name == "dice"  # the model's own argument wins


# --- sampler -----------------------------------------------------------------------------------------------

def _masks() -> list[np.ndarray]:
    masks = [np.zeros((40, 40), np.uint8) for _ in range(10)]
    for mask in masks[:2]:
        mask[30:32, 5:7] = 2  # a crack in 2 of 10 images
    return masks


def test_sampler_draws_rare_class_images_more_often_and_repeats_for_a_seed():
    masks = _masks()
    rare = holds_rare_class(masks, [2])
    assert rare.tolist() == [True] * 2 + [False] * 8
    sampler = rare_class_sampler(masks, [2], 4.0, seed=3, samples_per_image=1)
    draws = [i for _ in range(200) for i in sampler]  # 200 epochs of one sampler
    share = np.mean([rare[i] for i in draws])
    assert share == pytest.approx(8 / 16, abs=0.05)  # 2·4 of 2·4 + 8 weight; unweighted it would be 0.2
    crops = list(rare_class_sampler(masks, [2], 4.0, seed=3, samples_per_image=3))
    assert len(crops) == 30 and max(crops) < 30
    assert crops == list(rare_class_sampler(masks, [2], 4.0, seed=3, samples_per_image=3))
    assert crops != list(rare_class_sampler(masks, [2], 4.0, seed=4, samples_per_image=3))


def test_biased_crops_hold_the_rare_class():
    masks = _masks()
    always = RareClassCrops(masks, [2], 16, probability=1.0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        top, left = always.origin(0, rng)
        assert (masks[0][top:top + 16, left:left + 16] == 2).any()
        assert 0 <= top <= 24 and 0 <= left <= 24
    assert always.origin(5, rng) is None  # no rare pixel there: a uniform crop
    assert RareClassCrops(masks, [2], 16, probability=0.0).origin(0, rng) is None


def test_datamodule_oversamples_from_dataset_yaml(tmp_path):
    make_folder(tmp_path, description=description_text("index") + "oversample: {class: carbide, factor: 6, "
                                                                   "crop_probability: 1.0}\n")
    dm = datamodule(tmp_path, tmp_path, seed=5)
    train = dm.datasets["train"]
    assert dm.description.oversample.classes == ("carbide",) and train.crop_bias is not None
    carbide = CLASSES.index("carbide")
    with_carbide = holds_rare_class(train.masks, [carbide])
    assert with_carbide.any()
    order = list(dm.train_dataloader().sampler)
    assert order == list(dm.train_dataloader().sampler)  # seeded by the DataModule's seed
    counts = Counter(bool(with_carbide[i // train.crops_per_image]) for i in order)
    assert counts[True] / sum(counts.values()) > with_carbide.mean()
    source = next(i for i, flag in enumerate(with_carbide) if flag)
    crop = train[source * train.crops_per_image]
    assert (crop["mask"] == carbide).any()  # crop_probability 1: over a carbide pixel
    assert math.isclose(dm.description.oversample.factor, 6.0)


def test_oversampling_is_off_by_default(tmp_path):
    make_folder(tmp_path)
    dm = datamodule(tmp_path, tmp_path)
    assert dm.description.oversample is None and dm.datasets["train"].crop_bias is None
    assert isinstance(dm.train_dataloader().sampler, torch.utils.data.RandomSampler)
