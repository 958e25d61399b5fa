"""The code that runs inside the processes scale-out starts: a ``--parallel-runs`` worker and a submitit job.

A fresh process imports this module first (spawn imports a worker's target by module, submitit unpickles
``run_job`` by reference), so it must not import torch (nor anything that does): CUDA reads
``CUDA_VISIBLE_DEVICES``, and OpenMP ``OMP_NUM_THREADS``, once, when torch first loads them. Each entry point
therefore sets its environment and only then imports the run module, inside the function.
"""

from __future__ import annotations

import os
import queue
import signal

from matcv.datamodules.core.atomic_io import sha256_file


def worker_main(env: dict, threads: int, inbox, results, parent_pid: int) -> None:
    """One worker process: environment first (before torch initialises CUDA), then run what the parent sends.

    Ctrl-C reaches every process of the terminal's group: the parent alone answers it (it stops the workers and
    says which runs will be redone), so a worker ignores it instead of printing a traceback of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(env)
    import torch

    from matcv.benchmarks.harness.run import run_claimed

    torch.set_num_threads(threads)
    while True:
        try:
            item = inbox.get(timeout=5.0)
        except queue.Empty:
            if os.getppid() != parent_pid:  # the parent died: take no more runs (claims keep re-runs safe)
                return
            continue
        if item is None:
            return
        number, bench, spec, key, accelerator, devices, retry_failed, seen = item
        try:
            outcome = run_claimed(bench, spec, key, accelerator, devices, False, retry_failed, seen)
        except Exception as error:  # e.g. the records could not be written: report it, keep the worker
            outcome = {"outcome": "ran", "status": "failed", "metrics": {}, "total_s": 0.0,
                       "error": f"worker error, no record written: {type(error).__name__}: {error}"}
        results.put((number, outcome))


def run_job(bench, spec, key: str, accelerator: str, devices: int, retry_failed: bool,
            threads: int | None = None, seen: int | None = None) -> dict:
    """A submitit job: one run, with the claim + record logic. Arguments are plain picklable values (the
    Benchmark travels as paths and the config's dict; its records are re-opened from their path here)."""
    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        import torch

        torch.set_num_threads(threads)
    from matcv.benchmarks.harness.run import run_claimed

    if sha256_file(bench.fold_manifest_path) != bench.fold_manifest_sha256:
        raise RuntimeError(f"{bench.fold_manifest_path} changed since the job was submitted")
    if "SLURM_NTASKS" in os.environ:
        # One Slurm task per job: DDP (--devices N) spawns its processes itself. Naming the job "interactive"
        # is Lightning's documented way to keep it from taking the allocation for an srun-launched world.
        os.environ["SLURM_JOB_NAME"] = "interactive"
    return run_claimed(bench, spec, key, accelerator, devices, False, retry_failed, seen)
