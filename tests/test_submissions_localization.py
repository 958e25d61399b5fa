"""Localization submissions: an external model's predicted strain fields, scored from the .npz alone with the
harness's own metric code (recomputed == claimed), shown beside the built-in MKS, and tampered copies rejected."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from matcv.datamodules.core.config import CONFIG_DIR
from matcv.benchmarks.submission.submit import SubmissionError, publish_official, submit
from matcv.leaderboard.submission import validate_submission
from tests.submission_tampering import edit_metadata, rewrite_npz, tamper_and_rebuild

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXTERNAL = Path(__file__).parent / "fixtures_external_model"
VALID = "tiny-conv"
METRICS = ["mase", "r2", "mae_phase0", "mae_phase1"]
SIZE = 11


def tiny_localization_config(tmp_path: Path) -> Path:
    """The task YAML at 11³, 12 volumes of 6 symmetry classes, 2 folds, 1 epoch; MKS as the built-in model."""
    config = yaml.safe_load((CONFIG_DIR / "localization.yaml").read_text())
    quick = config["profiles"]["quick"]
    quick.update(folds=2, val_fraction=0.34, trainer={"max_epochs": 1},  # 6 classes: 3 train = 2 + 1 val
                 generator={"size": SIZE, "contrast": 10, "samples_per_triple": 2,
                            "sigma_triples": [[1, 1, 1], [3, 3, 3], [5, 5, 5], [7, 7, 7], [1, 3, 5], [3, 5, 7]]})
    quick.pop("model_overrides", None)
    config["profiles"] = {"quick": quick}
    config["models"] = {"mks": config["models"]["mks"]}
    path = tmp_path / "localization.yaml"
    path.write_text(yaml.safe_dump(config))
    return path





def _tamper_shape(f):
    rewrite_npz(f / "predictions" / "fold-0.npz", lambda a: a.update(pred_00001=a["pred_00001"][:, :, :-1].copy()))


def _tamper_nan(f):
    def nan_first(arrays):
        first = arrays["pred_00000"].copy()
        first[0, 0, 0] = np.nan
        arrays["pred_00000"] = first
    rewrite_npz(f / "predictions" / "fold-1.npz", nan_first)


def _tamper_inf(f):
    def inf_last(arrays):
        last = arrays["pred_00002"].copy()
        last[-1, -1, -1] = -np.inf
        arrays["pred_00002"] = last
    rewrite_npz(f / "predictions" / "fold-0.npz", inf_last)


def _tamper_int(f):
    rewrite_npz(f / "predictions" / "fold-0.npz",
                 lambda a: a.update(pred_00000=np.rint(a["pred_00000"] * 100).astype(np.int32)))


def _tamper_half(f):
    rewrite_npz(f / "predictions" / "fold-1.npz", lambda a: a.update(pred_00000=a["pred_00000"].astype(np.float16)))


def _tamper_mase(f):
    edit_metadata(f, lambda m: m["folds"][1]["metrics"].update(mase=m["folds"][1]["metrics"]["mase"] - 0.01))


def _tamper_r2(f):
    edit_metadata(f, lambda m: m["folds"][0]["metrics"].update(r2=m["folds"][0]["metrics"]["r2"] + 1e-4))


def _tamper_values(f):  # valid-looking fields, better than the model's: the claimed metrics no longer match
    rewrite_npz(f / "predictions" / "fold-1.npz", lambda a: a.update(pred_00001=(a["pred_00001"] + 1) / 2))


def _tamper_items(f):
    rewrite_npz(f / "predictions" / "fold-0.npz", lambda a: a.update(item_ids=a["item_ids"][:-1].copy()))


TAMPERED = {
    "bad-shape": (_tamper_shape, (f"fold 0: prediction for {{item}}: shape ({SIZE}, {SIZE}, {SIZE - 1}), "
                                  f"the ground truth's is ({SIZE}, {SIZE}, {SIZE})")),
    "bad-nan": (_tamper_nan, "fold 1: prediction for {item}: 1 non-finite value(s) (NaN/inf)"),
    "bad-inf": (_tamper_inf, "fold 0: prediction for {item}: 1 non-finite value(s) (NaN/inf)"),
    "bad-int": (_tamper_int, "fold 0: prediction for {item}: dtype int32 (expected a float32 or float64 strain field)"),
    "bad-half": (_tamper_half, "fold 1: prediction for {item}: dtype float16 (expected a float32 or float64"),
    "bad-mase": (_tamper_mase, "claimed metrics do not match the predictions: fold 1 mase claimed"),
    "bad-r2": (_tamper_r2, "claimed metrics do not match the predictions: fold 0 r2 claimed"),
    "bad-values": (_tamper_values, "claimed metrics do not match the predictions: fold 1 mase claimed"),
    "bad-items": (_tamper_items, "fold 0: predictions must cover exactly the"),
}
TAMPERED_ITEM = {"bad-shape": (0, 1), "bad-nan": (1, 0), "bad-inf": (0, 2), "bad-int": (0, 0), "bad-half": (1, 0)}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny official localization benchmark, MKS run on it by the harness, the external factory's submission
    and tampered copies of it; then the leaderboard rebuild."""
    from matcv.benchmarks.cli import run_and_report

    tmp = tmp_path_factory.mktemp("localization-submissions")
    config = tiny_localization_config(tmp)
    official, subs, runs, out = tmp / "official", tmp / "submissions", tmp / "runs", tmp / "results"
    entry = publish_official(config, "quick", official)
    run_and_report(config, "quick", models=["mks"], output_dir=runs, accelerator="cpu",
                  fold_manifest=official / entry["path"], leaderboard_dir=tmp / "bench-tables", progress=False)
    assert "ext_localization_models" not in sys.modules
    sys.path.insert(0, str(EXTERNAL))
    try:
        submit("localization", "ext_localization_models.nets:build", VALID, authors=["A. Person"],
               description="A 3-layer periodic 3-D FCN", hyperparameters={"width": 4, "lr": 0.003},
               tuning="defaults", official_dir=official, submissions_dir=subs, work_dir=tmp / "work",
               accelerator="cpu", progress=False)
    finally:
        sys.path.remove(str(EXTERNAL))
    manifest = json.loads((official / entry["path"]).read_text())
    written, printed = tamper_and_rebuild(subs, "localization", VALID, TAMPERED, runs, out, official)
    return {"tmp": tmp, "official": official, "entry": entry, "manifest": manifest, "subs": subs, "runs": runs,
            "out": out, "written": written, "stdout": printed}


def test_submission_holds_one_float32_strain_field_per_test_volume(world):
    folder = world["subs"] / "localization" / VALID
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["model"] == {"reference": "ext_localization_models.nets:build", "kind": "factory"}
    assert meta["fold_manifest_sha256"] == world["entry"]["sha256"]
    for k, fold in enumerate(world["manifest"]["folds"]):
        with np.load(folder / f"predictions/fold-{k}.npz", allow_pickle=False) as data:
            assert data["item_ids"].tolist() == fold["test"]
            assert sorted(data.files) == ["item_ids"] + [f"pred_{i:05d}" for i in range(len(fold["test"]))]
            fields = [data[f"pred_{i:05d}"] for i in range(len(fold["test"]))]
        assert all(f.shape == (SIZE,) * 3 and f.dtype == np.float32 and np.isfinite(f).all() for f in fields)
        # physical units (strain / applied strain, mean ≈ 1), not standardised ones
        assert 0.5 < float(np.mean([f.mean() for f in fields])) < 1.5


def test_valid_submission_is_accepted_with_recomputed_metrics_equal_to_claimed(world):
    folder = world["subs"] / "localization" / VALID
    verdict = validate_submission(folder, world["official"])
    assert verdict.ok, verdict.reason
    meta = json.loads((folder / "metadata.json").read_text())
    for fold, claimed in zip(verdict.folds, meta["folds"]):
        assert list(fold["metrics"]) == METRICS
        # the very float32 fields the harness scored, the same float64 code in the same order: bit for bit
        assert fold["metrics"] == claimed["metrics"]
        assert [row["item_id"] for row in fold["per_item"]] == world["manifest"]["folds"][fold["fold"]]["test"]
        assert all(set(row) == {"item_id", *METRICS} for row in fold["per_item"])
        assert fold["metrics"]["mase"] == pytest.approx(np.mean([row["mase"] for row in fold["per_item"]]))
    # the pooled R² is not the mean of the per-volume R²
    assert verdict.folds[0]["metrics"]["r2"] != np.mean([row["r2"] for row in verdict.folds[0]["per_item"]])


def test_float64_fields_of_the_same_values_are_accepted(world, tmp_path):
    folder = tmp_path / "subs" / "localization" / VALID
    shutil.copytree(world["subs"] / "localization" / VALID, folder)
    for path in (folder / "predictions").glob("fold-*.npz"):
        rewrite_npz(path, lambda a: a.update({k: v.astype(np.float64) for k, v in a.items() if k != "item_ids"}))
    verdict = validate_submission(folder, world["official"])
    assert verdict.ok, verdict.reason


@pytest.mark.parametrize("name", sorted(TAMPERED))
def test_tampered_submission_is_rejected_with_its_reason(world, name):
    expected = TAMPERED[name][1]
    if name in TAMPERED_ITEM:
        fold, index = TAMPERED_ITEM[name]
        expected = expected.format(item=repr(world["manifest"]["folds"][fold]["test"][index]))
    line = next((x for x in world["stdout"].splitlines() if x.startswith("REJECTED") and f"/{name}:" in x), None)
    assert line is not None, world["stdout"]
    assert expected in line, line


def test_rebuilt_leaderboard_shows_the_submission_beside_mks(world):
    tables = [p for p in world["written"] if p.name.endswith("__submissions.md")]
    assert len(tables) == 1 and tables[0].name.startswith("localization__")
    text = tables[0].read_text()
    # MASE is an error: the (better) MKS baseline ranks first, the barely trained net second.
    assert "| 1 | mks | built-in | 2 |" in text and "ranked by mase (lower is better)" in text
    assert f"| 2 | {VALID} (submission) | submission | 2 |" in text
    assert "| mase (mean ± std) | r2 (mean ± std) | mae_phase0 (mean ± std) | mae_phase1 (mean ± std) |" in text
    assert not any(name in text for name in TAMPERED)
    assert (world["out"] / tables[0].name.replace(".md", "__ranks.png")).is_file()  # per-volume MASE ranks


def test_factory_with_the_wrong_output_shape_fails_naming_the_factory(world, tmp_path):
    sys.path.insert(0, str(EXTERNAL))
    try:
        with pytest.raises(SubmissionError, match=r"ext_localization_models\.nets:build_wrong_shape must map "
                                                  r"centred phases \(\d+, 1, 11, 11, 11\) to the standardised strain"):
            submit("localization", "ext_localization_models.nets:build_wrong_shape", "wrong-shape",
                   official_dir=world["official"], submissions_dir=tmp_path / "subs", work_dir=tmp_path / "work",
                   accelerator="cpu", progress=False)
    finally:
        sys.path.remove(str(EXTERNAL))
    assert not (tmp_path / "subs" / "localization" / "wrong-shape").exists()


@pytest.mark.parametrize("reference, hyperparameters", [
    ("ext_localization_models.nets:TinyLightningLocalizer", {"lr": 0.003, "width": 2}),
    ("ext_localization_models.nets:RidgeMKS", {"regularization": 1e-4}),
])
def test_lightning_module_class_submission(world, tmp_path, reference, hyperparameters):
    """The other kind of model reference: a LocalizationEvaluation subclass (trained, or the MKS baseline
    subclassed: fitted in closed form, its own forward)."""
    sys.path.insert(0, str(EXTERNAL))
    try:
        folder = submit("localization", reference, "lm-net", hyperparameters=hyperparameters,
                        official_dir=world["official"], submissions_dir=tmp_path / "subs",
                        work_dir=tmp_path / "work", accelerator="cpu", progress=False)
    finally:
        sys.path.remove(str(EXTERNAL))
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["model"]["kind"] == "lightning_module"
    verdict = validate_submission(folder, world["official"])
    assert verdict.ok, verdict.reason
    for fold, claimed in zip(verdict.folds, meta["folds"]):
        assert fold["metrics"] == claimed["metrics"]
