"""Helpers of the submission tests: copies of a valid submission, altered the way a careless or dishonest
submitter would alter them (metadata edited by hand, prediction arrays rewritten)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np


def edit_metadata(folder: Path, change) -> None:
    """Apply ``change(metadata dict)`` to a submission's metadata.json."""
    meta = json.loads((folder / "metadata.json").read_text())
    change(meta)
    (folder / "metadata.json").write_text(json.dumps(meta, indent=1))


def rewrite_npz(path: Path, change) -> None:
    """Apply ``change(arrays dict)`` to a predictions .npz and write it back (still without pickles)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    change(arrays)
    np.savez_compressed(path, **arrays)


def copy_submission(subs: Path, task: str, valid: str, name: str) -> Path:
    """``subs/<task>/<valid>`` copied to ``subs/<task>/<name>``, renamed in its metadata too."""
    target = subs / task / name
    shutil.copytree(subs / task / valid, target)
    edit_metadata(target, lambda meta: meta.update(name=name))
    return target


def tamper_and_rebuild(subs: Path, task: str, valid: str, tampered: dict, runs: Path, out: Path,
                       official: Path) -> tuple[list[Path], str]:
    """One tampered copy of the valid submission per ``tampered`` entry (name -> (tamper, expected reason)),
    then ``matcv leaderboard``'s rebuild: (files written, what it printed)."""
    import contextlib
    import io

    from matcv.leaderboard.rebuild import write_all_leaderboards

    for name, (tamper, _) in tampered.items():
        tamper(copy_submission(subs, task, valid, name))
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        written = write_all_leaderboards(runs, out, submissions_dir=subs, official_dir=official)
    return written, captured.getvalue()
