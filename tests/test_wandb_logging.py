"""W&B dashboards: offline runs per model × fold holding the test metrics, and a summary run holding the table."""

from __future__ import annotations

import time

import pytest

from matcv.benchmarks.cli import run_and_report
from matcv.benchmarks.harness.wandb_logging import read_offline_run, wandb_mode
from tests.conftest import tiny_task_config


@pytest.mark.parametrize("env, enabled, expected", [
    ({}, True, "offline"),                                   # default: files only, nothing leaves the machine
    ({"WANDB_API_KEY": "x" * 40}, True, "online"),          # the user's key: online
    ({"WANDB_API_KEY": "x" * 40, "WANDB_MODE": "offline"}, True, "offline"),
    ({"WANDB_MODE": "disabled"}, True, None),
    ({"MATCV_WANDB": "off", "WANDB_API_KEY": "x" * 40}, True, None),
    ({}, False, None),                                       # --no-wandb
])
def test_mode_follows_the_users_settings(monkeypatch, env, enabled, expected):
    for name in ("WANDB_API_KEY", "WANDB_MODE", "MATCV_WANDB"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert wandb_mode(enabled) == expected


def _read_when_written(folder, patience_s: float = 30.0) -> dict:
    """An offline run once W&B's service process has written its run record: on a loaded machine the log of a
    finished run was once read before that record was in it (seen once in CI under load, never alone)."""
    deadline = time.monotonic() + patience_s
    while True:
        run = read_offline_run(folder)
        if "name" in run or time.monotonic() > deadline:
            return run
        time.sleep(0.5)


def test_benchmark_leaves_offline_runs_with_metrics_and_a_leaderboard_run(tmp_path, monkeypatch):
    for name in ("WANDB_API_KEY", "WANDB_MODE", "MATCV_WANDB", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    config = tiny_task_config(tmp_path, folds=2, max_epochs=1, n_panels=8)
    bench = run_and_report(config, output_dir=tmp_path / "runs", leaderboard_dir=tmp_path / "board", progress=False)
    records = bench.records.load()
    runs = [_read_when_written(folder) for folder in sorted((bench.folder / "wandb").glob("offline-run-*"))]
    by_name = {run["name"]: run for run in runs}
    group = f"segmentation/{bench.dataset}/quick/{bench.fold_manifest_sha256[:12]}"
    assert all(run["group"] == group and run["project"] == "matcv-segmentation" for run in runs)
    for record in records:
        run = by_name[f"{record['model']}-fold{record['fold']}"]
        assert run["job_type"] == "train"
        assert run["summary"]["test/dice"] == pytest.approx(record["metrics"]["dice"])
        assert run["config"]["model"] == record["model"]
        assert run["config"]["config"]["model"]["args"] == record["config"]["model"]["args"]  # the resolved config
        assert run["config"]["git_commit"] == record["git_commit"]  # provenance
        assert run["config"]["fold_manifest_sha256"] == bench.fold_manifest_sha256
    trained = by_name[f"tiny-unet-fold{records[0]['fold']}"]
    assert "train_loss" in trained["summary"] or any(k.startswith("val_") for k in trained["summary"])  # curves
    board = by_name["leaderboard"]
    assert board["job_type"] == "leaderboard"
    assert board["summary"]["leaderboard/nrows"] == 3  # one row per model
    assert board["summary"]["ranked_by"] == "dice"
