"""A user's own data folder (manifest.csv + dataset.yaml): masks by value, palette index or colour, 16-bit
images, ignored pixels, one-pass data checks that name row and file, the task YAML fitted to the data, tiled
whole-image test inference, and one tiny end-to-end benchmark of 3-class data.

Every folder is written by the tests into tmp_path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from matcv.benchmarks.cli import main
from matcv.benchmarks.user_data import USER_DATAMODULE, adapted_config, adapted_task
from matcv.datamodules.core.config import ConfigError, TaskConfig
from matcv.datamodules.dataset_description import (
    IGNORE_INDEX,
    DatasetDescriptionError,
    read_description,
    read_image_file,
    read_mask_file,
)
from matcv.datamodules.folds import make_fold_manifest, write_fold_manifest
from matcv.datamodules.manifest import ManifestError
from matcv.datamodules.user_segmentation import UserSegmentationDataModule
from matcv.lightning_modules.segmentation import (
    SegmentationEvaluation,
    SmpSegmentationTask,
    per_image_class_dice_iou,
    per_image_dice_iou,
    tiled_logits,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES = ["matrix", "ferrite", "carbide"]
COLOURS = {0: (0, 0, 0), 1: (0, 160, 255), 2: (255, 200, 0)}
PALETTE = [(255, 255, 255), (200, 0, 0), (0, 0, 200)]  # palette colours deliberately unlike the index values
H, W = 48, 40  # not square, not a multiple of 32: the test images are tiled and padded


def class_map(seed: int, rare: bool) -> np.ndarray:
    """Matrix with a ferrite block; a 3x3 carbide dot (a rare class: 0.5 % of one image's pixels) if ``rare``."""
    rng = np.random.default_rng(seed)
    classes = np.zeros((H, W), np.uint8)
    top, left = rng.integers(2, 20), rng.integers(2, 16)
    classes[top:top + 18, left:left + 14] = 1
    if rare:
        classes[40:43, 30:33] = 2
    return classes


def photo(classes: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(100 + seed)
    image = rng.integers(0, 60, (*classes.shape, 3)).astype(np.uint8)
    image[classes == 1] += 120
    image[classes == 2] = (250, 40, 40)
    return image


def save_mask(path: Path, classes: np.ndarray, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "index":
        Image.fromarray(classes).save(path)
    elif kind == "palette":
        image = Image.fromarray(classes, mode="L").convert("P")
        image.putpalette([v for colour in PALETTE for v in colour])
        image.save(path)
    elif kind == "rgb":
        Image.fromarray(np.array([COLOURS[c] for c in range(3)], np.uint8)[classes]).save(path)
    else:
        raise ValueError(kind)


def description_text(kind: str, name: str = "my-steel", extra: str = "crop_size: 32\ncrops_per_image: 2\n") -> str:
    if kind == "rgb":
        classes = "".join(f"  - {{name: {n}, color: {list(COLOURS[i])}}}\n" for i, n in enumerate(CLASSES))
    else:
        classes = "".join(f"  - {{name: {n}, value: {i}}}\n" for i, n in enumerate(CLASSES))
    return f"name: {name}\nclasses:\n{classes}{extra}"


def make_folder(root: Path, kind: str = "index", n_groups: int = 6, per_group: int = 2, rows: list[str] | None = None,
                description: str | None = None) -> dict[str, np.ndarray]:
    """A 3-class folder (every third group has carbide); returns the true class map of every image."""
    expected, lines = {}, ["image_path,mask_path,group"]
    for g in range(n_groups):
        for k in range(per_group):
            seed = 10 * g + k
            classes = class_map(seed, rare=g % 3 == 0 and k == 0)
            image_path, mask_path = f"images/s{g}_{k}.png", f"masks/s{g}_{k}.png"
            (root / "images").mkdir(parents=True, exist_ok=True)
            Image.fromarray(photo(classes, seed)).save(root / image_path)
            save_mask(root / mask_path, classes, kind)
            expected[image_path] = classes
            lines.append(f"{image_path},{mask_path},S{g}")
    (root / "manifest.csv").write_text("\n".join(rows if rows is not None else lines) + "\n")
    (root / "dataset.yaml").write_text(description if description is not None else description_text(kind))
    return expected


def check_error(root: Path, **kwargs) -> str:
    with pytest.raises(ManifestError) as info:
        UserSegmentationDataModule.check_dataset(root, progress=False, **kwargs)
    return str(info.value)


def datamodule(root: Path, tmp_path: Path, **kwargs) -> UserSegmentationDataModule:
    index = UserSegmentationDataModule.index_dataset(root)
    manifest = make_fold_manifest(index["items"], index["groups"], None, n_folds=3, val_fraction=0.25,
                                  group_column="group")
    path = tmp_path / "folds.json"
    write_fold_manifest(path, manifest)
    dm = UserSegmentationDataModule(str(path), 0, data_root=str(root), **kwargs)
    dm.setup("fit")
    return dm


# --- masks: values, palette indices, colours ---------------------------------------------------------------

@pytest.mark.parametrize("kind", ["index", "palette", "rgb"])
def test_every_mask_kind_reads_as_the_same_classes(tmp_path, kind):
    expected = make_folder(tmp_path, kind)
    description = read_description(tmp_path)
    for item, classes in expected.items():
        mask = read_mask_file(tmp_path / item.replace("images", "masks"), description)
        assert mask.dtype == np.uint8 and np.array_equal(mask, classes), item
    index = UserSegmentationDataModule.check_dataset(tmp_path, progress=False)
    assert index["items"] == sorted(expected) and index["groups"] == [f"S{i // 2}" for i in range(12)]
    assert "dataset.yaml" in index["files"]  # its class map is part of the data's hash
    counts = {name: int(sum((c == i).sum() for c in expected.values())) for i, name in enumerate(CLASSES)}
    assert index["class_pixels"] == counts and 0 < counts["carbide"] < 0.01 * sum(counts.values())  # the rare class


def test_palette_masks_are_read_by_their_indices_not_their_colours(tmp_path):
    make_folder(tmp_path, "palette")
    with Image.open(tmp_path / "masks/s0_0.png") as handle:
        assert handle.mode == "P" and handle.getpalette()[3:6] == list(PALETTE[1])
    assert set(np.unique(read_mask_file(tmp_path / "masks/s0_0.png", read_description(tmp_path)))) == {0, 1, 2}


def test_sixteen_bit_index_masks_and_unlisted_and_ignored_values(tmp_path):
    (tmp_path / "dataset.yaml").write_text("classes:\n  - {name: matrix, value: 0}\n  - {name: pore, value: 1000}\n"
                                           "  - {name: crack, value: 40000}\nignore: 65535\nimage_size: 32\n")
    values = np.array([[0, 1000, 40000, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "m.tif")
    description = read_description(tmp_path)
    assert read_mask_file(tmp_path / "m.tif", description).tolist() == [[0, 1, 2, IGNORE_INDEX]]
    Image.fromarray(np.array([[0, 7, 7, 1000]], np.uint16)).save(tmp_path / "bad.tif")
    with pytest.raises(ManifestError, match=r"bad.tif: mask has values \[7\] that are not in .*dataset.yaml's classes "
                                            r"\(matrix=0, pore=1000, crack=40000\) nor its ignore 65535: 2 px, "
                                            r"first at x=1, y=0"):
        read_mask_file(tmp_path / "bad.tif", description)


def test_colour_masks_refuse_other_colours_and_transparency_unless_told(tmp_path):
    make_folder(tmp_path, "rgb")
    description = read_description(tmp_path)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[1, 2, :3] = (9, 9, 9)
    Image.fromarray(rgba).save(tmp_path / "odd.png")
    with pytest.raises(ManifestError, match=r"colours \[\[9, 9, 9\]\] .* 1 px, first at x=2, y=1"):
        read_mask_file(tmp_path / "odd.png", description)
    rgba[0, 0, 3] = 10
    Image.fromarray(rgba).save(tmp_path / "translucent.png")
    with pytest.raises(ManifestError, match="1 pixel.*not fully opaque"):
        read_mask_file(tmp_path / "translucent.png", description)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "grey.png")
    with pytest.raises(ManifestError, match=r"single-channel \(L\) image; .*class colours"):
        read_mask_file(tmp_path / "grey.png", description)
    # unlisted_class: every other colour is that class (the NASA superalloy preset's rule)
    (tmp_path / "dataset.yaml").write_text(description_text("rgb") + "unlisted_class: matrix\n")
    rgba[0, 0, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "odd.png")
    assert read_mask_file(tmp_path / "odd.png", read_description(tmp_path))[1, 2] == 0


# --- images ------------------------------------------------------------------------------------------------

def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    grey = np.array([[0, 257, 32768, 65535]], np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.tif")
    image = read_image_file(tmp_path / "g16.tif")
    assert image.dtype == np.float32 and image.shape == (1, 4, 3)
    np.testing.assert_allclose(image[0, :, 0], grey[0] / 65535.0, rtol=1e-6)
    assert read_image_file(tmp_path / "g16.tif")[0, 2, 1] > 0.5  # not clipped at 255 / 65535
    import cv2

    colour = np.zeros((2, 2, 3), np.uint16)
    colour[0, 0] = (65535, 1000, 0)  # RGB
    cv2.imwrite(str(tmp_path / "c16.png"), colour[..., ::-1])  # OpenCV writes BGR
    read = read_image_file(tmp_path / "c16.png")
    np.testing.assert_allclose(read[0, 0], [1.0, 1000 / 65535, 0.0], rtol=1e-6)
    # image_bits: 8 (the superalloy preset's reading): uint8, 16-bit files by their high byte
    assert read_image_file(tmp_path / "g16.tif", 8)[0, :, 0].tolist() == [0, 1, 128, 255]
    assert read_image_file(tmp_path / "c16.png", 8)[0, 0].tolist() == [255, 1000 >> 8, 0]


def test_a_sixteen_bit_tiff_folder_trains_and_standardises_in_unit_scale(tmp_path):
    expected = make_folder(tmp_path)
    item = "images/s1_0.png"
    sixteen = (np.asarray(Image.open(tmp_path / item).convert("L")).astype(np.uint16) * 257)
    Image.fromarray(sixteen).save(tmp_path / "images/s1_0.tif")
    manifest = (tmp_path / "manifest.csv").read_text().replace(item, "images/s1_0.tif")
    (tmp_path / "manifest.csv").write_text(manifest)
    assert UserSegmentationDataModule.check_dataset(tmp_path, progress=False)["items"].count("images/s1_0.tif") == 1
    dm = datamodule(tmp_path, tmp_path)
    partition = next(p for p in ("train", "val", "test") if "images/s1_0.tif" in dm.datasets[p].item_ids)
    dataset = dm.datasets[partition]
    stored = dataset.images[dataset.item_ids.index("images/s1_0.tif")]
    assert stored.dtype == np.float32 and stored.max() <= 1.0
    np.testing.assert_allclose(stored[..., 0], sixteen[:stored.shape[0], :stored.shape[1]] / 65535.0, rtol=1e-6)
    assert np.array_equal(dataset.masks[dataset.item_ids.index("images/s1_0.tif")],
                          expected[item][:stored.shape[0], :stored.shape[1]])


# --- one-pass data checks ------------------------------------------------------------------------------------

def test_every_bad_row_and_file_is_named_in_one_pass(tmp_path):
    make_folder(tmp_path)
    (tmp_path.parent / "outside.png").write_bytes((tmp_path / "images/s0_0.png").read_bytes())
    lines = (tmp_path / "manifest.csv").read_text().splitlines()
    lines[2] = "../outside.png,masks/s0_1.png,S0"  # row 3: escapes the folder
    lines[3] = f"{tmp_path / 'images/s1_0.png'},masks/s1_0.png,S1"  # row 4: absolute
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    bad = class_map(0, rare=False)
    bad[0, 5] = 9
    Image.fromarray(bad).save(tmp_path / "masks/s2_0.png")  # row 6: a value outside the class map
    Image.fromarray(np.zeros((H, W + 2), np.uint8)).save(tmp_path / "masks/s3_0.png")  # row 8: another size
    (tmp_path / "images/s4_0.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # row 10: unreadable
    message = check_error(tmp_path)
    assert message.startswith(f"{tmp_path / 'manifest.csv'}: 5 problem(s)")
    assert "row 3 (../outside.png): image_path '../outside.png' points outside the data root" in message
    assert "row 4 (" in message and "is an absolute path" in message
    assert (f"row 6: {tmp_path / 'masks/s2_0.png'}: mask has values [9] that are not in {tmp_path / 'dataset.yaml'}'s "
            f"classes (matrix=0, ferrite=1, carbide=2): 1 px, first at x=5, y=0") in message
    assert f"row 8: {tmp_path / 'masks/s3_0.png'}: mask is 42x48 px but its image images/s3_0.png is 40x48 px" in message
    assert f"row 10: {tmp_path / 'images/s4_0.png'}: cannot read image" in message


def test_group_ids_with_spaces_are_normalised_with_a_note_and_case_twins_refused(tmp_path, capsys):
    make_folder(tmp_path)
    lines = (tmp_path / "manifest.csv").read_text().splitlines()
    lines[1] = lines[1].replace(",S0", ", S0 ")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    index = UserSegmentationDataModule.check_dataset(tmp_path, progress=False)
    assert index["groups"][0] == "S0" and index["notes"] == ["row 2: group ' S0 ' is read as 'S0'"]
    assert main(["data", "--check", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "OK - 12 images in 6 groups" in out and "note: row 2: group ' S0 ' is read as 'S0'" in out
    assert "pixels per class: matrix" in out and "carbide" in out
    lines[3] = lines[3].replace(",S1", ",s1")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    assert "group values 's1' (row 4) and 'S1' (row 5) differ only in case" in check_error(tmp_path)


def test_panel_id_is_read_as_the_group_column(tmp_path):
    make_folder(tmp_path)
    text = (tmp_path / "manifest.csv").read_text().replace("image_path,mask_path,group", "image_path,mask_path,panel_id")
    (tmp_path / "manifest.csv").write_text(text)
    assert UserSegmentationDataModule.index_dataset(tmp_path)["groups"][:2] == ["S0", "S0"]


def test_images_smaller_than_the_crop_and_missing_size_are_named(tmp_path):
    make_folder(tmp_path)
    assert "image is 40x48 px, smaller than crop_size 64" in check_error(tmp_path, crop_size=64)
    (tmp_path / "dataset.yaml").write_text(description_text("index", extra=""))
    with pytest.raises(ValueError, match="no input size: give crop_size .* or image_size"):
        UserSegmentationDataModule.check_dataset(tmp_path, progress=False)
    assert UserSegmentationDataModule.check_dataset(tmp_path, progress=False, image_size=32)


@pytest.mark.parametrize(("text", "named"), [
    ("name: my steel\nclasses: [{name: a, value: 0}, {name: b, value: 1}]\n", "key 'name'"),
    ("classes: [{name: a, value: 0}]\n", "key 'classes' must list at least two classes"),
    ("classes: [{name: a, value: 0}, {name: b, color: [1, 2, 3]}]\n", "key 'classes' mixes 'value' and 'color'"),
    ("classes: [{name: a, value: 0}, {name: b, value: 0}]\n", "gives the same value/color to two classes: 0"),
    ("classes: [{name: a, value: 0}, {name: b, value: 1}]\nignore: 1\n", "key 'ignore' is 1, the value of class 'b'"),
    ("classes: [{name: a, color: [0, 0, 0]}, {name: b, color: [0, 0, 300]}]\n", "key 'classes[1].color'"),
    ("classes: [{name: a, value: 0}, {name: b, value: 1}]\ncrop_size: 100\n", "key 'crop_size' must be a multiple of 32"),
    ("classes: [{name: a, value: 0}, {name: b, value: 1}]\ncrop_size: 64\nimage_size: 64\n", "not both"),
    ("classes: [{name: a, value: 0}, {name: b, value: 1}]\ncolours: 3\n", "unknown key(s) ['colours']"),
    ("classes: [{name: a, value: 0}, {name: b, value: 1}]\nimage_bits: 12\n", "key 'image_bits' must be 8"),
    ("classes: [{name: a, value: 0}\n", "not readable YAML"),
])
def test_a_bad_dataset_yaml_is_named_with_its_key(tmp_path, text, named):
    (tmp_path / "dataset.yaml").write_text(text)
    with pytest.raises(DatasetDescriptionError) as info:
        read_description(tmp_path)
    assert str(info.value).startswith(str(tmp_path / "dataset.yaml")) and named in str(info.value)


def test_cli_data_check_fails_with_the_problems(tmp_path, capsys):
    make_folder(tmp_path)
    Image.fromarray(np.full((H, W), 5, np.uint8)).save(tmp_path / "masks/s5_1.png")
    assert main(["data", "--check", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "row 13:" in error and "s5_1.png: mask has values [5]" in error


def test_labels_of_a_classification_folder(tmp_path):
    from matcv.datamodules.corrosion import CorrosionPanelsDataModule

    make_folder(tmp_path)
    rows = ["image_path,label,group"] + [f"images/s{i // 2}_{i % 2}.png,{i % 3},S{i // 2}" for i in range(12)]
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "dataset.yaml").write_text("name: my-photos\nlabels: [{name: fine, value: 0}, {name: medium, value: 1}, "
                                           "{name: coarse, value: 2}]\n")
    raw = adapted_config("rating", tmp_path)
    assert raw["datamodule"]["args"]["rating_classes"] == [0, 1, 2]
    assert all(entry["args"]["ratings"] == [0, 1, 2] for entry in raw["models"].values() if "ratings" in entry["args"])
    index = CorrosionPanelsDataModule.check_dataset(tmp_path, target="rating", rating_classes=[0, 1, 2], progress=False)
    assert index["strata"] == [i % 3 for i in range(12)]
    assert CorrosionPanelsDataModule.dataset_name(tmp_path, generated=False) == "my-photos"
    rows[3] = "images/s1_0.png,7,S1"
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(ManifestError, match=r"row 4 \(images/s1_0.png\): label 7 is not among the labels this task "
                                            r"learns \[0, 1, 2\]"):
        CorrosionPanelsDataModule.check_dataset(tmp_path, target="rating", rating_classes=[0, 1, 2], progress=False)


def test_the_binary_reader_points_a_described_folder_elsewhere(tmp_path):
    from matcv.datamodules.corrosion import CorrosionPanelsDataModule

    make_folder(tmp_path)
    with pytest.raises(ManifestError, match="describes its masks in dataset.yaml.*UserSegmentationDataModule"):
        CorrosionPanelsDataModule.check_dataset(tmp_path, progress=False)


# --- the datamodule ------------------------------------------------------------------------------------------

def test_crop_mode_trains_on_crops_and_tests_whole_images(tmp_path):
    expected = make_folder(tmp_path, "rgb")
    dm = datamodule(tmp_path, tmp_path)
    assert dm.num_classes == 3 and dm.class_names == CLASSES and dm.eval_tile_size == 32
    train, val, test = (dm.datasets[p] for p in ("train", "val", "test"))
    sample = train[0]
    assert sample["image"].shape == (3, 32, 32) and sample["mask"].dtype == torch.int64
    assert len(train) == 2 * len(train.images)  # crops_per_image from dataset.yaml
    assert all(image.shape[:2] == (32, 32) for image in val.images)  # validation: whole, cut to a multiple of 32
    whole = next(iter(dm.test_dataloader()))
    assert whole["image"].shape == (1, 3, H, W)  # test: every pixel
    assert torch.equal(whole["mask"][0], torch.from_numpy(expected[whole["item_id"][0]].astype(np.int64)))
    pixels = np.concatenate([x.reshape(-1, 3) for x in train.images]) / 255.0
    np.testing.assert_allclose(train.mean, pixels.mean(0), rtol=1e-5)  # training statistics only


def test_resize_mode_and_two_classes_are_binary(tmp_path):
    make_folder(tmp_path)
    text = "name: two\nclasses: [{name: matrix, value: 0}, {name: ferrite, value: 1}]\nignore: 2\nimage_size: 32\n"
    (tmp_path / "dataset.yaml").write_text(text)
    dm = datamodule(tmp_path, tmp_path)
    assert dm.num_classes == 1 and dm.class_names == ["matrix", "ferrite"] and dm.eval_tile_size is None
    sample = dm.datasets["test"][0]
    assert sample["image"].shape == (3, 32, 32) and sample["mask"].shape == (1, H, W)  # scored at native size
    assert dm.datasets["val"][0]["mask"].shape == (1, 32, 32)
    assert set(torch.unique(sample["mask"]).tolist()) <= {0.0, 1.0, float(IGNORE_INDEX)}  # carbide is ignored here
    assert UserSegmentationDataModule.dataset_name(tmp_path, generated=False) == "two"


def test_manifest_split_column_is_a_fixed_fold(tmp_path):
    make_folder(tmp_path)
    lines = (tmp_path / "manifest.csv").read_text().splitlines()
    splits = {0: "train", 1: "train", 2: "train", 3: "Train", 4: "val", 5: "test"}
    lines = [lines[0] + ",split"] + [f"{line},{splits[int(line.split(',')[2][1:])]}" for line in lines[1:]]
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    manifest = UserSegmentationDataModule.fixed_fold_manifest(tmp_path, split="manifest")
    fold = manifest["folds"][0]
    assert (len(fold["train"]), len(fold["val"]), len(fold["test"])) == (8, 2, 2)
    assert UserSegmentationDataModule.fixed_fold_manifest(tmp_path) is None  # grouped: the harness draws folds
    lines[4] = lines[4].replace(",train", ",test")  # group S1 in train and test
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    # A group in two splits: a warning (the published split runs with the leak declared, tests/test_published_split.py)
    warnings = UserSegmentationDataModule.check_dataset(tmp_path, progress=False)["warnings"]
    assert any("group 'S1' is in train (row 4) and test (row 5)" in w for w in warnings)


# --- models: ignored pixels, class counts, tiles ---------------------------------------------------------------

def test_ignored_pixels_are_neither_scored_nor_learnt():
    target = torch.tensor([[[0, 1], [2, IGNORE_INDEX]]])
    right = torch.nn.functional.one_hot(torch.tensor([[[0, 1], [2, 0]]]), 3).permute(0, 3, 1, 2).float() * 10
    dice, iou = per_image_class_dice_iou(right, target)
    assert dice.tolist() == [[1.0, 1.0, 1.0]] and iou.tolist() == [[1.0, 1.0, 1.0]]  # the wrong guess is ignored
    binary_target = torch.tensor([[[[1.0, 0.0], [IGNORE_INDEX, 1.0]]]])
    dice, _ = per_image_dice_iou(torch.tensor([[[[5.0, -5.0], [5.0, 5.0]]]]), binary_target)
    assert dice.tolist() == [1.0]
    model = SmpSegmentationTask(arch="unet", encoder_name="resnet18", num_classes=3,
                                arch_kwargs={"encoder_depth": 3, "decoder_channels": [8, 8, 8]})
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = model.loss(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad[0, :, 1, 1].abs().sum() == 0  # no gradient from the ignored pixel


def test_models_refuse_data_of_another_class_count_or_with_unlearnable_ignored_pixels(tmp_path):
    from types import SimpleNamespace

    from matcv.lightning_modules.edge_guided import EdgeGuidedSegmentationTask

    data = SimpleNamespace(num_classes=3, class_names=CLASSES, has_ignored_pixels=True)
    with pytest.raises(ValueError, match=r"num_classes=1 but the data has 3 classes \['matrix', 'ferrite', 'carbide'\]"):
        SmpSegmentationTask(num_classes=1).prepare_from_training_data(data)
    SmpSegmentationTask(num_classes=3, class_names=CLASSES).prepare_from_training_data(data)
    edge = EdgeGuidedSegmentationTask(num_classes=3, class_names=CLASSES, decoder_channels=[8, 8, 8, 8, 8])
    edge.prepare_from_training_data(data)  # DeepSC-Edge leaves ignored pixels out of every loss term

    class NoIgnoreIndex(SegmentationEvaluation):  # a trained model whose loss has no ignore index
        pass

    with pytest.raises(ValueError, match="cannot learn from masks with ignored pixels"):
        NoIgnoreIndex(num_classes=3, class_names=CLASSES).prepare_from_training_data(data)


def test_tiled_logits_cover_every_pixel_and_match_a_pointwise_network():
    torch.manual_seed(0)
    pointwise = torch.nn.Conv2d(3, 3, 1)  # no context: tiles and one pass must agree exactly
    calls = []

    def network(x):
        assert x.shape[-1] % 32 == 0 and x.shape[-2] % 32 == 0
        calls.append(tuple(x.shape[-2:]))
        return pointwise(x)

    images = torch.randn(1, 3, 70, 45)
    with torch.no_grad():
        tiled = tiled_logits(network, images, 32)
        whole = pointwise(images)
    assert tiled.shape == (1, 3, 70, 45)
    torch.testing.assert_close(tiled, whole)
    assert set(calls) == {(32, 32)} and len(calls) == 4 * 2  # half-tile stride over 80 x 48 (padded)
    calls.clear()
    small = torch.randn(1, 3, 20, 30)
    with torch.no_grad():
        torch.testing.assert_close(tiled_logits(network, small, 32), pointwise(small))
    assert calls == [(32, 32)]


# --- the task YAML fitted to the data --------------------------------------------------------------------------

def test_segmentation_yaml_is_fitted_to_a_described_folder(tmp_path):
    make_folder(tmp_path)
    raw = adapted_config("segmentation", tmp_path)
    assert raw["datamodule"] == {"class": USER_DATAMODULE, "args": {}}
    assert raw["group_column"] == "group" and "slices" not in raw["comparison"]
    for entry in raw["models"].values():  # every built-in segmentation model takes the data's classes
        if "factory_args" in entry["args"]:  # a factory's network (MedT, SegFormer): its output channels
            factory_args = entry["args"]["factory_args"]
            assert factory_args.get("num_classes", factory_args.get("classes")) == 3
        else:
            assert entry["args"]["num_classes"] == 3 and entry["args"]["class_names"] == CLASSES
    assert raw["profiles"]["tiny"]["model_overrides"]["medt"]["factory_args"]["num_classes"] == 3  # overrides too
    quick = raw["profiles"]["quick"]["datamodule"]
    assert quick["crop_size"] == 32 and "image_size" not in quick and quick["crops_per_image"] == 2
    assert adapted_config("segmentation", tmp_path, image_size=64)["profiles"]["quick"]["datamodule"]["image_size"] == 64
    with pytest.raises(ConfigError, match="not both"):
        adapted_config("segmentation", tmp_path, image_size=64, crop_size=64)
    assert adapted_config("segmentation", None) is None  # the built-in panels: nothing changes
    with pytest.raises(ConfigError, match="CorrosionPanelsDataModule .* has no crop_size; it takes --image-size"):
        adapted_config("rating", None, crop_size=64)
    path = adapted_task("segmentation", tmp_path)
    assert TaskConfig.load(path).name == "segmentation" and TaskConfig.load(path).raw == raw


def test_too_few_groups_for_the_validation_share_raise_it_and_say_so(tmp_path, capsys):
    make_folder(tmp_path)  # 6 groups: 3 folds leave 4 training groups, too few for val_fraction 0.2's 5 splits
    profiles = adapted_config("segmentation", tmp_path)["profiles"]
    assert profiles["quick"]["val_fraction"] == 0.25 and profiles["paper"]["val_fraction"] == 0.1  # 10 folds: left
    assert "val_fraction raised: quick (3 folds) 0.2 -> 0.25" in capsys.readouterr().err
    make_fold_manifest(*(lambda i: (i["items"], i["groups"]))(UserSegmentationDataModule.index_dataset(tmp_path)),
                       None, n_folds=3, val_fraction=0.25, group_column="group")  # it fits


def test_a_yaml_that_contradicts_the_data_is_refused(tmp_path):
    make_folder(tmp_path)
    config = yaml.safe_load(TaskConfig.load("segmentation-superalloy").source.read_text())
    config["datamodule"] = {"class": USER_DATAMODULE, "args": {}}  # the superalloy models, on another folder
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"model '[\w-]+' has class_names \['matrix', 'secondary', 'tertiary'\], "
                                          r"but the data's .*dataset.yaml says \['matrix', 'ferrite', 'carbide'\]"):
        adapted_config(tmp_path / "mine.yaml", tmp_path)


# --- end to end ------------------------------------------------------------------------------------------------

def test_a_three_class_folder_end_to_end(tmp_path):
    """matcv bench --data-root on a 3-class folder: a tiny smp UNet, 32-px crops, 1 epoch, 3 grouped folds."""
    from matcv.benchmarks.harness.runner import run_benchmark

    root = tmp_path / "data"
    make_folder(root, "palette")
    unet = {"class": "matcv.lightning_modules.segmentation.SmpSegmentationTask",
            "args": {"arch": "unet", "encoder_name": "resnet18", "lr": 3.0e-3,
                     "arch_kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}}}
    task = {"task": "segmentation", "metrics": ["iou", "dice"], "group_column": "panel_id",
            "datamodule": {"class": "matcv.datamodules.corrosion.CorrosionPanelsDataModule", "args": {"target": "mask"}},
            "models": {"tiny-unet": unet},
            "profiles": {"quick": {"folds": 3, "val_fraction": 0.25, "seed": 0,
                                   "datamodule": {"image_size": 128, "batch_size": 4}, "trainer": {"max_epochs": 1}}}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(task))
    bench = run_benchmark(adapted_task(tmp_path / "tiny.yaml", root), "quick", data_root=root,
                          output_dir=tmp_path / "runs", accelerator="cpu", progress=False, log_wandb=False)
    assert bench.dataset == "my-steel" and bench.folder == tmp_path / "runs/segmentation/my-steel/quick"
    records = [json.loads(line) for line in (bench.folder / "records.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["status"] == "ok" for r in records), [r.get("error") for r in records]
    for record in records:
        assert record["config"]["model"]["args"]["num_classes"] == 3
        assert record["config"]["datamodule"]["args"]["crop_size"] == 32
        for item in record["per_image"]:
            per_class = [item[f"iou_{name}"] for name in CLASSES]
            assert all(0.0 <= v <= 1.0 for v in per_class) and item["iou"] == pytest.approx(np.mean(per_class))
    assert sum(len(r["per_image"]) for r in records) == 12  # every image tested once
    kept = yaml.safe_load((bench.folder / "task.yaml").read_text())  # the leaderboard rebuilds with it
    assert kept["datamodule"]["class"] == USER_DATAMODULE
