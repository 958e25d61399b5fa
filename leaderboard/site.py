"""The interactive leaderboard page: one self-contained file, ``leaderboard/site/index.html``.

Opened straight from disk, with no server and no network: DataTables (through itables' offline bundle, its
Buttons extension for the CSV export and SearchPanes for the track filter) and plotly.js are inlined once, every
figure is a base64 image or an inline plotly figure, and a Content-Security-Policy forbids any fetch.

Pages ("tabs"): an overview; one per benchmark (task + dataset + profile) with its sortable, filterable table
(intervals, "tied with best", track), its difficulty slices, the official submissions on it and the whole
Markdown report the tables were written with (per-item comparison, per-class scores, leakage report, protocol
notes, failed runs: rendered by markdown-it, so nothing the Markdown holds is lost and nothing is recomputed);
one per task across its benchmarks (mean rank and critical-difference diagram, accuracy-vs-cost scatter,
learning curves where ``matcv.leaderboard.learning_curves`` exists); one per model (card, per-fold values,
per-class scores, example figures of its runs, links); the submissions (accepted and rejected with reasons).
Tabs are the browser's own ``:target`` sections (links ``#id``): no script switches them, so the page works
with every section's script failing. Every text is HTML-escaped; a section that fails to render is a note.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.util
import io
import json
import math
import numbers
import re
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from matcv.datamodules.core.atomic_io import atomic_write_text
from matcv.datamodules.core.config import ConfigError, TaskConfig
from matcv.datamodules.core.records import TABLE_KEYS, RunRecords
from matcv.leaderboard.build import NEVER_PREDICTED, PER_CLASS_METRICS, per_class_classes
from matcv.leaderboard.cost import cost_points
from matcv.leaderboard.html import escape_text as _e
from matcv.leaderboard.html import submission_section
from matcv.leaderboard.model_cards import CARDS_DIR, find_card
from matcv.leaderboard.ranking import Board, read_board, table_metrics

SITE_NAME = "index.html"
MAX_FIGURES_PER_RUN = 4  # example PNGs per model and benchmark: enough to see, small enough to open
FIGURE_WIDTH = 480  # px: example figures are downscaled to this width before embedding
LEARNING_CURVES = "matcv.leaderboard.learning_curves"

# Human names of the datasets (benchmark folder name, or its generator prefix before the data hash). The folder
# name stays on the page beside it: it is the provenance (a generated dataset's name carries its settings' hash).
DATASET_TITLES = {
    "nasa-superalloy": "NASA Ni-superalloy (Stuckner et al. 2022)",
    "synthetic-panels": "synthetic corrosion panels",
    "localization": "synthetic elastic localization fields",
    "gaussian-binary": "synthetic Gaussian-field microstructures (binary)",
    "alloy-micrographs": "synthetic alloy micrographs",
    "uhcsdb": "UHCSDB ultrahigh-carbon steel micrographs (Hecht et al. 2017)",
}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 0; color: #222; }
header { background: #1f3a5f; color: #fff; padding: 0.6em 1.2em; }
header a { color: #fff; } header .note { color: #dde; }
nav { display: flex; flex-wrap: wrap; gap: 0.3em; padding: 0.5em 1.2em; background: #eef2f7;
      border-bottom: 1px solid #ccd; position: sticky; top: 0; z-index: 10; }
nav a { padding: 0.25em 0.6em; border-radius: 4px; text-decoration: none; color: #1f3a5f; background: #fff;
        border: 1px solid #ccd; font-size: 0.9em; }
nav .group { font-weight: 600; padding: 0.25em 0.3em; font-size: 0.9em; }
main { padding: 0 1.2em 2em; max-width: 1400px; }
section.page { display: none; scroll-margin-top: 4em; } section.page:target { display: block; }
main:not(:has(section.page:target)) section.home { display: block; }
h1 { font-size: 1.5em; margin: 0.2em 0; } h2 { font-size: 1.3em; margin-top: 1.2em; }
h3 { font-size: 1.1em; margin-top: 1.4em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.88em; } th, td { padding: 0.2em 0.5em; }
table.md-table th, table.md-table td, table.plain th, table.plain td { border: 1px solid #ccc; }
.wide { overflow-x: auto; } .note { color: #555; font-size: 0.9em; } code { font-size: 0.92em; }
.error { color: #a40000; } img { max-width: 100%; border: 1px solid #ddd; margin: 0.3em 0; }
.report { background: #fafbfc; border: 1px solid #e4e7eb; padding: 0.2em 1em; margin-top: 1em; }
dl.card { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dl.card dt { font-weight: 600; }
"""

# Markdown tables become DataTables with a CSV button. This is the only hand-written script: the tables are
# already in the page (rendered from the Markdown), and itables only builds tables from DataFrames; the
# DataTable constructor it bundles does the work.
MARKDOWN_TABLES_JS = """
<script type="module">
(async () => {
  async function init() {
    const { default: DataTable } = await window.%s;
    document.querySelectorAll("table.md-table:not(.dataTable)").forEach(table => {
      new DataTable(table, {paging: false, info: false, order: [], autoWidth: false,
                            layout: {topStart: "buttons", topEnd: "search"}, buttons: ["csvHtml5"]});
    });
  }
  if (window.%s) { init(); } else { window.addEventListener("%s", init); }
})();
</script>
"""

CSP = ("default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval' blob:; style-src 'unsafe-inline'; "
       "img-src data: blob:; font-src data:; connect-src 'none'")


def slug(*parts: str) -> str:
    """An HTML id for a page: readable, and unique even when two names differ only in characters an id drops."""
    text = "--".join(parts)
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"
    return f"{safe}-{hashlib.sha1(text.encode('utf-8', 'surrogatepass')).hexdigest()[:6]}"


def model_page_id(task: str, model: str) -> str:
    return "model-" + slug(task, model)


def dataset_title(task: str, dataset: str) -> str:
    """The dataset's human name (``DATASET_TITLES``; a generated dataset by its generator, the part of its folder
    name before the data hash), else the folder name with dashes as spaces."""
    if dataset in DATASET_TITLES:
        return DATASET_TITLES[dataset]
    base = re.sub(r"-[0-9a-f]{12,}(-.*)?$", "", dataset)
    if base in DATASET_TITLES:
        return DATASET_TITLES[base]
    return base.replace("-", " ").replace("_", " ")


def _task_description(task: str, dataset: str) -> str | None:
    try:
        return TaskConfig.for_dataset(task, dataset).raw.get("description")
    except (ConfigError, OSError, ValueError):
        return None


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _guarded(write, what: str) -> str:
    """One section; one that cannot be written becomes a note naming it and the error, not a broken page."""
    try:
        return write()
    except Exception as error:  # any failure of one section must leave the rest of the page
        return f'<p class="note error">The {_e(what)} could not be shown: {_e(type(error).__name__)}: {_e(error)}</p>'


# ---------------------------------------------------------------- libraries: DataTables (itables) and plotly


def _itables_head() -> tuple[str, str, str]:
    """(the offline DataTables bundle, once per page; the window property holding its module's promise; the
    event fired when it is ready): itables' own offline loader, so the page needs no network."""
    from itables import javascript
    from itables import options as opt

    bundle = javascript.generate_init_offline_itables_html(opt.dt_bundle)
    return bundle, javascript._itables_underscore_version(), javascript._itables_ready_event()


def _cell(value):
    """A DataFrame cell for DataTables: numbers stay numbers (so columns sort numerically), text is escaped
    (the tables allow HTML for the model links), NaN is empty."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Real):  # numpy's too
        if not isinstance(value, numbers.Integral):
            return "" if math.isnan(value) else round(float(value), 4)
        return int(value)
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    return _e(value)


def datatable(frame: pd.DataFrame, table_id: str, links: dict[str, str] | None = None,
              filter_column: str | None = None) -> str:
    """A sortable, searchable DataTable with a CSV button (itables, offline). ``links``: model -> page id, made
    links in the ``model`` column; ``filter_column``: a SearchPanes filter on that column (the track)."""
    from itables import to_html_datatable

    # built column by column as objects: a float column would turn the empty cells back into NaN
    shown = pd.DataFrame({i: pd.Series([_cell(v) for v in frame[c]], dtype=object)
                          for i, c in enumerate(frame.columns)})
    shown.columns = list(frame.columns)
    if links and "model" in frame:
        shown["model"] = [f'<a class="model-link" href="#{links[m]}">{_e(m)}</a>' if m in links else _e(m)
                          for m in frame["model"]]
    shown.columns = [_e(c) for c in shown.columns]
    options = dict(connected=False, table_id=table_id, allow_html=True, paging=False, order=[],
                   buttons=[{"extend": "csvHtml5", "title": table_id}],
                   layout={"topStart": "buttons", "topEnd": "search", "bottomStart": "info"},
                   classes="display compact cell-border", showIndex=False,
                   text_in_header_can_be_selected=False)  # a click anywhere on a header sorts
    if filter_column is not None and filter_column in frame:
        index = list(frame.columns).index(filter_column)
        options["layout"]["top1"] = "searchPanes"
        options["searchPanes"] = {"columns": [index], "layout": "columns-1", "initCollapsed": False,
                                  "cascadePanes": False, "viewTotal": True,
                                  "dtOpts": {"scrollY": "5em"}}
        options["columnDefs"] = [{"searchPanes": {"show": True}, "targets": [index]}]
    return f'<div class="wide">{to_html_datatable(shown, **options)}</div>'


def _plotly_div(figure) -> str:
    # plotly.js itself is inlined once in the page head (``write_site``); every figure only adds its div.
    return figure.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False,
                                                                           "responsive": False})


# ---------------------------------------------------------------- Markdown reports and images


def _png_data_uri(path: Path, width: int | None = None) -> str | None:
    """A PNG as a data URI, downscaled to ``width`` pixels (keeping its aspect) when wider; None if unreadable."""
    try:
        if width is None:
            return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
        from PIL import Image

        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.width > width:
                image = image.resize((width, max(1, round(image.height * width / image.width))))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", optimize=True)
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    except (OSError, ValueError):
        return None


def _img(path: Path | None, alt: str, width: int | None = None) -> str:
    uri = _png_data_uri(Path(path), width) if path is not None and Path(path).is_file() else None
    return f'<img alt="{_e(alt)}" src="{uri}">' if uri else ""


def markdown_html(markdown: Path) -> str:
    """A Markdown report as HTML (markdown-it with raw HTML off: every text escaped); its images, PNGs beside it,
    embedded; its tables marked for DataTables."""
    from markdown_it import MarkdownIt

    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    folder = markdown.parent

    def image(renderer, tokens, index, options, env):
        token = tokens[index]
        source, alt = token.attrGet("src") or "", token.content or ""
        path = folder / source
        if "/" in source or "\\" in source or not path.is_file():  # only the PNGs written beside the report
            return _e(f"[{alt}]")
        return _img(path, alt)

    parser.add_render_rule("image", image)
    rendered = parser.render(markdown.read_text(encoding="utf-8", errors="replace"))
    return rendered.replace("<table>", '<table class="md-table display compact">')


# ---------------------------------------------------------------- benchmark pages


def _is_multi_seed(table: pd.DataFrame) -> bool:
    return "n_runs" in table and "n_folds" in table and bool((table["n_runs"] > table["n_folds"]).any())


def _interval(row, low: str, high: str, kind: str | None = None) -> str | None:
    a, b = row.get(low), row.get(high)
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return None
    if math.isnan(a) or math.isnan(b):
        return None
    mark = {"group bootstrap": " (g)", "t over folds": " (t)"}.get(str(row.get(kind)), "") if kind else ""
    return f"[{a:.4f}, {b:.4f}]{mark}"


def _true(value) -> bool:
    return str(value).strip().lower() in ("true", "1", "1.0", "yes")


def board_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard CSV (``matcv.leaderboard.build``'s column contract) as the page's table: numbers stay
    numbers; intervals, "best" / "≈ best" and the Holm-adjusted p as the Markdown gives them."""
    per_class = {f"{m}_{name}" for name in per_class_classes(table.columns) for m in PER_CLASS_METRICS}
    metrics = [m for m in table_metrics(table) if m not in per_class]
    seeds = _is_multi_seed(table)
    rows = []
    for r in table.to_dict("records"):
        row = {"rank": r.get("rank"), "model": str(r["model"]), "track": r.get("track")}
        for key, label in (("n_folds", "folds"), ("n_seeds", "seeds")):
            if key in table:
                row[label] = r[key]
        for m in metrics:
            row[f"{m} mean"], row[f"{m} std"] = r.get(f"{m}_mean"), r.get(f"{m}_std")
            if f"{m}_ci_low" in table:
                row[f"{m} 95% CI"] = _interval(r, f"{m}_ci_low", f"{m}_ci_high", f"{m}_ci_kind")
            if seeds and f"{m}_seed_std" in table:
                row[f"{m} seed std"] = r.get(f"{m}_seed_std")
            if f"{m}_tied_best" in table:
                row[f"{m} vs best"] = ("best" if _true(r.get(f"{m}_is_best"))
                                       else "≈ best" if _true(r.get(f"{m}_tied_best")) else "")
            if f"{m}_diff" in table:
                row[f"{m} Δ baseline"] = r.get(f"{m}_diff")
                if f"{m}_diff_ci_low" in table:
                    row[f"{m} Δ 95% CI"] = _interval(r, f"{m}_diff_ci_low", f"{m}_diff_ci_high")
            if f"{m}_p_holm" in table:
                row[f"{m} p (Holm)"] = r.get(f"{m}_p_holm")
                if f"{m}_n_groups" in table:
                    row[f"{m} groups"] = r.get(f"{m}_n_groups")
            if f"{m}_item_rank" in table:
                row[f"{m} rank/item"] = r.get(f"{m}_item_rank")
        for key, label in (("fit_s_mean", "fit s/run"), ("infer_ms_per_item", "infer ms/item"),
                           ("params", "params"), ("hardware", "hardware")):
            if key in table:
                row[label] = r.get(key)
        if metrics and f"{metrics[0]}_per_fold" in table:
            row[f"{metrics[0]} per fold"] = r.get(f"{metrics[0]}_per_fold")
        rows.append(row)
    frame = pd.DataFrame(rows)
    if "track" in frame and frame["track"].isna().all():
        frame = frame.drop(columns="track")
    return frame


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file() or not path.stat().st_size:
        return pd.DataFrame()
    try:
        return pd.read_csv(path, keep_default_na=True)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


class Site:
    """The page being assembled: its benchmark, task, model and submission pages."""

    def __init__(self, out_dir: Path, runs_dir: Path | None, cards_dir: Path | None,
                 reference_dir: Path | None = None):
        self.out_dir, self.runs_dir, self.cards_dir = out_dir, runs_dir, cards_dir
        self.reference_dir = reference_dir
        self.boards: dict[str, dict] = {}  # stem -> {task, dataset, profile, markdown, reports, submissions}
        self.models: dict[tuple[str, str], list[tuple[str, dict]]] = {}  # (task, model) -> [(stem, csv row)]
        self.submitted: dict[tuple[str, str], dict] = {}  # (task, model) -> a submission's metadata
        self.figures = 0  # plotly figures on the page: plotly.js is inlined only when there is one

    def benchmark_folder(self, task: str, dataset: str, profile: str) -> Path | None:
        """The run folder a board's table was built from: the local run, else its published reference copy."""
        for root in (self.runs_dir, self.reference_dir):
            if root is not None and (root / task / dataset / profile / "records.jsonl").is_file():
                return root / task / dataset / profile
        return None

    def links(self, task: str) -> dict[str, str]:
        return {model: model_page_id(t, model) for t, model in self.models if t == task}

    # benchmarks
    def add_markdown(self, markdown: Path) -> None:
        parts = markdown.stem.split("__")
        table = _read_csv(markdown.with_suffix(".csv"))
        if len(parts) == 3 and {"rank", "model"} <= set(table.columns):
            task, dataset, profile = parts
            board = self.boards.setdefault(markdown.stem, {"reports": [], "submissions": []})
            board.update(task=task, dataset=dataset, profile=profile, markdown=markdown, table=table)
            for row in table.to_dict("records"):
                self.models.setdefault((task, str(row["model"])), []).append((markdown.stem, row))
            return
        # a report beside a benchmark (leakage, augmentation matrix, protocols side by side): on its page
        owner = next((stem for stem in self.boards if markdown.stem.startswith(stem + "__")), None)
        owner = owner or next((stem for stem in self.boards if markdown.stem.startswith("__".join(parts[:2]))), None)
        if owner is not None:
            self.boards[owner]["reports"].append(markdown)
        else:
            self.boards.setdefault(markdown.stem, {"reports": [markdown], "submissions": []}).update(
                task=parts[0], dataset=parts[1] if len(parts) > 1 else "", profile="__".join(parts[2:]),
                markdown=None, table=pd.DataFrame())

    def board_id(self, stem: str) -> str:
        return "board-" + slug(stem)

    def board_label(self, board: dict) -> str:
        return f"{dataset_title(board['task'], board['dataset'])} ({board['profile']})"

    def board_page(self, stem: str, board: dict) -> str:
        task, dataset = board["task"], board["dataset"]
        parts = [f'<section class="page board" id="{self.board_id(stem)}">',
                 f"<h2>{_e(task)}: {_e(self.board_label(board))}</h2>",
                 f'<p class="note">Dataset <code>{_e(dataset)}</code> (provenance: the benchmark folder '
                 f"<code>{_e(task)}/{_e(dataset)}/{_e(board['profile'])}</code>)"
                 + (f" — {_e(_task_description(task, dataset))}" if _task_description(task, dataset) else "")
                 + "</p>"]
        if not board["table"].empty:
            parts.append("<h3>Leaderboard</h3>")
            parts.append(_guarded(lambda: datatable(board_frame(board["table"]), "table-" + slug(stem),
                                                    self.links(task), filter_column="track"),
                                  f"table of {stem}"))
            parts.append(_note("Click a model for its page. mean/std: over folds; 95% CI: (g) group bootstrap of "
                               "the per-item scores, (t) t-interval over folds; vs best: ≈ best when the 95 % "
                               "interval of the difference to the best model includes 0; p (Holm): paired "
                               "Wilcoxon test against the baseline over specimen groups, Holm-adjusted; track: "
                               "from the model card. The full report below explains every column."))
        slices = self.out_dir / f"{stem}__slices.csv"
        if slices.is_file():
            parts.append("<h3>Difficulty slices</h3>")
            parts.append(_guarded(lambda: datatable(_read_csv(slices), "slices-" + slug(stem), self.links(task)),
                                  f"difficulty slices of {stem}"))
        for sub in board["submissions"]:
            parts.append(f"<h3>Official submissions on {_e(sub.key)}</h3>")
            parts.append(_guarded(lambda sub=sub: self.submission_board(sub), f"submissions of {sub.key}"))
        reports = ([board["markdown"]] if board["markdown"] else []) + board["reports"]
        for report in reports:
            parts.append(f'<h3>Report: <code>{_e(report.name)}</code></h3><div class="report">')
            parts.append(_guarded(lambda report=report: markdown_html(report), f"report {report.name}"))
            parts.append("</div>")
        parts.append("</section>")
        return "\n".join(parts)

    def submission_board(self, sub) -> str:
        table = sub.table.copy() if isinstance(sub.table, pd.DataFrame) else pd.DataFrame(sub.table)
        task = sub.key.split("/")[0]
        return (datatable(table, "submissions-" + slug(sub.key), self.links(task))
                + submission_section(sub))

    # tasks
    def task_boards(self, summary) -> list[Board]:
        if summary.ranking is not None and summary.ranking.boards:
            return list(summary.ranking.boards)
        smoke = " ".join(n for n in summary.notes if n.startswith("Smoke-test profiles left out"))
        boards = []
        for stem, board in self.boards.items():
            name = f"{board['dataset']}/{board['profile']}"
            if board["task"] == summary.task and not board["table"].empty and name not in smoke:
                boards.append(read_board(board["markdown"].with_suffix(".csv"), name))
        return boards

    def cost_figure(self, summary) -> str:
        import plotly.graph_objects as go

        points, notes = cost_points(self.task_boards(summary))
        if points.empty:
            return _note("No model has both a training time and a score: no accuracy-vs-cost scatter.")
        figure = go.Figure()
        for name, group in points.groupby("board", sort=False):
            figure.add_trace(go.Scatter(
                x=group["fit_s"], y=group["y"], mode="markers+text", name=str(name), text=list(group["model"]),
                textposition="top center",
                error_y={"type": "data", "symmetric": False, "array": group["err_high"],
                         "arrayminus": group["err_low"]},
                customdata=group[["metric", "error", "hardware"]].to_numpy(),
                hovertemplate="%{text}<br>fit %{x:.1f} s/run<br>%{customdata[0]} %{y:.4f} "
                              "(bars: %{customdata[1]})<br>%{customdata[2]}<extra>%{fullData.name}</extra>"))
        figure.update_layout(width=900, height=520, xaxis={"type": "log", "title": "training seconds per run"},
                             yaxis={"title": "score (each benchmark's first metric)"},
                             title=f"{summary.task}: accuracy against training cost", template="plotly_white")
        self.figures += 1
        return _plotly_div(figure) + "".join(_note(n) for n in notes)

    def learning_curves(self, summary) -> str:
        if importlib.util.find_spec(LEARNING_CURVES) is None:
            return ""
        import plotly.graph_objects as go

        learning_curve_table = importlib.import_module(LEARNING_CURVES).learning_curve_table
        parts = []
        for stem, board in self.boards.items():
            folder = self.benchmark_folder(board["task"], board["dataset"], board["profile"])
            records_path = folder / "records.jsonl" if folder is not None else None
            if board["task"] != summary.task or board["table"].empty or records_path is None:
                continue
            metric = table_metrics(board["table"])[0]
            records = RunRecords(records_path).load(TABLE_KEYS)
            curves = learning_curve_table(records, metric)
            if curves is None or curves.empty:
                continue
            figure = go.Figure()
            for model, group in curves.groupby("model", sort=False):
                group = group.sort_values("train_fraction")
                figure.add_trace(go.Scatter(x=group["train_fraction"], y=group["mean"], name=str(model),
                                            mode="lines+markers", error_y={"type": "data", "array": group["std"]}))
            figure.update_layout(width=900, height=480, template="plotly_white",
                                 title=f"{self.board_label(board)}: {metric} against training fraction",
                                 xaxis={"title": "fraction of the training split"}, yaxis={"title": metric})
            self.figures += 1
            parts.append(_plotly_div(figure))
            parts.append(datatable(curves, "learning-" + slug(stem), self.links(summary.task)))
        return ("<h3>Learning curves</h3>" + "\n".join(parts)) if parts else ""

    def task_page(self, summary) -> str:
        parts = [f'<section class="page task" id="task-{slug(summary.task)}">',
                 f"<h2>Across benchmarks: {_e(summary.task)}</h2>"]
        ranking = summary.ranking
        if ranking is not None:
            parts.append("<h3>Mean rank and critical difference</h3>")
            parts.append(_guarded(lambda: datatable(ranking.table, "ranking-" + slug(summary.task),
                                                    self.links(summary.task)), f"ranking of {summary.task}"))
            if ranking.markdown is not None and Path(ranking.markdown).is_file():
                parts.append('<div class="report">')
                parts.append(_guarded(lambda: markdown_html(Path(ranking.markdown)), f"ranking of {summary.task}"))
                parts.append("</div>")
            elif ranking.png is not None:
                parts.append(_img(ranking.png, "critical-difference diagram"))
        parts.append("<h3>Accuracy against training cost</h3>")
        parts.append(_guarded(lambda: self.cost_figure(summary), f"cost scatter of {summary.task}"))
        parts.append(_guarded(lambda: self.learning_curves(summary), f"learning curves of {summary.task}"))
        if summary.notes:
            parts.append("<ul class=\"note\">" + "".join(f"<li>{_e(n)}</li>" for n in summary.notes) + "</ul>")
        parts.append("</section>")
        return "\n".join(parts)

    # models
    def card_html(self, task: str, model: str) -> str:
        card = find_card(task, model, self.cards_dir) if self.cards_dir is not None else None
        if card is None and (task, model) in self.submitted:
            meta = self.submitted[(task, model)]
            card = {"name": meta.get("name"), "authors": meta.get("authors"),
                    "description": meta.get("description"), **(meta.get("model") or {}),
                    "hyperparameters": meta.get("hyperparameters"), "tuning": meta.get("tuning")}
        if card is None:
            return _note(f"No model card for {model} ({task}).")
        rows = []
        for key, value in card.items():
            if key in ("schema",) or value in (None, "", [], {}):
                continue
            text = ", ".join(map(str, value)) if isinstance(value, list) else (
                json.dumps(value, sort_keys=True) if isinstance(value, dict) else str(value))
            rows.append(f"<dt>{_e(key)}</dt><dd>{self.link_or_text(key, text)}</dd>")
        return '<dl class="card">' + "".join(rows) + "</dl>"

    @staticmethod
    def link_or_text(key: str, text: str) -> str:
        """Paper DOIs and http(s) URLs as links (opened outside the page); anything else as escaped text."""
        if re.fullmatch(r"https?://[^\s\"'<>]+", text):
            return f'<a href="{_e(text)}" rel="noopener noreferrer">{_e(text)}</a>'
        if key == "paper" and re.fullmatch(r"10\.\d{4,9}/\S+", text):
            url = "https://doi.org/" + quote(text, safe="/:.()-_;")
            return f'<a href="{_e(url)}" rel="noopener noreferrer">{_e(text)}</a>'
        return _e(text)

    def example_figures(self, task: str, board: dict, model: str) -> str:
        benchmark = self.benchmark_folder(task, board["dataset"], board["profile"])
        if benchmark is None:
            return ""
        folder = benchmark / model
        pngs = sorted(folder.glob("**/*.png"))[:MAX_FIGURES_PER_RUN] if folder.is_dir() else []
        return "".join(f"<figure>{_img(p, p.name, FIGURE_WIDTH)}<figcaption class=\"note\">"
                       f"{_e(p.relative_to(folder))}</figcaption></figure>" for p in pngs)

    def model_page(self, task: str, model: str, rows: list[tuple[str, dict]]) -> str:
        parts = [f'<section class="page model" id="{model_page_id(task, model)}">',
                 f"<h2>{_e(model)} <span class=\"note\">({_e(task)})</span></h2>", "<h3>Model card</h3>",
                 _guarded(lambda: self.card_html(task, model), f"card of {model}")]
        for stem, row in rows:
            board = self.boards[stem]
            parts.append(f'<h3>On <a href="#{self.board_id(stem)}">{_e(self.board_label(board))}</a> '
                         f'<span class="note">rank {_e(row.get("rank"))}</span></h3>')
            parts.append(_guarded(lambda row=row, board=board: self.model_scores(row, board["table"]),
                                  f"scores of {model} on {stem}"))
            parts.append(_guarded(lambda board=board: self.example_figures(task, board, model),
                                  f"figures of {model} on {stem}"))
        parts.append("</section>")
        return "\n".join(parts)

    @staticmethod
    def model_scores(row: dict, table: pd.DataFrame) -> str:
        per_class = {f"{m}_{name}" for name in per_class_classes(table.columns) for m in PER_CLASS_METRICS}
        metrics = [m for m in table_metrics(table) if m not in per_class]
        lines = ['<table class="plain"><thead><tr><th>metric</th><th>mean ± std</th><th>95% CI</th>'
                 "<th>per fold</th></tr></thead><tbody>"]
        for m in metrics:
            lines.append(f"<tr><td>{_e(m)}</td><td>{_e(_num(row.get(f'{m}_mean')))} ± {_e(_num(row.get(f'{m}_std')))}"
                         f"</td><td>{_e(_interval(row, f'{m}_ci_low', f'{m}_ci_high', f'{m}_ci_kind') or '–')}</td>"
                         f"<td>{_e(row.get(f'{m}_per_fold', '–'))}</td></tr>")
        lines.append("</tbody></table>")
        classes = per_class_classes(table.columns)
        if classes:
            lines.append('<p>Per-class scores (mean ± std over folds):</p><table class="plain"><thead><tr><th>class'
                         "</th>" + "".join(f"<th>{_e(m)}</th>" for m in PER_CLASS_METRICS) + "</tr></thead><tbody>")
            for name in classes:
                lines.append(f"<tr><td>{_e(name)}</td>" + "".join(
                    f"<td>{_e(_num(row.get(f'{m}_{name}_mean')))} ± {_e(_num(row.get(f'{m}_{name}_std')))}</td>"
                    for m in PER_CLASS_METRICS) + "</tr>")
            never = row.get(NEVER_PREDICTED)
            never = "– (no pixel counts)" if not isinstance(never, str) else never.replace(";", ", ") or "none"
            lines.append(f"</tbody></table><p>Never predicted: {_e(never)}</p>")
        return "\n".join(lines)

    # submissions
    def submissions_page(self, boards: list, verdicts: list) -> str:
        rejected = [v for v in verdicts if not v.ok]
        parts = ['<section class="page submissions" id="submissions"><h2>Submissions</h2>',
                 _note(f"{sum(v.ok for v in verdicts)} accepted, {len(rejected)} rejected. Accepted submissions "
                       "are on their benchmark's page too; scores are recomputed by matcv from the submitted "
                       "predictions.")]
        for sub in boards:
            parts.append(f"<h3>{_e(sub.key)}</h3>")
            parts.append(_guarded(lambda sub=sub: self.submission_board(sub), f"submissions of {sub.key}"))
        if not boards:
            parts.append(_note("No accepted submissions yet (make submit)."))
        parts.append("<h3>Rejected submissions</h3>")
        if rejected:
            frame = pd.DataFrame({"submission": [str(v.path) for v in rejected],
                                  "reason": [str(v.reason) for v in rejected]})
            parts.append(_guarded(lambda: datatable(frame, "rejected"), "rejected submissions"))
        else:
            parts.append(_note("None."))
        parts.append("</section>")
        return "\n".join(parts)


def _num(value, fmt: str = ".4f") -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(value) else format(value, fmt)


def write_site(site_dir: str | Path, out_dir: str | Path, boards: list, verdicts: list,
               builtin_markdown: list[Path], tasks: list | None = None, runs_dir: str | Path | None = None,
               cards_dir: str | Path | None = CARDS_DIR, reference_dir: str | Path | None = None) -> Path:
    """Write ``site_dir/index.html`` atomically and return its path. ``out_dir``: the tables ``matcv
    leaderboard`` wrote (Markdown, CSV, PNG); ``boards``: the official submission boards
    (``matcv.leaderboard.submission.SubmissionBoard``); ``verdicts``: every submission's verdict;
    ``builtin_markdown``: the benchmark tables' Markdown; ``tasks``: per task its summary across benchmarks
    (``matcv.leaderboard.rebuild.TaskSummary``); ``runs_dir``: the run folders (example figures, learning
    curves; None: none shown); ``cards_dir``: the model cards; ``reference_dir``: the published reference
    board, where a board not run locally has its run folder."""
    import plotly.offline

    site = Site(Path(out_dir), Path(runs_dir) if runs_dir is not None else None,
                Path(cards_dir) if cards_dir is not None else None,
                Path(reference_dir) if reference_dir is not None else None)
    tasks = tasks or []
    for markdown in builtin_markdown:
        site.add_markdown(Path(markdown))
    for verdict in verdicts:
        if verdict.ok and verdict.metadata:
            site.submitted[(verdict.metadata.get("task"), f"{verdict.metadata.get('name')} (submission)")] = \
                verdict.metadata
    for sub in boards:
        task, dataset, profile = (sub.key.split("/") + ["", ""])[:3]
        stem = f"{task}__{dataset}__{profile}"
        site.boards.setdefault(stem, {"task": task, "dataset": dataset, "profile": profile, "markdown": None,
                                      "table": pd.DataFrame(), "reports": [], "submissions": []})
        site.boards[stem]["submissions"].append(sub)
        table = sub.table if isinstance(sub.table, pd.DataFrame) else pd.DataFrame()
        for row in table.to_dict("records"):
            if (task, str(row["model"])) not in site.models or row.get("kind") == "submission":
                site.models.setdefault((task, str(row["model"])), [])

    pages = [_guarded(lambda stem=stem, board=board: site.board_page(stem, board), f"page of {stem}")
             for stem, board in site.boards.items()]
    pages += [_guarded(lambda s=s: site.task_page(s), f"comparison across {s.task}") for s in tasks]
    pages += [_guarded(lambda key=key, rows=rows: site.model_page(*key, rows), f"page of model {key[1]}")
              for key, rows in sorted(site.models.items())]
    pages.append(_guarded(lambda: site.submissions_page(boards, verdicts), "submissions"))

    nav = ['<a href="#overview">overview</a>']
    by_task: dict[str, list[str]] = {}
    for stem, board in site.boards.items():
        by_task.setdefault(board["task"], []).append(stem)
    overview = ['<section class="page home" id="overview"><h2>Benchmarks</h2>']
    for task, stems in by_task.items():
        nav.append(f'<span class="group">{_e(task)}:</span>')
        nav += [f'<a href="#{site.board_id(s)}">{_e(site.board_label(site.boards[s]))}</a>' for s in stems]
        if any(t.task == task for t in tasks):
            nav.append(f'<a href="#task-{slug(task)}">across benchmarks</a>')
        overview.append(f"<h3>{_e(task)}</h3><ul>" + "".join(
            f'<li><a href="#{site.board_id(s)}">{_e(site.board_label(site.boards[s]))}</a> '
            f'<span class="note">(<code>{_e(site.boards[s]["dataset"])}</code>)</span></li>' for s in stems)
            + "</ul>")
    nav.append('<a href="#submissions">submissions</a>')
    overview.append(_note("Every table sorts by a click on its header, filters with its search box (and the "
                          "track panel), and exports to CSV with its button. Models link to their pages."))
    overview.append("</section>")

    itables_head, module_promise, ready_event = _itables_head()
    plotly_js = f"<script>{plotly.offline.get_plotlyjs()}</script>" if site.figures else ""
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            "<title>matcv leaderboard</title>"
            f"<style>{STYLE}</style>{itables_head}{plotly_js}</head><body>\n"
            f"<header><h1>matcv leaderboard</h1><p class=\"note\">Generated {_e(generated)} by <code>matcv "
            f"leaderboard</code>: {len(builtin_markdown)} built-in table(s), {sum(v.ok for v in verdicts)} accepted "
            f"and {sum(not v.ok for v in verdicts)} rejected submission(s).</p></header>\n"
            f"<nav>{''.join(nav)}</nav>\n<main>\n" + "\n".join(overview) + "\n" + "\n".join(pages)
            + "\n</main>\n" + MARKDOWN_TABLES_JS % (module_promise, module_promise, ready_event)
            + "</body></html>\n")
    site_dir = Path(site_dir)
    site_dir.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(site_dir / SITE_NAME, page)
