"""Every built-in run keeps its test predictions (``predictions.npz``, the submissions' layout) and ``matcv verify``
rescores them with the task's leaderboard scorer: an edited metric, an edited or missing file is caught."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from matcv.benchmarks.cli import main as matcv_main
from matcv.benchmarks.harness.predictions import PREDICTIONS_FILE, PredictionRecording, recording_class
from matcv.benchmarks.harness.runner import run_benchmark
from matcv.benchmarks.submission.models import adapter_from
from matcv.datamodules.core.atomic_io import sha256_file
from matcv.datamodules.core.config import TaskConfig, available_tasks, import_object
from matcv.leaderboard.verify import CORRUPT, MISMATCH, MISSING, NO_PREDICTIONS, PASSED, same_number, verify_runs
from tests.conftest import tiny_rating_config, tiny_task_config

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.filterwarnings("ignore::UserWarning")]

SEGMENTATION = {"adapter": "matcv.benchmarks.submission.adapters.segmentation",
                "scorer": "matcv.leaderboard.scorers.segmentation"}
RATING = {"adapter": "matcv.benchmarks.submission.adapters.rating", "scorer": "matcv.leaderboard.scorers.rating"}


def with_submission(path: Path, block: dict | None) -> Path:
    """The task YAML at ``path`` with ``block`` as its ``submission`` declaration (None: none)."""
    config = yaml.safe_load(path.read_text())
    config.pop("submission", None)
    if block is not None:
        config["submission"] = block
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def segmentation_runs(tmp_path_factory):
    """A tiny 2-fold segmentation benchmark (a 1-epoch UNet and the predict-nothing floor) whose YAML declares
    the segmentation submission modules: (benchmark, runs folder)."""
    tmp = tmp_path_factory.mktemp("verify")
    unet = {"class": "matcv.lightning_modules.segmentation.SmpSegmentationTask",
            "args": {"arch": "unet", "encoder_name": "resnet18", "lr": 3.0e-3,
                     "arch_kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}}}
    models = {"tiny-unet": unet,
              "predict-nothing": {"class": "matcv.lightning_modules.segmentation.ConstantMaskBaseline",
                                  "args": {"value": 0}}}
    config = with_submission(tiny_task_config(tmp, models=models, folds=2, max_epochs=1), SEGMENTATION)
    bench = run_benchmark(config, output_dir=tmp / "runs", progress=False, accelerator="cpu", log_wandb=False)
    return bench, tmp / "runs"


def copy_of(runs: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the runs folder to tamper with: (runs copy, its records.jsonl)."""
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    return copy, next(copy.rglob("records.jsonl"))


def test_every_run_keeps_its_test_predictions(segmentation_runs):
    bench, _ = segmentation_runs
    manifest = json.loads(bench.fold_manifest_path.read_text())
    records = bench.records.load()
    assert len(records) == 4
    for record in records:
        assert record["status"] == "ok", record.get("traceback")
        info = record["predictions"]
        path = bench.folder / info["path"]
        assert path.name == PREDICTIONS_FILE and path.parent.name == f"fold-{record['fold']}"
        assert sha256_file(path) == info["sha256"] and path.stat().st_size == info["bytes"]
        with np.load(path, allow_pickle=False) as npz:  # the submissions' layout: item_ids + pred_<i>
            names = set(npz.files)
            ids = npz["item_ids"].tolist()
            assert names == {"item_ids"} | {f"pred_{i:05d}" for i in range(len(ids))}
            masks = [npz[f"pred_{i:05d}"] for i in range(len(ids))]
        assert sorted(ids) == sorted(manifest["folds"][record["fold"]]["test"])
        assert all(m.dtype == np.uint8 and m.shape == (32, 32) and set(np.unique(m)) <= {0, 1} for m in masks)
        if record["model"] == "predict-nothing":
            assert not any(m.any() for m in masks)


def test_dice_recomputed_from_the_file_alone_equals_the_record(segmentation_runs):
    """Dice from the .npz and the mask files on disk, with numpy only (no matcv scoring code)."""
    bench, _ = segmentation_runs
    for record in bench.records.load():
        with np.load(bench.folder / record["predictions"]["path"], allow_pickle=False) as npz:
            predicted = {item: npz[f"pred_{i:05d}"].astype(bool) for i, item in enumerate(npz["item_ids"].tolist())}
        recorded = {row["item_id"]: row["dice"] for row in record["per_image"]}
        dices = []
        for item, mask in predicted.items():
            truth = np.asarray(Image.open(bench.data_root / item.replace("images/", "masks/"))) > 0
            assert truth.shape == mask.shape  # the generated photos are already the profile's 32 px
            overlap, total = (mask & truth).sum(), mask.sum() + truth.sum()
            dice = 2 * overlap / total if total else 1.0
            assert dice == pytest.approx(recorded[item], abs=1e-6), item
            dices.append(dice)
        assert np.mean(dices) == pytest.approx(record["metrics"]["dice"], abs=1e-6)


def test_verify_passes_on_an_untouched_benchmark(segmentation_runs, capsys):
    _, runs = segmentation_runs
    assert matcv_main(["verify", str(runs), "--no-progress"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith(PASSED + " ")]
    assert len(lines) == 4 and all("2 metrics" in line for line in lines), out
    assert "verified 4 successful run(s)" in out and "4 ok" in out


def test_an_edited_metric_is_a_mismatch(segmentation_runs, tmp_path, capsys):
    _, runs = segmentation_runs
    copy, records_path = copy_of(runs, tmp_path)
    records = [json.loads(line) for line in records_path.read_text().splitlines()]
    edited = next(r for r in records if r["model"] == "tiny-unet" and r["fold"] == 1)
    true_dice = edited["metrics"]["dice"]
    edited["metrics"]["dice"] = true_dice + 1e-3
    records_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert matcv_main(["verify", str(copy), "--no-progress"]) == 1
    out = capsys.readouterr().out
    mismatch = [line for line in out.splitlines() if line.startswith(MISMATCH)]
    assert len(mismatch) == 1 and "tiny-unet fold 1" in mismatch[0], out
    assert f"dice: recorded {true_dice + 1e-3!r} vs recomputed" in mismatch[0]
    assert "1 MISMATCH" in out and "3 ok" in out


def test_an_edited_per_item_value_is_a_mismatch(segmentation_runs, tmp_path):
    _, runs = segmentation_runs
    copy, records_path = copy_of(runs, tmp_path)
    records = [json.loads(line) for line in records_path.read_text().splitlines()]
    row = records[0]["per_image"][0]
    row["iou"] = row["iou"] + 0.5
    records_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    checks = verify_runs(copy, progress=False, echo=lambda line: None)
    bad = [c for c in checks if c.outcome == MISMATCH]
    assert len(bad) == 1 and f"iou of {row['item_id']!r}" in bad[0].problems[0]


def test_an_edited_truncated_or_missing_file_is_caught(segmentation_runs, tmp_path):
    _, runs = segmentation_runs
    copy, records_path = copy_of(runs, tmp_path)
    records = [json.loads(line) for line in records_path.read_text().splitlines()]
    folder = records_path.parent
    by_run = {(r["model"], r["fold"]): folder / r["predictions"]["path"] for r in records}
    # One mask pixel flipped, written back as a valid .npz: only the sha256 can tell.
    edited = by_run["tiny-unet", 0]
    with np.load(edited, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["pred_00000"][0, 0] ^= 1
    np.savez_compressed(edited, **arrays)
    truncated = by_run["tiny-unet", 1]
    truncated.write_bytes(truncated.read_bytes()[:200])
    by_run["predict-nothing", 0].unlink()
    checks = verify_runs(copy, progress=False, echo=lambda line: None)
    found = {(c.where.split()[-3], int(c.where.split()[-1])): c for c in checks}
    assert found["tiny-unet", 0].outcome == CORRUPT and "sha256" in found["tiny-unet", 0].problems[0]
    assert found["tiny-unet", 1].outcome == CORRUPT
    assert found["predict-nothing", 0].outcome == MISSING
    assert found["predict-nothing", 1].outcome == PASSED
    # With its sha256 updated, the edited file is read and rescored: Dice of that image no longer matches.
    for record in records:
        if (record["model"], record["fold"]) == ("tiny-unet", 0):
            record["predictions"]["sha256"] = sha256_file(edited)
    records_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    recheck = {(c.where.split()[-3], int(c.where.split()[-1])): c
               for c in verify_runs(copy, progress=False, echo=lambda line: None)}
    assert recheck["tiny-unet", 0].outcome == MISMATCH, recheck["tiny-unet", 0].line()
    assert not zipfile.is_zipfile(truncated)


def test_a_yaml_without_submission_block_keeps_nothing_and_verify_says_so(tmp_path, capsys):
    models = {"predict-nothing": {"class": "matcv.lightning_modules.segmentation.ConstantMaskBaseline",
                                  "args": {"value": 0}}}
    config = with_submission(tiny_task_config(tmp_path, models=models, folds=2, max_epochs=1), None)
    bench = run_benchmark(config, output_dir=tmp_path / "runs", progress=False, accelerator="cpu", log_wandb=False)
    for record in bench.records.load():
        assert record["status"] == "ok" and "predictions" not in record and "predictions_error" not in record
        assert not (bench.folder / "predict-nothing" / f"fold-{record['fold']}" / PREDICTIONS_FILE).exists()
    assert matcv_main(["verify", str(tmp_path / "runs"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count(NO_PREDICTIONS) >= 2 and "2 no predictions" in out


def test_predictions_that_cannot_be_kept_never_cost_the_run_its_metrics(tmp_path, monkeypatch):
    """A model outside the adapter's evaluation base, and a disk error while writing: the run is recorded with
    its metrics, ``predictions: null`` and the reason."""
    models = {"predict-nothing": {"class": "matcv.lightning_modules.segmentation.ConstantMaskBaseline",
                                  "args": {"value": 0}}}
    other_base = {"evaluation_base": "matcv.lightning_modules.rating.RatingEvaluation",
                  "scorer": "matcv.leaderboard.scorers.segmentation"}
    config = with_submission(tiny_task_config(tmp_path, models=models, folds=2, max_epochs=1), other_base)
    with pytest.warns(UserWarning, match="not kept"):
        bench = run_benchmark(config, folds=[0], output_dir=tmp_path / "a", progress=False, accelerator="cpu",
                              log_wandb=False)
    (record,) = bench.records.load()
    assert record["status"] == "ok" and "dice" in record["metrics"]
    assert record["predictions"] is None and "not a RatingEvaluation subclass" in record["predictions_error"]

    import matcv.benchmarks.harness.predictions as predictions

    def full_disk(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(predictions, "atomic_write_bytes", full_disk)
    with_submission(config, SEGMENTATION)
    with pytest.warns(UserWarning, match="No space left"):
        bench = run_benchmark(config, folds=[0], output_dir=tmp_path / "b", progress=False, accelerator="cpu",
                              log_wandb=False)
    (record,) = bench.records.load()
    assert record["status"] == "ok" and "dice" in record["metrics"]
    assert record["predictions"] is None and "No space left" in record["predictions_error"]


def test_rating_runs_are_verified_too(tmp_path, capsys):
    """The hand-crafted random forest (fitted outside Lightning) keeps its ratings; verify recomputes accuracy,
    macro-F1, QWK, MAE and within-1 with the rating scorer, and catches an edited QWK."""
    models = {"hand-crafted-rf": {"class": "matcv.lightning_modules.rating_baselines.HandCraftedRatingBaseline",
                                  "args": {"classifier": "random_forest"}}}
    config = with_submission(tiny_rating_config(tmp_path, models, image_size=32), RATING)
    bench = run_benchmark(config, output_dir=tmp_path / "runs", progress=False, accelerator="cpu", log_wandb=False)
    records = bench.records.load()
    assert len(records) == 2
    for record in records:
        with np.load(bench.folder / record["predictions"]["path"], allow_pickle=False) as npz:
            ids = npz["item_ids"].tolist()
            ratings = [int(npz[f"pred_{i:05d}"]) for i in range(len(ids))]
        assert ratings == [row["predicted"] for row in record["per_image"]]
    checks = verify_runs(tmp_path / "runs", progress=False, echo=lambda line: None)
    assert [c.outcome for c in checks] == [PASSED, PASSED], [c.line() for c in checks]
    assert all("5 metrics" in c.line() for c in checks)
    records_path = bench.folder / "records.jsonl"
    edited = [json.loads(line) for line in records_path.read_text().splitlines()]
    edited[1]["metrics"]["qwk"] = edited[1]["metrics"]["qwk"] - 0.25
    records_path.write_text("".join(json.dumps(r) + "\n" for r in edited))
    assert matcv_main(["verify", str(tmp_path / "runs"), "--no-progress"]) == 1
    assert "qwk: recorded" in capsys.readouterr().out


@pytest.mark.parametrize("name", available_tasks())
def test_every_builtin_model_class_takes_its_tasks_recording_mixin(name):
    """Each model of each task YAML is a subclass of its adapter's evaluation base, and mixing the recording
    mixin in front makes a class (what ``PredictionRecording.start`` does to the tested model)."""
    config = TaskConfig.load(name)
    adapter = adapter_from(config.submission)
    base, mixin = import_object(adapter.evaluation_base), import_object(adapter.recording_mixin)
    for model, entry in config.raw["models"].items():
        cls = import_object(entry["class"])
        assert issubclass(cls, base), f"{name}.yaml model {model}: {cls.__name__} is not a {base.__name__}"
        recording = recording_class(mixin, cls)
        assert recording.__bases__ == (mixin, cls) and issubclass(recording, base)
        assert recording.submission_arrays is not None and recording.configure_callbacks is not cls.configure_callbacks
        assert recording_class(mixin, cls) is recording  # one class per pair, however many runs


def test_recording_leaves_a_submissions_model_alone():
    from matcv.benchmarks.submission.adapters.segmentation import ExternalSegmentationModel

    model = ExternalSegmentationModel.__new__(ExternalSegmentationModel)
    assert PredictionRecording.start(model, TaskConfig.load("segmentation")).problem is None
    assert type(model) is ExternalSegmentationModel


def test_numbers_compare_within_the_tolerance():
    assert same_number(0.5, 0.5 + 1e-8) and not same_number(0.5, 0.5 + 1e-5)
    assert same_number(float("nan"), float("nan")) and not same_number(float("nan"), 0.0)
    assert same_number(0.0, 5e-10) and not same_number(0.0, 1e-8)
    assert not same_number(True, 1.0) and not same_number("0.5", 0.5) and not same_number(None, 0.0)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the superalloy YAML's 9 models: ~2.5 min on an idle 2-core CPU, far longer on a busy one
@pytest.mark.parametrize("name", available_tasks())
def test_every_smoke_model_keeps_predictions_that_verify_accepts(name, tmp_path, monkeypatch):
    """Fold 0 of every smoke-test profile of the YAML through the harness (all its models, baselines and
    references included), then ``matcv verify`` on the records: every run kept its predictions and verifies."""
    from tests.test_every_model import STAND_INS

    monkeypatch.setenv("MATCV_CACHE_DIR", str(tmp_path / "cache"))
    config = TaskConfig.load(name)
    for profile in config.smoke_profiles:
        data_root = STAND_INS[name](tmp_path) if name in STAND_INS else None
        try:
            bench = run_benchmark(name, profile, data_root=data_root, folds=[0], output_dir=tmp_path / "runs",
                                  progress=False, accelerator="cpu", log_wandb=False)
        except FileNotFoundError as error:  # real data that is not on this machine
            pytest.skip(f"{name}.yaml: its data is absent here ({error})")
        records = bench.records.load()
        assert {r["model"] for r in records} == set(config.model_names(profile))
        for record in records:
            assert record["status"] == "ok", record.get("traceback")
            assert isinstance(record["predictions"], dict), record.get("predictions_error")
    checks = verify_runs(tmp_path / "runs", progress=False, echo=lambda line: None)
    assert checks and all(c.outcome == PASSED for c in checks), [c.line() for c in checks if c.outcome != PASSED]
