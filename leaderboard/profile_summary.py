"""One table across the companion profiles of a task YAML (``companion_profiles``).

* Profiles of one dataset (e.g. grouped CV, the publisher's official split and an out-of-distribution test
  set): one row per model, one column per profile and metric, so a model's in-distribution score can be read
  beside its grouped-CV and OOD scores (``<task>__<dataset>__profiles``).
* Profiles of different datasets (e.g. the microstructure sources: Gaussian fields, Potts grain growth): one
  row per dataset and model, one column per metric (``<task>__<profile>__sources``).

Every value is that profile's own leaderboard value (mean ± std over its folds; a one-fold split has no std).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from matcv.datamodules.core.records import TABLE_KEYS, RunRecords
from matcv.datamodules.core.atomic_io import atomic_write_text
from matcv.leaderboard.build import choose_benchmark, format_mean_std, leaderboard_table, own_manifest_sha256
from matcv.leaderboard.comparison import BenchmarkId


def write_profile_summary(records_paths: list[Path], out_dir: str | Path, metrics: list[str],
                          lower_is_better: list[str] = (), benchmark: BenchmarkId | None = None) -> Path:
    """Write the profiles' (or sources') table as Markdown and CSV (module doc); return the Markdown path.

    Each profile's column is one benchmark (fold manifest, data): for the first path ``benchmark`` if given,
    otherwise the one that profile's own leaderboard shows."""
    columns: dict[str, pd.DataFrame] = {}
    task = dataset = None
    datasets: dict[str, str] = {}
    for number, path in enumerate(records_paths):
        records = RunRecords(path).load(TABLE_KEYS)
        if not records:
            continue
        task, dataset, profile = records[0]["task"], records[0]["dataset"], records[0]["profile"]
        shown = (benchmark if number == 0 and benchmark else
                 choose_benchmark(records, own_manifest_sha256(Path(path).parent)))
        board = leaderboard_table(records, metrics, lower_is_better, shown)
        if not board.table.empty:
            columns[profile] = board.table.set_index("model")
            datasets[profile] = dataset
    if task is None:
        raise ValueError(f"no records in {', '.join(map(str, records_paths))}")
    if len(set(datasets.values())) > 1:
        return _write_sources_table(columns, datasets, task, out_dir, metrics)
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


def _write_sources_table(boards: dict[str, pd.DataFrame], datasets: dict[str, str], task: str,
                         out_dir: str | Path, metrics: list[str]) -> Path:
    """One row per (dataset, model), one column per metric: ``<task>__<first profile>__sources``."""
    rows, lines = [], []
    header = ["dataset (profile)", "model", "folds"] + metrics
    lines += [f"# matcv: {task}, every source", "",
              "Each row is one source's leaderboard value (mean ± std over its grouped folds); – where a metric "
              "does not apply to the model or the source.", "",
              "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for profile, table in boards.items():
        for model in table.index:
            row = {"dataset": datasets[profile], "profile": profile, "model": model,
                   "n_folds": int(table.loc[model, "n_folds"])}
            cells = [f"{datasets[profile]} ({profile})", model, str(row["n_folds"])]
            for metric in metrics:
                mean, std = table.loc[model, f"{metric}_mean"], table.loc[model, f"{metric}_std"]
                row[f"{metric}_mean"], row[f"{metric}_std"] = mean, std
                cells.append("–" if pd.isna(mean) else format_mean_std(mean, std))
            rows.append(row)
            lines.append("| " + " | ".join(cells) + " |")
    stem = Path(out_dir) / f"{task}__{next(iter(boards))}__sources"
    atomic_write_text(stem.with_suffix(".csv"), pd.DataFrame(rows).to_csv(index=False))
    return atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
