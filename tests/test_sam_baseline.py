"""SamBaseline: local weights-only checkpoints, box prompts from scribe lines, zero-shot and decoder fine-tuning.

A tiny randomly initialised SAM (``model_type: tiny-test``, 64 px) saved as a weights-only file stands in for
Meta's checkpoints, which are not distributed with matcv; its code path is the one a real checkpoint takes.
"""

from __future__ import annotations

import hashlib
import warnings

import lightning as L
import numpy as np
import pytest
import torch

from matcv.datamodules.core.config import TaskConfig, import_object, run_seed
from matcv.lightning_modules.sam_baseline import (
    TINY_TEST,
    SamBaseline,
    build_tiny_sam,
    manifest_scribe_lines,
    scribe_boxes,
)

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning")]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    torch.save(build_tiny_sam().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    """Fold 0 of the segmentation task's smoke-test profile (8 panels at 64 px, with scribe lines)."""
    from matcv.benchmarks.harness.prepare import prepare_benchmark

    tmp = tmp_path_factory.mktemp("sam-data")
    patch = pytest.MonkeyPatch()
    patch.setenv("MATCV_CACHE_DIR", str(tmp / "cache"))
    config = TaskConfig.load("segmentation")
    bench = prepare_benchmark(config, "tiny", None, tmp / "runs", progress=False)
    resolved = bench.config.resolve("tiny", "predict-nothing")
    module = import_object(resolved["datamodule"]["class"])(
        fold_manifest_path=str(bench.fold_manifest_path), fold=0, data_root=str(bench.data_root),
        seed=run_seed(resolved["seed"], 0), **resolved["datamodule"]["args"])
    module.setup("fit")
    yield module
    patch.undo()


def test_missing_checkpoint_names_the_file_and_the_official_url(tmp_path, monkeypatch):
    monkeypatch.delenv("MATCV_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("MATCV_SAM_CHECKPOINT", raising=False)
    official = r"dl\.fbaipublicfiles\.com/segment_anything/sam_vit_b"
    with pytest.raises(FileNotFoundError, match=r"sam_vit_b_missing\.pth.*" + official):
        SamBaseline(checkpoint=str(tmp_path / "sam_vit_b_missing.pth"), model_type="vit_b")
    with pytest.raises(FileNotFoundError, match="needs checkpoint"):
        SamBaseline(checkpoint=None, model_type="vit_h")


def test_relative_checkpoint_is_found_in_weights_dir_and_its_sha256_recorded(checkpoint, monkeypatch):
    monkeypatch.setenv("MATCV_WEIGHTS_DIR", str(checkpoint.parent))
    monkeypatch.setenv("MATCV_SAM_CHECKPOINT", checkpoint.name)  # the default when the YAML gives none
    model = SamBaseline(model_type=TINY_TEST)
    weights = model.test_details()["weights"]
    assert weights == {"source": "local-file", "file": checkpoint.name,
                       "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(), "pretrained_on": "other"}
    loaded = model.sam.state_dict()
    saved = torch.load(checkpoint, weights_only=True)
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)


def test_checkpoint_with_code_or_other_architecture_is_refused(tmp_path, checkpoint):
    pickled = tmp_path / "code.pth"
    torch.save({"model": np.dtype, "x": torch.zeros(1)}, pickled)  # a global: not loadable weights-only
    with pytest.raises(Exception, match="(?i)weights.only|unpickl|global"):
        SamBaseline(checkpoint=str(pickled), model_type=TINY_TEST)
    partial = tmp_path / "partial.pth"
    state = torch.load(checkpoint, weights_only=True)
    torch.save({k: v for k, v in state.items() if not k.startswith("mask_decoder.")}, partial)
    with pytest.raises(ValueError, match=r"partial\.pth does not fit SAM tiny-test: .*missing"):
        SamBaseline(checkpoint=str(partial), model_type=TINY_TEST)


def test_bad_options_are_refused(checkpoint):
    with pytest.raises(ValueError, match="mode must be one of"):
        SamBaseline(checkpoint=str(checkpoint), model_type=TINY_TEST, mode="full")
    with pytest.raises(ValueError, match="model_type must be one of"):
        SamBaseline(checkpoint=str(checkpoint), model_type="vit_s")
    # Random weights only for the smoke-test architecture (the YAMLs' tiny profile), never for a real SAM.
    assert SamBaseline(checkpoint="random", model_type=TINY_TEST).test_details()["weights"]["source"] == "none"
    with pytest.raises(ValueError, match="only for model_type 'tiny-test'"):
        SamBaseline(checkpoint="random", model_type="vit_b")


def test_box_around_a_scribe_line_in_resized_coordinates():
    # A vertical scribe at x = 40 from y = 10 to 110 on a 128 x 256 (h x w) photo, shown at 64 x 64.
    boxes = scribe_boxes([(40.0, 10.0, 40.0, 110.0)], native_hw=(128, 256), image_hw=(64, 64), margin_px=4.0)
    x = (40.5 * 0.25) - 0.5
    np.testing.assert_allclose(boxes, [[x - 4, 4.75 - 4, x + 4, 54.75 + 4]])
    # widened past the border: clipped to the image; a slanted line's box spans both ends
    boxes = scribe_boxes([(120.0, 2.0, 10.0, 126.0), (0.0, 0.0, 0.0, 0.0)], (128, 128), (64, 64), margin_px=2.0)
    np.testing.assert_allclose(boxes, [[4.75 - 2, 0.0, 59.75 + 2, 63.0], [0.0, 0.0, -0.25 + 2, -0.25 + 2]])
    # no scribe line: the whole image
    np.testing.assert_allclose(scribe_boxes([], (128, 128), (32, 48), 5.0), [[0.0, 0.0, 47.0, 31.0]])


def test_scribe_lines_are_read_from_the_manifest(tmp_path):
    (tmp_path / "manifest.csv").write_text("image_path,scribe_lines_px\na.png,1 2 3 4;5 6 7 8\nb.png,\n"
                                           "c.png,1 2 3\n")
    with pytest.raises(ValueError, match=r"manifest\.csv line 4 \(c\.png\)"):
        manifest_scribe_lines(tmp_path)
    (tmp_path / "manifest.csv").write_text("image_path,scribe_lines_px\na.png,1 2 3 4;5 6 7 8\nb.png,\n")
    assert manifest_scribe_lines(tmp_path) == {"a.png": [(1, 2, 3, 4), (5, 6, 7, 8)], "b.png": []}


def _test(model, datamodule, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, default_root_dir=tmp_path).test(model, datamodule=datamodule,
                                                                              verbose=False)


def test_zero_shot_scores_every_test_item_with_scribe_box_prompts(checkpoint, datamodule, tmp_path):
    L.seed_everything(0, verbose=False)
    model = SamBaseline(checkpoint=str(checkpoint), model_type=TINY_TEST, mode="zero-shot", box_margin_px=4)
    model.prepare_from_training_data(datamodule)
    model.fit_baseline(datamodule)  # nothing to fit
    _test(model, datamodule, tmp_path)
    items = datamodule.datasets["test"].item_ids
    assert [r["item_id"] for r in model.test_results] == list(items)
    assert all(0.0 <= r["dice"] <= 1.0 and 0.0 <= r["iou"] <= 1.0 for r in model.test_results)
    assert "rating_match" in model.test_results[0]  # the panel evaluator's extras, as for every model
    # the prompts are the item's scribe lines, and another box gives another mask
    item = items[0]
    boxes = model.boxes_for(datamodule, item, (64, 64))
    assert len(boxes) >= 1 and (boxes[:, 2] > boxes[:, 0]).all()
    embedded = model.embed(datamodule.datasets["test"].images[0])
    with torch.no_grad():
        prompted = model.decode(embedded, boxes)
        other = model.decode(embedded, np.array([[0.0, 0.0, 10.0, 10.0]]))
    assert prompted.shape == (1, 64, 64) and not torch.allclose(prompted, other)
    assert model.test_details()["sam"]["mode"] == "zero-shot"


def test_decoder_finetuning_moves_only_the_mask_decoder(checkpoint, datamodule, tmp_path):
    L.seed_everything(0, verbose=False)
    model = SamBaseline(checkpoint=str(checkpoint), model_type=TINY_TEST, mode="decoder-finetuned", epochs=2,
                        lr=1e-2, batch_size=4)
    before = {k: v.clone() for k, v in model.sam.state_dict().items()}
    model.prepare_from_training_data(datamodule)
    model.fit_baseline(datamodule)
    after = model.sam.state_dict()
    frozen = [k for k in before if not k.startswith("mask_decoder.")]
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    run = model.finetuning
    assert [h["epoch"] for h in run["history"]] == [0, 1, 2]
    assert all(h["train_loss"] > 0 for h in run["history"][1:])
    dices = [h["val_dice"] for h in run["history"]]
    assert run["best_epoch"] == int(np.argmax(dices))  # validation picks (the first of ties)
    changed = any(not torch.equal(before[k], after[k]) for k in before if k.startswith("mask_decoder."))
    assert changed == (run["best_epoch"] > 0)
    _test(model, datamodule, tmp_path)
    assert len(model.test_results) == len(datamodule.datasets["test"].item_ids)
    assert model.test_details()["sam"]["finetuning"]["best_epoch"] == run["best_epoch"]


def test_one_decoder_step_gets_gradients_only_in_the_decoder(checkpoint):
    torch.manual_seed(0)
    model = SamBaseline(checkpoint=str(checkpoint), model_type=TINY_TEST, mode="decoder-finetuned")
    photo = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 20:40, 28:36] = 1.0
    embedded = model.embed(photo)
    logits = model.decode(embedded, np.array([[24.0, 16.0, 40.0, 44.0]]))[None]
    model.region_loss(logits, mask).backward()
    grads = {n: p.grad for n, p in model.sam.named_parameters()}
    assert all(g is None for n, g in grads.items() if not n.startswith("mask_decoder."))
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith("mask_decoder."))
