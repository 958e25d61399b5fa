"""A user's own split (the manifest's ``split`` column) as a protocol of its own beside grouped CV: both run, the
published one in its own labelled folder; a split that puts one group in train and test runs with the leak
declared in its fold manifest and table title, while an undeclared leak is still refused; a split that cannot run
fails alone with a clear message.

Every folder is written by the tests into tmp_path (the 3-class folders of tests/test_user_dataset.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from matcv.benchmarks.cli import main, run_and_report
from matcv.benchmarks.user_data import adapted_config, adapted_task
from matcv.datamodules.folds import (
    PUBLISHED_SPLIT,
    FoldManifestError,
    GroupLeakError,
    load_fold,
    read_fold_manifest,
)
from matcv.datamodules.corrosion import CorrosionPanelsDataModule
from matcv.datamodules.user_segmentation import UserSegmentationDataModule
from tests.test_classification_task import photo_folder
from tests.test_user_dataset import make_folder

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.filterwarnings("ignore::UserWarning")]

UNET = {"class": "matcv.lightning_modules.segmentation.SmpSegmentationTask",
        "args": {"arch": "unet", "encoder_name": "resnet18", "lr": 3.0e-3,
                 "arch_kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}}}


def split_folder(root: Path, splits: dict[int, str]) -> Path:
    """make_folder's six groups S0..S5 (two images each) with a split column: ``splits`` maps group -> split; a
    value "train/test" puts the group's first image in train and its second in test."""
    make_folder(root)
    lines = (root / "manifest.csv").read_text().splitlines()
    out = [lines[0] + ",split"]
    for line in lines[1:]:
        group, image = int(line.split(",")[2][1:]), int(line.split(",")[0].split("_")[1][0])
        split = splits[group]
        out.append(f"{line},{split.split('/')[image] if '/' in split else split}")
    (root / "manifest.csv").write_text("\n".join(out) + "\n")
    return root


def tiny_task(tmp_path: Path) -> Path:
    task = {"task": "segmentation", "metrics": ["iou", "dice"], "group_column": "panel_id",
            "datamodule": {"class": "matcv.datamodules.corrosion.CorrosionPanelsDataModule", "args": {"target": "mask"}},
            "models": {"tiny-unet": UNET},
            "profiles": {"quick": {"folds": 2, "val_fraction": 0.4, "seed": 0,
                                   "datamodule": {"batch_size": 4}, "trainer": {"max_epochs": 1}}}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(task))
    return path


def bench(tmp_path: Path, root: Path):
    return run_and_report(adapted_task(tiny_task(tmp_path), root), "quick", data_root=root,
                          output_dir=tmp_path / "runs", leaderboard_dir=tmp_path / "board", accelerator="cpu",
                          progress=False, log_wandb=False, print_tables=False)


def test_grouped_cv_and_the_published_split_run_side_by_side_and_the_leak_is_declared(tmp_path, capsys):
    root = split_folder(tmp_path / "data", {0: "train", 1: "train", 2: "train/test", 3: "val", 4: "test", 5: "train"})
    # The data check passes, with the leak as a warning (never silently).
    assert main(["data", "--check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "warning: published split: group 'S2' is in train (row 6) and test (row 7)" in out
    # Grouped CV is the profile itself, unchanged: the published split is a companion profile of its own.
    raw = adapted_config(tiny_task(tmp_path), root)
    assert raw["profiles"]["quick"]["companion_profiles"] == ["quick-published-split"]
    assert raw["profiles"]["quick-published-split"]["folds"] == 1
    assert raw["profiles"]["quick-published-split"]["datamodule"]["split"] == "manifest"
    assert "split" not in raw["profiles"]["quick"]["datamodule"]

    done = bench(tmp_path, root)
    grouped, published = done.folder, done.companions[0].folder
    assert published == grouped.parent / "quick-published-split"
    grouped_manifest, _ = read_fold_manifest(grouped / "fold_manifest.json")
    assert "protocol" not in grouped_manifest and "leaky_groups" not in grouped_manifest  # grouped: bytes as before
    manifest, _ = read_fold_manifest(published / "fold_manifest.json")
    assert manifest["protocol"] == PUBLISHED_SPLIT and manifest["leaky_groups"] == {"S2": ["train", "test"]}
    for folder, runs in ((grouped, 2), (published, 1)):
        records = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]
        assert len(records) == runs and all(r["status"] == "ok" for r in records), [r.get("error") for r in records]
    table = (tmp_path / "board" / "segmentation__my-steel__quick-published-split.md").read_text().splitlines()
    assert table[0].endswith("profile quick-published-split (published split; leaky: group S2 in train and test)")
    assert table[2].startswith("Protocol: published split; leaky: group S2 in train and test, not grouped "
                               "cross-validation;")
    assert "published split" not in (tmp_path / "board" / "segmentation__my-steel__quick.md").read_text()

    # A hand-edited manifest whose leak is not declared (or declared otherwise) is still refused.
    groups = {item: group for item, group in manifest["groups"].items()}
    edited = dict(manifest, leaky_groups={})
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    with pytest.raises(GroupLeakError, match="group 'S2'"):
        load_fold(tmp_path / "edited.json", 0, groups)
    edited = dict(manifest, leaky_groups={"S2": ["train", "test"], "S4": ["val", "test"]})
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    with pytest.raises(FoldManifestError, match=r"\['S4'\]"):
        load_fold(tmp_path / "edited.json", 0, groups)
    edited = {k: v for k, v in manifest.items() if k != "protocol"}  # grouped folds never leak
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    with pytest.raises(FoldManifestError, match="not a 'published split' protocol"):
        load_fold(tmp_path / "edited.json", 0, groups)
    assert load_fold(published / "fold_manifest.json", 0, groups)["test"]  # the declared one loads


def test_a_split_without_test_rows_fails_alone_with_a_clear_message(tmp_path, capsys):
    root = split_folder(tmp_path / "data", {0: "train", 1: "train", 2: "val", 3: "train", 4: "val", 5: "train"})
    with pytest.raises(FoldManifestError, match="the published split has no test rows"):
        UserSegmentationDataModule.fixed_fold_manifest(root, split="manifest")
    done = bench(tmp_path, root)
    assert "the published split of" in capsys.readouterr().err and not done.companions
    records = (done.folder / "records.jsonl").read_text().splitlines()
    assert len(records) == 2 and all(json.loads(r)["status"] == "ok" for r in records)  # grouped CV ran
    assert not (done.folder.parent / "quick-published-split").exists()


def test_a_split_column_that_is_not_run_as_a_protocol_is_said(tmp_path, capsys):
    # A task whose DataModule has no split argument runs grouped CV only: the split column must not pass silently.
    (tmp_path / "manifest.csv").write_text("image_path,group,split\n")
    task = yaml.safe_load(tiny_task(tmp_path).read_text())
    task["datamodule"] = {"class": "matcv.datamodules.microstructure_images.ManifestImageDataModule",
                          "args": {}}
    (tmp_path / "no-split.yaml").write_text(yaml.safe_dump(task))
    assert adapted_config(tmp_path / "no-split.yaml", tmp_path) is None
    error = capsys.readouterr().err
    assert "split column" in error and "only grouped CV runs" in error


def labelled_split_folder(root: Path) -> Path:
    """The classification tests' 12 tinted specimens (S0..S11, 2 photos each) with a split column: S0-S5 train,
    S6-S7 val, S8-S11 test, except that S3's second photo is in test (a leak the publisher made)."""
    photo_folder(root)
    lines = (root / "manifest.csv").read_text().splitlines()
    out = [lines[0] + ",split"]
    for line in lines[1:]:
        group = int(line.rsplit(",", 1)[1][1:])
        split = "train" if group < 6 else "val" if group < 8 else "test"
        if line.startswith("photos/s3_1."):
            split = "test"
        out.append(f"{line},{split}")
    (root / "manifest.csv").write_text("\n".join(out) + "\n")
    return root


def test_a_label_folders_split_runs_beside_grouped_cv_with_its_leak_declared(tmp_path, capsys):
    root = labelled_split_folder(tmp_path / "photos")
    assert main(["data", "--task", "classification", "--check", str(root)]) == 0
    assert "warning: published split: group 'S3' is in train (row 8) and test (row 9)" in capsys.readouterr().out
    code = main(["bench", "--task", "classification", "--profile", "quick", "--data-root", str(root),
                 "--models", "colour-texture-logistic,majority", "--output", str(tmp_path / "runs"),
                 "--leaderboard-dir", str(tmp_path / "board"), "--accelerator", "cpu", "--no-progress",
                 "--no-wandb"])
    assert code == 0, capsys.readouterr().err
    grouped = tmp_path / "runs" / "classification" / "photos" / "quick"
    published = grouped.parent / "quick-published-split"
    manifest, _ = read_fold_manifest(published / "fold_manifest.json")
    assert manifest["protocol"] == PUBLISHED_SPLIT and manifest["leaky_groups"] == {"S3": ["train", "test"]}
    fold = manifest["folds"][0]
    assert len(fold["train"]) == 11 and len(fold["val"]) == 4 and len(fold["test"]) == 9
    assert "protocol" not in read_fold_manifest(grouped / "fold_manifest.json")[0]
    for folder, runs in ((grouped, 2 * 3), (published, 2 * 1)):
        records = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]
        assert len(records) == runs and all(r["status"] == "ok" for r in records), [r.get("error") for r in records]
    table = (tmp_path / "board" / "classification__photos__quick-published-split.md").read_text().splitlines()
    assert table[0].endswith("profile quick-published-split (published split; leaky: group S3 in train and test)")


def test_a_label_folders_bad_split_value_is_named_and_grouped_cv_still_runs(tmp_path, capsys):
    root = labelled_split_folder(tmp_path / "photos")
    text = (root / "manifest.csv").read_text().replace("photos/s0_0.png,pearlite,S0,train",
                                                       "photos/s0_0.png,pearlite,S0,holdout")
    (root / "manifest.csv").write_text(text)
    assert main(["data", "--task", "classification", "--check", str(root)]) == 2
    assert "row 2: split 'holdout' is not one of train, val, test" in capsys.readouterr().err
    raw = adapted_config("classification", root)
    assert "quick-published-split" not in raw["profiles"]  # left out, said; grouped CV is unchanged
    assert "the published split of" in capsys.readouterr().err
    # A split without test rows cannot be run as a protocol: the error says so.
    no_test = labelled_split_folder(tmp_path / "no-test")
    (no_test / "manifest.csv").write_text((no_test / "manifest.csv").read_text().replace(",test\n", ",val\n"))
    with pytest.raises(FoldManifestError, match="the published split has no test rows"):
        CorrosionPanelsDataModule.fixed_fold_manifest(no_test, split="manifest", target="rating",
                                                      labels=["ferrite", "martensite", "pearlite"])


def test_a_split_with_train_and_test_only_gets_a_grouped_validation_part_drawn_from_train(tmp_path, capsys):
    root = labelled_split_folder(tmp_path / "photos")
    (root / "manifest.csv").write_text((root / "manifest.csv").read_text().replace(",val\n", ",train\n"))
    manifest = CorrosionPanelsDataModule.fixed_fold_manifest(root, split="manifest", target="rating",
                                                             labels=["ferrite", "martensite", "pearlite"])
    fold, groups = manifest["folds"][0], manifest["groups"]
    drawn = manifest["validation_drawn"]
    assert fold["val"] and {groups[i] for i in fold["val"]} == set(drawn["groups"])
    # Drawn from the training groups that are not in test: S3 (train and test) stays in train, the test is as
    # published, and no drawn group keeps a photo in train.
    assert "S3" not in drawn["groups"] and len(fold["test"]) == 9
    assert not {groups[i] for i in fold["val"]} & {groups[i] for i in fold["train"] + fold["test"]}
    assert manifest["leaky_groups"] == {"S3": ["train", "test"]}
    code = main(["bench", "--task", "classification", "--profile", "quick", "--data-root", str(root),
                 "--models", "colour-texture-logistic", "--folds", "0", "--output", str(tmp_path / "runs"),
                 "--leaderboard-dir", str(tmp_path / "board"), "--accelerator", "cpu", "--no-progress",
                 "--no-wandb"])
    assert code == 0, capsys.readouterr().err
    records = (tmp_path / "runs" / "classification" / "photos" / "quick-published-split" / "records.jsonl")
    assert json.loads(records.read_text().splitlines()[0])["status"] == "ok"
    table = (tmp_path / "board" / "classification__photos__quick-published-split.md").read_text().splitlines()
    assert table[0].endswith("(published split; leaky: group S3 in train and test; validation drawn from its "
                             f"training groups ({len(drawn['groups'])} groups))")
    # Too few training groups outside test to draw one: said, naming what to do.
    few = labelled_split_folder(tmp_path / "few")
    text = "\n".join(line.replace(",train", ",test") if line.split(",")[2] in ("S0", "S1", "S2", "S4", "S5")
                     else line for line in (few / "manifest.csv").read_text().replace(",val\n", ",test\n")
                     .splitlines())
    (few / "manifest.csv").write_text(text + "\n")
    with pytest.raises(FoldManifestError, match="mark some training groups 'val'"):
        CorrosionPanelsDataModule.fixed_fold_manifest(few, split="manifest", target="rating",
                                                      labels=["ferrite", "martensite", "pearlite"])
