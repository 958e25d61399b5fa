"""The microstructure task through the harness: every model on two sources, one table across them."""

from __future__ import annotations

import math

import pandas as pd
import yaml

from matcv.datamodules.core.config import CONFIG_DIR
from matcv.benchmarks.cli import run_and_report

METRICS = ["s2_distance", "fid_domain", "kid_domain", "vf_error", "grain_size_distance", "diversity", "mse", "psnr",
           "ssim"]


def tiny_config(tmp_path):
    config = yaml.safe_load((CONFIG_DIR / "microstructure.yaml").read_text())
    common = {"folds": 2, "val_fraction": 0.34, "seed": 0, "trainer": {"max_epochs": 1},
              "datamodule": {"batch_size": 8},
              "class_overrides": {
                  "matcv.lightning_modules.microstructure.DCGANTask": {"ngf": 4, "ndf": 4, "n_validation_samples": 4,
                                                                 "extractor_epochs": 1},
                  "matcv.lightning_modules.microstructure.VAETask": {"channels": [4, 8, 8], "latent_dim": 4,
                                                               "extractor_epochs": 1},
                  "matcv.lightning_modules.microstructure.AutoencoderTask": {"extractor_epochs": 1},
                  "matcv.lightning_modules.microstructure.TrainingImagesReference": {"extractor_epochs": 1}}}
    config["profiles"] = {
        "quick": {**common, "generator": {"source": "gaussian-binary", "size": 128, "images_per_setting": 2,
                                          "sigma_values": [2, 6], "volume_fractions": [0.3, 0.7]},
                  "model_overrides": {"seed-ae": {"architecture": "binary"}},
                  "companion_profiles": ["quick-potts"]},
        "quick-potts": {**common, "generator": {"source": "potts", "size": 128, "images_per_setting": 2,
                                                "kT_values": [0.5, 0.75], "mc_steps": [4, 8, 12]},
                        "model_overrides": {"seed-ae": {"architecture": "grain_growth"}}},
    }
    path = tmp_path / "microstructure.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_every_model_on_two_sources_gets_every_metric(tmp_path):
    board = tmp_path / "board"
    bench = run_and_report(tiny_config(tmp_path), output_dir=tmp_path / "runs", leaderboard_dir=board, progress=False)
    runs = tmp_path / "runs" / "microstructure"
    for source in ("gaussian-binary", "potts"):
        records = [r for r in (runs / source).glob("*/records.jsonl")]
        assert len(records) == 1, f"one benchmark folder per source, got {records}"
    from matcv.datamodules.core.records import RunRecords

    for source, profile in (("gaussian-binary", "quick"), ("potts", "quick-potts")):
        records = RunRecords(runs / source / profile / "records.jsonl").load()
        assert {r["model"] for r in records} == {"seed-ae", "vae", "dcgan", "train-images"}
        assert all(r["status"] == "ok" for r in records), [r.get("traceback") for r in records]
        for record in records:
            metrics = record["metrics"]
            assert set(METRICS) <= set(metrics)
            for name in ("s2_distance", "fid_domain", "kid_domain", "vf_error", "diversity"):
                assert math.isfinite(metrics[name]), (record["model"], name)
            reconstructs = record["model"] in ("seed-ae", "vae")
            assert math.isfinite(metrics["mse"]) == reconstructs
            assert math.isfinite(metrics["grain_size_distance"]) == (source == "potts")
            run_dir = runs / source / profile / record["model"] / f"fold-{record['fold']}"
            assert (run_dir / "test_examples.png").is_file() and (run_dir / "samples.png").is_file()
        # Every model of a fold is scored with the same domain feature extractor, so FID-domain compares.
        for fold in (0, 1):
            extractors = {r["details"]["domain_extractor"] for r in records if r["fold"] == fold}
            assert len(extractors) == 1 and None not in extractors
        # The reference draws distinct real images: far from the collapse (diversity 0) of an untrained GAN.
        reference = [r for r in records if r["model"] == "train-images"]
        assert all(r["metrics"]["diversity"] > 0.3 for r in reference)

    summary = pd.read_csv(board / "microstructure__quick__sources.csv")
    assert set(summary["dataset"]) == {"gaussian-binary", "potts"}
    assert len(summary) == 8
    markdown = (board / "microstructure__quick__sources.md").read_text()
    assert "grain_size_distance" in markdown and "–" in markdown  # not-applicable metrics shown as a dash
    assert bench.folder.name == "quick"


def test_trainer_overrides_give_a_model_its_own_epochs():
    from matcv.datamodules.core.config import TaskConfig

    config = TaskConfig.load("microstructure")
    assert config.resolve("quick", "seed-ae")["trainer"]["max_epochs"] == 200
    assert config.resolve("quick", "dcgan")["trainer"]["max_epochs"] == 120  # 64 px DCGAN: 4x cheaper steps
    assert config.resolve("quick-smooth", "dcgan")["trainer"]["max_epochs"] == 30
    # The trainer is part of the resolved config, so changing a model's epochs reruns that model only.
    specs = {spec.model: spec.config_hash for spec in config.runs("quick", folds=[0])}
    assert len(set(specs.values())) == len(specs)
