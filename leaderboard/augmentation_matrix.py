"""The augmentation study as a Table-1-like matrix: model x augmentation, mean ± std over grouped folds."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from matcv.datamodules.core.records import TABLE_KEYS, RunRecords
from matcv.datamodules.core.atomic_io import atomic_write_text
from matcv.leaderboard.build import choose_benchmark, format_mean_std, leaderboard_table, own_manifest_sha256
from matcv.leaderboard.comparison import BenchmarkId


def augmentation_matrix(records: list[dict], metric: str, augmentations: list[str],
                        benchmark: BenchmarkId | None = None) -> pd.DataFrame:
    """Rows = models, columns = augmentations (in the study's order), cells = (mean, std) of ``metric``, on one
    benchmark (fold manifest, data): ``benchmark``, by default the latest successful run's."""
    table = leaderboard_table(records, [metric], benchmark=benchmark).table
    if table.empty:
        return pd.DataFrame()
    split = table["model"].str.rsplit("+", n=1, expand=True)
    table = table.assign(base=split[0], augmentation=split[1])
    cells = {(row.base, row.augmentation): (row[f"{metric}_mean"], row[f"{metric}_std"])
             for _, row in table.iterrows()}
    models = list(dict.fromkeys(table["base"]))
    return pd.DataFrame([[cells.get((m, a)) for a in augmentations] for m in models], index=models,
                        columns=augmentations)


def write_augmentation_matrix(records_path: Path, out_dir: str | Path, metric: str, augmentations: list[str],
                              benchmark: BenchmarkId | None = None) -> Path:
    """The matrix of one benchmark: ``benchmark``, by default the one the folder's leaderboard shows."""
    records = RunRecords(records_path).load(TABLE_KEYS)
    if not records:
        raise ValueError(f"{records_path}: no readable run records for the augmentation matrix")
    benchmark = benchmark or choose_benchmark(records, own_manifest_sha256(Path(records_path).parent))
    matrix = augmentation_matrix(records, metric, augmentations, benchmark)
    example = records[0]
    stem = Path(out_dir) / f"{example['task']}__{example['dataset']}__{example['profile']}__augmentations"
    lines = [f"# Augmentation study: {example['task']} on {example['dataset']}, profile {example['profile']}", "",
             f"{metric}, mean ± std over grouped folds (as in Yin 2024, Part II, Table 1); — = not run yet.", "",
             "| model | " + " | ".join(augmentations) + " |", "|---|" + "---|" * len(augmentations)]
    flat = []
    for model, row in matrix.iterrows():
        lines.append(f"| {model} | " + " | ".join(format_mean_std(*cell) if cell else "—" for cell in row) + " |")
        flat += [{"model": model, "augmentation": a, f"{metric}_mean": c[0] if c else None,
                  f"{metric}_std": c[1] if c else None} for a, c in row.items()]
    buffer = io.StringIO()
    pd.DataFrame(flat).to_csv(buffer, index=False)
    atomic_write_text(stem.with_suffix(".csv"), buffer.getvalue())
    return atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
