"""The rating task: timm backbones with CE / CORAL / CORN heads, baselines, and the harness end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from matcv.benchmarks.cli import run_and_report
from matcv.datamodules.synthetic.panels import PanelGeneratorConfig, generate_panels
from matcv.lightning_modules.rating import RatingTask
from matcv.lightning_modules.rating_baselines import scribe_band_features
from tests.conftest import tiny_rating_config


@pytest.mark.parametrize("head", ["ce", "coral", "corn"])
def test_heads_give_one_rating_per_photo(head):
    torch.manual_seed(0)
    task = RatingTask(backbone="resnet18", head=head)
    logits = task(torch.randn(3, 3, 32, 32))
    assert logits.shape == (3, 5 if head == "ce" else 4)
    loss = task._loss(logits, task.rating_index(torch.tensor([5, 7, 9])))
    assert torch.isfinite(loss) and loss.requires_grad


def test_rating_index_maps_ratings_and_refuses_others():
    task = RatingTask(backbone="resnet18", ratings=(5, 6, 7, 8, 9))
    assert task.rating_index(torch.tensor([5, 9, 7])).tolist() == [0, 4, 2]
    with pytest.raises(ValueError, match=r"rating\(s\) \[4\]"):
        task.rating_index(torch.tensor([4, 5]))
    with pytest.raises(ValueError, match="head must be one of"):
        RatingTask(backbone="resnet18", head="softmax")


def test_band_features_see_wider_corrosion_on_worse_ratings(tmp_path):
    root = generate_panels(PanelGeneratorConfig(n_panels=20, photos_per_panel=1, image_size=128, seed=4,
                                                ratings=(5, 9)), tmp_path, progress=False)
    rows = [line.split(",") for line in (root / "manifest.csv").read_text().splitlines()[1:]]
    width = {5: [], 9: []}
    for row in rows:
        features = scribe_band_features(np.asarray(Image.open(root / row[0])))
        width[int(row[2])].append(features[1])
    # Stains and reddish coatings make the estimate noisy (a baseline, not a measurement), but on average the
    # band of rating-5 panels (creep 3-5 mm) is clearly wider than that of rating-9 panels (<= 0.5 mm).
    assert np.mean(width[5]) > 1.5 * np.mean(width[9])


@pytest.fixture(scope="module")
def rating_benchmark(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rating")
    models = {
        "tiny-resnet-corn": {"class": "matcv.lightning_modules.rating.RatingTask",
                             "args": {"backbone": "resnet18", "head": "corn"}},
        "hand-crafted-rf": {"class": "matcv.lightning_modules.rating_baselines.HandCraftedRatingBaseline",
                            "args": {"classifier": "random_forest"}},
        "astm-on-true-mask": {"class": "matcv.lightning_modules.rating_baselines.AstmFromMaskBaseline", "args": {}},
    }
    config = tiny_rating_config(tmp, models)
    return run_and_report(config, output_dir=tmp / "runs", leaderboard_dir=tmp / "board", progress=False), tmp


def test_rating_benchmark_records_every_metric_and_a_confusion_matrix(rating_benchmark):
    bench, tmp = rating_benchmark
    records = bench.records.load()
    assert sorted((r["model"], r["fold"]) for r in records) == sorted(
        (m, f) for m in ("tiny-resnet-corn", "hand-crafted-rf", "astm-on-true-mask") for f in range(2))
    for record in records:
        assert record["status"] == "ok", record.get("traceback")
        assert set(record["metrics"]) == {"accuracy", "macro_f1", "qwk", "mae", "within_1"}
        matrix = np.array(record["details"]["confusion"]["matrix"])
        assert matrix.shape == (5, 5) and matrix.sum() == record["n_items"]["test"]
        assert record["metrics"]["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
        assert Image.open(record["figure"]).width > 200
    markdown = next((tmp / "board").glob("rating__*__quick.md")).read_text()
    for column in ("accuracy (mean ± std)", "qwk (mean ± std)", "within_1 (mean ± std)"):
        assert column in markdown


def test_astm_on_the_true_mask_is_the_upper_bound(rating_benchmark):
    """The ASTM procedure on the true 64 px masks recovers nearly every rating (measured: all of them)."""
    bench, _ = rating_benchmark
    astm = [r for r in bench.records.load() if r["model"] == "astm-on-true-mask"]
    assert min(r["metrics"]["accuracy"] for r in astm) >= 0.9
    assert all(r["metrics"]["within_1"] == 1.0 for r in astm)


def test_predict_rates_a_folder_and_reports_unreadable_files(rating_benchmark, tmp_path, capsys):
    from matcv.benchmarks.cli import main as matcv_main

    bench, _ = rating_benchmark
    record = next(r for r in bench.records.load() if r["model"] == "tiny-resnet-corn")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in list((bench.data_root / "images").iterdir())[:3]:
        (photos / name.name).write_bytes(name.read_bytes())
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "ratings.csv"
    assert matcv_main(["predict", "--task", "rating", "--checkpoint", record["best_checkpoint"], str(photos),
                       "--out", str(out)]) == 0
    assert "rated 3 photo(s), 1 unreadable" in capsys.readouterr().out
    rows = [line.split(",") for line in out.read_text().splitlines()]
    assert rows[0] == ["image", "predicted_rating", "confidence", "error"]
    by_name = {row[0]: row for row in rows[1:]}
    assert by_name["broken.jpg"][1] == "" and by_name["broken.jpg"][3].startswith("unreadable")
    rated = [row for name, row in by_name.items() if name != "broken.jpg"]
    assert len(rated) == 3 and all(int(row[1]) in range(5, 10) and 0 < float(row[2]) <= 1 for row in rated)


def test_predict_refuses_a_missing_checkpoint(tmp_path, capsys):
    from matcv.benchmarks.cli import main as matcv_main

    assert matcv_main(["predict", "--checkpoint", str(tmp_path / "none.ckpt"), str(tmp_path)]) == 2
    assert "none.ckpt not found" in capsys.readouterr().err


def test_leakage_report_compares_photo_random_folds_with_panel_grouped_folds(tmp_path):
    import yaml

    from matcv.datamodules.folds import read_fold_manifest

    models = {"hand-crafted-rf": {"class": "matcv.lightning_modules.rating_baselines.HandCraftedRatingBaseline",
                                  "args": {"classifier": "random_forest"}}}
    config_path = tiny_rating_config(tmp_path, models, n_panels=12)
    config = yaml.safe_load(config_path.read_text())
    config["profiles"]["quick"]["leakage_report"] = {"models": ["hand-crafted-rf"]}
    config_path.write_text(yaml.safe_dump(config))
    bench = run_and_report(config_path, output_dir=tmp_path / "runs", leaderboard_dir=tmp_path / "board",
                          progress=False)

    grouped, _ = read_fold_manifest(bench.fold_manifest_path)
    leaky_folder = bench.folder.parent / "quick-photo-folds"
    random, _ = read_fold_manifest(leaky_folder / "fold_manifest.json")
    panel_of = grouped["groups"]
    for fold in grouped["folds"]:  # grouped: no panel on both sides
        assert not {panel_of[i] for i in fold["train"]} & {panel_of[i] for i in fold["test"]}
    assert random["group_column"] == "image_path" and all(g == i for i, g in random["groups"].items())
    shared = [len({panel_of[i] for i in fold["train"]} & {panel_of[i] for i in fold["test"]})
              for fold in random["folds"]]
    assert max(shared) > 0  # random photo folds do put photos of one panel in train and test

    leaky_records = [r for r in (leaky_folder / "records.jsonl").read_text().splitlines()]
    assert len(leaky_records) == 2 and all('"fold_grouping": "image_path"' in r for r in leaky_records)
    report = next((tmp_path / "board").glob("rating__*__quick__leakage.md")).read_text()
    assert "| hand-crafted-rf | accuracy |" in report and "| hand-crafted-rf | qwk |" in report
    table = next((tmp_path / "board").glob("rating__*__quick__leakage.csv")).read_text().splitlines()
    assert table[0] == "model,metric,grouped_mean,grouped_std,random_mean,random_std,inflation,folds"
    assert len(table) == 1 + 5

    # `matcv leaderboard` rebuilds both, and the leaky runs never replace the grouped leaderboard.
    from matcv.benchmarks.cli import main as matcv_main

    rebuilt = tmp_path / "rebuilt"
    assert matcv_main(["leaderboard", "--runs", str(tmp_path / "runs"), "--out", str(rebuilt)]) == 0
    original = next((tmp_path / "board").glob("rating__*__quick.csv")).read_text()
    assert next(rebuilt.glob("rating__*__quick.csv")).read_text() == original
    assert next(rebuilt.glob("rating__*__quick__leakage.csv")).read_text().splitlines() == table


def test_augmentation_study_runs_each_augmentation_and_writes_a_matrix(tmp_path):
    import yaml

    models = {"tiny-resnet": {"class": "matcv.lightning_modules.rating.RatingTask",
                              "args": {"backbone": "resnet18", "head": "ce"}}}
    config_path = tiny_rating_config(tmp_path, models, image_size=32, n_panels=10)
    config = yaml.safe_load(config_path.read_text())
    config["profiles"]["quick"]["augmentation_study"] = ["none", "hflip"]
    config_path.write_text(yaml.safe_dump(config))
    bench = run_and_report(config_path, output_dir=tmp_path / "runs", leaderboard_dir=tmp_path / "board",
                          progress=False)
    records = bench.records.load()
    assert sorted((r["model"], r["fold"]) for r in records) == [
        ("tiny-resnet+hflip", 0), ("tiny-resnet+hflip", 1), ("tiny-resnet+none", 0), ("tiny-resnet+none", 1)]
    assert {r["model"]: r["config"]["datamodule"]["args"]["augmentation"] for r in records} == {
        "tiny-resnet+none": "none", "tiny-resnet+hflip": "hflip"}
    matrix = next((tmp_path / "board").glob("rating__*__quick__augmentations.md")).read_text()
    assert "| model | none | hflip |" in matrix
    row = next(line for line in matrix.splitlines() if line.startswith("| tiny-resnet |"))
    assert row.count("±") == 2


def test_backbone_weights_from_a_local_file_and_class_weights(tmp_path):
    torch.manual_seed(1)
    source = RatingTask(backbone="resnet18")
    path = tmp_path / "resnet18_backbone.pt"
    torch.save(source.backbone.state_dict(), path)
    torch.manual_seed(2)
    loaded = RatingTask(backbone="resnet18", backbone_weights_path=str(path))
    assert all(torch.equal(v, loaded.backbone.state_dict()[k]) for k, v in source.backbone.state_dict().items())

    weighted = RatingTask(backbone="resnet18", class_weights=[1, 1, 1, 1, 5])
    logits = torch.zeros(2, 5)
    labels = weighted.rating_index(torch.tensor([5, 9]))
    # Weighted mean cross-entropy: at uniform logits every example costs log 5, whatever its weight...
    assert weighted._loss(logits, labels).item() == pytest.approx(np.log(5))
    logits[:, 0] = 3.0  # ...but confident "rating 5" logits cost the heavily weighted rating-9 example more
    plain = RatingTask(backbone="resnet18")
    assert weighted._loss(logits, labels).item() > plain._loss(logits, labels).item()


@pytest.mark.parametrize("backbone", ["resnet50", "densenet121", "hrnet_w18_small"])
def test_the_papers_backbones_build_from_scratch_by_name(backbone):
    task = RatingTask(backbone=backbone, head="coral")
    task.eval()
    with torch.no_grad():
        assert task(torch.randn(1, 3, 64, 64)).shape == (1, 4)


def test_selecting_only_models_outside_the_leakage_report_runs_no_report(tmp_path):
    """`--models X` where X is not one of the report's models: no photo-level runs at all (an empty selection
    once meant "every model of the profile" on the photo folds)."""
    import yaml

    models = {"hand-crafted-rf": {"class": "matcv.lightning_modules.rating_baselines.HandCraftedRatingBaseline",
                                  "args": {"classifier": "random_forest"}},
              "astm-on-true-mask": {"class": "matcv.lightning_modules.rating_baselines.AstmFromMaskBaseline",
                                    "args": {}}}
    config_path = tiny_rating_config(tmp_path, models, n_panels=12)
    config = yaml.safe_load(config_path.read_text())
    config["profiles"]["quick"]["leakage_report"] = {"models": ["hand-crafted-rf"]}
    config_path.write_text(yaml.safe_dump(config))
    bench = run_and_report(config_path, output_dir=tmp_path / "runs", leaderboard_dir=tmp_path / "board",
                           progress=False, models=["astm-on-true-mask"])
    assert (bench.folder / "records.jsonl").read_text().count('"model": "astm-on-true-mask"') == 2
    assert not (bench.folder.parent / "quick-photo-folds" / "records.jsonl").exists()
