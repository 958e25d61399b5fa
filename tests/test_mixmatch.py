"""MixMatch with unlabelled photos: the algorithm's arithmetic on hand-computed cases, unlabelled rows of a
manifest (in no fold; never trained on when their panel is held out), generated unlabelled panels that leave the
labelled data and its hashes as they were, one MixMatch training step and the data check's count."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch

from matcv.benchmarks.cli import main
from matcv.datamodules.corrosion import CorrosionPanelsDataModule
from matcv.datamodules.folds import make_fold_manifest, write_fold_manifest
from matcv.datamodules.synthetic.panels import PanelGeneratorConfig, generate_panels
from matcv.lightning_modules.mixmatch import MixMatchRater, guess_labels, linear_rampup, mix_batches, mixup, sharpen

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.filterwarnings("ignore::UserWarning")]

# A coarse raster (0.2 mm): six times faster to draw than the default, still consistent for these panels.
SMALL = dict(n_panels=6, photos_per_panel=2, image_size=32, ratings=(5, 7, 9), panel_mm_per_px=0.2)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, Path]:
    """(the same small generator without and with 3 unlabelled panels)."""
    tmp = tmp_path_factory.mktemp("mixmatch-data")
    plain = generate_panels(PanelGeneratorConfig(**SMALL), tmp / "plain", progress=False)
    extra = generate_panels(PanelGeneratorConfig(**SMALL, n_unlabelled_panels=3), tmp / "extra", progress=False)
    return plain, extra


def read_rows(root: Path) -> list[dict]:
    with open(root / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def folds_for(root: Path, tmp: Path, n_folds: int = 3) -> Path:
    index = CorrosionPanelsDataModule.index_dataset(root, target="rating")
    manifest = make_fold_manifest(index["items"], index["groups"], index["strata"], n_folds=n_folds,
                                  val_fraction=0.34, seed=0)  # 6 panels: 2 tested, 1 of 4 for validation
    path = tmp / "folds.json"
    write_fold_manifest(path, manifest)
    return path


def datamodule(root: Path, folds: Path, fold: int, **kwargs) -> CorrosionPanelsDataModule:
    dm = CorrosionPanelsDataModule(folds, fold, data_root=root, target="rating", image_size=32, batch_size=4,
                                   **kwargs)
    dm.setup("fit")
    return dm


# --- the algorithm's arithmetic ------------------------------------------------------------------------------


def test_sharpen_and_label_guess_by_hand():
    # (0.2, 0.8) at T = 0.5: squares 0.04, 0.64 over 0.68.
    assert torch.allclose(sharpen(torch.tensor([[0.2, 0.8]]), 0.5), torch.tensor([[0.04 / 0.68, 0.64 / 0.68]]))
    assert torch.allclose(sharpen(torch.tensor([[0.2, 0.8]]), 1.0), torch.tensor([[0.2, 0.8]]))  # T = 1: unchanged
    # Two views (0.1, 0.9) and (0.5, 0.5) average to (0.3, 0.7); T = 0.5 gives (0.09, 0.49) / 0.58.
    views = torch.tensor([[[0.1, 0.9], [0.5, 0.5]]])
    assert torch.allclose(guess_labels(views, 0.5), torch.tensor([[0.09 / 0.58, 0.49 / 0.58]]))
    with pytest.raises(ValueError, match="temperature"):
        sharpen(views, 0.0)


def test_mixup_keeps_the_larger_weight_on_its_own_example():
    x1, x2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    y1, y2 = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0]])
    for lam in (0.3, 0.7):  # lambda' = max(lambda, 1 - lambda) = 0.7 either way
        mx, my = mixup(x1, y1, x2, y2, torch.tensor([lam]))
        assert torch.allclose(mx, torch.tensor([[0.7, 0.3]])) and torch.allclose(my, torch.tensor([[0.7, 0.0, 0.3]]))


def test_mix_batches_pairs_labelled_and_unlabelled_through_the_shuffled_concat():
    x, p = torch.tensor([[10.0]]), torch.tensor([[1.0, 0.0]])  # one labelled example, class 0
    u, q = torch.tensor([[20.0], [30.0]]), torch.tensor([[0.0, 1.0], [0.5, 0.5]])  # two unlabelled, with guesses
    order = torch.tensor([2, 0, 1])  # W = (u2, x, u1)
    lam = torch.tensor([0.9, 0.2, 0.5])  # lambda' = 0.9, 0.8, 0.5
    mx, mp, mu, mq = mix_batches(x, p, u, q, lam, order)
    assert torch.allclose(mx, torch.tensor([[0.9 * 10 + 0.1 * 30]]))
    assert torch.allclose(mp, torch.tensor([[0.9 * 1 + 0.1 * 0.5, 0.1 * 0.5]]))
    assert torch.allclose(mu, torch.tensor([[0.8 * 20 + 0.2 * 10], [0.5 * 30 + 0.5 * 20]]))
    assert torch.allclose(mq, torch.tensor([[0.2, 0.8], [0.25, 0.75]]))
    assert [linear_rampup(s, 10) for s in (0, 5, 10, 20)] == [0.0, 0.5, 1.0, 1.0] and linear_rampup(3, 0) == 1.0


# --- unlabelled rows of a manifest -----------------------------------------------------------------------------


def test_generated_unlabelled_panels_leave_the_labelled_data_and_its_hashes_alone(generated, tmp_path):
    plain, extra = generated
    # Without unlabelled panels the settings (and so the cache folder and dataset name) are those of before.
    assert "n_unlabelled_panels" not in PanelGeneratorConfig(**SMALL).to_dict()
    assert PanelGeneratorConfig().fingerprint() == "c2c119948a15c01c"  # quick's dataset, official manifest
    assert PanelGeneratorConfig(n_panels=8, photos_per_panel=2, image_size=64).fingerprint() == "62955e65fa900345"
    assert PanelGeneratorConfig(**SMALL, n_unlabelled_panels=3).fingerprint() != PanelGeneratorConfig(**SMALL).fingerprint()
    rows_plain, rows_extra = read_rows(plain), read_rows(extra)
    assert rows_extra[: len(rows_plain)] == rows_plain  # the labelled panels, photo for photo
    for name in ("images/panel-0000_photo0.png", "masks/panel-0005_photo1.png"):
        assert (plain / name).read_bytes() == (extra / name).read_bytes()
    unlabelled = rows_extra[len(rows_plain):]
    assert len(unlabelled) == 3 * 2
    assert {r["panel_id"] for r in unlabelled} == {"panel-0006", "panel-0007", "panel-0008"}
    assert all(r["rating"] == "" and r["mask_path"] == "" and r["mean_creep_mm"] == "" for r in unlabelled)
    # Same items, groups and strata: the same folds; the data hash covers the unlabelled photos too.
    a = CorrosionPanelsDataModule.index_dataset(plain, target="rating")
    b = CorrosionPanelsDataModule.index_dataset(extra, target="rating")
    assert (a["items"], a["groups"], a["strata"]) == (b["items"], b["groups"], b["strata"])
    assert "unlabelled" not in a and b["unlabelled"] == [r["image_path"] for r in unlabelled]
    assert set(b["files"]) - set(a["files"]) == set(b["unlabelled"])
    assert make_fold_manifest(a["items"], a["groups"], a["strata"], n_folds=3, val_fraction=0.34) == \
        make_fold_manifest(b["items"], b["groups"], b["strata"], n_folds=3, val_fraction=0.34)


def test_unlabelled_rows_never_in_val_test_nor_trained_on_when_their_panel_is_held_out(generated, tmp_path):
    _, extra = generated
    root = tmp_path / "data"
    shutil.copytree(extra, root)
    rows = read_rows(root)
    # A second, unrated photo of every labelled panel (a copy of its first photo under a new name): these share
    # their panel with rated photos, so a fold may train on them only when that panel is in its training part.
    fields = list(rows[0])
    for panel in sorted({r["panel_id"] for r in rows if r["rating"]}):
        name = f"images/{panel}_unrated.png"
        shutil.copy(root / f"images/{panel}_photo0.png", root / name)
        rows.append({**{k: "" for k in fields}, "image_path": name, "panel_id": panel})
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    group = {r["image_path"]: r["panel_id"] for r in rows}
    unlabelled = {r["image_path"] for r in rows if not r["rating"]}
    folds = folds_for(root, tmp_path)
    seen_shared = 0
    for fold in range(3):
        dm = datamodule(root, folds, fold)
        parts = {p: set(dm.datasets[p].item_ids) for p in ("train", "val", "test")}
        assert not unlabelled & (parts["train"] | parts["val"] | parts["test"])  # in no fold
        held_out = {group[i] for i in parts["val"] | parts["test"]}
        used = set(dm.datasets["unlabelled"].item_ids)
        assert used <= unlabelled and dm.n_unlabelled == len(used)
        assert not {group[i] for i in used} & held_out, f"fold {fold} trains on photos of a held-out panel"
        expected = {i for i in unlabelled if group[i] not in held_out}
        assert used == expected  # everything else is used: the training panels' and the unlabelled-only panels'
        seen_shared += len({i for i in used if i.endswith("_unrated.png")})
        # An unlabelled batch: K views of each photo, no rating.
        batch = next(iter(dm.unlabelled_dataloader(views=2)))
        assert batch["image"].shape[1:] == (2, 3, 32, 32) and "rating" not in batch
    assert seen_shared > 0  # the case of a shared panel in the training part was exercised


def test_models_that_do_not_ask_never_see_unlabelled_photos(generated, tmp_path):
    _, extra = generated
    folds = folds_for(extra, tmp_path)
    dm = datamodule(extra, folds, 0)
    assert dm.n_unlabelled == 6  # unlabelled-only panels: usable in every fold
    batch = next(iter(dm.train_dataloader()))  # no Trainer, no model asking: the labelled batches as ever
    assert set(batch) == {"image", "item_id", "rating"}


def test_an_empty_label_is_still_a_problem_for_a_classification(generated, tmp_path):
    from matcv.datamodules.manifest import ManifestError

    _, extra = generated
    with pytest.raises(ManifestError, match="is not among the labels"):
        CorrosionPanelsDataModule.index_dataset(extra, target="rating", labels=["5", "7", "9"])


def test_one_mixmatch_training_step_uses_unlabelled_photos(generated, tmp_path):
    _, extra = generated
    folds = folds_for(extra, tmp_path)
    L.seed_everything(0, workers=True, verbose=False)
    dm = CorrosionPanelsDataModule(folds, 0, data_root=extra, target="rating", image_size=32, batch_size=4)
    model = MixMatchRater(backbone="resnet18", ratings=(5, 7, 9), k_augmentations=2, lambda_u=75.0)
    dm.setup("fit")
    model.set_input_normalization_from(dm)
    model.prepare_from_training_data(dm)
    trainer = L.Trainer(max_steps=1, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0,
                        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 1
    assert torch.isfinite(trainer.callback_metrics["train_loss"])
    assert "train_loss_u" in trainer.callback_metrics and "val_qwk" in trainer.callback_metrics
    L.Trainer(limit_test_batches=1, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
              enable_model_summary=False, default_root_dir=tmp_path).test(model, datamodule=dm, verbose=False)
    details = model.test_details()["unlabelled"]  # what the run's record says
    assert details["photos"] == 6 and 1 <= details["photos_seen"] <= 4 and details["k_augmentations"] == 2


def test_data_check_counts_unlabelled_photos(generated, capsys):
    _, extra = generated
    assert main(["data", "--task", "rating", "--check", str(extra)]) == 0
    out = capsys.readouterr().out
    assert "12 images in 6 groups" in out
    assert "note: 6 unlabelled photo(s) (empty rating) in 3 group(s), 0 of them shared" in out
