"""3-D localization data: Gaussian microstructures, the generated dataset, the RLN loader, the DataModule.

Solver-dependent tests import ``matcv.datamodules.synthetic.elastic_fft`` lazily and skip (saying why) where it is missing.
Everything runs on 9^3-11^3 volumes so the file takes seconds.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from matcv.datamodules.folds import (
    FoldManifestError,
    GroupLeakError,
    make_fold_manifest,
    write_fold_manifest,
)
from matcv.datamodules.localization import N_X1_SYMMETRIES, LocalizationDataModule, apply_x1_symmetry
from matcv.datamodules.manifest import ManifestError
from matcv.datamodules.synthetic.gaussian_fields import (
    gaussian_microstructure,
    periodic_gaussian_filter,
)
from matcv.datamodules.synthetic.localization import (
    DEFAULT_DISCRETIZATION,
    MANIFEST_COLUMNS,
    LocalizationGeneratorConfig,
    generate_localization_dataset,
    plan_volumes,
    symmetry_class,
)
from tests.conftest import SHARED_DATA

SHARED_LOCALIZATION = SHARED_DATA / "mks-localization"
HAVE_SOLVER = importlib.util.find_spec("matcv.datamodules.synthetic.elastic_fft") is not None
NO_SOLVER = "datamodules/synthetic/elastic_fft.py (the FFT solver) is not there yet"
needs_solver = pytest.mark.skipif(not HAVE_SOLVER, reason=NO_SOLVER)
needs_shared = pytest.mark.skipif(not (SHARED_LOCALIZATION / "21_c10_sample.npy").is_file(),
                                  reason=f"shared RLN sample not found in {SHARED_LOCALIZATION}")

# (1, 3, 5) and (1, 5, 3) are mirror images (x2 <-> x3): one symmetry class.
TINY = {"size": 9, "sigma_triples": ((1, 3, 5), (1, 5, 3), (5, 1, 3), (7, 7, 7)), "samples_per_triple": 2}


def save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    path.write_bytes(buffer.getvalue())


def neighbour_correlation(phases: np.ndarray, axis: int, lag: int = 1) -> float:
    """Pearson correlation of each voxel with its periodic neighbour ``lag`` voxels along ``axis``."""
    x = phases.astype(np.float64)
    return float(np.corrcoef(x.ravel(), np.roll(x, -lag, axis=axis).ravel())[0, 1])


# --- microstructures ---------------------------------------------------------------------------------

@pytest.mark.parametrize("volume_fraction", [0.25, 0.4, 0.5, 0.75])
def test_gaussian_microstructure_hits_the_volume_fraction_exactly(volume_fraction):
    phases = gaussian_microstructure(21, (3, 7, 5), volume_fraction, np.random.default_rng(0))
    assert phases.shape == (21, 21, 21) and phases.dtype == np.uint8
    assert set(np.unique(phases)) == {0, 1}
    assert int(phases.sum()) == round(volume_fraction * 21**3)


def test_gaussian_microstructure_is_deterministic_and_dimension_generic():
    a = gaussian_microstructure(15, (1, 5, 3), 0.3, np.random.default_rng([7, 1]))
    b = gaussian_microstructure(15, (1, 5, 3), 0.3, np.random.default_rng([7, 1]))
    c = gaussian_microstructure(15, (1, 5, 3), 0.3, np.random.default_rng([7, 2]))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    flat = gaussian_microstructure(32, (2, 4), 0.6, np.random.default_rng(0))
    assert flat.shape == (32, 32) and int(flat.sum()) == round(0.6 * 32 * 32)


def test_periodic_filter_is_a_periodic_convolution():
    # Filtering commutes with periodic shifts, and a sigma of 0 leaves an axis alone.
    field = np.random.default_rng(1).random((12, 10, 8))
    filtered = periodic_gaussian_filter(field, (2.0, 3.0, 1.0))
    shifted = periodic_gaussian_filter(np.roll(field, (5, -3, 2), axis=(0, 1, 2)), (2.0, 3.0, 1.0))
    assert np.allclose(np.roll(filtered, (5, -3, 2), axis=(0, 1, 2)), shifted)
    assert np.allclose(periodic_gaussian_filter(field, (0, 0, 0)), field)
    assert filtered.mean() == pytest.approx(field.mean())  # the DC gain is 1


def test_microstructures_are_smooth_across_the_periodic_boundary():
    # Neighbouring slices across the wrap (last, first) are as alike as neighbouring interior slices; a
    # non-periodic filter would leave an uncorrelated seam there.
    n, wrap, interior = 21, [], []
    for seed in range(6):
        phases = gaussian_microstructure(n, (5, 5, 5), 0.5, np.random.default_rng(seed)).astype(np.float64)
        for axis in range(3):
            slices = np.moveaxis(phases, axis, 0)
            wrap.append(np.corrcoef(slices[-1].ravel(), slices[0].ravel())[0, 1])
            interior.append(np.mean([np.corrcoef(slices[i].ravel(), slices[i + 1].ravel())[0, 1]
                                     for i in range(n - 1)]))
    assert np.mean(interior) > 0.7
    assert np.mean(wrap) == pytest.approx(np.mean(interior), abs=0.05)


def test_anisotropy_follows_the_sigmas():
    # sigma = (1, 7, 3): grains are longest along axis 1, shortest along axis 0.
    corr = np.mean([[neighbour_correlation(gaussian_microstructure(21, (1, 7, 3), 0.5, np.random.default_rng(s)),
                                           axis, lag=2) for axis in range(3)] for s in range(4)], axis=0)
    assert corr[1] > corr[2] > corr[0]
    assert corr[1] > 0.6 and corr[0] < 0.3


# --- generator settings (no solver needed) -----------------------------------------------------------

def test_config_defaults_are_the_64_ordered_triples_and_hash_stably():
    config = LocalizationGeneratorConfig()
    assert len(config.triples()) == 64 and len(plan_volumes(config)) == 128
    # YAML-style ints and lists hash like the defaults' floats and tuples.
    same = LocalizationGeneratorConfig(contrast=10, sigma_values=[1, 3, 5, 7], volume_fraction_range=[0.25, 0.75])
    assert same.fingerprint() == config.fingerprint()
    assert LocalizationGeneratorConfig(contrast=50).fingerprint() != config.fingerprint()
    # The solver scheme names the dataset only when it is not the original basic scheme (older names stay).
    assert "solver_scheme" not in config.to_dict()
    assert LocalizationGeneratorConfig(solver_scheme="cg").fingerprint() != config.fingerprint()
    json.dumps(config.to_dict())  # JSON-able
    subset = LocalizationGeneratorConfig(**TINY)
    assert [v.item_id for v in plan_volumes(subset)][:3] == ["sigma_1_3_5/0", "sigma_1_3_5/1", "sigma_1_5_3/0"]
    assert symmetry_class((3, 7, 5)) == symmetry_class((3, 5, 7)) == "sigma_3_5_7" != symmetry_class((7, 3, 5))


@pytest.mark.parametrize("bad", [{"size": 20}, {"volume_fraction_range": (0.8, 0.2)},
                                 {"sigma_triples": ((1, 3),)}, {"sigma_triples": ((1, 3, 5), (1, 3, 5))},
                                 {"solver_scheme": "jacobi"}])
def test_config_rejects_bad_settings(bad):
    with pytest.raises(ValueError):
        LocalizationGeneratorConfig(**bad)


# --- generated dataset (needs the solver) ------------------------------------------------------------

@pytest.fixture(scope="module")
def generated() -> Path:
    if not HAVE_SOLVER:
        pytest.skip(NO_SOLVER)
    return generate_localization_dataset(LocalizationGeneratorConfig(**TINY), progress=False)


@needs_solver
def test_generated_dataset_layout_and_physics(generated):
    with open(generated / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == MANIFEST_COLUMNS and len(rows) == 8
    micro = np.load(generated / "microstructures.npy", allow_pickle=False)
    strain = np.load(generated / "strains.npy", allow_pickle=False)
    assert micro.shape == strain.shape == (8, 9, 9, 9)
    assert micro.dtype == np.uint8 and strain.dtype == np.float32
    assert rows[2]["group"] == "sigma_1_5_3" and rows[2]["symmetry_class"] == "sigma_1_3_5"
    for row in rows:
        k = int(row["index"])
        assert float(row["volume_fraction"]) == pytest.approx(micro[k].mean(), abs=1e-6)
        assert 0.25 <= micro[k].mean() <= 0.75 and int(row["solver_iterations"]) > 1
        assert float(row["solver_residual"]) < 1e-6
    # eps_hat(0) = E: the mean of eps_11 / E_11 is 1 (to float32 round-off).
    assert np.abs(strain.astype(np.float64).mean(axis=(1, 2, 3)) - 1.0).max() < 1e-6
    # Contrast 10: the stiff phase strains less on average than the soft one.
    assert strain[micro == 1].mean() < strain[micro == 0].mean()
    settings = json.loads((generated / "generator.json").read_text())
    assert settings["size"] == 9 and settings["discretization"] == DEFAULT_DISCRETIZATION
    # The labels are the finite-element ones of the default discretisation, not the FFT solver's.
    from matcv.datamodules.synthetic.elastic_fft import local_strain_11

    fe, _ = local_strain_11(micro[0], 10.0, discretization=DEFAULT_DISCRETIZATION)
    fft, _ = local_strain_11(micro[0], 10.0)
    assert np.abs(strain[0] - fe).max() < 1e-6 < np.abs(strain[0] - fft).max()


def test_dataset_name_says_which_discretisation_made_the_labels(tmp_path):
    def folder(name: str, settings) -> Path:
        root = tmp_path / "localization" / name
        root.mkdir(parents=True)
        if settings is not None:
            (root / "generator.json").write_text(settings if isinstance(settings, str) else json.dumps(settings))
        return root

    # Datasets made before the setting (no "discretization" in their settings) keep their names.
    old = folder("3575afc408997967", {"generator_version": 1, "size": 21})
    assert LocalizationDataModule.dataset_name(old, generated=True) == "localization-3575afc408997967"
    new = folder("9a6931abd7dc7fdb", {"generator_version": 1, "discretization": "hex8-bbar-yang2019"})
    assert LocalizationDataModule.dataset_name(new, generated=True) == \
        "localization-9a6931abd7dc7fdb-fe-hex8-bbar-yang2019"
    periodic = folder("mine", {"discretization": "hex8-bbar"})
    assert LocalizationDataModule.dataset_name(periodic, generated=False) == "mine-fe-hex8-bbar"
    assert LocalizationDataModule.dataset_name(folder("rln-files", None), generated=False) == "rln-files"
    with pytest.raises(ValueError, match=r"broken.generator\.json: unreadable generator settings"):
        LocalizationDataModule.dataset_name(folder("broken", "{not json"), generated=False)


@needs_solver
def test_generation_is_cached_and_deterministic(generated, tmp_path, monkeypatch):
    config = LocalizationGeneratorConfig(**TINY)
    stamp = (generated / "strains.npy").stat().st_mtime_ns

    def no_solving(*_args, **_kwargs):
        raise AssertionError("the cached dataset was regenerated")

    monkeypatch.setattr("matcv.datamodules.synthetic.elastic_fft.local_strain_11", no_solving)
    assert generate_localization_dataset(config, progress=False) == generated
    # The harness's hook with YAML-style settings (lists) finds the same cached folder.
    yaml_settings = {**TINY, "sigma_triples": [list(t) for t in TINY["sigma_triples"]]}
    assert LocalizationDataModule.prepare_dataset(None, yaml_settings, progress=False) == generated
    assert (generated / "strains.npy").stat().st_mtime_ns == stamp
    monkeypatch.undo()
    # Other settings: another folder; the same settings elsewhere: the same bytes.
    fewer = LocalizationGeneratorConfig(**{**TINY, "sigma_triples": TINY["sigma_triples"][:2]})
    other = generate_localization_dataset(fewer, progress=False)
    assert other != generated and other.parent == generated.parent
    # A subset of triples draws exactly the same volumes.
    assert np.array_equal(np.load(other / "microstructures.npy"), np.load(generated / "microstructures.npy")[:4])
    again = generate_localization_dataset(config, tmp_path / "again", progress=False)
    for name in ("microstructures.npy", "strains.npy", "manifest.csv"):
        assert (again / name).read_bytes() == (generated / name).read_bytes()
    with pytest.raises(FileExistsError, match="other settings"):
        generate_localization_dataset(fewer, tmp_path / "again", progress=False)


@needs_solver
def test_generation_names_the_volumes_that_did_not_converge(tmp_path):
    config = LocalizationGeneratorConfig(**{**TINY, "solver_max_iterations": 3})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the solver's own warning
        with pytest.raises(RuntimeError, match=r"sigma_1_3_5/0: not converged after 3 iterations"):
            generate_localization_dataset(config, tmp_path / "fails", progress=False)
    assert not (tmp_path / "fails" / "manifest.csv").exists()


@needs_solver
@pytest.mark.parametrize("discretization", ["fft", DEFAULT_DISCRETIZATION])
def test_x1_symmetries_are_exact_for_eps11_and_others_are_not(discretization):
    # The published FE ties are not periodic, but they are symmetric under reflections of the cell onto itself
    # and under the x2/x3 swap, so the 16 augmentations stay exact for the default labels too.
    from matcv.datamodules.synthetic.elastic_fft import local_strain_11

    phases = gaussian_microstructure(9, (1, 3, 2), 0.4, np.random.default_rng(3))
    codes = [5, 8, 15]  # reflect x1 and x3; swap x2/x3; all of it
    moved = np.stack([phases] + [apply_x1_symmetry(phases, code) for code in codes]
                     + [np.swapaxes(phases, 0, 1)])  # the last one moves x1: not a symmetry of eps_11
    fields, _ = local_strain_11(moved, 10.0, tol=1e-10, discretization=discretization)
    for k, code in enumerate(codes, start=1):
        assert np.abs(fields[k] - apply_x1_symmetry(fields[0], code)).max() < 1e-7
    assert np.abs(fields[-1] - np.swapaxes(fields[0], 0, 1)).max() > 0.05


@needs_solver
def test_datamodule_end_to_end_on_generated_data(generated, tmp_path):
    index = LocalizationDataModule.check_dataset(generated, progress=False)
    assert index["files"] == ["microstructures.npy", "strains.npy"] and index["strata"] is None
    assert len(set(index["groups"])) == 4 and len(index["items"]) == 8
    manifest = make_fold_manifest(index["items"], index["groups"], None, n_folds=2, val_fraction=0.49,
                                  group_column="group", stratify_column=None)
    path = tmp_path / "folds.json"
    write_fold_manifest(path, manifest)
    dm = LocalizationDataModule(path, fold=0, data_root=str(generated), batch_size=2, seed=1, contrast=10)
    dm.setup("fit")
    triples = {p: {i.split("/")[0] for i in dm.datasets[p].item_ids} for p in ("train", "val", "test")}
    assert not (triples["train"] & triples["val"] or triples["train"] & triples["test"]
                or triples["val"] & triples["test"])
    assert sum(len(dm.datasets[p]) for p in triples) == 8 and dm.volume_size == 9
    train = dm.datasets["train"]
    assert train.microstructures.dtype == np.uint8 and train.strains.dtype == np.float32
    assert train.microstructures.shape[1:] == (9, 9, 9)
    batch = next(iter(dm.train_dataloader()))
    assert batch["microstructure"].shape == batch["strain"].shape == (2, 1, 9, 9, 9)
    assert batch["microstructure"].dtype == batch["strain"].dtype == torch.float32
    assert len(batch["item_id"]) == 2 and len(dm.datasets["test"]) == 4  # 1 triple train, 1 val, 2 test
    first = [next(iter(dm.train_dataloader()))["item_id"] for _ in range(2)]
    assert first[0] == first[1]  # the shuffle is seeded
    test_ids = [i for b in dm.test_dataloader() for i in b["item_id"]]
    assert test_ids == dm.datasets["test"].item_ids
    assert dm.normalization["strain_mean"] == pytest.approx(1.0, abs=1e-5)

    # Contrast 50 asked for, contrast 10 on disk: refused.
    with pytest.raises(ManifestError, match="contrast"):
        LocalizationDataModule(path, fold=0, data_root=str(generated), contrast=50).setup()
    # Symmetry classes as groups: (1, 3, 5) and (1, 5, 3) merge, and folds by ordered triple no longer match.
    by_class = LocalizationDataModule.index_dataset(generated, group_by="symmetry_class")
    assert sorted(set(by_class["groups"])) == ["sigma_1_3_5", "sigma_5_1_3", "sigma_7_7_7"]
    with pytest.raises(FoldManifestError, match="group"):
        LocalizationDataModule(path, fold=0, data_root=str(generated), group_by="symmetry_class").setup()
    # A fold manifest that puts one triple in two partitions is refused.
    leaky = json.loads(path.read_text())
    leaky["folds"][0]["train"].append(leaky["folds"][0]["test"][0])
    leaky["folds"][0]["test"] = leaky["folds"][0]["test"][1:]
    path.write_text(json.dumps(leaky))
    with pytest.raises(GroupLeakError):
        LocalizationDataModule(path, fold=0, data_root=str(generated)).setup()


@needs_solver
def test_training_augmentation_keeps_pairs_consistent(generated, tmp_path):
    index = LocalizationDataModule.index_dataset(generated)
    path = tmp_path / "folds.json"
    write_fold_manifest(path, make_fold_manifest(index["items"], index["groups"], None, n_folds=2,
                                                 val_fraction=0.49, group_column="group", stratify_column=None))
    dm = LocalizationDataModule(path, fold=0, data_root=str(generated), augment=True)
    dm.setup()
    train = dm.datasets["train"]
    torch.manual_seed(0)
    for k in range(len(train)):
        sample = train[k]
        micro = sample["microstructure"][0].numpy().astype(np.uint8)
        # The sample is one of the 16 images of the stored pair, the same one for both fields.
        codes = [c for c in range(N_X1_SYMMETRIES)
                 if np.array_equal(apply_x1_symmetry(train.microstructures[k], c), micro)
                 and np.array_equal(apply_x1_symmetry(train.strains[k], c), sample["strain"][0].numpy())]
        assert codes
    assert not dm.datasets["test"].augment


# --- RLN / Yang layout -------------------------------------------------------------------------------

@needs_shared
def test_rln_loader_on_the_shared_sample(tmp_path):
    with pytest.warns(UserWarning, match="its own group"):
        index = LocalizationDataModule.check_dataset(SHARED_LOCALIZATION, progress=False)
    assert index["files"] == ["21_c10_sample.npy", "21_c10_sample_strain.npy"]
    assert index["items"][:2] == ["21_c10_sample/0", "21_c10_sample/1"] and len(index["items"]) == 10
    assert index["groups"] == index["items"]
    manifest = make_fold_manifest(index["items"], index["groups"], None, n_folds=2, val_fraction=0.25,
                                  group_column="group", stratify_column=None)
    path = tmp_path / "folds.json"
    write_fold_manifest(path, manifest)
    dm = LocalizationDataModule(path, fold=1, data_root=SHARED_LOCALIZATION, batch_size=4)
    with pytest.warns(UserWarning, match="its own group"):
        dm.setup()
    assert dm.volume_size == 21
    batch = next(iter(dm.val_dataloader()))
    assert batch["microstructure"].shape[1:] == (1, 21, 21, 21) and batch["strain"].dtype == torch.float32
    assert abs(dm.normalization["strain_mean"] - 1.0) < 1e-3


def write_rln_pair(folder: Path, name: str = "11_c10_train", n: int = 3, size: int = 11,
                   micro: np.ndarray | None = None, strain: np.ndarray | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    save_npy(folder / f"{name}.npy", micro if micro is not None else rng.integers(0, 2, (n, size, size, size))
             .astype(np.uint8))
    save_npy(folder / f"{name}_strain.npy", strain if strain is not None else 1 + 0.1 * rng.standard_normal(
        (n, size, size, size)))


def check_raises(folder: Path, *fragments: str, contrast=None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(ManifestError) as error:
            LocalizationDataModule.check_dataset(folder, progress=False, contrast=contrast)
    for fragment in fragments:
        assert fragment in str(error.value), str(error.value)


def test_rln_loader_reports_bad_files_clearly(tmp_path):
    ok = tmp_path / "ok"
    write_rln_pair(ok)
    write_rln_pair(ok, "11_c50_train")
    check_raises(ok, "several contrasts", "contrast=...")
    with pytest.warns(UserWarning, match="its own group"):
        index = LocalizationDataModule.check_dataset(ok, progress=False, contrast=50)
    assert index["files"] == ["11_c50_train.npy", "11_c50_train_strain.npy"] and len(index["items"]) == 3

    shape = tmp_path / "shape"
    write_rln_pair(shape, micro=np.zeros((3, 11, 11, 9), np.uint8))
    check_raises(shape, "11_c10_train.npy", "shape (3, 11, 11, 9)", "3-D cubes")

    mismatch = tmp_path / "mismatch"
    write_rln_pair(mismatch, strain=np.ones((2, 11, 11, 11)))
    check_raises(mismatch, "11_c10_train_strain.npy", "differs")

    nan = tmp_path / "nan"
    strain = np.ones((3, 11, 11, 11))
    strain[1, 2, 3, 4] = np.nan
    write_rln_pair(nan, strain=strain)
    check_raises(nan, "11_c10_train_strain.npy", "NaN", "volume 1")

    phase = tmp_path / "phase"
    micro = np.zeros((3, 11, 11, 11), np.uint8)
    micro[2, 0, 0, 0] = 2
    write_rln_pair(phase, micro=micro)
    check_raises(phase, "11_c10_train.npy", "not phase 0 or 1", "[2]", "volume 2")

    partner = tmp_path / "partner"
    write_rln_pair(partner)
    (partner / "11_c10_train_strain.npy").unlink()
    check_raises(partner, "11_c10_train_strain.npy is missing")

    named = tmp_path / "named"
    write_rln_pair(named, "21_c10_train")  # 11^3 volumes in a file named 21
    check_raises(named, "the name says 21")

    check_raises(tmp_path / "empty-does-not-exist", "does not exist")


def test_generation_killed_half_way_resumes_from_the_solved_batches(tmp_path, monkeypatch):
    import matcv.datamodules.synthetic.localization as localization

    monkeypatch.setattr(localization, "SOLVE_BATCH", 3)
    config = LocalizationGeneratorConfig(**TINY, solver_scheme="cg")
    solve = localization._solve_batch
    calls = []

    def dies_on_the_third_batch(config, batch, device):
        calls.append(batch[0].index)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return solve(config, batch, device)

    monkeypatch.setattr(localization, "_solve_batch", dies_on_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        generate_localization_dataset(config, tmp_path / "resumed", progress=False)
    assert len(list((tmp_path / "resumed" / localization.PARTIAL_DIR).glob("*.npz"))) == 2
    assert not (tmp_path / "resumed" / "manifest.csv").exists()

    calls.clear()
    monkeypatch.setattr(localization, "_solve_batch", lambda *args: calls.append(args[1][0].index) or solve(*args))
    resumed = generate_localization_dataset(config, tmp_path / "resumed", progress=False)
    assert calls == [6]  # only the batch that was being solved (8 volumes: batches at 0, 3, 6)
    assert not (resumed / localization.PARTIAL_DIR).exists()
    straight = generate_localization_dataset(config, tmp_path / "straight", progress=False)
    for name in ("manifest.csv", "microstructures.npy", "strains.npy"):
        assert (resumed / name).read_bytes() == (straight / name).read_bytes(), name
