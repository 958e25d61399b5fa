"""Submissions: ``matcv submit`` of a model defined outside matcv, validation without running its code,
tampered submissions rejected with their reason, the rebuilt leaderboard (Markdown/CSV/HTML)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from matcv.benchmarks.cli import main as matcv
from matcv.benchmarks.submission.submit import (
    OFFICIAL_DIR,
    SubmissionError,
    publish_official,
    read_official_index,
    submit,
)
from matcv.datamodules.core.atomic_io import sha256_file
from matcv.leaderboard.submission import validate_all, validate_submission
from tests.conftest import tiny_task_config
from tests.submission_tampering import edit_metadata, rewrite_npz, tamper_and_rebuild

EXTERNAL = Path(__file__).parent / "fixtures_external_model"
VALID = "tiny-net"





# Tampered copies of the valid submission: name -> (how, the reason it must be rejected with)
def _tamper_metrics(f):
    edit_metadata(f, lambda m: m["folds"][1]["metrics"].update(dice=m["folds"][1]["metrics"]["dice"] + 0.05))


def _tamper_missing_fold(f):
    (f / "predictions" / "fold-2.npz").unlink()


def _tamper_sha(f):
    edit_metadata(f, lambda m: m.update(fold_manifest_sha256="0" * 64))


def _tamper_nan(f):
    def nan_first(arrays):
        first = arrays["pred_00000"].astype(np.float32)
        first[0, 0] = np.nan
        arrays["pred_00000"] = first
    rewrite_npz(f / "predictions" / "fold-0.npz", nan_first)


def _tamper_pickle(f):
    (f / "model.pkl").write_bytes(b"\x80\x04K\x01.")  # a (harmless) pickle: must never be loaded


def _tamper_path(f):
    edit_metadata(f, lambda m: m["folds"][0].update(predictions="../../x"))


def _tamper_name(f):
    edit_metadata(f, lambda m: m.update(name="../../x"))


def _tamper_values(f):
    rewrite_npz(f / "predictions" / "fold-1.npz", lambda a: a.update(pred_00001=a["pred_00001"] * 3 + 2))


def _tamper_items(f):
    rewrite_npz(f / "predictions" / "fold-0.npz", lambda a: a.update(item_ids=a["item_ids"][:-1].copy()))


def _tamper_object_array(f):
    path = f / "predictions" / "fold-0.npz"
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["pred_00000"] = np.array([arrays["pred_00000"], "x"], dtype=object)  # needs pickle to load
    np.savez_compressed(path, **arrays)


def _tamper_symlink(f):
    os.symlink("/etc/hostname", f / "notes.md")


TAMPERED = {
    "bad-metrics": (_tamper_metrics, "claimed metrics do not match the predictions: fold 1 dice claimed"),
    "bad-missing-fold": (_tamper_missing_fold, "fold 2: predictions file predictions/fold-2.npz is missing"),
    "bad-sha": (_tamper_sha, "fold manifest sha256 0000000000000000... differs from the official"),
    "bad-nan": (_tamper_nan, "non-finite value(s) (NaN/inf)"),
    "bad-pickle": (_tamper_pickle, "file model.pkl has a forbidden type"),
    "bad-path": (_tamper_path, "unsafe path '../../x' in metadata.json"),
    "bad-name": (_tamper_name, "unsafe or mismatched name '../../x'"),
    "bad-values": (_tamper_values, "values other than 0 and 1"),
    "bad-items": (_tamper_items, "predictions must cover exactly the"),
    "bad-object-array": (_tamper_object_array, "cannot be read without pickle"),
    "bad-symlink": (_tamper_symlink, "notes.md is a symbolic link"),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny official benchmark, a built-in baseline run on it, the external model's submission (via the CLI)
    and tampered copies of it; then `matcv leaderboard`'s rebuild."""
    from matcv.benchmarks.cli import run_and_report

    tmp = tmp_path_factory.mktemp("submissions")
    config = tiny_task_config(tmp, folds=3, max_epochs=2)
    official, subs, runs, out = tmp / "official", tmp / "submissions", tmp / "runs", tmp / "results"
    entry = publish_official(config, "quick", official)
    run_and_report(config, "quick", models=["predict-nothing"], output_dir=runs, accelerator="cpu",
                  fold_manifest=official / entry["path"], leaderboard_dir=tmp / "bench-tables", progress=False)
    assert "ext_seg_models" not in sys.modules
    code = matcv(["submit", "--task", "segmentation", "--model", "ext_seg_models.nets:build", "--name", VALID,
                  "--model-path", str(EXTERNAL), "--official-dir", str(official), "--submissions-dir", str(subs),
                  "--work-dir", str(tmp / "work"), "--accelerator", "cpu", "--no-progress",
                  "--authors", "A. Person, B. Person", "--description", "A 3-layer dilated FCN <b>not</b> bold",
                  "--hyperparameters", '{"width": 8, "lr": 0.003}', "--tuning", "defaults, not tuned"])
    assert code == 0
    written, printed = tamper_and_rebuild(subs, "segmentation", VALID, TAMPERED, runs, out, official)
    return {"tmp": tmp, "config": config, "official": official, "entry": entry, "subs": subs, "runs": runs,
            "out": out, "written": written, "stdout": printed}


def test_submission_folder_has_metadata_and_npz_predictions_of_every_fold(world):
    folder = world["subs"] / "segmentation" / VALID
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == \
        ["metadata.json", "predictions/fold-0.npz", "predictions/fold-1.npz", "predictions/fold-2.npz"]
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["model"] == {"reference": "ext_seg_models.nets:build", "kind": "factory"}
    assert meta["authors"] == ["A. Person", "B. Person"] and meta["tuning"] == "defaults, not tuned"
    assert meta["hyperparameters"] == {"width": 8, "lr": 0.003}
    assert meta["fold_manifest_sha256"] == world["entry"]["sha256"]
    assert {"platform", "cpu"} <= set(meta["hardware"]) and "git_commit" in meta["matcv"]
    manifest = json.loads((world["official"] / world["entry"]["path"]).read_text())
    for k, fold in enumerate(manifest["folds"]):
        with np.load(folder / f"predictions/fold-{k}.npz", allow_pickle=False) as data:
            assert data["item_ids"].tolist() == fold["test"]
            masks = [data[f"pred_{i:05d}"] for i in range(len(fold["test"]))]
        assert all(m.shape == (32, 32) and m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1} for m in masks)


def test_valid_submission_is_accepted_with_recomputed_metrics(world):
    folder = world["subs"] / "segmentation" / VALID
    verdict = validate_submission(folder, world["official"])
    assert verdict.ok, verdict.reason
    meta = json.loads((folder / "metadata.json").read_text())
    for fold, claimed in zip(verdict.folds, meta["folds"]):  # the harness's smp scores = the numpy rescoring
        assert fold["metrics"] == pytest.approx(claimed["metrics"], abs=1e-6)


@pytest.mark.parametrize("name", sorted(TAMPERED))
def test_tampered_submission_is_rejected_with_its_reason(world, name):
    expected = TAMPERED[name][1]
    lines = world["stdout"].splitlines()
    line = next((x for x in lines if x.startswith("REJECTED") and f"/{name}:" in x), None)
    assert line is not None, world["stdout"]
    assert expected in line, line


def test_rebuilt_leaderboard_shows_the_valid_submission_beside_builtin_models(world):
    tables = [p for p in world["written"] if p.name.endswith("__submissions.md")]
    assert len(tables) == 1
    text = tables[0].read_text()
    assert f"| {VALID} (submission) | submission | 3 |" in text
    assert "| predict-nothing | built-in | 3 |" in text
    assert not any(name in text for name in TAMPERED)
    assert (world["out"] / tables[0].name.replace(".md", ".png")).is_file()
    assert (world["out"] / tables[0].name.replace(".md", "__ranks.png")).is_file()
    page = (world["out"] / "index.html").read_text()
    assert f"{VALID} (submission)" in page and "predict-nothing" in page
    assert "data:image/png;base64," in page
    assert "&lt;b&gt;not&lt;/b&gt;" in page and "<b>not</b>" not in page  # submitted text is escaped
    for name, (_, reason) in TAMPERED.items():
        assert name in page.split("Rejected submissions")[1]


def test_unsupported_task_and_unknown_official_benchmark_are_rejected(world, tmp_path):
    subs = tmp_path / "subs"
    shutil.copytree(world["subs"] / "segmentation" / VALID, subs / "welding" / "w-net")
    edit_metadata(subs / "welding" / "w-net", lambda m: m.update(name="w-net", task="welding"))
    shutil.copytree(world["subs"] / "segmentation" / VALID, subs / "segmentation" / "other-profile")
    edit_metadata(subs / "segmentation" / "other-profile", lambda m: m.update(name="other-profile", profile="paper"))
    (subs / "segmentation" / "Not Safe").mkdir()
    os.symlink(world["subs"] / "segmentation" / VALID, subs / "segmentation" / "linked")
    (subs / "stray.txt").write_text("x")
    verdicts = {v.path.name: v for v in validate_all(subs, world["official"])}
    assert "not a submission folder" in verdicts["linked"].reason
    assert "not a task folder" in verdicts["stray.txt"].reason
    assert "submissions for task 'welding' are not supported" in verdicts["w-net"].reason
    assert "no official fold manifest for segmentation/" in verdicts["other-profile"].reason
    assert "unsafe submission name 'Not Safe'" in verdicts["Not Safe"].reason


def test_submit_refuses_unsafe_names_unsupported_tasks_and_existing_submissions(world):
    kwargs = dict(official_dir=world["official"], submissions_dir=world["subs"], work_dir=world["tmp"] / "w")
    sys.path.insert(0, str(EXTERNAL))
    try:
        with pytest.raises(SubmissionError, match="not allowed"):
            submit("segmentation", "ext_seg_models.nets:build", "../../x", **kwargs)
        with pytest.raises(SubmissionError, match="exists already"):
            submit("segmentation", "ext_seg_models.nets:build", VALID, **kwargs)
        with pytest.raises(SubmissionError, match="no official fold manifest for task 'rating'"):
            submit("rating", "ext_seg_models.nets:build", "x-net", **kwargs)
    finally:
        sys.path.remove(str(EXTERNAL))


def test_lightning_module_class_submission(world, tmp_path):
    """The other kind of model reference: a LightningModule class (a SegmentationEvaluation subclass)."""
    sys.path.insert(0, str(EXTERNAL))
    try:
        folder = submit("segmentation", "ext_seg_models.nets:TinyLightningSegmenter", "lm-net",
                        hyperparameters={"lr": 0.003, "max_epochs": 1}, official_dir=world["official"],
                        submissions_dir=tmp_path / "subs", work_dir=tmp_path / "work", accelerator="cpu",
                        progress=False)
    finally:
        sys.path.remove(str(EXTERNAL))
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["model"]["kind"] == "lightning_module"
    verdict = validate_submission(folder, world["official"])
    assert verdict.ok, verdict.reason


def test_committed_official_manifests_match_their_index():
    index = read_official_index(OFFICIAL_DIR)
    assert index["benchmarks"], "no official fold manifests committed under leaderboard/official/"
    for key, entry in index["benchmarks"].items():
        assert key == f"{entry['task']}/{entry['dataset']}/{entry['profile']}"
        path = OFFICIAL_DIR / entry["path"]
        assert sha256_file(path) == entry["sha256"], key
        manifest = json.loads(path.read_text())
        assert len(manifest["folds"]) == entry["n_folds"]
        assert not (OFFICIAL_DIR / entry["path"]).is_symlink()


def _png_size_and_pixels(path: Path) -> tuple[tuple[int, int], np.ndarray]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size, np.asarray(image.convert("L"), dtype=float)


@pytest.mark.slow
def test_html_page_renders_in_headless_chromium(world, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (`make browser` installs Debian's chromium)")
    site = world["out"].parent / "site" / "index.html"  # the interactive page, beside the static one
    text = site.read_text(encoding="utf-8")
    assert f"{VALID} (submission)" in text and "&lt;b&gt;not&lt;/b&gt;" in text and "<b>not</b>" not in text
    assert all(name in text.split('id="submissions"')[1] for name in TAMPERED)  # rejected, with reasons
    for name, uri in (("page", (world["out"] / "index.html").resolve().as_uri()),
                      ("site", site.resolve().as_uri() + "#submissions")):
        shot = tmp_path / f"{name}.png"
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                            "--disable-component-update", "--disable-sync", "--no-first-run",
                            f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1280,2000", uri],
                           check=True, capture_output=True, timeout=120)
        size, pixels = _png_size_and_pixels(shot)
        assert size == (1280, 2000)
        assert pixels.std() > 10, f"the screenshot of the {name} is blank"
        assert (pixels < 128).mean() > 0.005  # text and plots drawn


def test_lightning_module_class_gets_its_own_hyperparameters_and_lr_but_not_the_harness_keys():
    from matcv.benchmarks.submission.models import model_class

    sys.path.insert(0, str(EXTERNAL))
    try:
        reference, args, kind = model_class("segmentation", "ext_seg_models.nets:TinyLightningSegmenter",
                                            {"lr": 0.01, "weight_decay": 0.1, "max_epochs": 1, "width": 4})
        factory_reference, factory_args, _ = model_class("segmentation", "ext_seg_models.nets:build",
                                                         {"lr": 0.01, "batch_size": 2, "width": 4})
    finally:
        sys.path.remove(str(EXTERNAL))
    # TinyLightningSegmenter takes lr but not weight_decay; max_epochs/batch_size go to the Trainer/DataModule.
    assert kind == "lightning_module" and args == {"width": 4, "lr": 0.01}
    assert factory_args == {"factory": "ext_seg_models.nets:build", "factory_args": {"width": 4}, "lr": 0.01}


def test_every_builtin_profile_has_an_official_manifest_or_a_stated_reason():
    """Each task YAML declares, per profile, an official fold manifest (``official``) or why it has none
    (``unpublished``); the declared manifests are committed, and every committed one is declared."""
    from matcv.datamodules.core.config import TaskConfig, available_tasks

    published = {(e["config"], e["profile"]) for e in read_official_index(OFFICIAL_DIR)["benchmarks"].values()}
    declared, undeclared = set(), []
    for name in available_tasks():
        config = TaskConfig.load(name)
        declared |= {(name, profile) for profile in config.official_profiles}
        undeclared += [f"{name}/{profile}" for profile in config.raw["profiles"]
                       if profile not in config.official_profiles and profile not in config.unpublished_profiles]
        assert all(config.unpublished_profiles[p] == "smoke-test profile" for p in config.smoke_profiles), name
    assert not undeclared, f"profiles neither under 'official' nor under 'unpublished' in their YAML: {undeclared}"
    missing = sorted(declared - published)
    assert not missing, (f"no official fold manifest for {missing}: publish them "
                         f"(matcv.benchmarks.submission.submit.publish_official)")
    assert not published - declared, f"official manifests of profiles no YAML declares: {sorted(published - declared)}"


def test_task_yaml_declarations_are_checked_when_loaded(tmp_path, monkeypatch):
    import yaml

    from matcv.datamodules.core import config as config_module
    from matcv.datamodules.core.config import ConfigError, TaskConfig

    config = yaml.safe_load(tiny_task_config(tmp_path).read_text())
    config["profiles"]["other"] = dict(config["profiles"]["quick"])
    # Profile names are checked in the built-in YAMLs (trimmed copies elsewhere keep stale ones): stand in for them.
    monkeypatch.setattr(config_module, "CONFIG_DIR", tmp_path)
    bad = [("official", ["quick", "other", "nope"], "key 'official' names unknown profile(s) ['nope']"),
           ("unpublished", {"quick": ""}, "key 'unpublished.quick' must state the reason"),
           ("submission", {"adapter": "x.y"}, "key 'submission' must be a mapping with 'scorer'"),
           ("submission", {"adapter": "x.y", "evaluation_base": "x.Y", "scorer": "x.z"},
            "either 'adapter' (a module) or 'evaluation_base' (a class)"),
           ("undeclared", None, "profile(s) ['other'] are neither under 'official' nor under 'unpublished'")]
    for number, (key, value, message) in enumerate(bad):
        path = tmp_path / f"bad-{number}.yaml"
        path.write_text(yaml.safe_dump({**config, key: value} if value is not None else {**config, "official": ["quick"]}))
        with pytest.raises(ConfigError, match=re.escape(message)) as raised:
            TaskConfig.load(f"bad-{number}")
        assert str(path) in str(raised.value)


def test_named_dataset_rule_is_read_in_one_place():
    from matcv.datamodules.core.config import TaskConfig, named_dataset_config, named_datasets

    assert named_datasets("segmentation") == {"superalloy": "segmentation-superalloy"}
    assert named_dataset_config("segmentation", "nasa-superalloy") == "segmentation-superalloy"
    assert named_dataset_config("segmentation", "/data/x-superalloy") is None
    assert TaskConfig.for_dataset("segmentation", "nasa-superalloy").name == "segmentation-superalloy"
    assert TaskConfig.for_dataset("segmentation", "corrosion-panels-abc").name == "segmentation"
    # every official benchmark's config resolves to the YAML it was published with
    for entry in read_official_index(OFFICIAL_DIR)["benchmarks"].values():
        config = TaskConfig.load(entry["config"])
        assert config.task == entry["task"] and entry["profile"] in config.official_profiles
