"""``matcv leaderboard``: rebuild every table from the run records under ``runs/`` and the published reference
board (``leaderboard/reference/``, ``matcv.leaderboard.reference``; a local run replaces its published copy).

Each benchmark folder ``<task>/<dataset>/<profile>/records.jsonl`` gives a leaderboard (and, for an
augmentation-study profile, its matrix; for a profile with companion profiles, their side-by-side table); a ``<profile>-photo-folds`` sibling gives the leakage report
beside its grouped benchmark instead of a leaderboard of its own.

Then every submission under ``leaderboard/submissions/`` is validated without running its code and scored
from its predictions (``matcv.leaderboard.submission``): rejected ones are printed with the reason, accepted
ones get ``<task>__<dataset>__<profile>__submissions.md/.csv`` beside the built-in models run on the same
official folds. Across the benchmarks of each task: the models' mean rank and critical-difference diagram
(``ranking__<task>.md/.csv/.png``, ``matcv.leaderboard.ranking``) where the task has two benchmarks or more,
and the accuracy-vs-training-cost picture (``cost__<task>.png``, ``matcv.leaderboard.cost``); finally the
interactive page ``leaderboard/site/index.html`` (``matcv.leaderboard.site``) and the plain static page
``index.html`` beside the tables (``matcv.leaderboard.html``, for readers without JavaScript) are written.

The model cards (``leaderboard/cards/``, ``matcv.leaderboard.model_cards``) are checked on every rebuild: an
invalid card, a built-in model without one, or a card's ``reference_scores`` that the rebuilt tables do not
reproduce is printed as an ``INVALID CARD`` line (the tables are still written; CI's tests fail on them).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from matcv.datamodules.core.config import ConfigError, TaskConfig
from matcv.datamodules.core.records import PHOTO_FOLDS_SUFFIX, TABLE_KEYS, TASK_YAML_COPY, RunRecords
from matcv.datamodules.core.submission_format import printable_text
from matcv.leaderboard.augmentation_matrix import write_augmentation_matrix
from matcv.leaderboard.build import choose_benchmark, own_manifest_sha256, write_leaderboard
from matcv.leaderboard.comparison import BenchmarkId, benchmark_of
from matcv.leaderboard.cost import cost_plot
from matcv.leaderboard.html import write_html
from matcv.leaderboard.leakage import write_leakage_report
from matcv.leaderboard.learning_curves import write_learning_curves
from matcv.leaderboard.model_cards import CARDS_DIR, card_problems_of_tasks, reference_mismatches
from matcv.leaderboard.profile_summary import write_profile_summary
from matcv.leaderboard.ranking import Board, Ranking, rank_boards, read_board, write_ranking
from matcv.leaderboard.reference import benchmark_folders
from matcv.leaderboard.site import write_site
from matcv.leaderboard.submission import OFFICIAL_DIR, validate_all, write_submission_boards


def companion_records(folder: Path, profile: str) -> Path | None:
    """A companion profile's records: beside ``folder`` (same dataset), else the one benchmark of that profile
    on another dataset of the task (companions may be other sources, e.g. Potts beside Gaussian fields)."""
    same = folder.parent / profile / "records.jsonl"
    if same.exists():
        return same
    found = sorted(folder.parents[1].glob(f"*/{profile}/records.jsonl"))
    return found[0] if len(found) == 1 else None


def write_all_leaderboards(runs_dir: str | Path, out_dir: str | Path,
                           submissions_dir: str | Path | None = "leaderboard/submissions",
                           official_dir: str | Path | None = None, html: bool = True,
                           track: str | None = None, cards_dir: str | Path | None = CARDS_DIR,
                           reference_dir: str | Path | None = None) -> list[Path]:
    """Rebuild every table (returned, Markdown; the rankings across benchmarks after the benchmarks' own),
    validate the submissions and write ``index.html``. ``track``: only the models of that track in the
    benchmark tables; ``cards_dir``: the model cards to check (None: no check); ``reference_dir``: the
    published reference board (``matcv.leaderboard.reference``; ``matcv leaderboard`` passes
    ``leaderboard/reference/``; None: ``runs_dir`` only)."""
    written = _write_benchmark_leaderboards(runs_dir, out_dir, track, reference_dir)
    if cards_dir is not None:
        check_cards(cards_dir, out_dir, local_boards(runs_dir))
    builtin = list(written)
    tasks = write_task_summaries(runs_dir, out_dir, reference_dir)
    written += [task.ranking.markdown for task in tasks if task.ranking is not None]
    if submissions_dir is not None:
        written += write_submissions(submissions_dir, runs_dir, out_dir, official_dir, html, builtin, tasks,
                                     cards_dir, reference_dir)
    elif html and builtin:
        write_html(out_dir, [], [], builtin, tasks)
        write_site(site_dir(out_dir), out_dir, [], [], builtin, tasks, runs_dir, cards_dir, reference_dir)
    return written


def write_submissions(submissions_dir: str | Path, runs_dir: str | Path, out_dir: str | Path,
                      official_dir: str | Path | None = None, html: bool = True,
                      builtin_markdown: list[Path] | None = None,
                      tasks: list[TaskSummary] | None = None, cards_dir: str | Path | None = CARDS_DIR,
                      reference_dir: str | Path | None = None) -> list[Path]:
    """Validate every submission (printing a line per rejected one), write the submission tables and the page.
    Each submission is validated on its own: a bad one is a REJECTED line, never a build without a page."""
    verdicts = validate_all(submissions_dir, official_dir or OFFICIAL_DIR)
    for verdict in verdicts:
        if not verdict.ok:  # paths too may hold what a terminal cannot print (a folder name that is not UTF-8)
            print(f"REJECTED {printable_text(verdict.path)}: {printable_text(verdict.reason)}", flush=True)
    roots = [runs_dir] + ([reference_dir] if reference_dir is not None else [])
    boards = write_submission_boards(verdicts, roots, out_dir)
    if html and (verdicts or builtin_markdown):
        write_html(out_dir, boards, verdicts, builtin_markdown or [], tasks or [])
        write_site(site_dir(out_dir), out_dir, boards, verdicts, builtin_markdown or [], tasks or [], runs_dir,
                   cards_dir, reference_dir)
    return [board.markdown for board in boards]


def site_dir(out_dir: str | Path) -> Path:
    """Where the interactive page goes: ``site/`` beside the tables (``leaderboard/site/index.html``)."""
    return Path(out_dir).parent / "site"


def _write_benchmark_leaderboards(runs_dir: str | Path, out_dir: str | Path, track: str | None = None,
                                  reference_dir: str | Path | None = None) -> list[Path]:
    written = []
    for folder in benchmark_folders(runs_dir, reference_dir):
        written += write_benchmark_tables(folder, out_dir, track=track)
    return written


def check_cards(cards_dir: str | Path, out_dir: str | Path, local: set[tuple[str, str]] = frozenset()) -> list[str]:
    """Print (and return) an ``INVALID CARD`` line per card problem: invalid or missing cards, and reference
    scores the tables just written under ``out_dir`` do not reproduce. A card's board not rebuilt here is not
    compared (a rebuild of some runs says nothing about the others), nor is one of ``local`` ((task,
    "<dataset>/<profile>") run under ``runs/``): a local rerun may differ from the published reference."""
    problems = card_problems_of_tasks(cards_dir)
    problems += [line for line in reference_mismatches(out_dir, cards_dir, skip=local)
                 if "no committed table" not in line]
    for problem in problems:
        print(f"INVALID CARD {printable_text(problem)}", flush=True)
    return problems


def local_boards(runs_dir: str | Path) -> set[tuple[str, str]]:
    """(task, "<dataset>/<profile>") of every benchmark folder under ``runs_dir``."""
    return {(f.parents[1].name, f"{f.parent.name}/{f.name}") for f in benchmark_folders(runs_dir, None)}


@dataclass
class TaskSummary:
    """What the page shows across the benchmarks of one task."""

    task: str
    ranking: Ranking | None  # None with fewer than 2 benchmarks (then ``notes`` says so)
    cost_png: Path | None  # accuracy against training cost; None when no table gives a point
    notes: list[str] = field(default_factory=list)


def ranking_settings(folder: Path) -> tuple[str | None, bool | None, bool]:
    """(first metric, lower is better, smoke-test profile) of a benchmark folder, from the task YAML its
    tables were written with (see ``write_benchmark_tables``); (None, None, False) for a YAML that cannot be
    found: the ranking then reads the metric and direction from the table itself."""
    task, dataset, profile = folder.parents[1].name, folder.parent.name, folder.name
    try:
        own = folder / TASK_YAML_COPY
        config = TaskConfig.load(own) if own.is_file() else TaskConfig.for_dataset(task, dataset)
        metric = config.metrics[0]
        return metric, metric in config.lower_is_better, profile in config.smoke_profiles
    except ConfigError:
        return None, None, False


def write_task_summaries(runs_dir: str | Path, out_dir: str | Path,
                         reference_dir: str | Path | None = None) -> list[TaskSummary]:
    """Per task of ``runs_dir``: the ranking across its benchmark tables under ``out_dir`` (written when there
    are two or more) and the accuracy-vs-cost picture. Smoke-test profiles (a few steps on tiny data, to test
    the plumbing) are left out: their scores say nothing about the models."""
    by_task: dict[str, list[Path]] = {}
    for folder in benchmark_folders(runs_dir, reference_dir):
        by_task.setdefault(folder.parents[1].name, []).append(folder)
    summaries = []
    for task, folders in by_task.items():
        boards: list[Board] = []
        unreadable, smoke, notes = {}, [], []
        for folder in folders:
            name = f"{folder.parent.name}/{folder.name}"
            csv = Path(out_dir) / f"{task}__{folder.parent.name}__{folder.name}.csv"
            metric, lower_is_better, is_smoke = ranking_settings(folder)
            if is_smoke:
                smoke.append(name)
            elif csv.is_file():
                try:
                    boards.append(read_board(csv, name, metric, lower_is_better))
                except ValueError as error:
                    unreadable[name] = str(error)
        if not boards and not unreadable:  # nothing to show (e.g. smoke tests only)
            continue
        if smoke:
            notes.append(f"Smoke-test profiles left out: {', '.join(smoke)}.")
        ranking = None
        if len(boards) + len(unreadable) >= 2:
            ranking = rank_boards(task, boards, left_out=unreadable)
            write_ranking(ranking, out_dir)
        else:
            notes += [f"Not ranked: {name} ({why})." for name, why in unreadable.items()]
            if boards:
                notes.append("One benchmark only: no ranking across benchmarks.")
        cost_png, cost_notes = cost_plot(Path(out_dir) / f"cost__{task}.png", task, boards)
        summaries.append(TaskSummary(task, ranking, cost_png, notes + cost_notes))
    return summaries


def write_benchmark_tables(folder: str | Path, out_dir: str | Path, config: TaskConfig | None = None,
                           benchmark: BenchmarkId | None = None, track: str | None = None) -> list[Path]:
    """Every table of one benchmark folder ``<runs>/<task>/<dataset>/<profile>/`` (returned, Markdown): its
    leaderboard; the augmentation matrix of a study profile; the leakage report when the photo-level-fold
    sibling exists; the side-by-side table of its companion profiles when they have been run. ``matcv bench``
    and ``matcv leaderboard`` both write through here. ``config``: the task YAML the runs were made with (``matcv
    bench`` passes it, so a YAML of the user's own keeps its metric directions and study); by default the copy of
    a user's YAML the harness kept in the folder, else the built-in YAML of the folder's task and dataset.

    Every table shows one benchmark, ``benchmark`` = (fold manifest sha256, data sha256): ``matcv bench``
    names the one it ran; by default the newest data version on the folder's own ``fold_manifest.json``
    (``matcv.leaderboard.build.choose_benchmark``). Runs on other fold manifests or data versions in the folder
    are counted under the leaderboard, never mixed into it. ``track``: only that track's models in the
    leaderboard (the other tables keep every model)."""
    folder = Path(folder)
    records_path = folder / "records.jsonl"
    task, profile = folder.parents[1].name, folder.name
    if benchmark is None:
        with warnings.catch_warnings():  # unreadable lines are reported once, by the leaderboard's own load
            warnings.simplefilter("ignore")
            benchmark = choose_benchmark(RunRecords(records_path).load(TABLE_KEYS), own_manifest_sha256(folder))
        if benchmark is None:  # no readable record (yet): no table; the load below says which lines it skipped
            return list(write_leaderboard(records_path, out_dir, []))
    try:
        own = folder / TASK_YAML_COPY  # the user's own YAML the runs were made with, kept by the harness
        config = config or (TaskConfig.load(own) if own.is_file() else TaskConfig.for_dataset(task, folder.parent.name))
        metrics = config.metrics
        study = config.profile(profile).get("augmentation_study")
        comparison = config.raw.get("comparison")
        lower_is_better = config.lower_is_better
        companions = config.profile(profile).get("companion_profiles", [])
    except ConfigError:  # a task YAML of the user's own: no study, metrics from the records of the benchmark shown
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metrics = sorted({m for r in RunRecords(records_path).load(TABLE_KEYS) if benchmark_of(r) == benchmark
                              for m in r.get("metrics", {})})
        study = comparison = None
        lower_is_better, companions = [], []
    written = list(write_leaderboard(records_path, out_dir, metrics, comparison=comparison,
                                     lower_is_better=lower_is_better, benchmark=benchmark, track=track))
    if study:
        written.append(write_augmentation_matrix(records_path, out_dir, metrics[0], study, benchmark))
    leaky = folder.parent / (profile + PHOTO_FOLDS_SUFFIX) / "records.jsonl"
    if leaky.exists():
        written.append(write_leakage_report(records_path, leaky, out_dir, metrics, benchmark))
    others = [companion_records(folder, name) for name in companions]
    if others and all(path is not None for path in others):  # the protocols' side-by-side table
        written.append(write_profile_summary([records_path, *others], out_dir, metrics, lower_is_better,
                                             benchmark))
    # Runs at several training fractions (--train-fraction): their learning curve, beside the leaderboard.
    curve = write_learning_curves(records_path, out_dir, metrics[0] if metrics else None, benchmark,
                                  bool(metrics) and metrics[0] in lower_is_better)
    if curve is not None:
        written.append(curve)
    return written
