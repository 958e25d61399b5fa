"""Model cards: the JSON Schema, a card for every built-in model, tracks in the tables, the board's CI checks.

Everything here is cheap (no training): the committed cards and submissions are validated as CI's default suite
runs, so a new model without a card, a card breaking the schema, a rejected committed submission or a card's
reference score the committed table does not reproduce fails `make test`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from matcv.benchmarks.cli import main as matcv
from matcv.benchmarks.submission.submit import SubmissionError, submission_card
from matcv.datamodules.core.model_card_format import CARD_SCHEMA, CARDS_DIR, CardError, card_problems, check_card
from matcv.datamodules.core.submission_format import SCHEMA
from matcv.leaderboard.build import write_leaderboard
from matcv.leaderboard.model_cards import (
    EXTRA_DATA,
    FROM_SCRATCH,
    IMAGENET,
    IN_DOMAIN,
    UNKNOWN,
    builtin_models,
    card_errors,
    card_problems_of_tasks,
    missing_cards,
    reference_mismatches,
    track_of,
)
from matcv.leaderboard.submission import validate_all, validate_submission

ROOT = Path(__file__).resolve().parents[1]
SHA = "ab" * 32


def good_card(**changes) -> dict:
    card = {"schema": CARD_SCHEMA, "name": "my-net", "task": "segmentation", "authors": ["A. Person"],
            "paper": "10.1007/978-3-319-24574-4_28", "code": "https://example.org/my-net", "licence": "MIT",
            "pretrained_on": "none", "weights": None, "extra_training_data": "none", "parameters": 1234,
            "hardware": "CPU", "training_device_hours": 0.5, "date": "2024-05-01"}
    return {**card, **changes}


# ---------------------------------------------------------------- the committed board (what CI checks)

def test_every_builtin_model_has_a_valid_card():
    """A new model in a task YAML without leaderboard/cards/<task>/<model>.yaml fails here, as does a card that
    breaks the schema or sits in the wrong place."""
    assert CARDS_DIR == ROOT / "leaderboard" / "cards"
    assert card_problems_of_tasks() == []
    assert len(builtin_models()) >= 30  # every YAML was read, not an empty list passing by accident


def test_committed_submissions_are_accepted():
    verdicts = validate_all(ROOT / "leaderboard" / "submissions")
    rejected = [f"{v.path}: {v.reason}" for v in verdicts if not v.ok]
    assert rejected == []


# ---------------------------------------------------------------- the schema

@pytest.mark.parametrize("changes, field", [
    ({"paper": "not a doi"}, "paper"),
    ({"licence": ""}, "licence"),
    ({"pretrained_on": "imagenet"}, "weights"),  # pretrained: the weights file's sha256 is required
    ({"pretrained_on": "in-domain", "weights": {"source": "local-file", "file": "w.pt"}}, "weights.sha256"),
    ({"pretrained_on": "imagenet", "weights": {"file": "w.pt"}}, "weights.source"),
    ({"weights": {"source": "local-file", "file": "w.pt", "sha256": "0" * 64}}, "weights"),  # from scratch, yet weights
    ({"pretrained_on": "other", "weights": {"source": "local-file", "file": "w", "sha256": "XYZ"}}, "weights.sha256"),
    ({"date": "2024-13-01"}, "date"),
    ({"authors": []}, "authors"),
    ({"authors": ["A", 3]}, "authors[1]"),
    ({"parameters": -1}, "parameters"),
    ({"pretrained_on": "ImageNet"}, "pretrained_on"),
    ({"reference_scores": {"quick": {"dice": 0.5}}}, "reference_scores"),
    ({"surprise": 1}, "surprise"),
])
def test_a_bad_card_is_rejected_naming_the_field(changes, field):
    card = good_card(**changes)
    problems = card_problems(card)
    assert any(p.startswith(f"{field}: ") for p in problems), problems
    with pytest.raises(CardError, match=f"cards/x.yaml: invalid model card: .*{field.replace('[', '.').replace(']', '.')}"):
        check_card(card, "cards/x.yaml")


def test_a_missing_field_is_named():
    card = good_card()
    del card["licence"]
    assert card_problems(card) == ["licence: required field missing"]


def test_valid_cards_pass():
    assert card_problems(good_card()) == []
    hub = good_card(pretrained_on="imagenet", weights={"source": "imagenet-hub", "file": "timm/resnet18.a1_in1k"})
    assert card_problems(hub) == []
    pretrained = good_card(pretrained_on="in-domain", weights={"source": "local-file", "file": "w.pt", "sha256": SHA},
                           reference_scores={"synthetic/quick": {"dice": 0.5}})
    assert card_problems(pretrained) == []


def test_card_files_are_checked_with_their_path(tmp_path):
    cards = tmp_path / "cards"
    shutil.copytree(CARDS_DIR, cards)
    path = cards / "segmentation" / "unet.yaml"
    card = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**card, "pretrained_on": "imagenet"}))
    (cards / "rating" / "resnet18.yaml").write_text(yaml.safe_dump({**card, "name": "unet"}))  # the wrong place
    (cards / "rating" / "notes.txt").write_text("stray")
    before = set(missing_cards(cards))  # models added to the YAMLs without a card yet (the first test fails on them)
    (cards / "ordinal" / "resnet18-ce.yaml").unlink()
    errors = card_errors(cards)
    assert any(str(path) in e and "weights" in e for e in errors), errors
    assert any("rating/resnet18.yaml" in e and "field 'name'" in e for e in errors), errors
    assert any("notes.txt" in e for e in errors), errors
    missing = [line for line in missing_cards(cards) if line not in before]
    assert len(missing) == 1 and "ordinal/resnet18-ce.yaml" in missing[0] and "ordinal.yaml" in missing[0]


# ---------------------------------------------------------------- tracks

def test_tracks_from_card_and_records():
    assert track_of(good_card()) == FROM_SCRATCH
    own = {"source": "local-file", "file": "w.safetensors", "sha256": SHA}
    assert track_of(good_card(pretrained_on="imagenet", weights={"source": "imagenet-hub"})) == IMAGENET
    assert track_of(good_card(pretrained_on="in-domain", weights=own)) == IN_DOMAIN
    assert track_of(good_card(pretrained_on="other", weights=own)) == EXTRA_DATA
    assert track_of(good_card(extra_training_data="500 extra panels")) == EXTRA_DATA
    assert track_of(None) == UNKNOWN
    # What the run loaded wins over what the card says.
    loaded = [{"details": {"weights": {"source": "imagenet-hub", "pretrained_on": "imagenet", "sha256": SHA}}}]
    assert track_of(good_card(), loaded) == IMAGENET
    assert track_of(None, loaded) == IMAGENET
    assert track_of(good_card(), [{"details": {"weights": {"source": "none", "pretrained_on": "none"}}}]) == FROM_SCRATCH


def _records(tmp_path: Path) -> Path:
    folder = tmp_path / "runs" / "segmentation" / "synthetic" / "quick"
    folder.mkdir(parents=True)
    lines = []
    for model, dice, weights in (("unet", 0.7, None), ("fpn-resnet18", 0.8, "imagenet"), ("mystery", 0.6, None)):
        for fold in range(3):
            record = {"key": f"{model}|{fold}", "task": "segmentation", "dataset": "synthetic", "profile": "quick",
                      "model": model, "fold": fold, "status": "ok", "fold_manifest_sha256": "a" * 64,
                      "data_sha256": "b" * 64, "metrics": {"dice": dice + 0.01 * fold, "iou": dice - 0.1},
                      "durations": {"fit_s": 1.0, "test_s": 0.1}, "n_items": {"test": 4}}
            if weights:
                record["details"] = {"weights": {"source": "imagenet-hub", "pretrained_on": weights, "sha256": SHA}}
            lines.append(json.dumps(record))
    (folder / "records.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "records.jsonl"


def test_tables_have_a_track_column_and_filter(tmp_path):
    records = _records(tmp_path)
    [markdown] = write_leaderboard(records, tmp_path / "all", ["dice", "iou"])
    table = pd.read_csv(markdown.with_suffix(".csv")).set_index("model")
    assert table["track"].to_dict() == {"fpn-resnet18": IMAGENET, "unet": FROM_SCRATCH, "mystery": UNKNOWN}
    text = markdown.read_text()
    assert f'Tracks: "{IMAGENET}", "{FROM_SCRATCH}", "{UNKNOWN}"' in text
    assert "| infer ms/item | params | track |" in text and f"| {IMAGENET} |" in text

    [only] = write_leaderboard(records, tmp_path / "scratch", ["dice", "iou"], track=FROM_SCRATCH)
    filtered = pd.read_csv(only.with_suffix(".csv"))
    assert filtered["model"].tolist() == ["unet"] and filtered["rank"].tolist() == [1]
    assert f'Track: only "{FROM_SCRATCH}"' in only.read_text()
    with pytest.raises(ValueError, match="unknown track 'scratch'"):
        write_leaderboard(records, tmp_path / "x", ["dice"], track="scratch")


def test_cli_track_option(tmp_path, capsys):
    _records(tmp_path)
    out = tmp_path / "out"
    assert matcv(["leaderboard", "--runs", str(tmp_path / "runs"), "--out", str(out), "--track", "from scratch"]) == 0
    assert pd.read_csv(out / "segmentation__synthetic__quick.csv")["model"].tolist() == ["unet"]
    assert matcv(["leaderboard", "--runs", str(tmp_path / "runs"), "--out", str(out), "--track", "bogus"]) == 2
    assert "unknown track 'bogus'" in capsys.readouterr().err


# ---------------------------------------------------------------- reference scores

def test_reference_scores_are_compared_with_the_tables(tmp_path):
    cards, results = tmp_path / "cards", tmp_path / "results"
    (cards / "segmentation").mkdir(parents=True)
    results.mkdir()
    card = good_card(name="unet", reference_scores={"synthetic/quick": {"dice": 0.71}})
    (cards / "segmentation" / "unet.yaml").write_text(yaml.safe_dump(card))
    assert any("no committed table" in p for p in reference_mismatches(results, cards))
    pd.DataFrame({"rank": [1], "model": ["unet"], "dice_mean": [0.71]}).to_csv(
        results / "segmentation__synthetic__quick.csv", index=False)
    assert reference_mismatches(results, cards) == []
    pd.DataFrame({"rank": [1], "model": ["unet"], "dice_mean": [0.65]}).to_csv(
        results / "segmentation__synthetic__quick.csv", index=False)
    [problem] = reference_mismatches(results, cards)
    assert "reference_scores.synthetic/quick.dice is 0.71" in problem and "0.65" in problem


# ---------------------------------------------------------------- submissions

def _metadata(folder: Path, card) -> None:
    folder.mkdir(parents=True)
    metadata = {"schema": SCHEMA, "name": folder.name, "task": "segmentation", "profile": "quick",
                "dataset": "synthetic", "authors": ["A. Person"], "description": "", "tuning": "",
                "model": {"reference": "pkg.mod:build", "kind": "factory"}, "hyperparameters": {},
                "hardware": {}, "matcv": {}, "fold_manifest_sha256": SHA, "folds": [], "card": card}
    (folder / "metadata.json").write_text(json.dumps(metadata))


@pytest.mark.parametrize("card, expected", [
    (good_card(pretrained_on="imagenet"), "metadata.json: card: invalid model card: weights"),
    (good_card(date="yesterday"), "metadata.json: card: invalid model card: date"),
    ("a card", "(card): 'a card' is not of type 'object'"),
])
def test_a_submission_with_a_malformed_card_is_rejected(tmp_path, card, expected):
    folder = tmp_path / "subs" / "segmentation" / "my-net"
    _metadata(folder, card)
    verdict = validate_submission(folder, tmp_path / "official")
    assert not verdict.ok and expected in verdict.reason, verdict.reason


def test_a_submission_with_a_valid_card_passes_the_card_check(tmp_path):
    folder = tmp_path / "subs" / "segmentation" / "my-net"
    _metadata(folder, good_card())
    verdict = validate_submission(folder, tmp_path / "official")  # no official manifest here: the next check
    assert not verdict.ok and "no official fold manifest" in verdict.reason, verdict.reason


def test_submit_completes_and_checks_the_card():
    measured = {"parameters": 99, "hardware": "CPU x (2 cores)", "training_device_hours": 0.25, "date": "2024-06-01"}
    card = submission_card("my-net", "segmentation", "pkg.mod:build", ["A. Person"], None, measured)
    assert card["pretrained_on"] == "none" and card["licence"] == "unspecified" and card["parameters"] == 99
    assert track_of(card) == FROM_SCRATCH and card_problems(card) == []
    given = {"paper": "https://arxiv.org/abs/1234.5678", "pretrained_on": "imagenet",
             "weights": {"source": "local-file", "sha256": SHA, "file": "resnet18.pth"}, "parameters": 11}
    card = submission_card("my-net", "segmentation", "pkg.mod:build", [], given, measured)
    assert card["parameters"] == 11 and card["authors"] == ["unspecified"] and track_of(card) == IMAGENET
    with pytest.raises(SubmissionError, match="--card: invalid model card: weights"):
        submission_card("my-net", "segmentation", "pkg.mod:build", [], {"pretrained_on": "in-domain"}, measured)
    with pytest.raises(SubmissionError, match="field 'task' is 'rating'"):
        submission_card("my-net", "segmentation", "pkg.mod:build", [], {"task": "rating"}, measured)
