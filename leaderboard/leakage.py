"""The leakage report: one model scored on photo-level random folds and on panel-grouped folds.

Photos of one panel are near-duplicates; random photo-level folds put some of them in training and the
others in test, so the score measures recognising a panel rather than rating a new one (Pelz, Unit 4, slide 41:
R² 0.95 with a random patch split, 0.72 with a specimen split). The report shows both and the inflation.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from matcv.datamodules.core.records import TABLE_KEYS, RunRecords
from matcv.datamodules.core.atomic_io import atomic_write_text
from matcv.leaderboard.build import choose_benchmark, format_mean_std, leaderboard_table, own_manifest_sha256
from matcv.leaderboard.comparison import BenchmarkId


def leakage_table(grouped: list[dict], random: list[dict], metrics: list[str],
                  grouped_benchmark: BenchmarkId | None = None,
                  random_benchmark: BenchmarkId | None = None) -> pd.DataFrame:
    """One row per (model, metric) present in both: grouped and random mean ± std, inflation = random − grouped.

    Each side is one benchmark (fold manifest, data): the one given, by default its latest successful run's."""
    by_grouping = {name: leaderboard_table(records, metrics, benchmark=benchmark).table
                   for name, records, benchmark in (("grouped", grouped, grouped_benchmark),
                                                    ("random", random, random_benchmark))}
    if by_grouping["grouped"].empty or by_grouping["random"].empty:
        return pd.DataFrame()
    rows = []
    merged = by_grouping["grouped"].merge(by_grouping["random"], on="model", suffixes=("_grouped", "_random"))
    for row in merged.to_dict("records"):
        for metric in metrics:
            grouped_mean, random_mean = row[f"{metric}_mean_grouped"], row[f"{metric}_mean_random"]
            rows.append({"model": row["model"], "metric": metric,
                         "grouped_mean": grouped_mean, "grouped_std": row[f"{metric}_std_grouped"],
                         "random_mean": random_mean, "random_std": row[f"{metric}_std_random"],
                         "inflation": random_mean - grouped_mean,
                         "folds": f"{row['n_folds_grouped']}/{row['n_folds_random']}"})
    return pd.DataFrame(rows)


def write_leakage_report(grouped_records: Path, random_records: Path, out_dir: str | Path,
                         metrics: list[str], benchmark: BenchmarkId | None = None) -> Path:
    """``benchmark``: the grouped side's (fold manifest, data), by default the one its leaderboard shows; the
    random side is taken on the same data version where it has runs on it (its folds differ by design)."""
    grouped, random = RunRecords(grouped_records).load(TABLE_KEYS), RunRecords(random_records).load(TABLE_KEYS)
    if not (grouped or random):
        raise ValueError(f"{grouped_records}, {random_records}: no readable run records for the leakage report")
    benchmark = benchmark or choose_benchmark(grouped, own_manifest_sha256(Path(grouped_records).parent))
    random_benchmark = choose_benchmark(random, own_manifest_sha256(Path(random_records).parent),
                                        benchmark[1] if benchmark else None)
    table = leakage_table(grouped, random, metrics, benchmark, random_benchmark)
    example = (grouped or random)[0]
    stem = Path(out_dir) / f"{example['task']}__{example['dataset']}__{example['profile']}__leakage"
    lines = [f"# Leakage report: {example['task']} on {example['dataset']}, profile {example['profile']}", "",
             "The same models on panel-grouped folds (the leaderboard's) and on random photo-level folds, where "
             "photos of one panel can sit in training and test. Inflation = random − grouped: how much a leaky "
             "split would flatter the model (for MAE, lower is better, so leakage shows as a negative number).", ""]
    if table.empty:
        lines.append("No model has finished runs on both kinds of folds yet.")
    else:
        lines += ["| model | metric | grouped folds | random photo folds | inflation |", "|---|---|---|---|---|"]
        for row in table.to_dict("records"):
            cells = [row["model"], row["metric"], format_mean_std(row["grouped_mean"], row["grouped_std"]),
                     format_mean_std(row["random_mean"], row["random_std"]), f"{row['inflation']:+.4f}"]
            lines.append("| " + " | ".join(cells) + " |")
    buffer = io.StringIO()
    table.to_csv(buffer, index=False)
    atomic_write_text(stem.with_suffix(".csv"), buffer.getvalue())
    return atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")

