"""Manifest checks (datamodules/manifest.py): every bad input is a ManifestError naming the row/file and why."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from matcv.datamodules.manifest import (
    MAX_LISTED_PROBLEMS,
    ManifestError,
    ManifestSpec,
    load_manifest,
    read_image,
    read_mask,
)

H, W = 6, 8  # images are 8 px wide, 6 px high (non-square, so width/height mix-ups show)
MASKED = ManifestSpec(require_mask=True)
RATED = ManifestSpec(require_rating=True)
FULL = ManifestSpec(require_mask=True, require_rating=True)


def png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG")


def image_array(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def mask_array(high: int = 255) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[:, 3:5] = high
    return mask


def write_manifest(root: Path, lines: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


def make_root(root: Path, n: int = 3, rows: list[str] | None = None) -> Path:
    """A good data root: n images, masks, ratings 5.., panels p0, p0, p1, ..."""
    for i in range(n):
        png(root / "images" / f"im{i}.png", image_array(i))
        png(root / "masks" / f"im{i}.png", mask_array())
    if rows is None:
        rows = [f"images/im{i}.png,masks/im{i}.png,p{i // 2},{5 + i % 5}" for i in range(n)]
    return write_manifest(root, ["image_path,mask_path,panel_id,rating", *rows])


def record_of(root: Path, index: int = 0, spec: ManifestSpec = FULL):
    return list(load_manifest(root, spec).itertuples(index=False))[index]


def manifest_error(root: Path, spec: ManifestSpec = FULL) -> str:
    with pytest.raises(ManifestError) as info:
        load_manifest(root, spec)
    return str(info.value)


# --- a good manifest ----------------------------------------------------------------------------------

def test_good_manifest_loads(tmp_path):
    root = make_root(tmp_path, n=4)
    table = load_manifest(root, FULL)
    assert list(table["row"]) == [2, 3, 4, 5]  # spreadsheet rows: header is row 1
    assert list(table["image_path"]) == [f"images/im{i}.png" for i in range(4)]
    assert list(table["panel_id"]) == ["p0", "p0", "p1", "p1"]
    assert list(table["rating"]) == [5, 6, 7, 8]
    assert table["rating"].dtype.kind == "i"
    record = next(table.itertuples(index=False))
    assert np.array_equal(read_image(root, record), image_array(0))
    assert np.array_equal(read_mask(root, record, (H, W)), (mask_array() > 0).astype(np.uint8))


def test_good_manifest_without_optional_columns(tmp_path):
    png(tmp_path / "a.png", image_array())
    root = write_manifest(tmp_path, ["image_path,panel_id", "a.png,7"])
    table = load_manifest(root)
    assert list(table["panel_id"]) == ["7"]  # groups are strings even when they look like numbers
    assert table["row"].tolist() == [2]


def test_numeric_panel_ids_keep_leading_zeros(tmp_path):
    root = make_root(tmp_path, n=2, rows=["images/im0.png,masks/im0.png,007,5",
                                          "images/im1.png,masks/im1.png,07,5"])
    assert list(load_manifest(root, FULL)["panel_id"]) == ["007", "07"]


def test_custom_group_column(tmp_path):
    png(tmp_path / "a.png", image_array())
    root = write_manifest(tmp_path, ["image_path,specimen", "a.png,S1"])
    assert list(load_manifest(root, ManifestSpec(group_column="specimen"))["specimen"]) == ["S1"]
    assert "panel_id" in manifest_error(root, ManifestSpec())


def test_group_and_label_are_read_as_panel_id_and_rating(tmp_path):
    # The generic column names of a user's folder; the corrosion panels' names stay valid (see above).
    root = make_root(tmp_path, n=3, rows=["images/im0.png,masks/im0.png,p0,5", "images/im1.png,masks/im1.png,p0,6",
                                          "images/im2.png,masks/im2.png,p1,7"])
    (root / "manifest.csv").write_text((root / "manifest.csv").read_text().replace("panel_id,rating", "group,label"))
    table = load_manifest(root, FULL)
    assert list(table["panel_id"]) == ["p0", "p0", "p1"] and list(table["rating"]) == [5, 6, 7]
    assert list(load_manifest(root, ManifestSpec(group_column="group"))["group"]) == ["p0", "p0", "p1"]
    (root / "manifest.csv").write_text((root / "manifest.csv").read_text().replace(",7\n", ",12\n"))
    assert "row 4 (images/im2.png): label '12' is not an integer in 0..10" in manifest_error(root, FULL)
    message = manifest_error(write_manifest(tmp_path / "bare", ["image_path", "a.png"]), RATED)
    assert "missing column(s) 'panel_id' (or 'group'), 'rating' (or 'label')" in message


def test_group_ids_written_with_spaces_are_noted(tmp_path):
    root = make_root(tmp_path, n=2, rows=["images/im0.png,masks/im0.png, p0 ,5", "images/im1.png,masks/im1.png,p1,6"])
    table = load_manifest(root, FULL)
    assert list(table["panel_id"]) == ["p0", "p1"]
    assert table.attrs["notes"] == ["row 2: panel_id ' p0 ' is read as 'p0'"]


def test_split_column_is_checked_when_asked(tmp_path):
    root = make_root(tmp_path, n=4)
    text = (root / "manifest.csv").read_text().splitlines()
    splits = ["split", "train", "Test", "test", "holdout"]  # p0 in train and test; an unknown split
    (root / "manifest.csv").write_text("\n".join(f"{line},{s}" for line, s in zip(text, splits)) + "\n")
    assert len(load_manifest(root, FULL)) == 4  # only a task that reads the split checks it
    message = manifest_error(root, ManifestSpec(require_mask=True, check_split=True))
    assert "2 problem(s)" in message and "row 5: split 'holdout' is not one of train, val, test" in message
    assert "panel_id 'p0' is in train (row 2) and test (row 3): a group must stay in one split" in message


@pytest.mark.parametrize("high", [1, 255])
def test_masks_01_and_0255_both_come_back_as_01(tmp_path, high):
    root = make_root(tmp_path, n=1)
    png(root / "masks" / "im0.png", mask_array(high))
    mask = read_mask(root, record_of(root), (H, W))
    assert mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) == {0, 1}
    assert np.array_equal(mask, (mask_array() > 0).astype(np.uint8))


def test_grey_rgb_and_bilevel_masks_are_accepted(tmp_path):
    root = make_root(tmp_path, n=2)
    png(root / "masks" / "im0.png", np.repeat(mask_array()[..., None], 3, axis=2))  # RGB, R = G = B
    Image.fromarray(mask_array() > 0).save(root / "masks" / "im1.png")  # mode "1"
    expected = (mask_array() > 0).astype(np.uint8)
    assert np.array_equal(read_mask(root, record_of(root, 0), (H, W)), expected)
    assert np.array_equal(read_mask(root, record_of(root, 1), (H, W)), expected)


def test_empty_and_full_masks_are_valid(tmp_path):
    root = make_root(tmp_path, n=2)
    png(root / "masks" / "im0.png", np.zeros((H, W), np.uint8))
    png(root / "masks" / "im1.png", np.full((H, W), 255, np.uint8))
    assert read_mask(root, record_of(root, 0), (H, W)).sum() == 0
    assert read_mask(root, record_of(root, 1), (H, W)).sum() == H * W  # only 255 -> all ones


def test_read_image_converts_grey_to_rgb(tmp_path):
    root = make_root(tmp_path, n=1)
    png(root / "images" / "im0.png", np.full((H, W), 77, np.uint8))
    image = read_image(root, record_of(root))
    assert image.shape == (H, W, 3) and (image == 77).all()


# --- the data root and the manifest file ---------------------------------------------------------------

def test_missing_data_root(tmp_path):
    with pytest.raises(ManifestError, match="does not exist or is not a folder") as info:
        load_manifest(tmp_path / "nowhere")
    assert "nowhere" in str(info.value)


def test_missing_manifest_csv(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "manifest.csv") in message
    assert "not found" in message


@pytest.mark.parametrize(("spec", "header", "missing"), [
    (ManifestSpec(), "image_path,rating", "panel_id"),
    (ManifestSpec(), "path,panel_id", "image_path"),
    (MASKED, "image_path,panel_id,rating", "mask_path"),
    (RATED, "image_path,mask_path,panel_id", "rating"),
])
def test_missing_column(tmp_path, spec, header, missing):
    png(tmp_path / "images" / "im0.png", image_array())
    root = write_manifest(tmp_path, [header, ",".join(["images/im0.png"] + ["x"] * header.count(","))])
    message = manifest_error(root, spec)
    assert "manifest.csv" in message
    assert "missing column" in message and repr(missing) in message


def test_manifest_without_rows(tmp_path):
    root = write_manifest(tmp_path, ["image_path,panel_id"])
    assert "no rows" in manifest_error(root, ManifestSpec())


# --- rows -----------------------------------------------------------------------------------------------

def test_missing_image_file(tmp_path):
    root = make_root(tmp_path, n=3)
    (root / "images" / "im1.png").unlink()
    message = manifest_error(root)
    assert "1 problem(s)" in message
    assert "row 3 (images/im1.png)" in message
    assert f"image file {root / 'images' / 'im1.png'} not found" in message


def test_missing_mask_file_only_when_masks_are_required(tmp_path):
    root = make_root(tmp_path, n=2)
    (root / "masks" / "im0.png").unlink()
    message = manifest_error(root, MASKED)
    assert "row 2 (images/im0.png)" in message and "mask file" in message and "masks/im0.png" in message
    assert len(load_manifest(root, RATED)) == 2  # the rating task does not need masks


def test_empty_image_and_mask_paths(tmp_path):
    root = make_root(tmp_path, n=2, rows=[",masks/im0.png,p0,5", "images/im1.png,,p1,5"])
    message = manifest_error(root, MASKED)
    assert "row 2: empty image_path" in message
    assert "row 3 (images/im1.png): empty mask_path" in message


@pytest.mark.parametrize(("rating", "shown"), [("11", "'11'"), ("-1", "'-1'"), ("5.5", "'5.5'"), ("", "(empty)"),
                                               ("abc", "'abc'"), ("1e9", "'1e9'")])
def test_bad_rating_when_required(tmp_path, rating, shown):
    root = make_root(tmp_path, n=3, rows=["images/im0.png,masks/im0.png,p0,5",
                                          f"images/im1.png,masks/im1.png,p0,{rating}",
                                          "images/im2.png,masks/im2.png,p1,7"])
    message = manifest_error(root, RATED)
    assert "row 3 (images/im1.png): rating" in message
    assert "is not an integer in 0..10" in message
    assert f"rating {shown} is not" in message
    # Without require_rating the same column is not checked.
    assert len(load_manifest(root, ManifestSpec())) == 3


def test_rating_range_is_configurable(tmp_path):
    root = make_root(tmp_path, n=2)  # ratings 5 and 6
    message = manifest_error(root, ManifestSpec(require_rating=True, rating_range=(6, 9)))
    assert "row 2 (images/im0.png): rating '5' is not an integer in 6..9" in message
    assert "row 3" not in message


def test_non_numeric_rating_reports_only_its_own_row(tmp_path):
    root = make_root(tmp_path, n=3, rows=["images/im0.png,masks/im0.png,p0,5",
                                          "images/im1.png,masks/im1.png,p0,abc",
                                          "images/im2.png,masks/im2.png,p1,7"])
    message = manifest_error(root, RATED)
    assert "1 problem(s)" in message and "row 2" not in message and "row 4" not in message


@pytest.mark.parametrize("group", ["", "   "])
def test_missing_group(tmp_path, group):
    root = make_root(tmp_path, n=2, rows=["images/im0.png,masks/im0.png,p0,5",
                                          f"images/im1.png,masks/im1.png,{group},6"])
    message = manifest_error(root)
    assert "row 3 (images/im1.png): missing panel_id" in message
    assert "row 2" not in message


def test_duplicate_image_path(tmp_path):
    root = make_root(tmp_path, n=2, rows=["images/im0.png,masks/im0.png,p0,5",
                                          "images/im1.png,masks/im1.png,p1,6",
                                          "images/im0.png,masks/im1.png,p1,6"])
    message = manifest_error(root)
    assert "image_path images/im0.png listed more than once" in message
    assert "images/im1.png listed" not in message


def test_all_problems_are_reported_together(tmp_path):
    root = make_root(tmp_path, n=3, rows=["images/im0.png,masks/im0.png,,5",
                                          "images/nope.png,masks/im1.png,p0,6",
                                          "images/im2.png,masks/im2.png,p1,12"])
    message = manifest_error(root)
    assert message.startswith(f"{root / 'manifest.csv'}: 3 problem(s)")
    assert "row 2 (images/im0.png): missing panel_id" in message
    assert "row 3 (images/nope.png): image file" in message
    assert "row 4 (images/im2.png): rating '12'" in message


def test_long_problem_lists_are_cut(tmp_path):
    n = MAX_LISTED_PROBLEMS + 5
    root = write_manifest(tmp_path, ["image_path,panel_id", *[f"images/missing{i}.png,p{i}" for i in range(n)]])
    message = manifest_error(root, ManifestSpec())
    assert f"{n} problem(s)" in message
    assert "... and 5 more" in message
    assert f"row {MAX_LISTED_PROBLEMS + 1} " in message and f"row {MAX_LISTED_PROBLEMS + 2} " not in message


# --- image and mask contents -----------------------------------------------------------------------------

def test_unreadable_image(tmp_path):
    root = make_root(tmp_path, n=2)
    (root / "images" / "im1.png").write_bytes(b"this is not a png \x00\x01\x02" * 10)
    record = record_of(root, 1)  # the file exists, so the manifest itself is fine
    with pytest.raises(ManifestError) as info:
        read_image(root, record)
    message = str(info.value)
    assert message.startswith("row 3: cannot read image")
    assert str(root / "images" / "im1.png") in message


def test_truncated_image(tmp_path):
    root = make_root(tmp_path, n=1)
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    (root / "images" / "im0.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ManifestError, match=r"row 2: cannot read image .*im0\.png"):
        read_image(root, record_of(root))


def test_unreadable_mask(tmp_path):
    root = make_root(tmp_path, n=1)
    (root / "masks" / "im0.png").write_bytes(b"garbage")
    with pytest.raises(ManifestError, match=r"row 2: cannot read mask .*masks.im0\.png"):
        read_mask(root, record_of(root), (H, W))


def test_mask_of_another_size(tmp_path):
    root = make_root(tmp_path, n=2)
    png(root / "masks" / "im1.png", np.zeros((5, 10), np.uint8))  # 10 wide, 5 high
    with pytest.raises(ManifestError) as info:
        read_mask(root, record_of(root, 1), (H, W))
    message = str(info.value)
    assert message.startswith("row 3: mask")
    assert str(root / "masks" / "im1.png") in message
    assert "is 10x5 px but its image images/im1.png is 8x6 px" in message


def test_transposed_mask_is_another_size(tmp_path):
    root = make_root(tmp_path, n=1)
    png(root / "masks" / "im0.png", mask_array().T.copy())
    with pytest.raises(ManifestError, match="is 6x8 px but its image images/im0.png is 8x6 px"):
        read_mask(root, record_of(root), (H, W))


@pytest.mark.parametrize(("values", "shown"), [
    ((0, 128, 255), "[0, 128, 255]"),
    ((0, 1, 255), "[0, 1, 255]"),
    ((0, 2), "[0, 2]"),
    ((1, 254), "[1, 254]"),
])
def test_mask_with_other_values(tmp_path, values, shown):
    root = make_root(tmp_path, n=1)
    mask = np.zeros((H, W), np.uint8)
    for i, value in enumerate(values):
        mask[i :: len(values)] = value  # every value present, nothing else
    png(root / "masks" / "im0.png", mask)
    with pytest.raises(ManifestError) as info:
        read_mask(root, record_of(root), (H, W))
    message = str(info.value)
    assert message.startswith("row 2: mask") and "masks" in message and "im0.png" in message
    assert f"has values {shown}" in message
    assert "expected only {0,1} or only {0,255}" in message


def test_many_mask_values_are_abbreviated(tmp_path):
    root = make_root(tmp_path, n=1)
    png(root / "masks" / "im0.png", np.arange(H * W, dtype=np.uint8).reshape(H, W))
    with pytest.raises(ManifestError, match=r"has values \[0, 1, 2, 3, 4, 5, 6, 7\]\.\.\."):
        read_mask(root, record_of(root), (H, W))


def test_colour_mask(tmp_path):
    root = make_root(tmp_path, n=1)
    colour = np.zeros((H, W, 3), np.uint8)
    colour[:, 3:5] = (255, 0, 0)  # red annotation strokes
    png(root / "masks" / "im0.png", colour)
    with pytest.raises(ManifestError) as info:
        read_mask(root, record_of(root), (H, W))
    message = str(info.value)
    assert message.startswith("row 2: mask") and str(root / "masks" / "im0.png") in message
    assert "colour image" in message


# --- CorrosionPanelsDataModule.check_dataset ----------------------------------------------------------------

def test_check_dataset_passes_on_a_good_root(tmp_path):
    from matcv.datamodules.corrosion import CorrosionPanelsDataModule

    root = make_root(tmp_path, n=4)
    index = CorrosionPanelsDataModule.check_dataset(root)
    assert index["items"] == [f"images/im{i}.png" for i in range(4)]
    assert index["groups"] == ["p0", "p0", "p1", "p1"]
    assert index["strata"] == [5, 6, 7, 8]
    assert index["files"] == index["items"] + [f"masks/im{i}.png" for i in range(4)]
    assert CorrosionPanelsDataModule.check_dataset(root, target="rating")["files"] == index["items"]


def test_check_dataset_raises_on_a_bad_image_and_lists_every_bad_file(tmp_path):
    from matcv.datamodules.corrosion import CorrosionPanelsDataModule

    root = make_root(tmp_path, n=4)
    (root / "images" / "im1.png").write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")
    png(root / "masks" / "im3.png", np.full((H, W), 128, np.uint8))
    with pytest.raises(ManifestError) as info:
        CorrosionPanelsDataModule.check_dataset(root)
    message = str(info.value)
    assert message.startswith(f"{root / 'manifest.csv'}: 2 bad file(s)")
    assert f"row 3: cannot read image {root / 'images' / 'im1.png'}" in message
    assert f"row 5: mask {root / 'masks' / 'im3.png'} has values [128]" in message
    # The rating task reads no masks: only the image is bad there.
    with pytest.raises(ManifestError, match="1 bad file"):
        CorrosionPanelsDataModule.check_dataset(root, target="rating")


def test_check_dataset_raises_on_a_bad_manifest(tmp_path):
    from matcv.datamodules.corrosion import CorrosionPanelsDataModule

    root = make_root(tmp_path, n=2)
    (root / "masks" / "im0.png").unlink()
    with pytest.raises(ManifestError, match=r"row 2 \(images/im0.png\): mask file .* not found"):
        CorrosionPanelsDataModule.check_dataset(root)
