"""The folder generated datasets and cached feature extractors go to."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """Where generated datasets live: $MATCV_CACHE_DIR, else ./.cache/matcv (inside the project)."""
    return Path(os.environ.get("MATCV_CACHE_DIR", Path.cwd() / ".cache" / "matcv"))
