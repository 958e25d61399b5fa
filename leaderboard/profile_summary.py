"""One table across the protocols of one dataset: e.g. grouped CV, the publisher's official split and an
out-of-distribution test set, side by side per model (``companion_profiles`` in a task YAML).

Each column is that profile's own leaderboard value (mean ± std over its folds; a one-fold split has
no std), so a model's in-distribution score can be read beside its grouped-CV and OOD scores.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmarks.records import RunRecords
from datamodules.atomic_io import atomic_write_text
from leaderboard.build import format_mean_std, leaderboard_table


def write_profile_summary(records_paths: list[Path], out_dir: str | Path, metrics: list[str],
                          lower_is_better: list[str] = ()) -> Path:
    """Write ``<task>__<dataset>__profiles.{md,csv}``; return the Markdown path."""
    columns: dict[str, pd.DataFrame] = {}
    task = dataset = None
    for path in records_paths:
        records = RunRecords(path).load()
        if not records:
            continue
        task, dataset, profile = records[0]["task"], records[0]["dataset"], records[0]["profile"]
        board = leaderboard_table(records, metrics, lower_is_better)
        if not board.table.empty:
            columns[profile] = board.table.set_index("model")
    if task is None:
        raise ValueError(f"no records in {', '.join(map(str, records_paths))}")
    models = list(dict.fromkeys(m for table in columns.values() for m in table.index))
    rows = []
    for model in models:
        row = {"model": model}
        for profile, table in columns.items():
            for metric in metrics:
                present = model in table.index
                row[f"{profile}_{metric}_mean"] = table.loc[model, f"{metric}_mean"] if present else float("nan")
                row[f"{profile}_{metric}_std"] = table.loc[model, f"{metric}_std"] if present else float("nan")
                row[f"{profile}_n_folds"] = int(table.loc[model, "n_folds"]) if present else 0
        rows.append(row)
    summary = pd.DataFrame(rows)
    stem = Path(out_dir) / f"{task}__{dataset}__profiles"
    header = ["model"] + [f"{profile}: {metric}" for profile in columns for metric in metrics]
    lines = [f"# matcv: {task} on {dataset}, every protocol", "",
             "Each column is one profile's leaderboard value (mean ± std over its folds; one-fold splits have no "
             f"std). Profiles: {', '.join(f'{p} ({len(t)} models)' for p, t in columns.items())}.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["model"]]
        for profile in columns:
            for metric in metrics:
                mean, std = row[f"{profile}_{metric}_mean"], row[f"{profile}_{metric}_std"]
                cells.append("–" if pd.isna(mean) else format_mean_std(mean, std))
        lines.append("| " + " | ".join(cells) + " |")
    atomic_write_text(stem.with_suffix(".csv"), summary.to_csv(index=False))
    return atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
