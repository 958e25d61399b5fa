"""`--devices N`: training with DDP (ddp_spawn, gloo on CPU) inside the harness loop."""

from __future__ import annotations

import pytest

from benchmarks.runner import run_benchmark
from tests.conftest import tiny_task_config


@pytest.mark.slow
def test_two_process_ddp_run_is_recorded_and_tested_on_one_device(tmp_path):
    config = tiny_task_config(tmp_path, max_epochs=2)
    bench = run_benchmark(config, models=["tiny-unet"], folds=[0, 1], output_dir=tmp_path / "runs",
                          leaderboard_dir=tmp_path / "board", accelerator="cpu", devices=2, progress=False)
    records = bench.records.load()
    assert [r["status"] for r in records] == ["ok", "ok"], [r.get("traceback") for r in records]
    for record in records:
        assert record["devices"] == 2
        assert len(record["per_image"]) == record["n_items"]["test"]  # every test image scored exactly once
        assert 0.0 <= record["metrics"]["dice"] <= 1.0
        assert 0.0 <= record["best_val"]["val_dice"] <= 1.0  # read back from rank 0's log after the spawn
