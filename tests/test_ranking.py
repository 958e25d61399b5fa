"""The ranking across benchmarks (mean rank, Friedman + Nemenyi critical-difference diagram, Demšar 2006), the
accuracy-vs-training-cost picture and their place on the HTML page, on small hand-made tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from matcv.leaderboard.cost import cost_plot
from matcv.leaderboard.html import write_html
from matcv.leaderboard.ranking import (
    Board,
    critical_difference,
    infer_lower_is_better,
    nemenyi_cd,
    rank_boards,
    read_board,
    write_ranking,
)
from matcv.leaderboard.rebuild import TaskSummary, write_all_leaderboards

PNG = b"\x89PNG\r\n\x1a\n"


def board(name: str, scores: dict[str, float], metric: str = "dice", lower_is_better: bool = False, **columns):
    table = pd.DataFrame({"model": list(scores), f"{metric}_mean": list(scores.values()), **columns})
    return Board(name, table, metric, lower_is_better)


def write_csv(path, table: pd.DataFrame):
    table.to_csv(path, index=False)
    return path


def test_mean_ranks_on_a_hand_computed_case_ties_shared_and_errors_ranked_ascending():
    # dice (higher is better): a 1st, b and c tied for 2nd/3rd -> 2.5 each.
    # mae (lower is better): b 1st (0.1), c 2nd (0.2), a 3rd (0.3).
    boards = [board("synthetic/quick", {"a": 0.9, "b": 0.8, "c": 0.8}),
              board("real/quick", {"a": 0.3, "b": 0.1, "c": 0.2}, metric="mae", lower_is_better=True)]
    ranking = rank_boards("toy", boards)
    table = ranking.table.set_index("model")
    assert list(ranking.table["model"]) == ["b", "a", "c"]  # mean 1.75, 2.0, 2.25
    assert table.loc["a", "synthetic/quick"] == 1 and table.loc["b", "synthetic/quick"] == 2.5
    assert table.loc["c", "synthetic/quick"] == 2.5
    assert list(table["real/quick"].loc[["a", "b", "c"]]) == [3, 1, 2]
    assert table["mean_rank"].to_dict() == pytest.approx({"a": 2.0, "b": 1.75, "c": 2.25})
    assert set(table["n_boards"]) == {2}
    # Every model is on both boards: the diagram's mean ranks are the same places.
    assert ranking.cd is not None and ranking.cd.mean_ranks.to_dict() == pytest.approx(table["mean_rank"].to_dict())
    assert ranking.left_out_models == [] and not ranking.left_out_boards


def test_the_direction_comes_from_the_yaml_else_from_the_tables_own_ranking(tmp_path):
    ranked_ascending = pd.DataFrame({"rank": [1, 2, 3], "model": ["x", "y", "z"], "mase_mean": [0.1, 0.2, 0.4],
                                     "fit_s_mean": [5.0, 1.0, 9.0], "r2_mean": [0.9, 0.8, 0.5]})
    csv = write_csv(tmp_path / "t.csv", ranked_ascending)
    inferred = read_board(csv, "d/p")
    assert (inferred.metric, inferred.lower_is_better) == ("mase", True)  # fit_s_mean is a cost, not a metric
    assert list(inferred.ranks().loc[["x", "y", "z"]]) == [1, 2, 3]
    stated = read_board(csv, "d/p", metric="r2", lower_is_better=False)
    assert list(stated.ranks().loc[["x", "y", "z"]]) == [1, 2, 3]
    assert infer_lower_is_better(ranked_ascending.assign(mase_mean=[0.5, 0.5, 0.5]), "mase") is None
    with pytest.raises(ValueError, match=r"t\.csv: no column 'iou_mean'"):
        read_board(csv, "d/p", metric="iou")


def test_nemenyi_critical_difference_matches_demsar_table_5():
    # Demšar (2006), Table 5(a): q_0.05 = 1.960, 2.343, 2.569, 2.728 for k = 2..5.
    for k, q in ((2, 1.960), (3, 2.343), (4, 2.569), (5, 2.728)):
        assert nemenyi_cd(k, 10) == pytest.approx(q * math.sqrt(k * (k + 1) / 60), abs=1e-3)


def test_friedman_statistic_and_nemenyi_p_follow_the_ranks():
    ranks = pd.DataFrame([[1, 2, 3, 4], [1, 3, 2, 4], [2, 1, 3, 4], [1, 2, 4, 3]], columns=list("abcd"))
    cd = critical_difference(ranks)
    n, k = ranks.shape
    mean = ranks.mean().to_numpy()
    chi2 = 12 * n / (k * (k + 1)) * (np.sum(mean ** 2) - k * (k + 1) ** 2 / 4)  # Demšar's Friedman χ²
    assert cd.friedman_statistic == pytest.approx(chi2)
    assert cd.friedman_p == pytest.approx(stats.chi2.sf(chi2, k - 1))
    # a and d differ by 2.5 places > CD (2.345 for k=4, N=4): Nemenyi p < 0.05; a and b (0.75 apart) do not.
    assert cd.cd == pytest.approx(2.569 * math.sqrt(20 / 24), abs=1e-3)
    assert cd.p_values.loc["a", "d"] < 0.05 < cd.p_values.loc["a", "b"]
    assert list(cd.mean_ranks.index) == ["a", "b", "c", "d"]


def test_a_model_missing_from_one_board_is_left_out_of_the_diagram_and_named(tmp_path):
    boards = [board("one/quick", {"a": 0.9, "b": 0.5, "c": 0.7, "d": 0.95}),
              board("two/quick", {"a": 0.8, "b": 0.6, "c": 0.7, "d": 0.99}),
              board("three/quick", {"a": 0.7, "b": 0.6, "c": 0.65})]
    ranking = rank_boards("toy", boards)
    assert ranking.left_out_models == ["d"]
    assert set(ranking.cd.mean_ranks.index) == {"a", "b", "c"}
    # Re-ranked among the compared models: a is 1st on every board there (behind d on two of them overall).
    assert ranking.cd.mean_ranks["a"] == 1.0
    table = ranking.table.set_index("model")
    assert table.loc["a", "mean_rank"] == pytest.approx((2 + 2 + 1) / 3)
    assert table.loc["d", "n_boards"] == 2 and math.isnan(table.loc["d", "cd_mean_rank"])
    assert list(ranking.table["model"])[-1] == "d"  # on fewer boards: after the models on all of them
    markdown = write_ranking(ranking, tmp_path).read_text()
    assert "Not on every benchmark, so not in the diagram: d." in markdown
    assert (tmp_path / "ranking__toy.png").read_bytes().startswith(PNG)
    csv = pd.read_csv(tmp_path / "ranking__toy.csv")
    assert list(csv.columns) == ["model", "one/quick", "two/quick", "three/quick", "mean_rank", "n_boards",
                                 "cd_mean_rank"]
    assert "Demšar (2006)" in markdown


def test_fewer_than_two_boards_or_common_models_give_a_note_not_a_diagram(tmp_path):
    (tmp_path / "ranking__toy.png").write_bytes(PNG)  # an older diagram must not outlive its table
    one = rank_boards("toy", [board("one/quick", {"a": 0.9, "b": 0.5}), board("two/quick", {"a": 0.1})])
    assert one.cd is None and one.left_out_boards == {"two/quick": "ranks fewer than 2 models"}
    assert "Fewer than 2 benchmarks" in one.notes[0]
    markdown = write_ranking(one, tmp_path).read_text()
    assert "no critical-difference diagram" in markdown and not (tmp_path / "ranking__toy.png").exists()
    apart = rank_boards("toy", [board("one/quick", {"a": 0.9, "b": 0.5, "c": 0.1}),
                                board("two/quick", {"a": 0.1, "x": 0.2}), board("three/quick", {"b": 0.3, "y": 0.1})])
    assert apart.cd is None and "Fewer than 2 models on every benchmark (0)" in apart.notes[0]
    alone = rank_boards("toy", [board("one/quick", {"a": 0.9, "b": 0.5}), board("two/quick", {"a": 0.1, "b": 0.3}),
                                board("study/quick", {"a+hflip": 0.1, "b+hflip": 0.3})])
    assert alone.left_out_boards == {"study/quick": "shares no model with the other benchmarks"}
    assert alone.cd is not None and [b.name for b in alone.boards] == ["one/quick", "two/quick"]


def test_cost_plot_draws_every_model_of_every_board_and_says_what_is_missing(tmp_path):
    new = board("synthetic/quick", {"unet": 0.8, "et-unet": 0.85}, dice_std=[0.02, 0.03], dice_ci_low=[0.77, 0.8],
                dice_ci_high=[0.83, 0.88], fit_s_mean=[120.0, 300.0], params=[7.8e6, 9.1e6], hardware=["H200", "H200"])
    old = board("superalloy/quick", {"unet": 0.6}, metric="iou", iou_std=[0.05])  # an older table: no fit_s_mean
    path, notes = cost_plot(tmp_path / "cost__seg.png", "seg", [new, old])
    assert path.read_bytes().startswith(PNG)
    assert notes == ["superalloy/quick: no training time (fit_s_mean) in its table."]
    path, notes = cost_plot(tmp_path / "cost__seg.png", "seg", [old])
    assert path is None and not (tmp_path / "cost__seg.png").exists() and "no accuracy-vs-cost plot" in notes[-1]


def _tables(out, task="seg"):
    """Two benchmark tables written to the new column contract and one older one without its new columns."""
    out.mkdir()
    new = pd.DataFrame({"rank": [1, 2, 3], "model": ["et-unet", "unet", "<b>bold</b>"], "n_folds": [3, 3, 3],
                        "dice_mean": [0.85, 0.8, 0.1], "dice_std": [0.03, 0.02, 0.0], "dice_seed_std": [0.01] * 3,
                        "dice_ci_low": [0.8, 0.77, 0.1], "dice_ci_high": [0.88, 0.83, 0.1],
                        "dice_diff": [0.05, 0.0, -0.7], "dice_p_holm": [0.0004, math.nan, 0.02],
                        "dice_tied_best": [True, True, False], "params": [9_100_000, 7_800_000, 0],
                        "fit_s_mean": [300.0, 120.0, 0.5], "infer_ms_per_item": [4.2, 3.1, 0.01],
                        "hardware": ["NVIDIA H200"] * 3})
    other = new.assign(model=["unet", "et-unet", "<b>bold</b>"], dice_mean=[0.7, 0.6, 0.2])
    old = pd.DataFrame({"rank": [1, 2], "model": ["unet", "et-unet"], "n_folds": [3, 3], "iou_mean": [0.6, 0.5],
                        "iou_std": [0.05, 0.04], "iou_per_fold": ["0.6 0.6 0.6", "0.5 0.5 0.5"]})
    markdown = []
    for name, table in (("a__quick", new), ("b__quick", other), ("c__old", old)):
        write_csv(out / f"{task}__{name}.csv", table)
        markdown.append(out / f"{task}__{name}.md")
        markdown[-1].write_text(f"# matcv leaderboard: {task} {name}\n")
    boards = [read_board(out / f"{task}__{name}.csv", name.replace("__", "/")) for name in ("a__quick", "b__quick")]
    boards.append(read_board(out / f"{task}__c__old.csv", "c/old"))
    return boards, markdown


def test_html_page_has_the_ranking_the_scatter_and_the_new_columns_and_still_renders_old_tables(tmp_path):
    out = tmp_path / "results"
    boards, markdown = _tables(out)
    ranking = rank_boards("seg", boards)
    write_ranking(ranking, out)
    cost_png, notes = cost_plot(out / "cost__seg.png", "seg", boards)
    page = write_html(out, [], [], markdown, [TaskSummary("seg", ranking, cost_png, notes)]).read_text()
    section = page.split("Across benchmarks: seg")[1].split("</section>")[0]
    assert "Critical-difference diagram" in section and "Demšar (2006)" in section and "JMLR 7:1–30" in section
    assert 'alt="critical-difference diagram" src="data:image/png;base64,' in section
    assert 'alt="seg: accuracy against training cost" src="data:image/png;base64,' in section
    assert "c/old: no training time (fit_s_mean) in its table." in section
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold</b>" not in page  # every text escaped
    new_table = page.split("matcv leaderboard: seg a__quick")[1].split("</table>")[0]
    for header in ("dice CI", "dice seed std", "dice Δ baseline", "dice p (Holm, groups)", "dice vs best", "params",
                   "fit s/fold", "infer ms/item", "hardware"):
        assert f"<th>{header}</th>" in new_table
    assert "<td>[0.8000, 0.8800]</td>" in new_table and "<td>&lt;0.001</td>" in new_table
    assert "<td>≈ best</td>" in new_table and "<td>9,100,000</td>" in new_table
    assert "<td>NVIDIA H200</td>" in new_table
    old_table = page.split("matcv leaderboard: seg c__old")[1].split("</section>")[0]
    assert "<td>0.6000 ± 0.0500</td>" in old_table
    assert "CI" not in old_table and "fit s/fold" not in old_table and "Holm" not in old_table


def _record(task, dataset, model, fold, dice, fit_s):
    manifest, data = "a" * 64, "b" * 64
    return {"key": f"{model}|{fold}|{dataset}", "task": task, "dataset": dataset, "profile": "quick",
            "model": model, "fold": fold, "status": "ok", "config_hash": "cfg", "fold_manifest_sha256": manifest,
            "fold_manifest": "folds.json", "data_sha256": data, "metrics": {"dice": dice},
            "durations": {"fit_s": fit_s, "test_s": 0.1, "total_s": fit_s + 0.1}}


def test_matcv_leaderboard_writes_the_ranking_and_the_page_from_run_records(tmp_path):
    runs = tmp_path / "runs"
    scores = {"one": {"a": 0.9, "b": 0.7, "c": 0.5}, "two": {"a": 0.6, "b": 0.8, "c": 0.4, "d": 0.95}}
    for dataset, models in scores.items():  # "rankprobe" has no YAML: metric and direction from the tables
        folder = runs / "rankprobe" / dataset / "quick"
        folder.mkdir(parents=True)
        lines = [_record("rankprobe", dataset, m, fold, s + 0.01 * fold, 10.0 * (i + 1))
                 for i, (m, s) in enumerate(models.items()) for fold in range(2)]
        (folder / "records.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "results"
    written = write_all_leaderboards(runs, out, submissions_dir=None)
    assert out / "ranking__rankprobe.md" in written
    table = pd.read_csv(out / "ranking__rankprobe.csv").set_index("model")
    # one: a 1, b 2, c 3; two: d 1, b 2, a 3, c 4. Among a, b, c only (the diagram): a 1 and 2, b 2 and 1.
    assert table["mean_rank"].to_dict() == pytest.approx({"a": 2.0, "b": 2.0, "c": 3.5, "d": 1.0})
    assert table["cd_mean_rank"].drop("d").to_dict() == pytest.approx({"a": 1.5, "b": 1.5, "c": 3.0})
    assert table.loc["d", "n_boards"] == 1 and list(table.index)[-1] == "d"
    assert "not in the diagram: d" in (out / "ranking__rankprobe.md").read_text()
    assert (out / "ranking__rankprobe.png").is_file() and (out / "cost__rankprobe.png").is_file()
    page = (out / "index.html").read_text()
    assert "Across benchmarks: rankprobe" in page and "Critical-difference diagram" in page
    assert page.count("data:image/png;base64,") >= 4  # diagram, scatter, the two per-fold plots
