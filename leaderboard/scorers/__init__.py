"""Per-task scoring of a submission's predictions against the built-in ground truth (no submitted code runs).

A ``Scorer`` says, for one task, how to load the ground truth of an official benchmark (``load_truth``) and
how to check and score one fold's prediction arrays (``score_fold``). ``matcv.leaderboard.submission`` does what
every task shares (layout, metadata, manifest hash, reading the ``.npz`` without pickle, the fold's item ids)
and compares the metrics a submission claims with the recomputed ones.

One module per task family, named by the task YAML's ``submission.scorer``; ``scorer_for(task)`` imports only
the one it needs (the generative scorers pull in torch-fidelity). Every scorer builds its truth through ``official_datamodules``: the task's own
DataModule on the official fold manifest, exactly as the harness tests a fold (or, for ``matcv verify``, on a
built-in run's own fold manifest, data and settings: ``official_datamodules``'s optional entry keys).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from matcv.datamodules.core.atomic_io import data_fingerprint
from matcv.datamodules.core.config import TaskConfig, import_object, run_seed, submission_modules

class Rejected(ValueError):
    """Why a submission is not on the leaderboard."""


@dataclass(frozen=True)
class FoldTruth:
    """One fold's ground truth: its test item ids (the predictions must cover exactly these), per-item targets,
    whatever else the scorer needs (``context``: image kind, feature extractor, ...), and a bound on the
    unpacked size of a prediction file (a decompression bomb is refused before it is read)."""

    item_ids: list[str]
    targets: dict[str, Any]
    max_prediction_bytes: int
    context: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Truth:
    """Ground truth of one official benchmark: its folds, and the sha256 of the data it was read from."""

    folds: list[FoldTruth]
    data_sha256: str


# (arrays of the fold's .npz without item_ids, the submitted item ids in file order, the fold's truth)
#   -> (fold metrics, per-item rows with "item_id"); raises Rejected naming the problem.
ScoreFold = Callable[[dict[str, np.ndarray], list[str], FoldTruth], tuple[dict[str, float], list[dict]]]


@dataclass(frozen=True)
class Scorer:
    metrics: tuple[str, ...]  # the leaderboard's columns, ranked by the first
    load_truth: Callable[[dict, Path], Truth]  # (official entry, official dir) -> Truth
    score_fold: ScoreFold
    # Metrics whose claimed value must equal the recomputed one (None: all). Scores that depend on a network
    # matcv trains for the evaluation (FID-domain) may differ across machines: they are recomputed and shown,
    # but a claimed value is not compared.
    compared: tuple[str, ...] | None = None
    rel_tol: float = 0.0  # float32 predictions scored in another order: a relative tolerance on top of 1e-6


def supported_tasks() -> tuple[str, ...]:
    return tuple(submission_modules())


def scorer_for(task: str) -> Scorer:
    """The task's ``Scorer``, from the module its YAML names under ``submission.scorer``."""
    modules = submission_modules()
    if task not in modules:
        raise Rejected(f"submissions for task {task!r} are not supported (supported: {', '.join(modules)})")
    return importlib.import_module(modules[task].scorer).SCORERS[task]


# ---------------------------------------------------------------- helpers shared by the scorers

def prediction_key(index: int) -> str:
    return f"pred_{index:05d}"


def predictions_by_item(arrays: dict[str, np.ndarray], item_ids: list[str],
                        extra_keys: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """item id -> its ``pred_<i>`` array; the file must hold exactly those (plus ``extra_keys``)."""
    expected = {prediction_key(i) for i in range(len(item_ids))}
    if set(arrays) - set(extra_keys) != expected:
        last = prediction_key(len(item_ids) - 1)
        raise Rejected(f"the file must hold exactly item_ids and {prediction_key(0)}..{last}"
                       + (f" (and {', '.join(extra_keys)})" if extra_keys else ""))
    predictions = {item: arrays[prediction_key(i)] for i, item in enumerate(item_ids)}
    for item, array in predictions.items():  # the reader returns arrays; anything else is not scored
        if not isinstance(array, np.ndarray):
            raise Rejected(f"prediction for {item!r} is not an array but {type(array).__name__}")
    return predictions


def non_finite_problem(array: np.ndarray) -> str | None:
    if array.dtype.kind not in "biuf":
        return f"dtype {array.dtype} (expected numbers)"
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        return f"{int((~np.isfinite(array)).sum())} non-finite value(s) (NaN/inf)"
    return None


def mean_of(rows: list[dict], names: tuple[str, ...] | list[str]) -> dict[str, float]:
    """Fold metric = mean of the per-item values, as the harness's ``fold_metrics`` computes it."""
    return {name: float(np.mean([row[name] for row in rows])) for name in names}


@dataclass
class OfficialFold:
    fold: int
    # The task's DataModule on the official manifest, not yet set up; its seed is the harness's run seed of the
    # fold (``run_seed``), which e.g. the FID-domain extractor is trained with.
    datamodule: Any


def official_datamodules(entry: dict, official_dir: Path) -> tuple[list[OfficialFold], str]:
    """The task's DataModule for every fold of an official benchmark, built as ``execute_run`` builds it
    (profile's datamodule args, the harness's run seed), on data located or generated by its
    ``prepare_dataset``; plus the data's sha256 (as the harness records it).

    ``entry`` may instead describe the runs of any benchmark folder, on its own fold manifest (``matcv verify``
    rebuilds the truth of a built-in run so, with the scorers' unchanged ``load_truth``): optional keys
    ``datamodule`` (the run's resolved ``{"class", "args"}``), ``seed`` (its profile seed), ``data_root`` (the
    data it ran on, used as it is), ``generator`` (the settings to generate the data with when there is no
    ``data_root``) and ``folds`` (the fold numbers to build, in that order, instead of ``range(n_folds)``: the
    ``Truth``'s folds are then those, in that order). An official entry has none of them."""
    config = TaskConfig.load(entry["config"])
    prof = config.profile(entry["profile"])
    if "datamodule" in entry:
        datamodule_cls = import_object(entry["datamodule"]["class"])
        dm_args = dict(entry["datamodule"].get("args", {}))
    else:
        datamodule_cls = config.datamodule_class()
        dm_args = config.datamodule_args(entry["profile"])
    if entry.get("data_root") is not None:
        root = Path(entry["data_root"])
    else:
        root = datamodule_cls.prepare_dataset(None, entry["generator"] if "generator" in entry
                                              else prof.get("generator"), progress=False)
    index = datamodule_cls.index_dataset(root, **dm_args)
    profile_seed = entry["seed"] if "seed" in entry else config.profile_seed(entry["profile"])
    folds = []
    for fold in entry["folds"] if "folds" in entry else range(entry["n_folds"]):
        seed = run_seed(profile_seed, fold)
        folds.append(OfficialFold(fold, datamodule_cls(fold_manifest_path=str(official_dir / entry["path"]),
                                                       fold=fold, data_root=str(root), seed=seed, **dm_args)))
    return folds, data_fingerprint(root, index["files"])
