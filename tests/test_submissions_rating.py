"""Rating and ordinal submissions: an external factory network and an external LightningModule class submitted on
tiny official manifests, accepted with recomputed == claimed metrics, shown beside a built-in baseline; tampered
predictions (a rating outside 5..9, floats, NaN, a wrong shape, a claimed kappa) rejected with their reason."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from matcv.benchmarks.cli import main as matcv
from matcv.datamodules.core.records import RunRecords
from matcv.benchmarks.submission.submit import SubmissionError, publish_official, submit
from matcv.leaderboard.rebuild import write_all_leaderboards
from matcv.leaderboard.scorers import FoldTruth, Rejected, scorer_for
from matcv.leaderboard.scorers.rating import RATINGS, check_rating
from matcv.leaderboard.submission import validate_submission
from tests.conftest import tiny_rating_config
from tests.submission_tampering import edit_metadata, rewrite_npz

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXTERNAL = Path(__file__).parent / "fixtures_external_model"
VALID = "tiny-cnn"
BUILTIN = {"hand-crafted-rf": {"class": "matcv.lightning_modules.rating_baselines.HandCraftedRatingBaseline",
                               "args": {"classifier": "random_forest"}}}
ORDINAL_METRICS = ["qwk", "mae", "within_1", "accuracy", "macro_f1"]




def _set_prediction(fold: int, key: str, value: np.ndarray):
    return lambda f: rewrite_npz(f / "predictions" / f"fold-{fold}.npz", lambda a: a.update({key: value}))


def _tamper_qwk(f):
    edit_metadata(f, lambda m: m["folds"][1]["metrics"].update(qwk=m["folds"][1]["metrics"]["qwk"] + 0.05))


# Tampered copies of the valid rating submission: name -> (how, the reason it must be rejected with)
TAMPERED = {
    "bad-rating-10": (_set_prediction(0, "pred_00000", np.array(10, dtype=np.int64)),
                      "fold 0: prediction for '{item0}': rating 10 is not one of the task's ratings [5, 6, 7, 8, 9]"),
    "bad-rating-4": (_set_prediction(1, "pred_00002", np.array(4, dtype=np.uint8)),
                     "fold 1: prediction for '{item2}': rating 4 is not one of the task's ratings"),
    "bad-float": (_set_prediction(0, "pred_00001", np.array(7.0, dtype=np.float32)),
                  "fold 0: prediction for '{item1}': dtype float32 (expected an integer rating"),
    "bad-nan": (_set_prediction(0, "pred_00000", np.array(np.nan)),
                "fold 0: prediction for '{item0}': dtype float64 (expected an integer rating"),
    "bad-shape": (_set_prediction(1, "pred_00000", np.array([7], dtype=np.int64)),
                  "fold 1: prediction for '{item0}': shape (1,) (expected a 0-d array: one rating per photo)"),
    "bad-qwk": (_tamper_qwk, "claimed metrics do not match the predictions: fold 1 qwk claimed"),
}


def _ordinal_config(folder: Path) -> Path:
    """The tiny rating YAML as an ``ordinal`` task (its metrics in the ordinal task's order)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(tiny_rating_config(folder, BUILTIN).read_text())
    config.update(task="ordinal", metrics=ORDINAL_METRICS)
    path = folder / "tiny_ordinal.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny official rating and ordinal benchmarks with a built-in baseline run on each; the external factory
    submitted to both (to `rating` through the CLI), the external LightningModule class to `ordinal`; tampered
    copies of the rating submission; then `matcv leaderboard`'s rebuild."""
    from matcv.benchmarks.cli import run_and_report

    tmp = tmp_path_factory.mktemp("rating-submissions")
    official, subs, runs, out = tmp / "official", tmp / "submissions", tmp / "runs", tmp / "results"
    configs = {"rating": tiny_rating_config(tmp, BUILTIN), "ordinal": _ordinal_config(tmp / "ordinal")}
    entries = {task: publish_official(config, "quick", official) for task, config in configs.items()}
    for task, config in configs.items():
        run_and_report(config, "quick", models=["hand-crafted-rf"], output_dir=runs, accelerator="cpu",
                      fold_manifest=official / entries[task]["path"], leaderboard_dir=tmp / "bench-tables",
                      progress=False)
    assert "ext_rating_models" not in sys.modules
    code = matcv(["submit", "--task", "rating", "--model", "ext_rating_models.nets:build", "--name", VALID,
                  "--model-path", str(EXTERNAL), "--official-dir", str(official), "--submissions-dir", str(subs),
                  "--work-dir", str(tmp / "work"), "--accelerator", "cpu", "--no-progress",
                  "--authors", "A. Person", "--description", "Two convolutions and a linear layer",
                  "--hyperparameters", '{"width": 8, "lr": 0.01, "max_epochs": 8}', "--tuning", "defaults, not tuned"])
    assert code == 0
    common = {"official_dir": official, "submissions_dir": subs, "work_dir": tmp / "work", "accelerator": "cpu",
              "progress": False}
    sys.path.insert(0, str(EXTERNAL))
    try:
        submit("ordinal", "ext_rating_models.nets:build", VALID, hyperparameters={"lr": 0.01}, **common)
        submit("ordinal", "ext_rating_models.nets:TinyOrdinalRater", "tiny-corn",
               hyperparameters={"lr": 0.01, "width": 6, "max_epochs": 6}, **common)
    finally:
        sys.path.remove(str(EXTERNAL))

    valid = subs / "rating" / VALID
    with np.load(valid / "predictions" / "fold-0.npz", allow_pickle=False) as data:
        fold0 = data["item_ids"].tolist()
    with np.load(valid / "predictions" / "fold-1.npz", allow_pickle=False) as data:
        fold1 = data["item_ids"].tolist()
    reasons = {}
    for name, (tamper, reason) in TAMPERED.items():
        target = subs / "rating" / name
        shutil.copytree(valid, target)
        edit_metadata(target, lambda meta, name=name: meta.update(name=name))
        tamper(target)
        items = fold0 if "fold 0" in reason else fold1
        reasons[name] = reason.format(item0=items[0], item1=items[1], item2=items[2])
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        written = write_all_leaderboards(runs, out, submissions_dir=subs, official_dir=official)
    return {"tmp": tmp, "official": official, "entries": entries, "subs": subs, "runs": runs, "out": out,
            "written": written, "stdout": captured.getvalue(), "reasons": reasons}


def _test_items(world, task: str) -> list[list[str]]:
    manifest = json.loads((world["official"] / world["entries"][task]["path"]).read_text())
    return [fold["test"] for fold in manifest["folds"]]


@pytest.mark.parametrize("task", ["rating", "ordinal"])
def test_predictions_are_one_integer_rating_per_test_photo(world, task):
    folder = world["subs"] / task / VALID
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == \
        ["metadata.json", "predictions/fold-0.npz", "predictions/fold-1.npz"]
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["model"] == {"reference": "ext_rating_models.nets:build", "kind": "factory"}
    assert meta["metrics"] == list(scorer_for(task).metrics)
    for k, test in enumerate(_test_items(world, task)):
        with np.load(folder / f"predictions/fold-{k}.npz", allow_pickle=False) as data:
            assert sorted(data.files) == ["item_ids"] + [f"pred_{i:05d}" for i in range(len(test))]
            assert data["item_ids"].tolist() == test
            predictions = [data[f"pred_{i:05d}"] for i in range(len(test))]
        assert all(p.shape == () and p.dtype == np.int64 and int(p) in RATINGS for p in predictions)


def test_scorer_metrics_are_the_task_yamls():
    from matcv.datamodules.core.config import TaskConfig

    for task in ("rating", "ordinal"):
        assert scorer_for(task).metrics == tuple(TaskConfig.load(task).metrics)
    assert scorer_for("ordinal").metrics == tuple(ORDINAL_METRICS)
    assert RATINGS == (5, 6, 7, 8, 9)


@pytest.mark.parametrize(("task", "name"), [("rating", VALID), ("ordinal", VALID), ("ordinal", "tiny-corn")])
def test_valid_submissions_are_accepted_with_recomputed_metrics_equal_to_claimed(world, task, name):
    folder = world["subs"] / task / name
    verdict = validate_submission(folder, world["official"])
    assert verdict.ok, verdict.reason
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["model"]["kind"] == ("lightning_module" if name == "tiny-corn" else "factory")
    assert len(verdict.folds) == len(meta["folds"]) == 2
    for fold, claimed in zip(verdict.folds, meta["folds"]):
        # the same rating_metrics on the same ratings as RatingEvaluation.test_summary: equal, not just close
        assert fold["metrics"] == claimed["metrics"]
        assert set(fold["metrics"]) == set(scorer_for(task).metrics)
        rows = fold["per_item"]
        assert len(rows) == claimed["n_test"]
        # per-photo rows as the built-in models' per-image records; they average to the fold's accuracy and MAE
        assert all(set(row) == {"item_id", "rating", "predicted", "correct", "abs_error"} for row in rows)
        assert np.mean([row["correct"] for row in rows]) == pytest.approx(fold["metrics"]["accuracy"], abs=1e-12)
        assert np.mean([row["abs_error"] for row in rows]) == pytest.approx(fold["metrics"]["mae"], abs=1e-12)


@pytest.mark.parametrize("task", ["rating", "ordinal"])
def test_scorer_reproduces_the_harness_metrics_of_the_builtin_baseline(world, task):
    """The built-in model's recorded test predictions, as a submission's arrays, score exactly its recorded metrics."""
    entry = world["entries"][task]
    records = RunRecords(world["runs"] / task / entry["dataset"] / "quick" / "records.jsonl").load()
    assert len(records) == 2 and all(r["status"] == "ok" for r in records)
    scorer = scorer_for(task)
    truth = scorer.load_truth(entry, world["official"])
    for record in sorted(records, key=lambda r: r["fold"]):
        items = [row["item_id"] for row in record["per_image"]]
        arrays = {f"pred_{i:05d}": np.array(row["predicted"], dtype=np.int64)
                  for i, row in enumerate(record["per_image"])}
        metrics, rows = scorer.score_fold(arrays, items, truth.folds[record["fold"]])
        assert metrics == {name: record["metrics"][name] for name in scorer.metrics}
        assert [row["rating"] for row in rows] == [row["rating"] for row in record["per_image"]]
    assert len({row["predicted"] for record in records for row in record["per_image"]}) > 1  # not one constant


@pytest.mark.parametrize("name", sorted(TAMPERED))
def test_tampered_submission_is_rejected_with_its_reason(world, name):
    line = next((x for x in world["stdout"].splitlines() if x.startswith("REJECTED") and f"/{name}:" in x), None)
    assert line is not None, world["stdout"]
    assert world["reasons"][name] in line, line


def test_rebuilt_tables_show_the_submissions_beside_the_builtin_baseline(world):
    tables = {p.name.split("__")[0]: p for p in world["written"] if p.name.endswith("__submissions.md")}
    assert sorted(tables) == ["ordinal", "rating"]
    rating = tables["rating"].read_text()
    assert f"| {VALID} (submission) | submission | 2 |" in rating
    assert "| hand-crafted-rf | built-in | 2 |" in rating
    assert "| accuracy (mean ± std) | macro_f1 (mean ± std) | qwk (mean ± std) |" in rating
    assert not any(name in rating for name in TAMPERED)
    assert rating.count(" | – |") == 2  # no per-photo accuracy in anyone's records: no per-photo ranks
    ordinal = tables["ordinal"].read_text()
    for row in (f"| {VALID} (submission) | submission | 2 |", "| tiny-corn (submission) | submission | 2 |",
                "| hand-crafted-rf | built-in | 2 |"):
        assert row in ordinal
    assert "| qwk (mean ± std) | mae (mean ± std) |" in ordinal and "ranked by qwk" in ordinal
    page = (world["out"] / "index.html").read_text()
    assert f"{VALID} (submission)" in page and "tiny-corn (submission)" in page
    for name in TAMPERED:
        assert name in page.split("Rejected submissions")[1]


def test_check_rating_refuses_what_is_not_one_known_integer_rating():
    assert check_rating(np.array(7, dtype=np.int64), RATINGS) is None
    assert check_rating(np.array(9, dtype=np.uint8), RATINGS) is None
    assert "dtype bool" in check_rating(np.array(True), RATINGS)
    assert "dtype <U1" in check_rating(np.array("7"), RATINGS)
    assert "rating 18446744073709551615 is not" in check_rating(np.array(2**64 - 1, dtype=np.uint64), RATINGS)
    assert "shape (1, 1)" in check_rating(np.array([[7]]), RATINGS)
    truth = FoldTruth(["a", "b"], {"a": 5, "b": 9}, 1 << 20, {"ratings": RATINGS})
    score_fold = scorer_for("rating").score_fold
    with pytest.raises(Rejected, match="must hold exactly item_ids and pred_00000..pred_00001"):
        score_fold({"pred_00000": np.array(7)}, ["a", "b"], truth)
    metrics, rows = score_fold({"pred_00000": np.array(6), "pred_00001": np.array(9)}, ["a", "b"], truth)
    assert metrics["accuracy"] == 0.5 and metrics["mae"] == 0.5 and metrics["within_1"] == 1.0
    assert rows[0] == {"item_id": "a", "rating": 5, "predicted": 6, "correct": 0.0, "abs_error": 1.0}


def test_factory_contract_and_evaluation_base_are_enforced():
    import torch

    from matcv.benchmarks.submission.adapters.rating import ExternalRatingModel
    from matcv.benchmarks.submission.models import model_class

    sys.path.insert(0, str(EXTERNAL))
    try:
        model = ExternalRatingModel("ext_rating_models.nets:build", {"num_ratings": 3})
        with pytest.raises(ValueError, match=r"must map images \(2, 3, 16, 16\) to logits \(2, 5\)"):
            model(torch.zeros(2, 3, 16, 16))
        with pytest.raises(ValueError, match="submit a LightningModule class"):
            ExternalRatingModel("ext_rating_models.nets:build", head="corn")
        with pytest.raises(SubmissionError, match="not a RatingEvaluation subclass"):
            model_class("ordinal", "ext_seg_models.nets:TinyLightningSegmenter", {})
        reference, args, kind = model_class("ordinal", "ext_rating_models.nets:build", {"width": 4, "lr": 0.1})
        assert (reference, kind) == ("matcv.benchmarks.submission.adapters.rating.ExternalRatingModel", "factory")
        assert args == {"factory": "ext_rating_models.nets:build", "factory_args": {"width": 4}, "lr": 0.1}
    finally:
        sys.path.remove(str(EXTERNAL))
