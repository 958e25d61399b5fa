"""Group-level statistics of the leaderboard: pseudo-replication, bootstrap coverage, Holm, tied-with-best, seeds
against folds, where the groups come from, and the cost columns. Synthetic records, no training: seconds."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from matcv.datamodules.core.atomic_io import sha256_bytes
from matcv.leaderboard.build import hardware_of, leaderboard_table, write_leaderboard
from matcv.leaderboard.comparison import (
    compare_to_baseline,
    item_groups,
    paired_item_scores,
    per_item_records,
    select_latest_runs,
)
from matcv.leaderboard.statistics import (
    cluster_bootstrap_interval,
    group_means,
    holm,
    seed_spread,
    t_interval,
    wilcoxon_p,
)

DATA = "d" * 64


def run(model: str, fold: int, items: dict[str, float], manifest: str = "m" * 64, replicate: int | None = None,
        groups: dict[str, str] | None = None, metric: str = "dice", **extra) -> dict:
    """A successful run record scoring ``items`` (item -> score); ``groups``: per-image ``group`` keys."""
    per_image = [{"item_id": item, metric: score, **({"group": groups[item]} if groups else {})}
                 for item, score in items.items()]
    record = {"key": f"{model}|{fold}|{replicate}", "task": "segmentation", "dataset": "panels", "profile": "quick",
              "model": model, "fold": fold, "status": "ok", "config_hash": "c", "fold_manifest_sha256": manifest,
              "fold_manifest": "nowhere/fold_manifest.json", "data_sha256": DATA,
              "metrics": {metric: float(np.mean(list(items.values())))}, "per_image": per_image,
              "durations": {"fit_s": 10.0, "test_s": 0.5, "total_s": 10.5}, "n_items": {"test": len(items)}}
    if replicate is not None:
        record["replicate"] = replicate
    record.update(extra)
    return record


# --- (a) pseudo-replication: strong over items, not over groups ---------------------------------------------------

def panels(n_groups: int = 6, per_group: int = 8) -> tuple[pd.DataFrame, dict[str, str]]:
    """6 panels x 8 near-identical photos: A beats B by 0.10 on panels 0-3, B beats A by 0.02 on panels 4-5."""
    rng = np.random.default_rng(0)
    rows, groups = {}, {}
    for g in range(n_groups):
        gap = 0.10 if g < 4 else -0.02
        for k in range(per_group):
            item = f"panel{g}/photo{k}"
            base = 0.5 + 0.03 * g + rng.normal(0, 1e-3)
            rows[item] = {"B": base, "A": base + gap + rng.normal(0, 1e-3)}
            groups[item] = f"panel{g}"
    return pd.DataFrame.from_dict(rows, orient="index"), groups


def test_items_of_one_group_are_not_independent_evidence():
    scores, groups = panels()
    result = compare_to_baseline(scores, "B", groups=groups)
    a = result.loc["A"]
    assert a["n_items"] == 48 and a["n_groups"] == 6
    assert a["item_p"] < 0.01  # 48 "independent" photos: overwhelming
    # Over panels: 4 of 6 favour A; the exact signed-rank test gives T- = 1 + 2, p = 2 * 5/64.
    assert a["p"] == pytest.approx(10 / 64) and a["p"] > 0.05
    assert a["diff"] == pytest.approx((4 * 0.10 - 2 * 0.02) / 6, abs=2e-3)
    assert a["diff_ci_low"] < a["diff"] < a["diff_ci_high"]
    # Without groups the same data look conclusive: what the group level protects against.
    assert compare_to_baseline(scores, "B").loc["A", "p"] == a["item_p"]


def test_group_means_average_items_within_groups():
    scores = pd.DataFrame({"m": [1.0, 3.0, 10.0]}, index=["x1", "x2", "y1"])
    means = group_means(scores, {"x1": "x", "x2": "x"})  # y1 is its own group
    assert means["m"].to_dict() == {"x": 2.0, "y1": 10.0}


# --- (b) bootstrap coverage -------------------------------------------------------------------------------------

def test_cluster_bootstrap_interval_covers_the_true_mean_about_95_percent():
    rng = np.random.default_rng(7)
    true_mean, hits = 0.7, 0
    for _ in range(200):
        group_values = rng.normal(true_mean, 0.1, size=20)
        low, high = cluster_bootstrap_interval(group_values)
        hits += low <= true_mean <= high
    assert 0.88 <= hits / 200 <= 0.99


def test_intervals_are_reproducible_and_undefined_without_spread():
    values = np.linspace(0, 1, 9)
    assert cluster_bootstrap_interval(values) == cluster_bootstrap_interval(values)  # fixed seed
    assert all(math.isnan(v) for v in cluster_bootstrap_interval([0.4]))
    # t over folds, by hand: mean 0.7, std 0.1, n 3 -> 0.7 ± t(0.975, 2) 0.1 / sqrt 3 = 0.7 ± 0.24841.
    low, high = t_interval([0.6, 0.7, 0.8])
    assert (low, high) == pytest.approx((0.7 - 0.248414, 0.7 + 0.248414), abs=1e-5)
    assert all(math.isnan(v) for v in t_interval([0.5]))


# --- (c) Holm ---------------------------------------------------------------------------------------------------

def test_holm_step_down_by_hand():
    # Sorted: .005 x 4 = .02; .01 x 3 = .03; .03 x 2 = .06; .04 x 1 = .04 -> kept monotone at .06.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = holm([math.nan, 0.02, 0.04])  # the baseline's NaN is no test: k = 2
    assert math.isnan(adjusted[0]) and list(adjusted[1:]) == pytest.approx([0.04, 0.04])
    assert list(holm([0.6, 0.7])) == [1.0, 1.0]  # capped at 1
    assert wilcoxon_p([0.1] * 5) == pytest.approx(2 / 32)


def test_wilcoxon_with_ties_and_zeros_is_scipys_exact_permutation_test():
    from scipy.stats import wilcoxon

    # 0/1 scores (`correct`) give tied |differences| and zeros: scipy's exact sign-flip test, computed faster.
    for differences in ([1, 1, 0, -1, 1, 1, 0, 1, 1], [0.5, 0.5, -0.25, 0.25, 0.5, 0.0, 0.75]):
        assert wilcoxon_p(differences) == pytest.approx(wilcoxon(differences).pvalue, rel=1e-12)


# --- (d) tied with the best -------------------------------------------------------------------------------------

def test_tied_with_best_marks():
    rng = np.random.default_rng(1)
    n = 12
    base = rng.uniform(0.4, 0.6, n)
    scores = pd.DataFrame({"best": base + 0.10,
                           "close": base + 0.10 + np.tile([0.02, -0.02], n // 2) + rng.normal(0, 1e-3, n),
                           "far": base, "baseline": base - 0.05}, index=[f"i{k}" for k in range(n)])
    result = compare_to_baseline(scores, "baseline")
    assert result["is_best"].to_dict() == {"best": True, "close": False, "far": False, "baseline": False}
    assert result["tied_best"].to_dict() == {"best": True, "close": True, "far": False, "baseline": False}
    # An error metric: the lowest is the best.
    errors = compare_to_baseline(1 - scores, "baseline", higher_is_better=False)
    assert errors["is_best"]["best"] and errors["tied_best"]["close"] and not errors["tied_best"]["far"]


# --- (e) seeds ---------------------------------------------------------------------------------------------------

SEED_SCORES = {0: (0.80, 0.82), 1: (0.70, 0.74), 2: (0.60, 0.60)}  # fold -> (replicate 0, replicate 1)


def seeded_records() -> list[dict]:
    records = []
    for fold, values in SEED_SCORES.items():
        for replicate, value in enumerate(values):
            records.append(run("seeded", fold, {f"f{fold}a": value, f"f{fold}b": value}, replicate=replicate,
                               training_seed=100 * replicate + fold))
        records.append(run("single", fold, {f"f{fold}a": 0.5, f"f{fold}b": 0.5}))  # no `replicate`: 0
    return records


def test_seed_spread_by_hand():
    spread = seed_spread([SEED_SCORES[f] for f in range(3)])
    assert spread.fold_values == pytest.approx([0.81, 0.72, 0.60])
    assert spread.mean == pytest.approx(0.71) and spread.std == pytest.approx(np.std([0.81, 0.72, 0.60], ddof=1))
    assert spread.seed_std == pytest.approx((0.02 / math.sqrt(2) + 0.04 / math.sqrt(2) + 0) / 3)
    assert spread.n_seeds == 2
    single = seed_spread([[0.5], [0.6]])
    assert math.isnan(single.seed_std) and single.n_seeds == 1


def test_seeds_are_averaged_per_fold_and_their_spread_kept_apart(tmp_path):
    records = seeded_records()
    # A rerun of replicate 1 of fold 2 supersedes that replicate only.
    records.append(run("seeded", 2, {"f2a": 0.64, "f2b": 0.64}, replicate=1))
    selection = select_latest_runs(records)
    assert len(selection.runs) == 9 and len(selection.folds_of("seeded")[2]) == 2

    table = leaderboard_table(records, ["dice"]).table.set_index("model")
    seeded = table.loc["seeded"]
    assert seeded["n_seeds"] == 2 and seeded["n_runs"] == 6 and seeded["n_folds"] == 3
    assert seeded["dice_mean"] == pytest.approx((0.81 + 0.72 + 0.62) / 3)
    assert seeded["dice_std"] == pytest.approx(np.std([0.81, 0.72, 0.62], ddof=1))
    assert seeded["dice_seed_std"] == pytest.approx(np.mean([np.std(p, ddof=1) for p in
                                                             ((0.80, 0.82), (0.70, 0.74), (0.60, 0.64))]))
    assert seeded["dice_per_fold"] == "0.8100 0.7200 0.6200"
    assert seeded["dice_ci_kind"] == "t over folds" and seeded["dice_ci_low"] < seeded["dice_mean"]
    assert table.loc["single", "n_seeds"] == 1 and math.isnan(table.loc["single", "dice_seed_std"])

    # Per item: the mean over a fold's seeds; the same item in two replicates of one fold is no overlap.
    scores = paired_item_scores(records, "dice")
    assert scores.loc["f1a", "seeded"] == pytest.approx(0.72) and scores.loc["f2b", "seeded"] == pytest.approx(0.62)
    with pytest.raises(ValueError, match="f0a.*folds 0 and 1"):  # but in two folds it still is
        per_item_records(records + [run("seeded", 1, {"f0a": 0.1}, replicate=2)])

    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    [markdown] = write_leaderboard(path, tmp_path / "board", ["dice"], comparison={"baseline": "single"})
    text = markdown.read_text()
    assert "1–2 seeds × 3 folds" in text and "| dice seed std |" in text
    assert "## 95 % intervals and seed spread" in text
    row = next(line for line in text.splitlines() if line.startswith("| 1 | seeded |"))
    assert "| 0.7167 ± 0.0950 |" in row and "| 0.8100 0.7200 0.6200 | 0.0236 | 2 |" in row


def test_a_bad_replicate_is_left_out_with_a_warning():
    records = seeded_records() + [run("odd", 0, {"f0a": 0.9}, replicate=-1)]
    with pytest.warns(UserWarning, match="replicate.*-1"):
        assert "odd" not in select_latest_runs(records).models()


# --- (f) where the groups come from -----------------------------------------------------------------------------

def grouped_records(manifest_sha: str, with_group_keys: bool = False, manifest_path: str | None = None) -> list:
    """Two models, 4 panels x 2 photos in two folds; B beats A on every photo."""
    groups = {f"p{g}/{k}": f"panel{g}" for g in range(4) for k in range(2)}
    records = []
    for model, shift in (("A", 0.0), ("B", 0.1)):
        for fold in (0, 1):
            items = {item: 0.5 + shift + 0.01 * i for i, item in enumerate(groups) if int(item[1]) % 2 == fold}
            record = run(model, fold, items, manifest=manifest_sha, groups=groups if with_group_keys else None)
            if manifest_path is not None:
                record["fold_manifest"] = manifest_path
            records.append(record)
    return records


def write_manifest(path, groups: dict[str, str]) -> str:
    text = json.dumps({"format": "matcv-folds-1", "groups": groups, "folds": []}, indent=1) + "\n"
    path.write_text(text)
    return sha256_bytes(text.encode())


def test_groups_come_from_the_benchmark_folders_fold_manifest(tmp_path):
    groups = {f"p{g}/{k}": f"panel{g}" for g in range(4) for k in range(2)}
    sha = write_manifest(tmp_path / "fold_manifest.json", groups)
    records = grouped_records(sha)  # no per-image "group"; the manifest the records name does not exist here
    found = item_groups(records, tmp_path)
    assert found.groups == groups and found.n_unknown == 0
    assert found.note == f"groups from the fold manifest `{tmp_path / 'fold_manifest.json'}`"

    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    [markdown] = write_leaderboard(path, tmp_path / "board", ["dice"], comparison={"baseline": "A"})
    table = pd.read_csv(markdown.with_suffix(".csv")).set_index("model")
    assert table.loc["B", "dice_n_groups"] == 4 and table.loc["B", "dice_n_items"] == 8
    assert table.loc["B", "dice_p"] == pytest.approx(2 / 16)  # 4 panels all favour B: the smallest p of n = 4
    assert table.loc["B", "dice_item_p"] == pytest.approx(2 / 256)
    assert "8 images in 4 groups" in markdown.read_text() and "groups unknown" not in markdown.read_text()


def test_the_manifest_the_records_name_is_read_first_and_only_if_its_hash_matches(tmp_path):
    groups = {f"p{g}/{k}": f"panel{g}" for g in range(4) for k in range(2)}
    named = tmp_path / "elsewhere.json"
    sha = write_manifest(named, groups)
    assert item_groups(grouped_records(sha, manifest_path=str(named))).groups == groups

    edited = {item: "one-big-group" for item in groups}  # the folder's manifest was edited since the runs
    write_manifest(tmp_path / "fold_manifest.json", edited)
    found = item_groups(grouped_records(sha), tmp_path)
    assert found.note == "groups unknown: items treated as groups" and found.n_unknown == 8
    assert set(found.groups.values()) == set(groups)  # every item its own group


def test_a_per_image_group_wins_over_the_manifest(tmp_path):
    sha = write_manifest(tmp_path / "fold_manifest.json", {f"p{g}/{k}": "other" for g in range(4) for k in range(2)})
    found = item_groups(grouped_records(sha, with_group_keys=True), tmp_path)
    assert set(found.groups.values()) == {"panel0", "panel1", "panel2", "panel3"}
    assert found.note == "groups from the per-image records"


# --- cost columns -----------------------------------------------------------------------------------------------

def test_cost_columns_and_hardware():
    cpu = {"cpu": "x86_64", "cpu_count": 16, "cuda_devices": ["NVIDIA H200"]}
    records = [run("big", f, {f"i{f}": 0.5}, n_parameters=11_181_642, hardware=cpu, accelerator="gpu",
                   durations={"fit_s": 20.0 + f, "test_s": 0.2, "total_s": 21.0}, n_items={"test": 4})
               for f in range(2)]
    records += [run("small", f, {f"i{f}": 0.4}, hardware=cpu, accelerator="cpu") for f in range(2)]
    table = leaderboard_table(records, ["dice"]).table.set_index("model")
    assert table.loc["big", "params"] == 11_181_642 and math.isnan(table.loc["small", "params"])
    assert table.loc["big", "fit_s_mean"] == 20.5
    assert table.loc["big", "infer_ms_per_item"] == pytest.approx(1000 * 0.2 / 4)
    assert table.loc["small", "infer_ms_per_item"] == pytest.approx(1000 * 0.5 / 1)
    assert table.loc["big", "hardware"] == "NVIDIA H200"
    assert table.loc["small", "hardware"] == "CPU x86_64 (16 cores)"  # told to use the CPU on a GPU machine
    assert hardware_of({"hardware": {"cuda_devices": ["A100", "A100"]}}) == "2× A100"
    assert hardware_of({}) == "unknown"


def test_markdown_says_when_runs_used_different_hardware(tmp_path):
    records = [run("gpu-model", 0, {"a": 0.5}, hardware={"cuda_devices": ["NVIDIA H200"]}),
               run("cpu-model", 0, {"a": 0.4}, hardware={"cpu": "arm64", "cpu_count": 8})]
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    [markdown] = write_leaderboard(path, tmp_path / "board", ["dice"])
    assert ("Runs used different hardware, so their times are not comparable: NVIDIA H200 (gpu-model); "
            "CPU arm64 (8 cores) (cpu-model).") in markdown.read_text()
    csv = pd.read_csv(markdown.with_suffix(".csv"))
    for column in ("n_seeds", "params", "fit_s_mean", "infer_ms_per_item", "hardware", "dice_mean", "dice_std",
                   "dice_seed_std", "dice_ci_low", "dice_ci_high", "dice_ci_kind"):
        assert column in csv.columns, column
