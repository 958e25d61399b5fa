"""Submissions for the generative tasks: microstructure (autoencoder/GAN samples and reconstructions) and AlloyGAN
(images generated at the test items' conditions). An external LightningModule class is submitted on a tiny official
benchmark, its predictions are rescored by matcv's own metric code (claimed = recomputed, FID/KID-domain too on
this machine), it is shown beside a built-in model, and tampered copies are rejected with their reason."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from matcv.benchmarks.cli import main as matcv
from matcv.datamodules.core.config import CONFIG_DIR
from matcv.benchmarks.submission.submit import SubmissionError, publish_official, submit
from matcv.leaderboard.rebuild import write_all_leaderboards
from matcv.leaderboard.scorers import scorer_for
from matcv.leaderboard.submission import validate_submission
from tests.submission_tampering import edit_metadata, rewrite_npz

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXTERNAL = Path(__file__).parent / "fixtures_external_model"
MICRO, ALLOY = "tiny-ae", "tiny-gan"  # the valid submissions


def _microstructure_config(tmp: Path) -> Path:
    """16 binary 64² fields of 8 settings, 2 folds; every model's domain extractor trains for 1 epoch."""
    config = yaml.safe_load((CONFIG_DIR / "microstructure.yaml").read_text())
    classes = ("TrainingImagesReference", "AutoencoderTask", "VAETask", "DCGANTask")
    config["profiles"] = {"quick": {
        "folds": 2, "val_fraction": 0.34, "seed": 0, "trainer": {"max_epochs": 1}, "datamodule": {"batch_size": 4},
        "generator": {"source": "gaussian-binary", "size": 64, "images_per_setting": 2, "sigma_values": [2, 6],
                      "volume_fractions": [0.3, 0.7]},
        "class_overrides": {f"matcv.lightning_modules.microstructure.{c}": {"extractor_epochs": 1} for c in classes}}}
    path = tmp / "microstructure.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _alloygan_config(tmp: Path) -> Path:
    """48 micrographs of the nine alloys at two cooling rates, 2 leave-alloy-out folds."""
    config = yaml.safe_load((CONFIG_DIR / "alloygan.yaml").read_text())
    config["profiles"] = {"quick": {
        "folds": 2, "val_fraction": 0.25, "seed": 0, "trainer": {"max_epochs": 1}, "datamodule": {"batch_size": 16},
        "generator": {"images_per_condition": 2, "cooling_rates": [2.5, 143.0]},
        "class_overrides": {
            "matcv.lightning_modules.alloygan.ConditionalGANTask": {"ngf": 4, "ndf": 4, "extractor_epochs": 1},
            "matcv.lightning_modules.alloygan.RealHeldOutImages": {"extractor_epochs": 1}}}}
    path = tmp / "alloygan.yaml"
    path.write_text(yaml.safe_dump(config))
    return path




def _set_nan(key: str):
    def change(arrays):
        arrays[key] = arrays[key].copy()
        arrays[key].flat[0] = np.nan
    return change


def _claim(fold: int, metric: str, delta: float):
    def change(folder):
        edit_metadata(folder, lambda m: m["folds"][fold]["metrics"].update(
            {metric: m["folds"][fold]["metrics"][metric] + delta}))
    return change


def _npz(fold: int, change):
    return lambda folder: rewrite_npz(folder / "predictions" / f"fold-{fold}.npz", change)


# task -> {tampered copy of the valid submission: (how, the reason it must be rejected with)}
TAMPERED = {
    "microstructure": {
        "ms-samples-range": (_npz(0, lambda a: a.update(samples=a["samples"] * 3)),
                             "fold 0: samples: values in ["),
        "ms-no-samples": (_npz(0, lambda a: a.pop("samples")), "fold 0: the file needs a 'samples' array"),
        "ms-one-sample": (_npz(1, lambda a: a.update(samples=a["samples"][:1].copy())),
                          "fold 1: samples: shape (1, 64, 64), expected (n, 64, 64) with 2 <= n <= 4096"),
        "ms-samples-f64": (_npz(0, lambda a: a.update(samples=a["samples"].astype(np.float64))),
                           "fold 0: samples: dtype float64 (expected float32 images in [-1, 1])"),
        "ms-nan": (_npz(0, _set_nan("pred_00001")), "1 non-finite value(s) (NaN/inf)"),
        "ms-recon-shape": (_npz(0, lambda a: a.update(pred_00000=a["pred_00000"][:32].copy())),
                           "shape (32, 64), expected (64, 64)"),
        "ms-partial-recon": (_npz(1, lambda a: a.pop("pred_00001")), "fold 1: the file must hold exactly item_ids"),
        "ms-s2": (_claim(1, "s2_distance", -0.05),
                  "claimed metrics do not match the predictions: fold 1 s2_distance claimed"),
        "ms-psnr": (_claim(0, "psnr", 1.0), "claimed metrics do not match the predictions: fold 0 psnr claimed"),
    },
    "alloygan": {
        "ag-range": (_npz(0, lambda a: a.update(pred_00002=a["pred_00002"] * 3 + 2)),
                     "outside [-1, 1]"),
        "ag-nan": (_npz(1, _set_nan("pred_00000")), "fold 1: image generated for"),
        "ag-shape": (_npz(0, lambda a: a.update(pred_00000=a["pred_00000"][None])),
                     "shape (1, 128, 128), expected (128, 128)"),
        "ag-si": (_claim(1, "si_fraction_mae", 0.05),
                  "claimed metrics do not match the predictions: fold 1 si_fraction_mae claimed"),
    },
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny official benchmarks of both tasks, a built-in model run on each, the external models' submissions
    (microstructure through the CLI, AlloyGAN through ``submit()``), tampered copies, then the rebuild."""
    from matcv.benchmarks.cli import run_and_report

    tmp = tmp_path_factory.mktemp("generative-submissions")
    official, subs, runs, out = tmp / "official", tmp / "submissions", tmp / "runs", tmp / "results"
    entries = {}
    for task, config, builtin in (("microstructure", _microstructure_config(tmp), "train-images"),
                                  ("alloygan", _alloygan_config(tmp), "real-held-out")):
        entries[task] = publish_official(config, "quick", official)
        run_and_report(config, "quick", models=[builtin], output_dir=runs, accelerator="cpu",
                      fold_manifest=official / entries[task]["path"], leaderboard_dir=tmp / "bench-tables",
                      progress=False)
    assert matcv(["submit", "--task", "microstructure", "--model", "ext_generative_models.nets:TinyAutoencoder",
                  "--name", MICRO, "--model-path", str(EXTERNAL), "--official-dir", str(official),
                  "--submissions-dir", str(subs), "--work-dir", str(tmp / "work"), "--accelerator", "cpu",
                  "--no-progress", "--hyperparameters", '{"extractor_epochs": 1, "max_epochs": 1}']) == 0
    sys.path.insert(0, str(EXTERNAL))
    try:
        submit("alloygan", "ext_generative_models.nets:TinyAlloyGAN", ALLOY, hyperparameters={"extractor_epochs": 1},
               official_dir=official, submissions_dir=subs, work_dir=tmp / "work", accelerator="cpu", progress=False)
    finally:
        sys.path.remove(str(EXTERNAL))
    for task, valid in (("microstructure", MICRO), ("alloygan", ALLOY)):
        for name, (tamper, _) in TAMPERED[task].items():
            target = subs / task / name
            shutil.copytree(subs / task / valid, target)
            edit_metadata(target, lambda meta, name=name: meta.update(name=name))
            tamper(target)
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        written = write_all_leaderboards(runs, out, submissions_dir=subs, official_dir=official)
    return {"tmp": tmp, "official": official, "entries": entries, "subs": subs, "runs": runs, "out": out,
            "written": written, "stdout": captured.getvalue(), "truths": {}}


def _fold_arrays(folder: Path, fold: int) -> dict[str, np.ndarray]:
    with np.load(folder / "predictions" / f"fold-{fold}.npz", allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _truth(world, task):
    entry = world["entries"][task]
    key = (str(world["official"]), entry["sha256"])
    if key not in world["truths"]:
        world["truths"][key] = scorer_for(task).load_truth(entry, world["official"])
    return world["truths"][key]


def test_submission_files_hold_the_generated_images(world):
    manifests = {t: json.loads((world["official"] / e["path"]).read_text()) for t, e in world["entries"].items()}
    for k, fold in enumerate(manifests["microstructure"]["folds"]):
        arrays = _fold_arrays(world["subs"] / "microstructure" / MICRO, k)
        assert arrays["item_ids"].tolist() == fold["test"]
        assert set(arrays) == {"item_ids", "samples"} | {f"pred_{i:05d}" for i in range(len(fold["test"]))}
        # the harness draws as many samples as there are test images (n_samples unset)
        assert arrays["samples"].shape == (len(fold["test"]), 64, 64) and arrays["samples"].dtype == np.float32
        for key in set(arrays) - {"item_ids"}:
            assert arrays[key].dtype == np.float32 and -1 <= arrays[key].min() and arrays[key].max() <= 1
    for k, fold in enumerate(manifests["alloygan"]["folds"]):
        arrays = _fold_arrays(world["subs"] / "alloygan" / ALLOY, k)
        assert arrays["item_ids"].tolist() == fold["test"]
        assert set(arrays) == {"item_ids"} | {f"pred_{i:05d}" for i in range(len(fold["test"]))}
        assert all(arrays[f"pred_{i:05d}"].shape == (128, 128) for i in range(len(fold["test"])))
    for task, name in (("microstructure", MICRO), ("alloygan", ALLOY)):
        meta = json.loads((world["subs"] / task / name / "metadata.json").read_text())
        assert meta["model"]["kind"] == "lightning_module"


@pytest.mark.parametrize("task,name", [("microstructure", MICRO), ("alloygan", ALLOY)])
def test_valid_submission_is_accepted_with_every_metric_recomputed_equal(world, task, name):
    folder = world["subs"] / task / name
    verdict = validate_submission(folder, world["official"], world["truths"])
    assert verdict.ok, verdict.reason
    scorer = scorer_for(task)
    assert {"fid_domain", "kid_domain"} <= set(scorer.metrics) - set(scorer.compared)
    meta = json.loads((folder / "metadata.json").read_text())
    for fold, claimed in zip(verdict.folds, meta["folds"]):
        assert list(fold["metrics"]) == list(scorer.metrics)
        # FID/KID are not compared by the validation (the extractor is trained on the scoring machine), but here
        # the harness's cached extractor is reused: every number repeats exactly, FID/KID included.
        for metric, value in fold["metrics"].items():
            stated = claimed["metrics"][metric]
            assert (math.isnan(value) and math.isnan(stated)) or value == stated, (fold["fold"], metric)
        assert math.isfinite(fold["metrics"]["fid_domain"]) and math.isfinite(fold["metrics"]["kid_domain"])
    if task == "microstructure":  # the autoencoder reconstructs: per-image scores of every test image
        assert all(math.isfinite(fold["metrics"][m]) for fold in verdict.folds for m in ("mse", "psnr", "ssim"))
        assert all({"item_id", "mse", "psnr", "ssim"} <= set(row) for row in verdict.folds[0]["per_item"])
    else:
        assert all(math.isfinite(fold["metrics"]["si_fraction_mae"]) for fold in verdict.folds)


def test_a_claimed_fid_is_shown_recomputed_but_not_compared(world, tmp_path):
    folder = tmp_path / "subs" / "microstructure" / "odd-fid"
    shutil.copytree(world["subs"] / "microstructure" / MICRO, folder)
    edit_metadata(folder, lambda meta: meta.update(name="odd-fid"))
    _claim(0, "fid_domain", 5.0)(folder)
    verdict = validate_submission(folder, world["official"], world["truths"])
    assert verdict.ok, verdict.reason
    claimed = json.loads((folder / "metadata.json").read_text())["folds"][0]["metrics"]["fid_domain"]
    assert verdict.folds[0]["metrics"]["fid_domain"] == pytest.approx(claimed - 5.0, abs=1e-12)


@pytest.mark.parametrize("task,name", [(task, name) for task in TAMPERED for name in TAMPERED[task]])
def test_tampered_submission_is_rejected_with_its_reason(world, task, name):
    expected = TAMPERED[task][name][1]
    line = next((x for x in world["stdout"].splitlines() if x.startswith("REJECTED") and f"/{task}/{name}:" in x),
                None)
    assert line is not None, world["stdout"]
    assert expected in line, line


def test_rebuilt_tables_show_the_submissions_beside_the_builtin_models(world):
    tables = {p.name: p.read_text() for p in world["written"] if p.name.endswith("__submissions.md")}
    assert set(tables) == {"microstructure__gaussian-binary__quick__submissions.md",
                           "alloygan__alloy-micrographs__quick__submissions.md"}
    micro = tables["microstructure__gaussian-binary__quick__submissions.md"]
    assert f"| {MICRO} (submission) | submission | 2 |" in micro and "| train-images | built-in | 2 |" in micro
    alloy = tables["alloygan__alloy-micrographs__quick__submissions.md"]
    assert f"| {ALLOY} (submission) | submission | 2 |" in alloy and "| real-held-out | built-in | 2 |" in alloy
    for task, text in (("microstructure", micro), ("alloygan", alloy)):
        assert not any(name in text for name in TAMPERED[task])
    page = (world["out"] / "index.html").read_text()
    assert f"{MICRO} (submission)" in page and f"{ALLOY} (submission)" in page


def test_a_model_that_does_not_reconstruct_scores_nan_reconstruction_metrics(world):
    truth = _truth(world, "microstructure").folds[0]
    arrays = _fold_arrays(world["subs"] / "microstructure" / MICRO, 0)
    item_ids = arrays.pop("item_ids").tolist()
    scorer = scorer_for("microstructure")
    with_reconstructions, _ = scorer.score_fold(dict(arrays), item_ids, truth)
    samples_only, rows = scorer.score_fold({"samples": arrays["samples"]}, item_ids, truth)
    assert all(math.isnan(samples_only[m]) for m in ("mse", "psnr", "ssim"))
    assert rows == [{"item_id": item} for item in truth.item_ids]
    for metric in ("s2_distance", "vf_error", "diversity", "fid_domain", "kid_domain"):
        assert samples_only[metric] == with_reconstructions[metric]
    # Scoring the real test images as reconstructions: a perfect score.
    perfect, _ = scorer.score_fold({**arrays, **{f"pred_{i:05d}": truth.targets[item] for i, item in
                                                 enumerate(item_ids)}}, item_ids, truth)
    assert perfect["mse"] == 0.0 and perfect["ssim"] == pytest.approx(1.0)


def test_real_test_images_scored_as_a_submission_reproduce_the_ceiling(world):
    """The AlloyGAN scorer's domain metrics are the harness's: the real held-out images, submitted as if
    generated, score what the built-in ``real-held-out`` ceiling recorded."""
    from matcv.datamodules.core.records import RunRecords

    entry = world["entries"]["alloygan"]
    records = RunRecords(world["runs"] / "alloygan" / entry["dataset"] / "quick" / "records.jsonl").load()
    ceiling = {r["fold"]: r["metrics"] for r in records if r["model"] == "real-held-out"}
    truth = _truth(world, "alloygan")
    scorer = scorer_for("alloygan")
    for k, fold in enumerate(truth.folds):
        arrays = {f"pred_{i:05d}": fold.targets[item] for i, item in enumerate(fold.item_ids)}
        metrics, _ = scorer.score_fold(arrays, fold.item_ids, fold)
        for metric in scorer.compared:
            assert metrics[metric] == pytest.approx(ceiling[k][metric], abs=1e-12, nan_ok=True), metric
        assert math.isfinite(metrics["lambda2_n"]) and metrics["fid_domain"] < 1e-6  # the test images themselves


def test_factories_and_foreign_classes_are_refused(world):
    kwargs = {"official_dir": world["official"], "submissions_dir": world["tmp"] / "refused",
              "work_dir": world["tmp"] / "w"}
    sys.path.insert(0, str(EXTERNAL))
    try:
        for task in ("microstructure", "alloygan"):
            with pytest.raises(SubmissionError, match=f"is not a LightningModule class: task '{task}' accepts only "
                                                      f"LightningModule classes subclassing"):
                submit(task, "ext_generative_models.nets:build", "a-factory", **kwargs)
        with pytest.raises(SubmissionError, match="is a LightningModule but not a AlloyEvaluation subclass"):
            submit("alloygan", "ext_generative_models.nets:TinyAutoencoder", "wrong-task", **kwargs)
    finally:
        sys.path.remove(str(EXTERNAL))
    assert not (world["tmp"] / "refused").exists()
