"""The NASA Ni-superalloy datamodule (datamodules/superalloy.py): colours -> classes, the published layout,
the three splits, errors that name the file, and deterministic training crops.

Most tests run on a tiny copy of the layout written into tmp_path; the ``real_root`` tests use the shared
copy of the benchmark and are skipped (with the reason) where it is absent.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from matcv.datamodules.folds import (
    FoldManifestError,
    check_matches_data,
    check_no_group_leak,
    make_fold_manifest,
    read_fold_manifest,
    write_fold_manifest,
)
from matcv.datamodules.manifest import ManifestError
from matcv.datamodules.superalloy import (
    CLASS_NAMES,
    DATA_FOLDER,
    ROOT_ENV,
    SuperalloyDataModule,
    read_class_mask,
    resolve_data_root,
    rgba_mask_to_classes,
)

RED, BLUE = (255, 0, 0), (0, 0, 255)
SECONDARY, TERTIARY = CLASS_NAMES.index("secondary"), CLASS_NAMES.index("tertiary")

# The tiny layout: Super1 images of 64 px (crop 32), Super2 with a name with spaces, a 100x80 image (not
# a multiple of 32) and an image without a mask.
SUPER1 = {"train": ["spot3_0d_1", "spot3_180d_2", "spot4_0d_1", "spot5_180d_4"],
          "val": ["spot1_0d_0", "spot1_180d_1"],
          "test": ["spot2_0d_0", "spot2_180d_3"]}
OOD = {"SE_15kv precip - untested_0": (64, 64), "lshr_15kx_3kv_0": (80, 100)}  # (height, width)
OOD_WITHOUT_MASK = "pt2_15kx_3kv_7"
TINY = {"crop_size": 32, "crops_per_image": 4, "batch_size": 4}


def write_tif(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def micrograph_and_mask(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A grey micrograph (replicated to RGB), its RGBA mask painted like the release's, and the classes."""
    grey = rng.integers(0, 256, (height, width), dtype=np.uint8)
    image = np.repeat(grey[..., None], 3, axis=-1)
    classes = np.zeros((height, width), np.uint8)
    classes[4:20, 8:30] = SECONDARY  # a blocky secondary precipitate
    classes[40:43, 40:43] = TERTIARY  # a fine tertiary dot
    rgba = np.dstack([image, np.full((height, width), 255, np.uint8)])
    rgba[classes == SECONDARY, :3] = BLUE
    rgba[classes == TERTIARY, :3] = RED
    return image, rgba, classes


def make_layout(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Write the tiny layout under root; return the expected class mask of every annotated image by id."""
    rng = np.random.default_rng(seed)
    expected = {}
    for partition, stems in SUPER1.items():
        for stem in stems:
            image, rgba, classes = micrograph_and_mask(rng, 64, 64)
            write_tif(root / "Super1" / partition / f"{stem}.tif", image)
            write_tif(root / "Super1" / f"{partition}_annot" / f"{stem}_mask.tif", rgba)
            expected[f"Super1/{partition}/{stem}.tif"] = classes
    for stem, (height, width) in OOD.items():
        image, rgba, classes = micrograph_and_mask(rng, height, width)
        write_tif(root / "Super2/different_test" / f"{stem}.tif", image)
        write_tif(root / "Super2/different_test_annot" / f"{stem}_mask.tif", rgba)
        expected[f"Super2/different_test/{stem}.tif"] = classes
    write_tif(root / "Super2/different_test" / f"{OOD_WITHOUT_MASK}.tif", micrograph_and_mask(rng, 64, 64)[0])
    return expected


@pytest.fixture
def tiny(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / DATA_FOLDER
    return root, make_layout(root)


def datamodule(root: Path, tmp_path: Path, split: str = "official", fold: int = 0, **kwargs) -> SuperalloyDataModule:
    """A datamodule on ``split``'s published fold (or grouped folds over spots), set up."""
    manifest = SuperalloyDataModule.fixed_fold_manifest(root, split)
    if manifest is None:
        index = SuperalloyDataModule.index_dataset(root, split)
        manifest = make_fold_manifest(index["items"], index["groups"], None, n_folds=2, val_fraction=0.45,
                                      group_column="spot")
    path = tmp_path / f"folds-{split}.json"
    write_fold_manifest(path, manifest)
    dm = SuperalloyDataModule(str(path), fold, data_root=str(root), split=split, **{**TINY, **kwargs})
    dm.setup("fit")
    return dm


# --- colours -> classes --------------------------------------------------------------------------------

def test_class_names_follow_the_nasa_repository():
    assert CLASS_NAMES == ("matrix", "secondary", "tertiary")


def test_rgba_mask_to_classes_on_a_hand_made_mask():
    rgba = np.array([[[255, 0, 0, 255], [0, 0, 255, 255], [128, 128, 128, 255]],
                     [[254, 0, 0, 255], [0, 0, 0, 255], [255, 255, 255, 255]],
                     [[0, 255, 0, 255], [0, 0, 254, 255], [255, 0, 255, 255]]], np.uint8)
    classes = rgba_mask_to_classes(rgba)
    assert classes.dtype == np.uint8 and classes.shape == (3, 3)
    # Only exact pure red / pure blue are precipitates; near-colours, grey, black, white, green: matrix.
    assert classes.tolist() == [[TERTIARY, SECONDARY, 0], [0, 0, 0], [0, 0, 0]]
    assert rgba_mask_to_classes(rgba[..., :3]).tolist() == classes.tolist()  # RGB without alpha: same


def test_rgba_mask_to_classes_refuses_translucent_and_odd_masks():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0
    with pytest.raises(ValueError, match="1 pixel.*not fully opaque"):
        rgba_mask_to_classes(rgba)
    with pytest.raises(ValueError, match="8-bit"):
        rgba_mask_to_classes(np.zeros((2, 2, 3), np.uint16))
    with pytest.raises(ValueError, match="shape"):
        rgba_mask_to_classes(np.zeros((2, 2), np.uint8))


def test_mask_files_are_read_in_rgb_order(tmp_path):
    # cv2.imread would hand back BGR(A) and swap the two precipitate classes: the reader must not.
    rgba = np.full((2, 2, 4), 255, np.uint8)
    rgba[0, 0, :3], rgba[0, 1, :3] = RED, BLUE
    write_tif(tmp_path / "m_mask.tif", rgba)
    assert read_class_mask(tmp_path / "m_mask.tif").tolist() == [[TERTIARY, SECONDARY], [0, 0]]


# --- the layout, items and groups ------------------------------------------------------------------------

def test_index_of_the_grouped_split(tiny):
    root, _ = tiny
    index = SuperalloyDataModule.index_dataset(root)
    assert index["items"] == sorted(f"Super1/{p}/{s}.tif" for p, stems in SUPER1.items() for s in stems)
    assert index["groups"] == [f"spot{item.split('/')[-1][4]}" for item in index["items"]]
    assert index["strata"] is None
    masks = [f"Super1/{p}_annot/{s}_mask.tif" for p, stems in SUPER1.items() for s in stems]
    assert index["files"] == sorted(index["items"] + masks)
    assert all((root / f).is_file() for f in index["files"])


def test_ood_split_tests_on_annotated_super2_images_only(tiny):
    root, _ = tiny
    with pytest.warns(UserWarning, match=OOD_WITHOUT_MASK):
        index = SuperalloyDataModule.index_dataset(root, split="ood")
    ood = sorted(f"Super2/different_test/{stem}.tif" for stem in OOD)
    super1 = sorted(f"Super1/{p}/{s}.tif" for p in ("train", "val") for s in SUPER1[p])
    assert sorted(index["items"]) == sorted(super1 + ood)
    groups = dict(zip(index["items"], index["groups"]))
    assert groups["Super2/different_test/SE_15kv precip - untested_0.tif"] == "ood:SE_15kv precip - untested_0"
    assert "Super1/test/spot2_0d_0.tif" not in groups  # the ood split never sees Super1/test


def test_root_is_the_data_folder_or_its_parent_or_the_environment(tiny, monkeypatch):
    root, _ = tiny
    assert resolve_data_root(root) == root
    assert SuperalloyDataModule.prepare_dataset(root.parent) == root
    monkeypatch.setenv(ROOT_ENV, str(root.parent))
    assert SuperalloyDataModule.prepare_dataset(None) == root
    assert SuperalloyDataModule.index_dataset(root.parent)["items"] == SuperalloyDataModule.index_dataset(root)["items"]


def test_missing_data_folder_says_what_is_expected_and_how_to_point_at_a_copy(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as error:
        SuperalloyDataModule.prepare_dataset(missing)
    message = str(error.value)
    for needed in (str(missing), "does not exist", "Super1/{train,val,test}", "_annot/<name>_mask.tif",
                   "--data-root", ROOT_ENV):
        assert needed in message
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))  # exists, but holds no Super1/
    with pytest.raises(FileNotFoundError, match=rf"from \${ROOT_ENV}.*has no Super1/"):
        SuperalloyDataModule.prepare_dataset(None)


def test_every_problem_is_named_in_one_error(tiny):
    root, _ = tiny
    (root / "Super1/train_annot/spot3_0d_1_mask.tif").unlink()  # missing mask
    (root / "Super1/val/spot1_0d_0.tif").rename(root / "Super1/val/spotA_0d_0.tif")  # unparseable name...
    with pytest.raises(ManifestError) as error:
        SuperalloyDataModule.index_dataset(root)
    message = str(error.value)
    assert "3 problem(s)" in message
    assert "spot3_0d_1.tif: no mask; expected" in message and "spot3_0d_1_mask.tif" in message
    assert "spotA_0d_0.tif: cannot tell the specimen spot from the name" in message
    assert "spot1_0d_0_mask.tif: mask has no image" in message  # ...which leaves its mask orphaned


def test_check_dataset_reads_every_file(tiny):
    root, _ = tiny
    write_tif(root / "Super1/test_annot/spot2_0d_0_mask.tif", np.full((64, 48, 4), 255, np.uint8))
    (root / "Super1/train/spot4_0d_1.tif").write_bytes(b"not a tiff")
    write_tif(root / "Super1/val/spot1_180d_1.tif", np.full((64, 64), 0.5, np.float32))  # 32-bit float: not read
    assert SuperalloyDataModule.index_dataset(root)  # names alone are fine
    with pytest.raises(ManifestError) as error:
        SuperalloyDataModule.check_dataset(root, progress=False, crop_size=32)
    message = str(error.value)
    assert "3 problem(s)" in message
    assert "spot1_180d_1.tif: image mode 'F' is not 8- or 16-bit" in message  # the user format's reader
    assert "spot2_0d_0_mask.tif: mask is 48x64 px but its image Super1/test/spot2_0d_0.tif is 64x64 px" in message
    assert "spot4_0d_1.tif: cannot read image" in message


def test_check_dataset_refuses_training_images_smaller_than_the_crop(tiny):
    root, _ = tiny
    assert len(SuperalloyDataModule.check_dataset(root, progress=False, crop_size=64)["items"]) == 8
    with pytest.raises(ManifestError, match=r"(?s)8 problem.*smaller than crop_size 96"):
        SuperalloyDataModule.check_dataset(root, progress=False, crop_size=96)


def test_missing_folder_inside_the_root_is_named(tiny):
    root, _ = tiny
    shutil.rmtree(root / "Super2")
    assert SuperalloyDataModule.index_dataset(root, split="official")  # only split="ood" needs Super2
    with pytest.raises(ManifestError, match=r"(?s)2 problem.*Super2/different_test/ is missing.*"
                                            r"Super2/different_test_annot/ is missing"):
        SuperalloyDataModule.index_dataset(root, split="ood")


def test_unknown_split_is_refused(tiny):
    root, _ = tiny
    with pytest.raises(ValueError, match="split must be one of"):
        SuperalloyDataModule.index_dataset(root, split="random")


# --- fixed fold manifests ----------------------------------------------------------------------------------

@pytest.mark.parametrize("split", ["official", "ood"])
def test_fixed_fold_manifest_has_make_fold_manifests_format(tiny, tmp_path, split):
    root, _ = tiny
    unannotated = pytest.warns(UserWarning, match=OOD_WITHOUT_MASK) if split == "ood" else contextlib.nullcontext()
    with unannotated:
        manifest = SuperalloyDataModule.fixed_fold_manifest(root, split)
    with unannotated:
        index = SuperalloyDataModule.index_dataset(root, split)
    drawn = make_fold_manifest(index["items"], index["groups"], None, n_folds=2, val_fraction=0.45,
                               group_column="spot")
    assert set(manifest) == set(drawn)
    assert manifest["n_folds"] == len(manifest["folds"]) == 1
    assert manifest["group_column"] == "spot"
    check_no_group_leak(manifest)
    check_matches_data(manifest, dict(zip(index["items"], index["groups"])))
    path = tmp_path / "fixed.json"
    sha = write_fold_manifest(path, manifest)
    assert read_fold_manifest(path) == (manifest, sha)


def test_grouped_split_has_no_fixed_manifest(tiny):
    assert SuperalloyDataModule.fixed_fold_manifest(tiny[0], "grouped") is None
    assert SuperalloyDataModule.fixed_fold_manifest(tiny[0]) is None


def test_fixed_split_mixing_a_spot_into_two_partitions_is_a_leak(tiny):
    root, _ = tiny
    for name in ("spot3_0d_1.tif", "spot3_0d_1_mask.tif"):
        src = root / "Super1" / ("train" if "mask" not in name else "train_annot") / name
        src.rename(src.parent.parent / src.parent.name.replace("train", "test") / name)
    with pytest.raises(ValueError, match="group 'spot3'"):
        SuperalloyDataModule.fixed_fold_manifest(root, "official")


# --- the datamodule ----------------------------------------------------------------------------------------

def test_official_split_samples(tiny, tmp_path):
    root, expected = tiny
    dm = datamodule(root, tmp_path, "official")
    assert dm.num_classes == 3 and dm.class_names == CLASS_NAMES
    train, val, test = (dm.datasets[p] for p in ("train", "val", "test"))
    assert train.item_ids == [f"Super1/train/{s}.tif" for s in sorted(SUPER1["train"])]
    assert len(train) == len(SUPER1["train"]) * TINY["crops_per_image"]
    assert test.item_ids == [f"Super1/test/{s}.tif" for s in sorted(SUPER1["test"])]
    for dataset in (train, val, test):
        for image, mask, item in zip(dataset.images, dataset.masks, dataset.item_ids):
            assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
            assert mask.dtype == np.uint8 and np.array_equal(mask, expected[item])
    sample = train[0]
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, 32, 32)
    assert sample["mask"].dtype == torch.int64 and sample["mask"].shape == (32, 32)
    assert sample["item_id"] == train.item_ids[0]
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["mask"].shape == (4, 32, 32)
    whole = next(iter(dm.test_dataloader()))
    assert whole["image"].shape == (1, 3, 64, 64) and whole["item_id"] == [test.item_ids[0]]
    assert torch.equal(whole["mask"][0], torch.from_numpy(expected[test.item_ids[0]].astype(np.int64)))


def test_standardised_with_training_statistics_only(tiny, tmp_path):
    root, _ = tiny
    dm = datamodule(root, tmp_path, "official")
    pixels = np.concatenate([x.reshape(-1, 3) for x in dm.datasets["train"].images]) / 255.0
    np.testing.assert_allclose(dm.datasets["train"].mean, pixels.mean(0), rtol=1e-5)
    np.testing.assert_allclose(dm.datasets["test"].std, pixels.std(0) + 1e-6, rtol=1e-5)
    # Brighter test images change nothing about the statistics.
    for stem in SUPER1["test"]:
        path = root / "Super1/test" / f"{stem}.tif"
        write_tif(path, np.full((64, 64, 3), 250, np.uint8))
    bright = datamodule(root, tmp_path, "official")
    np.testing.assert_array_equal(bright.datasets["test"].mean, dm.datasets["test"].mean)
    image = bright.datasets["test"][0]["image"]
    train = dm.datasets["train"]
    np.testing.assert_allclose(image[:, 0, 0].numpy(), (250 / 255 - train.mean) / train.std, rtol=1e-5, atol=1e-5)


def test_ood_test_images_are_whole_and_cropped_to_multiples_of_32(tiny, tmp_path):
    root, expected = tiny
    with pytest.warns(UserWarning, match=OOD_WITHOUT_MASK):
        dm = datamodule(root, tmp_path, "ood")
    test = dm.datasets["test"]
    assert test.item_ids == sorted(f"Super2/different_test/{stem}.tif" for stem in OOD)
    shapes = {item: image.shape for item, image in zip(test.item_ids, test.images)}
    assert shapes["Super2/different_test/lshr_15kx_3kv_0.tif"] == (64, 96, 3)  # 80x100 cropped top-left
    index = test.item_ids.index("Super2/different_test/lshr_15kx_3kv_0.tif")
    np.testing.assert_array_equal(test.masks[index], expected[test.item_ids[index]][:64, :96])
    sizes = [tuple(batch["image"].shape) for batch in dm.test_dataloader()]
    assert sorted(sizes) == [(1, 3, 64, 64), (1, 3, 64, 96)]


def test_grouped_folds_keep_spots_apart(tiny, tmp_path):
    root, _ = tiny
    for fold in (0, 1):
        dm = datamodule(root, tmp_path, "grouped", fold=fold)
        spots = {p: {Path(i).name.split("_")[0] for i in dm.datasets[p].item_ids} for p in ("train", "val", "test")}
        assert not (spots["train"] & spots["val"]) and not (spots["train"] & spots["test"])
        assert not (spots["val"] & spots["test"])
        assert sum(len(dm.datasets[p].images) for p in spots) == 8


def test_fold_manifest_of_another_split_is_refused(tiny, tmp_path):
    root, _ = tiny
    path = tmp_path / "official.json"
    write_fold_manifest(path, SuperalloyDataModule.fixed_fold_manifest(root, "official"))
    with pytest.warns(UserWarning), pytest.raises(FoldManifestError, match="does not belong to this data"):
        SuperalloyDataModule(str(path), 0, data_root=str(root), split="ood", **TINY).setup()


def crops(dm: SuperalloyDataModule) -> list[tuple[np.ndarray, np.ndarray]]:
    train = dm.datasets["train"]
    return [(train[i]["image"].numpy(), train[i]["mask"].numpy()) for i in range(len(train))]


def test_same_seed_gives_identical_training_crops(tiny, tmp_path):
    root, _ = tiny
    first = crops(datamodule(root, tmp_path, seed=7))
    again = crops(datamodule(root, tmp_path, seed=7))
    other = crops(datamodule(root, tmp_path, seed=8))
    assert all(np.array_equal(a, b) and np.array_equal(m, n) for (a, m), (b, n) in zip(first, again))
    assert sum(not np.array_equal(a, b) for (a, _), (b, _) in zip(first, other)) >= len(first) // 2
    # Crops differ within an epoch (positions and symmetries are drawn per crop, not once).
    assert len({a.tobytes() for a, _ in first}) == len(first)


def undo_symmetry(crop: np.ndarray, transposed: bool, quarter_turns: int) -> np.ndarray:
    """The window w with crop == rot90(w.T if transposed else w, quarter_turns)."""
    window = np.rot90(crop, -quarter_turns)
    return window.T if transposed else window


def find_window(crop: np.ndarray, full: np.ndarray) -> tuple[int, int, bool, int] | None:
    """(top, left, transposed, quarter_turns) of the window of ``full`` that ``crop`` is a symmetry of."""
    for transposed in (False, True):
        for quarter_turns in range(4):
            window = np.ascontiguousarray(undo_symmetry(crop, transposed, quarter_turns)).astype(np.float32)
            distance = cv2.matchTemplate(full.astype(np.float32), window, cv2.TM_SQDIFF)
            top, left = np.unravel_index(np.argmin(distance), distance.shape)
            if np.array_equal(full[top:top + crop.shape[0], left:left + crop.shape[1]], window):
                return int(top), int(left), transposed, quarter_turns
    return None


def grey_crop(sample: dict, dataset) -> np.ndarray:
    """The uint8 grey values of a standardised training crop."""
    x = sample["image"].numpy() * dataset.std[:, None, None] + dataset.mean[:, None, None]
    return np.rint(x[0] * 255).astype(np.uint8)


@pytest.mark.parametrize("augment", [True, False])
def test_crops_are_windows_of_their_image_with_the_mask_moved_alike(tiny, tmp_path, augment):
    root, _ = tiny
    train = datamodule(root, tmp_path, seed=3, augment=augment).datasets["train"]
    assert (train.symmetries is not None) == augment
    symmetries_seen = set()
    for index in range(len(train)):
        sample = train[index]
        source = train.item_ids.index(sample["item_id"])
        found = find_window(grey_crop(sample, train), train.images[source][..., 0])  # noise: one exact match
        assert found is not None
        top, left, transposed, quarter_turns = found
        symmetries_seen.add((transposed, quarter_turns))
        mask = sample["mask"].numpy().astype(np.uint8)
        window = train.masks[source][top:top + 32, left:left + 32]
        assert np.array_equal(undo_symmetry(mask, transposed, quarter_turns), window)
    if augment:
        assert len(symmetries_seen) >= 4  # 16 crops drawing from 8 symmetries
    else:
        assert symmetries_seen == {(False, 0)}


def test_each_worker_draws_its_own_crops(tiny, tmp_path, monkeypatch):
    root, _ = tiny
    train = datamodule(root, tmp_path, seed=5).datasets["train"]

    def epoch_in_worker(worker_seed: int) -> list[np.ndarray]:
        in_worker = copy.deepcopy(train)  # what a DataLoader worker holds: a copy of both generators
        monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: SimpleNamespace(seed=worker_seed))
        return [in_worker[i]["image"].numpy() for i in range(len(in_worker))]

    first, again, other = epoch_in_worker(100), epoch_in_worker(100), epoch_in_worker(101)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert sum(not np.array_equal(a, b) for a, b in zip(first, other)) >= len(first) // 2


def test_workers_are_reseeded_and_reproducible(tiny, tmp_path):
    root, _ = tiny

    def epoch() -> list[np.ndarray]:
        dm = datamodule(root, tmp_path, num_workers=2, seed=5)
        torch.manual_seed(0)  # the workers' seeds derive from torch's, as under seed_everything
        return [batch["image"].numpy() for batch in dm.train_dataloader()]

    first, again = epoch(), epoch()
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    crops_seen = [crop.tobytes() for batch in first for crop in batch]
    assert len(set(crops_seen)) == len(crops_seen)  # the two workers do not repeat each other's crops


# --- a preset of a user's data folder ----------------------------------------------------------------------

def test_the_release_reads_as_a_user_folder_with_its_preset(tiny, tmp_path):
    """The release is the user format with a built-in description: written as manifest.csv (group = spot,
    split = Super1 folder) + dataset.yaml (the preset's colours), a user's folder gives the same items, groups,
    masks, fold and training crops."""
    from matcv.datamodules.dataset_description import read_mask_file
    from matcv.datamodules.superalloy_files import DESCRIPTION
    from matcv.datamodules.user_segmentation import UserSegmentationDataModule

    root, expected = tiny
    assert issubclass(SuperalloyDataModule, UserSegmentationDataModule)
    assert DESCRIPTION.class_names == list(CLASS_NAMES) and DESCRIPTION.unlisted_class == "matrix"
    items = SuperalloyDataModule.index_dataset(root, "official")
    manifest = ["image_path,mask_path,group,split"]
    for item, group in zip(items["items"], items["groups"]):
        partition, name = item.split("/")[1:]
        manifest.append(f"{item},Super1/{partition}_annot/{name[:-4]}_mask.tif,{group},{partition}")
    (root / "manifest.csv").write_text("\n".join(manifest) + "\n")
    colours = "".join(f"  - {{name: {c.name}, color: {list(c.color)}}}\n" for c in DESCRIPTION.classes)
    (root / "dataset.yaml").write_text(f"name: my-superalloy\nclasses:\n{colours}unlisted_class: matrix\n"
                                       f"crop_size: 32\ncrops_per_image: {TINY['crops_per_image']}\n")
    for item in items["items"]:
        mask = item.replace("/train/", "/train_annot/").replace("/val/", "/val_annot/").replace("/test/", "/test_annot/")
        assert np.array_equal(read_mask_file(root / mask.replace(".tif", "_mask.tif"), DESCRIPTION), expected[item])
    user = UserSegmentationDataModule.check_dataset(root, progress=False)
    assert (user["items"], user["groups"]) == (items["items"], items["groups"])
    fold = UserSegmentationDataModule.fixed_fold_manifest(root, split="manifest")
    assert fold["folds"] == SuperalloyDataModule.fixed_fold_manifest(root, "official")["folds"]
    path = tmp_path / "user-folds.json"
    write_fold_manifest(path, fold)
    mine = UserSegmentationDataModule(str(path), 0, data_root=str(root), split="manifest", seed=7, batch_size=4)
    mine.setup("fit")
    published = datamodule(root, tmp_path, "official", seed=7)
    for partition in ("train", "val", "test"):
        ours, theirs = mine.datasets[partition], published.datasets[partition]
        assert ours.item_ids == theirs.item_ids and len(ours) == len(theirs)
        for index in range(len(ours)):
            a, b = ours[index], theirs[index]
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"]), (partition, index)


# --- the published data ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_root() -> Path:
    try:
        return resolve_data_root(None)
    except FileNotFoundError as error:
        pytest.skip(f"the NASA superalloy benchmark is not here ({str(error).splitlines()[0]})")


def test_published_layout(real_root):
    grouped = SuperalloyDataModule.check_dataset(real_root, "grouped", progress=False)
    assert len(grouped["items"]) == 18 and len(grouped["files"]) == 36
    assert Counter(grouped["groups"]) == Counter({"spot1": 4, "spot2": 4, "spot3": 2, "spot4": 2, "spot5": 2,
                                                  "spot6": 2, "spot7": 2})
    ood = SuperalloyDataModule.check_dataset(real_root, "ood", progress=False)
    ood_items = [i for i in ood["items"] if i.startswith("Super2/")]
    assert len(ood["items"]) == 14 + 5 and len(ood_items) == 5  # every Super2 image has a mask
    assert "Super2/different_test/SE_15kv_50kx_precip - untested-2_0.tif" in ood_items


@pytest.mark.parametrize("split", ["official", "ood"])
def test_published_fixed_manifests_leak_nothing_and_match_the_data(real_root, tmp_path, split):
    manifest = SuperalloyDataModule.fixed_fold_manifest(real_root, split)
    index = SuperalloyDataModule.index_dataset(real_root, split)
    check_no_group_leak(manifest)
    check_matches_data(manifest, dict(zip(index["items"], index["groups"])))
    write_fold_manifest(tmp_path / "m.json", manifest)
    assert read_fold_manifest(tmp_path / "m.json")[0] == manifest
    fold = manifest["folds"][0]
    spots = {p: {manifest["groups"][i] for i in fold[p]} for p in fold}
    assert spots["train"] == {"spot3", "spot4", "spot5", "spot6", "spot7"} and spots["val"] == {"spot1"}
    assert (len(fold["train"]), len(fold["val"])) == (10, 4)
    if split == "official":
        assert spots["test"] == {"spot2"} and len(fold["test"]) == 4
    else:
        assert len(fold["test"]) == 5 and all(g.startswith("ood:") for g in spots["test"])


def test_published_masks_are_opaque_and_only_grey_red_or_blue(real_root):
    for path in sorted(real_root.glob("Super*/*_annot/*_mask.tif")):
        rgba = np.asarray(Image.open(path))
        assert rgba.shape[-1] == 4 and (rgba[..., 3] == 255).all(), path
        rgb = rgba[..., :3].reshape(-1, 3)
        grey = (rgb == rgb[:, :1]).all(axis=1)
        pure = (rgb == RED).all(axis=1) | (rgb == BLUE).all(axis=1)
        assert (grey | pure).all(), f"{path}: colours that are neither grey nor a class colour"


def test_blue_is_the_blocky_secondary_and_red_the_fine_tertiary(real_root):
    # The evidence for the colour -> class mapping: secondary gamma' are large blocks, tertiary fine dots.
    classes = read_class_mask(real_root / "Super1/train_annot/spot3_0d_3_mask.tif")
    sizes = {}
    for name in ("secondary", "tertiary"):
        _, _, stats, _ = cv2.connectedComponentsWithStats((classes == CLASS_NAMES.index(name)).astype(np.uint8))
        sizes[name] = np.median(stats[1:, cv2.CC_STAT_AREA])
    assert sizes["secondary"] > 10 * sizes["tertiary"]
    assert (classes == SECONDARY).mean() > 10 * (classes == TERTIARY).mean()


def test_published_data_end_to_end(real_root, tmp_path):
    path = tmp_path / "official.json"
    write_fold_manifest(path, SuperalloyDataModule.fixed_fold_manifest(real_root, "official"))
    dm = SuperalloyDataModule(str(path), 0, data_root=None, split="official", seed=0)
    dm.setup("fit")
    assert {p: len(d) for p, d in dm.datasets.items()} == {"train": 80, "val": 4, "test": 4}
    assert all(image.shape == (512, 512, 3) for image in dm.datasets["test"].images)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 256, 256) and batch["mask"].shape == (4, 256, 256)
    assert set(batch["mask"].unique().tolist()) <= {0, 1, 2}
    whole = next(iter(dm.val_dataloader()))
    assert whole["image"].shape == (1, 3, 512, 512) and whole["item_id"][0].startswith("Super1/val/")
    counts = np.bincount(np.concatenate([m.ravel() for m in dm.datasets["train"].masks]), minlength=3)
    fractions = dict(zip(CLASS_NAMES, counts / counts.sum()))
    assert 0.4 < fractions["secondary"] < 0.6 and 0.005 < fractions["tertiary"] < 0.05
    json.dumps(dict(dm.hparams))  # the harness stores the arguments with the checkpoints
