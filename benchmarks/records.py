"""Append-only run records (JSON lines) shared safely by concurrent writers.

One line per finished run, written with a single ``write`` under a file lock and fsync'd, so a
benchmark killed at any moment leaves whole lines (a torn last line, if the machine itself died,
is skipped with a warning). Resume = skip the runs whose key already has a record.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from filelock import FileLock

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

    def append(self, record: dict) -> None:
        line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
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
