"""Atomic file writes and content hashes.

Every file matcv writes (images, manifests, fold manifests, tables) goes through here, so a run that
dies half way leaves either the old file or the new one, never a truncated one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def _default_file_mode() -> int:
    """What ``open()`` would give a new file (0o666 minus the umask); mkstemp's 0o600 would leave results
    (tables, the HTML leaderboard, images) unreadable to other users and web servers. Read once, at import:
    reading the umask means setting it, which must not race with other threads creating files."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _default_file_mode()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_csv(path: str | os.PathLike, rows: Sequence[Mapping], fieldnames: Sequence[str] | None = None) -> Path:
    """Write dict rows as CSV (header first; default columns: the first row's keys), atomically, with "\\n"
    line ends on every platform so a dataset's files hash alike wherever it is generated."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fieldnames if fieldnames is not None else rows[0]),
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def save_png(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a uint8 HxW or HxWx3 array as PNG, atomically."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def save_figure(path: str | os.PathLike, figure, dpi: int = 110, **savefig_args) -> Path:
    """A matplotlib figure written atomically as PNG, then closed (figures are made per run, many per process)."""
    import matplotlib.pyplot as plt  # only the plotting callers need matplotlib

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, **savefig_args)
    plt.close(figure)
    return atomic_write_bytes(path, buffer.getvalue())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def data_fingerprint(root: Path, files: list[str]) -> str:
    """sha256 over the manifest (where the layout has one) and every data file (contents, not timestamps)."""
    manifest = root / "manifest.csv"
    parts = [sha256_file(manifest)] if manifest.is_file() else []
    parts += [f"{name}:{sha256_file(root / name)}" for name in sorted(files)]
    return sha256_bytes("\n".join(parts).encode())
