"""Microstructure image sources: generated Gaussian fields / Potts grain growth and the manifest layout."""

from __future__ import annotations

import json

import numpy as np
import pytest

from matcv.datamodules.folds import make_fold_manifest, write_fold_manifest
from matcv.datamodules.manifest import ManifestError
from matcv.datamodules.microstructure import (
    MicrostructureDataModule,
    MicrostructureGeneratorConfig,
    generate_microstructure_dataset,
    plan_images,
    read_manifest,
    sigma_pair_class,
)
from matcv.datamodules.core.atomic_io import save_png


def small(source: str, **settings) -> MicrostructureGeneratorConfig:
    return MicrostructureGeneratorConfig(source=source, size=32, images_per_setting=2,
                                         **({"sigma_values": (1.0, 3.0)} | settings))


def test_groups_are_sigma_pairs_up_to_transposition():
    plan = plan_images(small("gaussian-binary", volume_fractions=(0.5,)))
    by_setting = {(p.setting["sigma_x"], p.setting["sigma_y"]): p.group for p in plan}
    # (1, 3) and (3, 1) are the same fields turned by 90 degrees: one group, never split apart.
    assert by_setting[(1.0, 3.0)] == by_setting[(3.0, 1.0)] == "sigma_1_3_vf_0.5"
    assert len({p.group for p in plan}) == 3  # 1-1, 1-3, 3-3
    assert sigma_pair_class(8, 2) == sigma_pair_class(2, 8)


def test_binary_fields_have_their_volume_fraction_and_orientation(tmp_path):
    config = MicrostructureGeneratorConfig(source="gaussian-binary", size=64, images_per_setting=2,
                                           sigma_values=(1.0, 6.0), volume_fractions=(0.3, 0.7))
    root = generate_microstructure_dataset(config, tmp_path / "binary", progress=False)
    table = read_manifest(root)
    assert len(table) == 4 * 2 * 2
    assert abs(table["measured_volume_fraction"].astype(float) - table["volume_fraction"].astype(float)).max() < 1e-3
    import cv2

    row = table[(table["sigma_x"].astype(float) == 6) & (table["sigma_y"].astype(float) == 1)].iloc[0]
    image = cv2.imread(str(root / row["image_path"]), cv2.IMREAD_GRAYSCALE) > 0
    # sigma_x > sigma_y: grains elongated along x, so neighbours along x agree more often than along y.
    same_x = (image == np.roll(image, 1, axis=1)).mean()
    same_y = (image == np.roll(image, 1, axis=0)).mean()
    assert same_x > same_y + 0.05
    settings = json.loads((root / "generator.json").read_text())
    assert settings["image_kind"] == "binary" and settings["periodic"] is True


def test_generation_is_deterministic_and_regenerates_on_new_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("MATCV_CACHE_DIR", str(tmp_path / "cache"))
    first = generate_microstructure_dataset(small("gaussian-smooth"), progress=False)
    again = generate_microstructure_dataset(small("gaussian-smooth"), progress=False)
    assert first == again  # cached: the same folder, not regenerated
    other = generate_microstructure_dataset(small("gaussian-smooth", seed=1), progress=False)
    assert other != first
    copy = generate_microstructure_dataset(small("gaussian-smooth"), tmp_path / "copy", progress=False)
    for name in read_manifest(first)["image_path"]:
        assert (first / name).read_bytes() == (copy / name).read_bytes()
    with pytest.raises(FileExistsError, match="other settings"):
        generate_microstructure_dataset(small("gaussian-smooth", seed=2), first, progress=False)


def test_smooth_field_keeps_the_filtered_noise_statistics(tmp_path):
    root = generate_microstructure_dataset(small("gaussian-smooth", sigma_values=(2.0,)), tmp_path / "s",
                                           progress=False)
    import cv2

    image = cv2.imread(str(root / read_manifest(root)["image_path"][0]), cv2.IMREAD_GRAYSCALE).astype(float)
    # z in [-3, 3] -> 0..255: the mean grey is mid-range and the spread is 255/6 per standard deviation.
    assert abs(image.mean() - 127.5) < 3
    assert abs(image.std() - 255 / 6) < 3
    # A periodic field: the jump across the wrap seam is like any jump between neighbouring rows (a field
    # filtered without wrap-around would put independent values on the two edges).
    interior = np.abs(np.diff(image, axis=0)).mean()
    seam = np.abs(image[0] - image[-1]).mean()
    assert seam < 2 * interior


def test_potts_source_writes_grain_boundary_images_with_truth(tmp_path):
    config = MicrostructureGeneratorConfig(source="potts", size=32, images_per_setting=2, kT_values=(0.5,),
                                           mc_steps=(5, 20))
    root = generate_microstructure_dataset(config, tmp_path / "potts", progress=False)
    table = read_manifest(root)
    assert sorted(set(table["group"])) == ["kT_0.5_mcs_20", "kT_0.5_mcs_5"]
    areas = table.groupby(table["mc_steps"].astype(int))["mean_grain_area"].apply(lambda s: s.astype(float).mean())
    assert areas[20] > areas[5]  # grains have grown
    import cv2

    image = cv2.imread(str(root / table["image_path"][0]), cv2.IMREAD_GRAYSCALE)
    assert set(np.unique(image)) <= {0, 255}
    assert abs((image > 0).mean() - float(table["boundary_fraction"][0])) < 1e-6


def _fold_manifest(tmp_path, root, n_folds=3):
    table = read_manifest(root)
    strata = table["stratum"].tolist() if "stratum" in table else None
    manifest = make_fold_manifest(table["image_path"].tolist(), table["group"].tolist(), strata, n_folds=n_folds,
                                  val_fraction=0.25, seed=0, group_column="group", stratify_column="stratum")
    path = tmp_path / "folds.json"
    write_fold_manifest(path, manifest)
    return path, manifest


def test_datamodule_serves_grouped_folds_with_training_labels(tmp_path):
    root = generate_microstructure_dataset(small("gaussian-binary", volume_fractions=(0.4, 0.6)), tmp_path / "b",
                                           progress=False)
    path, manifest = _fold_manifest(tmp_path, root)
    groups = dict(zip(read_manifest(root)["image_path"], read_manifest(root)["group"]))
    for fold in range(3):
        dm = MicrostructureDataModule(str(path), fold, data_root=str(root), batch_size=4)
        dm.setup("fit")
        seen = {p: {groups[i] for i in dm.datasets[p].item_ids} for p in ("train", "val", "test")}
        assert not (seen["train"] & seen["test"]) and not (seen["train"] & seen["val"]) and not (seen["val"] & seen["test"])
        assert dm.image_kind == "binary" and dm.periodic
        train = dm.datasets["train"]
        assert train.images.shape[1:] == (1, 32, 32)
        assert set(train.images.unique().tolist()) <= {-1.0, 1.0}
        assert train.labels.min() == 0 and dm.num_labels == len(seen["train"])
        assert (dm.datasets["test"].labels == -1).all()  # held-out settings: labels the extractor never saw
        batch = next(iter(dm.train_dataloader()))
        assert set(batch) == {"image", "item_id", "label"}
    assert MicrostructureDataModule.dataset_name(root, generated=True) == "gaussian-binary"


def test_user_manifest_layout_and_its_errors(tmp_path):
    root = tmp_path / "mine"
    rng = np.random.default_rng(0)
    rows = ["image_path,group"]
    for k in range(6):
        save_png(root / f"img{k}.png", (rng.random((24, 24)) * 255).astype(np.uint8))
        rows.append(f"img{k}.png,specimen{k // 2}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    index = MicrostructureDataModule.check_dataset(root, progress=False)
    assert index["groups"] == ["specimen0", "specimen0", "specimen1", "specimen1", "specimen2", "specimen2"]
    assert index["strata"] is None
    assert MicrostructureDataModule.dataset_name(root, generated=False) == "mine"

    save_png(root / "img1.png", np.zeros((30, 24), np.uint8))  # another size
    (root / "img2.png").write_bytes(b"not a png")
    with pytest.raises(ManifestError) as error:
        MicrostructureDataModule.check_dataset(root, progress=False)
    assert "img1.png" in str(error.value) and "img2.png" in str(error.value)

    (root / "manifest.csv").write_text("image_path,group\n../outside.png,a\nimg0.png,\n")
    with pytest.raises(ManifestError, match="relative path inside") as error:
        MicrostructureDataModule.index_dataset(root)
    assert "empty group" in str(error.value)
