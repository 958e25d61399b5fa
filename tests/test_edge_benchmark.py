"""DeepSC-Edge models through the harness: per-image comparison, difficulty slices, the superalloy protocols."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from matcv.benchmarks.cli import resolve_data_argument, run_and_report
from matcv.datamodules.core.config import CONFIG_DIR, ConfigError, TaskConfig
from matcv.datamodules.core.records import RunRecords
from matcv.datamodules.folds import read_fold_manifest
from matcv.leaderboard.rebuild import write_all_leaderboards
from tests.conftest import SHARED_SUPERALLOY, tiny_task_config

TINY_DECODER = [32, 16, 8, 8, 8]


def _edge_model(variant: str, overlap: str, **extra) -> dict:
    return {"class": "matcv.lightning_modules.edge_guided.EdgeGuidedSegmentationTask",
            "args": {"variant": variant, "overlap": overlap, "decoder_channels": TINY_DECODER, "lr": 3e-3, **extra}}


def test_edge_models_get_the_comparison_against_unet_and_the_difficulty_slices(tmp_path):
    config_path = tiny_task_config(tmp_path, models={"unet": _edge_model("unet", "dice"),
                                                     "s-guided-et-unet-ftl": _edge_model("s-guided", "ftl")},
                                   folds=2, max_epochs=1, n_panels=8)
    config = yaml.safe_load(config_path.read_text())
    config["comparison"] = TaskConfig.load("segmentation").raw["comparison"]  # the real task's block
    config_path.write_text(yaml.safe_dump(config))
    bench = run_and_report(config_path, output_dir=tmp_path / "runs", leaderboard_dir=tmp_path / "board",
                          progress=False)
    records = bench.records.load()
    assert all(r["status"] == "ok" for r in records), [r.get("traceback") for r in records]
    for record in records:
        for item in record["per_image"]:  # what the panel's manifest adds to every test image
            assert {"thin", "under_coating", "stain", "rating_from_mask", "rating_match",
                    "rating_match_true_mask"} <= set(item)
            assert "stain_fp_fraction" in item
    markdown = next((tmp_path / "board").glob("*.md")).read_text()
    assert "W-Inc" in markdown and "## Difficulty slices" in markdown and "dice, thin" in markdown
    table = pd.read_csv(next(p for p in (tmp_path / "board").glob("*.csv") if "slices" not in p.name))
    unet = table.set_index("model").loc["unet"]
    assert unet["dice_diff"] == 0.0 and unet["dice_w_inc"] == 0.0  # the baseline against itself
    slices = pd.read_csv(next((tmp_path / "board").glob("*__slices.csv"))).set_index("model")
    assert set(slices.index) == {"unet", "s-guided-et-unet-ftl"}


def test_data_names_a_dataset_yaml_or_a_folder(tmp_path):
    assert resolve_data_argument("segmentation", "superalloy", None) == ("segmentation-superalloy", None)
    assert resolve_data_argument("segmentation", str(tmp_path), None) == ("segmentation", tmp_path)
    assert resolve_data_argument("segmentation", None, tmp_path) == ("segmentation", tmp_path)
    with pytest.raises(ConfigError, match="named datasets: superalloy"):
        resolve_data_argument("segmentation", "no-such-data", None)


def test_superalloy_config_lists_all_eight_models_and_its_protocols():
    config = TaskConfig.load(CONFIG_DIR / "segmentation-superalloy.yaml")
    corrosion = TaskConfig.load("segmentation")
    edge_models = [m for m, e in corrosion.raw["models"].items() if "edge_guided" in e["class"]]
    assert len(edge_models) == 8 and set(edge_models) <= set(config.raw["models"])
    assert config.profile("quick")["companion_profiles"] == ["official", "ood"]
    for name in ("official", "ood"):
        assert config.profile(name)["folds"] == 1 and config.profile(name)["datamodule"]["split"] == name


@pytest.mark.skipif(not SHARED_SUPERALLOY.is_dir(),
                    reason="the shared test data (…/data/nasa-pretrained-microscopy-models) is absent")
def test_superalloy_grouped_official_and_ood_protocols_end_to_end(tmp_path):
    config = yaml.safe_load((CONFIG_DIR / "segmentation-superalloy.yaml").read_text())
    tiny = {"crop_size": 64, "crops_per_image": 2, "batch_size": 4}
    for name in ("quick", "official", "ood"):
        profile = config["profiles"][name]
        profile["models"] = ["unet"]
        profile["datamodule"].update(tiny)
        profile["trainer"] = {"max_epochs": 1}
        profile["class_overrides"] = {"matcv.lightning_modules.edge_guided.EdgeGuidedSegmentationTask":
                                      {"decoder_channels": TINY_DECODER}}
    path = tmp_path / "segmentation-superalloy.yaml"
    path.write_text(yaml.safe_dump(config))
    run_and_report(path, data_root=SHARED_SUPERALLOY, output_dir=tmp_path / "runs",
                  leaderboard_dir=tmp_path / "board", progress=False)
    folder = tmp_path / "runs" / "segmentation" / "nasa-superalloy"
    official, _ = read_fold_manifest(folder / "official" / "fold_manifest.json")
    assert sorted(official["folds"][0]["test"]) == sorted(f"Super1/test/{p.name}"
                                                         for p in (SHARED_SUPERALLOY / "Super1" / "test").glob("*.tif"))
    ood, _ = read_fold_manifest(folder / "ood" / "fold_manifest.json")
    assert all(item.startswith("Super2/") for item in ood["folds"][0]["test"])
    grouped, _ = read_fold_manifest(folder / "quick" / "fold_manifest.json")
    assert len(grouped["folds"]) == 3
    summary = (tmp_path / "board" / "segmentation__nasa-superalloy__profiles.md").read_text()
    assert "quick: iou" in summary and "official: iou" in summary and "ood: iou" in summary
    rebuilt = write_all_leaderboards(tmp_path / "runs", tmp_path / "rebuilt")  # `matcv leaderboard` redoes it
    assert (tmp_path / "rebuilt" / "segmentation__nasa-superalloy__profiles.md") in rebuilt
    (record,) = RunRecords(folder / "official" / "records.jsonl").load()
    assert record["status"] == "ok", record.get("traceback")
    item = record["per_image"][0]
    assert {"iou_matrix", "iou_secondary", "iou_tertiary", "dice_tertiary"} <= set(item)
    assert item["iou"] == pytest.approx((item["iou_matrix"] + item["iou_secondary"] + item["iou_tertiary"]) / 3)
