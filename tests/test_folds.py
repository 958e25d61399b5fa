"""Specimen-grouped fold manifests (datamodules/folds.py) and their checks in the corrosion DataModule."""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from matcv.datamodules.folds import (
    FORMAT,
    PARTITIONS,
    FoldManifestError,
    GroupLeakError,
    check_matches_data,
    check_no_group_leak,
    fold_manifest_bytes,
    make_fold_manifest,
    read_fold_manifest,
    write_fold_manifest,
)

N_GROUPS, PER_GROUP = 30, 3
ITEMS = [f"g{g:02d}/item{j}" for g in range(N_GROUPS) for j in range(PER_GROUP)]
GROUPS = [item.split("/")[0] for item in ITEMS]
RATINGS = [5 + int(group[1:]) % 5 for group in GROUPS]  # 6 groups per rating 5..9; a group has one rating
GROUP_OF = dict(zip(ITEMS, GROUPS))
RATING_OF = dict(zip(ITEMS, RATINGS))


@pytest.fixture(scope="module")
def manifest() -> dict:
    return make_fold_manifest(ITEMS, GROUPS, RATINGS, n_folds=3, val_fraction=0.2, seed=0)


def groups_in(items) -> set[str]:
    return {GROUP_OF[item] for item in items}


def first_test_item_and_group(manifest: dict, fold: int = 0) -> tuple[str, str]:
    item = manifest["folds"][fold]["test"][0]
    return item, manifest["groups"][item]


def leaky_copy(manifest: dict, fold: int = 0, into: str = "train") -> tuple[dict, str, str]:
    """Move one item of a test group into ``into``: the group is then in two partitions of the fold."""
    leaky = copy.deepcopy(manifest)
    item, group = first_test_item_and_group(leaky, fold)
    leaky["folds"][fold]["test"].remove(item)
    leaky["folds"][fold][into].append(item)
    return leaky, item, group


# --- structure ----------------------------------------------------------------------------------------

def test_manifest_header(manifest):
    assert manifest["format"] == FORMAT
    assert manifest["n_folds"] == 3 and len(manifest["folds"]) == 3
    assert manifest["seed"] == 0 and manifest["val_fraction"] == 0.2
    assert manifest["group_column"] == "panel_id" and manifest["stratify_column"] == "rating"
    assert manifest["groups"] == GROUP_OF
    for fold in manifest["folds"]:
        assert set(fold) == set(PARTITIONS)
        for partition in PARTITIONS:
            assert fold[partition] == sorted(fold[partition])


def test_partitions_are_disjoint_by_group(manifest):
    for k, fold in enumerate(manifest["folds"]):
        train, val, test = (groups_in(fold[p]) for p in PARTITIONS)
        assert train and val and test, k
        assert not train & val and not train & test and not val & test, k
        # Whole groups only: a group's every item sits in the group's partition.
        for partition in PARTITIONS:
            assert sum(GROUPS.count(g) for g in groups_in(fold[partition])) == len(fold[partition])


def test_every_item_once_per_fold_and_once_in_a_test_partition(manifest):
    for fold in manifest["folds"]:
        listed = fold["train"] + fold["val"] + fold["test"]
        assert sorted(listed) == sorted(ITEMS)  # exactly once: no item missing, none repeated
    tests = Counter(item for fold in manifest["folds"] for item in fold["test"])
    assert set(tests) == set(ITEMS)
    assert set(tests.values()) == {1}


def test_folds_are_stratified_and_sized(manifest):
    for fold in manifest["folds"]:
        # 30 groups / 3 folds = 10 test groups: two of each rating.
        assert len(groups_in(fold["test"])) == N_GROUPS // 3
        assert Counter(RATING_OF[i] for i in fold["test"]) == {r: 2 * PER_GROUP for r in range(5, 10)}
        # The validation part is about a fifth of the 20 remaining groups (one of 5 inner folds).
        assert 3 <= len(groups_in(fold["val"])) <= 6


def test_without_strata(manifest):
    plain = make_fold_manifest(ITEMS, GROUPS, strata=None, n_folds=3, seed=0)
    assert plain["stratify_column"] is None
    check_no_group_leak(plain)
    assert sorted(i for fold in plain["folds"] for i in fold["test"]) == sorted(ITEMS)


# --- determinism and hashes ---------------------------------------------------------------------------------

def test_same_seed_gives_identical_bytes_and_hash(tmp_path, manifest):
    again = make_fold_manifest(ITEMS, GROUPS, RATINGS, n_folds=3, val_fraction=0.2, seed=0)
    assert fold_manifest_bytes(again) == fold_manifest_bytes(manifest)
    sha_a = write_fold_manifest(tmp_path / "a.json", manifest)
    sha_b = write_fold_manifest(tmp_path / "sub" / "b.json", again)
    assert sha_a == sha_b
    assert (tmp_path / "a.json").read_bytes() == fold_manifest_bytes(manifest)
    assert sha_a == hashlib.sha256((tmp_path / "a.json").read_bytes()).hexdigest()
    loaded, sha = read_fold_manifest(tmp_path / "sub" / "b.json")
    assert loaded == manifest and sha == sha_a


def test_input_order_does_not_change_the_bytes(manifest):
    # The file lists items sorted, so only the assignment matters; shuffle the rows of the table.
    order = list(range(len(ITEMS)))[::-1]
    reordered = make_fold_manifest([ITEMS[i] for i in order], [GROUPS[i] for i in order],
                                   [RATINGS[i] for i in order], n_folds=3, seed=0)
    check_no_group_leak(reordered)
    assert reordered["groups"] == manifest["groups"]


def test_different_seed_gives_different_folds(tmp_path, manifest):
    other = make_fold_manifest(ITEMS, GROUPS, RATINGS, n_folds=3, val_fraction=0.2, seed=1)
    assert other["folds"] != manifest["folds"]  # not only the recorded seed differs
    assert [f["test"] for f in other["folds"]] != [f["test"] for f in manifest["folds"]]
    assert write_fold_manifest(tmp_path / "0.json", manifest) != write_fold_manifest(tmp_path / "1.json", other)


# --- leaks ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("fold", "into"), [(0, "train"), (1, "val"), (2, "train")])
def test_leaky_manifest_on_disk_is_refused(tmp_path, manifest, fold, into):
    leaky, item, group = leaky_copy(manifest, fold, into)
    path = tmp_path / "leaky.json"
    write_fold_manifest(path, leaky)
    with pytest.raises(GroupLeakError) as info:
        read_fold_manifest(path)
    message = str(info.value)
    assert repr(group) in message
    assert str(path) in message
    assert f"fold {fold}" in message
    assert into in message and "test" in message
    assert "panel_id" in message


def test_check_no_group_leak_in_memory(manifest):
    check_no_group_leak(manifest)  # the clean one passes
    leaky, _, group = leaky_copy(manifest)
    with pytest.raises(GroupLeakError, match=repr(group)):
        check_no_group_leak(leaky)


def test_same_item_in_two_partitions_is_a_leak(manifest):
    leaky = copy.deepcopy(manifest)
    item, group = first_test_item_and_group(leaky)
    leaky["folds"][0]["val"].append(item)  # listed twice, in val and in test
    with pytest.raises(GroupLeakError, match=repr(group)):
        check_no_group_leak(leaky)


def test_group_changed_in_the_file_to_join_another_partition(tmp_path, manifest):
    # Rewriting an item's group (instead of moving the item) is a leak as well.
    leaky = copy.deepcopy(manifest)
    test_item, _ = first_test_item_and_group(leaky)
    train_group = leaky["groups"][leaky["folds"][0]["train"][0]]
    leaky["groups"][test_item] = train_group
    write_fold_manifest(tmp_path / "f.json", leaky)
    with pytest.raises(GroupLeakError, match=repr(train_group)):
        read_fold_manifest(tmp_path / "f.json")


def test_item_without_group_is_refused(manifest):
    broken = copy.deepcopy(manifest)
    broken["folds"][1]["val"].append("stranger.png")
    with pytest.raises(FoldManifestError, match="fold 1 val lists 'stranger.png', which has no group"):
        check_no_group_leak(broken)


# --- does the file belong to the data? -----------------------------------------------------------------------

def test_matches_its_own_data(manifest):
    check_matches_data(manifest, GROUP_OF)


def test_data_item_missing_from_the_manifest(manifest):
    data = dict(GROUP_OF, **{"g99/new.png": "g99"})
    with pytest.raises(FoldManifestError) as info:
        check_matches_data(manifest, data, source="folds.json")
    message = str(info.value)
    assert message.startswith("folds.json does not belong to this data")
    assert "1 data item(s) not in it ['g99/new.png']" in message


def test_manifest_item_missing_from_the_data(manifest):
    data = dict(GROUP_OF)
    del data["g07/item1"]
    with pytest.raises(FoldManifestError, match=r"1 listed item\(s\) not in the data \['g07/item1'\]"):
        check_matches_data(manifest, data)


def test_group_changed_in_the_data(manifest):
    data = dict(GROUP_OF)
    data["g03/item2"] = "g04"
    with pytest.raises(FoldManifestError) as info:
        check_matches_data(manifest, data)
    message = str(info.value)
    assert "'g03/item2'" in message and "'g03'" in message and "'g04'" in message
    assert "1 item(s) differ" in message


def test_item_dropped_from_a_fold(manifest):
    broken = copy.deepcopy(manifest)
    broken["folds"][2]["train"].pop()
    with pytest.raises(FoldManifestError, match="fold 2 must put every item in exactly one partition"):
        check_matches_data(broken, GROUP_OF)


def test_item_listed_twice_in_one_partition(manifest):
    broken = copy.deepcopy(manifest)
    broken["folds"][0]["train"].append(broken["folds"][0]["train"][0])
    check_no_group_leak(broken)  # same partition twice is no leak ...
    with pytest.raises(FoldManifestError, match="fold 0 must put every item in exactly one partition"):
        check_matches_data(broken, GROUP_OF)  # ... but it is not a partition of the data


# --- bad requests and bad files ------------------------------------------------------------------------------

def test_too_few_groups_for_the_outer_folds():
    items = ["a1", "a2", "b1", "b2"]
    with pytest.raises(FoldManifestError, match="cannot make 3 grouped splits from only 2 groups"):
        make_fold_manifest(items, ["a", "a", "b", "b"], n_folds=3)


def test_too_few_groups_for_the_validation_split():
    # 4 groups make 3 test folds, but a training part of 2-3 groups cannot give 5 grouped inner folds.
    items = [f"{g}{j}" for g in "abcd" for j in range(2)]
    with pytest.raises(FoldManifestError, match="grouped splits from only [23] groups"):
        make_fold_manifest(items, [i[0] for i in items], n_folds=3, val_fraction=0.2)


def test_small_stratified_data_gives_folds_or_a_fold_manifest_error():
    items = [f"p{g}_{j}" for g in range(10) for j in range(2)]
    groups = [item.split("_")[0] for item in items]
    strata = [5 + int(g[1:]) % 5 for g in groups]
    # The inner split cannot be stratified at this size: it falls back to plain group splits, and says so.
    with pytest.warns(UserWarning, match="unstratified group splits"):
        manifest = make_fold_manifest(items, groups, strata, n_folds=3, val_fraction=0.2)
    check_no_group_leak(manifest)
    assert all(fold["val"] for fold in manifest["folds"])


def test_duplicate_items_and_bad_val_fraction():
    with pytest.raises(FoldManifestError, match="unique"):
        make_fold_manifest(ITEMS + ITEMS[:1], GROUPS + GROUPS[:1])
    for val_fraction in (0.0, 0.5, 0.7, -0.1):
        with pytest.raises(FoldManifestError, match="val_fraction"):
            make_fold_manifest(ITEMS, GROUPS, val_fraction=val_fraction)


def test_bad_fold_manifest_files(tmp_path, manifest):
    with pytest.raises(FoldManifestError, match="not found"):
        read_fold_manifest(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(FoldManifestError, match="not valid JSON"):
        read_fold_manifest(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps(dict(manifest, format="something/2")))
    with pytest.raises(FoldManifestError, match="expected format"):
        read_fold_manifest(tmp_path / "other.json")
    (tmp_path / "nogroups.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "groups"}))
    with pytest.raises(FoldManifestError, match="missing 'groups'"):
        read_fold_manifest(tmp_path / "nogroups.json")
    partial = copy.deepcopy(manifest)
    del partial["folds"][1]["val"]
    (tmp_path / "partial.json").write_text(json.dumps(partial))
    with pytest.raises(FoldManifestError, match="fold 1 must have exactly"):
        read_fold_manifest(tmp_path / "partial.json")


# --- CorrosionPanelsDataModule.setup checks the fold manifest ---------------------------------------------------

@pytest.fixture(scope="module")
def panels(tmp_path_factory) -> tuple[Path, dict]:
    """A tiny synthetic data root (10 panels x 2 photos, 64 px) and its fold manifest."""
    from matcv.datamodules.synthetic.panels import PanelGeneratorConfig, generate_panels

    root = generate_panels(PanelGeneratorConfig(n_panels=10, photos_per_panel=2, image_size=64, seed=2),
                           tmp_path_factory.mktemp("panels"), progress=False)
    table = pd.read_csv(root / "manifest.csv", dtype={"panel_id": str})
    # val_fraction 1/3 (3 inner folds): with the default 0.2, sklearn's StratifiedGroupKFold refuses 5 inner
    # folds when every rating has fewer than 5 photos in a training part (with 0.2 the inner split falls back to unstratified group splits).
    with warnings.catch_warnings():  # "least populated class has only 2 members": expected at this size
        warnings.simplefilter("ignore", UserWarning)
        folds = make_fold_manifest(table["image_path"], table["panel_id"], table["rating"], n_folds=3,
                                   val_fraction=0.34, seed=0)
    return root, folds


def datamodule(root: Path, path: Path, fold: int = 0):
    from matcv.datamodules.corrosion import CorrosionPanelsDataModule

    return CorrosionPanelsDataModule(fold_manifest_path=path, fold=fold, data_root=root, image_size=64,
                                     batch_size=4)


def test_datamodule_setup_with_a_clean_fold_manifest(tmp_path, panels):
    root, folds = panels
    path = tmp_path / "folds.json"
    write_fold_manifest(path, folds)
    dm = datamodule(root, path, fold=1)
    dm.setup("fit")
    sizes = {p: len(dm.datasets[p]) for p in PARTITIONS}
    assert sizes == {p: len(folds["folds"][1][p]) for p in PARTITIONS}
    assert sum(sizes.values()) == 20
    sample = dm.datasets["val"][0]
    assert tuple(sample["image"].shape) == (3, 64, 64) and tuple(sample["mask"].shape) == (1, 64, 64)
    assert sample["item_id"] in folds["folds"][1]["val"]


def test_datamodule_setup_refuses_a_leaky_fold_manifest(tmp_path, panels):
    root, folds = panels
    leaky = copy.deepcopy(folds)
    item = leaky["folds"][0]["test"][0]
    group = leaky["groups"][item]
    leaky["folds"][0]["test"].remove(item)
    leaky["folds"][0]["train"].append(item)
    path = tmp_path / "leaky.json"
    write_fold_manifest(path, leaky)
    dm = datamodule(root, path, fold=0)
    with pytest.raises(GroupLeakError) as info:
        dm.setup("fit")
    assert repr(group) in str(info.value) and group.startswith("panel-")
    assert dm.datasets == {}  # nothing was loaded


def test_datamodule_setup_refuses_a_fold_manifest_of_other_data(tmp_path, panels):
    root, folds = panels
    other = copy.deepcopy(folds)
    item = other["folds"][0]["test"][0]
    other["groups"][item.replace("photo", "shot")] = other["groups"].pop(item)
    for fold in other["folds"]:
        for partition in PARTITIONS:
            fold[partition] = [i.replace("photo", "shot") if i == item else i for i in fold[partition]]
    path = tmp_path / "other.json"
    write_fold_manifest(path, other)
    with pytest.raises(FoldManifestError, match="does not belong to this data"):
        datamodule(root, path).setup("fit")


def test_datamodule_refuses_a_fold_that_does_not_exist(tmp_path, panels):
    root, folds = panels
    path = tmp_path / "folds.json"
    write_fold_manifest(path, folds)
    with pytest.raises(ValueError, match="fold 3 does not exist"):
        datamodule(root, path, fold=3).setup("fit")
