"""AlloyGAN and cGAN through the harness on leave-alloy-out folds, then `matcv generate` from a checkpoint."""

from __future__ import annotations

import math

import cv2
import pytest
import yaml

from matcv.benchmarks.cli import main
from matcv.datamodules.core.config import CONFIG_DIR
from matcv.benchmarks.cli import run_and_report
from matcv.datamodules.folds import read_fold_manifest

METRICS = ["fid_domain", "kid_domain", "fid_domain_alloywise", "fid_domain_alloywise_std", "si_spearman",
           "si_fraction_mae", "lambda2_measurable", "lambda2_n", "lambda2_r2", "srp_count_log2_ratio", "srp_size_log2_ratio"]


@pytest.fixture(scope="module")
def tiny_benchmark(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("alloygan")
    config = yaml.safe_load((CONFIG_DIR / "alloygan.yaml").read_text())
    config["profiles"] = {"quick": {
        "folds": 3, "val_fraction": 0.25, "seed": 0, "trainer": {"max_epochs": 1},
        "generator": {"images_per_condition": 2, "cooling_rates": [2.5, 143.0]},
        "datamodule": {"batch_size": 16},
        "class_overrides": {"matcv.lightning_modules.alloygan.ConditionalGANTask": {"ngf": 4, "ndf": 4, "extractor_epochs": 1},
                            "matcv.lightning_modules.alloygan.RealHeldOutImages": {"extractor_epochs": 1}}}}
    path = tmp_path / "alloygan.yaml"
    path.write_text(yaml.safe_dump(config))
    bench = run_and_report(path, output_dir=tmp_path / "runs", leaderboard_dir=tmp_path / "board", progress=False)
    return bench, tmp_path


def test_leave_alloy_out_benchmark_scores_both_gans_and_the_ceiling(tiny_benchmark):
    bench, tmp_path = tiny_benchmark
    manifest, _ = read_fold_manifest(bench.fold_manifest_path)
    assert manifest["group_column"] == "alloy"
    alloy_of = lambda item: item.split("/")[0]  # noqa: E731 - image paths start with the alloy's folder
    for fold in manifest["folds"]:
        train = {alloy_of(i) for i in fold["train"] + fold["val"]}
        assert not train & {alloy_of(i) for i in fold["test"]}, "an alloy in both train and test"
    records = bench.records.load()
    assert {r["model"] for r in records} == {"alloygan", "cgan", "real-held-out"}
    assert all(r["status"] == "ok" for r in records), [r.get("traceback") for r in records]
    for record in records:
        assert set(METRICS) <= set(record["metrics"])
        gan = record["model"] != "real-held-out"
        assert math.isfinite(record["metrics"]["fid_domain"]) == gan
        assert len(record["per_image"]) == len(manifest["folds"][record["fold"]]["test"])
    ceiling = [r for r in records if r["model"] == "real-held-out"]
    # The generator's images carry the trends by construction: the real held-out images show them.
    assert all(r["metrics"]["lambda2_n"] > 0.2 and r["metrics"]["lambda2_measurable"] > 0.8 for r in ceiling)
    table = (tmp_path / "board").glob("alloygan__*__quick.md")
    assert "fid_domain_alloywise" in next(table).read_text()


def test_generate_writes_images_from_a_trained_checkpoint(tiny_benchmark, tmp_path, capsys):
    bench, _ = tiny_benchmark
    checkpoint = next(r["best_checkpoint"] for r in bench.records.load() if r["model"] == "alloygan")
    out = tmp_path / "generated"
    code = main(["generate", "--checkpoint", checkpoint, "--si", "7", "--fe", "0.5", "--cu", "0.25", "--mn", "0.35",
                 "--mg", "0.3", "--ni", "0", "--cooling-rate", "10", "--modified", "--n", "2", "--out", str(out)])
    assert code == 0
    images = sorted(out.glob("*.png"))
    assert len(images) == 2
    assert cv2.imread(str(images[0]), cv2.IMREAD_UNCHANGED).shape == (128, 128)
    assert "ms per image" in capsys.readouterr().out
    assert main(["generate", "--checkpoint", checkpoint, "--alloy", "A393", "--cooling-rate", "57",
                 "--out", str(out / "a393")]) == 0
    assert len(list((out / "a393").glob("A393_*.png"))) == 4
    # A negative composition is refused with a message, not a traceback.
    assert main(["generate", "--checkpoint", checkpoint, "--si", "-1", "--cooling-rate", "10", "--out", str(out)]) == 2
