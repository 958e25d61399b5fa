"""Learning curves (``--train-fraction 0.25,0.5,1``): every model x fold also trains on nested, seeded shares of
the fold's training groups, on unchanged validation and test parts; fraction 1 is today's run (same key and
hash); the leaderboard's rows hold fraction-1 runs only and a learning-curve table/figure shows the rest."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from matcv.benchmarks.cli import build_parser
from matcv.benchmarks.cli import main as matcv_main
from matcv.benchmarks.harness.runner import spec_key
from matcv.datamodules.base import BenchmarkDataModule, training_subset
from matcv.datamodules.core.config import ConfigError, RunSpec, TaskConfig, run_seed
from matcv.datamodules.folds import make_fold_manifest, write_fold_manifest
from matcv.leaderboard.build import leaderboard_table
from matcv.leaderboard.learning_curves import COLUMNS, learning_curve_table
from tests.conftest import tiny_task_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# The cut itself, on a manifest of 20 panels of 3 photos (no data, no training).

@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    items = [f"panel{p:02d}_photo{k}" for p in range(20) for k in range(3)]
    groups = [item.split("_")[0] for item in items]
    strata = [p % 2 for p in range(20) for _ in range(3)]
    path = tmp_path_factory.mktemp("manifest") / "fold_manifest.json"
    write_fold_manifest(path, make_fold_manifest(items, groups, strata, n_folds=4, val_fraction=0.25, seed=0,
                                                 group_column="panel_id", stratify_column="rating"))
    return path


def _fold(manifest: Path, fold: int, fraction: float) -> tuple[dict, BenchmarkDataModule]:
    module = BenchmarkDataModule(manifest, fold, seed=run_seed(0, fold), train_fraction=fraction)
    return module.fold_items(json.loads(manifest.read_text())["groups"]), module


def test_subsets_are_nested_whole_groups_and_leave_val_and_test_alone(manifest):
    groups = json.loads(manifest.read_text())["groups"]
    for fold in range(4):
        full, module = _fold(manifest, fold, 1.0)
        n_groups = module.train_subset["n_groups_total"]
        kept = {}
        for fraction in (0.25, 0.5, 1.0):
            items, module = _fold(manifest, fold, fraction)
            assert items["val"] == full["val"] and items["test"] == full["test"]
            chosen = {groups[i] for i in items["train"]}
            # whole groups: every photo of a kept panel, none of the others
            assert items["train"] == [i for i in full["train"] if groups[i] in chosen]
            assert len(chosen) == math.ceil(fraction * n_groups) == module.train_subset["n_groups"]
            assert sorted(chosen) == module.train_subset["groups"]
            kept[fraction] = chosen
        assert kept[0.25] < kept[0.5] < kept[1.0]
        assert full["train"] == _fold(manifest, fold, 1.0)[0]["train"]  # fraction 1 is the manifest's list


def test_the_subset_follows_the_fold_seed_only(manifest):
    groups = json.loads(manifest.read_text())["groups"]
    train = _fold(manifest, 0, 1.0)[0]["train"]
    a = training_subset(train, groups, 0.5, run_seed(0, 0))
    assert a == training_subset(train, groups, 0.5, run_seed(0, 0))  # any model, any replicate: the same
    assert a != training_subset(train, groups, 0.5, run_seed(0, 0) + 1)


def test_too_small_or_invalid_fractions_fail_clearly(manifest):
    with pytest.raises(ValueError, match=r"fold 2 of .*less than one"):
        _fold(manifest, 2, 0.05)
    for bad in (0, 1.5, -0.5, True, "half"):
        with pytest.raises(ConfigError, match="fraction"):
            BenchmarkDataModule(manifest, 0, train_fraction=bad)
    config = TaskConfig.load("segmentation")
    for bad in ([0.5, 0.5], [0], [1.2], []):
        with pytest.raises(ConfigError):
            config.runs("quick", ["unet"], [0], train_fractions=bad)
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        build_parser().parse_args(["bench", "--train-fraction", "0.5,2"])
    assert build_parser().parse_args(["bench", "--train-fraction", "0.5,1,0.25"]).train_fraction == [1.0, 0.25, 0.5]


def test_fraction_1_is_todays_run_and_the_others_have_their_own_hash():
    config = TaskConfig.load("rating")
    plain = config.runs("quick", ["resnet18"], [0, 1])
    curve = config.runs("quick", ["resnet18"], [0, 1], train_fractions=[0.25, 0.5, 1])
    assert [s.train_fraction for s in curve] == [1.0, 1.0, 0.25, 0.25, 0.5, 0.5]  # full data first
    assert [(s.config, s.config_hash) for s in curve[:2]] == [(s.config, s.config_hash) for s in plain]
    assert all("train_fraction" not in s.config for s in curve[:2])
    assert {s.config["train_fraction"] for s in curve[2:]} == {0.25, 0.5}
    assert len({s.config_hash for s in curve}) == 3 and curve[2].label == "resnet18 fold 0 frac 0.25"
    with pytest.raises(ValueError, match="train_fraction"):
        RunSpec("rating", "quick", "resnet18", 0, plain[0].config, train_fraction=0.5)
    assert TaskConfig.load("rating").train_fractions("learning-curve") == [1.0, 0.25, 0.5]
    assert TaskConfig.load("segmentation").train_fractions("learning-curve") == [1.0, 0.25, 0.5]


# A real bench: the tiny segmentation task, two models, folds 0 and 1, `--train-fraction 0.5,1`.

@pytest.fixture(scope="module")
def curve(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("curve")
    config = tiny_task_config(tmp, folds=3, max_epochs=1, n_panels=12)
    raw = yaml.safe_load(config.read_text())
    del raw["models"]["predict-everything"]
    config.write_text(yaml.safe_dump(raw))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = matcv_main(["bench", "--task", str(config), "--output", str(tmp / "runs"), "--leaderboard-dir",
                           str(tmp / "board"), "--folds", "0,1", "--train-fraction", "0.5,1", "--accelerator",
                           "cpu", "--no-progress", "--no-wandb"])
    assert code == 0, printed.getvalue()
    folder = tmp / "runs" / "segmentation"
    folder = next(folder.glob("*/quick"))
    records = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines() if line.strip()]
    return {"config": config, "folder": folder, "board": tmp / "board", "records": records,
            "stdout": printed.getvalue()}


def _runs(records: list[dict]) -> dict[tuple, dict]:
    return {(r["model"], r["fold"], r["train_fraction"]): r for r in records}


def test_every_model_and_fold_runs_at_every_fraction_on_the_same_groups(curve):
    records = curve["records"]
    assert all(r["status"] == "ok" for r in records), [r.get("error") for r in records]
    runs = _runs(records)
    assert sorted(runs) == sorted((m, f, x) for m in ("tiny-unet", "predict-nothing") for f in (0, 1)
                                  for x in (0.5, 1.0))
    manifest = json.loads((curve["folder"] / "fold_manifest.json").read_text())
    for fold in (0, 1):
        half = [runs[(m, fold, 0.5)] for m in ("tiny-unet", "predict-nothing")]
        assert half[0]["train_groups"] == half[1]["train_groups"]  # the same subset for every model
        full = runs[("tiny-unet", fold, 1.0)]
        assert "train_groups" not in full and full["n_train_groups"] == full["n_train_groups_total"]
        assert half[0]["n_train_groups"] == math.ceil(0.5 * full["n_train_groups"])
        n_items = sum(1 for g in manifest["groups"].values() if g in set(half[0]["train_groups"]))
        assert half[0]["n_items"]["train"] == n_items < full["n_items"]["train"]
        for run in half:  # validation and test unchanged
            same = runs[(run["model"], fold, 1.0)]
            assert run["n_items"]["val"] == same["n_items"]["val"]
            assert [i["item_id"] for i in run["per_image"]] == [i["item_id"] for i in same["per_image"]]
        assert (curve["folder"] / "tiny-unet" / f"fold-{fold}-frac-0.5").is_dir()
        assert (curve["folder"] / "tiny-unet" / f"fold-{fold}").is_dir()
    assert "tiny-unet fold 1 frac 0.5: ok" in curve["stdout"]


def test_fraction_1_records_have_todays_keys(curve):
    config = TaskConfig.load(curve["config"])
    bench = type("Bench", (), {})()
    record = _runs(curve["records"])[("tiny-unet", 0, 1.0)]
    bench.fold_manifest_sha256, bench.data_sha256 = record["fold_manifest_sha256"], record["data_sha256"]
    plain = config.runs("quick", ["tiny-unet"], [0])[0]  # a bench without --train-fraction
    assert record["key"] == spec_key(bench, plain) and record["config_hash"] == plain.config_hash
    assert record["config"] == plain.config


def test_the_leaderboard_rows_hold_fraction_1_only_and_the_curve_is_written(curve):
    records = curve["records"]
    full = [r for r in records if r["train_fraction"] == 1.0]
    table = leaderboard_table(records, ["dice", "iou"]).table.set_index("model")
    assert table.loc["tiny-unet", "n_runs"] == 2
    assert table.loc["tiny-unet", "dice_mean"] == pytest.approx(
        leaderboard_table(full, ["dice", "iou"]).table.set_index("model").loc["tiny-unet", "dice_mean"])
    main_csv = pd.read_csv(next(curve["board"].glob("segmentation__*__quick.csv")))
    assert list(main_csv["n_runs"]) == [2, 2]
    curve_table = learning_curve_table(records, "dice")
    assert list(curve_table.columns) == COLUMNS and len(curve_table) == 4
    row = curve_table.set_index(["model", "train_fraction"]).loc[("tiny-unet", 1.0)]
    assert row["mean"] == pytest.approx(table.loc["tiny-unet", "dice_mean"]) and row["n_folds"] == 2
    stem = next(curve["board"].glob("segmentation__*__quick__learning_curve.csv")).with_suffix("")
    for suffix in (".csv", ".png", ".md"):
        assert stem.with_suffix(suffix).stat().st_size > 0
    assert pd.read_csv(stem.with_suffix(".csv")).shape == (4, 5)
    assert "more data" in stem.with_suffix(".md").read_text()
