"""Validate submissions without running their code, and score them from their predictions.

A submission folder ``leaderboard/submissions/<task>/<name>/`` (written by ``matcv submit``) holds
``metadata.json``, ``predictions/fold-<k>.npz`` (arrays ``item_ids`` and ``pred_<i>``) and optionally
``README.md``. Nothing in it is imported or executed; ``.npz`` files are read with ``allow_pickle=False``.
Checks, in order (the first failure rejects the submission, with its reason; any other error while checking or
scoring one submission rejects that submission too, naming the error, so one bad submission never stops the board):

1. names and paths: the task and submission folder names match ``^[a-z0-9][a-z0-9._-]{0,63}$``; no
   symlinks; only ``.json``, ``.npz`` and ``.md`` files (no pickles, no code), only the expected ones, and
   every path stays inside the folder;
2. ``metadata.json``: nested at most 32 levels, every text printable Unicode (no lone surrogates, control or
   bidirectional control characters), the schema (keys and types), its ``name``/``task`` equal the folder's;
   its model ``card`` (``matcv submit`` writes one; submissions made before cards existed have none) valid
   under the model-card JSON Schema the built-in cards follow (``leaderboard/model_card.schema.json``), with the
   submission's name and task;
3. fold manifest: its sha256 equals the official one of (task, dataset, profile) in
   ``leaderboard/official/manifests.json``;
4. predictions: every member of each ``.npz`` an ``.npy`` array whose header (dtype, shape) is read and checked
   against the member's size before any array is allocated; every fold of the official manifest, each exactly its
   test items, the ground truth's shape,
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
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from matcv.datamodules.core.submission_format import (
    NAME_PATTERN,
    OFFICIAL_DIR,
    SCHEMA,
    STAGING_PREFIX,
    printable_text,
    read_official_index,
    text_problem,
)
from matcv.datamodules.core.atomic_io import sha256_file
from matcv.datamodules.core.model_card_format import CardError, check_card
from matcv.leaderboard.scorers import FoldTruth, Rejected, Scorer, Truth, scorer_for

TOLERANCE = 1e-6
ALLOWED_SUFFIXES = {".json", ".npz", ".md"}
MAX_METADATA_BYTES = 1 << 20
MAX_MARKDOWN_BYTES = 1 << 20  # never read, but copied and served with the submission
MAX_JSON_DEPTH = 32  # matcv submit writes 4 levels; deeper nesting only serves to exhaust the parser
MAX_REASON_CHARS = 2000
NPY_VERSIONS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


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
            if path.suffix.lower() == ".md" and path.stat().st_size > MAX_MARKDOWN_BYTES:
                raise Rejected(f"{relative} is larger than {MAX_MARKDOWN_BYTES >> 20} MiB")
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
        metadata = json.loads(path.read_text(encoding="utf-8"), parse_constant=lambda c: math.nan)
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, an integer of more than 4300 digits
        raise Rejected(f"metadata.json is not valid JSON: {error}") from error
    except RecursionError as error:  # the parser gives up long before the file's size limit
        raise Rejected(f"metadata.json is nested more than {MAX_JSON_DEPTH} levels deep") from error
    if _depth(metadata) > MAX_JSON_DEPTH:
        raise Rejected(f"metadata.json is nested more than {MAX_JSON_DEPTH} levels deep")
    if not isinstance(metadata, dict):
        raise Rejected("metadata.json must be a JSON object")
    _check_text(metadata)
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
    if "card" in metadata:
        _check_card(metadata)
    return metadata


def _check_card(metadata: dict) -> None:
    """The submission's model card against the schema of the built-in cards (the error names the field); its
    track is read from it. Its ``name`` and ``task`` describe the model, which a renamed copy keeps: not compared."""
    try:
        check_card(metadata["card"], "metadata.json: card")
    except CardError as error:
        raise Rejected(str(error)) from None


def _depth(value) -> int:
    """How deeply a parsed JSON value nests (without recursion: it is measured before anything walks it)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack += [(child, depth + 1) for child in (item.values() if isinstance(item, dict) else item)]
    return deepest


def _check_text(value, where: str = "") -> None:
    """Every string of the metadata, keys included, is printable Unicode: it ends up in Markdown, HTML and
    terminal lines, which a lone surrogate cannot be written to and control characters would rewrite."""
    if isinstance(value, str):
        problem = text_problem(value)
        if problem:
            raise Rejected(f"metadata.json: '{where or 'a text'}' holds {problem}")
    elif isinstance(value, dict):
        for key, item in value.items():
            name = f"{where}.{printable_text(key)}" if where else printable_text(key)
            problem = text_problem(key)
            if problem:
                raise Rejected(f"metadata.json: the key '{name}' holds {problem}")
            _check_text(item, name)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_text(item, f"{where}[{index}]")


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


def _load_npz(path: Path, relative: str, max_bytes: int, max_members: int) -> dict[str, np.ndarray]:
    """The arrays of a predictions file, read member by member with the zip and .npy headers checked first: a
    decompression bomb, a header claiming more data than the member holds, an object array (pickle) or a member
    that is no .npy array is refused before any array is allocated."""
    if path.stat().st_size > 2 * max_bytes + (1 << 20):  # compressed, it can hardly be larger than unpacked
        raise Rejected(f"{relative} is larger than {2 * max_bytes + (1 << 20)} bytes")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > max_members:
                raise Rejected(f"{relative} holds {len(members)} members, more than the {max_members} expected")
            if sum(info.file_size for info in members) > max_bytes:
                raise Rejected(f"{relative} unpacks to more than {max_bytes} bytes")
            names = [info.filename for info in members]
            for info in members:
                if names.count(info.filename) > 1:  # which of the copies a reader takes is up to the reader
                    raise Rejected(f"{relative} holds the member {info.filename!r} twice")
                if not info.filename.endswith(".npy"):
                    raise Rejected(f"{relative}: member {info.filename!r} is not an .npy array (its name does not "
                                   f"end in .npy)")
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise Rejected(f"{relative}: member {info.filename!r} uses zip compression method "
                                   f"{info.compress_type} (only stored or deflated, as numpy writes)")
            arrays = {}
            for info in members:
                with archive.open(info) as member:
                    arrays[info.filename[:-len(".npy")]] = _read_npy(member, info, relative)
            return arrays
    except Rejected:
        raise
    except (OSError, zipfile.BadZipFile, EOFError, zlib.error, UnicodeDecodeError, NotImplementedError, RuntimeError,
            ValueError) as error:  # RuntimeError: an encrypted member
        raise Rejected(f"{relative} is not a readable .npz file: {error}") from error


def _read_npy(member, info: zipfile.ZipInfo, relative: str) -> np.ndarray:
    """One ``.npy`` member: magic, version and header first; the data is read only when the header's dtype holds
    no Python objects and its shape x itemsize is exactly the data the member holds."""
    name = info.filename
    try:
        version = np.lib.format.read_magic(member)
    except ValueError as error:  # its bytes are not echoed: they could be anyone's file
        raise Rejected(f"{relative}: member {name!r} is not an .npy array (it does not start with the .npy "
                       f"magic string)") from error
    if version not in NPY_VERSIONS:
        raise Rejected(f"{relative}: member {name!r} has .npy format version {version[0]}.{version[1]} "
                       f"(1.0 or 2.0 accepted)")
    try:
        shape, fortran_order, dtype = NPY_VERSIONS[version](member)
    except (ValueError, SyntaxError, RecursionError, MemoryError) as error:
        raise Rejected(f"{relative}: member {name!r} has an unreadable .npy header: "
                       f"{type(error).__name__}: {str(error)[:200]}") from error
    if dtype.hasobject:  # object arrays need pickle, which is never enabled
        raise Rejected(f"{relative} cannot be read without pickle (object arrays are not accepted): member {name!r} "
                       f"has dtype {dtype}")
    if len(shape) > 32 or any(size < 0 for size in shape) or dtype.itemsize == 0:
        raise Rejected(f"{relative}: member {name!r} claims shape {shape} of dtype {dtype.str}, which no array has")
    count = math.prod(shape)
    needed, held = count * dtype.itemsize, info.file_size - member.tell()
    if needed != held:
        raise Rejected(f"{relative}: member {name!r} claims shape {shape} of dtype {dtype.str} ({needed} bytes) but "
                       f"holds {held} bytes of data")
    data = bytearray(needed)
    view, read = memoryview(data), 0
    while read < needed:
        chunk = member.readinto(view[read:])
        if not chunk:
            raise Rejected(f"{relative}: member {name!r} ends after {read} of its {needed} bytes of data")
        read += chunk
    array = np.frombuffer(data, dtype=dtype, count=count) if count else np.empty(0, dtype=dtype)
    return array.reshape(shape[::-1]).transpose() if fortran_order else array.reshape(shape)


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
    by_fold = {}
    for index, info in enumerate(declared):
        fold = info.get("fold") if isinstance(info, dict) else None
        if not isinstance(fold, int) or isinstance(fold, bool):  # true would count as fold 1
            got = repr(fold) if isinstance(info, dict) else f"a {type(info).__name__}"
            raise Rejected(f"metadata.json: folds[{index}] must be an object with an integer 'fold', got {got}")
        if fold in by_fold:
            raise Rejected(f"metadata.json: fold {fold} is listed twice in 'folds'")
        by_fold[fold] = info
    expected = list(range(entry["n_folds"]))
    missing = [k for k in expected if k not in by_fold]
    if missing or set(by_fold) - set(expected):
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
        try:
            results.append(_score_fold(k, info, path, relative, scorer, truth.folds[k]))
        except Rejected:
            raise
        except Exception as error:  # an error no check foresaw: this submission is rejected, the others are scored
            raise Rejected(f"fold {k}: {relative} could not be scored: {type(error).__name__}: {error}") from error
    return results


def _score_fold(k: int, info: dict, path: Path, relative: str, scorer: Scorer, truths: FoldTruth) -> dict:
    """One fold's predictions: read, matched with the fold's test items, scored, compared with the claim."""
    arrays = _load_npz(path, relative, truths.max_prediction_bytes, len(truths.item_ids) + 16)
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
    return {"fold": k, "metrics": metrics, "per_item": per_item}


def validate_submission(folder: str | Path, official_dir: str | Path = OFFICIAL_DIR,
                        truth_cache: dict | None = None) -> Verdict:
    """Check one submission folder; never raises for a bad submission (the verdict says why)."""
    folder, official_dir = Path(folder), Path(official_dir)
    truth_cache = {} if truth_cache is None else truth_cache
    verdict = Verdict(folder, False)
    doing = "checking the folder layout"
    try:
        _check_layout(folder)
        doing = "reading metadata.json"
        metadata = verdict.metadata = _read_metadata(folder)
        scorer = scorer_for(metadata["task"])
        doing = "comparing the fold manifest with the official one"
        entry = verdict.entry = _official(metadata, official_dir)
        key = (str(official_dir), entry["sha256"])
        doing = f"loading the ground truth of {entry['task']}/{entry['dataset']}/{entry['profile']}"
        if key not in truth_cache:
            try:
                truth_cache[key] = scorer.load_truth(entry, official_dir)
            except Exception as error:  # kept, so that every submission of the benchmark says so without a retry
                truth_cache[key] = error
        truth = truth_cache[key]
        if isinstance(truth, Exception):
            raise truth
        doing = "scoring the predictions"
        verdict.folds = _score_folds(folder, metadata, entry, scorer, truth)
        verdict.data_sha256 = truth.data_sha256
        verdict.ok = True
    except Rejected as error:
        verdict.reason = str(error)
    except Exception as error:  # any other error rejects this submission only, saying what was being done
        verdict.reason = f"could not be validated ({doing}): {type(error).__name__}: {error}"
    if not verdict.ok:
        verdict.folds = []
        reason = printable_text(verdict.reason)
        verdict.reason = reason if len(reason) <= MAX_REASON_CHARS else reason[:MAX_REASON_CHARS] + "…"
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
        try:
            found += [p for p in sorted(task.iterdir()) if not p.name.startswith(STAGING_PREFIX)]
        except OSError:
            found.append(task)  # rejected: its folder cannot be listed
    return found


def validate_all(submissions_dir: str | Path, official_dir: str | Path = OFFICIAL_DIR) -> list[Verdict]:
    cache: dict = {}
    verdicts = []
    for folder in find_submissions(submissions_dir):
        if folder.parent == Path(submissions_dir) and folder.is_dir() and not folder.is_symlink():
            verdicts.append(Verdict(folder, False, "the task folder cannot be listed (permissions?)"))
        elif folder.parent == Path(submissions_dir):
            verdicts.append(Verdict(folder, False, "not a task folder <task>/<name>/ (a file or a symbolic link)"))
        elif not folder.is_dir() or folder.is_symlink():
            verdicts.append(Verdict(folder, False, "not a submission folder (a file or a symbolic link)"))
        else:
            verdicts.append(validate_submission(folder, official_dir, cache))
    return verdicts
