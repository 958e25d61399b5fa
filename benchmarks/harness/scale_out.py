"""Scale-out of the harness: several model x fold runs at once, in worker processes or as submitit jobs.

``--parallel-runs K`` (``run_parallel``): K long-lived worker processes (spawn), each with one GPU of its own
(``CUDA_VISIBLE_DEVICES`` set before torch starts) or, on CPU, ``cores // K`` torch threads. The parent hands
each idle worker the next pending run; the worker claims it, runs it and appends its record itself (so a
parent killed half way loses nothing that finished), then sends a small outcome back for the progress line.
A worker that dies (segfault, out-of-memory kill) gets its run recorded as failed and is replaced; the others
go on.

``--launcher slurm|local`` (``launch_runs``): one submitit job per pending model x fold, each calling
``workers.run_job`` (a top-level function with picklable arguments: the ``Benchmark`` pickles as paths and the
config's dict). ``local`` is submitit's ``LocalExecutor`` (real subprocesses on this machine, at most K at
once); ``slurm`` submits a job array (``--parallel-runs K`` caps how many run at once). This process waits
for the jobs, prints a line per finished job, and the caller writes the leaderboard as usual.

Every path goes through ``run.run_claimed``: claim (``records.RunClaims``), re-check the records, run,
append. Records stay append-only under their lock, so concurrent writers never tear or lose a line, and no
key is run twice at the same time whoever started the processes (a re-submitted job, a second ``matcv bench``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import sys
import time
from collections import deque
from collections.abc import Iterator
from datetime import datetime, timezone

import submitit
import torch

from matcv.benchmarks.harness.prepare import Benchmark
from matcv.benchmarks.harness.run import LAUNCHERS, RunInterrupted, RunSettings, failed_record, run_outcome
from matcv.benchmarks.harness.workers import run_job, worker_main
from matcv.datamodules.core.config import RunSpec
from matcv.datamodules.core.records import RunClaims

Pending = list[tuple[int, RunSpec, str]]  # (run number, spec, key)


def available_cpus() -> int:
    """Cores this process may use (its affinity mask: a Slurm allocation or taskset, not the whole node)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _uses_gpus(accelerator: str) -> bool:
    if accelerator == "cpu":
        return False
    return accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()


def worker_settings(accelerator: str, devices: int, workers: int) -> tuple[list[dict], int]:
    """(environment of each worker, torch threads per training process).

    GPUs: worker w sees the w-th group of ``devices`` GPUs (of those this process may see) and nothing else.
    CPU: the cores are split between the workers (and their DDP processes, if ``devices`` > 1). Without the
    split every process would start one torch thread per core, K x cores threads fighting over the cores;
    on a small CPU oversubscribed torch (OpenMP) threads spin and wait for each other and run several times
    slower than the same work done one run after the other.
    """
    if _uses_gpus(accelerator):
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = [x.strip() for x in visible.split(",") if x.strip()] if visible else \
            [str(i) for i in range(torch.cuda.device_count())]
        if workers * devices > len(ids):
            raise ValueError(f"--parallel-runs {workers} x --devices {devices} needs {workers * devices} GPUs; "
                             f"{len(ids)} visible ({','.join(ids)})")
        envs = [{"CUDA_VISIBLE_DEVICES": ",".join(ids[w * devices:(w + 1) * devices])} for w in range(workers)]
        return envs, max(1, available_cpus() // workers)
    threads = max(1, available_cpus() // (workers * max(1, devices)))
    # OMP_NUM_THREADS also reaches DDP's spawned processes (Lightning keeps it when it is set).
    return [{"OMP_NUM_THREADS": str(threads)} for _ in range(workers)], threads


def run_parallel(bench: Benchmark, pending: Pending, settings: RunSettings,
                 seen: dict[str, int] | None = None) -> Iterator[tuple[int, RunSpec, dict]]:
    """Run ``pending`` in ``settings.parallel_runs`` worker processes; yield (number, spec, outcome) as runs
    finish. ``seen``: how many records each key had when the runs were planned (``run.run_claimed``).

    Workers ignore Ctrl-C; this process stops them and raises ``run.RunInterrupted`` naming their runs."""
    seen = seen or {}
    if not pending:
        return
    accelerator, devices, retry_failed = settings.accelerator, settings.devices, settings.retry_failed
    parallel_runs = settings.parallel_runs
    n_workers = min(parallel_runs, len(pending))
    envs, threads = worker_settings(accelerator, devices, n_workers)
    ctx = mp.get_context("spawn")  # fresh interpreters: no CUDA context or Lightning state copied from here
    results = ctx.Queue()
    workers: dict[int, tuple] = {}  # slot -> (process, inbox)
    busy: dict[int, tuple] = {}  # slot -> (number, spec, key, started)
    todo = deque(pending)

    def start(slot: int) -> None:
        inbox = ctx.Queue()
        process = ctx.Process(target=worker_main, args=(envs[slot], threads, inbox, results, os.getpid()),
                              name=f"matcv-run-worker-{slot}")
        process.start()
        workers[slot] = (process, inbox)

    try:
        for slot in range(n_workers):
            start(slot)
        while todo or busy:
            for slot, (_, inbox) in workers.items():
                if slot not in busy and todo:
                    number, spec, key = todo.popleft()
                    inbox.put((number, bench, spec, key, accelerator, devices, retry_failed, seen.get(key)))
                    busy[slot] = (number, spec, key, time.time())
            try:
                number, outcome = results.get(timeout=1.0)
            except queue.Empty:
                for slot, (process, _) in list(workers.items()):
                    if process.is_alive():
                        continue
                    del workers[slot]
                    if slot in busy:  # died on a run: record it as failed, replace the worker
                        number, spec, key, started = busy.pop(slot)
                        error = f"worker process died (exit code {process.exitcode}) during the run"
                        yield number, spec, _record_lost_run(bench, spec, key, accelerator, devices, error, started)
                        if todo:
                            start(slot)
                if not workers and todo:
                    raise RuntimeError(f"every run worker exited; {len(todo)} run(s) not started (see stderr)")
                continue
            for slot, (n, spec, _, _) in list(busy.items()):
                if n == number:  # else a late message of a run already accounted for as lost
                    del busy[slot]
                    yield number, spec, outcome
    except KeyboardInterrupt:
        # Stop the runs in progress at once (their claims go with their workers), then name those left without a
        # record: a run that got its record out just before is not one to redo.
        stopping = [workers[slot][0] for slot in busy if slot in workers]
        for process in stopping:
            process.terminate()
        for process in stopping:
            process.join()
        counts: dict[str, int] = {}
        for record in bench.records.load():
            counts[record.get("key")] = counts.get(record.get("key"), 0) + 1
        raise RunInterrupted([spec.label for _, spec, key, _ in busy.values()
                              if counts.get(key, 0) <= seen.get(key, 0)]) from None
    finally:
        for process, inbox in workers.values():
            if process.is_alive():
                inbox.put(None)
        for process, _ in workers.values():
            process.join(timeout=30 if not busy else 1)
            if process.is_alive():  # interrupted mid-run: its claim goes with it, a re-run redoes the run
                process.terminate()
                process.join()


def _record_lost_run(bench: Benchmark, spec: RunSpec, key: str, accelerator: str, devices: int, error: str,
                     started: float) -> dict:
    """A run whose process died: record it as failed - unless it got its record out, or someone runs it now."""
    with RunClaims(bench.folder).claim(key) as held:
        if not held:
            return {"outcome": "claimed"}
        for record in reversed(bench.records.load()):
            if record["key"] == key and (record.get("status") == "ok" or record.get("started_at", "") >= _iso(started - 1)):
                return run_outcome(record)
        record = failed_record(bench, spec, key, accelerator, devices, error, started)
        bench.records.append(record)
        return run_outcome(record)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


# --- submitit: one job per model x fold --------------------------------------------------------------------------

def make_executor(bench: Benchmark, launcher: str, options: dict, accelerator: str, devices: int,
                  parallel_runs: int):
    """A submitit executor writing to ``<benchmark folder>/slurm``, parameters from the CLI's --slurm-* options."""
    if launcher not in ("local", "slurm"):
        raise ValueError(f"unknown launcher {launcher!r}; choose one of {', '.join(LAUNCHERS)}")
    try:
        executor = submitit.AutoExecutor(folder=bench.folder / "slurm", cluster=launcher)
    except RuntimeError as error:  # no srun here
        raise ValueError(f"--launcher {launcher}: {error} (--launcher local runs the jobs on this machine)") from error
    gpus = options.get("gpus_per_node")
    if gpus is None:
        gpus = devices if accelerator != "cpu" and (launcher == "slurm" or _uses_gpus(accelerator)) else 0
    parameters = {"name": f"matcv-{bench.config.task}", "timeout_min": int(options.get("time_min") or 240),
                  "nodes": 1, "tasks_per_node": 1, "gpus_per_node": gpus}
    if options.get("cpus_per_task"):
        parameters["cpus_per_task"] = int(options["cpus_per_task"])
    if launcher == "slurm":
        if options.get("partition"):
            parameters["slurm_partition"] = options["partition"]
        if parallel_runs > 1:
            parameters["slurm_array_parallelism"] = parallel_runs
    executor.update_parameters(**parameters)
    return executor


def launch_runs(bench: Benchmark, pending: Pending, settings: RunSettings, poll_s: float | None = None,
                seen: dict[str, int] | None = None) -> Iterator[tuple[int, RunSpec, dict]]:
    """Submit one job per pending run (``settings.launcher``) and wait for them; yield (number, spec, outcome) as
    jobs finish. ``seen``: how many records each key had when the runs were planned (``run.run_claimed``).

    Nothing pending, nothing submitted (a re-run of a finished benchmark submits no job). Ctrl-C raises
    ``run.RunInterrupted``: local jobs are cancelled, Slurm jobs go on.
    """
    seen = seen or {}
    if not pending:
        return
    accelerator, devices, retry_failed = settings.accelerator, settings.devices, settings.retry_failed
    launcher, options, parallel_runs = settings.launcher, settings.launcher_options, settings.parallel_runs
    executor = make_executor(bench, launcher, options, accelerator, devices, parallel_runs)
    local = launcher == "local"
    # Local jobs share this machine: at most K at once, cores split between them like --parallel-runs.
    window = max(1, parallel_runs) if local else len(pending)
    threads = worker_settings("cpu", devices, window)[1] if local and not _uses_gpus(accelerator) else \
        options.get("cpus_per_task")
    poll_s = poll_s if poll_s is not None else (0.5 if local else 15.0)
    todo = deque(pending)
    running: dict = {}  # job -> (number, spec, key, submitted)

    def submit(items: list) -> None:
        if local:
            jobs = [executor.submit(run_job, bench, spec, key, accelerator, devices, retry_failed, threads,
                                    seen.get(key)) for _, spec, key in items]
        else:
            with executor.batch():  # one Slurm job array, one task per run
                jobs = [executor.submit(run_job, bench, spec, key, accelerator, devices, retry_failed, threads,
                                        seen.get(key)) for _, spec, key in items]
        for job, (number, spec, key) in zip(jobs, items):
            running[job] = (number, spec, key, time.time())
        print(f"[matcv] submitted {len(items)} {launcher} job(s): {', '.join(str(j.job_id) for j in jobs)}; "
              f"logs in {bench.folder / 'slurm'}", flush=True)

    finished = False
    try:
        while todo or running:
            if todo and len(running) < window:
                submit([todo.popleft() for _ in range(min(window - len(running), len(todo)))])
            done = [job for job in running if job.done()]
            if not done:
                time.sleep(poll_s)
                continue
            for job in done:
                number, spec, key, submitted = running.pop(job)
                try:
                    outcome = job.result()
                except Exception as error:  # killed, timed out, preempted, or raised: no record of its own
                    message = f"{launcher} job {job.job_id} failed: {type(error).__name__}: {str(error)[-500:]}"
                    outcome = _record_lost_run(bench, spec, key, accelerator, devices, message, submitted)
                yield number, spec, outcome
        finished = True
    except KeyboardInterrupt:
        raise RunInterrupted([spec.label for _, spec, _, _ in running.values()],
                             elsewhere=not local) from None
    finally:
        if not finished and running:
            if local:  # local jobs die with this process's session anyway: stop them cleanly
                for job in running:
                    job.cancel(check=False)
            else:
                print(f"[matcv] leaving {len(running)} Slurm job(s) running; re-run to collect them", file=sys.stderr)
