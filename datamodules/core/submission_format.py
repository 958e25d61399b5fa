"""The submission format every layer agrees on: folder layout, schema names, the official fold manifests' index.

``matcv submit`` writes it (the harness) and ``matcv leaderboard`` validates it (the leaderboard); neither
imports the other, both read these definitions.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

SCHEMA = "matcv-submission/1"
OFFICIAL_FORMAT = "matcv-official-manifests/1"
# matcv/datamodules/core -> matcv/leaderboard/official, in a checkout and in an installed wheel alike.
OFFICIAL_DIR = Path(__file__).resolve().parents[2] / "leaderboard" / "official"
SUBMISSIONS_DIR = Path("leaderboard/submissions")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
STAGING_PREFIX = ".staging-"  # half-written submission folders; the validator skips them
# Hyper-parameters of a submission that the harness applies itself (lr / weight_decay also reach a LightningModule
# class whose __init__ takes them); every other one is passed to the factory / class.
TRAINING_KEYS = frozenset({"lr", "weight_decay", "max_epochs", "batch_size"})


class SubmissionError(ValueError):
    """A submission that cannot be made (bad name, unsupported task, no official manifest, failed fold)."""


def check_name(name: str, what: str = "submission name") -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise SubmissionError(f"{what} {name!r} is not allowed: use 1-64 characters of a-z, 0-9, '.', '_', '-', "
                              f"starting with a letter or digit")
    return name


def read_official_index(official_dir: str | Path = OFFICIAL_DIR) -> dict:
    path = Path(official_dir) / "manifests.json"
    if not path.is_file():
        return {"format": OFFICIAL_FORMAT, "benchmarks": {}}
    index = json.loads(path.read_text())
    if index.get("format") != OFFICIAL_FORMAT or not isinstance(index.get("benchmarks"), dict):
        raise SubmissionError(f"{path}: expected format {OFFICIAL_FORMAT!r}")
    return index
