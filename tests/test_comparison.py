"""Per-image comparison (rank, diff, W-Inc, Wilcoxon p) and difficulty slices on a hand-worked example.

Without a group for its items (no per-image ``group``, no readable fold manifest) every image is a group of its
own, so the group-level statistics are the per-image ones worked out below; tests/test_statistics.py covers
groups, intervals, Holm, seeds and costs.

Worked example: 3 models x 6 test images, two folds (p1-p3 in fold 0, p4-p6 in fold 1), baseline unet.

    dice      p1    p2    p3    p4    p5    p6
    unet     .80   .60   .40   .70   .50   .30
    edge     .85   .70   .43   .72   .56   .34
    other    .85   .50   .41   .78   .47   .36     (ties edge on p1)

Per-image ranks (1 = best, ties share the average place):
    unet      3     2     3     3     2     3   -> mean 16/6  = 2.6667
    edge    1.5     1     1     2     1     2   -> mean 8.5/6 = 1.4167
    other   1.5     3     2     1     3     1   -> mean 11.5/6 = 1.9167

Differences vs unet:
    edge   +.05  +.10  +.03  +.02  +.06  +.04   -> increase .30/6 = 0.05
    other  +.05  -.10  +.01  +.08  -.03  +.06   -> increase .07/6 = 0.011667
W-Inc weights = unet's ranks (3,2,3,3,2,3), sum 16:
    edge:  3(.05)+2(.10)+3(.03)+3(.02)+2(.06)+3(.04) = .74 -> .74/16 = 0.04625
    other: 3(.05)-2(.10)+3(.01)+3(.08)-2(.03)+3(.06) = .34 -> .34/16 = 0.02125
Wilcoxon (exact, n = 6, 2^6 = 64 equally likely sign patterns under H0):
    edge: all 6 differences positive, T- = 0; only 1 of 64 patterns has T+ <= 0, two-sided p = 2/64 = 0.03125.
    other: |d| ranks .01->1 .03->2 .05->3 .06->4 .08->5 .10->6; negatives p5 (2) and p2 (6): T- = 8, T+ = 13.
           Subsets of {1..6} with sum <= 8: counts for sums 0..8 are 1,1,1,2,2,3,4,4,4 = 22;
           two-sided p = 2 * 22/64 = 0.6875.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from matcv.datamodules.core.records import RunRecords
from matcv.datamodules.core.config import ComparisonSpec
from matcv.leaderboard.build import leaderboard_table, write_leaderboard
from matcv.leaderboard.comparison import (
    compare_to_baseline,
    difficulty_slices,
    format_p,
    item_ranks,
    paired_item_scores,
    rank_shares,
    select_latest_runs,
    wilcoxon_p,
)

MANIFEST, OLD_MANIFEST = "a" * 64, "b" * 64
ITEMS = ["p1", "p2", "p3", "p4", "p5", "p6"]
FOLD_OF = {"p1": 0, "p2": 0, "p3": 0, "p4": 1, "p5": 1, "p6": 1}
DICE = {"unet": [.80, .60, .40, .70, .50, .30],
        "edge": [.85, .70, .43, .72, .56, .34],
        "other": [.85, .50, .41, .78, .47, .36]}
# Item flags (ground truth, the same in every model's record); p6's `thin` is None = not thin, p2-p3
# lack `thin` altogether.
FLAGS = {"p1": {"thin": True, "under_coating": False, "stain": False},
         "p2": {"under_coating": True, "stain": False},
         "p3": {"under_coating": False, "stain": True},
         "p4": {"thin": True, "under_coating": False, "stain": False},
         "p5": {"thin": False, "under_coating": False, "stain": True},
         "p6": {"thin": None, "under_coating": False, "stain": True}}
# Per-model per-item values: FP fraction on stains (None off stains), rating from the mask right (None =
# no rating measurable from that model's mask).
STAIN_FP = {"unet": [None, None, .30, None, .20, .10],
            "edge": [None, None, .10, None, .05, .00],
            "other": [None, None, .20, None, .40, .30]}
RATING_MATCH = {"unet": [1.0, 0.0, 1.0, None, 0.0, 1.0],
                "edge": [1.0, 1.0, 1.0, 1.0, 0.0, 1.0],
                "other": [None, 1.0, 0.0, 1.0, None, 1.0]}


def per_image(model: str, fold: int, dice: dict[str, list[float]] = DICE) -> list[dict]:
    items = []
    for i, item in enumerate(ITEMS):
        if FOLD_OF[item] != fold:
            continue
        d = dice[model][i]
        items.append({"item_id": item, "dice": d, "iou": d / (2 - d), **FLAGS[item],
                      "stain_fp_fraction": STAIN_FP[model][i], "rating_match": RATING_MATCH[model][i]})
    return items


def record(model: str, fold: int, items: list[dict] | None, manifest: str = MANIFEST, status: str = "ok",
           **extra) -> dict:
    rec = {"task": "segmentation", "dataset": "panels", "profile": "quick", "model": model, "fold": fold,
           "status": status, "fold_manifest_sha256": manifest, "fold_manifest": "folds.json", "data_sha256": "d" * 64,
           "config_hash": "c0ffee", "durations": {"fit_s": 10.0}, "key": f"{model}|{fold}"}
    if items is not None:  # None: a record without per-image scores (or a failed run)
        rec["metrics"] = {name: float(np.mean([item[name] for item in items])) for name in ("dice", "iou")}
        rec["per_image"] = items
    rec.update(extra)
    return rec


def worked_records() -> list[dict]:
    zeros = {m: [0.0] * 6 for m in DICE}
    return [
        record("edge", 0, per_image("edge", 0, zeros), manifest=OLD_MANIFEST),  # other folds: ignored
        record("edge", 0, per_image("edge", 0, zeros)),  # superseded by the re-run below
        *(record(model, fold, per_image(model, fold)) for fold in (0, 1) for model in DICE),
    ]


def test_selection_is_the_leaderboard_selection():
    selection = select_latest_runs(worked_records())
    assert selection.fold_manifest_sha256 == MANIFEST
    assert selection.models() == ["edge", "unet", "other"]
    assert selection.runs_of("edge")[0]["per_image"][0]["dice"] == .85  # the re-run, not the zeros
    assert list(leaderboard_table(worked_records(), ["dice"]).table["model"]) == ["edge", "other", "unet"]


def test_paired_scores_rank_increase_w_inc_and_wilcoxon_by_hand():
    scores = paired_item_scores(worked_records(), "dice")
    assert list(scores.index) == ITEMS and set(scores.columns) == {"unet", "edge", "other"}
    assert scores.loc["p5", "edge"] == .56

    ranks = item_ranks(scores)
    assert list(ranks.loc["p1", ["unet", "edge", "other"]]) == [3.0, 1.5, 1.5]  # the tie

    result = compare_to_baseline(scores, "unet")
    assert result.loc["unet", "rank"] == pytest.approx(16 / 6)
    assert result.loc["edge", "rank"] == pytest.approx(8.5 / 6)
    assert result.loc["other", "rank"] == pytest.approx(11.5 / 6)
    assert (result["n_items"] == 6).all() and (result["n_groups"] == 6).all()
    assert result.loc["edge", "diff"] == pytest.approx(0.05)
    assert result.loc["other", "diff"] == pytest.approx(0.07 / 6)
    assert result.loc["unet", "diff"] == 0.0 and result.loc["unet", "w_inc"] == 0.0
    assert result.loc["edge", "w_inc"] == pytest.approx(0.74 / 16)
    assert result.loc["other", "w_inc"] == pytest.approx(0.34 / 16)
    assert result.loc["edge", "p"] == pytest.approx(2 / 64)
    assert result.loc["other", "p"] == pytest.approx(44 / 64)
    assert math.isnan(result.loc["unet", "p"]) and math.isnan(result.loc["unet", "item_p"])
    # Each image its own group: the test over items is the test over groups.
    assert result.loc["edge", "item_p"] == result.loc["edge", "p"]
    # Holm over the two comparisons: 2 x 2/64 for the smaller, max(that, 44/64) for the larger.
    assert result.loc["edge", "p_holm"] == pytest.approx(4 / 64)
    assert result.loc["other", "p_holm"] == pytest.approx(44 / 64)
    # edge: all six differences positive, so its interval lies above 0; edge has the best mean dice.
    assert 0 < result.loc["edge", "diff_ci_low"] < 0.05 < result.loc["edge", "diff_ci_high"]
    assert result.loc["edge", "ci_low"] < result.loc["edge", "group_score"] == pytest.approx(3.6 / 6)
    assert list(result.index[result["is_best"]]) == ["edge"]

    # An error-like metric (lower is better) ranks the same models the same way round.
    lower = compare_to_baseline(1 - scores, "unet", higher_is_better=False)
    assert lower["rank"].to_dict() == pytest.approx(result["rank"].to_dict())
    assert lower.loc["edge", "diff"] == pytest.approx(-0.05)
    assert list(lower.index[lower["is_best"]]) == ["edge"]  # the lowest error is the best


def test_rank_shares_split_ties_and_average_to_the_mean_rank():
    shares = rank_shares(paired_item_scores(worked_records(), "dice"))
    # edge: 1st on p2 p3 p5 and half of p1 (tie) = 3.5/6; 2nd on p4 p6 and the other half of p1 = 2.5/6.
    assert list(shares.loc["edge"]) == pytest.approx([3.5 / 6, 2.5 / 6, 0.0])
    assert list(shares.loc["other"]) == pytest.approx([2.5 / 6, 1.5 / 6, 2 / 6])
    assert list(shares.loc["unet"]) == pytest.approx([0.0, 2 / 6, 4 / 6])
    assert (shares.to_numpy() @ np.array([1, 2, 3])) == pytest.approx([8.5 / 6, 16 / 6, 11.5 / 6])


def test_only_items_every_model_scored_count():
    # `partial` ran fold 0 only, `legacy` kept no per-image scores: p4-p6 drop out for everyone, and
    # legacy is left out of the comparison instead of emptying it.
    records = worked_records() + [record("partial", 0, per_image("edge", 0)),
                                  record("legacy", 0, None, per_image=None)]
    scores = paired_item_scores(records, "dice")
    assert list(scores.index) == ["p1", "p2", "p3"] and "legacy" not in scores.columns
    result = compare_to_baseline(scores, "unet")
    assert (result["n_items"] == 3).all()
    assert result.loc["edge", "diff"] == pytest.approx((.05 + .10 + .03) / 3)
    # partial has edge's scores: both tie with each other everywhere (p1: three-way tie with other).
    assert result.loc["partial", "rank"] == result.loc["edge", "rank"] == pytest.approx((2 + 1.5 + 1.5) / 3)


def test_an_item_tested_twice_is_an_error():
    records = worked_records() + [record("edge", 1, per_image("edge", 1) + per_image("edge", 0)[:1])]
    with pytest.raises(ValueError, match="p1"):
        paired_item_scores(records, "dice")


def test_baseline_absent_keeps_rank_and_omits_the_rest():
    scores = paired_item_scores(worked_records(), "dice")
    result = compare_to_baseline(scores, "deeplab")
    baseline_free = ["rank", "n_items", "n_groups", "group_score", "ci_low", "ci_high", "is_best", "tied_best"]
    assert list(result.columns) == baseline_free
    assert result.loc["edge", "rank"] == pytest.approx(8.5 / 6)
    assert list(compare_to_baseline(scores, None).columns) == baseline_free


def test_wilcoxon_and_p_formatting_edge_cases():
    assert wilcoxon_p([0.0, 0.0, 0.0]) == 1.0  # identical to the baseline: no evidence of a difference
    assert math.isnan(wilcoxon_p([]))
    scores = pd.DataFrame({"unet": [.5, .6, .7], "copy": [.5, .6, .7]}, index=["x", "y", "z"])
    assert compare_to_baseline(scores, "unet").loc["copy", "p"] == 1.0
    assert format_p(0.0312) == "0.031" and format_p(2 / 64) == "0.031"
    assert format_p(0.0004) == "<0.001" and format_p(0.001) == "0.001" and format_p(1.0) == "1.000"
    assert format_p(math.nan) == "–"


def test_difficulty_slices_by_hand():
    values = {"stain_fp_fraction": "FP area on stains", "rating_match": "rating ok"}
    table = difficulty_slices(worked_records(), "dice", ["thin", "under_coating", "stain"], values).set_index("model")
    # thin = p1, p4 (p6's None and p2-p3's missing flag are not thin); under coating = p2; stain = p3 p5 p6.
    assert (table["n_thin"] == 2).all() and (table["n_under_coating"] == 1).all() and (table["n_stain"] == 3).all()
    assert (table["n_items"] == 6).all()
    assert table.loc["edge", "dice_all"] == pytest.approx(3.60 / 6)
    assert table.loc["unet", "dice_thin"] == pytest.approx((.80 + .70) / 2)
    assert table.loc["other", "dice_thin"] == pytest.approx((.85 + .78) / 2)
    assert table.loc["other", "dice_under_coating"] == pytest.approx(.50)
    assert table.loc["edge", "dice_stain"] == pytest.approx((.43 + .56 + .34) / 3)
    # Values: mean where not None, and how many that was, per model.
    assert table.loc["unet", "stain_fp_fraction"] == pytest.approx(.20)
    assert table.loc["unet", "n_stain_fp_fraction"] == 3
    assert table.loc["edge", "stain_fp_fraction"] == pytest.approx(.05)
    assert table.loc["other", "stain_fp_fraction"] == pytest.approx(.30)
    assert table.loc["unet", "rating_match"] == pytest.approx(3 / 5) and table.loc["unet", "n_rating_match"] == 5
    assert table.loc["edge", "rating_match"] == pytest.approx(5 / 6) and table.loc["edge", "n_rating_match"] == 6
    assert table.loc["other", "rating_match"] == pytest.approx(3 / 4) and table.loc["other", "n_rating_match"] == 4


def test_comparison_spec_checks_keys_and_fills_defaults():
    spec = ComparisonSpec.parse({"baseline": "unet", "item_values": ["rating_match"]}, ["dice", "iou"])
    assert spec.metrics == ["dice"] and spec.slices == [] and spec.item_values == {"rating_match": "rating_match"}
    with pytest.raises(ValueError, match="slice"):
        ComparisonSpec.parse({"baseline": "unet", "slice": ["thin"]}, ["dice"])


COMPARISON = {"baseline": "unet", "metrics": ["dice", "iou"], "slices": ["thin", "under_coating", "stain"],
              "item_values": {"stain_fp_fraction": "FP area on stains",
                              "rating_match": "rating from mask = true rating"}}


def write_records(tmp_path, extra: list[dict] = ()) -> RunRecords:
    records = RunRecords(tmp_path / "runs" / "records.jsonl")
    for rec in worked_records() + list(extra):
        records.append(rec)
    return records


def test_write_leaderboard_adds_comparison_columns_and_slices(tmp_path):
    legacy = record("legacy", 0, None, metrics={"dice": .1, "iou": .05})  # fold score but no per-image scores
    records = write_records(tmp_path, [legacy, record("broken", 1, None, status="failed", error="OOM")])
    [markdown_path] = write_leaderboard(records.path, tmp_path / "board", ["dice", "iou"], comparison=COMPARISON)
    stem = tmp_path / "board" / "segmentation__panels__quick"

    table = pd.read_csv(stem.with_suffix(".csv")).set_index("model")
    assert list(table.index) == ["edge", "other", "unet", "legacy"]  # ranked by dice fold mean, as before
    assert table.loc["edge", "dice_item_rank"] == pytest.approx(8.5 / 6)
    assert table.loc["other", "dice_diff"] == pytest.approx(0.07 / 6)
    assert table.loc["edge", "dice_w_inc"] == pytest.approx(0.74 / 16)
    assert table.loc["edge", "dice_p"] == pytest.approx(0.03125) == table.loc["edge", "dice_item_p"]
    assert table.loc["other", "dice_p"] == pytest.approx(0.6875)
    assert table.loc["edge", "dice_p_holm"] == pytest.approx(0.0625)
    assert math.isnan(table.loc["unet", "dice_p"]) and math.isnan(table.loc["legacy", "dice_item_rank"])
    assert table.loc["edge", "dice_n_items"] == 6 and table.loc["edge", "dice_n_groups"] == 6
    # Intervals: group bootstrap for the models with per-image scores, t over folds (one fold: none) for legacy.
    assert list(table["dice_ci_kind"]) == ["group bootstrap"] * 3 + ["t over folds"]
    assert math.isnan(table.loc["legacy", "dice_ci_low"])
    assert table.loc["edge", "dice_ci_low"] < table.loc["edge", "dice_group_score"] < table.loc["edge", "dice_ci_high"]
    assert table["dice_is_best"].tolist()[:3] == [True, False, False] and pd.isna(table.loc["legacy", "dice_is_best"])
    # other's difference to edge changes sign across the resamples; unet loses to edge on every image.
    assert table["dice_tied_best"].tolist()[:3] == [True, True, False]
    assert table.loc["edge", "n_seeds"] == 1 and math.isnan(table.loc["edge", "dice_seed_std"])
    # iou = dice / (2 - dice) is increasing in dice: the same per-image ranks.
    compared = table.drop("legacy")
    assert compared["iou_item_rank"].to_dict() == pytest.approx(compared["dice_item_rank"].to_dict())

    markdown = markdown_path.read_text()
    header = ("| rank | model | folds | dice (mean ± std) | iou (mean ± std) | dice 95% CI | dice per fold | seeds "
              "| fit s/run | infer ms/item | params "
              "| dice rank/img | dice group mean [95% CI] | dice diff [95% CI] | dice W-Inc | dice p (groups) "
              "| dice p Holm | dice item p (secondary) "
              "| iou rank/img | iou group mean [95% CI] | iou diff [95% CI] | iou W-Inc | iou p (groups) "
              "| iou p Holm | iou item p (secondary) | vs best (dice) |")
    assert header in markdown
    edge_row = next(line for line in markdown.splitlines() if line.startswith("| 1 | edge |"))
    assert "| 1.42 | 0.6000 [" in edge_row and "| +0.0500 [+0.0" in edge_row and "| +0.0462 |" in edge_row
    assert "| 0.031 (n=6) | 0.062 (n=6) | 0.031 (n=6) |" in edge_row and edge_row.endswith("| best | unknown (no card) |")  # track: no card for "edge"
    other_row = next(line for line in markdown.splitlines() if line.startswith("| 2 | other |"))
    assert "| 1.92 | 0.5617 [" in other_row and "| +0.0117 [-0.0" in other_row and "| 0.688 (n=6) |" in other_row
    assert other_row.endswith("| tied | unknown (no card) |")
    unet_row = next(line for line in markdown.splitlines() if line.startswith("| 3 | unet |"))
    assert "| 2.67 | 0.5500 [" in unet_row and "| +0.0000 | – | – | – |" in unet_row
    assert unet_row.endswith("| no | from scratch |")  # its card: leaderboard/cards/segmentation/unet.yaml
    legacy_row = next(line for line in markdown.splitlines() if line.startswith("| 4 | legacy |"))
    assert legacy_row.endswith("| 1 | 10 | – | – |" + " – |" * 15 + " unknown (no card) |")
    assert "(dice: 6 images in 6 groups, iou: 6 images in 6 groups; groups unknown: items treated as groups)" \
        in markdown and "baseline `unet`" in markdown
    assert "1 seed × 1–2 folds" in markdown and "Hardware: unknown (every run)." in markdown
    for note in ("- Why groups:", "- W-Inc:", "- p (groups): two-sided paired Wilcoxon", "- p Holm:",
                 "- item p (secondary):", "- vs best:", "## 95 % intervals", "- (t): Student-t interval over folds"):
        assert note in markdown, note
    assert "No per-image scores (not compared, –): legacy." in markdown
    assert "- broken fold 1: OOM" in markdown

    # Slices: n per flag in the header; rating_match is measurable on different items per model.
    assert "## Difficulty slices" in markdown
    assert ("| model | dice, all (n=6) | dice, thin (n=2) | dice, under_coating (n=1) | dice, stain (n=3) "
            "| FP area on stains (n=3) | rating from mask = true rating |") in markdown
    assert "| unet | 0.5500 | 0.7500 | 0.6000 | 0.4000 | 0.2000 | 0.6000 (n=5) |" in markdown
    assert "| other | 0.5617 | 0.8150 | 0.5000 | 0.4133 | 0.3000 | 0.7500 (n=4) |" in markdown
    slices = pd.read_csv(stem.parent / f"{stem.name}__slices.csv").set_index("model")
    assert list(slices.index) == ["edge", "other", "unet"]  # the table's order
    assert slices.loc["edge", "dice_thin"] == pytest.approx(.785)
    assert slices.loc["other", "n_rating_match"] == 4

    ranks_png = stem.parent / f"{stem.name}__ranks.png"
    assert ranks_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({ranks_png.name})" in markdown


def test_write_leaderboard_without_baseline_or_comparison(tmp_path):
    records = write_records(tmp_path)
    [markdown_path] = write_leaderboard(records.path, tmp_path / "board", ["dice"],
                                        comparison={"baseline": "deeplab", "metrics": ["dice"]})
    markdown = markdown_path.read_text()
    assert "| dice rank/img |" in markdown and "dice diff" not in markdown and "| dice p (groups) |" not in markdown
    assert "Baseline `deeplab` has no per-image scores on this fold manifest" in markdown
    assert "Difficulty slices" not in markdown
    table = pd.read_csv(markdown_path.with_suffix(".csv")).set_index("model")
    assert table.loc["edge", "dice_item_rank"] == pytest.approx(8.5 / 6) and "dice_diff" not in table
    assert table.loc["edge", "dice_is_best"] and "dice_p" not in table  # the best needs no baseline

    # Without `comparison` the leaderboard is what it always was.
    [plain] = write_leaderboard(records.path, tmp_path / "plain", ["dice"])
    assert "rank/img" not in plain.read_text() and "Difficulty slices" not in plain.read_text()
    plain_table = pd.read_csv(plain.with_suffix(".csv"))
    assert not any(c.endswith(("_item_rank", "_diff")) for c in plain_table.columns)
    assert list(plain_table["dice_ci_kind"]) == ["t over folds"] * 3  # no per-image statistics without `comparison`
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == [
        "segmentation__panels__quick.csv", "segmentation__panels__quick.md", "segmentation__panels__quick.png"]


def test_write_leaderboard_with_comparison_but_no_per_image_scores(tmp_path):
    records = RunRecords(tmp_path / "records.jsonl")
    for model in ("unet", "edge"):
        records.append(record(model, 0, None, metrics={"dice": .5, "iou": .3}))
    [markdown_path] = write_leaderboard(records.path, tmp_path / "board", ["dice"], comparison=COMPARISON)
    markdown = markdown_path.read_text()
    assert "(dice: 0 images in 0 groups, iou: 0 images in 0 groups; no per-image scores)" in markdown
    assert "No per-image scores for the slices yet." in markdown
    assert "No per-image scores (not compared, –): unet, edge." in markdown
    slices = pd.read_csv(markdown_path.parent / "segmentation__panels__quick__slices.csv")
    assert slices.empty and list(slices.columns)[:3] == ["model", "n_items", "dice_all"]
    assert not (markdown_path.parent / "segmentation__panels__quick__ranks.png").exists()
