"""Leaderboard tables of accepted submissions: each official benchmark's submissions beside the built-in models
the harness ran on the same official fold manifest (and data), ranked on metrics recomputed from the
predictions (``validate.py``); claimed numbers are never shown."""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from matcv.datamodules.core.atomic_io import atomic_write_text
from matcv.datamodules.core.config import TaskConfig
from matcv.datamodules.core.records import OK, RunRecords
from matcv.datamodules.core.submission_format import printable_text
from matcv.leaderboard.build import format_mean_std, leaderboard_table
from matcv.leaderboard.comparison import item_ranks, paired_item_scores, rank_shares
from matcv.leaderboard.plots import per_fold_plot, rank_share_plot
from matcv.leaderboard.scorers import Scorer, scorer_for
from matcv.leaderboard.submission.validate import Verdict

SUBMISSION_SUFFIX = " (submission)"


def submission_records(verdict: Verdict) -> list[dict]:
    """An accepted submission as harness-like run records (recomputed metrics only), one per fold."""
    meta, entry = verdict.metadata, verdict.entry
    return [{"task": meta["task"], "dataset": meta["dataset"], "profile": meta["profile"], "status": "ok",
             "model": meta["name"] + SUBMISSION_SUFFIX, "fold": fold["fold"], "metrics": fold["metrics"],
             "per_image": fold["per_item"], "fold_manifest_sha256": entry["sha256"],
             "fold_manifest": f"leaderboard/official/{entry['path']}", "data_sha256": verdict.data_sha256,
             "durations": {"fit_s": math.nan}, "config_hash": "submission", "submission": True,
             "model_card": meta.get("card")}  # its track (matcv.leaderboard.model_cards.model_track)
            for fold in verdict.folds]


@dataclass
class SubmissionBoard:
    """One official benchmark's table: accepted submissions beside the built-in models run on its manifest."""

    key: str  # task/dataset/profile
    entry: dict
    metrics: list[str]
    table: object  # pandas DataFrame, ranked
    per_fold: dict[str, list[float]]
    rank_shares: object  # models x places (first metric), empty without paired items
    markdown: Path
    csv: Path
    per_fold_png: Path | None
    ranks_png: Path | None
    submissions: list[Verdict]


_MARKDOWN_SYNTAX = re.compile(r"([\\\[\]*_|#!])")


def _one_line(text: str, limit: int = 500) -> str:
    """Submitted free text in a Markdown line, shown as text: one line, bounded length, no backticks breaking the
    layout, HTML (``<script>``, ``<img onerror>``) escaped as in the page and link/emphasis syntax escaped, since
    many Markdown renderers pass raw HTML and links through."""
    text = " ".join(printable_text(text).replace("`", "'").split())
    text = text if len(text) <= limit else text[:limit] + "…"
    return _MARKDOWN_SYNTAX.sub(r"\\\1", html.escape(text, quote=False))


def _code(text: str) -> str:
    """A model reference as code when it looks like one (``package.module:attribute``), else as escaped text."""
    text = printable_text(text)
    return f"`{text}`" if re.fullmatch(r"[\w.:/-]{1,200}", text) else _one_line(text)


def builtin_records(runs_dir: str | Path | list, entry: dict, data_sha256: str | None) -> list[dict]:
    """The built-in models' successful runs on exactly this official manifest (and data), if any were run.
    ``runs_dir``: a folder of runs, or several searched in order (local runs, then the published reference
    board): the first that holds the benchmark gives its records."""
    roots = [Path(r) for r in runs_dir] if isinstance(runs_dir, (list, tuple)) else [Path(runs_dir)]
    paths = [root / entry["task"] / entry["dataset"] / entry["profile"] / "records.jsonl" for root in roots]
    path = next((p for p in paths if p.exists()), paths[0])
    return [r for r in RunRecords(path).load() if r.get("status") == OK
            and r.get("fold_manifest_sha256") == entry["sha256"]
            and (data_sha256 is None or r.get("data_sha256") == data_sha256)] if path.exists() else []


def board_metrics(entry: dict, scorer: Scorer) -> tuple[list[str], set[str]]:
    """The scorer's metrics in the order of the benchmark's task YAML (the first ranks: the superalloy data
    ranks by mIoU, the corrosion panels by Dice), and those of them that are errors (ranked smallest first)."""
    config = TaskConfig.load(entry["config"])
    order = config.metrics
    metrics = [m for m in order if m in scorer.metrics] + [m for m in scorer.metrics if m not in order]
    return metrics, set(config.lower_is_better) & set(metrics)


def write_submission_boards(verdicts: list[Verdict], runs_dir: str | Path | list,
                            out_dir: str | Path) -> list[SubmissionBoard]:
    """``<task>__<dataset>__<profile>__submissions.md/.csv/.png/__ranks.png`` under ``out_dir`` for every
    official benchmark with an accepted submission."""
    out_dir = Path(out_dir)
    grouped: dict[str, list[Verdict]] = {}
    for verdict in verdicts:
        if verdict.ok:
            meta = verdict.metadata
            grouped.setdefault(f"{meta['task']}/{meta['dataset']}/{meta['profile']}", []).append(verdict)
    boards = []
    for key, accepted in sorted(grouped.items()):
        try:
            boards.append(_write_board(key, accepted, runs_dir, out_dir))
        except Exception as error:  # one benchmark's table failing must not cost the others, nor the page
            print(f"NOT WRITTEN the submissions table of {key}: {type(error).__name__}: "
                  f"{printable_text(error)}", flush=True)
    return boards


def _write_board(key: str, accepted: list[Verdict], runs_dir: str | Path | list, out_dir: Path) -> SubmissionBoard:
    """One official benchmark's table (Markdown, CSV) and plots."""
    entry = accepted[0].entry
    metrics, lower = board_metrics(entry, scorer_for(entry["task"]))
    higher = metrics[0] not in lower
    builtin = builtin_records(runs_dir, entry, accepted[0].data_sha256)
    records = builtin + [r for v in accepted for r in submission_records(v)]
    board = leaderboard_table(records, metrics, lower)
    table = board.table
    table.insert(2, "kind", ["submission" if m.endswith(SUBMISSION_SUFFIX) else "built-in" for m in table["model"]])
    scores = paired_item_scores(records, metrics[0])
    shares = rank_shares(scores, higher) if not scores.empty else pd.DataFrame()
    mean_rank = item_ranks(scores, higher).mean() if not scores.empty else pd.Series(dtype=float)
    table[f"{metrics[0]}_item_rank"] = table["model"].map(mean_rank).astype(float)
    stem = out_dir / f"{key.replace('/', '__')}__submissions"
    title = f"matcv submissions: {key} (official fold manifest {entry['sha256'][:12]})"
    fold_png = per_fold_plot(stem.with_suffix(".png"), board.per_fold, metrics[0], f"submissions: {key}")
    ranks_png = None
    if len(shares) > 1:
        shares = shares.loc[[m for m in table["model"] if m in shares.index]]
        ranks_png = rank_share_plot(stem.parent / f"{stem.name}__ranks.png", shares, metrics[0],
                                    f"submissions: {key}")
    lines = [f"# {title}", "",
             f"Submissions (marked *submission*) are scored by matcv from their test predictions against the "
             f"ground truth (claimed numbers are never shown); built-in models are the harness's runs on the "
             f"same official folds (`leaderboard/official/{entry['path']}`). Mean ± std over folds, ranked by "
             f"{metrics[0]} ({'higher' if higher else 'lower'} is better).", ""]
    header = ["rank", "model", "kind", "folds"] + [f"{m} (mean ± std)" for m in metrics] + \
             [f"{metrics[0]} per fold", f"{metrics[0]} rank/img"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.to_dict("records"):
        rank_cell = "–" if math.isnan(row[f"{metrics[0]}_item_rank"]) else f"{row[f'{metrics[0]}_item_rank']:.2f}"
        cells = [str(row["rank"]), row["model"], row["kind"], str(row["n_folds"])]
        cells += [format_mean_std(row[f"{m}_mean"], row[f"{m}_std"]) for m in metrics]
        cells += [row[f"{metrics[0]}_per_fold"], rank_cell]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"![{metrics[0]} per fold]({fold_png.name})"]
    if ranks_png:
        lines += ["", f"![{metrics[0]} rank per image]({ranks_png.name})"]
    lines += ["", "Submissions:", ""]
    for verdict in accepted:
        meta = verdict.metadata
        lines.append(f"- `{meta['name']}` by {_one_line(', '.join(map(str, meta['authors']))) or 'anonymous'}: "
                     f"{_one_line(meta['description']) or '(no description)'} (model "
                     f"{_code(meta['model']['reference'])}, hyper-parameters "
                     f"{_one_line(json.dumps(meta['hyperparameters'], sort_keys=True))}, tuned: "
                     f"{_one_line(meta['tuning']) or 'not stated'})")
    atomic_write_text(stem.with_suffix(".csv"), table.to_csv(index=False))
    markdown = atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    return SubmissionBoard(key, entry, metrics, table, board.per_fold, shares, markdown, stem.with_suffix(".csv"),
                           fold_png, ranks_png, accepted)
