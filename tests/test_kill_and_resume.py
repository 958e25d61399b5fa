"""Killing a benchmark half way (SIGKILL, mid-run) and re-running finishes it without duplicates."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from matcv.datamodules.core.records import RunRecords
from tests.conftest import tiny_task_config

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def test_sigkill_mid_run_then_rerun_completes_every_run_once(tmp_path):
    config = tiny_task_config(tmp_path, max_epochs=3)
    command = [sys.executable, "-m", "matcv.benchmarks.cli", "bench", "--task", str(config), "--output",
               str(tmp_path / "runs"), "--leaderboard-dir", str(tmp_path / "board"), "--no-progress"]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    records_path = None
    try:
        while time.time() < deadline and process.poll() is None:
            found = list((tmp_path / "runs").glob("*/*/*/records.jsonl"))
            if found and found[0].read_text().count("\n") >= 1:
                records_path = found[0]
                break
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)  # mid-way through the second run (tiny-unet, fold 1)
        process.wait()
    assert records_path is not None, "the benchmark never recorded its first run"
    killed_with = len(RunRecords(records_path).load())
    assert 1 <= killed_with < 9

    subprocess.run(command, cwd=PROJECT_ROOT, check=True, timeout=600, capture_output=True)
    records = RunRecords(records_path).load()
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)) == 9
    assert all(r["status"] == "ok" for r in records)
    assert sorted((r["model"], r["fold"]) for r in records) == sorted(
        (m, f) for m in ("tiny-unet", "predict-nothing", "predict-everything") for f in range(3))
