"""The committed reference board: publishing a run folder, tables from it in a fresh clone, and the check that a
published score cannot change without its model card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from matcv.benchmarks.cli import main as matcv
from matcv.datamodules.core.atomic_io import sha256_bytes
from matcv.leaderboard.model_cards import CARDS_DIR, reference_mismatches
from matcv.leaderboard.rebuild import write_all_leaderboards
from matcv.leaderboard.reference import (
    REFERENCE_DIR,
    PublishError,
    benchmark_folders,
    missing_reference_scores,
    publish,
)

ROOT = Path(__file__).resolve().parents[1]


def _run_folder(root: Path, dice: dict[str, float], dataset: str = "synthetic-panels-test") -> Path:
    """A benchmark folder as the harness leaves it: fold manifest, records (one failed, one superseded), figures."""
    folder = root / "runs" / "segmentation" / dataset / "quick"
    folder.mkdir(parents=True)
    manifest = json.dumps({"groups": {"a": "p1", "b": "p2"}, "folds": [{"train": ["a"], "test": ["b"]}]})
    (folder / "fold_manifest.json").write_text(manifest)
    sha = sha256_bytes(manifest.encode())
    lines = []
    for model, value in dice.items():
        for fold in range(2):
            figure = folder / model / f"fold-{fold}" / "test_examples.png"
            figure.parent.mkdir(parents=True)
            Image.new("RGB", (1200, 300), (10, 20, 30)).save(figure)
            record = {"key": f"{model}|{fold}", "task": "segmentation", "dataset": dataset, "profile": "quick",
                      "model": model, "fold": fold, "status": "ok", "fold_manifest_sha256": sha,
                      "data_sha256": "d" * 64, "metrics": {"dice": value + 0.02 * fold, "iou": value},
                      "best_checkpoint": str(folder / model / "best.ckpt"), "data_root": "/home/someone/data",
                      "predictions": {"path": f"{model}/fold-{fold}/predictions.npz"},
                      "figure": str(figure.relative_to(root)), "durations": {"fit_s": 2.0, "test_s": 0.1},
                      "n_items": {"test": 1}}
            lines.append(json.dumps({**record, "metrics": {"dice": 0.0, "iou": 0.0}}))  # superseded by the rerun
            lines.append(json.dumps(record))
    lines.append(json.dumps({"key": "broken|0", "task": "segmentation", "dataset": dataset, "profile": "quick",
                             "model": "broken", "fold": 0, "status": "failed", "fold_manifest_sha256": sha,
                             "data_sha256": "d" * 64, "error": "boom"}))
    (folder / "records.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def _cards(tmp_path: Path) -> Path:
    cards = tmp_path / "cards"
    shutil.copytree(CARDS_DIR, cards)
    return cards


def test_publish_copies_the_shown_runs_without_machine_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = _run_folder(tmp_path, {"unet": 0.6, "unet-ftl": 0.7})
    reference, cards = tmp_path / "leaderboard" / "reference", _cards(tmp_path)
    target = publish(folder, reference, cards, repository_root=tmp_path)
    assert target == reference / "segmentation" / "synthetic-panels-test" / "quick"
    records = [json.loads(line) for line in (target / "records.jsonl").read_text().splitlines()]
    assert sorted((r["model"], r["fold"]) for r in records) == [("unet", 0), ("unet", 1), ("unet-ftl", 0),
                                                               ("unet-ftl", 1)]
    assert all(r["metrics"]["dice"] > 0 for r in records)  # the superseded zero runs and the failed one are gone
    text = (target / "records.jsonl").read_text()
    assert "/home/someone" not in text and "best.ckpt" not in text and "predictions" not in text
    figure = Path(records[0]["figure"])
    assert not figure.is_absolute()
    with Image.open(tmp_path / figure) as published:  # a readable example, downscaled for the repository
        assert published.size == (800, 200)
    assert (target / "fold_manifest.json").read_bytes() == (folder / "fold_manifest.json").read_bytes()
    # The built-in models' cards now state the published mean of the first metric (dice: 0.61 and 0.71).
    unet = yaml.safe_load((cards / "segmentation" / "unet.yaml").read_text())
    assert unet["reference_scores"]["synthetic-panels-test/quick"] == {"dice": pytest.approx(0.61)}
    assert (cards / "segmentation" / "unet.yaml").read_text().startswith("# Model card")

    # A fresh clone has no runs/: the tables come from the reference board, and the cards match them.
    out = tmp_path / "results"
    write_all_leaderboards(tmp_path / "no-runs", out, submissions_dir=None, html=False, cards_dir=cards,
                           reference_dir=reference)
    table = pd.read_csv(out / "segmentation__synthetic-panels-test__quick.csv")
    assert set(table["model"]) == {"unet", "unet-ftl"}
    # (the copied cards' scores of the project's own published boards have no table here)
    assert [p for p in reference_mismatches(out, cards) if "no committed table" not in p] == []
    assert missing_reference_scores(out, reference, cards) == []


def test_a_learning_curve_keeps_every_share_and_the_card_the_full_share(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = _run_folder(tmp_path, {"unet": 0.6})
    lines = (folder / "records.jsonl").read_text().splitlines()
    for line in list(lines):
        record = json.loads(line)
        if record["status"] == "ok" and record["metrics"]["dice"] > 0:  # the same runs on a quarter of the groups
            lines.append(json.dumps({**record, "key": record["key"] + "|0.25", "train_fraction": 0.25,
                                     "metrics": {"dice": 0.3, "iou": 0.3}}))
    (folder / "records.jsonl").write_text("\n".join(lines) + "\n")
    cards = _cards(tmp_path)
    target = publish(folder, tmp_path / "reference", cards, repository_root=tmp_path)
    records = [json.loads(line) for line in (target / "records.jsonl").read_text().splitlines()]
    assert sorted((r["fold"], r.get("train_fraction", 1.0)) for r in records) == [(0, 0.25), (0, 1.0), (1, 0.25),
                                                                                 (1, 1.0)]
    unet = yaml.safe_load((cards / "segmentation" / "unet.yaml").read_text())
    assert unet["reference_scores"]["synthetic-panels-test/quick"] == {"dice": pytest.approx(0.61)}


def test_the_photo_level_sibling_is_published_and_the_leakage_report_rebuilds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = _run_folder(tmp_path, {"unet": 0.6})
    sibling = folder.parent / "quick-photo-folds"
    sibling.mkdir()
    manifest = json.dumps({"groups": {"a": "a", "b": "b"}, "folds": [{"train": ["a"], "test": ["b"]}]})
    (sibling / "fold_manifest.json").write_text(manifest)
    lines = []
    for line in (folder / "records.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["status"] == "ok" and record["metrics"]["dice"] > 0:  # photo-level folds flatter the model
            lines.append(json.dumps({**record, "profile": "quick-photo-folds", "figure": None,
                                     "fold_manifest_sha256": sha256_bytes(manifest.encode()),
                                     "metrics": {"dice": 0.9, "iou": 0.85}}))
    (sibling / "records.jsonl").write_text("\n".join(lines) + "\n")
    reference = tmp_path / "leaderboard" / "reference"
    target = publish(folder, reference, _cards(tmp_path), repository_root=tmp_path)
    copied = target.parent / "quick-photo-folds"
    assert (copied / "fold_manifest.json").read_text() == manifest
    assert len((copied / "records.jsonl").read_text().splitlines()) == 2
    out = tmp_path / "results"
    write_all_leaderboards(tmp_path / "no-runs", out, submissions_dir=None, html=False, cards_dir=tmp_path / "cards",
                           reference_dir=reference)
    assert (out / "segmentation__synthetic-panels-test__quick__leakage.md").is_file()
    assert not list(out.glob("*quick-photo-folds*"))  # never a board of its own


def test_a_score_changed_without_its_card_fails_the_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reference, cards = tmp_path / "reference", _cards(tmp_path)
    publish(_run_folder(tmp_path, {"unet": 0.6}), reference, cards, repository_root=tmp_path)
    # Someone reruns with changed code and commits the new records without publishing (the card keeps 0.61).
    records = reference / "segmentation" / "synthetic-panels-test" / "quick" / "records.jsonl"
    records.write_text(records.read_text().replace('"dice": 0.6', '"dice": 0.5'))
    out = tmp_path / "results"
    write_all_leaderboards(tmp_path / "no-runs", out, submissions_dir=None, html=False, cards_dir=None,
                           reference_dir=reference)
    [problem] = [p for p in reference_mismatches(out, cards) if "no committed table" not in p]
    assert "unet.yaml" in problem and "reference_scores.synthetic-panels-test/quick.dice is 0.61" in problem
    # A built-in model on the reference board whose card states no score for it is caught too.
    card_file = cards / "segmentation" / "unet.yaml"
    card = yaml.safe_load(card_file.read_text())
    del card["reference_scores"]
    card_file.write_text(yaml.safe_dump(card))
    [missing] = missing_reference_scores(out, reference, cards)
    assert "unet" in missing and "synthetic-panels-test/quick" in missing


def test_a_local_run_replaces_its_published_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reference = tmp_path / "reference"
    publish(_run_folder(tmp_path / "old", {"unet": 0.6}), reference, None, repository_root=tmp_path)
    other = _run_folder(tmp_path / "old2", {"unet": 0.6}, dataset="other-data")
    publish(other, reference, None, repository_root=tmp_path)
    local = _run_folder(tmp_path, {"unet": 0.9})
    folders = benchmark_folders(tmp_path / "runs", reference)
    assert local in folders and reference / "segmentation" / "other-data" / "quick" in folders
    assert reference / "segmentation" / "synthetic-panels-test" / "quick" not in folders
    assert benchmark_folders(tmp_path / "runs", None) == [local]


def test_publish_refuses_what_is_not_a_benchmark(tmp_path):
    with pytest.raises(PublishError, match="no records.jsonl"):
        publish(tmp_path, tmp_path / "reference", None)
    folder = _run_folder(tmp_path, {"unet": 0.6})
    (folder / "fold_manifest.json").unlink()
    with pytest.raises(PublishError, match="no fold_manifest.json"):
        publish(folder, tmp_path / "reference", None, repository_root=tmp_path)


def test_cli_publishes_then_rebuilds(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    folder = _run_folder(tmp_path, {"unet": 0.6})
    monkeypatch.setattr("matcv.leaderboard.reference.REFERENCE_DIR", tmp_path / "leaderboard" / "reference")
    monkeypatch.setattr("matcv.leaderboard.reference.CARDS_DIR", _cards(tmp_path))
    out = tmp_path / "results"
    assert matcv(["leaderboard", "--runs", str(tmp_path / "no-runs"), "--out", str(out), "--publish", str(folder)]) == 0
    assert "published" in capsys.readouterr().out
    assert (out / "segmentation__synthetic-panels-test__quick.csv").is_file()


# ---------------------------------------------------------------- the committed board (what CI checks)

def test_the_committed_reference_board_rebuilds_and_matches_the_cards(tmp_path):
    """Every published benchmark rebuilds into a table, every built-in model on it states its published score
    in its card, and the card's scores are what the table says: a committed score cannot change unnoticed."""
    folders = benchmark_folders(tmp_path / "no-runs", REFERENCE_DIR)
    if not folders:
        pytest.skip("no reference board is committed yet (matcv leaderboard --publish runs/<task>/<dataset>/<profile>)")
    out = tmp_path / "results"
    write_all_leaderboards(tmp_path / "no-runs", out, submissions_dir=None, html=False, cards_dir=None,
                           reference_dir=REFERENCE_DIR)
    for folder in folders:
        task, dataset, profile = folder.parents[1].name, folder.parent.name, folder.name
        assert (out / f"{task}__{dataset}__{profile}.csv").is_file(), folder
        for line in (folder / "records.jsonl").read_text().splitlines():
            record = json.loads(line)
            assert "best_checkpoint" not in record and "data_root" not in record
            assert not str(record.get("figure", "")).startswith("/")
    assert missing_reference_scores(out, REFERENCE_DIR) == []
    assert [p for p in reference_mismatches(out) if "no committed table" not in p] == []
