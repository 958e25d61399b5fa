"""End-to-end: the harness on tiny generated data — records, resume, failures, determinism, leaderboard."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from matcv.benchmarks.cli import main as matcv_main
from matcv.datamodules.core.records import RunRecords
from matcv.benchmarks.cli import run_and_report
from matcv.datamodules.core.atomic_io import sha256_file
from matcv.datamodules.folds import read_fold_manifest
from tests.conftest import tiny_task_config


@pytest.fixture(scope="module")
def finished_benchmark(tmp_path_factory):
    """One tiny 3-fold benchmark (tiny UNet, 2 epochs, plus the two constant baselines)."""
    tmp = tmp_path_factory.mktemp("bench")
    config = tiny_task_config(tmp)
    bench = run_and_report(config, output_dir=tmp / "runs", leaderboard_dir=tmp / "board", progress=False)
    return bench, config, tmp


def test_every_model_and_fold_is_recorded_with_provenance(finished_benchmark):
    bench, _, _ = finished_benchmark
    records = bench.records.load()
    assert sorted((r["model"], r["fold"]) for r in records) == sorted(
        (m, f) for m in ("tiny-unet", "predict-nothing", "predict-everything") for f in range(3))
    manifest, manifest_sha = read_fold_manifest(bench.fold_manifest_path)
    assert manifest_sha == sha256_file(bench.fold_manifest_path)
    for record in records:
        assert record["status"] == "ok", record.get("traceback")
        assert record["fold_manifest_sha256"] == manifest_sha
        assert len(record["data_sha256"]) == 64 and len(record["config_hash"]) == 16
        assert {"git_commit", "git_dirty", "packages", "hardware", "durations", "throughput", "seed"} <= set(record)
        assert record["packages"]["torch"] and record["hardware"]["cpu_count"]
        test_items = manifest["folds"][record["fold"]]["test"]
        assert sorted(r["item_id"] for r in record["per_image"]) == sorted(test_items)
        assert record["metrics"]["dice"] == pytest.approx(np.mean([r["dice"] for r in record["per_image"]]))
        figure = Image.open(record["figure"])  # photo / probability / errors of the first test images
        assert figure.width > 300 and figure.height > 300


def test_constant_baselines_score_their_known_values(finished_benchmark):
    """Predict-nothing: Dice 0 on a non-empty mask, 1 on an empty one (thin corrosion vanishes at 32 px);
    predict-everything: Dice 2p/(1+p) and IoU p, with p the mask's foreground fraction."""
    bench, _, _ = finished_benchmark
    for record in bench.records.load():
        for item in record["per_image"]:
            mask = np.asarray(Image.open(bench.data_root / item["item_id"].replace("images/", "masks/"))) > 0
            p = mask.mean()
            if record["model"] == "predict-nothing":
                expected = 1.0 if p == 0 else 0.0
                assert item["dice"] == expected and item["iou"] == expected
            elif record["model"] == "predict-everything":
                assert item["dice"] == pytest.approx(2 * p / (1 + p), abs=1e-5)
                assert item["iou"] == pytest.approx(p, abs=1e-5)


def test_leaderboard_tables_are_written(finished_benchmark):
    bench, _, tmp = finished_benchmark
    csv_path = next((tmp / "board").glob("segmentation__*__quick.csv"))
    table = pd.read_csv(csv_path)
    assert set(table["model"]) == {"tiny-unet", "predict-nothing", "predict-everything"}
    assert (table["n_folds"] == 3).all()
    assert list(table["rank"]) == [1, 2, 3]
    assert table["dice_mean"].is_monotonic_decreasing
    everything = table.set_index("model").loc["predict-everything"]
    assert 0 < everything["dice_mean"] < 0.5 and everything["dice_std"] > 0
    markdown = csv_path.with_suffix(".md").read_text()
    assert "| rank | model | folds | dice (mean ± std) | iou (mean ± std) |" in markdown
    assert bench.fold_manifest_sha256[:12] in markdown
    plot = csv_path.with_suffix(".png")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({plot.name})" in markdown


def test_rerun_resumes_without_duplicates_and_redoes_a_killed_run(finished_benchmark):
    bench, config, tmp = finished_benchmark
    before = bench.records.load()
    again = run_and_report(config, output_dir=tmp / "runs", leaderboard_dir=tmp / "board", progress=False)
    assert len(again.records.load()) == len(before)  # nothing re-run, nothing duplicated

    # Simulate a kill during the last run: its record never got written, its folder is half full.
    lines = bench.records.path.read_text().splitlines(keepends=True)
    killed = json.loads(lines[-1])
    bench.records.path.write_text("".join(lines[:-1]))
    leftover = bench.folder / killed["model"] / f"fold-{killed['fold']}"
    leftover.mkdir(parents=True, exist_ok=True)
    (leftover / "half-written.ckpt").write_bytes(b"partial")

    resumed = run_and_report(config, output_dir=tmp / "runs", leaderboard_dir=tmp / "board", progress=False)
    after = resumed.records.load()
    assert len(after) == len(before)
    assert [r["key"] for r in after].count(killed["key"]) == 1
    assert after[-1]["key"] == killed["key"] and after[-1]["status"] == "ok"
    assert not (leftover / "half-written.ckpt").exists()


def test_failed_run_is_recorded_and_the_others_go_on(tmp_path):
    models = {
        "broken": {"class": "matcv.lightning_modules.segmentation.SmpSegmentationTask",
                   "args": {"arch": "unet", "encoder_name": "no-such-encoder"}},
        "predict-nothing": {"class": "matcv.lightning_modules.segmentation.ConstantMaskBaseline", "args": {"value": 0}},
    }
    config = tiny_task_config(tmp_path, models=models)
    bench = run_and_report(config, output_dir=tmp_path / "runs", leaderboard_dir=tmp_path / "board", progress=False)
    records = bench.records.load()
    failed = [r for r in records if r["status"] == "failed"]
    assert sorted(r["fold"] for r in failed) == [0, 1, 2]
    assert all(r["model"] == "broken" and "no-such-encoder" in r["error"] for r in failed)
    assert sum(r["status"] == "ok" for r in records) == 3
    markdown = next((tmp_path / "board").glob("*.md")).read_text()
    assert "Failed runs" in markdown and "broken fold 0" in markdown

    run_and_report(config, output_dir=tmp_path / "runs", leaderboard_dir=tmp_path / "board", progress=False)
    assert len(bench.records.load()) == len(records)  # failures are not retried by default
    run_and_report(config, output_dir=tmp_path / "runs", leaderboard_dir=tmp_path / "board", progress=False,
                  retry_failed=True, models=["broken"], folds=[0])
    assert len(bench.records.load()) == len(records) + 1


def test_same_seed_same_fold_gives_same_metrics(tmp_path):
    config = tiny_task_config(tmp_path, folds=3, max_epochs=1)
    scores = []
    for name in ("a", "b"):
        bench = run_and_report(config, models=["tiny-unet"], folds=[1], output_dir=tmp_path / name,
                              leaderboard_dir=tmp_path / name / "board", progress=False)
        (record,) = bench.records.load()
        scores.append(record["per_image"])
    assert scores[0] == scores[1]


def test_torn_record_line_is_skipped(tmp_path):
    records = RunRecords(tmp_path / "records.jsonl")
    records.append({"key": "a", "status": "ok"})
    with open(records.path, "a") as handle:
        handle.write('{"key": "b", "sta')  # the machine died mid-write
    with pytest.warns(UserWarning, match="torn"):
        assert [r["key"] for r in records.load()] == ["a"]


def test_cli_help_and_bad_task(capsys):
    with pytest.raises(SystemExit) as exit_info:
        matcv_main(["bench", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--task", "--profile", "--data-root", "--devices", "--models", "--folds", "--retry-failed"):
        assert option in out
    assert matcv_main(["bench", "--task", "no-such-task"]) == 2
    assert "unknown task 'no-such-task'" in capsys.readouterr().err


def test_unknown_model_or_fold_is_refused_before_any_work(tmp_path, capsys):
    config = tiny_task_config(tmp_path)
    assert matcv_main(["bench", "--task", str(config), "--models", "nope", "--output", str(tmp_path / "r")]) == 2
    assert "unknown model(s) ['nope']" in capsys.readouterr().err
    assert matcv_main(["bench", "--task", str(config), "--folds", "7", "--output", str(tmp_path / "r")]) == 2
    assert "fold(s) [7] out of range" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_bad_data_root_stops_before_training_and_names_the_file(tmp_path, capsys):
    root = tmp_path / "my_panels"
    (root / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / "a.png")
    (root / "images" / "b.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "mask_a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "mask_b.png")
    (root / "manifest.csv").write_text("image_path,mask_path,rating,panel_id\n"
                                       "images/a.png,mask_a.png,7,P1\nimages/b.png,mask_b.png,8,P2\n")
    config = tiny_task_config(tmp_path)
    code = matcv_main(["bench", "--task", str(config), "--data-root", str(root), "--output", str(tmp_path / "r"),
                       "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "row 3: cannot read image" in err and "b.png" in err
    assert not list((tmp_path / "r").glob("**/records.jsonl"))


def test_cli_data_and_leaderboard_commands(finished_benchmark, capsys):
    bench, config, tmp = finished_benchmark
    assert matcv_main(["data", "--task", str(config)]) == 0
    out = capsys.readouterr().out
    assert str(bench.data_root) in out and "18 images of 9 groups" in out
    assert "images per rating: {5: 4, 6: 4, 7: 4, 8: 4, 9: 2}" in out
    assert matcv_main(["data", "--task", str(config), "--check", str(bench.data_root)]) == 0
    assert "OK - 18 images in 9 groups" in capsys.readouterr().out

    rebuilt = tmp / "rebuilt"
    # --no-reference: this folder's runs only, without the project's published boards
    assert matcv_main(["leaderboard", "--runs", str(tmp / "runs"), "--out", str(rebuilt), "--no-reference"]) == 0
    assert "tiny-unet" in capsys.readouterr().out
    assert len(list(rebuilt.glob("segmentation__*__quick.md"))) == 1
    assert matcv_main(["leaderboard", "--runs", str(tmp / "empty"), "--out", str(tmp / "none"), "--no-reference"]) == 1


def test_fold_metrics_prefer_the_models_summary_and_average_items_otherwise():
    from matcv.benchmarks.harness.run import fold_metrics
    from matcv.lightning_modules.base import BenchmarkModule

    class Model(BenchmarkModule):
        def test_summary(self):
            return {"kappa": 0.25}

    items = [{"item_id": "a", "dice": 0.5, "kappa": 9.0}, {"item_id": "b", "dice": 1.0, "kappa": 9.0}]
    assert fold_metrics(Model(), items, ["dice", "kappa"]) == {"dice": 0.75, "kappa": 0.25}
    assert fold_metrics(BenchmarkModule(), items, ["dice"]) == {"dice": 0.75}
    with pytest.raises(KeyError, match="'mae'"):
        fold_metrics(Model(), items, ["mae"])
