"""Bad user data, as a careless user or a hostile one would hand it to ``matcv data --check`` and ``matcv bench``.

Every case starts from a good 4-column data root (``image_path,mask_path,rating,panel_id``) copied from a tiny
generated corrosion data set (9 panels x 2 photos at 32 px) and changes one thing. A bad root must fail with
rc 2 and a message naming the file (and the row and column where there is one) before anything is written;
a root that is merely unusual (a panel with one photo, an Excel BOM) must keep working.
"""

from __future__ import annotations

import io
import shutil
import struct
import unicodedata
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from matcv.benchmarks.cli import main as matcv
from matcv.datamodules.corrosion import CorrosionPanelsDataModule
from matcv.datamodules.folds import FoldManifestError, make_fold_manifest
from matcv.datamodules.manifest import ManifestError, load_manifest, read_image, read_mask
from matcv.datamodules.synthetic.panels import PanelGeneratorConfig, generate_panels
from tests.conftest import tiny_rating_config, tiny_task_config

COLUMNS = ["image_path", "mask_path", "rating", "panel_id"]
N_PANELS, PHOTOS = 9, 2


# --- the good root and ways of spoiling it --------------------------------------------------------------------

@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    config = PanelGeneratorConfig(n_panels=N_PANELS, photos_per_panel=PHOTOS, image_size=32)
    return generate_panels(config, tmp_path_factory.mktemp("panels") / "data", progress=False)


@pytest.fixture
def root(generated, tmp_path) -> Path:
    """A fresh good data root of 18 photos in 9 groups; the generated one stays untouched."""
    data = tmp_path / "data"
    shutil.copytree(generated / "images", data / "images")
    shutil.copytree(generated / "masks", data / "masks")
    table = pd.read_csv(generated / "manifest.csv", dtype=str)[COLUMNS]
    table.to_csv(data / "manifest.csv", index=False)
    return data


def table_of(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)


def save_table(root: Path, table: pd.DataFrame) -> None:
    table.to_csv(root / "manifest.csv", index=False)


def set_cell(root: Path, row: int, column: str, value: str) -> None:
    """Set a cell of spreadsheet row ``row`` (header = row 1)."""
    table = table_of(root)
    table.loc[row - 2, column] = value
    save_table(root, table)


def photo(root: Path, row: int, column: str = "image_path") -> Path:
    return root / table_of(root).loc[row - 2, column]


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose header claims width x height RGB pixels (a decompression bomb's calling card)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def tiff_claiming(width: int, height: int) -> bytes:
    """A little-endian baseline TIFF header claiming width x height grey pixels, with a few bytes of data."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8 + 2 + 12 * 9 + 4), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, 16)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 16


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def check(root: Path, task: str = "segmentation") -> str:
    """``CorrosionPanelsDataModule.check_dataset`` (what ``data --check`` calls): the error message."""
    with pytest.raises(ManifestError) as info:
        CorrosionPanelsDataModule.check_dataset(root, target="rating" if task == "rating" else "mask",
                                                progress=False)
    return str(info.value)


def cli_check(root: Path, capsys, task: str = "segmentation") -> tuple[int, str]:
    """``matcv data --task TASK --check ROOT``: (rc, stdout + stderr). A traceback would fail the test."""
    rc = matcv(["data", "--task", task, "--check", str(root)])
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


# --- bad files: each fails data --check with rc 2, naming row and file -----------------------------------------

def _truncated_png(root):
    truncate(photo(root, 2))
    return "segmentation", ["row 2", "panel-0000_photo0.png", "truncated"]


def _truncated_jpeg(root):
    path = photo(root, 2)
    jpeg = path.with_suffix(".jpg")
    Image.open(path).convert("RGB").save(jpeg, quality=90)
    truncate(jpeg)
    set_cell(root, 2, "image_path", "images/" + jpeg.name)
    return "segmentation", ["row 2", "panel-0000_photo0.jpg"]


def _truncated_mask(root):
    truncate(photo(root, 2, "mask_path"))
    return "segmentation", ["row 2", "cannot read mask", "masks"]


def _empty_image(root):
    photo(root, 2).write_bytes(b"")
    return "segmentation", ["row 2", "panel-0000_photo0.png", "cannot identify image file"]


def _png_bomb(root):
    photo(root, 3).write_bytes(png_claiming(30000, 30000))
    return "segmentation", ["row 3", "panel-0000_photo1.png", "pixels"]


def _png_bomb_under_twice_the_limit(root):
    # Over PIL's limit but under twice it: PIL only warns (DecompressionBombWarning) and would try to decode.
    photo(root, 3).write_bytes(png_claiming(10000, 9000))
    return "segmentation", ["row 3", "panel-0000_photo1.png", "pixels"]


def _tiff_bomb(root):
    (root / "images" / "bomb.tif").write_bytes(tiff_claiming(40000, 40000))
    set_cell(root, 3, "image_path", "images/bomb.tif")
    return "rating", ["row 3", "bomb.tif", "pixels"]


def _mask_bomb(root):
    photo(root, 4, "mask_path").write_bytes(png_claiming(30000, 30000))
    return "segmentation", ["row 4", "masks", "panel-0001_photo0.png", "pixels"]


def _mask_of_another_size(root):
    photo(root, 2, "mask_path").write_bytes(png_bytes(np.zeros((16, 16), np.uint8)))
    return "segmentation", ["row 2", "is 16x16 px but its image", "is 32x32 px"]


def _mask_values(values):
    def spoil(root):
        mask = np.zeros((32, 32), np.uint16 if max(values) > 255 else np.uint8)
        for i, value in enumerate(values):
            mask[i :: len(values)] = value
        photo(root, 2, "mask_path").write_bytes(png_bytes(mask))
        return "segmentation", ["row 2", f"has values {sorted(values)}", "expected only {0,1} or only {0,255}"]
    return spoil


def _colour_mask(root):
    mask = np.zeros((32, 32, 3), np.uint8)
    mask[:, 10:12] = (255, 0, 0)
    photo(root, 2, "mask_path").write_bytes(png_bytes(mask))
    return "segmentation", ["row 2", "colour image"]


def _rating(value):
    def spoil(root):
        set_cell(root, 3, "rating", value)
        return "rating", ["row 3", "panel-0000_photo1.png", f"rating {value!r}", "0..10"]
    return spoil


def _rating_outside_the_task(root):
    set_cell(root, 3, "rating", "3")
    return "rating", ["row 3 (images/panel-0000_photo1.png)", "rating 3", "5, 6, 7, 8, 9"]


def _all_ratings_outside_the_task(root):
    table = table_of(root)
    table["rating"] = ["3" if i % 2 else "4" for i in range(len(table))]
    save_table(root, table)
    return "rating", [f"row {row} (" for row in range(2, 2 + N_PANELS * PHOTOS)] + ["18 problem(s)"]


def _missing_column(column, task):
    def spoil(root):
        save_table(root, table_of(root).drop(columns=[column]))
        return task, ["manifest.csv", "missing column", repr(column)]
    return spoil


def _missing_image(root):
    set_cell(root, 4, "image_path", "images/nope.png")
    return "segmentation", ["row 4 (images/nope.png)", "nope.png not found"]


def _missing_mask(root):
    set_cell(root, 4, "mask_path", "masks/nope.png")
    return "segmentation", ["row 4", "mask file", "nope.png not found"]


def _outside(root) -> Path:
    """A valid photo outside the data root (beside it)."""
    outside = root.parent / "outside"
    outside.mkdir(exist_ok=True)
    shutil.copy(photo(root, 5), outside / "x.png")
    shutil.copy(photo(root, 5, "mask_path"), outside / "x_mask.png")
    return outside


def _absolute_image_path(root):
    set_cell(root, 5, "image_path", str(_outside(root) / "x.png"))
    return "segmentation", ["row 5", "image_path", "absolute", "relative to the data root"]


def _absolute_mask_path(root):
    set_cell(root, 5, "mask_path", str(_outside(root) / "x_mask.png"))
    return "segmentation", ["row 5", "mask_path", "absolute"]


def _absolute_etc_passwd(root):
    set_cell(root, 5, "image_path", "/etc/passwd")
    return "segmentation", ["row 5", "image_path", "absolute"]


def _dotdot_image_path(root):
    _outside(root)
    set_cell(root, 5, "image_path", "../outside/x.png")
    return "segmentation", ["row 5", "image_path", "'../outside/x.png'", "outside the data root"]


def _dotdot_inside_the_root(root):
    # "images/../../outside/x.png" starts inside but climbs out.
    _outside(root)
    set_cell(root, 5, "mask_path", "masks/../../outside/x_mask.png")
    return "segmentation", ["row 5", "mask_path", "outside the data root"]


def _symlink_out_of_the_root(root):
    target = _outside(root) / "x.png"
    link = root / "images" / "link.png"
    link.symlink_to(target)
    set_cell(root, 5, "image_path", "images/link.png")
    return "rating", ["row 5", "image_path", "images/link.png", "outside the data root"]


def _symlinked_folder_out_of_the_root(root):
    _outside(root)
    (root / "elsewhere").symlink_to(root.parent / "outside", target_is_directory=True)
    set_cell(root, 5, "image_path", "elsewhere/x.png")
    return "rating", ["row 5", "image_path", "outside the data root"]


def _image_path_is_a_folder(root):
    set_cell(root, 2, "image_path", "images")
    return "segmentation", ["row 2 (images)", "folder"]


def _empty_folder(root):
    shutil.rmtree(root)
    root.mkdir()
    return "segmentation", ["manifest.csv not found"]


def _header_only(root):
    (root / "manifest.csv").write_text(",".join(COLUMNS) + "\n")
    return "segmentation", ["no rows"]


def _latin1_csv(root):
    text = (root / "manifest.csv").read_text().replace("panel-0003", "éprouvette-3")
    (root / "manifest.csv").write_bytes(text.encode("latin-1"))
    return "segmentation", ["manifest.csv", "UTF-8", "row 8"]  # the first row naming panel-0003


def _ragged_row(root):
    lines = (root / "manifest.csv").read_text().splitlines()
    lines[3] += ",extra,cells"
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return "segmentation", ["manifest.csv", "line 4"]


def _empty_panel_id(root):
    set_cell(root, 5, "panel_id", "")
    return "segmentation", ["row 5", "missing panel_id"]


def _blank_panel_id(root):
    set_cell(root, 5, "panel_id", " \t\u00a0")
    return "segmentation", ["row 5", "missing panel_id"]


def _duplicated_row(root):
    table = table_of(root)
    save_table(root, pd.concat([table, table.iloc[[0]]], ignore_index=True))
    return "segmentation", ["images/panel-0000_photo0.png listed more than once"]


def _same_photo_under_two_names(root):
    # "./images/x.png" and "images/x.png" are one photo: as two items it could sit in train and in test.
    table = table_of(root)
    extra = table.iloc[[0]].copy()
    extra["image_path"] = "./" + extra["image_path"]
    extra["panel_id"] = "panel-0099"
    save_table(root, pd.concat([table, extra], ignore_index=True))
    return "segmentation", ["row 20 (./images/panel-0000_photo0.png)", "same file as row 2"]


def _groups_differing_in_case(root):
    set_cell(root, 3, "panel_id", "PANEL-0000")
    return "segmentation", ["'PANEL-0000'", "'panel-0000'", "row 3", "row 2", "case"]


def _several_problems_at_once(root):
    set_cell(root, 7, "image_path", "images/missing.png")
    truncate(photo(root, 10))
    photo(root, 12, "mask_path").write_bytes(png_bytes(np.full((32, 32), 128, np.uint8)))
    return "segmentation", ["3 problem(s)", "row 7 (images/missing.png)", "row 10", "truncated",
                            "row 12", "has values [128]"]


BAD = {
    "2.1 truncated png": _truncated_png,
    "2.2 truncated jpeg": _truncated_jpeg,
    "2.3 truncated mask": _truncated_mask,
    "2.4 empty image file": _empty_image,
    "2.5 png header claims 30000x30000": _png_bomb,
    "2.5 png header just over the pixel limit": _png_bomb_under_twice_the_limit,
    "2.5 tiff header claims 40000x40000": _tiff_bomb,
    "2.5 mask header claims 30000x30000": _mask_bomb,
    "2.6 mask of another size": _mask_of_another_size,
    "2.7 mask 0/128/255": _mask_values((0, 128, 255)),
    "2.8 mask class ids 0/1/2": _mask_values((0, 1, 2)),
    "2.9 16-bit mask": _mask_values((0, 65535)),
    "2.10 colour mask": _colour_mask,
    "2.11 rating 11": _rating("11"),
    "2.11 rating -1": _rating("-1"),
    "2.11 rating 7.5": _rating("7.5"),
    "2.11 rating seven": _rating("seven"),
    "2.12 a rating the task cannot learn": _rating_outside_the_task,
    "2.12 every rating outside the task": _all_ratings_outside_the_task,
    "2.13 no mask_path": _missing_column("mask_path", "segmentation"),
    "2.13 no panel_id": _missing_column("panel_id", "segmentation"),
    "2.13 no rating": _missing_column("rating", "rating"),
    "2.14 image file missing": _missing_image,
    "2.14 mask file missing": _missing_mask,
    "2.15 absolute image_path": _absolute_image_path,
    "2.15 absolute mask_path": _absolute_mask_path,
    "2.15 /etc/passwd": _absolute_etc_passwd,
    "2.16 ../ out of the root": _dotdot_image_path,
    "2.16 climbs out from inside": _dotdot_inside_the_root,
    "2.16 symlinked file outside": _symlink_out_of_the_root,
    "2.16 symlinked folder outside": _symlinked_folder_out_of_the_root,
    "2.17 image_path is a folder": _image_path_is_a_folder,
    "2.21 empty folder": _empty_folder,
    "2.22 header only": _header_only,
    "2.23 latin-1 csv": _latin1_csv,
    "2.25 ragged row": _ragged_row,
    "2.26 empty panel_id": _empty_panel_id,
    "2.26 blank panel_id": _blank_panel_id,
    "2.27 duplicated row": _duplicated_row,
    "2.27 one photo under two names": _same_photo_under_two_names,
    "2.28 groups differing only in case": _groups_differing_in_case,
    "2.30 several problems at once": _several_problems_at_once,
}


@pytest.mark.parametrize("spoil", list(BAD.values()), ids=list(BAD))
def test_bad_data_fails_data_check_naming_the_problem(root, spoil, capsys):
    task, expected = spoil(root)
    rc, output = cli_check(root, capsys, task)
    assert rc == 2, output
    assert "Traceback" not in output
    missing = [text for text in expected if text not in output]
    assert not missing, f"{missing} not in:\n{output}"


@pytest.mark.parametrize("spoil", [_absolute_image_path, _dotdot_image_path, _symlink_out_of_the_root,
                                   _rating_outside_the_task, _png_bomb, _groups_differing_in_case],
                         ids=["absolute", "dotdot", "symlink", "rating 3", "bomb", "case"])
def test_bad_data_fails_bench_before_anything_is_written(root, spoil, tmp_path, capsys):
    """2.29 (and the bench half of 2.5, 2.12, 2.15, 2.16): rc 2 and no fold manifest, record or run folder."""
    task, expected = spoil(root)
    config = (tiny_rating_config(tmp_path, {"rf": {"class": "matcv.lightning_modules.rating_baselines."
                                                            "HandCraftedRatingBaseline", "args": {}}})
              if task == "rating" else tiny_task_config(tmp_path))
    out = tmp_path / "runs"
    rc = matcv(["bench", "--task", str(config), "--data-root", str(root), "--output", str(out),
                "--leaderboard-dir", str(tmp_path / "board"), "--no-progress", "--no-wandb"])
    output = capsys.readouterr()
    assert rc == 2, output
    assert all(text in output.err for text in expected), output.err
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


# --- the reader functions themselves --------------------------------------------------------------------------

@pytest.mark.parametrize("claim", [png_claiming(30000, 30000), png_claiming(10000, 9000)], ids=["error", "warning"])
@pytest.mark.parametrize("reader", ["image", "mask"])
def test_readers_turn_decompression_bombs_into_manifest_errors(root, claim, reader):
    record = next(load_manifest(root).itertuples(index=False))
    column = "image_path" if reader == "image" else "mask_path"
    (root / getattr(record, column)).write_bytes(claim)
    with pytest.raises(ManifestError, match=r"row 2: .*panel-0000_photo0\.png.*pixels"):
        read_image(root, record) if reader == "image" else read_mask(root, record, (32, 32))


def test_microstructure_and_alloy_images_refuse_decompression_bombs(tmp_path):
    from matcv.datamodules.microstructure_images import load_images

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "good.png")
    (tmp_path / "bomb.png").write_bytes(png_claiming(30000, 30000))
    with pytest.raises(ManifestError, match=r"bomb\.png.*pixels"):
        load_images(tmp_path, ["good.png", "bomb.png"])


def test_microstructure_images_stay_inside_the_data_root(tmp_path):
    from matcv.datamodules.microstructure_images import load_images

    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "good.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(outside / "x.png")
    (root / "link.png").symlink_to(outside / "x.png")
    with pytest.raises(ManifestError) as info:
        load_images(root, ["good.png", "link.png", "../outside/x.png", str(outside / "x.png")])
    message = str(info.value)
    assert "3 bad" in message and "link.png" in message and "outside the data root" in message


# --- group ids --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spelling", ["panel-0000 ", " panel-0000", "panel-0000\t", "panel-0000\u00a0",
                                      "\ufeffpanel-0000", "panel-0000\u200b"],
                         ids=["trailing space", "leading space", "tab", "nbsp", "bom", "zero-width space"])
def test_a_group_spelt_with_surrounding_space_is_one_group(root, spelling, capsys):
    """2.28: the photos of one panel must never be split, however its id is padded."""
    set_cell(root, 2, "panel_id", spelling)
    index = CorrosionPanelsDataModule.check_dataset(root, progress=False)
    assert index["groups"][:2] == ["panel-0000", "panel-0000"]
    assert len(set(index["groups"])) == N_PANELS
    rc, output = cli_check(root, capsys)
    assert rc == 0 and f"{N_PANELS} groups" in output
    manifest = make_fold_manifest(index["items"], index["groups"], index["strata"], n_folds=3, val_fraction=0.25)
    for fold in manifest["folds"]:
        holding = [part for part, items in fold.items() if "images/panel-0000_photo0.png" in items
                   or "images/panel-0000_photo1.png" in items]
        assert len(holding) == 1, fold


def test_unicode_forms_of_one_group_are_one_group(root):
    composed = unicodedata.normalize("NFC", "éprouvette-1")
    set_cell(root, 2, "panel_id", composed)
    set_cell(root, 3, "panel_id", unicodedata.normalize("NFD", composed))
    groups = CorrosionPanelsDataModule.index_dataset(root)["groups"]
    assert groups[0] == groups[1] == composed


def test_groups_differing_only_in_inner_spacing_are_an_error(root):
    set_cell(root, 3, "panel_id", "panel - 0000")
    set_cell(root, 2, "panel_id", "panel -0000")
    message = check(root)
    assert "'panel - 0000'" in message and "'panel -0000'" in message


def test_fold_manifests_refuse_groups_that_differ_only_in_case_or_spacing():
    """Whatever DataModule hands over the groups, the folds drawn from them must not split one specimen."""
    items = [f"i{k}" for k in range(8)]
    groups = ["a", "a ", "b", "b", "c", "c", "D", "d"]
    with pytest.raises(FoldManifestError) as info:
        make_fold_manifest(items, groups, n_folds=2, val_fraction=0.34)
    message = str(info.value)
    assert "'a'" in message and "'a '" in message and "'D'" in message and "'d'" in message


def test_empty_group_in_a_fold_manifest_is_refused():
    with pytest.raises(FoldManifestError, match="empty"):
        make_fold_manifest(["a", "b", "c", "d"], ["g1", "g2", " ", "g3"], n_folds=2, val_fraction=0.4)


# --- ratings the task cannot learn ------------------------------------------------------------------------------

def test_rating_classes_follow_the_datamodule_argument(root):
    set_cell(root, 3, "rating", "3")
    assert "row 3" in check(root, "rating")
    # A task whose models learn ratings 3..9 says so to its DataModule too.
    index = CorrosionPanelsDataModule.check_dataset(root, target="rating", rating_classes=[3, 4, 5, 6, 7, 8, 9],
                                                    progress=False)
    assert 3 in index["strata"]
    # Segmentation does not learn ratings (they only stratify the folds).
    assert len(CorrosionPanelsDataModule.check_dataset(root, progress=False)["items"]) == N_PANELS * PHOTOS


def test_ordinal_task_checks_ratings_too(root, capsys):
    set_cell(root, 3, "rating", "4")
    rc, output = cli_check(root, capsys, "ordinal")
    assert rc == 2 and "row 3" in output and "rating 4" in output


# --- too few groups --------------------------------------------------------------------------------------------

def _keep_panels(root: Path, n: int) -> None:
    table = table_of(root)
    save_table(root, table[table["panel_id"].isin([f"panel-{k:04d}" for k in range(n)])])


def test_too_few_groups_for_the_folds_is_clear(root, tmp_path, capsys):
    """2.19: 2 groups, 3 folds."""
    _keep_panels(root, 2)
    rc, output = cli_check(root, capsys)
    assert rc == 0  # data --check does not know the folds
    out = tmp_path / "runs"
    rc = matcv(["bench", "--task", str(tiny_task_config(tmp_path)), "--data-root", str(root), "--output", str(out),
                "--no-progress", "--no-wandb", "--leaderboard-dir", str(tmp_path / "board")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "3" in err and "only 2 groups" in err and "panel_id" in err
    assert not [p for p in out.rglob("*") if p.is_file()]


@pytest.mark.parametrize("n_groups", [3, 4])
def test_too_few_groups_for_the_validation_split_names_val_fraction(root, tmp_path, n_groups, capsys):
    """2.20: enough groups for 3 test folds, too few for the inner validation split at val_fraction 0.25."""
    _keep_panels(root, n_groups)
    out = tmp_path / "runs"
    rc = matcv(["bench", "--task", str(tiny_task_config(tmp_path)), "--data-root", str(root), "--output", str(out),
                "--no-progress", "--no-wandb", "--leaderboard-dir", str(tmp_path / "board")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "val_fraction 0.25" in err and "validation" in err
    assert f"{n_groups} groups" in err and "training part" in err
    assert "4 " in err  # what was asked: 1 / 0.25 inner splits
    assert not [p for p in out.rglob("*") if p.is_file()]


def test_too_few_groups_message_in_make_fold_manifest():
    items = [f"{g}{j}" for g in "abc" for j in range(2)]
    with pytest.raises(FoldManifestError) as info:
        make_fold_manifest(items, [i[0] for i in items], n_folds=3, val_fraction=0.25, group_column="panel_id")
    message = str(info.value)
    assert "val_fraction 0.25" in message and "4 grouped splits" in message and "only 2 groups" in message
    assert "training part" in message and "3 groups" in message


# --- what must keep working -------------------------------------------------------------------------------------

def test_the_good_root_passes(root, capsys):
    rc, output = cli_check(root, capsys)
    assert rc == 0 and f"OK - {N_PANELS * PHOTOS} images in {N_PANELS} groups" in output
    rc, output = cli_check(root, capsys, "rating")
    assert rc == 0, output


def test_a_panel_with_one_photo_is_accepted(root, capsys):
    """2.18"""
    save_table(root, table_of(root).iloc[1:])
    rc, output = cli_check(root, capsys)
    assert rc == 0 and f"{N_PANELS * PHOTOS - 1} images in {N_PANELS} groups" in output
    index = CorrosionPanelsDataModule.index_dataset(root)
    manifest = make_fold_manifest(index["items"], index["groups"], index["strata"], n_folds=3, val_fraction=0.25)
    assert len(manifest["folds"]) == 3


def test_an_excel_bom_is_accepted(root, capsys):
    """2.24"""
    (root / "manifest.csv").write_bytes("\ufeff".encode() + (root / "manifest.csv").read_bytes())
    rc, output = cli_check(root, capsys)
    assert rc == 0, output


def test_subfolders_and_dot_segments_inside_the_root_are_accepted(root, capsys):
    """Paths that stay inside the root are fine, however they are written; a symlink inside the root too."""
    (root / "images" / "sub").mkdir()
    shutil.move(photo(root, 2), root / "images" / "sub" / "a.png")
    set_cell(root, 2, "image_path", "images/sub/../sub/./a.png")
    (root / "images" / "alias.png").symlink_to(photo(root, 3))
    set_cell(root, 3, "image_path", "images/alias.png")
    rc, output = cli_check(root, capsys)
    assert rc == 0, output


def test_numeric_and_na_looking_group_ids_are_kept(root):
    set_cell(root, 2, "panel_id", "007")
    set_cell(root, 3, "panel_id", "007")
    set_cell(root, 4, "panel_id", "NA")
    set_cell(root, 5, "panel_id", "NA")
    groups = CorrosionPanelsDataModule.index_dataset(root)["groups"]
    assert groups[:4] == ["007", "007", "NA", "NA"]


def test_bench_on_padded_group_ids_keeps_the_panel_together(root, tmp_path, capsys):
    """2.28 end to end: the fold manifest written by a bench puts both photos of the padded panel together."""
    import json

    set_cell(root, 2, "panel_id", "panel-0000 ")
    out = tmp_path / "runs"
    rc = matcv(["bench", "--task", str(tiny_task_config(tmp_path)), "--data-root", str(root), "--output", str(out),
                "--models", "predict-nothing", "--no-progress", "--no-wandb",
                "--leaderboard-dir", str(tmp_path / "board")])
    assert rc == 0, capsys.readouterr().err
    manifest = json.loads(next(out.rglob("fold_manifest.json")).read_text())
    assert set(manifest["groups"].values()) == {f"panel-{k:04d}" for k in range(N_PANELS)}


def _alloy_root(root: Path, rows: list[str]) -> Path:
    from matcv.datamodules.measurements.alloys import CONDITION_COLUMNS

    root.mkdir(parents=True)
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / name)
    (root / "manifest.csv").write_text("\n".join([",".join(["image_path", *CONDITION_COLUMNS, "alloy"]), *rows])
                                       + "\n")
    return root


def test_alloy_check_lists_row_and_file_problems_in_one_pass(tmp_path):
    from matcv.datamodules.alloy_micrographs import AlloyMicrographDataModule

    root = _alloy_root(tmp_path / "alloys", ["a.png,7,0.5,0,0.3,0.3,0,10,1,A356",
                                             "b.png,-7,0.5,0,0.3,0.3,0,10,1,A357",
                                             "bomb.png,7,0.5,0,0.3,0.3,0,10,0,A356"])
    (root / "bomb.png").write_bytes(png_claiming(30000, 30000))
    with pytest.raises(ManifestError) as info:
        AlloyMicrographDataModule.check_dataset(root, progress=False)
    message = str(info.value)
    assert "row 3, column Si" in message and "negative" in message  # the row problem
    assert "bomb.png" in message and "pixels" in message  # and the file problem, in the same error


def test_alloy_names_differing_only_in_case_are_refused(tmp_path):
    from matcv.datamodules.alloy_micrographs import AlloyMicrographDataModule

    root = _alloy_root(tmp_path / "alloys", ["a.png,7,0.5,0,0.3,0.3,0,10,1,A356 ",
                                             "b.png,7,0.5,0,0.3,0.3,0,10,0,a356",
                                             "c.png,12,0.5,0,0.3,0.3,0,10,0,A393"])
    with pytest.raises(ManifestError, match=r"'A356' \(row 2\) and 'a356' \(row 3\) differ only in case"):
        AlloyMicrographDataModule.check_dataset(root, progress=False)
    (root / "manifest.csv").write_text((root / "manifest.csv").read_text().replace("a356", "A356"))
    index = AlloyMicrographDataModule.check_dataset(root, progress=False)
    assert index["groups"] == ["A356", "A356", "A393"]  # "A356 " is A356


def test_localization_groups_are_normalised_and_case_clashes_refused(tmp_path):
    from matcv.datamodules.localization_layouts import scan_items
    from matcv.datamodules.synthetic.localization import MICROSTRUCTURES_NAME, STRAINS_NAME

    np.save(tmp_path / MICROSTRUCTURES_NAME, np.zeros((3, 4, 4, 4), np.uint8))
    np.save(tmp_path / STRAINS_NAME, np.ones((3, 4, 4, 4), np.float32))
    lines = ["item_id,group,index", "v0,sigma_1_2_3,0", "v1,sigma_1_2_3 ,1", "v2,sigma_3_2_1,2"]
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    assert [item.group for item in scan_items(tmp_path)] == ["sigma_1_2_3", "sigma_1_2_3", "sigma_3_2_1"]
    (tmp_path / "manifest.csv").write_text("\n".join(lines).replace("sigma_3_2_1", "SIGMA_1_2_3") + "\n")
    with pytest.raises(ManifestError, match="differ only in case"):
        scan_items(tmp_path)
