"""A static, self-contained HTML leaderboard page (``leaderboard/results/index.html``).

Sections: every official benchmark with accepted submissions (table, per-fold scores plot, per-item rank
plot), the rejected submissions with their reasons, then per task the comparison across its benchmarks (mean
rank and critical-difference diagram, Demšar 2006; accuracy against training cost), then the built-in
leaderboards written by ``matcv leaderboard`` (with the confidence interval, seed spread, Holm-adjusted
comparison and cost columns where their CSV has them). Plots are embedded as base64 PNGs, so the page is one
file; every text on it is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import math
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from matcv.datamodules.core.atomic_io import atomic_write_text
from matcv.datamodules.core.submission_format import printable_text
from matcv.leaderboard.build import NEVER_PREDICTED, PER_CLASS_METRICS, per_class_classes
from matcv.leaderboard.ranking import CITATION, board_description, cd_summary, table_metrics

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; }
th { background: #eef2f7; } tr.submission td { background: #fff7e0; }
.rejected li { color: #a40000; } img { max-width: 100%; border: 1px solid #ddd; margin: 0.4em 0; }
.note { color: #555; font-size: 0.9em; } .wide { overflow-x: auto; }
"""


def _e(value) -> str:
    """Any text on the page, escaped; a character no UTF-8 page can hold (a lone surrogate, e.g. from a folder
    name that is not UTF-8) or a control character is shown as its escape."""
    return html.escape(printable_text(str(value)), quote=True)


escape_text = _e  # the public name other page writers (``matcv.leaderboard.site``) use


def _section(write, item, what: str) -> str:
    """One section of the page; one that cannot be written is a note on the page, not a page left unwritten."""
    try:
        return write(item)
    except Exception as error:
        return f"<p class=\"note\">The {_e(what)} could not be shown: {_e(type(error).__name__)}: {_e(error)}</p>"


def _img(path: Path | None, alt: str) -> str:
    if path is None or not Path(path).is_file():
        return ""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _number(value, fmt: str = ".4f") -> str:
    """A number as text (escaped by the caller, with the cell it goes in)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "–" if math.isnan(value) else format(value, fmt)


def _submission_section(board) -> str:
    metrics, first = board.metrics, board.metrics[0]
    header = ["rank", "model", "kind", "folds"] + [f"{m} (mean ± std)" for m in metrics] + \
             [f"{first} per fold", f"{first} rank/img"]
    rows = []
    for row in board.table.to_dict("records"):
        cells = [row["rank"], row["model"], row["kind"], row["n_folds"]]
        cells += [f"{_number(row[f'{m}_mean'])} ± {_number(row[f'{m}_std'])}" for m in metrics]
        cells += [row[f"{first}_per_fold"], _number(row[f"{first}_item_rank"], ".2f")]
        css = ' class="submission"' if row["kind"] == "submission" else ""
        rows.append(f"<tr{css}>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    details = []
    for verdict in board.submissions:
        meta = verdict.metadata
        details.append(f"<li><b>{_e(meta['name'])}</b> by {_e(', '.join(map(str, meta['authors'])) or 'anonymous')}: "
                       f"{_e(meta['description'] or '(no description)')} — model <code>{_e(meta['model']['reference'])}"
                       f"</code>, tuned: {_e(meta['tuning'] or 'not stated')}, matcv "
                       f"<code>{_e(str(meta['matcv'].get('git_commit'))[:12])}</code></li>")
    return "\n".join([
        f"<section class=\"board\" id=\"{_e(board.key.replace('/', '__'))}\">",
        f"<h2>Submissions: {_e(board.key)}</h2>",
        f"<p class=\"note\">Official fold manifest <code>{_e(board.entry['sha256'][:16])}</code> "
        f"(<code>leaderboard/official/{_e(board.entry['path'])}</code>). Submission scores are recomputed by matcv "
        f"from the submitted test predictions; built-in models are the harness's runs on the same folds.</p>",
        "<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr></thead><tbody>",
        *rows, "</tbody></table>",
        f"<h3>{_e(first)} per fold</h3>", _img(board.per_fold_png, f"{first} per fold"),
        f"<h3>{_e(first)} rank per test item</h3>" if board.ranks_png else "",
        _img(board.ranks_png, f"{first} rank per item"),
        "<ul>", *details, "</ul>", "</section>"])


submission_section = _submission_section  # public: the interactive site shows the same submission details


def _p(value) -> str:
    """A p-value: "<0.001" below 0.001, "–" where there is none."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "–" if math.isnan(value) else "<0.001" if value < 0.001 else f"{value:.3f}"


def _true(value) -> bool:
    """A CSV boolean (True/False, 1/0; empty = not stated)."""
    return str(value).strip().lower() in ("true", "1", "1.0", "yes")


def _params(value) -> str:
    try:
        return f"{int(float(value)):,}"
    except (TypeError, ValueError, OverflowError):  # NaN, empty: not recorded
        return "–"


def _builtin_columns(table: pd.DataFrame) -> list[tuple[str, object]]:
    """(header, row -> cell text) for the columns the table has: older CSVs lack the CI, seed, comparison and
    cost columns, and get the table they always had."""
    columns: list[tuple[str, object]] = [("rank", lambda r: r["rank"]), ("model", lambda r: r["model"])]
    if "n_folds" in table:
        columns.append(("folds", lambda r: r["n_folds"]))
    per_class = {f"{m}_{name}" for name in per_class_classes(table.columns) for m in PER_CLASS_METRICS}
    for m in [m for m in table_metrics(table) if m not in per_class]:  # per-class scores: a table of their own
        columns.append((f"{m} (mean ± std)",
                        lambda r, m=m: f"{_number(r[f'{m}_mean'])} ± {_number(r.get(f'{m}_std'))}"))
        if {f"{m}_ci_low", f"{m}_ci_high"} <= set(table.columns):
            columns.append((f"{m} CI", lambda r, m=m: f"[{_number(r[f'{m}_ci_low'])}, {_number(r[f'{m}_ci_high'])}]"))
        if f"{m}_seed_std" in table:
            columns.append((f"{m} seed std", lambda r, m=m: _number(r[f"{m}_seed_std"])))
        if f"{m}_diff" in table:
            columns.append((f"{m} Δ baseline", lambda r, m=m: _number(r[f"{m}_diff"], "+.4f")))
        if f"{m}_p_holm" in table:
            columns.append((f"{m} p (Holm, groups)", lambda r, m=m: _p(r[f"{m}_p_holm"]) + _groups(r, m)))
        if f"{m}_tied_best" in table:
            columns.append((f"{m} vs best", lambda r, m=m: "best" if _true(r.get(f"{m}_is_best"))
                            else "≈ best" if _true(r[f"{m}_tied_best"]) else ""))
    if "params" in table:
        columns.append(("params", lambda r: _params(r["params"])))
    if "fit_s_mean" in table:
        columns.append(("fit s/fold", lambda r: _number(r["fit_s_mean"], ".1f")))
    if "infer_ms_per_item" in table:
        columns.append(("infer ms/item", lambda r: _number(r["infer_ms_per_item"], ".2f")))
    if "hardware" in table:
        columns.append(("hardware", lambda r: "–" if pd.isna(r["hardware"]) else r["hardware"]))
    if "track" in table:
        columns.append(("track", lambda r: "–" if pd.isna(r["track"]) else r["track"]))
    return columns


def _groups(row, metric: str) -> str:
    """" (n=8)": the number of groups a p-value was computed over, where the table says."""
    n = row.get(f"{metric}_n_groups")
    return "" if n is None or pd.isna(n) or pd.isna(row.get(f"{metric}_p_holm")) else f" (n={int(n)})"


BUILTIN_NOTES = {  # header suffix -> what the column means, said once under a table that has it
    " CI": "CI: 95 % interval [low, high] of the mean: a bootstrap that resamples specimen groups where the model "
           "has per-item scores, else a t-interval over folds (the Markdown table marks which)",
    " seed std": "seed std: spread between training seeds",
    " Δ baseline": "Δ baseline: mean over groups of (model − baseline)",
    " p (Holm, groups)": "p (Holm, groups): paired Wilcoxon test against the baseline over n specimen groups, "
                         "Holm-adjusted over the models compared",
    " vs best": "vs best: ≈ best when the 95 % interval of the difference to the best model includes 0",
    "track": "track: from scratch, pretrained (ImageNet), pretrained (in-domain) or extra data, from the model card",
}


def _per_class_table(table: pd.DataFrame) -> list[str]:
    """Multi-class segmentation: each class's IoU and Dice (mean ± std over folds) and the classes a model never
    predicted; nothing for a table without per-class columns."""
    classes = per_class_classes(table.columns)
    if not classes:
        return []
    header = ["model"] + [f"{m} {name}" for name in classes for m in PER_CLASS_METRICS] + ["never predicted"]
    parts = ["<h3>Per-class scores</h3><div class=\"wide\"><table><thead><tr>"
             + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for row in table.to_dict("records"):
        never = row.get(NEVER_PREDICTED)
        never = "–" if not isinstance(never, str) else never.replace(";", ", ") or "none"
        cells = [row["model"]] + [f"{_number(row.get(f'{m}_{name}_mean'))} ± {_number(row.get(f'{m}_{name}_std'))}"
                                  for name in classes for m in PER_CLASS_METRICS] + [never]
        parts.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    parts.append("</tbody></table></div>")
    note = ("Per test image, then averaged over each fold; a class absent from both the truth and the prediction "
            "of an image scores 1 there. never predicted: classes the model gave no pixel on any test image.")
    parts.append(f"<p class=\"note\">{_e(note)}</p>")
    return parts


def _builtin_section(markdown: Path) -> str:
    csv = markdown.with_suffix(".csv")
    title = markdown.read_text().splitlines()[0].lstrip("# ") if markdown.is_file() else markdown.stem
    parts = [f"<section class=\"builtin\"><h2>{_e(title)}</h2>"]
    try:
        table = pd.read_csv(csv) if csv.is_file() and csv.stat().st_size else pd.DataFrame()
    except pd.errors.EmptyDataError:
        table = pd.DataFrame()
    if {"rank", "model"} <= set(table.columns):
        columns = _builtin_columns(table)
        parts.append("<div class=\"wide\"><table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h, _ in columns)
                     + "</tr></thead><tbody>")
        for row in table.to_dict("records"):
            parts.append("<tr>" + "".join(f"<td>{_e(cell(row))}</td>" for _, cell in columns) + "</tr>")
        parts.append("</tbody></table></div>")
        notes = [note for suffix, note in BUILTIN_NOTES.items() if any(h.endswith(suffix) for h, _ in columns)]
        if notes:
            parts.append(f"<p class=\"note\">{_e('; '.join(notes))}.</p>")
        parts += _per_class_table(table)
    else:
        parts.append(f"<p class=\"note\">See <code>{_e(markdown.name)}</code>.</p>")
    parts.append(_img(markdown.with_suffix(".png"), "per fold"))
    parts.append("</section>")
    return "\n".join(parts)


def _place(value) -> str:
    value = float(value)
    return "–" if math.isnan(value) else f"{value:g}" if value.is_integer() else f"{value:.2f}"


def _ranking_html(ranking) -> list[str]:
    parts = []
    if ranking.boards:
        names = [board.name for board in ranking.boards]
        parts.append(f"<p class=\"note\">Each benchmark ranks its models by its own first metric (1 = best; tied "
                     f"models share the average place): {_e('; '.join(board_description(b) for b in ranking.boards))}. "
                     f"Models on more benchmarks first, then by mean rank.</p>")
        header = ["model", *names, "mean rank", "benchmarks", "mean rank (CD)"]
        parts.append("<div class=\"wide\"><table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header)
                     + "</tr></thead><tbody>")
        for row in ranking.table.to_dict("records"):
            cells = [row["model"], *(_place(row[name]) for name in names), _number(row["mean_rank"], ".2f"),
                     int(row["n_boards"]), _number(row["cd_mean_rank"], ".2f")]
            parts.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
        parts.append("</tbody></table></div>")
    if ranking.left_out_boards:
        parts.append("<ul>" + "".join(f"<li>Not ranked: {_e(name)} ({_e(why)})</li>"
                                      for name, why in ranking.left_out_boards.items()) + "</ul>")
    parts.append("<h3>Critical-difference diagram</h3>")
    if ranking.cd is not None:
        left_out = (f" Not on every benchmark, so not in the diagram: {', '.join(ranking.left_out_models)}."
                    if ranking.left_out_models else "")
        parts.append(f"<p class=\"note\">{_e(cd_summary(ranking.cd))} Mean rank (CD): places among the "
                     f"compared models only.{_e(left_out)}</p>")
        parts.append(_img(ranking.png, "critical-difference diagram"))
    else:
        parts.append(f"<p class=\"note\">{_e(' '.join(ranking.notes))}</p>")
    parts.append(f"<p class=\"note\">Friedman test and Nemenyi critical difference after {_e(CITATION)}.</p>")
    return parts


def _task_section(summary) -> str:
    """A task across its benchmarks: ``summary`` has ``task``, ``ranking`` (``matcv.leaderboard.ranking.Ranking``
    or None), ``cost_png`` and ``notes`` (``matcv.leaderboard.rebuild.TaskSummary``)."""
    parts = [f"<section class=\"task\" id=\"across__{_e(summary.task)}\">",
             f"<h2>Across benchmarks: {_e(summary.task)}</h2>"]
    if summary.ranking is not None:
        parts.append("<h3>Mean rank</h3>")
        parts += _ranking_html(summary.ranking)
    parts.append("<h3>Accuracy against training cost</h3>")
    if summary.cost_png is not None:
        parts.append(_img(summary.cost_png, f"{summary.task}: accuracy against training cost"))
    if summary.notes:
        parts.append("<ul class=\"note\">" + "".join(f"<li>{_e(note)}</li>" for note in summary.notes) + "</ul>")
    parts.append("</section>")
    return "\n".join(parts)


def write_html(out_dir: str | Path, boards: list, verdicts: list, builtin_markdown: list[Path],
               tasks: list | None = None) -> Path:
    """Write ``out_dir/index.html`` atomically and return its path. ``tasks``: one summary per task across its
    benchmarks (``matcv.leaderboard.rebuild.TaskSummary``)."""
    tasks = tasks or []
    out_dir = Path(out_dir)
    rejected = [v for v in verdicts if not v.ok]
    body = [f"<h1>matcv leaderboard</h1><p class=\"note\">Generated "
            f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} by <code>matcv leaderboard</code>: "
            f"{sum(v.ok for v in verdicts)} accepted submission(s), {len(rejected)} rejected, "
            f"{len(builtin_markdown)} built-in leaderboard(s).</p>"]
    body += [_section(_submission_section, board, f"submissions table of {board.key}") for board in boards]
    if not boards:
        body.append("<h2>Submissions</h2><p>No accepted submissions yet (<code>make submit</code>).</p>")
    if rejected:
        body.append("<section class=\"rejected\"><h2>Rejected submissions</h2><ul>")
        body += [f"<li><code>{_e(v.path)}</code>: {_e(v.reason)}</li>" for v in rejected]
        body.append("</ul></section>")
    body += [_section(_task_section, task, f"comparison across the benchmarks of {task.task}") for task in tasks]
    body += [_section(_builtin_section, path, f"table {Path(path).name}") for path in builtin_markdown]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'\"><title>matcv leaderboard</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    return atomic_write_text(out_dir / "index.html", page)
