"""UHCSDB datamodule: metadata of the real release, and the curation on stand-in micrographs.

The micrographs themselves are not in the project (they are ~300 MB at NIST / the Materials Data Facility), so
the image tests write synthetic grey stand-ins of the real size (645x522 with a white 38-px banner) for a
subset of real metadata rows, in a folder laid out like the release. Everything that reads rows of the real
metadata skips when the shared test data (…/data/uhcsdb) is absent.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from matcv.datamodules.folds import (
    FORMAT,
    FoldManifestError,
    GroupLeakError,
    make_fold_manifest,
    read_fold_manifest,
    write_fold_manifest,
)
from matcv.datamodules.manifest import ManifestError
from matcv.datamodules.microstructure_images import to_uint8
from matcv.datamodules.uhcsdb import (
    METADATA_CSV,
    METADATA_SQLITE,
    ROOT_ENV,
    UHCSDBDataModule,
    cache_folder,
    cached_path,
    crop_count,
    parse_magnification,
    read_metadata,
    release_rows,
    resolve_data_root,
    select_micrographs,
)
from tests.conftest import SHARED_DATA

SHARED = SHARED_DATA / "uhcsdb"
REAL_CSV = SHARED / METADATA_CSV
# Expected noise: skipped rows are asserted in test_index_of_standin_release; tiny data makes the stratified
# fold split fall back to plain group folds.
pytestmark = [pytest.mark.filterwarnings("ignore:.*release micrograph.*skipped:UserWarning"),
              pytest.mark.filterwarnings("ignore:stratified group split:UserWarning"),
              pytest.mark.filterwarnings("ignore:The least populated class:UserWarning"),
              pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")]
needs_real_metadata = pytest.mark.skipif(
    not REAL_CSV.is_file(), reason=f"the real UHCSDB metadata {REAL_CSV} is absent (shared/data/uhcsdb not mounted)")

# Stand-in rows of the real metadata (magnifications 246X..4910X, so the rescaled images stay small):
SAMPLES = {  # sample_key -> micrograph ids of that specimen (several constituents in 22, 31, 47)
    11: [48, 422, 1167], 15: [814, 920], 22: [553, 1063], 39: [10, 248], 41: [20, 1177], 31: [576, 1441],
    24: [154, 90, 608],  # 608: network at 246X, enlarged ~8x: exercises max_side
    47: [502, 329],
}
ORPHANS = [12, 62, 245, 346, 431, 496, 768, 857]  # release rows without a sample_key
NO_MAGNIFICATION = [4, 33]  # release rows with an empty magnification: skipped
NOT_RELEASE = [66]  # primary_microconstituent "quality": not part of the public release
USABLE = sorted([i for ids in SAMPLES.values() for i in ids] + ORPHANS)
ALL_ROWS = sorted(USABLE + NO_MAGNIFICATION + NOT_RELEASE)
COLOUR = 48  # written as an RGB TIFF (grey replicated): read as grey
TARGET = 1964.0
BANNER_VALUE = 255  # the stand-in banner; bodies are 40..150 and INTER_CUBIC overshoot stays below ~200
BODY_SHAPE = (484, 645)
QUIET = {"progress": False}


def body_of(micrograph_id: int, shape: tuple[int, int] = BODY_SHAPE) -> np.ndarray:
    """The stand-in micrograph's microstructure (without banner): reproducible grey noise."""
    return np.random.default_rng(micrograph_id).integers(40, 151, size=shape, dtype=np.uint8)


def write_standin(path: Path, micrograph_id: int, shape: tuple[int, int] = BODY_SHAPE, colour: bool = False) -> None:
    image = np.concatenate([body_of(micrograph_id, shape), np.full((38, shape[1]), BANNER_VALUE, np.uint8)])
    if colour:
        image = np.repeat(image[..., None], 3, axis=-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG" if path.suffix == ".png" else "TIFF")


def real_rows(ids) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the real CSV for these micrograph ids, cells verbatim."""
    with open(REAL_CSV, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        column = header.index("micrograph_id")
        rows = [row for row in reader if int(row[column]) in set(ids)]
    assert len(rows) == len(set(ids))
    return header, rows


def write_release(root: Path, ids, images=True) -> dict[int, str]:
    """A release folder: micrographs/ (stand-ins unless ``images`` is False) and the filtered real CSV."""
    header, rows = real_rows(ids)
    (root / "micrographs").mkdir(parents=True, exist_ok=True)
    with open(root / METADATA_CSV, "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    paths = {int(row[header.index("micrograph_id")]): row[header.index("path")] for row in rows}
    if images:
        for micrograph_id, name in paths.items():
            write_standin(root / "micrographs" / name, micrograph_id, colour=micrograph_id == COLOUR)
    return paths


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    if not REAL_CSV.is_file():
        pytest.skip(f"the real UHCSDB metadata {REAL_CSV} is absent")
    root = tmp_path_factory.mktemp("uhcsdb-release")
    write_release(root, ALL_ROWS)
    return root


@pytest.fixture(scope="module")
def folds(release, tmp_path_factory) -> tuple[Path, dict]:
    index = UHCSDBDataModule.index_dataset(release)
    manifest = make_fold_manifest(index["items"], index["groups"], index["strata"], n_folds=3, val_fraction=0.2,
                                  seed=0, group_column="sample_key", stratify_column="primary_microconstituent")
    path = tmp_path_factory.mktemp("uhcsdb-folds") / "fold_manifest.json"
    write_fold_manifest(path, manifest)
    return path, index


def datamodule(release: Path, manifest: Path, fold: int = 0, **args) -> UHCSDBDataModule:
    args = {"target_magnification": TARGET, **QUIET, **args}
    dm = UHCSDBDataModule(manifest, fold, data_root=release, **args)
    dm.setup("fit")
    return dm


def micrograph_of(item_id: str) -> str:
    return item_id.split("#")[0]


# --- 1. metadata of the real release ------------------------------------------------------------------------

def test_parse_magnification():
    assert parse_magnification("4910x") == 4910.0
    assert parse_magnification("1964X") == 1964.0
    assert parse_magnification(" 98X ") == 98.0
    assert parse_magnification(1964) == 1964.0  # sqlite may hand over an integer
    assert parse_magnification("19,641x") == 19641.0
    for empty in ("", "  ", None, float("nan")):
        with pytest.raises(ValueError, match="no magnification"):
            parse_magnification(empty)
    for bad in ("high", "x1964", "0x", "-5x"):
        with pytest.raises(ValueError):
            parse_magnification(bad)


@needs_real_metadata
def test_real_metadata_release_groups_and_median():
    rows = read_metadata(REAL_CSV)
    assert len(rows) == 1732
    release = release_rows(rows)
    assert len(release) == 961
    assert sum(r.sample_key is None for r in release) == 158

    selection = select_micrographs(rows)
    assert selection.n_release == 961
    assert len(selection.micrographs) == 848  # release rows with a magnification
    assert len(selection.skipped) == 113
    assert all(reason == "no magnification in the metadata" for _, reason in selection.skipped)
    assert "micrographs/micrograph762.tif" in dict(selection.skipped)  # the Sandia report's example of a row without one (Tran, Rodgers & Wildey 2020)
    # The median magnification of the 848 usable release rows is 1473X (of spheroidite alone 1964X, the report's).
    assert selection.target_magnification == 1473.0
    spheroidite = select_micrographs(rows, ["spheroidite"])
    assert len(spheroidite.micrographs) == 346 and spheroidite.target_magnification == 1964.0

    by_id = {m.micrograph_id: m for m in selection.micrographs}
    assert by_id[1].magnification == 4910.0 and by_id[2].magnification == 1964.0  # "4910x", "1964X"
    assert by_id[1].group == "sample-42" and by_id[2].group == "sample-18"
    groups = [m.group for m in selection.micrographs]
    samples = {g for g in groups if g.startswith("sample-")}
    orphans = [m for m in selection.micrographs if m.group.startswith("orphan-")]
    assert len(samples) == 43 and len(orphans) == 136
    assert all(m.group == f"orphan-{m.micrograph_id}" for m in orphans)  # each orphan is its own group
    assert {by_id[i].group for i in SAMPLES[47]} == {"sample-47"}  # one specimen, two constituents: one group
    assert {by_id[i].constituent for i in SAMPLES[47]} == {"martensite", "pearlite"}

    capped = select_micrographs(rows, max_upscale=8)
    assert len(capped.micrographs) == 660
    assert sum("max_upscale=8" in reason for _, reason in capped.skipped) == 848 - 660


@needs_real_metadata
def test_constituents_must_be_release_classes():
    rows = read_metadata(REAL_CSV)
    with pytest.raises(ValueError, match="subset"):
        select_micrographs(rows, ["quality"])
    with pytest.raises(ValueError, match="subset"):
        UHCSDBDataModule("unused.json", 0, constituents=[])


# --- 2. curation on stand-in micrographs ----------------------------------------------------------------------

def test_index_of_standin_release(release):
    with pytest.warns(UserWarning, match="2 release micrograph"):
        index = UHCSDBDataModule.index_dataset(release)
    items = [f"micrographs/{name}" for name in _paths(release, USABLE)]
    assert index["items"] == items  # sorted by micrograph id; no-magnification and non-release rows left out
    assert index["files"] == sorted(items + [METADATA_CSV])
    groups = dict(zip(index["items"], index["groups"]))
    paths = _paths(release, USABLE, as_dict=True)
    for key, ids in SAMPLES.items():
        assert {groups[f"micrographs/{paths[i]}"] for i in ids} == {f"sample-{key}"}
    assert [groups[f"micrographs/{paths[i]}"] for i in ORPHANS] == [f"orphan-{i}" for i in ORPHANS]
    assert "network" in index["strata"] and "martensite" in index["strata"]
    assert UHCSDBDataModule.dataset_name(release, generated=False) == "uhcsdb"


def _paths(root: Path, ids, as_dict: bool = False):
    rows = {r.micrograph_id: r.path for r in read_metadata(root / METADATA_CSV)}
    return {i: rows[i] for i in ids} if as_dict else [rows[i] for i in sorted(ids)]


def test_banner_rescale_and_crop_counts(release, folds):
    manifest, _ = folds
    dm = datamodule(release, manifest)
    assert dm.target_magnification == TARGET
    selection = select_micrographs(read_metadata(release / METADATA_CSV), target_magnification=TARGET)
    folder = cache_folder(release / METADATA_CSV, TARGET, 38, 2048)
    by_id = {m.micrograph_id: m for m in selection.micrographs}
    counts: dict[str, int] = {}
    for partition in ("train", "val", "test"):
        for item_id in dm.datasets[partition].item_ids:
            counts[micrograph_of(item_id)] = counts.get(micrograph_of(item_id), 0) + 1
    assert len(counts) == len(USABLE)

    for micrograph in selection.micrographs:
        cached = np.asarray(Image.open(cached_path(folder, release, micrograph)))
        scale = TARGET / micrograph.magnification
        expected = (round(484 * scale), round(645 * scale))
        if max(expected) <= 2048:
            assert cached.shape == expected, micrograph.item_id
        else:  # centre cut to floor(2048 / scale) source pixels, so the result fits in 2048 px
            kept = math.floor(2048 / scale)
            assert cached.shape == (round(kept * scale), round(kept * scale)) and max(cached.shape) <= 2048
        assert BANNER_VALUE not in cached, micrograph.item_id  # the banner was cut before rescaling
        # seed eq. 2, with r = 1.5 and 48x64 patches
        assert counts[micrograph.item_id] == math.floor(cached.shape[0] * cached.shape[1] / (48 * 64) * 1.5)
    assert counts[by_id[48].item_id] == 152  # 645x484 at 1964X: floor(152.4)

    # Exact pixels: scale 1 keeps the body untouched (banner cut at exactly 38 rows; micrograph 48 is an RGB
    # TIFF read as grey); 982X is enlarged 2x with INTER_CUBIC, 4910X shrunk with INTER_AREA; 246X is cut
    # to its centre first.
    def cached_of(i):
        return np.asarray(Image.open(cached_path(folder, release, by_id[i])))

    np.testing.assert_array_equal(cached_of(48), body_of(48))
    np.testing.assert_array_equal(cached_of(1167), cv2.resize(body_of(1167), (1290, 968),
                                                              interpolation=cv2.INTER_CUBIC))
    np.testing.assert_array_equal(cached_of(422), cv2.resize(body_of(422), (258, 194), interpolation=cv2.INTER_AREA))
    scale = TARGET / 246
    kept = math.floor(2048 / scale)
    top, left = (484 - kept) // 2, (645 - kept) // 2
    centre = body_of(608)[top:top + kept, left:left + kept]
    side = round(kept * scale)
    np.testing.assert_array_equal(cached_of(608), cv2.resize(centre, (side, side), interpolation=cv2.INTER_CUBIC))

    for partition in ("train", "val", "test"):
        images = dm.datasets[partition].images
        assert images.dtype == torch.float32 and tuple(images.shape[1:]) == (1, 48, 64)
        assert images.min() >= -1.0 and images.max() <= 1.0
        assert (to_uint8(images) < BANNER_VALUE).all()  # no banner pixel in any crop
        ids = dm.datasets[partition].item_ids
        assert all(i.split("#")[1].isdigit() for i in ids) and len(set(ids)) == len(ids)


def test_crops_are_deterministic_per_seed_and_cached(release, folds):
    manifest, _ = folds
    first = datamodule(release, manifest, seed=3)
    folder = cache_folder(release / METADATA_CSV, TARGET, 38, 2048)
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.png")}
    assert len(stamps) == len(USABLE)
    again = datamodule(release, manifest, seed=3)
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.png")} == stamps  # read, not rescaled again
    other = datamodule(release, manifest, seed=4)
    for partition in ("train", "val", "test"):
        a, b, c = (dm.datasets[partition] for dm in (first, again, other))
        assert a.item_ids == b.item_ids == c.item_ids
        assert torch.equal(a.images, b.images)
        assert not torch.equal(a.images, c.images)
        assert torch.equal(a.labels, b.labels)


def test_max_crops_and_patch_size(release, folds):
    manifest, _ = folds
    dm = datamodule(release, manifest, patch_size=[64, 64], max_crops_per_micrograph=5)
    items = [i for p in ("train", "val", "test") for i in dm.datasets[p].item_ids]
    per_micrograph = {}
    for item in items:
        per_micrograph[micrograph_of(item)] = per_micrograph.get(micrograph_of(item), 0) + 1
    assert set(per_micrograph.values()) == {5} and len(per_micrograph) == len(USABLE)
    assert dm.image_shape == (64, 64)
    assert crop_count(194, 258, (64, 64), 1.5) == 18  # 4910X at 1964X: floor(194 * 258 / 4096 * 1.5)


def test_default_target_is_median_of_used_rows(release, folds):
    manifest, _ = folds
    dm = UHCSDBDataModule(manifest, 0, data_root=release, max_crops_per_micrograph=1, **QUIET)
    dm.setup()
    magnifications = [m.magnification for m in select_micrographs(read_metadata(release / METADATA_CSV)).micrographs]
    assert len(magnifications) == len(USABLE)
    assert dm.target_magnification == float(np.median(magnifications))


# --- 3. grouped folds -------------------------------------------------------------------------------------------

def test_grouped_folds_keep_specimens_together(release, folds):
    manifest_path, index = folds
    group = dict(zip(index["items"], index["groups"]))
    constituent = dict(zip(index["items"], index["strata"]))
    manifest, _ = read_fold_manifest(manifest_path)
    seen_test = set()
    for fold in range(3):
        dm = datamodule(release, manifest_path, fold=fold, max_crops_per_micrograph=4)
        groups = {p: {group[micrograph_of(i)] for i in dm.datasets[p].item_ids} for p in ("train", "val", "test")}
        assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"]
        assert not groups["val"] & groups["test"]
        micrographs = {p: {micrograph_of(i) for i in dm.datasets[p].item_ids} for p in ("train", "val", "test")}
        for partition in ("train", "val", "test"):
            assert micrographs[partition] == set(manifest["folds"][fold][partition])
        seen_test |= micrographs["test"]
        train_classes = sorted({constituent[m] for m in micrographs["train"]})
        assert dm.label_names == train_classes and dm.num_labels == len(train_classes)
        for partition in ("train", "val", "test"):
            data = dm.datasets[partition]
            expected = [train_classes.index(constituent[micrograph_of(i)]) if constituent[micrograph_of(i)]
                        in train_classes else -1 for i in data.item_ids]
            assert data.labels.tolist() == expected
    assert seen_test == set(index["items"])  # every micrograph is tested once over the folds


def test_hand_edited_leaky_manifest_is_refused(release, folds, tmp_path):
    manifest_path, index = folds
    manifest, _ = read_fold_manifest(manifest_path)
    group = dict(zip(index["items"], index["groups"]))
    train = manifest["folds"][0]["train"]
    shared = next(g for g in sorted(set(group.values())) if sum(group[i] == g for i in train) >= 2)
    moved = next(i for i in train if group[i] == shared)
    fold = manifest["folds"][0]
    fold["train"] = [i for i in train if i != moved]
    fold["test"] = sorted(fold["test"] + [moved])
    leaky = tmp_path / "leaky.json"
    write_fold_manifest(leaky, manifest)
    with pytest.raises(GroupLeakError, match=shared):
        datamodule(release, leaky)
    # Hiding the leak by renaming the moved micrograph's group: the manifest no longer matches the data.
    manifest["groups"][moved] = "sample-renamed"
    disguised = tmp_path / "disguised.json"
    write_fold_manifest(disguised, manifest)
    with pytest.raises(FoldManifestError, match="sample-renamed"):
        datamodule(release, disguised)
    with pytest.raises(FoldManifestError, match="fold 3 does not exist"):
        datamodule(release, manifest_path, fold=3)


# --- 4. CSV and sqlite metadata ---------------------------------------------------------------------------------

def write_sqlite(csv_path: Path, db_path: Path) -> None:
    """The release's database layout (bdecost/uhcsdb models.py): micrograph and sample tables, from CSV rows."""
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))

    def cell(value, kind=str):
        return None if value == "" else kind(float(value)) if kind is int else kind(value)

    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TABLE user (user_id INTEGER PRIMARY KEY, username VARCHAR(250))")
        db.execute("CREATE TABLE sample (sample_id INTEGER PRIMARY KEY, label VARCHAR(250), anneal_time FLOAT, "
                   "anneal_time_unit VARCHAR(16), anneal_temperature FLOAT, anneal_temp_unit VARCHAR(16), "
                   "cool_method VARCHAR(16))")
        db.execute("CREATE TABLE micrograph (micrograph_id INTEGER PRIMARY KEY, path VARCHAR, micron_bar FLOAT, "
                   "micron_bar_units VARCHAR(64), micron_bar_px INTEGER, magnification INTEGER, detector VARCHAR(16), "
                   "sample_key INTEGER, contributor_key INTEGER, primary_microconstituent VARCHAR(250))")
        samples = {}
        for row in rows:
            if row["sample_key"]:
                samples[cell(row["sample_key"], int)] = (
                    cell(row["label"]), cell(row["anneal_time"], float), cell(row["anneal_time_unit"]),
                    cell(row["anneal_temperature"], float), cell(row["anneal_temp_unit"]), cell(row["cool_method"]))
        db.executemany("INSERT INTO sample VALUES (?, ?, ?, ?, ?, ?, ?)", [(k, *v) for k, v in samples.items()])
        db.executemany("INSERT INTO micrograph VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            (cell(r["micrograph_id"], int), r["path"], cell(r["micron_bar"], float), cell(r["micron_bar_units"]),
             cell(r["micron_bar_px"], int), cell(r["magnification"]), cell(r["detector"]), cell(r["sample_key"], int),
             cell(r["contributor_key"], int), cell(r["primary_microconstituent"])) for r in rows])


@needs_real_metadata
def test_csv_and_sqlite_give_the_same_index(tmp_path):
    csv_root, db_root = tmp_path / "csv", tmp_path / "sqlite"
    for root in (csv_root, db_root):
        (root / "micrographs").mkdir(parents=True)
    shutil.copy(REAL_CSV, csv_root / METADATA_CSV)
    write_sqlite(REAL_CSV, db_root / METADATA_SQLITE)
    with sqlite3.connect(db_root / METADATA_SQLITE) as db:
        stored = db.execute("SELECT typeof(magnification) FROM micrograph WHERE micrograph_id = 1").fetchone()
    assert stored == ("text",)  # "4910x" in an INTEGER column, as in the release's database
    for constituents in (None, ["spheroidite", "network"]):
        with pytest.warns(UserWarning):
            from_csv = UHCSDBDataModule.index_dataset(csv_root, constituents=constituents)
        with pytest.warns(UserWarning):
            from_db = UHCSDBDataModule.index_dataset(db_root, constituents=constituents)
        assert len(from_csv["items"]) == (848 if constituents is None else 346 + 189)
        for key in ("items", "groups", "strata"):
            assert from_csv[key] == from_db[key]
        assert from_db["files"] == sorted(from_csv["items"] + [METADATA_SQLITE])
    assert read_metadata(csv_root / METADATA_CSV) == read_metadata(db_root / METADATA_SQLITE)
    # A label from the sample table (the annealing condition) is joined as the CSV export joined it.
    by_label = read_metadata(db_root / METADATA_SQLITE, label="label")
    assert by_label == read_metadata(csv_root / METADATA_CSV, label="label")
    assert {r.label for r in by_label if r.micrograph_id == 2} == {"AC1 800C 85H Q"}


def test_sqlite_without_the_micrograph_columns_is_refused(tmp_path):
    with sqlite3.connect(tmp_path / METADATA_SQLITE) as db:
        db.execute("CREATE TABLE micrograph (micrograph_id INTEGER, path TEXT)")
    with pytest.raises(ManifestError, match="no table has the columns"):
        read_metadata(tmp_path / METADATA_SQLITE)


# --- 5. bad files -----------------------------------------------------------------------------------------------

@needs_real_metadata
def test_missing_corrupt_and_too_small_images_are_listed_together(tmp_path):
    paths = write_release(tmp_path, [48, 920, 1063, 814], images=False)  # samples 11, 15, 22, 15
    write_standin(tmp_path / "micrographs" / paths[48], 48)
    (tmp_path / "micrographs" / paths[1063]).write_bytes(b"II*\x00 this is no TIFF")  # corrupt
    write_standin(tmp_path / "micrographs" / paths[814], 814, shape=(100, 150))  # 4910X -> 40x60 px at 1964X
    # micrograph 920 is missing
    index = UHCSDBDataModule.index_dataset(tmp_path)  # from the metadata alone: no file is opened
    assert len(index["items"]) == 4
    with pytest.raises(ManifestError) as error:
        UHCSDBDataModule.check_dataset(tmp_path, progress=False, target_magnification=TARGET, patch_size=[48, 64])
    message = str(error.value)
    assert "3 problem(s)" in message
    assert f"{paths[920]}: image file not found" in message
    assert f"{paths[1063]}: cannot read image" in message
    assert f"{paths[814]}: 60x40 px" in message and "smaller than the 64x48-px patch" in message
    assert paths[48] not in message

    items = index["items"]
    groups = dict(zip(items, index["groups"]))
    fold = {"train": [i for i in items if groups[i] in ("sample-11", "sample-15")],
            "val": [i for i in items if groups[i] == "sample-22"], "test": []}
    manifest = {"format": FORMAT, "n_folds": 1, "seed": None, "val_fraction": 0.25, "group_column": "sample_key",
                "stratify_column": None, "groups": groups, "folds": [fold]}
    write_fold_manifest(tmp_path / "folds.json", manifest)
    with pytest.raises(ManifestError) as error:
        datamodule(tmp_path, tmp_path / "folds.json")
    for name in (paths[920], paths[1063], paths[814]):
        assert name in str(error.value)


# --- 6. where the data is ---------------------------------------------------------------------------------------

def test_data_root_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv(ROOT_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=ROOT_ENV) as error:
        UHCSDBDataModule.prepare_dataset(None)
    assert "11256/940" in str(error.value) and "--data-root" in str(error.value)

    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_data_root(tmp_path / "nowhere")
    (tmp_path / "uhcsdb" / "micrographs").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="has no micrographs/ folder"):
        resolve_data_root(tmp_path / "uhcsdb")  # images but no metadata
    (tmp_path / "uhcsdb" / METADATA_SQLITE).write_bytes(b"")
    assert resolve_data_root(tmp_path) == tmp_path / "uhcsdb"  # the parent of the release folder works too
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "uhcsdb"))
    assert UHCSDBDataModule.prepare_dataset(None) == tmp_path / "uhcsdb"
    assert UHCSDBDataModule.prepare_dataset(str(tmp_path)) == tmp_path / "uhcsdb"  # data_root wins over the env
    assert os.environ[ROOT_ENV] == str(tmp_path / "uhcsdb")
