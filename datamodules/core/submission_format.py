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


# Characters a submitted text may not hold: C0/C1 control characters other than tab and line ends (terminal escape
# sequences, NUL), lone surrogates (not Unicode text: no UTF-8 file or page can hold them; Python makes them from
# undecodable bytes in file names) and the bidirectional controls that make a line display in another order than it
# is stored in.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff"
                          "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def text_problem(text: str) -> str | None:
    """Why ``text`` is not acceptable as submitted free text (None when it is)."""
    found = _UNPRINTABLE.search(text)
    if found is None:
        return None
    code = ord(found.group())
    if 0xD800 <= code <= 0xDFFF:
        return f"a lone surrogate U+{code:04X} (not valid Unicode text)"
    if code in (0x061C, 0x200E, 0x200F) or 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069:
        return f"a bidirectional control character U+{code:04X} (it can show the text in another order)"
    return f"a control character U+{code:04X}"


def printable_text(text: str) -> str:
    """``text`` with every character ``text_problem`` refuses written as an escape (``\\xff`` for a byte of a file
    name that is not UTF-8, ``\\u202e``, ...): safe to print and to write as UTF-8 (messages, pages, tables)."""
    def escape(match: re.Match) -> str:
        code = ord(match.group())
        if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte of a file name (surrogateescape)
            return f"\\x{code - 0xDC00:02x}"
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return _UNPRINTABLE.sub(escape, str(text))


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
