"""A static, self-contained HTML leaderboard page (``leaderboard/results/index.html``).

Sections: every official benchmark with accepted submissions (table, per-fold scores plot, per-item rank
plot), the rejected submissions with their reasons, then the built-in leaderboards written by
``matcv leaderboard``. Plots are embedded as base64 PNGs, so the page is one file; every text that comes
from a submission is HTML-escaped.
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

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; }
th { background: #eef2f7; } tr.submission td { background: #fff7e0; }
.rejected li { color: #a40000; } img { max-width: 100%; border: 1px solid #ddd; margin: 0.4em 0; }
.note { color: #555; font-size: 0.9em; }
"""


def _e(value) -> str:
    """Any text on the page, escaped; a character no UTF-8 page can hold (a lone surrogate, e.g. from a folder
    name that is not UTF-8) or a control character is shown as its escape."""
    return html.escape(printable_text(str(value)), quote=True)


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
    try:
        value = float(value)
    except (TypeError, ValueError):
        return _e(value)
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


def _builtin_section(markdown: Path) -> str:
    csv = markdown.with_suffix(".csv")
    title = markdown.read_text().splitlines()[0].lstrip("# ") if markdown.is_file() else markdown.stem
    parts = [f"<section class=\"builtin\"><h2>{_e(title)}</h2>"]
    try:
        table = pd.read_csv(csv) if csv.is_file() and csv.stat().st_size else pd.DataFrame()
    except pd.errors.EmptyDataError:
        table = pd.DataFrame()
    if {"rank", "model"} <= set(table.columns):
        means = [c for c in table.columns if c.endswith("_mean") and c != "fit_s_mean"]
        header = ["rank", "model"] + (["folds"] if "n_folds" in table else [])
        header += [c.removesuffix("_mean") for c in means]
        parts.append("<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr></thead><tbody>")
        for row in table.to_dict("records"):
            cells = [row["rank"], row["model"]] + ([row["n_folds"]] if "n_folds" in table else [])
            cells += [f"{_number(row[c])} ± {_number(row.get(c.removesuffix('_mean') + '_std'))}" for c in means]
            parts.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
        parts.append("</tbody></table>")
    else:
        parts.append(f"<p class=\"note\">See <code>{_e(markdown.name)}</code>.</p>")
    parts.append(_img(markdown.with_suffix(".png"), "per fold"))
    parts.append("</section>")
    return "\n".join(parts)


def write_html(out_dir: str | Path, boards: list, verdicts: list, builtin_markdown: list[Path]) -> Path:
    """Write ``out_dir/index.html`` atomically and return its path."""
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
    body += [_section(_builtin_section, path, f"table {Path(path).name}") for path in builtin_markdown]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'\"><title>matcv leaderboard</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    return atomic_write_text(out_dir / "index.html", page)
