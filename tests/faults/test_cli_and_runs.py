"""CLI misuse and the runs it leads to: impossible options fail before any work, failures caused by the options
or the machine do not stick, Ctrl-C says what happens next, and a bench that finishes while another process
still holds runs of the same benchmark says so instead of printing a table as if it were complete.

Everything goes through ``matcv.benchmarks.cli.main`` with argv lists, on the tiny corrosion data with constant
baselines (no training), so each test takes seconds.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from matcv.benchmarks.cli import main as matcv_main
from matcv.benchmarks.harness import run, runner
from matcv.benchmarks.harness.prepare import prepare_benchmark
from matcv.datamodules.core.config import TaskConfig
from matcv.datamodules.core.records import RunClaims, RunRecords, run_key
from matcv.lightning_modules.segmentation import ConstantMaskBaseline
from tests.conftest import tiny_task_config

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BASELINES = {
    "predict-nothing": {"class": "matcv.lightning_modules.segmentation.ConstantMaskBaseline", "args": {"value": 0}},
    "predict-everything": {"class": "matcv.lightning_modules.segmentation.ConstantMaskBaseline", "args": {"value": 1}},
}


class TroubledBaseline(ConstantMaskBaseline):
    """A constant mask that misbehaves while the file ``flag`` exists: ``trouble`` says how (a bug of the model
    itself, the GPU running out of memory, or Ctrl-C inside or outside Lightning's loops, or lost on the way)."""

    def __init__(self, flag: str, trouble: str, value: int = 1) -> None:
        super().__init__(value)
        self.flag, self.trouble = flag, trouble
        if self._troubled("model"):
            raise ValueError("this model is broken while its flag file exists")

    def _troubled(self, kind: str) -> bool:
        return self.trouble == kind and Path(self.flag).exists()

    def fit_baseline(self, datamodule) -> None:
        if self._troubled("oom"):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if self._troubled("ctrl-c-outside"):
            raise KeyboardInterrupt
        if self._troubled("ctrl-c-swallowed"):
            try:  # Ctrl-C, whose KeyboardInterrupt a library then swallows (as C-level I/O callbacks can)
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                pass

    def test_step(self, batch: dict, batch_idx: int) -> None:
        if self._troubled("ctrl-c-in-lightning"):
            raise KeyboardInterrupt
        return super().test_step(batch, batch_idx)


def _troubled_task(tmp_path: Path, trouble: str) -> tuple[Path, Path]:
    flag = tmp_path / "flag"
    flag.touch()
    model = {"class": "tests.faults.test_cli_and_runs.TroubledBaseline",
             "args": {"flag": str(flag), "trouble": trouble}}
    return tiny_task_config(tmp_path, models={**BASELINES, "troubled": model}), flag


def _cli(argv: list[str], capsys) -> tuple[object, str, str]:
    """(exit status, stdout, stderr) of ``matcv ...``; argparse's exit and an escaped Ctrl-C become statuses
    (a KeyboardInterrupt leaving the test would stop the whole pytest session)."""
    try:
        status = matcv_main(argv)
    except SystemExit as exit_:
        status = exit_.code
    except KeyboardInterrupt:
        status = "KeyboardInterrupt escaped"
    out, err = capsys.readouterr()
    return status, out, err


def _bench_argv(task: Path, tmp_path: Path, *options: str) -> list[str]:
    return ["bench", "--task", str(task), "--output", str(tmp_path / "runs"), "--leaderboard-dir",
            str(tmp_path / "board"), "--no-progress", *options]


def _records(tmp_path: Path) -> list[dict]:
    found = list((tmp_path / "runs").glob("*/*/*/records.jsonl"))
    return RunRecords(found[0]).load() if found else []


# --- impossible options: refused before any data is generated or any run starts --------------------------------

REFUSED = {
    "devices-0": (["--devices", "0"], "--devices"),
    "devices-negative": (["--devices", "-1"], "--devices"),
    "unknown-accelerator": (["--accelerator", "nope"], "--accelerator"),
    "parallel-runs-0": (["--parallel-runs", "0"], "--parallel-runs"),
    "parallel-runs-negative": (["--parallel-runs", "-2"], "--parallel-runs"),
    "empty-models": (["--models", ","], "--models"),
    "empty-folds": (["--folds", ","], "--folds"),
    "missing-fold-manifest": (["--fold-manifest", "{tmp}/fm/nonexistent.json"], "nonexistent.json"),
}
if not torch.cuda.is_available():
    REFUSED["cuda-without-a-gpu"] = (["--accelerator", "cuda"], "--accelerator cuda")


@pytest.mark.parametrize("case", list(REFUSED))
def test_impossible_options_fail_before_any_data_or_run(case, tmp_path, monkeypatch, capsys):
    options, named = REFUSED[case]
    options = [o.replace("{tmp}", str(tmp_path)) for o in options]
    cache = tmp_path / "fresh-cache"
    monkeypatch.setenv("MATCV_CACHE_DIR", str(cache))  # data generation would land here
    task = tiny_task_config(tmp_path, models=dict(BASELINES))
    extra = [] if case in ("empty-models", "empty-folds") else ["--models", "predict-nothing", "--folds", "0"]
    if case == "empty-folds":
        extra = ["--models", "predict-nothing"]
    status, out, err = _cli(_bench_argv(task, tmp_path, *extra, *options), capsys)
    assert status == 2, (status, out, err)
    assert named.replace("{tmp}", str(tmp_path)) in err, err
    assert "Traceback" not in err
    assert not cache.exists(), "data was generated before the options were checked"
    assert not list(tmp_path.glob("runs/**/fold_manifest.json")) and not _records(tmp_path)
    assert not (tmp_path / "fm").exists(), "a fold manifest was drawn into the mistyped path"


def test_a_fold_manifest_that_is_a_folder_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MATCV_CACHE_DIR", str(tmp_path / "fresh-cache"))
    task = tiny_task_config(tmp_path, models=dict(BASELINES))
    (tmp_path / "fm").mkdir()
    status, _, err = _cli(_bench_argv(task, tmp_path, "--fold-manifest", str(tmp_path / "fm")), capsys)
    assert status == 2 and str(tmp_path / "fm") in err and "not a file" in err, err
    assert not (tmp_path / "fresh-cache").exists()


def test_run_settings_refuse_impossible_values_for_library_callers():
    for values, named in (({"devices": 0}, "--devices"), ({"accelerator": "nope"}, "auto, cpu"),
                          ({"parallel_runs": 0}, "--parallel-runs"), ({"launcher": "ssh"}, "--launcher")):
        with pytest.raises(ValueError, match=named):
            run.RunSettings(**values)
    with pytest.raises(ValueError) as refused:
        run.RunSettings(parallel_runs=0)
    assert "launcher" not in str(refused.value)  # only what is wrong is named


def test_an_unknown_model_is_still_refused(tmp_path, capsys):
    task = tiny_task_config(tmp_path, models=dict(BASELINES))
    status, _, err = _cli(_bench_argv(task, tmp_path, "--models", "nope"), capsys)
    assert status == 2 and "unknown model(s) ['nope']" in err


# --- failures caused by the options or the machine do not stick ----------------------------------------------

@pytest.mark.parametrize("first, corrected, named", [
    (["--accelerator", "cpu"], ["--accelerator", "auto"], "--accelerator cpu"),
    (["--accelerator", "cpu", "--devices", "2"], ["--accelerator", "cpu"], "--devices 2"),
])
def test_a_run_failed_under_other_options_is_retried_and_says_why(first, corrected, named, tmp_path, capsys):
    task, flag = _troubled_task(tmp_path, "model")
    models = ["--models", "troubled", "--folds", "0"]
    status, out, _ = _cli(_bench_argv(task, tmp_path, *models, *first), capsys)
    assert status == 0 and "troubled fold 0: failed" in out
    # Same options, the failure is the model's own: recorded and skipped, as before.
    status, out, _ = _cli(_bench_argv(task, tmp_path, *models, *first), capsys)
    assert status == 0 and "1 already recorded, 0 to do" in out

    flag.unlink()  # "the model is fixed" is not what brings the retry: the changed options do
    status, out, _ = _cli(_bench_argv(task, tmp_path, *models, *corrected), capsys)
    assert status == 0 and "0 already recorded, 1 to do" in out, out
    line = next(x for x in out.splitlines() if "troubled fold 0:" in x)
    assert ": ok" in line and "retried" in line and named in line, line
    assert [r["status"] for r in _records(tmp_path)] == ["failed", "ok"]


@pytest.mark.parametrize("cause", ["oom", "trainer-setup"])
def test_an_environment_failure_is_retried_with_the_same_options(cause, tmp_path, monkeypatch, capsys):
    task, flag = _troubled_task(tmp_path, cause)
    argv = _bench_argv(task, tmp_path, "--models", "troubled", "--folds", "0", "--accelerator", "cpu")
    if cause == "trainer-setup":  # as Lightning refuses a device it cannot use when the Trainer is built
        from lightning.fabric.utilities.exceptions import MisconfigurationException

        def no_device(*_, **__):
            raise MisconfigurationException("`CUDAAccelerator` can not run on your system")

        monkeypatch.setattr(run.L, "Trainer", no_device)
    status, out, _ = _cli(argv, capsys)
    assert status == 0 and "troubled fold 0: failed" in out
    assert _records(tmp_path)[-1]["failure_cause"] == "environment"

    monkeypatch.undo()
    flag.unlink()
    status, out, _ = _cli(argv, capsys)
    assert status == 0 and "1 to do" in out, out
    line = next(x for x in out.splitlines() if "troubled fold 0:" in x)
    assert ": ok" in line and "retried" in line and "environment" in line, line


def test_a_model_failure_stays_recorded_until_retry_failed(tmp_path, capsys):
    task, flag = _troubled_task(tmp_path, "model")
    argv = _bench_argv(task, tmp_path, "--models", "troubled", "--folds", "0", "--accelerator", "cpu")
    assert _cli(argv, capsys)[0] == 0
    assert _records(tmp_path)[-1]["failure_cause"] == "run"
    flag.unlink()
    status, out, _ = _cli(argv, capsys)
    assert status == 0 and "1 already recorded, 0 to do" in out
    status, out, _ = _cli(argv + ["--retry-failed"], capsys)
    line = next(x for x in out.splitlines() if "troubled fold 0:" in x)
    assert status == 0 and ": ok" in line and "--retry-failed" in line, line


# --- Ctrl-C ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["ctrl-c-in-lightning", "ctrl-c-outside", "ctrl-c-swallowed"])
def test_ctrl_c_says_the_run_will_be_redone_and_records_nothing(where, tmp_path, capsys):
    task, flag = _troubled_task(tmp_path, where)
    argv = _bench_argv(task, tmp_path, "--models", "predict-nothing,troubled", "--folds", "0", "--accelerator", "cpu")
    status, out, err = _cli(argv, capsys)
    assert status == 130, (status, out, err)
    assert "interrupted" in err and "troubled fold 0" in err and "redone" in err and "matcv bench" in err, err
    assert "Traceback" not in err + out
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Lightning's SIG_IGN is undone
    records = _records(tmp_path)
    assert [r["model"] for r in records] == ["predict-nothing"]  # the finished run is kept, the other not recorded
    folder = next((tmp_path / "runs").glob("*/*/*/records.jsonl")).parent
    key = run_key("troubled", 0, TaskConfig.load(task).runs("quick", ["troubled"], [0])[0].config_hash,
                  records[0]["fold_manifest_sha256"], records[0]["data_sha256"])
    with RunClaims(folder).claim(key) as held:
        assert held, "the interrupted run's claim was not released"

    flag.unlink()
    status, out, _ = _cli(argv, capsys)
    assert status == 0 and "1 already recorded, 1 to do" in out
    assert sorted((r["model"], r["status"]) for r in _records(tmp_path)) == [("predict-nothing", "ok"),
                                                                              ("troubled", "ok")]


# --- a benchmark shared with another process --------------------------------------------------------------------

def _hold_claim(path: Path) -> subprocess.Popen:
    """Another process holding one run's claim (as a second `matcv bench` training it would)."""
    code = ("import sys; from filelock import FileLock; lock = FileLock(sys.argv[1], timeout=0); lock.acquire(); "
            "print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def _claim_path(task: Path, tmp_path: Path, model: str, fold: int) -> Path:
    config = TaskConfig.load(task)
    bench = prepare_benchmark(config, "quick", None, tmp_path / "runs", progress=False)
    spec = config.runs("quick", [model], [fold])[0]
    key = run_key(model, fold, spec.config_hash, bench.fold_manifest_sha256, bench.data_sha256)
    path = RunClaims(bench.folder).path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_a_bench_done_while_another_process_runs_says_so_instead_of_a_table(tmp_path, capsys):
    task = tiny_task_config(tmp_path, models=dict(BASELINES))
    argv = _bench_argv(task, tmp_path, "--folds", "0", "--accelerator", "cpu")
    holder = _hold_claim(_claim_path(task, tmp_path, "predict-everything", 0))
    try:
        status, out, _ = _cli(argv, capsys)
    finally:
        holder.communicate("")
    assert status == 0
    assert "1 run is still running in another process" in out and "when it finishes" in out, out
    assert "| predict-nothing" not in out and not list((tmp_path / "board").glob("*.md")), \
        "a table was written as if the benchmark were complete"

    status, out, _ = _cli(argv, capsys)  # the other process is gone without a record: this one runs it
    assert status == 0 and "still running" not in out
    assert "predict-everything" in next((tmp_path / "board").glob("*.md")).read_text()


def test_a_run_skipped_for_a_claim_that_was_then_dropped_is_run_after_all(tmp_path, monkeypatch, capsys):
    """The other process let go of a run without recording it (it was killed): nothing is lost, this one runs it."""
    task = tiny_task_config(tmp_path, models=dict(BASELINES))
    holder = _hold_claim(_claim_path(task, tmp_path, "predict-nothing", 0))
    real = runner.run_claimed

    def killed_holder_after_first_skip(bench, spec, key, *args, **kwargs):
        outcome = real(bench, spec, key, *args, **kwargs)
        if outcome["outcome"] == "claimed" and holder.poll() is None:
            holder.kill()
            holder.wait()
        return outcome

    monkeypatch.setattr(runner, "run_claimed", killed_holder_after_first_skip)
    status, out, _ = _cli(_bench_argv(task, tmp_path, "--folds", "0", "--accelerator", "cpu"), capsys)
    assert status == 0, out
    assert "another process is running it" in out and "still running" not in out
    assert sorted((r["model"], r["status"]) for r in _records(tmp_path)) == [("predict-everything", "ok"),
                                                                              ("predict-nothing", "ok")]
    assert "predict-nothing" in next((tmp_path / "board").glob("*.md")).read_text()
