"""Real `matcv bench` processes killed or interrupted at every phase, and two benches on one folder.

Each test starts the CLI as a subprocess on the tiny corrosion data (a tiny UNet that trains, and the two constant
floors), acts at the moment a file of the phase appears, then checks what a user would see and that the next
bench completes every run exactly once. Minutes in all: marked slow.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from matcv.datamodules.core.records import RunRecords
from tests.conftest import tiny_task_config

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODELS = ("tiny-unet", "predict-nothing", "predict-everything")


def _command(task: Path, tmp_path: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "matcv.benchmarks.cli", "bench", "--task", str(task), "--output",
            str(tmp_path / "runs"), "--leaderboard-dir", str(tmp_path / "board"), "--no-progress",
            "--accelerator", "cpu", *options]


def _env(**extra: str) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MATCV_WANDB": "off", **extra}


def _start(command: list[str], env: dict, new_session: bool = False) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=new_session)


def _wait_for(process: subprocess.Popen, ready, timeout: float = 400.0, poll_s: float = 0.001) -> bool:
    """Poll until ``ready()`` (True) or the process ends (False)."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if ready():
            return True
        time.sleep(poll_s)
    return False


def _run_dir_file(tmp_path: Path, relative: str):
    return lambda: any((tmp_path / "runs").glob(f"*/*/*/{relative}"))


def _records(tmp_path: Path) -> list[dict]:
    found = list((tmp_path / "runs").glob("*/*/*/records.jsonl"))
    return RunRecords(found[0]).load() if found else []


def _assert_complete(tmp_path: Path, models=MODELS, folds=range(3)) -> None:
    records = _records(tmp_path)
    keys = [r["key"] for r in records if r["status"] == "ok"]
    assert len(keys) == len(set(keys)) == len(models) * len(folds), [(r["model"], r["fold"]) for r in records]
    assert sorted((r["model"], r["fold"]) for r in records if r["status"] == "ok") == sorted(
        (m, f) for m in models for f in folds)
    table = next((tmp_path / "board").glob("*.md")).read_text()
    assert all(model in table for model in models)


def _images_written(cache: Path):
    return lambda: any(cache.glob("**/images/*.png"))


PHASES = {
    # the moment to kill at: the first file that shows the phase has begun
    "data-generation": None,  # set per test: an image of the fresh cache
    "fold-manifest-written": "fold_manifest.json",
    "mid-training": "tiny-unet/fold-1/checkpoints/best.ckpt",  # after its first epoch
    "figure-written-record-not-yet": "tiny-unet/fold-1/test_examples.png",
}


@pytest.mark.parametrize("phase", list(PHASES))
def test_sigkill_at_every_phase_then_one_rerun_completes_every_run_once(phase, tmp_path):
    task = tiny_task_config(tmp_path, max_epochs=3, n_panels=30 if phase == "data-generation" else 9)
    cache = tmp_path / "cache"
    env = _env(MATCV_CACHE_DIR=str(cache))
    ready = _images_written(cache) if PHASES[phase] is None else _run_dir_file(tmp_path, PHASES[phase])
    process = _start(_command(task, tmp_path), env)
    try:
        hit = _wait_for(process, ready)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    assert hit, f"the bench ended before the phase {phase!r} could be caught"
    killed_with = _records(tmp_path)
    if phase in ("data-generation", "fold-manifest-written"):
        assert not killed_with
    elif phase == "mid-training":  # the killed run (tiny-unet fold 1) has no record, the ones before it have
        assert ("tiny-unet", 1) not in {(r["model"], r["fold"]) for r in killed_with} and killed_with
    else:  # the record follows the figure within milliseconds: the kill may land on either side of it
        assert killed_with

    rerun = subprocess.run(_command(task, tmp_path), cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    _assert_complete(tmp_path)
    if phase == "data-generation":  # regenerated, not half-kept: the same data as an uninterrupted generation
        fresh = tmp_path / "fresh"
        clean = subprocess.run(_command(task, fresh, "--models", "predict-nothing", "--folds", "0"),
                               cwd=PROJECT_ROOT, env=_env(MATCV_CACHE_DIR=str(fresh / "cache")),
                               capture_output=True, text=True, timeout=600)
        assert clean.returncode == 0, clean.stderr[-3000:]
        assert {r["data_sha256"] for r in _records(tmp_path)} == {r["data_sha256"] for r in _records(fresh)}


def test_ctrl_c_mid_training_says_the_run_will_be_redone(tmp_path):
    task = tiny_task_config(tmp_path, max_epochs=20)
    command = _command(task, tmp_path, "--models", "tiny-unet,predict-nothing", "--folds", "0,1")
    process = _start(command, _env())
    try:
        hit = _wait_for(process, _run_dir_file(tmp_path, "tiny-unet/fold-0/checkpoints/best.ckpt"))  # epoch 1 of 20
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert hit
    assert process.returncode == 130, (out, err)
    assert "interrupted (Ctrl-C) during tiny-unet fold 0" in err and "redone by the next `matcv bench`" in err, err
    assert "Traceback" not in err, err
    assert {(r["model"], r["fold"]) for r in _records(tmp_path)} == {("predict-nothing", 0), ("predict-nothing", 1)}

    rerun = subprocess.run(command, cwd=PROJECT_ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    _assert_complete(tmp_path, models=("tiny-unet", "predict-nothing"), folds=range(2))


def test_ctrl_c_to_the_terminal_group_with_parallel_workers(tmp_path):
    """Ctrl-C reaches the parent and its workers: one message from the parent, no worker traceback, no record of
    the runs in progress; the rerun completes."""
    task = tiny_task_config(tmp_path, max_epochs=20)
    command = _command(task, tmp_path, "--models", "tiny-unet", "--folds", "0,1", "--parallel-runs", "2")
    process = _start(command, _env(), new_session=True)
    try:
        hit = _wait_for(process, _run_dir_file(tmp_path, "tiny-unet/fold-*/checkpoints/best.ckpt"))
        os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert hit
    assert process.returncode == 130, (out, err)
    assert "interrupted (Ctrl-C) during tiny-unet fold" in err and "redone" in err, err
    assert "Traceback" not in err, err
    recorded = {f"tiny-unet fold {r['fold']}" for r in _records(tmp_path)}
    stopped = err.split("during ")[1].split(":")[0].split(", ")
    assert stopped and not recorded & set(stopped), (recorded, err)  # what is said to be redone has no record

    rerun = subprocess.run(command, cwd=PROJECT_ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    _assert_complete(tmp_path, models=("tiny-unet",), folds=range(2))


def test_the_bench_that_finishes_first_says_the_other_still_runs_and_writes_no_table(tmp_path):
    task = tiny_task_config(tmp_path, max_epochs=40)
    trainer = _start(_command(task, tmp_path), _env())
    try:
        assert _wait_for(trainer, _run_dir_file(tmp_path, "tiny-unet/fold-0/checkpoints/best.ckpt"))
        quick = subprocess.run(_command(task, tmp_path, "--models", "predict-nothing,predict-everything"),
                               cwd=PROJECT_ROOT, env=_env(), capture_output=True, text=True, timeout=600)
        still_training = trainer.poll() is None
        out, err = trainer.communicate(timeout=900)
    finally:
        if trainer.poll() is None:
            trainer.kill()
    assert still_training, "the training bench ended before the other one: nothing to check"
    assert quick.returncode == 0, quick.stderr[-3000:]
    assert "still running in another process" in quick.stdout and "when it finishes" in quick.stdout, quick.stdout
    assert "| predict-" not in quick.stdout and "| tiny-unet" not in quick.stdout, quick.stdout  # no table
    assert trainer.returncode == 0, err[-3000:]
    assert "still running" not in out and "| tiny-unet |" in out, out  # the complete table, from the last one
    _assert_complete(tmp_path)
