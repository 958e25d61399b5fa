"""3-D localization through the harness, and MKS against the FFT solver in its linear limit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from matcv.datamodules.core.config import CONFIG_DIR
from matcv.benchmarks.cli import run_and_report
from matcv.datamodules.synthetic.elastic_fft import local_strain_11
from matcv.datamodules.folds import read_fold_manifest
from matcv.datamodules.synthetic.gaussian_fields import gaussian_microstructure
from matcv.datamodules.synthetic.localization import DEFAULT_DISCRETIZATION, LocalizationGeneratorConfig
from matcv.lightning_modules.localization_metrics import r2_all_voxels
from matcv.lightning_modules.mks import FirstOrderMKS


def test_mks_recovers_the_solver_in_the_linear_limit():
    """At contrast -> 1 the strain is (to first order in the contrast) linear in the microstructure:
    first-order MKS fitted on some solver fields predicts unseen ones almost exactly."""
    rng = np.random.default_rng(0)
    phases = np.stack([gaussian_microstructure(11, tuple(rng.choice([1, 2, 3], 3)), rng.uniform(0.3, 0.7), rng)
                       for _ in range(24)])
    strains, solution = local_strain_11(phases, contrast=1.01, tol=1e-10)
    assert bool(solution.converged.all())
    model = FirstOrderMKS().fit(phases[:16], strains[:16])
    predicted = model.predict(phases[16:])
    fluctuation = strains[16:] - 1.0  # the part there is to predict (the mean is exactly 1)
    assert np.abs(fluctuation).max() > 1e-4
    assert r2_all_voxels(predicted, strains[16:]) > 0.999
    # ... and clearly not at contrast 50, where the response is strongly non-linear.
    strains50, _ = local_strain_11(phases, contrast=50.0, tol=1e-5, max_iterations=3000)
    model50 = FirstOrderMKS().fit(phases[:16], strains50[:16])
    assert r2_all_voxels(model50.predict(phases[16:]), strains50[16:]) < 0.99


def test_localization_benchmark_ranks_models_by_mase_on_grouped_folds(tmp_path):
    config = yaml.safe_load((CONFIG_DIR / "localization.yaml").read_text())
    quick = config["profiles"]["quick"]
    quick.update(folds=2, val_fraction=0.34, trainer={"max_epochs": 1},  # 6 families: 3 train = 2 + 1 val
                 generator={"size": 11, "contrast": 10, "samples_per_triple": 2,
                            "sigma_triples": [[1, 1, 1], [3, 3, 3], [5, 5, 5], [7, 7, 7], [1, 3, 5], [3, 5, 7]]})
    quick["model_overrides"] = {"window-cnn": {"conv_channels": [4, 8], "hidden_units": [16, 8],
                                               "voxels_per_volume": 16},
                                "unet3d": {"base_channels": 4}}
    config["profiles"] = {"quick": quick}
    path = tmp_path / "localization.yaml"
    path.write_text(yaml.safe_dump(config))
    bench = run_and_report(path, output_dir=tmp_path / "runs", leaderboard_dir=tmp_path / "board", progress=False)
    records = bench.records.load()
    assert {r["model"] for r in records} == {"cpnet", "window-cnn", "unet3d", "mks"}
    assert all(r["status"] == "ok" for r in records), [r.get("traceback") for r in records]
    manifest, _ = read_fold_manifest(bench.fold_manifest_path)
    assert manifest["group_column"] == "symmetry_class"
    for record in records:
        assert set(record["metrics"]) == {"mase", "r2", "mae_phase0", "mae_phase1"}
        assert len(record["per_image"]) == len(manifest["folds"][record["fold"]]["test"])
    table = pd.read_csv(next(p for p in (tmp_path / "board").glob("*.csv") if "slices" not in p.name))
    assert list(table["mase_mean"]) == sorted(table["mase_mean"])  # an error: smallest first
    assert "mase_w_inc" in table.columns  # the per-volume comparison against MKS
    mks = next(r for r in records if r["model"] == "mks")
    assert mks["metrics"]["r2"] > 0.5  # the closed-form baseline is already decent at contrast 10
    assert "lower is better" in next((tmp_path / "board").glob("*.md")).read_text()


@pytest.mark.parametrize("name", ["quick", "quick-c50", "quick-fe", "paper", "paper-c50"])
def test_localization_profiles_name_their_contrast(name):
    profile = yaml.safe_load((CONFIG_DIR / "localization.yaml").read_text())["profiles"][name]
    assert profile["generator"]["contrast"] == (50 if name.endswith("c50") else 10)


def test_profiles_made_before_finite_elements_keep_their_data():
    """Every profile that existed before the finite-element labels pins the FFT solver, so its settings' hash (the
    dataset's name and cache folder) is the one its official fold manifest was made for; new profiles default to
    finite elements and say so in the dataset's name."""
    config = yaml.safe_load((CONFIG_DIR / "localization.yaml").read_text())
    official = Path(__file__).resolve().parents[1] / "leaderboard" / "official" / "localization"
    for name in config["official"]:
        settings = config["profiles"][name]["generator"]
        assert settings["discretization"] == "fft", name
        fingerprint = LocalizationGeneratorConfig(**settings).fingerprint()
        assert (official / f"localization-{fingerprint}" / name / "fold_manifest.json").is_file(), name
    # The smoke profile: the hash it had before the setting existed.
    assert LocalizationGeneratorConfig(**config["profiles"]["tiny"]["generator"]).fingerprint() == "855beaa90acb2428"
    fe = config["profiles"]["quick-fe"]
    assert fe["generator"]["discretization"] == DEFAULT_DISCRETIZATION and "quick-fe" in config["unpublished"]
    quick = {**config["profiles"]["quick"]["generator"], "discretization": DEFAULT_DISCRETIZATION}
    assert fe["generator"] == quick  # the same volumes as quick, only the labels differ
