"""Scale-out: claims, concurrent record writers, --parallel-runs workers and the submitit local launcher.

Spawned workers and submitit jobs are fresh interpreters (torch + Lightning imports take seconds on a small
CPU), so the fast tests keep them to a few baseline runs; the heavier checks are marked slow.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from matcv.benchmarks.harness import run, runner
from matcv.benchmarks.harness.prepare import Benchmark, prepare_benchmark
from matcv.benchmarks.harness.run import RunSettings
from matcv.benchmarks.cli import main as matcv_main
from matcv.datamodules.core.config import TaskConfig
from matcv.datamodules.core.records import RunClaims, RunRecords
from tests.conftest import tiny_task_config

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BASELINES = {
    "predict-nothing": {"class": "matcv.lightning_modules.segmentation.ConstantMaskBaseline", "args": {"value": 0}},
    "predict-everything": {"class": "matcv.lightning_modules.segmentation.ConstantMaskBaseline", "args": {"value": 1}},
}


class CrashingModel:
    """A "model" whose process dies outright when it is built (as a segfault or an OOM kill would)."""

    def __init__(self, **_):
        os._exit(3)


def _python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory):
    """The tiny segmentation data and fold manifest with baseline models only (no training)."""
    tmp = tmp_path_factory.mktemp("scale")
    config = TaskConfig.load(tiny_task_config(tmp, models=dict(BASELINES)))
    return config, tmp


def _fresh_bench(config: TaskConfig, output: Path) -> Benchmark:
    return prepare_benchmark(config, "quick", None, output, progress=False)


def test_benchmark_pickles_as_paths_and_reopens_its_records(tiny_bench, tmp_path):
    config, _ = tiny_bench
    bench = _fresh_bench(config, tmp_path / "runs")
    bench.records.append({"key": "a", "status": "ok"})
    copy = pickle.loads(pickle.dumps(bench))
    assert copy.records.path == bench.records.path and copy.config.raw == config.raw
    copy.records.append({"key": "b", "status": "failed"})  # its lock was re-made on arrival
    assert [r["key"] for r in bench.records.load()] == ["a", "b"]


APPEND_SCRIPT = """
import sys
from matcv.datamodules.core.records import RunRecords
records = RunRecords(sys.argv[1])
writer = int(sys.argv[2])
for i in range(50):
    records.append({"key": f"w{writer}-{i}", "status": "ok", "payload": str(writer) * (20000 + 37 * i)})
"""


def test_concurrent_appends_keep_every_line_whole_and_unique(tmp_path):
    """4 processes x 50 records of ~20-22 kB each, all at once: 200 whole, distinct lines come back."""
    path = tmp_path / "records.jsonl"
    writers = [_python(APPEND_SCRIPT, str(path), str(w)) for w in range(4)]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
    lines = path.read_text().splitlines()
    assert len(lines) == 200
    records = [json.loads(line) for line in lines]  # every line whole: any torn one would not parse
    keys = [r["key"] for r in records]
    assert len(set(keys)) == 200 and set(keys) == {f"w{w}-{i}" for w in range(4) for i in range(50)}
    for record in records:
        writer, i = record["key"][1:].split("-")
        assert record["payload"] == writer * (20000 + 37 * int(i))
    # each writer's own records stay in its order (append-only, one write per record)
    for w in range(4):
        mine = [int(k.split("-")[1]) for k in keys if k.startswith(f"w{w}-")]
        assert mine == sorted(mine)


CLAIM_SCRIPT = """
import sys, time
from matcv.datamodules.core.records import RunClaims
with RunClaims(sys.argv[1]).claim(sys.argv[2]) as held:
    print(held, flush=True)
    if len(sys.argv) > 3:
        time.sleep(float(sys.argv[3]))
"""


def test_a_claim_is_exclusive_between_processes_and_dies_with_its_holder(tmp_path):
    claims = RunClaims(tmp_path)
    with claims.claim("tiny-unet|fold0|abc") as held:
        assert held
        other = _python(CLAIM_SCRIPT, str(tmp_path), "tiny-unet|fold0|abc")
        assert other.communicate(timeout=60)[0].strip() == "False"
        with claims.claim("tiny-unet|fold0|abc") as again:  # a second claim in this process (another thread)
            assert not again
        with claims.claim("tiny-unet|fold1|abc") as different:
            assert different
    other = _python(CLAIM_SCRIPT, str(tmp_path), "tiny-unet|fold0|abc")
    assert other.communicate(timeout=60)[0].strip() == "True"

    # A holder killed with SIGKILL leaves no stale claim: the kernel drops its lock.
    holder = _python(CLAIM_SCRIPT, str(tmp_path), "tiny-unet|fold0|abc", "120")
    assert holder.stdout.readline().strip() == "True"
    with claims.claim("tiny-unet|fold0|abc") as held:
        assert not held
    holder.kill()
    holder.wait()
    with claims.claim("tiny-unet|fold0|abc") as held:
        assert held


def test_concurrent_run_alls_never_run_one_key_twice(tiny_bench, tmp_path, monkeypatch, capsys):
    """Three harness loops on one benchmark at once (as three `matcv bench` would be): every run exactly once."""
    config, _ = tiny_bench
    bench = _fresh_bench(config, tmp_path / "runs")
    runs = config.runs("quick")
    executed: list[str] = []

    def slow_fake_execute(bench_, spec, key, accelerator, devices, progress):
        executed.append(key)
        time.sleep(0.1)  # long enough for the other loops to find the claim held
        return {"key": key, "model": spec.model, "fold": spec.fold, "status": "ok", "metrics": {"dice": 0.5},
                "durations": {"total_s": 0.1}}

    monkeypatch.setattr(run, "execute_run", slow_fake_execute)
    settings = RunSettings(accelerator="cpu", progress=False)
    loops = [threading.Thread(target=runner.run_all, args=(bench, runs, settings)) for _ in range(3)]
    for loop in loops:
        loop.start()
    for loop in loops:
        loop.join(timeout=120)
    keys = [r["key"] for r in bench.records.load()]
    assert len(runs) == 6 and len(keys) == len(set(keys)) == 6
    assert Counter(executed) == Counter(keys)  # each key executed once, by whichever loop claimed it
    out = capsys.readouterr().out
    assert "another process is running it" in out or "recorded by another process" in out


def test_parallel_runs_record_every_run_once_and_a_failure_stays_its_own(tiny_bench, tmp_path, capsys):
    """--parallel-runs 2: two spawned workers; a run that fails is recorded failed, the others are ok;
    a re-run finds them all recorded and starts no worker."""
    models = {**BASELINES, "no-such-model": {"class": "matcv.lightning_modules.segmentation.NoSuchModel", "args": {}}}
    task = tiny_task_config(tmp_path, models=models)
    runs = TaskConfig.load(task).runs("quick", ["predict-nothing", "no-such-model", "predict-everything"], [0])
    bench = _fresh_bench(TaskConfig.load(task), tmp_path / "runs")
    runner.run_all(bench, runs, RunSettings(accelerator="cpu", progress=False, parallel_runs=2))
    records = {r["model"]: r for r in bench.records.load()}
    assert len(bench.records.load()) == 3
    assert records["predict-nothing"]["status"] == records["predict-everything"]["status"] == "ok"
    assert records["no-such-model"]["status"] == "failed" and "NoSuchModel" in records["no-such-model"]["error"]
    assert records["predict-everything"]["metrics"]["dice"] > 0
    first = capsys.readouterr().out
    assert "3 to do, 2 at once" in first and first.count("[matcv] run ") == 3

    runner.run_all(bench, runs, RunSettings(accelerator="cpu", progress=False, parallel_runs=2))
    assert "3 already recorded, 0 to do" in capsys.readouterr().out
    assert len(bench.records.load()) == 3


def test_submitit_local_launcher_completes_and_a_rerun_submits_nothing(tiny_bench, tmp_path, capsys):
    task = tiny_task_config(tmp_path, models=dict(BASELINES))
    argv = ["bench", "--task", str(task), "--models", "predict-nothing,predict-everything", "--folds", "0",
            "--output", str(tmp_path / "runs"), "--leaderboard-dir", str(tmp_path / "board"), "--no-progress",
            "--accelerator", "cpu", "--launcher", "local", "--parallel-runs", "2"]
    assert matcv_main(argv) == 0
    out = capsys.readouterr().out
    assert "submitted 2 local job(s)" in out
    records_path = next((tmp_path / "runs").glob("*/*/*/records.jsonl"))
    records = RunRecords(records_path).load()
    assert sorted(r["model"] for r in records) == ["predict-everything", "predict-nothing"]
    assert all(r["status"] == "ok" for r in records), [r.get("error") for r in records]
    jobs_folder = records_path.parent / "slurm"
    submitted = sorted(jobs_folder.glob("*_submitted.pkl"))
    assert len(submitted) == 2 and len(list(jobs_folder.glob("*_result.pkl"))) == 2
    assert "predict-everything" in next((tmp_path / "board").glob("*.md")).read_text()

    assert matcv_main(argv) == 0  # the re-run: everything recorded, no job submitted
    out = capsys.readouterr().out
    assert "2 already recorded, 0 to do" in out and "submitted" not in out
    assert sorted(jobs_folder.glob("*_submitted.pkl")) == submitted
    assert len(RunRecords(records_path).load()) == 2


@pytest.mark.slow
def test_a_crashed_worker_is_recorded_failed_and_replaced(tiny_bench, tmp_path, capsys):
    models = {**BASELINES, "crashing": {"class": "tests.test_scale_out.CrashingModel", "args": {}}}
    task = tiny_task_config(tmp_path, models=models)
    config = TaskConfig.load(task)
    bench = _fresh_bench(config, tmp_path / "runs")
    runs = config.runs("quick", ["crashing", "predict-nothing", "predict-everything"], [0, 1])
    runner.run_all(bench, runs, RunSettings(accelerator="cpu", progress=False, parallel_runs=2))
    records = bench.records.load()
    assert len(records) == len({r["key"] for r in records}) == 6
    for record in records:
        if record["model"] == "crashing":
            assert record["status"] == "failed" and "worker process died (exit code 3)" in record["error"]
        else:
            assert record["status"] == "ok", record.get("error")
    assert capsys.readouterr().out.count("worker process died") == 2


@pytest.mark.slow
def test_two_matcv_bench_processes_on_one_folder_split_the_runs(tiny_bench, tmp_path):
    """Two real `matcv bench` started together (sequential loops): every run recorded exactly once."""
    task = tiny_task_config(tmp_path, models=dict(BASELINES))
    prepare_benchmark(TaskConfig.load(task), "quick", None, tmp_path / "runs", progress=False)  # manifest
    command = [sys.executable, "-m", "matcv.benchmarks.cli", "bench", "--task", str(task), "--output",
               str(tmp_path / "runs"), "--leaderboard-dir", str(tmp_path / "board"), "--no-progress",
               "--accelerator", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True, env=env) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    records = RunRecords(next((tmp_path / "runs").glob("*/*/*/records.jsonl"))).load()
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)) == 6 and all(r["status"] == "ok" for r in records)
    ran = sum(out.count(": ok - ") for out in outputs)
    assert ran == 6  # the runs one process skipped (claimed or already recorded), the other one ran


def test_slurm_executor_gets_the_cli_options(tmp_path, monkeypatch):
    """--slurm-* options reach the sbatch script (a stub `srun` stands in for a cluster)."""
    from matcv.benchmarks.harness.scale_out import make_executor

    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "srun").write_text("#!/bin/sh\nexit 0\n")
    (stub / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub}{os.pathsep}{os.environ['PATH']}")
    bench = type("B", (), {"folder": tmp_path / "bench", "config": type("C", (), {"task": "segmentation"})()})()
    options = {"partition": "gpu", "time_min": 30, "gpus_per_node": None, "cpus_per_task": 8}
    executor = make_executor(bench, "slurm", options, "gpu", 2, 3)
    script = executor._executor._make_submission_file_text("python -u -m x", "uid")
    for line in ("--partition=gpu", "--time=30", "--gpus-per-node=2", "--cpus-per-task=8", "--ntasks-per-node=1"):
        assert f"#SBATCH {line}" in script
    assert executor._executor.parameters["array_parallelism"] == 3
    assert str(tmp_path / "bench" / "slurm") in script
