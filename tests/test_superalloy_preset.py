"""The NASA superalloy release as a preset of the user data format (datamodules/superalloy_files.py): its layout
becomes the manifest table + description a user's folder gives, and everything else is the user format's code.

The published results must not move: ``RELEASE`` holds, for every annotated image of the release, what the
release's own reader (before it became a preset) gave -- mask path, spot group, and sha256 prefixes of the
decoded image (uint8 RGB) and class mask -- computed on the shared copy of the data. The tests on that copy skip
with the reason where it is absent; the export test runs on a tiny copy of the layout.
"""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest

from matcv.benchmarks.cli import main
from matcv.datamodules.folds import write_fold_manifest
from matcv.datamodules.superalloy import SuperalloyDataModule, resolve_data_root
from matcv.datamodules.superalloy_files import DESCRIPTION, read_pair, read_release, release_table
from matcv.datamodules.user_segmentation import FolderManifest, UserSegmentationDataModule
from tests.test_superalloy import DATA_FOLDER, TINY, make_layout

# item id -> (mask path, group, sha256[:16] of the image array, of the class mask), as published.
RELEASE = {
    'Super1/test/spot2_0d_0.tif':
        ('Super1/test_annot/spot2_0d_0_mask.tif', 'spot2', 'e50e062fc0ab70ae', '29f376298e086515'),
    'Super1/test/spot2_0d_4.tif':
        ('Super1/test_annot/spot2_0d_4_mask.tif', 'spot2', '07c2b556a0e2f8dd', '28f85cae210f5a64'),
    'Super1/test/spot2_180d_3.tif':
        ('Super1/test_annot/spot2_180d_3_mask.tif', 'spot2', 'b0dee0f9b32b4e48', '637d57fed4a1cd78'),
    'Super1/test/spot2_180d_5.tif':
        ('Super1/test_annot/spot2_180d_5_mask.tif', 'spot2', '300ca5d6c3c7289c', '9322a8da15a6c9ff'),
    'Super1/train/spot3_0d_3.tif':
        ('Super1/train_annot/spot3_0d_3_mask.tif', 'spot3', 'f1ea7d3f6cad97c2', '250b470c0769292b'),
    'Super1/train/spot3_180d_2.tif':
        ('Super1/train_annot/spot3_180d_2_mask.tif', 'spot3', 'dba75183ee35e887', 'f324659a0e4c964c'),
    'Super1/train/spot4_0d_3.tif':
        ('Super1/train_annot/spot4_0d_3_mask.tif', 'spot4', '11b6b51a808507c9', 'e7f745a34d96c226'),
    'Super1/train/spot4_180d_2.tif':
        ('Super1/train_annot/spot4_180d_2_mask.tif', 'spot4', '0e4789692e95c316', '3ac9fea925c99207'),
    'Super1/train/spot5_0d_0.tif':
        ('Super1/train_annot/spot5_0d_0_mask.tif', 'spot5', 'fe6445534efe36b0', '52438d5505ab0ec6'),
    'Super1/train/spot5_180d_2.tif':
        ('Super1/train_annot/spot5_180d_2_mask.tif', 'spot5', '48b25fc1042b8714', 'ff5e4e8f64675692'),
    'Super1/train/spot6_0d_2.tif':
        ('Super1/train_annot/spot6_0d_2_mask.tif', 'spot6', '1134be9ec34406c6', 'daefb58d9d8a471b'),
    'Super1/train/spot6_180d_7.tif':
        ('Super1/train_annot/spot6_180d_7_mask.tif', 'spot6', '59957fed92ce549a', '23c1fd7c5d8b8e9a'),
    'Super1/train/spot7_0d_5.tif':
        ('Super1/train_annot/spot7_0d_5_mask.tif', 'spot7', '9c7530259fd8e52e', '59eaa349887ef4c9'),
    'Super1/train/spot7_180d_3.tif':
        ('Super1/train_annot/spot7_180d_3_mask.tif', 'spot7', '7d9f60cabe3b9ca2', 'c5d35f91a7ec3db8'),
    'Super1/val/spot1_0d_0.tif':
        ('Super1/val_annot/spot1_0d_0_mask.tif', 'spot1', '311691381fbed52d', 'cbbb9bd670c4b5ed'),
    'Super1/val/spot1_0d_1.tif':
        ('Super1/val_annot/spot1_0d_1_mask.tif', 'spot1', '2f7a766aa118a1ab', '0a33e28b11b6ea3b'),
    'Super1/val/spot1_180d_5.tif':
        ('Super1/val_annot/spot1_180d_5_mask.tif', 'spot1', '839187f1214e24f0', '7070b09b7bda66de'),
    'Super1/val/spot1_180d_6.tif':
        ('Super1/val_annot/spot1_180d_6_mask.tif', 'spot1', '47efbf7f337f9632', '80a6e5eceb83aca6'),
    'Super2/different_test/45kx_SE_15kV-etched_0.tif':
        ('Super2/different_test_annot/45kx_SE_15kV-etched_0_mask.tif', 'ood:45kx_SE_15kV-etched_0', '461c80e8972c0798', '1770c5f91c0b624a'),
    'Super2/different_test/SE_15kv_50kx_precip - untested-2_0.tif':
        ('Super2/different_test_annot/SE_15kv_50kx_precip - untested-2_0_mask.tif', 'ood:SE_15kv_50kx_precip - untested-2_0', 'a59620b15c54f217', '1f2b336209079a88'),
    'Super2/different_test/lshr_15kx_3kv_0.tif':
        ('Super2/different_test_annot/lshr_15kx_3kv_0_mask.tif', 'ood:lshr_15kx_3kv_0', '6f879a655bd0eee8', '5620c8cce2cd9825'),
    'Super2/different_test/me3_15kx_3kv_2.tif':
        ('Super2/different_test_annot/me3_15kx_3kv_2_mask.tif', 'ood:me3_15kx_3kv_2', '6e6da2ea36883b25', '2e0970f5c49df146'),
    'Super2/different_test/pt2_15kx_3kv_7.tif':
        ('Super2/different_test_annot/pt2_15kx_3kv_7_mask.tif', 'ood:pt2_15kx_3kv_7', '513cd41c872b0553', 'b3ccca473d7f8fd3'),
}
# The published protocols: which images each partition holds.
SUPER2 = sorted(i for i in RELEASE if i.startswith("Super2/"))
PARTITIONS = {
    "official": {p: sorted(i for i in RELEASE if i.startswith(f"Super1/{p}/")) for p in ("train", "val", "test")},
    "ood": {"train": sorted(i for i in RELEASE if i.startswith("Super1/train/")),
            "val": sorted(i for i in RELEASE if i.startswith("Super1/val/")), "test": SUPER2},
}
ITEMS = {"grouped": sorted(i for i in RELEASE if i.startswith("Super1/")),
         "official": sorted(i for i in RELEASE if i.startswith("Super1/")),
         "ood": sorted(i for i in RELEASE if not i.startswith("Super1/test/"))}


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


@pytest.fixture(scope="module")
def real_root():
    try:
        return resolve_data_root(None)
    except FileNotFoundError as error:
        pytest.skip(f"the NASA superalloy benchmark is not here ({str(error).splitlines()[0]})")


@pytest.mark.parametrize("split", ["grouped", "official", "ood"])
def test_the_preset_gives_the_published_items_groups_and_splits(real_root, split):
    folder = read_release(real_root, split)
    assert isinstance(folder, FolderManifest) and folder.description is DESCRIPTION and not folder.problems
    assert [i.item_id for i in folder.items] == ITEMS[split]
    assert all((i.mask_path, i.group) == RELEASE[i.item_id][:2] for i in folder.items)
    assert list(folder.table.columns[:5]) == ["row", "image_path", "mask_path", "group", "split"]
    manifest = SuperalloyDataModule.fixed_fold_manifest(real_root, split)
    if split == "grouped":
        assert manifest is None
    else:
        assert manifest["folds"] == [PARTITIONS[split]] and manifest["group_column"] == "spot"
        assert manifest["groups"] == {i: RELEASE[i][1] for i in ITEMS[split]}


def test_the_preset_decodes_the_published_images_and_masks_bit_for_bit(real_root):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every Super2 image of the release has its mask
        items = read_release(real_root, "ood").items + read_release(real_root, "official").items
    assert {i.item_id for i in items} == set(RELEASE)
    for item in items:
        image, mask = read_pair(real_root, item)
        assert image.dtype == np.uint8 and image.shape == (512, 512, 3) and mask.dtype == np.uint8, item.item_id
        assert (_digest(image), _digest(mask)) == RELEASE[item.item_id][2:], item.item_id


def test_data_check_of_the_release_goes_through_the_user_check(real_root):
    checked = SuperalloyDataModule.check_dataset(real_root, "ood", progress=False)
    assert checked["items"] == ITEMS["ood"] and len(checked["files"]) == 2 * len(ITEMS["ood"])
    assert set(checked["class_pixels"]) == {"matrix", "secondary", "tertiary"}
    assert 0 < checked["class_pixels"]["tertiary"] < checked["class_pixels"]["secondary"]


def test_the_exported_manifest_reads_as_the_same_user_folder(tmp_path):
    root = tmp_path / DATA_FOLDER
    expected = make_layout(root)
    table, problems = release_table(root, "official")
    assert not problems and list(table.columns) == ["image_path", "mask_path", "group", "split"]
    assert main(["data", "--export-manifest", str(root), "--split", "official"]) == 0  # the CLI's route
    manifest, description = root / "manifest.csv", root / "dataset.yaml"
    assert manifest.read_text().splitlines()[0] == "image_path,mask_path,group,split"
    assert "color: [0, 0, 255]" in description.read_text() and "unlisted_class: matrix" in description.read_text()
    user = UserSegmentationDataModule.check_dataset(root, progress=False, crop_size=TINY["crop_size"])
    assert user["items"] == SuperalloyDataModule.index_dataset(root, "official")["items"]
    fold = UserSegmentationDataModule.fixed_fold_manifest(root, split="manifest")
    assert fold["folds"] == SuperalloyDataModule.fixed_fold_manifest(root, "official")["folds"]
    path = tmp_path / "folds.json"
    write_fold_manifest(path, fold)
    dm = UserSegmentationDataModule(str(path), 0, data_root=str(root), split="manifest", crop_size=32)
    dm.setup("fit")
    for images, masks, ids in ((d.images, d.masks, d.item_ids) for d in dm.datasets.values()):
        for mask, item in zip(masks, ids):
            assert np.array_equal(mask, expected[item][:mask.shape[0], :mask.shape[1]])
