"""docs/extending.md's example task runs as written: its four files (YAML, DataModule, LightningModule,
scorer) are taken from the page itself, benchmarked on their `tiny` profile, and a fold's
``submission_arrays()`` is rescored by the scorer to the harness's metrics."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import lightning as L
import pandas as pd
import pytest

from matcv.benchmarks.cli import run_and_report
from matcv.benchmarks.submission.models import RecordsOwnArrays, adapter_from
from matcv.datamodules.core.config import TaskConfig, import_object

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
# The page's files live in the repository's folders; here they become one package of their own.
MODULES = {"datamodules/porosity.py": "porosity_example.data",
           "lightning_modules/porosity.py": "porosity_example.models",
           "leaderboard/scorers/porosity.py": "porosity_example.scorer"}


def example_files() -> dict[str, str]:
    """'File N — `path`' heading -> the code block under it."""
    section = DOC.read_text().split("## Adding a task", 1)[1]
    found = re.findall(r"File \d+ — `([^`]+)`.*?```(?:python|yaml)\n(.*?)```", section, re.S)
    return dict(found)


def rename(text: str) -> str:
    for path, module in MODULES.items():
        text = text.replace("matcv." + path.removesuffix(".py").replace("/", "."), module)
    return text


@pytest.fixture(scope="module")
def example_task(tmp_path_factory):
    files = example_files()
    assert set(files) == {"benchmarks/configs/porosity.yaml", *MODULES}, "the page's 'File N' headings changed"
    root = tmp_path_factory.mktemp("porosity")
    package = root / "porosity_example"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for path, module in MODULES.items():
        (package / f"{module.rpartition('.')[2]}.py").write_text(rename(files[path]))
    config = root / "porosity.yaml"
    config.write_text(rename(files["benchmarks/configs/porosity.yaml"]))
    sys.path.insert(0, str(root))
    try:
        yield config, root
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m.startswith("porosity_example")]:
            del sys.modules[name]


def test_the_example_task_is_four_files():
    assert len(example_files()) == 4


def test_the_example_task_benchmarks_from_the_page(example_task):
    config, root = example_task
    bench = run_and_report(config, "tiny", output_dir=root / "runs", leaderboard_dir=root / "board",
                           progress=False, log_wandb=False, print_tables=False)
    records = bench.records.load()
    assert {r["status"] for r in records} == {"ok"}, [r.get("error") for r in records]
    assert {r["model"] for r in records} == {"small-cnn", "mean-baseline"}
    table = pd.read_csv(next((root / "board").glob("porosity__*__tiny.csv")))
    assert set(table["model"]) == {"small-cnn", "mean-baseline"}


def test_a_fold_s_submission_arrays_rescore_to_the_harness_metrics(example_task):
    """The submission side of the example: its evaluation class records what the scorer reads."""
    config_path, root = example_task
    config = TaskConfig.load(config_path)
    adapter = adapter_from(config.submission)
    evaluation = import_object(adapter.evaluation_base)
    baseline_cls = import_object(config.raw["models"]["mean-baseline"]["class"])
    assert issubclass(baseline_cls, evaluation) and import_object(adapter.recording_mixin) is RecordsOwnArrays

    datamodule_cls = config.datamodule_class()
    data_root = datamodule_cls.prepare_dataset(None, config.profile("tiny")["generator"], progress=False)
    manifest = next((root / "runs").glob("porosity/*/tiny/fold_manifest.json"))
    datamodule = datamodule_cls(fold_manifest_path=str(manifest), fold=0, data_root=str(data_root), seed=0)
    datamodule.setup("fit")
    model = baseline_cls()
    model.fit_baseline(datamodule)
    L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).test(model, datamodule=datamodule, verbose=False)

    arrays = model.submission_arrays()
    item_ids = [str(i) for i in arrays.pop("item_ids")]
    scorer = import_object(config.submission.scorer + ".SCORERS")["porosity"]
    test = datamodule.datasets["test"]
    truth = import_object("matcv.leaderboard.scorers.FoldTruth")(
        list(test.item_ids), dict(zip(test.item_ids, test.tensors[1].tolist())), max_prediction_bytes=1 << 20)
    metrics, rows = scorer.score_fold(arrays, item_ids, truth)
    assert len(rows) == len(test.item_ids)
    assert metrics == pytest.approx(model.test_summary(), rel=1e-6)
