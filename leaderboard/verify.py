"""``matcv verify``: recompute every built-in run's metrics from the test predictions it kept.

Every successful record of every ``records.jsonl`` under a runs folder that names its ``predictions``
(``<run folder>/predictions.npz``, written by ``matcv.benchmarks.harness.predictions`` in the layout submissions
use) is checked, without any of the model's code:

1. the file exists and its sha256 is the record's (an edited or truncated file is caught here);
2. it is read with ``np.load(allow_pickle=False)`` and covers exactly the fold's test items;
3. the fold's ground truth is rebuilt from the record's data root, fold manifest (found by its sha256: the
   folder's own ``fold_manifest.json`` or the path the record names), datamodule settings and seed, by the task's
   scorer (``leaderboard/scorers/<task>.py``, named by the task YAML's ``submission.scorer``), whose metric code
   is the leaderboard's, not the LightningModule's; the data's sha256 must still be the record's;
4. every metric the scorer computes that the record holds is compared with ``record["metrics"]``, and every
   per-item value the scorer returns with the record's ``per_image`` row of that item.

Numbers are equal within a relative tolerance of 1e-6 (or the scorer's own, when larger) plus an absolute one of
1e-9; NaN equals only NaN. Metrics the scorer marks as network-dependent (FID/KID-domain, computed with a feature
network trained on the scoring machine) are recomputed but not compared, as for submissions.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from matcv.datamodules.core.atomic_io import sha256_file
from matcv.datamodules.core.config import TaskConfig, import_object
from matcv.datamodules.core.records import OK, RUN_KEYS, TASK_YAML_COPY, RunRecords
from matcv.leaderboard.scorers import FoldTruth, Rejected, Scorer

REL_TOL, ABS_TOL = 1e-6, 1e-9
MANY_RUNS = 10  # a progress bar from this many runs on
LISTED = 3  # mismatching per-item values named per run (the count says how many more)

PASSED, MISMATCH, MISSING, CORRUPT, ERROR, NO_PREDICTIONS = "ok", "MISMATCH", "MISSING", "CORRUPT", "ERROR", \
    "no predictions"
FAILURES = (MISMATCH, MISSING, CORRUPT, ERROR)


class VerifyError(Exception):
    """Why one run cannot be verified; ``outcome``: MISSING, CORRUPT, MISMATCH or ERROR."""

    def __init__(self, outcome: str, message: str):
        super().__init__(message)
        self.outcome = outcome


@dataclass
class RunCheck:
    """The verdict on one run: ``outcome`` (ok, MISMATCH, MISSING, CORRUPT, ERROR, no predictions) and what was
    found (``problems``: each mismatch; ``notes``: what was compared or why nothing was)."""

    where: str  # "<benchmark folder> <model> fold <k>"
    outcome: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.outcome in FAILURES

    def line(self) -> str:
        said = "; ".join(self.problems) if self.problems else ", ".join(self.notes)
        return f"{self.outcome:<8} {self.where}" + (f": {said}" if said else "")


# ---------------------------------------------------------------- comparing numbers

def is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def same_number(recorded, recomputed, rel_tol: float = REL_TOL) -> bool:
    """``recorded`` (from the record) equals ``recomputed`` within the tolerances; NaN only equals NaN."""
    if not is_number(recorded) or not is_number(recomputed):
        return False
    recorded, recomputed = float(recorded), float(recomputed)
    if math.isnan(recorded) or math.isnan(recomputed):
        return math.isnan(recorded) and math.isnan(recomputed)
    return math.isclose(recorded, recomputed, rel_tol=rel_tol, abs_tol=ABS_TOL)


def compare_scores(record: dict, metrics: dict, rows: list[dict], scorer: Scorer) -> tuple[list[str], list[str]]:
    """(problems, notes): the recomputed fold ``metrics`` and per-item ``rows`` against the record's."""
    rel_tol = max(REL_TOL, scorer.rel_tol)
    not_compared = set(scorer.metrics) - set(scorer.compared) if scorer.compared is not None else set()
    recorded = record.get("metrics") or {}
    problems, compared, skipped = [], [], []
    for name, value in metrics.items():
        if name not in recorded:
            continue  # a metric the scorer computes but the task YAML does not list
        if name in not_compared:
            skipped.append(name)
            continue
        compared.append(name)
        if not same_number(recorded[name], value, rel_tol):
            problems.append(f"{name}: recorded {recorded[name]!r} vs recomputed {float(value)!r}")
    if not compared:
        problems.append(f"none of the recorded metrics ({', '.join(recorded) or 'none'}) is one the scorer "
                        f"recomputes ({', '.join(metrics)})")
    by_item = {row.get("item_id"): row for row in record.get("per_image") or [] if isinstance(row, dict)}
    item_problems, values = [], 0
    for row in rows:
        mine = by_item.get(row["item_id"])
        if mine is None:
            item_problems.append(f"item {row['item_id']!r}: no per_image row in the record")
            continue
        for key, value in row.items():
            if key == "item_id" or key in not_compared or key not in mine or not is_number(value):
                continue
            values += 1
            if not same_number(mine[key], value, rel_tol):
                item_problems.append(f"{key} of {row['item_id']!r}: recorded {mine[key]!r} vs recomputed "
                                     f"{float(value)!r}")
    problems += item_problems[:LISTED]
    if len(item_problems) > LISTED:
        problems.append(f"and {len(item_problems) - LISTED} more per-item mismatches")
    notes = [f"{len(compared)} metrics", f"{values} per-item values"]
    if skipped:
        notes.append(f"not compared (network-dependent): {', '.join(skipped)}")
    unscored = [name for name in recorded if name not in metrics]
    if unscored:
        notes.append(f"not recomputed by the scorer: {', '.join(unscored)}")
    return problems, notes


# ---------------------------------------------------------------- where a run's truth comes from

def task_config(folder: Path, record: dict) -> TaskConfig:
    """The YAML the run was made with: the copy the harness keeps of a user's own YAML (in the folder, or in the
    grouped folder beside a photo-level-fold sibling), else the built-in YAML of its task and dataset."""
    for own in (folder / TASK_YAML_COPY, folder.parent / str(record.get("profile")) / TASK_YAML_COPY):
        if own.is_file():
            return TaskConfig.load(own)
    return TaskConfig.for_dataset(record["task"], record["dataset"])


def scorer_of(config: TaskConfig, task: str) -> Scorer:
    modules = config.submission
    if modules is None:
        raise VerifyError(ERROR, f"{config.source} declares no submission scorer for task {task!r}")
    scorers = importlib.import_module(modules.scorer).SCORERS
    if task not in scorers:
        raise VerifyError(ERROR, f"{modules.scorer} has no scorer for task {task!r} ({', '.join(scorers)})")
    return scorers[task]


class Manifests:
    """A run's fold manifest, found by the sha256 its record names (each file hashed once)."""

    def __init__(self) -> None:
        self._sha: dict[Path, str] = {}

    def find(self, folder: Path, record: dict) -> Path:
        wanted = record.get("fold_manifest_sha256")
        candidates = [folder / "fold_manifest.json"]
        if isinstance(record.get("fold_manifest"), str):
            candidates.append(Path(record["fold_manifest"]))
        for path in candidates:
            key = path.resolve()
            if key not in self._sha and path.is_file():
                self._sha[key] = sha256_file(path)
            if self._sha.get(key) == wanted:
                return path
        raise VerifyError(ERROR, f"no fold manifest with the record's sha256 {str(wanted)[:16]}... (looked at "
                                 f"{', '.join(str(p) for p in candidates)})")


def extractor_epochs(config: dict) -> int | None:
    """The ``extractor_epochs`` the run's model used (its args, else its class's default), so that the scorer
    reuses the harness's cached FID-domain extractor; None where the model has none (or its class is gone)."""
    args = config["model"].get("args") or {}
    if "extractor_epochs" in args:
        return int(args["extractor_epochs"])
    try:
        parameter = inspect.signature(import_object(config["model"]["class"])).parameters.get("extractor_epochs")
    except Exception:  # noqa: BLE001 - e.g. a submission's class, made at run time: the scorer picks its default
        return None
    return None if parameter is None or parameter.default is inspect.Parameter.empty else int(parameter.default)


@dataclass
class TruthSource:
    """The runs whose ground truth one ``load_truth`` call builds: same scorer, data, fold manifest, datamodule
    settings and seed; ``folds``: the fold numbers they need."""

    scorer: Scorer
    entry: dict
    official_dir: Path
    folds: set[int] = field(default_factory=set)
    _loaded: dict | Exception | None = field(default=None, init=False, repr=False)

    def fold(self, fold: int) -> tuple[FoldTruth, str]:
        """(the fold's truth, the data's sha256), built once for every fold of the source."""
        if self._loaded is None:
            try:
                truth = self.scorer.load_truth({**self.entry, "folds": sorted(self.folds)}, self.official_dir)
                self._loaded = {"folds": {k: t for k, t in zip(sorted(self.folds), truth.folds)},
                                "data_sha256": truth.data_sha256}
            except Exception as error:  # noqa: BLE001 - said on the line of every run that needs it
                self._loaded = error
        if isinstance(self._loaded, Exception):
            error = self._loaded
            raise VerifyError(ERROR, f"the ground truth could not be rebuilt: {type(error).__name__}: {error}")
        return self._loaded["folds"][fold], self._loaded["data_sha256"]


def truth_source(folder: Path, record: dict, manifests: Manifests, sources: dict) -> TruthSource:
    """The run's ``TruthSource`` (shared with the runs it has the same truth as), its fold added."""
    config = task_config(folder, record)
    scorer = scorer_of(config, record["task"])
    manifest = manifests.find(folder, record)
    run_config = record["config"]
    entry = {"config": str(config.source), "profile": record["profile"], "path": manifest.name,
             "datamodule": run_config["datamodule"], "seed": run_config["seed"],
             "extractor_epochs": extractor_epochs(run_config)}
    data_root = record.get("data_root")
    if data_root and Path(data_root).is_dir():
        entry["data_root"] = data_root
    elif run_config.get("generator") is not None:  # generated data whose cache was cleared: made again
        entry["generator"] = run_config["generator"]
    else:
        raise VerifyError(ERROR, f"the run's data root {data_root} is gone (and it was not generated data)")
    key = json.dumps([str(config.source), record["task"], str(manifest.resolve()), entry], sort_keys=True,
                     default=str)
    if key not in sources:
        sources[key] = TruthSource(scorer, entry, manifest.parent)
    sources[key].folds.add(int(record["fold"]))
    return sources[key]


# ---------------------------------------------------------------- one run, all runs

def check_run(folder: Path, record: dict, source: TruthSource | VerifyError, where: str) -> RunCheck:
    if "predictions" not in record:
        return RunCheck(where, NO_PREDICTIONS, notes=["the run kept none (its task YAML declares no submission "
                                                      "block, or it was recorded before runs kept them)"])
    info = record["predictions"]
    if info is None:
        return RunCheck(where, NO_PREDICTIONS, notes=[f"not kept: {record.get('predictions_error', 'no reason given')}"])
    try:
        if not isinstance(info, dict) or not isinstance(info.get("path"), str) or not isinstance(info.get("sha256"), str):
            raise VerifyError(ERROR, f"the record's 'predictions' entry is not {{path, sha256, bytes}}: {info!r}")
        path = folder / info["path"]
        if not path.is_file():
            raise VerifyError(MISSING, f"{path} is missing")
        if sha256_file(path) != info["sha256"]:
            raise VerifyError(CORRUPT, f"{path}: its sha256 is not the record's (the file was changed or damaged)")
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except Exception as error:  # noqa: BLE001 - any unreadable file is a corrupt one
            raise VerifyError(CORRUPT, f"{path} cannot be read without pickle: {type(error).__name__}: {error}") \
                from error
        if isinstance(source, VerifyError):
            raise source
        truth, data_sha256 = source.fold(int(record["fold"]))
        if data_sha256 != record.get("data_sha256"):
            raise VerifyError(ERROR, f"the data is no longer the data the run used (sha256 {data_sha256[:16]}..., "
                                     f"recorded {str(record.get('data_sha256'))[:16]}...)")
        ids = arrays.pop("item_ids", None)
        if ids is None or ids.ndim != 1 or ids.dtype.kind != "U":
            raise VerifyError(CORRUPT, f"{path} has no 'item_ids' array of strings")
        ids = ids.tolist()
        if sorted(ids) != sorted(truth.item_ids):
            missing, extra = set(truth.item_ids) - set(ids), set(ids) - set(truth.item_ids)
            raise VerifyError(MISMATCH, f"the predictions cover {len(ids)} items, the fold has {len(truth.item_ids)} "
                                        f"test items ({len(missing)} missing, {len(extra)} not test items)")
        try:
            metrics, rows = source.scorer.score_fold(arrays, ids, truth)
        except Rejected as error:
            raise VerifyError(ERROR, f"the scorer refuses the predictions: {error}") from error
    except VerifyError as error:
        return RunCheck(where, error.outcome, problems=[str(error)])
    except Exception as error:  # noqa: BLE001 - one run's surprise never stops the others
        return RunCheck(where, ERROR, problems=[f"{type(error).__name__}: {error}"])
    problems, notes = compare_scores(record, metrics, rows, source.scorer)
    return RunCheck(where, MISMATCH if problems else PASSED, problems, notes)


def find_runs(runs_dir: Path) -> list[tuple[Path, dict]]:
    """(benchmark folder, record) of every successful run under ``runs_dir``, in file order."""
    runs = []
    for path in sorted(Path(runs_dir).rglob("records.jsonl")):
        runs += [(path.parent, record) for record in RunRecords(path).load(RUN_KEYS) if record["status"] == OK]
    return runs


def verify_runs(runs_dir: str | Path = "runs", progress: bool = True, echo=None) -> list[RunCheck]:
    """Check every successful run under ``runs_dir`` (module docstring); one ``RunCheck`` per run, each also
    passed to ``echo`` (a line printer; default: printed above the progress bar) as soon as it is made."""
    runs_dir = Path(runs_dir)
    runs = find_runs(runs_dir)
    manifests, sources, planned = Manifests(), {}, []
    for folder, record in runs:  # every fold a truth source needs is known before it is built
        source = None
        if isinstance(record.get("predictions"), dict):
            try:
                source = truth_source(folder, record, manifests, sources)
            except VerifyError as error:
                source = error
            except Exception as error:  # noqa: BLE001 - e.g. a record without its config
                source = VerifyError(ERROR, f"cannot tell where its ground truth is: {type(error).__name__}: {error}")
        planned.append((folder, record, source))
    checks = []
    bar = tqdm(planned, desc="verifying runs", unit="run", disable=not progress or len(planned) < MANY_RUNS)
    for folder, record, source in bar:
        try:
            shown = folder.relative_to(runs_dir).as_posix()
        except ValueError:
            shown = str(folder)
        replicate = record.get("replicate")
        seed = f" seed {replicate + 1}" if isinstance(replicate, int) and replicate else ""
        check = check_run(folder, record, source, f"{shown} {record.get('model')} fold {record.get('fold')}{seed}")
        checks.append(check)
        (echo or tqdm.write)(check.line())
    return checks


def summary(checks: list[RunCheck], runs_dir: str | Path) -> str:
    counts = {outcome: sum(c.outcome == outcome for c in checks) for outcome in (PASSED, *FAILURES, NO_PREDICTIONS)}
    said = ", ".join(f"{n} {outcome}" for outcome, n in counts.items() if n)
    return (f"verified {len(checks)} successful run(s) under {runs_dir}: {said or 'nothing to verify'} "
            f"(tolerance: relative {REL_TOL:g} or the scorer's, absolute {ABS_TOL:g}; network-dependent metrics "
            f"are recomputed, not compared)")


def verify_command(runs_dir: str | Path = "runs", progress: bool = True) -> int:
    """``matcv verify``: a line per run, a summary; 1 on any mismatch or missing/corrupt file (or no run)."""
    if not any(Path(runs_dir).rglob("records.jsonl")):
        print(f"no records.jsonl under {runs_dir}; run `matcv bench` first")
        return 1
    checks = verify_runs(runs_dir, progress)
    print(summary(checks, runs_dir))
    return 1 if any(check.failed for check in checks) else 0
