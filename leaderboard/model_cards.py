"""Model cards of the built-in models, and the leaderboard tracks derived from them.

A card (``leaderboard/cards/<task>/<model>.yaml``, the schema ``leaderboard/model_card.schema.json``) says who
made a model, from which paper, under which licence, on what it was pretrained (with the weights' sha256)
and what data beyond the fold's training split it saw. Submissions carry the same card in ``metadata.json``.

Tracks separate results that are not comparable on equal terms (pretraining and extra data change what a
small-data benchmark measures): "from scratch", "pretrained (ImageNet)", "pretrained (in-domain)" and
"extra data" (any training data beyond the benchmark's, or pretraining on another source). The weights a run
actually loaded, ``record["details"]["weights"]["pretrained_on"]``, win over the card's ``pretrained_on``:
the card states the model's intent, the record what happened.

``reference_scores`` of a card ({"<dataset>/<profile>": {metric: value}}) are checked against the committed
tables (``<task>__<dataset>__<profile>.csv``, column ``<metric>_mean``): CI fails when they differ.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import yaml

from matcv.datamodules.core.config import ConfigError, TaskConfig, available_tasks
from matcv.datamodules.core.model_card_format import CARDS_DIR, PRETRAINED_ON, CardError, check_card

FROM_SCRATCH = "from scratch"
IMAGENET = "pretrained (ImageNet)"
IN_DOMAIN = "pretrained (in-domain)"
EXTRA_DATA = "extra data"
UNKNOWN = "unknown (no card)"
TRACKS = (FROM_SCRATCH, IMAGENET, IN_DOMAIN, EXTRA_DATA)
_BY_PRETRAINING = {"none": FROM_SCRATCH, "imagenet": IMAGENET, "in-domain": IN_DOMAIN, "other": EXTRA_DATA}
REFERENCE_TOLERANCE = 1e-4  # tables are written with full precision; this absorbs float formatting only


def card_path(task: str, model: str, cards_dir: str | Path = CARDS_DIR) -> Path:
    return Path(cards_dir) / task / f"{model}.yaml"


def read_card(path: str | Path) -> dict:
    """One card file, checked against the schema and its place (``<task>/<model>.yaml``); ``CardError``
    naming the file and the field otherwise."""
    path = Path(path)
    try:
        card = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise CardError(f"{path}: not a readable YAML file: {error}") from error
    check_card(card, str(path))
    for field, expected in (("name", path.stem), ("task", path.parent.name)):
        if card[field] != expected:
            raise CardError(f"{path}: field '{field}' is {card[field]!r}, but the file's place says {expected!r} "
                            f"(cards live at <task>/<model>.yaml)")
    return card


def card_files(cards_dir: str | Path = CARDS_DIR) -> list[Path]:
    return sorted(Path(cards_dir).glob("*/*.yaml"))


def card_errors(cards_dir: str | Path = CARDS_DIR) -> list[str]:
    """Why each invalid card file is invalid (empty: every card is valid), plus stray files a reader would
    otherwise never look at (a ``.yml`` or a card outside a task folder is silently ignored otherwise)."""
    cards_dir = Path(cards_dir)
    errors = []
    for path in card_files(cards_dir):
        try:
            read_card(path)
        except CardError as error:
            errors.append(str(error))
    if cards_dir.is_dir():
        stray = [p for p in cards_dir.rglob("*") if p.is_file() and p not in set(card_files(cards_dir))]
        errors += [f"{p}: not a card (cards are <task>/<model>.yaml)" for p in sorted(stray)]
    return errors


def builtin_models(tasks: Iterable[str] | None = None) -> dict[tuple[str, str], str]:
    """(task, model) -> the task YAML that configures it, for every built-in model of every task YAML (a task
    on several datasets, segmentation and segmentation-superalloy, shares one card per model name)."""
    found: dict[tuple[str, str], str] = {}
    for name in tasks or available_tasks():
        config = TaskConfig.load(name)
        for model in config.raw["models"]:
            found.setdefault((config.task, model), name)
    return found


def missing_cards(cards_dir: str | Path = CARDS_DIR, tasks: Iterable[str] | None = None) -> list[str]:
    """A line per built-in model without a card file (what to write, and where)."""
    return [f"{card_path(task, model, cards_dir)}: missing: model {model!r} of benchmarks/configs/{yaml_name}.yaml "
            f"has no model card (copy a card of the same task and edit it)"
            for (task, model), yaml_name in builtin_models(tasks).items()
            if not card_path(task, model, cards_dir).is_file()]


def find_card(task: str, model: str, cards_dir: str | Path = CARDS_DIR) -> dict | None:
    """The model's valid card, None when it has none or an invalid one (``card_errors`` reports those)."""
    path = card_path(task, model, cards_dir)
    if not path.is_file():
        return None
    try:
        return read_card(path)
    except CardError:
        return None


def recorded_pretraining(runs: Iterable[dict]) -> str | None:
    """``pretrained_on`` of the weights the latest run that says so loaded (``details.weights``), else None."""
    found = None
    for run in runs:
        details = run.get("details")
        weights = details.get("weights") if isinstance(details, dict) else None
        if isinstance(weights, dict) and weights.get("pretrained_on") in PRETRAINED_ON:
            found = weights["pretrained_on"]
    return found


def track_of(card: dict | None, runs: Iterable[dict] = ()) -> str:
    """The track of a model from its card and its runs' records (the recorded weights win)."""
    pretrained = recorded_pretraining(runs) or (card or {}).get("pretrained_on")
    if pretrained is None:
        return UNKNOWN
    extra = str((card or {}).get("extra_training_data", "none")).strip().lower()
    if extra != "none":
        return EXTRA_DATA
    return _BY_PRETRAINING[pretrained]


def model_track(task: str, model: str, runs: list[dict], cards_dir: str | Path = CARDS_DIR) -> str:
    """A table row's track: a submission's own card travels in its records (``model_card``), a built-in
    model's is looked up under ``cards_dir``."""
    card = next((r["model_card"] for r in reversed(runs) if isinstance(r.get("model_card"), dict)), None)
    return track_of(card or find_card(task, model, cards_dir), runs)


def check_track(track: str | None) -> str | None:
    """``track`` when it is a known track (or None: all tracks); ``ValueError`` listing them otherwise."""
    if track is not None and track not in TRACKS + (UNKNOWN,):
        raise ValueError(f"unknown track {track!r}; tracks: {', '.join(repr(t) for t in TRACKS + (UNKNOWN,))}")
    return track


def reference_mismatches(results_dir: str | Path, cards_dir: str | Path = CARDS_DIR,
                         skip: Iterable[tuple[str, str]] = ()) -> list[str]:
    """A line per ``reference_scores`` value of a valid card that the committed table does not reproduce (or
    that no committed table holds: a claim that cannot be checked is no reference). ``skip``: (task,
    "<dataset>/<profile>") boards not to compare."""
    skip = set(skip)
    problems = []
    for path in card_files(cards_dir):
        try:
            card = read_card(path)
        except CardError:
            continue  # card_errors reports it
        for board, scores in card.get("reference_scores", {}).items():
            if (card["task"], board) in skip:
                continue
            dataset, profile = board.split("/")
            csv = Path(results_dir) / f"{card['task']}__{dataset}__{profile}.csv"
            try:
                table = pd.read_csv(csv)
            except (OSError, ValueError) as error:
                problems.append(f"{path}: reference_scores.{board}: no committed table {csv} ({error})")
                continue
            rows = table[table["model"] == card["name"]] if "model" in table.columns else table.iloc[0:0]
            if rows.empty:
                problems.append(f"{path}: reference_scores.{board}: {csv} has no row for model {card['name']!r}")
                continue
            for metric, value in scores.items():
                column = f"{metric}_mean"
                got = float(rows.iloc[0][column]) if column in rows.columns else math.nan
                if not math.isclose(got, value, rel_tol=REFERENCE_TOLERANCE, abs_tol=REFERENCE_TOLERANCE):
                    problems.append(f"{path}: reference_scores.{board}.{metric} is {value}, the committed table "
                                    f"{csv} has {got if column in rows.columns else 'no ' + column}")
    return problems


def card_problems_of_tasks(cards_dir: str | Path = CARDS_DIR) -> list[str]:
    """Everything CI checks about the committed cards, without the tables: invalid or stray card files and
    built-in models without a card."""
    try:
        missing = missing_cards(cards_dir)
    except ConfigError as error:  # a broken task YAML is reported by its own checks; say so here too
        missing = [f"the task YAMLs cannot be read: {error}"]
    return card_errors(cards_dir) + missing
