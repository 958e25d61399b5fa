"""Several training seeds per model x fold (``--seeds N``): replicate 0 is the single-seed run, the others have
keys, seeds and folders of their own on the same folds; per-item groups and parameter counts in every record."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from matcv.benchmarks.cli import build_parser
from matcv.benchmarks.cli import main as matcv_main
from matcv.benchmarks.harness.annotations import parameter_count, with_groups
from matcv.benchmarks.harness.runner import run_benchmark
from matcv.datamodules.core.config import (
    ConfigError,
    RunSpec,
    TaskConfig,
    import_object,
    run_seed,
    training_seed,
)
from matcv.datamodules.core.records import RunRecords, run_key
from tests.conftest import tiny_task_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")
EXTERNAL = Path(__file__).parent / "fixtures_external_model"


def _config(tmp: Path, drop: tuple[str, ...] = ("predict-everything",), **profile) -> Path:
    """The tiny segmentation task (1 epoch, 3 folds) without the models in ``drop``, profile keys added."""
    path = tiny_task_config(tmp, folds=3, max_epochs=1)
    raw = yaml.safe_load(path.read_text())
    for name in drop:
        del raw["models"][name]
    raw["profiles"]["quick"].update(profile)
    path.write_text(yaml.safe_dump(raw))
    return path


def _bench(config: Path, output: Path, **options):
    return run_benchmark(config, output_dir=output, accelerator="cpu", progress=False, **options)


def _by_run(records: list[dict]) -> dict[tuple, dict]:
    return {(r["model"], r["fold"], r.get("replicate", 0)): r for r in records}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """A tiny UNet and the predict-nothing baseline on folds 0 and 1: once without seeds, then `matcv bench
    --seeds 2` on the same folder (only the new replicate runs), and a fresh `--seeds 2` bench of the UNet on
    fold 0 elsewhere."""
    tmp = tmp_path_factory.mktemp("seeds")
    config = _config(tmp)
    single = _bench(config, tmp / "runs", folds=[0, 1])
    first = _by_run(single.records.load())
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = matcv_main(["bench", "--task", str(config), "--output", str(tmp / "runs"), "--leaderboard-dir",
                           str(tmp / "board"), "--folds", "0,1", "--seeds", "2", "--accelerator", "cpu",
                           "--no-progress", "--no-wandb"])
    assert code == 0, printed.getvalue()
    fresh = _bench(config, tmp / "fresh", models=["tiny-unet"], folds=[0], seeds=2)
    return {"config": config, "bench": single, "first": first, "stdout": printed.getvalue(),
            "records": single.records.load(), "fresh": _by_run(fresh.records.load())}


def test_seeds_2_records_every_model_and_fold_twice_with_own_keys(seeded):
    records = seeded["records"]
    assert all(r["status"] == "ok" for r in records), [r.get("error") for r in records]
    assert sorted(_by_run(records)) == sorted((m, f, r) for m in ("tiny-unet", "predict-nothing")
                                              for f in (0, 1) for r in (0, 1))
    assert len({r["key"] for r in records}) == len(records) == 8
    for record in records:
        replicate = record["replicate"]
        assert record["training_seed"] == run_seed(0, record["fold"]) + 1_000_000 * replicate
        assert record["config"].get("replicate", 0) == replicate
        assert ("|seed1|" in record["key"]) == (replicate == 1)
        folder = "fold-{}".format(record["fold"]) + (f"-seed-{replicate}" if replicate else "")
        assert (seeded["bench"].folder / record["model"] / folder).is_dir()


def test_the_second_bench_runs_only_the_new_replicate_and_names_the_seed(seeded):
    out = seeded["stdout"]
    assert "8 runs (4 already recorded, 4 to do" in out
    assert "tiny-unet fold 1 seed 2/2: ok" in out and "seed 1/2: ok" not in out
    # Replicate 0 is the record of the bench without seeds, not a second one of its key.
    for run, record in seeded["first"].items():
        assert run[2] == 0 and _by_run(seeded["records"])[run] == record


def test_replicate_0_is_exactly_the_run_without_seeds(seeded):
    """Same key, same metrics and per-item scores, from a fresh `--seeds 2` bench; replicate 1 repeats too."""
    for replicate in (0, 1):
        again = seeded["fresh"][("tiny-unet", 0, replicate)]
        before = _by_run(seeded["records"])[("tiny-unet", 0, replicate)]
        assert again["key"] == before["key"] and again["config_hash"] == before["config_hash"]
        assert again["metrics"] == pytest.approx(before["metrics"])
        assert again["per_image"] == before["per_image"]
    plain = TaskConfig.load(seeded["config"]).runs("quick", ["tiny-unet"], [0])[0]
    assert seeded["fresh"][("tiny-unet", 0, 0)]["config_hash"] == plain.config_hash


def test_replicates_test_the_same_items_and_differ_only_where_training_is_random(seeded):
    runs = _by_run(seeded["records"])
    folder = seeded["bench"].folder
    for fold in (0, 1):
        constant = [runs[("predict-nothing", fold, r)] for r in (0, 1)]
        assert constant[0]["metrics"] == constant[1]["metrics"] and constant[0]["per_image"] == constant[1]["per_image"]
        unet = [runs[("tiny-unet", fold, r)] for r in (0, 1)]
        assert [i["item_id"] for i in unet[0]["per_image"]] == [i["item_id"] for i in unet[1]["per_image"]]
        weights = [torch.load(folder / "tiny-unet" / name / "checkpoints" / "best.ckpt", map_location="cpu",
                              weights_only=True)["state_dict"] for name in (f"fold-{fold}", f"fold-{fold}-seed-1")]
        assert weights[0].keys() == weights[1].keys()
        assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0] if weights[0][k].is_floating_point())


def test_per_item_groups_and_parameter_counts_are_recorded(seeded):
    manifest = json.loads(seeded["bench"].fold_manifest_path.read_text())
    for record in seeded["records"]:
        assert record["per_image"] and all(item["group"] == manifest["groups"][item["item_id"]]
                                           for item in record["per_image"])
        assert record["n_items"]["test"] == len(record["per_image"]) and record["durations"]["test_s"] > 0
        model = import_object(record["config"]["model"]["class"])(**record["config"]["model"]["args"])
        expected = sum(p.numel() for p in model.parameters())
        assert record["n_parameters"] == expected
        assert (expected > 10_000) == (record["model"] == "tiny-unet") and "n_parameters_note" not in record


def test_a_killed_replicate_is_redone_alone(tmp_path):
    config = _config(tmp_path, drop=("predict-everything", "tiny-unet"))
    bench = _bench(config, tmp_path / "runs", folds=[0], seeds=2)
    records = bench.records.load()
    assert [r["replicate"] for r in records] == [0, 1]
    # Killed before its record was written: the record is missing and its folder is half full.
    lines = bench.records.path.read_text().splitlines(keepends=True)
    bench.records.path.write_text("".join(line for line in lines if json.loads(line)["replicate"] == 0))
    leftover = bench.folder / "predict-nothing" / "fold-0-seed-1" / "half-written.txt"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_text("x")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        _bench(config, tmp_path / "runs", folds=[0], seeds=2)
    assert "2 runs (1 already recorded, 1 to do" in printed.getvalue()
    again = bench.records.load()
    assert [(r["key"], r["replicate"]) for r in again] == [(r["key"], r["replicate"]) for r in records]
    assert again[1]["metrics"] == records[1]["metrics"] and not leftover.exists()


def test_profile_seeds_key_and_its_override(tmp_path):
    config = TaskConfig.load(_config(tmp_path, seeds=3))
    runs = config.runs("quick", folds=[0, 2])
    assert config.seeds("quick") == 3 and len(runs) == 3 * 2 * 2
    assert [s.replicate for s in runs] == [0] * 4 + [1] * 4 + [2] * 4  # replicate 0 of every run first
    assert runs[5].label == "predict-nothing fold 2 seed 2/3"
    assert len(config.runs("quick", folds=[0], seeds=1)) == 2 and config.runs("quick", seeds=1)[0].label.endswith("fold 0")
    assert len({(s.config_hash, s.fold) for s in runs}) == len(runs)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="seeds"):
            TaskConfig.load(_config(tmp_path, seeds=bad))
        with pytest.raises(ConfigError, match="--seeds"):
            config.runs("quick", seeds=bad)


def test_training_seed_rule():
    assert all(training_seed(p, f) == run_seed(p, f) for p in (0, 7) for f in range(5))
    seeds = {training_seed(3, fold, r) for fold in range(1000) for r in range(5)}
    assert len(seeds) == 5000  # no two runs of a profile share one
    assert training_seed(0, 2, 3) == 3_000_002
    with pytest.raises(ConfigError, match="outside"):
        training_seed(0, 0, 5000)
    with pytest.raises(ConfigError, match="replicate"):
        training_seed(0, 0, -1)


def test_run_spec_and_key_carry_the_replicate():
    config = TaskConfig.load("segmentation")
    plain = config.resolve("quick", "unet")
    with pytest.raises(ValueError, match="replicate"):
        RunSpec("segmentation", "quick", "unet", 0, plain, replicate=1)
    with pytest.raises(ValueError, match="replicate"):
        RunSpec("segmentation", "quick", "unet", 0, config.resolve("quick", "unet", 1))
    assert "replicate" not in plain and config.resolve("quick", "unet", 2)["replicate"] == 2
    assert run_key("unet", 1, "h", "a" * 64, "b" * 64) == f"unet|fold1|h|{'a' * 16}|{'b' * 16}"
    assert run_key("unet", 1, "h", "a" * 64, "b" * 64, replicate=2) == f"unet|fold1|seed2|h|{'a' * 16}|{'b' * 16}"


def test_cli_seeds_option():
    parse = build_parser().parse_args
    assert parse(["bench"]).seeds is None and parse(["bench", "--seeds", "4"]).seeds == 4
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit):
        parse(["bench", "--seeds", "0"])
    assert parse(["submit", "--model", "m:f", "--name", "n", "--seeds", "2"]).seeds == 2


def test_parameter_count_of_a_network_and_of_a_fitted_forest():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 2))
    assert parameter_count(net) == (3 * 4 * 9 + 4 + 4 * 2 + 2, None)

    class Forest(torch.nn.Module):
        def __init__(self):
            super().__init__()
            forest = RandomForestClassifier(n_estimators=3, random_state=0)
            self.classifier = make_pipeline(StandardScaler(), forest)
            self.classifier.fit(np.arange(20.0).reshape(10, 2), [0, 1] * 5)

    count, note = parameter_count(Forest())
    nodes = sum(t.tree_.node_count for t in Forest().classifier[-1].estimators_)
    assert count == 0 and note == f"no network parameters; fitted outside torch: StandardScaler + " \
                                  f"RandomForestClassifier: {nodes} tree nodes"
    assert parameter_count(torch.nn.Identity()) == (0, None)


def test_with_groups_takes_a_patch_s_item_group_and_refuses_an_unknown_item():
    groups = {"images/a.png": "panel-1", "m7": "steel-2"}
    rows = with_groups([{"item_id": "images/a.png", "dice": 1.0}, {"item_id": "m7#3"}], groups, "f.json")
    assert [r["group"] for r in rows] == ["panel-1", "steel-2"] and rows[0]["dice"] == 1.0
    with pytest.raises(KeyError, match="'images/b.png' has no group in f.json"):
        with_groups([{"item_id": "images/b.png"}], groups, "f.json")


def test_submit_with_seeds_keeps_a_valid_submission_and_records_every_seed(tmp_path):
    from matcv.benchmarks.submission.submit import publish_official, submit
    from matcv.leaderboard.submission import validate_submission

    config = _config(tmp_path)
    official = tmp_path / "official"
    publish_official(config, "quick", official)
    sys.path.insert(0, str(EXTERNAL))
    try:
        folder = submit("segmentation", "ext_seg_models.nets:TinyLightningSegmenter", "two-seeds",
                        hyperparameters={"max_epochs": 1}, official_dir=official, submissions_dir=tmp_path / "subs",
                        work_dir=tmp_path / "work", accelerator="cpu", progress=False, seeds=2)
    finally:
        sys.path.remove(str(EXTERNAL))
        for name in [m for m in sys.modules if m.split(".")[0] == "ext_seg_models"]:
            del sys.modules[name]  # test_submissions checks that `matcv submit` imports it from --model-path
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["seeds"] == 2 and len(metadata["folds"]) == 3
    verdict = validate_submission(folder, official)
    assert verdict.ok, verdict.reason
    records = RunRecords(next((tmp_path / "work" / "two-seeds").glob("*/*/*/records.jsonl"))).load()
    assert sorted((r["fold"], r["replicate"]) for r in records) == [(f, r) for f in range(3) for r in (0, 1)]
    by_fold = {r["fold"]: r for r in records if r["replicate"] == 0}
    assert all(by_fold[f["fold"]]["metrics"] == f["metrics"] for f in metadata["folds"])  # seed 1's predictions
