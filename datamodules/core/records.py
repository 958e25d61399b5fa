"""Append-only run records (JSON lines) shared safely by concurrent writers.

One line per finished run, written with a single ``write`` under a file lock and fsync'd, so a
benchmark killed at any moment leaves whole lines. A torn last line (the machine died, the disk filled up
mid-write) is skipped with a warning, and the next append starts on a line of its own, so the fragment never
swallows the record after it. A line that is JSON but lacks what its readers need is skipped with a warning
naming the line too. Resume = skip the runs whose key already has a record.

Several processes may work on one benchmark at once (``--parallel-runs``, ``--launcher slurm``, two
``matcv bench`` started by hand): each run is *claimed* first (``RunClaims``: an exclusive, non-blocking
lock file per run key), so no key is ever run twice at the same time, and the records are re-checked
after the claim, so a run finished meanwhile is not run again.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

OK, FAILED = "ok", "failed"
# A benchmark folder's sibling holding the leakage report's deliberately leaky photo-level-fold runs.
PHOTO_FOLDS_SUFFIX = "-photo-folds"
# A benchmark folder's copy of the task YAML it was run with, when that YAML is not a built-in one.
TASK_YAML_COPY = "task.yaml"
# What resume needs of every record; what a table reads of a run's result (a submission's records included);
# what the leaderboard needs of a line of records.jsonl (it asks for these at load).
RUN_KEYS = ("key", "status")
RESULT_KEYS = ("status", "model", "fold", "fold_manifest_sha256", "data_sha256")
TABLE_KEYS = ("key", "task", "dataset", "profile") + RESULT_KEYS
_TYPES = {"key": str, "status": str, "task": str, "dataset": str, "profile": str, "model": str, "fold": int,
          "fold_manifest_sha256": str, "data_sha256": str}


def record_problem(record, required: tuple[str, ...] = RUN_KEYS) -> str | None:
    """Why ``record`` cannot be used by a reader that needs ``required`` (None: it can).

    A successful run also needs its ``metrics`` (an object) when its ``model`` is asked for (a table)."""
    if not isinstance(record, dict):
        return f"not a JSON object ({type(record).__name__})"
    missing = [name for name in required if name not in record]
    if missing:
        return f"missing key(s) {missing}"
    for name in required:
        wanted = _TYPES.get(name)
        value = record[name]
        if wanted is not None and (not isinstance(value, wanted) or isinstance(value, bool)):
            return f"{name!r} is not {'an integer' if wanted is int else 'a string'} ({value!r})"
    if "model" in required and record["status"] == OK and not isinstance(record.get("metrics"), dict):
        return "a successful run without its 'metrics' object"
    return None


def run_key(model: str, fold: int, config_hash: str, fold_manifest_sha256: str, data_sha256: str,
            replicate: int = 0) -> str:
    """Identity of a run: the same key means the same model, fold, config, folds and data. Replicate r > 0 of a
    run (``--seeds``) has its own config hash already; ``|seed<r>`` only makes the key readable. Replicate 0's key
    is the one a run had before replicates existed, so its records are found by resume."""
    seed = f"|seed{replicate}" if replicate else ""
    return f"{model}|fold{fold}{seed}|{config_hash}|{fold_manifest_sha256[:16]}|{data_sha256[:16]}"


class RunRecords:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.path) + ".lock")

    # Picklable (parallel workers, submitit jobs): only the path travels, the lock is re-made where it lands.
    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])

    def append(self, record: dict) -> None:
        line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                # A short write left a fragment without its newline: start on a fresh line, so the fragment
                # stays a line of its own (skipped at load) instead of making this record unreadable too.
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line
                written = 0
                while written < len(line):  # os.write may write less than asked (signals, big lines)
                    written += os.write(fd, line[written:])
                os.fsync(fd)
            finally:
                os.close(fd)

    def load(self, required: tuple[str, ...] = RUN_KEYS) -> list[dict]:
        """Every readable record that has the keys in ``required`` (``RUN_KEYS``: what resume needs;
        ``TABLE_KEYS``: what a leaderboard needs); any other line is skipped with a warning naming it."""
        if not self.path.exists():
            return []
        with self._lock:
            data = self.path.read_bytes()
        records = []
        # Split on b"\n" only (what append writes): str.splitlines would also split inside a line on
        # other line breaks, and a torn multi-byte character must not make the whole file undecodable.
        for number, line in enumerate(data.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                warnings.warn(f"{self.path}:{number}: skipping an unreadable (torn) record line", stacklevel=2)
                continue
            problem = record_problem(record, required)
            if problem is not None:
                warnings.warn(f"{self.path}:{number}: skipping a record line: {problem}", stacklevel=2)
                continue
            records.append(record)
        return records

    def finished_keys(self, include_failed: bool = True) -> set[str]:
        """Keys that need no re-run: successful runs, and failed ones unless they are to be retried."""
        return {r["key"] for r in self.load() if r["status"] == OK or (include_failed and r["status"] == FAILED)}


class RunClaims:
    """Exclusive claims on run keys: ``<benchmark folder>/claims/<sha256 of key>.lock``.

    A claim is a non-blocking ``flock`` (``filelock.FileLock(timeout=0)``) held while the run trains and
    its record is appended. The kernel drops it when the holder exits, however it exits (SIGKILL, a node
    lost, a Slurm time limit), so a claim can never go stale: a re-run simply claims the key again.
    Each claim is a fresh lock object, so two claims of one key conflict between threads of one process
    as well as between processes (and between nodes on a shared file system with working ``flock``).
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder) / "claims"

    def path(self, key: str) -> Path:
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.lock"

    @contextmanager
    def claim(self, key: str) -> Iterator[bool]:
        """``with claims.claim(key) as held:`` - held is False when another process (or thread) holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.path(key)), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()
