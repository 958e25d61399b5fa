"""Synthetic Al–Si micrographs: physics by construction, the domain measurements, the data module."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from matcv.datamodules.measurements.alloy_measure import secondary_arm_spacing, si_area_fraction, si_particle_stats
from matcv.datamodules.alloy_micrographs import AlloyMicrographDataModule, read_manifest
from matcv.datamodules.measurements.alloys import ALLOYS, CONDITION_COLUMNS, MODIFIABLE, alloy_by_name, table6_conditions
from matcv.datamodules.core.atomic_io import save_png
from matcv.datamodules.folds import make_fold_manifest, write_fold_manifest
from matcv.datamodules.manifest import ManifestError
from matcv.datamodules.microstructure_images import load_grey
from matcv.datamodules.synthetic.alloy_micrographs import AlloyGeneratorConfig, generate_alloy_dataset, phase_fractions

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: see conftest

# Alloys whose α-Al dendrites are at least ~20 % of the area: λ2 is measurable on every image of them.
# (Near-eutectic A369 / A339 have 10 % / 5 % α-Al; their λ2 may honestly be NaN.)
DENDRITIC = ("A355", "A356", "A360", "A393", "A308", "A319", "A332")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Every Table 6 condition, 2 images each (96 images, ~2 s), measured once."""
    config = AlloyGeneratorConfig(images_per_condition=2)
    root = generate_alloy_dataset(config, tmp_path_factory.mktemp("alloys") / "data", progress=False)
    table = pd.read_csv(root / "manifest.csv")
    measured = []
    for path in table["image_path"]:
        image = load_grey(root / path)
        measured.append({"si_measured": si_area_fraction(image), "lambda2_measured": secondary_arm_spacing(image),
                         **si_particle_stats(image)})
    return root, pd.concat([table, pd.DataFrame(measured)], axis=1)


def test_alloy_table():
    assert len(ALLOYS) == 9 and alloy_by_name("a356")["Si"] == 7.0 and alloy_by_name("A393")["Ni"] == 2.3
    conditions = table6_conditions()
    assert len(conditions) == 48
    assert {c["alloy"] for c in conditions if c["modified"]} == set(MODIFIABLE)
    with pytest.raises(ValueError, match="A356"):
        alloy_by_name("A999")


def test_lever_rule():
    assert phase_fractions(7.0)["eutectic"] == pytest.approx(0.4886, abs=1e-4)  # lever rule: (7 − 1.65)/(12.6 − 1.65) ≈ 0.49 (docs/tasks/alloygan.md)
    assert phase_fractions(7.0)["si_expected"] == pytest.approx(0.127 * 0.4886, abs=1e-4)
    hyper = phase_fractions(22.0)
    assert hyper["primary_si"] == pytest.approx((22 - 12.6) / 87.4)
    assert hyper["si_expected"] == pytest.approx(hyper["primary_si"] + 0.127 * hyper["eutectic"])


def test_si_area_fraction_measured_true_expected(dataset):
    _, table = dataset
    # Rank selection makes the Si pixel count exact: true = expected up to one pixel (and 6-digit CSV).
    assert np.abs(table["si_area_fraction_true"] - table["si_area_fraction_expected"]).max() < 2 / 128**2
    # The threshold (100) is the midpoint of Si (25) and eutectic Al (175): a blurred (sigma 0.5 px) straight
    # edge keeps its area; corners and 1–2 px particles shift it slightly (observed max 2 % relative).
    relative = table["si_measured"] / table["si_area_fraction_true"] - 1
    assert np.abs(relative).max() < 0.05, relative.describe()
    by_alloy = table.groupby("alloy").agg(si=("Si", "first"), measured=("si_measured", "mean"))
    rho = spearmanr(by_alloy["si"], by_alloy["measured"]).statistic
    assert rho > 0.9, by_alloy


def test_secondary_arm_spacing_follows_the_cooling_rate(dataset):
    _, table = dataset
    dendritic = table[table["alloy"].isin(DENDRITIC)]
    relative = dendritic["lambda2_measured"] / dendritic["lambda2_px"] - 1
    # Arms are exactly λ2 apart along the trunks; the autocorrelation peak is read to 0.5 px with parabolic
    # refinement, so a few % (observed <= 2 %); 15 % leaves room for arm-phase jitter between trunks.
    assert relative.notna().all() and np.abs(relative).max() < 0.15, relative.describe()
    measured = table[np.isfinite(table["lambda2_measured"])]
    assert len(measured) >= 0.8 * len(table)
    x, y = np.log(measured["cooling_rate"]), np.log(measured["lambda2_measured"])
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    r2 = 1 - (residual**2).sum() / ((y - y.mean()) ** 2).sum()
    assert abs(-slope - 1 / 3) < 0.1 and r2 > 0.9, (slope, r2)
    # The paper's form: λ2 linear in CR^(-n) with the fitted n.
    cr_n = measured["cooling_rate"] ** slope
    assert np.corrcoef(cr_n, measured["lambda2_measured"])[0, 1] ** 2 > 0.9


def test_spacing_is_nan_without_structure():
    rng = np.random.default_rng(0)
    assert math.isnan(secondary_arm_spacing(rng.integers(0, 256, (128, 128)).astype(np.uint8)))
    assert math.isnan(secondary_arm_spacing(np.full((128, 128), 0.5, np.float32)))
    assert si_particle_stats(np.ones((64, 64)))["particle_count_per_10k_px"] == 0.0


def test_modification_gives_more_smaller_si_particles(dataset):
    _, table = dataset
    stats = table[table["alloy"].isin(MODIFIABLE)].groupby(["alloy", "cooling_rate", "modified"])[
        ["particle_count_per_10k_px", "mean_particle_area_px"]].mean()
    for alloy in MODIFIABLE:
        for rate in table["cooling_rate"].unique():
            plain, modified = stats.loc[(alloy, rate, 0)], stats.loc[(alloy, rate, 1)]
            assert modified["particle_count_per_10k_px"] > plain["particle_count_per_10k_px"], (alloy, rate)
            assert modified["mean_particle_area_px"] < plain["mean_particle_area_px"], (alloy, rate)


def test_hypereutectic_has_primary_si_blocks(dataset):
    _, table = dataset
    unmodified = table[table["modified"] == 0]
    a393, a356 = unmodified[unmodified["alloy"] == "A393"], unmodified[unmodified["alloy"] == "A356"]
    assert (a393["primary_si_fraction_true"] > 0.1).all() and (a356["primary_si_fraction_true"] == 0).all()
    # Primary Si blocks (radius ~9 px): A393's smallest largest-particle beats twice A356's largest one.
    smallest_a393 = a393.groupby("cooling_rate")["max_particle_area_px"].min()
    assert (smallest_a393 > 2 * a356.groupby("cooling_rate")["max_particle_area_px"].max()).all()
    refined = table[(table["alloy"] == "A393") & (table["modified"] == 1)]
    assert refined["max_particle_area_px"].mean() < a393["max_particle_area_px"].mean()  # P refines them


def test_determinism_cache_and_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("MATCV_CACHE_DIR", str(tmp_path / "cache"))
    config = AlloyGeneratorConfig(images_per_condition=1, alloys=("A356", "a393"), cooling_rates=(10, 143))
    first = generate_alloy_dataset(config, progress=False)
    assert first.parent.name == "alloy-micrographs" and first.name == config.fingerprint()
    assert generate_alloy_dataset(config, progress=False) == first  # cached
    copy = generate_alloy_dataset(config, tmp_path / "copy", progress=False)
    files = sorted(p.relative_to(first) for p in first.rglob("*.png"))
    assert len(files) == 2 * 2 + 2 * 2  # A356 and A393 each modified and not, two rates
    for name in [*files, "manifest.csv", "generator.json"]:
        assert (first / name).read_bytes() == (copy / name).read_bytes()
    other = generate_alloy_dataset(AlloyGeneratorConfig(images_per_condition=1, alloys=("A356",), cooling_rates=(10,),
                                                         seed=1), progress=False)
    assert other != first
    with pytest.raises(FileExistsError):
        generate_alloy_dataset(AlloyGeneratorConfig(images_per_condition=2), copy, progress=False)
    assert AlloyMicrographDataModule.dataset_name(first, generated=True) == "alloy-micrographs"


def _user_root(tmp_path, rows: list[dict]):
    root = tmp_path / "user"
    for row in rows:
        save_png(root / row["image_path"], np.full((32, 32), 180, np.uint8))
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


def _user_row(i: int, **changes) -> dict:
    return {"image_path": f"img{i}.png", "Si": 7, "Fe": 0.5, "Cu": 0.25, "Mn": 0.35, "Mg": 0.3, "Ni": 0,
            "cooling_rate": 10, "modified": "yes"} | changes


def test_user_manifest(tmp_path):
    root = _user_root(tmp_path, [_user_row(0), _user_row(1, modified="false", Si=9.5)])
    table = read_manifest(root)
    assert table["modified"].tolist() == [1, 0]
    assert table["group"].tolist() == ["Si7-Fe0.5-Cu0.25-Mn0.35-Mg0.3-Ni0", "Si9.5-Fe0.5-Cu0.25-Mn0.35-Mg0.3-Ni0"]
    index = AlloyMicrographDataModule.check_dataset(root, progress=False)
    assert index["items"] == ["img0.png", "img1.png"] and index["strata"] is None
    assert AlloyMicrographDataModule.dataset_name(root, generated=False) == "user"


@pytest.mark.parametrize("change, expected", [
    ({"drop": "Mg"}, ["missing column", "Mg"]),
    ({"Fe": "nan"}, ["row 3", "column Fe", "NaN"]),
    ({"Cu": ""}, ["row 3", "column Cu"]),
    ({"cooling_rate": -5}, ["row 3", "column cooling_rate", "negative"]),
    ({"Si": -1}, ["row 3", "column Si", "negative"]),
    ({"modified": "maybe"}, ["row 3", "column modified", "maybe"]),
])
def test_user_manifest_errors_name_file_row_and_column(tmp_path, change, expected):
    rows = [_user_row(0), _user_row(1, **{k: v for k, v in change.items() if k != "drop"})]
    if "drop" in change:
        rows = [{k: v for k, v in row.items() if k != change["drop"]} for row in rows]
    root = _user_root(tmp_path, rows)
    with pytest.raises(ManifestError) as error:
        AlloyMicrographDataModule.index_dataset(root)
    message = str(error.value)
    assert "manifest.csv" in message and all(part in message for part in expected), message


def test_check_dataset_lists_every_bad_image(tmp_path):
    root = _user_root(tmp_path, [_user_row(0), _user_row(1), _user_row(2)])
    (root / "img1.png").write_bytes(b"not a png")
    (root / "img2.png").unlink()
    with pytest.raises(ManifestError) as error:
        AlloyMicrographDataModule.check_dataset(root, progress=False)
    assert "img1.png" in str(error.value) and "img2.png" in str(error.value)


def test_leave_alloy_out_folds(dataset, tmp_path):
    root, _ = dataset
    index = AlloyMicrographDataModule.index_dataset(root)
    assert set(index["groups"]) == set(ALLOYS)
    manifest = make_fold_manifest(index["items"], groups=index["groups"], strata=None, n_folds=3, val_fraction=0.25,
                                  seed=0, group_column="alloy", stratify_column=None)
    path = tmp_path / "folds.json"
    write_fold_manifest(path, manifest)
    seen_test = set()
    for fold in range(3):
        module = AlloyMicrographDataModule(path, fold, data_root=root, batch_size=8)
        module.setup()
        alloys = {p: set(module.datasets[p].alloys) for p in ("train", "val", "test")}
        assert not (alloys["train"] & alloys["val"] or alloys["train"] & alloys["test"] or alloys["val"] & alloys["test"])
        seen_test |= alloys["test"]
        train_conditions = set(module.tables["train"]["label"])
        assert module.num_labels == len(train_conditions) == len(module.label_names)
        test = module.datasets["test"]
        in_train = module.tables["test"]["label"].isin(train_conditions).to_numpy()
        assert (test.labels.numpy()[~in_train] == -1).all() and (~in_train).all()  # unseen alloys: all -1
        assert (module.datasets["train"].labels >= 0).all()
        item = test[0]
        assert item["image"].shape == (1, 128, 128) and item["image"].dtype == torch.float32
        assert -1 <= item["image"].min() and item["image"].max() <= 1
        assert item["conditions"].shape == (len(CONDITION_COLUMNS),) and item["conditions"].dtype == torch.float32
        row = module.tables["test"].iloc[0]
        assert item["item_id"] == row["image_path"] and item["alloy"] == row["alloy"]
        assert item["conditions"].tolist() == pytest.approx([float(row[c]) for c in CONDITION_COLUMNS])
        assert "si_area_fraction_true" in module.tables["test"].columns
        assert module.image_kind == "grey" and module.periodic is False
        batch = next(iter(module.train_dataloader()))
        assert batch["image"].shape[1:] == (1, 128, 128) and batch["conditions"].shape[1] == 8
    assert seen_test == set(ALLOYS)
