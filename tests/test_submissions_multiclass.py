"""Multi-class segmentation submissions (the NASA superalloy layout, 3 classes): class-index maps scored per
image and class as the harness scores its own models, ranked by mIoU; a wrong class index is rejected.
Runs on a tiny generated copy of the published layout (``tests.test_superalloy.make_layout``), so it needs
no real data."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from matcv.benchmarks.submission.submit import publish_official, submit
from matcv.leaderboard.rebuild import write_all_leaderboards
from matcv.leaderboard.submission import validate_submission
from tests.submission_tampering import copy_submission, rewrite_npz
from tests.test_superalloy import make_layout

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXTERNAL = Path(__file__).parent / "fixtures_external_model"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multiclass")
    root = tmp / "benchmark_segmentation_data"
    make_layout(root)
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("MATCV_SUPERALLOY_ROOT", str(root))  # the official data of this tiny benchmark
    config = tmp / "tiny_superalloy.yaml"
    config.write_text(yaml.safe_dump({
        "task": "segmentation",
        "datamodule": {"class": "matcv.datamodules.superalloy.SuperalloyDataModule", "args": {}},
        "group_column": "spot",
        "metrics": ["iou", "dice"],
        # A task YAML needs a model; none is run here (the submission is the only entry).
        "models": {"constant": {"class": "matcv.lightning_modules.segmentation.ConstantMaskBaseline", "args": {}}},
        "profiles": {"quick": {"folds": 2, "val_fraction": 0.45, "seed": 0,
                               "datamodule": {"split": "grouped", "crop_size": 32, "crops_per_image": 4,
                                              "batch_size": 4},
                               "trainer": {"max_epochs": 2}}},
    }))
    official = tmp / "official"
    entry = publish_official(config, "quick", official)
    sys.path.insert(0, str(EXTERNAL))
    try:
        folder = submit("segmentation", "ext_seg_models.nets:build", "three-class-fcn",
                        hyperparameters={"width": 4, "classes": 3, "lr": 0.01}, official_dir=official,
                        submissions_dir=tmp / "subs", work_dir=tmp / "work", accelerator="cpu", progress=False)
    finally:
        sys.path.remove(str(EXTERNAL))
    yield {"tmp": tmp, "official": official, "entry": entry, "folder": folder}
    monkeypatch.undo()


def test_class_index_maps_are_recorded_and_rescored_like_the_harness(world):
    folder = world["folder"]
    verdict = validate_submission(folder, world["official"])
    assert verdict.ok, verdict.reason
    meta = json.loads((folder / "metadata.json").read_text())
    for fold, claimed in zip(verdict.folds, meta["folds"]):  # smp's multiclass stats = the numpy rescoring
        assert fold["metrics"] == pytest.approx({k: claimed["metrics"][k] for k in ("dice", "iou")}, abs=1e-6)
        row = fold["per_item"][0]
        assert row["iou"] == pytest.approx(np.mean([row["iou_matrix"], row["iou_secondary"], row["iou_tertiary"]]))
    with np.load(folder / "predictions/fold-0.npz", allow_pickle=False) as data:
        masks = [data[k] for k in data.files if k.startswith("pred_")]
    assert all(m.dtype == np.uint8 and m.max() <= 2 for m in masks)


def test_a_class_index_outside_the_classes_is_rejected(world, tmp_path):
    subs = tmp_path / "subs"
    shutil.copytree(world["folder"].parent, subs / "segmentation")
    bad = copy_submission(subs, "segmentation", world["folder"].name, "bad-class")
    rewrite_npz(bad / "predictions" / "fold-1.npz",
                lambda arrays: arrays.update(pred_00000=np.full_like(arrays["pred_00000"], 3)))
    verdict = validate_submission(bad, world["official"])
    assert not verdict.ok and "values other than the class indices 0..2" in verdict.reason, verdict.reason


def test_the_submissions_table_ranks_multi_class_data_by_mean_iou(world, tmp_path):
    written = write_all_leaderboards(tmp_path / "runs", tmp_path / "out",
                                     submissions_dir=world["folder"].parents[1], official_dir=world["official"])
    table = next(p for p in written if p.name.endswith("__submissions.md")).read_text()
    assert "| rank | model | kind | folds | iou (mean ± std) | dice (mean ± std) |" in table
    assert "three-class-fcn (submission)" in table
