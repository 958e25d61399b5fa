"""Ranking the models of one task across its benchmarks (datasets and protocols): mean rank and a
critical-difference diagram, after Demšar (2006).

Each benchmark table ("board", one ``<task>__<dataset>__<profile>.csv``) ranks its models by its own first
metric in that metric's direction (1 = best; tied models share the average of their places, as Demšar
does). The mean-rank table shows every model's place on every board it was run on, its mean rank and the
number of boards. The critical-difference diagram needs complete blocks: only the models present on every
compared board enter it, re-ranked among themselves on each board; a Friedman test says whether the ranks
differ at all, and the Nemenyi critical difference CD = q_α·sqrt(k(k+1)/(6N)) (k models, N boards) says
which mean ranks are far enough apart (scikit-posthocs' Nemenyi test and diagram). Boards that rank fewer
than two models, or share no model with the other boards, are left out and named. Written as
``ranking__<task>.md/.csv/.png``, atomically.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.transforms import offset_copy  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scikit_posthocs as posthocs  # noqa: E402
from scipy import stats  # noqa: E402

from matcv.datamodules.core.atomic_io import atomic_write_text, save_figure  # noqa: E402

COST_MEAN_COLUMNS = frozenset({"fit_s_mean"})  # ``*_mean`` columns of a table that are costs, not metrics
ALPHA = 0.05
CITATION = "Demšar (2006), Statistical comparisons of classifiers over multiple data sets, JMLR 7:1–30"


def table_metrics(table: pd.DataFrame) -> list[str]:
    """The metrics of a leaderboard table, in its column order (``{metric}_mean`` columns, costs excluded)."""
    return [column.removesuffix("_mean") for column in table.columns
            if column.endswith("_mean") and column not in COST_MEAN_COLUMNS]


def infer_lower_is_better(table: pd.DataFrame, metric: str) -> bool | None:
    """The direction a table was ranked in, read from its ``rank`` column: the means rise with the rank (lower
    is better) or fall (higher is better). None when the table cannot say (no rank column, fewer than two
    distinct values, or an order that is neither)."""
    if "rank" not in table or f"{metric}_mean" not in table:
        return None
    means = table.sort_values("rank", kind="stable")[f"{metric}_mean"].astype(float).dropna().to_numpy()
    steps = np.diff(means)
    if len(means) < 2 or not np.any(steps):
        return None
    if np.all(steps >= 0):
        return True
    if np.all(steps <= 0):
        return False
    return None


@dataclass(frozen=True)
class Board:
    """One benchmark table: ``name`` = ``<dataset>/<profile>``; ranked by ``metric`` (its first metric)."""

    name: str
    table: pd.DataFrame
    metric: str
    lower_is_better: bool
    csv: Path | None = None

    def ranks(self) -> pd.Series:
        """model -> place on this board (1 = best, ties share the average place); models without a value of
        the metric (one that does not apply to them) are not ranked."""
        if self.table.empty:
            return pd.Series(dtype=float)
        values = self.table.drop_duplicates("model").set_index("model")[f"{self.metric}_mean"].astype(float)
        return values.dropna().rank(ascending=self.lower_is_better, method="average")


def read_board(csv: str | Path, name: str, metric: str | None = None,
               lower_is_better: bool | None = None) -> Board:
    """A board from a leaderboard CSV. ``metric`` and its direction: as given (the task YAML's first metric),
    else the table's first metric and the direction its ``rank`` column shows (higher is better when it
    cannot tell). An empty table (no successful run yet) is a board that ranks nothing."""
    csv = Path(csv)
    try:
        table = pd.read_csv(csv) if csv.stat().st_size else pd.DataFrame()
    except pd.errors.EmptyDataError:
        table = pd.DataFrame()
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(f"{csv}: not a readable leaderboard table ({error})") from error
    if table.empty:
        return Board(name, pd.DataFrame(columns=["model"]), metric or "", bool(lower_is_better), csv)
    if "model" not in table:
        raise ValueError(f"{csv}: no 'model' column (columns: {', '.join(map(str, table.columns))})")
    table["model"] = table["model"].astype(str)
    if metric is None:
        metrics = table_metrics(table)
        if not metrics:
            raise ValueError(f"{csv}: no '<metric>_mean' column to rank the models by")
        metric = metrics[0]
    if f"{metric}_mean" not in table:
        raise ValueError(f"{csv}: no column '{metric}_mean' for the first metric {metric!r}")
    if lower_is_better is None:
        lower_is_better = bool(infer_lower_is_better(table, metric))
    return Board(name, table, metric, lower_is_better, csv)


@dataclass
class CriticalDifference:
    ranks: pd.DataFrame  # boards x compared models: places among the compared models only
    mean_ranks: pd.Series  # model -> mean of those places, best first
    p_values: pd.DataFrame  # Nemenyi p, models x models
    cd: float  # Nemenyi critical difference of mean ranks at ``alpha``
    alpha: float
    friedman_statistic: float  # NaN with fewer than 3 models (the test needs 3)
    friedman_p: float


def nemenyi_cd(k: int, n: int, alpha: float = ALPHA) -> float:
    """Demšar (2006): CD = q_α·sqrt(k(k+1)/(6N)), q_α = the studentized range quantile (k, ∞ df) / √2."""
    q_alpha = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q_alpha * math.sqrt(k * (k + 1) / (6.0 * n)))


def critical_difference(ranks: pd.DataFrame, alpha: float = ALPHA) -> CriticalDifference:
    """The Friedman test and Nemenyi comparison of ``ranks`` (boards x models, complete: no missing place;
    1 = best). The models are re-ranked among themselves on each board first."""
    if ranks.isna().any().any():
        raise ValueError("the critical-difference diagram needs every model's place on every board")
    ranks = ranks.rank(axis=1, method="average")
    n, k = ranks.shape
    if n < 2 or k < 2:
        raise ValueError(f"the critical-difference diagram needs at least 2 boards and 2 models (got {n} and {k})")
    statistic = p = math.nan
    if k >= 3:
        with np.errstate(divide="ignore", invalid="ignore"):  # every board tied throughout: no test (NaN)
            result = stats.friedmanchisquare(*(ranks[model].to_numpy() for model in ranks.columns))
        statistic, p = float(result.statistic), float(result.pvalue)
    p_values = posthocs.posthoc_nemenyi_friedman(ranks)  # ranks in, ranks out: the same mean ranks
    mean_ranks = ranks.mean(axis=0).sort_values(kind="stable")
    return CriticalDifference(ranks, mean_ranks, p_values, nemenyi_cd(k, n, alpha), alpha, statistic, p)


@dataclass
class Ranking:
    task: str
    boards: list[Board]  # the boards ranked (the left-out ones are in ``left_out_boards``)
    table: pd.DataFrame  # model, one place column per board, mean_rank, n_boards, cd_mean_rank
    left_out_boards: dict[str, str]  # board -> why it is not ranked
    left_out_models: list[str]  # models not on every ranked board: not in the diagram
    cd: CriticalDifference | None
    notes: list[str] = field(default_factory=list)  # why there is no diagram, if there is none
    markdown: Path | None = None  # set by ``write_ranking``
    csv: Path | None = None
    png: Path | None = None


def mean_rank_table(boards: list[Board]) -> pd.DataFrame:
    """model, one column of places per board (NaN: not on it), mean_rank, n_boards; models on more boards
    first (a mean over fewer boards is not comparable), then by mean rank."""
    places = pd.DataFrame({board.name: board.ranks() for board in boards})
    places = places.reindex(columns=[board.name for board in boards])
    table = places.assign(mean_rank=places.mean(axis=1), n_boards=places.notna().sum(axis=1))
    table = table.rename_axis("model").reset_index()
    return table.sort_values(["n_boards", "mean_rank", "model"], ascending=[False, True, True],
                             kind="stable").reset_index(drop=True)


def rank_boards(task: str, boards: list[Board], alpha: float = ALPHA,
                left_out: Mapping[str, str] | None = None) -> Ranking:
    """The ranking of ``task`` over ``boards``; ``left_out``: boards the caller could not read (name -> why),
    reported with the ones left out here."""
    left_out_boards = dict(left_out or {})
    ranked = []
    for board in boards:
        if len(board.ranks()) < 2:
            left_out_boards[board.name] = "ranks fewer than 2 models"
        else:
            ranked.append(board)
    models = {board.name: set(board.ranks().index) for board in ranked}
    kept = []
    for board in ranked:  # a board sharing no model with the others says nothing about their order
        others = [models[other.name] for other in ranked if other is not board]
        if others and not any(models[board.name] & theirs for theirs in others):
            left_out_boards[board.name] = "shares no model with the other benchmarks"
        else:
            kept.append(board)
    table = mean_rank_table(kept) if kept else pd.DataFrame(columns=["model", "mean_rank", "n_boards"])
    common = set.intersection(*(models[board.name] for board in kept)) if kept else set()
    left_out_models = sorted(set(table["model"]) - common)
    notes, cd = [], None
    if len(kept) < 2:
        notes.append(f"Fewer than 2 benchmarks to compare ({len(kept)}): no critical-difference diagram.")
    elif len(common) < 2:
        notes.append(f"Fewer than 2 models on every benchmark ({len(common)}): no critical-difference diagram.")
    else:
        ordered = sorted(common)
        cd = critical_difference(pd.DataFrame({board.name: board.ranks()[ordered] for board in kept}).T, alpha)
    table["cd_mean_rank"] = table["model"].map(cd.mean_ranks if cd is not None else {}).astype(float)
    return Ranking(task, kept, table, left_out_boards, left_out_models, cd, notes)


def cd_diagram(path: str | Path, cd: CriticalDifference, title: str) -> Path:
    """Demšar's diagram: mean ranks on an axis (1 = best, left), models joined by a bar where Nemenyi finds no
    difference at ``cd.alpha``, and the critical difference drawn above the axis."""
    k = len(cd.mean_ranks)
    figure, axis = plt.subplots(figsize=(8, 1.6 + 0.32 * k))
    posthocs.critical_difference_diagram(cd.mean_ranks, cd.p_values, alpha=cd.alpha, ax=axis,
                                         label_fmt_left="{label} ({rank:.2f})",
                                         label_fmt_right="({rank:.2f}) {label}")
    axis.set_xlim(0.8, k + 0.2)  # the whole range of places, as in Demšar's figures
    axis.set_xticks(range(1, k + 1))
    axis.set_ylim(top=0.2)  # the rank axis at the top edge, the tick labels just above it
    # The library draws its CD bar over the tick labels: draw it above them, a fixed distance in points.
    above = offset_copy(axis.get_xaxis_transform(), fig=figure, y=26, units="points")
    axis.plot([1, 1 + cd.cd], [1, 1], color="black", linewidth=2, transform=above, clip_on=False)
    axis.text(1 + cd.cd / 2, 1, f"CD = {cd.cd:.2f} (Nemenyi, α = {cd.alpha:g})", ha="center", va="bottom",
              fontsize=8, transform=offset_copy(above, fig=figure, y=3, units="points"))
    axis.set_title(title, fontsize=9, pad=44)
    return save_figure(path, figure, dpi=110, bbox_inches="tight")


def _place(value: float) -> str:
    """A place: "2" for a whole place, "2.50" for a shared one, "–" off the board."""
    if value is None or math.isnan(value):
        return "–"
    return f"{value:g}" if float(value).is_integer() else f"{value:.2f}"


def _mean(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.2f}"


def board_description(board: Board) -> str:
    return f"{board.name} by {board.metric} ({'lower' if board.lower_is_better else 'higher'} is better)"


def cd_summary(cd: CriticalDifference) -> str:
    n, k = cd.ranks.shape
    friedman = ("Friedman test: needs at least 3 models" if math.isnan(cd.friedman_statistic) and k < 3 else
                "Friedman test: undefined (every board ties the models alike)" if math.isnan(cd.friedman_p) else
                f"Friedman χ² = {cd.friedman_statistic:.3f}, p = {cd.friedman_p:.3g}")
    return (f"{k} models on all {n} benchmarks; {friedman}; Nemenyi critical difference CD = {cd.cd:.3f} "
            f"at α = {cd.alpha:g}: mean ranks closer than CD (joined by a bar) are not significantly different.")


def render_markdown(ranking: Ranking, png_name: str | None = None) -> str:
    lines = [f"# matcv ranking across benchmarks: {ranking.task}", ""]
    if ranking.boards:
        lines += ["Each benchmark ranks its models by its own first metric (1 = best; tied models share the "
                  "average place); mean rank over the benchmarks a model was run on; models on more benchmarks "
                  "first. Benchmarks: " + "; ".join(board_description(b) for b in ranking.boards) + ".", ""]
        names = [board.name for board in ranking.boards]
        header = ["model", *names, "mean rank", "benchmarks", "mean rank (CD)"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in ranking.table.to_dict("records"):
            cells = [row["model"], *(_place(row[name]) for name in names), _mean(row["mean_rank"]),
                     str(int(row["n_boards"])), _mean(row["cd_mean_rank"])]
            lines.append("| " + " | ".join(cells) + " |")
    else:
        lines.append("No benchmark ranks two models or more.")
    if ranking.left_out_boards:
        lines += [""] + [f"- Not ranked: {name} ({why})." for name, why in ranking.left_out_boards.items()]
    lines += ["", "## Critical-difference diagram", ""]
    if ranking.cd is not None:
        lines.append(cd_summary(ranking.cd) + " Mean rank (CD): places among the compared models only.")
        if ranking.left_out_models:
            lines.append(f"Not on every benchmark, so not in the diagram: {', '.join(ranking.left_out_models)}.")
        if png_name:
            lines += ["", f"![critical-difference diagram]({png_name})"]
    else:
        lines += ranking.notes
    lines += ["", f"Method: {CITATION}."]
    return "\n".join(lines) + "\n"


def write_ranking(ranking: Ranking, out_dir: str | Path) -> Path:
    """``ranking__<task>.csv`` (the mean-rank table), ``.png`` (the diagram, when there is one) and ``.md``
    under ``out_dir``, atomically; the paths are set on ``ranking``; returns the Markdown's."""
    stem = Path(out_dir) / f"ranking__{ranking.task}"
    ranking.csv = atomic_write_text(stem.with_suffix(".csv"), ranking.table.to_csv(index=False))
    ranking.png = None
    if ranking.cd is not None:
        title = f"{ranking.task}: mean rank over {len(ranking.boards)} benchmarks (1 = best)"
        ranking.png = cd_diagram(stem.with_suffix(".png"), ranking.cd, title)
    else:
        stem.with_suffix(".png").unlink(missing_ok=True)  # an older diagram would no longer describe the table
    ranking.markdown = atomic_write_text(stem.with_suffix(".md"),
                                         render_markdown(ranking, ranking.png.name if ranking.png else None))
    return ranking.markdown
