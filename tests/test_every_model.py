"""Every model of every task YAML builds on its task's DataModule and takes one step, on the YAML's own smoke-test
profile (``smoke_test: true``): a new model or task is tested by adding it to a YAML, without a test of its own.

As the harness does for a run (``execute_run``): the fold's DataModule and the model from the resolved config,
the training-data hooks, then one training step and one validation batch (which must log the model's
``monitor``), the baseline's ``fit_baseline`` for a model no Trainer fits, or one test batch for a reference that
needs neither. Data the task YAML cannot generate (real datasets) comes from its usual place; where it is absent
the YAML's cases are skipped with the reason, except UHCSDB, which runs on stand-in micrographs.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import lightning as L
import pytest

from matcv.datamodules.core.config import TaskConfig, available_tasks, import_object, run_seed

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore::UserWarning"),  # tiny data: few groups per stratum, 1-batch epochs
              pytest.mark.filterwarnings("ignore::RuntimeWarning")]


def uhcsdb_stand_in(tmp_path: Path) -> Path | None:
    """The UHCSDB micrographs are not distributed: stand-ins for real metadata rows (tests/test_uhcsdb.py), unless
    $MATCV_UHCSDB_ROOT points at a release."""
    if os.environ.get("MATCV_UHCSDB_ROOT"):
        return None
    from tests.test_uhcsdb import ALL_ROWS, REAL_CSV, write_release

    if not REAL_CSV.is_file():
        pytest.skip(f"the UHCSDB micrographs are not distributed and the metadata for stand-ins ({REAL_CSV}) is absent")
    root = tmp_path / "uhcsdb"
    if not root.exists():
        write_release(root, ALL_ROWS)
    return root


# YAML -> its data root for the smoke test (default: the DataModule's own, generated or found where it looks)
STAND_INS = {"microstructure-uhcsdb": uhcsdb_stand_in}


def smoke_cases() -> list:
    cases = []
    for name in available_tasks():
        config = TaskConfig.load(name)
        for profile in config.smoke_profiles:
            cases += [pytest.param(name, profile, model, id=f"{name}/{profile}/{model}")
                      for model in config.model_names(profile)]
    return cases


@pytest.mark.parametrize("name", available_tasks())
def test_smoke_profiles_cover_every_model(name):
    config = TaskConfig.load(name)
    assert config.smoke_profiles, f"{config.source} has no profile with `smoke_test: true`"
    covered = {model for profile in config.smoke_profiles for model in config.model_names(profile)}
    assert covered == set(config.raw["models"]), f"not in a smoke-test profile: {set(config.raw['models']) - covered}"


@pytest.fixture(scope="module")
def benchmarks(tmp_path_factory):
    """(YAML, profile) -> its prepared benchmark (data + fold manifest), made once for all its models."""
    from matcv.benchmarks.harness.prepare import prepare_benchmark

    tmp = tmp_path_factory.mktemp("every-model")
    prepared: dict = {}
    # A cache of its own: the stand-in micrographs share their metadata (and so their rescale cache's name)
    # with tests/test_uhcsdb.py's, which counts the files in that cache.
    patch = pytest.MonkeyPatch()
    patch.setenv("MATCV_CACHE_DIR", str(tmp / "cache"))

    def prepare(name: str, profile: str):
        if (name, profile) not in prepared:
            config = TaskConfig.load(name)
            try:
                data_root = STAND_INS[name](tmp) if name in STAND_INS else None
                prepared[name, profile] = prepare_benchmark(config, profile, data_root, tmp / "runs", progress=False)
            except FileNotFoundError as error:  # real data that is not on this machine
                prepared[name, profile] = f"{name}.yaml: its data is absent here ({error})"
        if isinstance(prepared[name, profile], str):
            pytest.skip(prepared[name, profile])
        return prepared[name, profile]

    yield prepare
    patch.undo()


@pytest.mark.parametrize(("name", "profile", "model_name"), smoke_cases())
def test_model_builds_and_takes_a_step(benchmarks, name, profile, model_name, tmp_path):
    bench = benchmarks(name, profile)
    config = bench.config.resolve(profile, model_name)
    seed = run_seed(config["seed"], 0)
    L.seed_everything(seed, workers=True, verbose=False)
    datamodule = import_object(config["datamodule"]["class"])(
        fold_manifest_path=str(bench.fold_manifest_path), fold=0, data_root=str(bench.data_root), seed=seed,
        **config["datamodule"]["args"])
    model = import_object(config["model"]["class"])(**config["model"]["args"])
    datamodule.setup("fit")
    if hasattr(model, "set_input_normalization"):
        train = datamodule.datasets["train"]
        model.set_input_normalization(train.mean, train.std, datamodule.image_size)
    if hasattr(model, "prepare_from_training_data"):
        model.prepare_from_training_data(datamodule)
    common = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, default_root_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if getattr(model, "requires_training", True):
            trainer = L.Trainer(max_steps=1, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0,
                                **common)
            trainer.fit(model, datamodule=datamodule)
            assert trainer.global_step >= 1, "no optimiser step was taken"
            assert model.monitor in trainer.callback_metrics, \
                f"validation did not log the checkpoint monitor {model.monitor!r}: {sorted(trainer.callback_metrics)}"
        elif hasattr(model, "fit_baseline"):
            model.fit_baseline(datamodule)
        else:  # a reference that is neither trained nor fitted: its test step is all it has
            L.Trainer(limit_test_batches=1, **common).test(model, datamodule=datamodule, verbose=False)
            assert model.test_results, "the test step scored no item"
