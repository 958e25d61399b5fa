"""The reference board: built-in models' run records committed to the repository.

``runs/`` is local (ignored by git), so a fresh clone would have an empty leaderboard. A benchmark folder that
is *published* (``matcv leaderboard --publish runs/<task>/<dataset>/<profile>``) is copied to
``leaderboard/reference/<task>/<dataset>/<profile>/``: its fold manifest, the task YAML copy if the harness kept
one, its records (the benchmark the table shows, the latest successful run per model x fold x seed) and each
run's example figure. Machine-specific fields (checkpoint and data paths on the machine that ran it) are
dropped; hardware, package versions and the git commit stay, as provenance. Test predictions are not copied:
``matcv verify`` checks a run folder where they were written.

``matcv leaderboard`` builds tables from ``runs/`` and from these folders; a benchmark run locally
(same task, dataset and profile) replaces its published copy on the local page. Publishing also writes each
built-in model's first-metric mean into its card's ``reference_scores``, so a changed score shows up as a
changed card in review, and the tests fail when the records change without the card.
"""

from __future__ import annotations

import io
import json
import shutil
import warnings
from pathlib import Path

import pandas as pd
import yaml

from matcv.datamodules.core.atomic_io import atomic_write_bytes, atomic_write_text
from matcv.datamodules.core.config import ConfigError, TaskConfig
from matcv.datamodules.core.records import PHOTO_FOLDS_SUFFIX, TABLE_KEYS, TASK_YAML_COPY, RunRecords
from matcv.leaderboard.build import choose_benchmark, own_manifest_sha256, train_fraction_of
from matcv.leaderboard.comparison import benchmark_of, replicate_of
from matcv.leaderboard.model_cards import CARDS_DIR, card_path, read_card

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
# Paths that only mean something on the machine that ran the benchmark.
MACHINE_FIELDS = ("best_checkpoint", "data_root", "predictions")
FIGURE_SIDE = 800  # px: published example figures are downscaled to this longer side


class PublishError(ValueError):
    """A benchmark folder that cannot be published; the message names it and says why."""


def benchmark_folders(runs_dir: str | Path, reference_dir: str | Path | None = REFERENCE_DIR) -> list[Path]:
    """Every ``<task>/<dataset>/<profile>/`` with records under ``runs_dir``, then every published one under
    ``reference_dir`` that was not run locally (the local run replaces it). Photo-level-fold siblings are
    left out: their report is written beside their grouped benchmark."""
    local = _folders(runs_dir)
    names = {_name(folder) for folder in local}
    published = [folder for folder in _folders(reference_dir) if _name(folder) not in names] if reference_dir else []
    return local + published


def _folders(root: str | Path | None) -> list[Path]:
    if root is None:
        return []
    return [path.parent for path in sorted(Path(root).glob("*/*/*/records.jsonl"))
            if not path.parent.name.endswith(PHOTO_FOLDS_SUFFIX)]


def _name(folder: Path) -> tuple[str, str, str]:
    return folder.parents[1].name, folder.parent.name, folder.name


def published_records(folder: str | Path) -> list[dict]:
    """The records a table of ``folder`` shows, and its learning curve: its chosen benchmark's latest successful
    record per model x fold x seed x share of the training groups, in run order."""
    folder = Path(folder)
    records_path = folder / "records.jsonl"
    if not records_path.is_file():
        raise PublishError(f"{folder}: no records.jsonl (not a benchmark folder: runs/<task>/<dataset>/<profile>/)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unreadable lines are skipped here as in the tables
        records = RunRecords(records_path).load(TABLE_KEYS)
    benchmark = choose_benchmark(records, own_manifest_sha256(folder))
    latest: dict[tuple, dict] = {}
    for record in records:
        if benchmark_of(record) == benchmark and record.get("status") == "ok":
            latest[(record["model"], record.get("fold"), replicate_of(record), train_fraction_of(record))] = record
    if not latest:
        raise PublishError(f"{records_path}: no successful run to publish")
    return list(latest.values())


def publish(folder: str | Path, reference_dir: str | Path = REFERENCE_DIR, cards_dir: str | Path | None = CARDS_DIR,
            repository_root: str | Path | None = None) -> Path:
    """Copy benchmark ``folder`` to ``reference_dir/<task>/<dataset>/<profile>/`` (replacing an earlier copy)
    and write the built-in models' scores into their cards (``cards_dir``; None: leave the cards alone). Its
    photo-level-fold sibling (``<profile>-photo-folds``, the leakage report's runs), when there is one, is copied
    beside it, so that the published board keeps its leakage report. Figure paths in the copied records are
    relative to ``repository_root`` (default: the parent of the ``leaderboard`` folder), as the harness writes
    them relative to where it ran."""
    folder = Path(folder)
    task, dataset, profile = _name(folder.resolve())
    if profile.endswith(PHOTO_FOLDS_SUFFIX):
        raise PublishError(f"{folder}: a photo-level-fold sibling is published with its grouped benchmark")
    target = Path(reference_dir) / task / dataset / profile
    root = Path(repository_root) if repository_root else Path(reference_dir).resolve().parents[1]
    records = _copy_benchmark(folder, target, root)
    sibling = folder.parent / (profile + PHOTO_FOLDS_SUFFIX)
    if (sibling / "records.jsonl").is_file():
        _copy_benchmark(sibling, target.parent / sibling.name, root)
    if cards_dir is not None:
        write_reference_scores(task, dataset, profile, records, cards_dir)
    return target


def _copy_benchmark(folder: Path, target: Path, root: Path) -> list[dict]:
    """``folder``'s shown records (without machine paths), fold manifest, task YAML and figures, swapped in at
    ``target`` whole; the records published."""
    records = published_records(folder)
    manifest = folder / "fold_manifest.json"
    if not manifest.is_file():
        raise PublishError(f"{folder}: no fold_manifest.json beside the records")
    staging = target.with_name(target.name + ".publishing")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    atomic_write_bytes(staging / "fold_manifest.json", manifest.read_bytes())
    if (folder / TASK_YAML_COPY).is_file():
        atomic_write_bytes(staging / TASK_YAML_COPY, (folder / TASK_YAML_COPY).read_bytes())
    lines = []
    for record in records:
        record = {key: value for key, value in record.items() if key not in MACHINE_FIELDS}
        figure = _copy_figure(record, folder, staging, target, root)
        if figure is None:
            record.pop("figure", None)
        else:
            record["figure"] = figure
        record["fold_manifest"] = str((target / "fold_manifest.json").resolve().relative_to(root.resolve())) \
            if _inside(target, root) else "fold_manifest.json"
        lines.append(json.dumps(record, sort_keys=True))
    atomic_write_text(staging / "records.jsonl", "\n".join(lines) + "\n")
    # Swap in the new copy whole: a reader never sees half of one and half of the other.
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(target)
    return records


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _copy_figure(record: dict, folder: Path, staging: Path, target: Path, root: Path) -> str | None:
    """Copy the run's example figure to ``<model>/fold-<k>[-seed-<r>]/`` of the published folder; its new path
    (relative to ``root`` when inside it), or None when the run wrote none."""
    figure = record.get("figure")
    if not figure:
        return None
    source = Path(figure)
    candidates = [source] if source.is_absolute() else [source, folder.parents[2] / source, Path.cwd() / source]
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        return None
    try:
        relative = found.resolve().relative_to(folder.resolve())
    except ValueError:  # a figure outside the benchmark folder: keep it under the model's name
        relative = Path(record["model"]) / f"fold-{record.get('fold')}" / found.name
    (staging / relative).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(staging / relative, downscaled_png(found))
    final = target / relative
    return str(final.resolve().relative_to(root.resolve())) if _inside(final, root) else str(relative)


def downscaled_png(path: Path, longest_side: int = FIGURE_SIDE) -> bytes:
    """The figure as PNG bytes, at most ``longest_side`` pixels on its longer side: the repository keeps a
    readable example, not the full-resolution file (about 1 MB each at the harness's resolution)."""
    from PIL import Image

    with Image.open(path) as opened:
        image = opened.convert("RGB")
    if max(image.size) > longest_side:
        image.thumbnail((longest_side, longest_side), Image.Resampling.LANCZOS)
    # A 256-colour palette keeps a figure of micrographs and mask overlays readable at under half the bytes.
    buffer = io.BytesIO()
    image.quantize(256, method=Image.Quantize.MEDIANCUT).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def first_metric(task: str, dataset: str) -> str | None:
    try:
        return TaskConfig.for_dataset(task, dataset).metrics[0]
    except ConfigError:
        return None


def board_means(task: str, dataset: str, records: list[dict]) -> dict[str, float]:
    """model -> the mean over folds (fold value = mean over seeds) of the task's first metric, as the table's
    ``<metric>_mean`` column computes it (from the runs on all the training groups, as the table does)."""
    metric = first_metric(task, dataset)
    rows = [{"model": r["model"], "fold": r.get("fold"), "value": r.get("metrics", {}).get(metric)}
            for r in records if metric is not None and train_fraction_of(r) == 1.0]
    frame = pd.DataFrame(rows, columns=["model", "fold", "value"]).dropna()
    if frame.empty:
        return {}
    per_fold = frame.groupby(["model", "fold"])["value"].mean()
    return {model: float(values.mean()) for model, values in per_fold.groupby(level="model")}


def write_reference_scores(task: str, dataset: str, profile: str, records: list[dict],
                           cards_dir: str | Path = CARDS_DIR) -> list[Path]:
    """Set ``reference_scores["<dataset>/<profile>"]`` of every built-in model's card to its published mean
    of the first metric (submissions carry their own cards: not touched). Returns the cards written."""
    metric = first_metric(task, dataset)
    written = []
    for model, mean in sorted(board_means(task, dataset, records).items()):
        path = card_path(task, model, cards_dir)
        if not path.is_file():
            continue
        card = read_card(path)
        scores = dict(card.get("reference_scores") or {})
        scores[f"{dataset}/{profile}"] = {metric: round(mean, 6)}
        card["reference_scores"] = dict(sorted(scores.items()))
        head = [line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("#")]
        body = yaml.safe_dump(card, sort_keys=False, allow_unicode=True, width=112)
        atomic_write_text(path, "\n".join(head + [body.rstrip("\n")]) + "\n")
        written.append(path)
    return written


def missing_reference_scores(results_dir: str | Path, reference_dir: str | Path = REFERENCE_DIR,
                             cards_dir: str | Path = CARDS_DIR) -> list[str]:
    """A line per model on a published board (its table under ``results_dir``) whose card states no reference
    score for that board: without one, the published score could change without anyone touching a card. A row
    without a value of the first metric (a reference that has none, e.g. real images' FID) has nothing to pin."""
    problems = []
    for folder in _folders(reference_dir):
        task, dataset, profile = _name(folder)
        metric = first_metric(task, dataset)
        csv = Path(results_dir) / f"{task}__{dataset}__{profile}.csv"
        try:
            table = pd.read_csv(csv)
            scored = table[f"{metric}_mean"].notna() if f"{metric}_mean" in table else True
            models = table.loc[scored, "model"].astype(str).tolist()
        except (OSError, ValueError, KeyError) as error:
            problems.append(f"{folder}: its table {csv} was not rebuilt ({error})")
            continue
        for model in models:
            path = card_path(task, model, cards_dir)
            try:
                scores = read_card(path).get("reference_scores") or {} if path.is_file() else None
            except ValueError as error:  # CardError: reported by the card checks too
                problems.append(str(error))
                continue
            if scores is None:
                problems.append(f"{path}: missing: model {model!r} is on the published board {dataset}/{profile}")
            elif metric not in scores.get(f"{dataset}/{profile}", {}):
                problems.append(f"{path}: reference_scores has no {dataset}/{profile}: {{{metric}: ...}} for the "
                                f"published board {folder} (run `matcv leaderboard --publish` on its run folder)")
    return problems
