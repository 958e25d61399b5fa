"""Per-item evaluation of a panel segmentation: the ASTM rating measured from a mask, stains, flags."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from matcv.datamodules.manifest import ManifestSpec, load_manifest
from matcv.datamodules.panel_evaluation import (
    PanelItemEvaluator,
    rate_mask,
    rescale_lines,
    scribe_width_from_generator,
)
from matcv.datamodules.synthetic.panels import (
    PanelGeneratorConfig,
    generate_panels,
    parse_scribe_lines,
)

SPEC = ManifestSpec(group_column="panel_id", require_mask=True, require_rating=True)


@pytest.fixture(scope="module")
def panels(tmp_path_factory):
    """40 panels, one 128-px photo each (the quick profile's resolution), every rating 5-9, stains likely."""
    root = generate_panels(PanelGeneratorConfig(n_panels=40, photos_per_panel=1, image_size=128, seed=7,
                                                stain_prob=0.8), tmp_path_factory.mktemp("panels"), progress=False)
    return root, load_manifest(root, SPEC)


def _mask(root, path) -> np.ndarray:
    return np.asarray(Image.open(root / path)) > 0


def test_rating_from_the_true_mask_recovers_the_generators_rating(panels):
    root, table = panels
    width = scribe_width_from_generator(root)
    assert width == PanelGeneratorConfig().scribe_width_mm
    matches = [rate_mask(_mask(root, r.mask_path), parse_scribe_lines(r.scribe_lines_px), width, float(r.mm_per_px))
               == int(r.rating) for r in table.itertuples(index=False)]
    assert sorted(set(table["rating"])) == [5, 6, 7, 8, 9]
    assert np.mean(matches) >= 0.95, f"{sum(matches)}/{len(matches)} photos rated right from their true mask"


def _evaluator(root, table) -> PanelItemEvaluator:
    items = list(table["image_path"])
    return PanelItemEvaluator.for_items(table, items, root, {i: (128, 128) for i in items}, 128)


def test_item_evaluator_flags_ratings_and_stain_false_positives(panels):
    root, table = panels
    evaluate = _evaluator(root, table)
    stained = [r for r in table.itertuples(index=False) if r.stain == "1"]
    clean = [r for r in table.itertuples(index=False) if r.stain == "0"]
    assert stained and clean
    for record in stained[:5]:
        truth = _mask(root, record.mask_path)
        perfect = evaluate(record.image_path, truth, truth)
        assert perfect["stain"] is True and perfect["thin"] in (True, False)
        assert perfect["stain_fp_fraction"] == 0.0  # nothing predicted on the stains
        everything = evaluate(record.image_path, np.ones_like(truth), truth)
        assert everything["stain_fp_fraction"] == 1.0  # every stain pixel predicted as corrosion
        assert everything["rating_match_true_mask"] == perfect["rating_match_true_mask"]
        nothing = evaluate(record.image_path, np.zeros_like(truth), truth)
        assert nothing["rating_from_mask"] == 10 and nothing["rating_match"] == 0.0  # no creep: rating 10
    # A stain mask exists for every photo; without a stain there is no stain area to score.
    record = clean[0]
    truth = _mask(root, record.mask_path)
    assert evaluate(record.image_path, truth, truth)["stain_fp_fraction"] is None


def test_half_of_a_stain_predicted_reads_one_half(panels):
    root, table = panels
    evaluate = _evaluator(root, table)
    record = next(r for r in table.itertuples(index=False) if r.stain == "1")
    truth = _mask(root, record.mask_path)
    stain = _mask(root, record.stain_mask_path) & ~truth
    predicted = np.zeros_like(truth)
    rows, cols = np.nonzero(stain)
    half = np.argsort(rows * 1000 + cols)[: len(rows) // 2]
    predicted[rows[half], cols[half]] = True
    assert evaluate(record.image_path, predicted, truth)["stain_fp_fraction"] == pytest.approx(
        (len(rows) // 2) / len(rows))


def test_scribe_lines_follow_a_resized_photo():
    # pixel centres: x' = (x + 0.5) * scale - 0.5; the photo's corners stay its corners
    (line,) = rescale_lines([(-0.5, -0.5, 127.5, 127.5)], 0.5)
    assert line == pytest.approx((-0.5, -0.5, 63.5, 63.5))


def test_a_manifest_without_panel_columns_has_no_evaluator(tmp_path):
    import pandas as pd

    table = pd.DataFrame({"image_path": ["a.png"], "mask_path": ["a_mask.png"], "panel_id": ["p1"]})
    assert PanelItemEvaluator.for_items(table, ["a.png"], tmp_path, {"a.png": (8, 8)}, 8) is None


def test_the_evaluator_survives_pickling_for_ddp_spawn(panels):
    """A spawned DDP run pickles the datamodule, evaluator included (pandas row tuples would not pickle)."""
    import pickle

    root, table = panels
    evaluate = _evaluator(root, table)
    record = next(r for r in table.itertuples(index=False) if r.stain == "1")
    truth = _mask(root, record.mask_path)
    copy = pickle.loads(pickle.dumps(evaluate))  # our own object, made here: not user data
    assert copy(record.image_path, truth, truth) == evaluate(record.image_path, truth, truth)
