"""Append-only run records (JSON lines) shared safely by concurrent writers.

One line per finished run, written with a single ``write`` under a file lock and fsync'd, so a
benchmark killed at any moment leaves whole lines (a torn last line, if the machine itself died,
is skipped with a warning). Resume = skip the runs whose key already has a record.

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


def run_key(model: str, fold: int, config_hash: str, fold_manifest_sha256: str, data_sha256: str) -> str:
    """Identity of a run: the same key means the same model, fold, config, folds and data."""
    return f"{model}|fold{fold}|{config_hash}|{fold_manifest_sha256[:16]}|{data_sha256[:16]}"


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
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                written = 0
                while written < len(line):  # os.write may write less than asked (signals, big lines)
                    written += os.write(fd, line[written:])
                os.fsync(fd)
            finally:
                os.close(fd)

    def load(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self._lock:
            lines = self.path.read_text().splitlines()
        records = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                warnings.warn(f"{self.path}:{number}: skipping an unreadable (torn) record line", stacklevel=2)
        return records

    def finished_keys(self, include_failed: bool = True) -> set[str]:
        """Keys that need no re-run: successful runs, and failed ones unless they are to be retried."""
        return {r["key"] for r in self.load() if r.get("status") == OK or (include_failed and r.get("status") == FAILED)}


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
