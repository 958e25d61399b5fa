"""The UHCSDB microstructure YAML through the harness, on stand-in micrographs for real metadata rows."""

from __future__ import annotations

import math

import pytest
import yaml

from matcv.datamodules.core.config import CONFIG_DIR
from matcv.benchmarks.cli import run_and_report
from tests.test_uhcsdb import ALL_ROWS, REAL_CSV, write_release


def test_uhcsdb_yaml_trains_the_seed_autoencoder_on_48x64_patches(tmp_path):
    if not REAL_CSV.is_file():
        pytest.skip(f"the real UHCSDB metadata {REAL_CSV} is absent")
    root = tmp_path / "uhcsdb"
    write_release(root, ALL_ROWS)
    config = yaml.safe_load((CONFIG_DIR / "microstructure-uhcsdb.yaml").read_text())
    quick = config["profiles"]["quick"]
    # The stand-ins span every release class (the YAML keeps spheroidite only, as Tran, Rodgers & Wildey 2020 did).
    config["datamodule"]["args"].update(constituents=None, target_magnification=1964.0)
    quick.update(trainer={"max_epochs": 1}, models=["seed-ae", "train-images"], companion_profiles=[],
                 datamodule={"patch_size": [48, 64], "max_crops_per_micrograph": 4, "batch_size": 16})
    quick["class_overrides"] = {"matcv.lightning_modules.microstructure.AutoencoderTask": {"extractor_epochs": 1},
                                "matcv.lightning_modules.microstructure.TrainingImagesReference": {"extractor_epochs": 1}}
    config["profiles"] = {"quick": quick}
    path = tmp_path / "microstructure-uhcsdb.yaml"
    path.write_text(yaml.safe_dump(config))
    bench = run_and_report(path, data_root=root, output_dir=tmp_path / "runs", leaderboard_dir=tmp_path / "board",
                          progress=False)
    assert bench.dataset == "uhcsdb"
    records = bench.records.load()
    assert all(r["status"] == "ok" for r in records), [r.get("traceback") for r in records]
    assert {r["model"] for r in records} == {"seed-ae", "train-images"}
    for record in records:
        # anneal_temperature gives the domain extractor several classes: FID-domain is defined.
        assert math.isfinite(record["metrics"]["fid_domain"]) and record["details"]["domain_extractor"]
        assert record["details"]["image_kind"] == "grey"
    assert all(math.isfinite(r["metrics"]["mse"]) for r in records if r["model"] == "seed-ae")
