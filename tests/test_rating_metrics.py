"""Rating metrics on hand-worked confusion matrices; kappa recomputed from its formula."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from matcv.lightning_modules.rating_metrics import (
    confusion,
    rating_metrics,
    save_confusion_figure,
)

RATINGS = [5, 6, 7, 8, 9]
TRUE = [5, 6, 7, 8, 9, 9]
PREDICTED = [5, 7, 7, 8, 8, 9]  # 6 -> 7 and 9 -> 8 wrong, each by one rating


def _qwk_by_formula(observed: np.ndarray) -> float:
    """κ = 1 − Σ w_ij O_ij / Σ w_ij E_ij, w_ij = (i − j)² / (K − 1)², E = outer(row sums, column sums) / n."""
    k = observed.shape[0]
    i, j = np.indices((k, k))
    weights = (i - j) ** 2 / (k - 1) ** 2
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    return 1 - (weights * observed).sum() / (weights * expected).sum()


def test_confusion_matrix_is_rows_true_columns_predicted():
    expected = np.array([[1, 0, 0, 0, 0],   # true 5
                         [0, 0, 1, 0, 0],   # true 6, predicted 7
                         [0, 0, 1, 0, 0],   # true 7
                         [0, 0, 0, 1, 0],   # true 8
                         [0, 0, 0, 1, 1]])  # true 9: once 8, once 9
    assert np.array_equal(confusion(TRUE, PREDICTED, RATINGS), expected)


def test_hand_worked_fold():
    scores = rating_metrics(TRUE, PREDICTED, RATINGS)
    assert set(scores) == {"accuracy", "macro_f1", "qwk", "mae", "within_1"}
    assert all(isinstance(value, float) for value in scores.values())
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["mae"] == pytest.approx(2 / 6)
    assert scores["within_1"] == 1.0
    # Per rating (precision, recall -> F1): 5 (1, 1) -> 1; 6 (0/0 -> 0, 0) -> 0; 7 (1/2, 1) -> 2/3;
    # 8 (1/2, 1) -> 2/3; 9 (1, 1/2) -> 2/3. Macro = (1 + 0 + 3 · 2/3) / 5 = 3/5.
    assert scores["macro_f1"] == pytest.approx(3 / 5)
    # By hand: Σ w O = 2/16 (two cells one step off); rows (1,1,1,1,2), columns (1,0,2,2,1) give
    # Σ_ij r_i c_j (i − j)² = 136, so Σ w E = 136 / (6 · 16); κ = 1 − (2/16) / (136/96) = 31/34.
    observed = confusion(TRUE, PREDICTED, RATINGS)
    assert _qwk_by_formula(observed) == pytest.approx(31 / 34)
    assert scores["qwk"] == pytest.approx(31 / 34)


def test_far_misses_cost_more_kappa_than_near_misses():
    true = [5, 6, 7, 8, 9, 9]
    near = rating_metrics(true, [5, 7, 7, 8, 8, 9], RATINGS)
    far = rating_metrics(true, [5, 9, 7, 8, 5, 9], RATINGS)  # same accuracy, misses four ratings off
    assert near["accuracy"] == far["accuracy"]
    assert far["qwk"] < near["qwk"]
    assert far["qwk"] == pytest.approx(_qwk_by_formula(confusion(true, [5, 9, 7, 8, 5, 9], RATINGS)))
    assert far["mae"] == pytest.approx((3 + 4) / 6) and far["within_1"] == pytest.approx(4 / 6)


def test_perfect_prediction():
    scores = rating_metrics(RATINGS, RATINGS, RATINGS)
    assert scores == {"accuracy": 1.0, "macro_f1": 1.0, "qwk": 1.0, "mae": 0.0, "within_1": 1.0}


def test_reversed_order_gives_negative_kappa():
    scores = rating_metrics([5, 6, 7, 8, 9], [9, 8, 7, 6, 5], RATINGS)
    # Σ w O = (16 + 4 + 0 + 4 + 16)/16 = 40/16; E = 1/5 everywhere, Σ_ij (i − j)² = 100 -> Σ w E = 20/16.
    assert scores["qwk"] == pytest.approx(-1.0)
    assert scores["accuracy"] == pytest.approx(1 / 5)
    assert scores["mae"] == pytest.approx((4 + 2 + 0 + 2 + 4) / 5)


def test_one_rating_everywhere_is_defined():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no sklearn "kappa undefined" warning, no nan
        scores = rating_metrics([8, 8, 8], [8, 8, 8], RATINGS)
    assert scores["qwk"] == 1.0 and scores["accuracy"] == 1.0
    # macro-F1 spans the whole scale: ratings absent from truth and predictions count as 0.
    assert scores["macro_f1"] == pytest.approx(1 / 5)
    # All one rating, all predicted another: no agreement beyond chance.
    wrong = rating_metrics([8, 8], [7, 7], RATINGS)
    assert wrong["qwk"] == 0.0 and wrong["accuracy"] == 0.0 and wrong["within_1"] == 1.0


def test_absent_rating_keeps_a_full_confusion_matrix():
    matrix = confusion([5, 6, 6], [5, 6, 5], [5, 6, 7, 8])
    assert matrix.shape == (4, 4)
    assert np.array_equal(matrix, [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert matrix[2:].sum() == 0 and matrix[:, 2:].sum() == 0


def test_ratings_outside_the_scale_are_refused():
    # sklearn would silently drop the 4 from kappa and the matrix (kappa 1.0 for a wrong answer).
    with pytest.raises(ValueError, match=r"\[4\]"):
        rating_metrics([5, 6, 7], [5, 6, 4], RATINGS)
    with pytest.raises(ValueError, match="not among labels"):
        confusion([5, 10], [5, 9], RATINGS)
    with pytest.raises(ValueError):
        rating_metrics([5, 6], [5], RATINGS)


def test_confusion_figure_is_a_png(tmp_path):
    matrix = confusion(TRUE, PREDICTED, RATINGS)
    path = save_confusion_figure(tmp_path / "figures" / "confusion.png", matrix, RATINGS, "fold 0: ce")
    assert path == tmp_path / "figures" / "confusion.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 100 and image.height > 100
    assert [p.name for p in path.parent.iterdir()] == ["confusion.png"]  # no temporary file left behind
    with pytest.raises(ValueError):
        save_confusion_figure(tmp_path / "bad.png", matrix[:4, :4], RATINGS, "wrong size")
