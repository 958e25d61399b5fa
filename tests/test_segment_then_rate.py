"""Segment-then-rate through the harness: a tiny UNet trained on one fold's masks, the ASTM procedure on its
predicted masks, and the rating error split into the mask's and the procedure's."""

from __future__ import annotations

import pytest

from matcv.benchmarks.harness.runner import run_benchmark
from tests.conftest import tiny_rating_config

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.filterwarnings("ignore::UserWarning")]

TINY = {"class": "matcv.lightning_modules.segment_then_rate.SegmentThenRate",
        "args": {"arch": "unet", "encoder_name": "resnet18", "max_epochs": 1, "lr": 3.0e-3,
                 "arch_kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}}}


def test_one_fold_end_to_end_records_ratings_from_both_masks(tmp_path):
    config = tiny_rating_config(tmp_path, {"segment-then-rate": TINY,
                                           "astm-on-true-mask": {"class": "matcv.lightning_modules.rating_baselines."
                                                                          "AstmFromMaskBaseline", "args": {}}})
    bench = run_benchmark(config, folds=[0], output_dir=tmp_path / "runs", accelerator="cpu", progress=False)
    records = {r["model"]: r for r in bench.records.load()}
    record = records["segment-then-rate"]
    assert record["status"] == "ok", record.get("traceback")
    assert record["n_items"]["test"] == len(record["per_image"]) > 0
    assert record["details"]["weights"] == {"source": "none", "file": None, "sha256": None, "pretrained_on": "none"}
    assert set(record["metrics"]) >= {"accuracy", "qwk", "mae"}
    true_mask = {row["item_id"]: row["predicted"] for row in records["astm-on-true-mask"]["per_image"]}
    for row in record["per_image"]:
        assert row["predicted"] in range(5, 10) and 0.0 <= row["dice"] <= 1.0
        # The same procedure on the same true mask as the baseline: the split of the error is exact.
        assert row["rating_from_true_mask"] == true_mask[row["item_id"]]
        assert row["procedure_error"] == abs(row["rating_from_true_mask"] - row["rating"])
        assert row["mask_error"] == abs(row["predicted"] - row["rating_from_true_mask"])
        assert row["abs_error"] <= row["procedure_error"] + row["mask_error"]


def test_imagenet_segmenter_is_refused_at_build_when_offline(tmp_path, monkeypatch):
    from matcv.lightning_modules import pretrained_weights
    from matcv.lightning_modules.segment_then_rate import SegmentThenRate

    monkeypatch.setenv("MATCV_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(pretrained_weights, "hub_reachable", lambda timeout=0: False)
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)
    with pytest.raises(pretrained_weights.HubUnreachableError, match="resnet18.imagenet.safetensors"):
        SegmentThenRate(**{**TINY["args"], "pretrained": "imagenet"})
