"""Validate submissions without running their code, and score them from their predictions.

A submission folder ``leaderboard/submissions/<task>/<name>/`` (written by ``matcv submit``) holds
``metadata.json``, ``predictions/fold-<k>.npz`` (arrays ``item_ids`` and ``pred_<i>``) and optionally
``README.md``. Nothing in it is imported or executed; ``.npz`` files are read with ``allow_pickle=False``.
Checks, in order (the first failure rejects the submission, with its reason):

1. names and paths: the task and submission folder names match ``^[a-z0-9][a-z0-9._-]{0,63}$``; no
   symlinks; only ``.json``, ``.npz`` and ``.md`` files (no pickles, no code), only the expected ones, and
   every path stays inside the folder;
2. ``metadata.json``: the schema (keys and types), its ``name``/``task`` equal the folder's;
3. fold manifest: its sha256 equals the official one of (task, dataset, profile) in
   ``leaderboard/official/manifests.json``;
4. predictions: every fold of the official manifest, each exactly its test items, the ground truth's shape,
   finite values, the task's value range (0/1 masks, known ratings, images in [-1, 1], ...);
5. metrics: recomputed from the predictions against the ground truth of the built-in data; a claimed
   value that differs from the recomputed one (by more than 1e-6, or the scorer's relative tolerance)
   rejects the submission. Leaderboards show only recomputed values.

Per task a ``Scorer`` (``leaderboard/scorers/``) says how to load the ground truth and how to check and
score one fold's predictions.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from matcv.datamodules.core.submission_format import (
    NAME_PATTERN,
    OFFICIAL_DIR,
    SCHEMA,
    STAGING_PREFIX,
    read_official_index,
)
from matcv.datamodules.core.atomic_io import sha256_file
from matcv.leaderboard.scorers import Rejected, Scorer, Truth, scorer_for

TOLERANCE = 1e-6
ALLOWED_SUFFIXES = {".json", ".npz", ".md"}
MAX_METADATA_BYTES = 1 << 20


@dataclass
class Verdict:
    path: Path
    ok: bool
    reason: str = ""
    metadata: dict | None = None
    entry: dict | None = None  # the official benchmark it was scored on
    folds: list[dict] = field(default_factory=list)  # per fold: {"fold", "metrics", "per_item"} (recomputed)
    data_sha256: str | None = None


SCHEMA_TYPES = {"schema": str, "name": str, "task": str, "profile": str, "dataset": str, "authors": list,
                "description": str, "model": dict, "hyperparameters": dict, "tuning": str, "hardware": dict,
                "matcv": dict, "fold_manifest_sha256": str, "folds": list}


def _check_layout(folder: Path) -> None:
    for part, what in ((folder.parent.name, "task folder"), (folder.name, "submission name")):
        if not NAME_PATTERN.match(part):
            raise Rejected(f"unsafe {what} {part!r}: names must match {NAME_PATTERN.pattern}")
    if folder.is_symlink() or folder.parent.is_symlink():
        raise Rejected("the submission folder is a symbolic link")
    root = folder.resolve()
    for directory, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(directory)
        for name in dirnames + filenames:
            path = here / name
            relative = path.relative_to(folder).as_posix()
            if path.is_symlink():
                raise Rejected(f"{relative} is a symbolic link (not accepted)")
            if not path.resolve().is_relative_to(root):
                raise Rejected(f"{relative} resolves outside the submission folder")
            if name in dirnames:
                if relative != "predictions":
                    raise Rejected(f"unexpected folder {relative} (only predictions/)")
                continue
            if path.suffix.lower() not in ALLOWED_SUFFIXES:
                raise Rejected(f"file {relative} has a forbidden type: only {', '.join(sorted(ALLOWED_SUFFIXES))} "
                               f"files are accepted (no pickles, no code)")
            if not path.is_file():
                raise Rejected(f"{relative} is not a regular file")
            if not (relative == "metadata.json" or relative.endswith(".md") and "/" not in relative
                    or relative.startswith("predictions/fold-") and relative.endswith(".npz")):
                raise Rejected(f"unexpected file {relative}")


def _read_metadata(folder: Path) -> dict:
    path = folder / "metadata.json"
    if not path.is_file():
        raise Rejected("metadata.json is missing")
    if path.stat().st_size > MAX_METADATA_BYTES:
        raise Rejected("metadata.json is larger than 1 MiB")
    try:
        metadata = json.loads(path.read_text(), parse_constant=lambda c: math.nan)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise Rejected(f"metadata.json is not valid JSON: {error}") from error
    if not isinstance(metadata, dict):
        raise Rejected("metadata.json must be a JSON object")
    for key, kind in SCHEMA_TYPES.items():
        if key not in metadata:
            raise Rejected(f"metadata.json: missing key {key!r}")
        if not isinstance(metadata[key], kind):
            raise Rejected(f"metadata.json: {key!r} must be a {kind.__name__}, got {type(metadata[key]).__name__}")
    if metadata["schema"] != SCHEMA:
        raise Rejected(f"metadata.json: schema {metadata['schema']!r}, expected {SCHEMA!r}")
    if not isinstance(metadata["model"].get("reference"), str):
        raise Rejected("metadata.json: model.reference must be a string")
    if metadata["name"] != folder.name or not NAME_PATTERN.match(metadata["name"]):
        raise Rejected(f"metadata.json: unsafe or mismatched name {metadata['name']!r} (the folder is {folder.name!r})")
    if metadata["task"] != folder.parent.name:
        raise Rejected(f"metadata.json: task {metadata['task']!r} but the submission is under {folder.parent.name!r}/")
    for name in ("profile", "dataset"):
        if not NAME_PATTERN.match(metadata[name]):
            raise Rejected(f"metadata.json: unsafe {name} {metadata[name]!r}")
    return metadata


def _official(metadata: dict, official_dir: Path) -> dict:
    key = f"{metadata['task']}/{metadata['dataset']}/{metadata['profile']}"
    entry = read_official_index(official_dir)["benchmarks"].get(key)
    if entry is None:
        raise Rejected(f"no official fold manifest for {key}")
    if sha256_file(official_dir / entry["path"]) != entry["sha256"]:
        raise Rejected(f"the official fold manifest {entry['path']} does not match its index (fix {official_dir})")
    if metadata["fold_manifest_sha256"] != entry["sha256"]:
        raise Rejected(f"fold manifest sha256 {metadata['fold_manifest_sha256'][:16]}... differs from the official "
                       f"{entry['sha256'][:16]}... of {key}")
    return entry


def _safe_relative(folder: Path, text) -> Path:
    if not isinstance(text, str) or not text or text.startswith(("/", "\\")) or ".." in Path(text).parts \
            or "\\" in text:
        raise Rejected(f"unsafe path {text!r} in metadata.json")
    path = folder / text
    if not path.resolve().is_relative_to(folder.resolve()):
        raise Rejected(f"unsafe path {text!r} in metadata.json (outside the submission)")
    return path


def _load_npz(path: Path, relative: str, max_bytes: int) -> dict[str, np.ndarray]:
    try:
        with zipfile.ZipFile(path) as archive:  # refuse a decompression bomb before reading anything
            if sum(info.file_size for info in archive.infolist()) > max_bytes:
                raise Rejected(f"{relative} unpacks to more than {max_bytes} bytes")
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except Rejected:
        raise
    except ValueError as error:  # object arrays need pickle, which is never enabled
        raise Rejected(f"{relative} cannot be read without pickle (object arrays are not accepted): {error}") from error
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise Rejected(f"{relative} is not a readable .npz file: {error}") from error


def _same(stated, value: float, rel_tol: float) -> bool:
    """A claimed number equals the recomputed one (NaN only where the recomputed value is NaN: e.g. grain sizes of
    a source without grains)."""
    if not isinstance(stated, (int, float)) or isinstance(stated, bool):
        return False
    if math.isnan(value) or math.isnan(stated):
        return math.isnan(value) and math.isnan(stated)
    return math.isclose(stated, value, rel_tol=rel_tol, abs_tol=TOLERANCE)


def _score_folds(folder: Path, metadata: dict, entry: dict, scorer: Scorer, truth: Truth) -> list[dict]:
    declared = metadata["folds"]
    if not all(isinstance(f, dict) and isinstance(f.get("fold"), int) for f in declared):
        raise Rejected("metadata.json: every entry of 'folds' must be an object with an integer 'fold'")
    by_fold = {f["fold"]: f for f in declared}
    expected = list(range(entry["n_folds"]))
    missing = [k for k in expected if k not in by_fold]
    if missing or len(by_fold) != len(declared) or set(by_fold) - set(expected):
        raise Rejected(f"folds {sorted(by_fold)} declared, the official manifest has folds {expected}"
                       f"{f' (missing: {missing})' if missing else ''}")
    listed = {f"predictions/fold-{k}.npz" for k in expected}
    present = {p.relative_to(folder).as_posix() for p in (folder / "predictions").glob("*")} \
        if (folder / "predictions").is_dir() else set()
    if present - listed:
        raise Rejected(f"unexpected prediction file(s) {sorted(present - listed)}")
    results = []
    for k in expected:
        info = by_fold[k]
        path = _safe_relative(folder, info.get("predictions"))
        relative = info["predictions"]
        if relative != f"predictions/fold-{k}.npz":
            raise Rejected(f"fold {k}: predictions path {relative!r}, expected 'predictions/fold-{k}.npz'")
        if not path.is_file():
            raise Rejected(f"fold {k}: predictions file {relative} is missing")
        truths = truth.folds[k]
        arrays = _load_npz(path, relative, truths.max_prediction_bytes)
        ids = arrays.pop("item_ids", None)
        if ids is None or ids.ndim != 1 or ids.dtype.kind != "U":
            raise Rejected(f"fold {k}: {relative} needs an 'item_ids' array of strings")
        ids = ids.tolist()
        if len(set(ids)) != len(ids):
            raise Rejected(f"fold {k}: duplicate item ids in {relative}")
        expected_ids = set(truths.item_ids)
        absent, extra = [i for i in truths.item_ids if i not in set(ids)], [i for i in ids if i not in expected_ids]
        if absent or extra:
            raise Rejected(f"fold {k}: predictions must cover exactly the {len(expected_ids)} test items of the "
                           f"official manifest: {len(absent)} missing {absent[:2]}, {len(extra)} not test items "
                           f"{extra[:2]}")
        try:
            metrics, per_item = scorer.score_fold(arrays, ids, truths)
        except Rejected as error:
            raise Rejected(f"fold {k}: {error}") from error
        claimed = info.get("metrics")
        if not isinstance(claimed, dict):
            raise Rejected(f"metadata.json: fold {k} has no 'metrics' object")
        for metric in scorer.compared if scorer.compared is not None else scorer.metrics:
            if not _same(claimed.get(metric), metrics[metric], scorer.rel_tol):
                raise Rejected(f"claimed metrics do not match the predictions: fold {k} {metric} claimed "
                               f"{claimed.get(metric)!r}, recomputed {metrics[metric]:.6f}")
        results.append({"fold": k, "metrics": metrics, "per_item": per_item})
    return results


def validate_submission(folder: str | Path, official_dir: str | Path = OFFICIAL_DIR,
                        truth_cache: dict | None = None) -> Verdict:
    """Check one submission folder; never raises for a bad submission (the verdict says why)."""
    folder, official_dir = Path(folder), Path(official_dir)
    truth_cache = {} if truth_cache is None else truth_cache
    verdict = Verdict(folder, False)
    try:
        _check_layout(folder)
        metadata = verdict.metadata = _read_metadata(folder)
        scorer = scorer_for(metadata["task"])
        entry = verdict.entry = _official(metadata, official_dir)
        key = (str(official_dir), entry["sha256"])
        if key not in truth_cache:
            truth_cache[key] = scorer.load_truth(entry, official_dir)
        truth = truth_cache[key]
        verdict.folds = _score_folds(folder, metadata, entry, scorer, truth)
        verdict.data_sha256 = truth.data_sha256
        verdict.ok = True
    except Rejected as error:
        verdict.reason = str(error)
    return verdict


def find_submissions(submissions_dir: str | Path) -> list[Path]:
    """Every ``<task>/<name>`` folder (half-written staging folders skipped); odd entries are returned too,
    so that they are rejected with a reason rather than silently ignored."""
    root = Path(submissions_dir)
    if not root.is_dir():
        return []
    found = []
    for task in sorted(root.iterdir()):
        if task.name.startswith(".") and not task.is_symlink():
            continue
        if not task.is_dir() or task.is_symlink():
            found.append(task)  # rejected: not a task folder
            continue
        found += [p for p in sorted(task.iterdir()) if not p.name.startswith(STAGING_PREFIX)]
    return found


def validate_all(submissions_dir: str | Path, official_dir: str | Path = OFFICIAL_DIR) -> list[Verdict]:
    cache: dict = {}
    verdicts = []
    for folder in find_submissions(submissions_dir):
        if folder.parent == Path(submissions_dir):
            verdicts.append(Verdict(folder, False, "not a task folder <task>/<name>/ (a file or a symbolic link)"))
        elif not folder.is_dir() or folder.is_symlink():
            verdicts.append(Verdict(folder, False, "not a submission folder (a file or a symbolic link)"))
        else:
            verdicts.append(validate_submission(folder, official_dir, cache))
    return verdicts
