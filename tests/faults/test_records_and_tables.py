"""Torn and incomplete record lines, and benchmark folders holding runs of several benchmarks.

A short write (a full disk, a kill during a multi-page write) leaves a fragment without its newline at the
end of ``records.jsonl``; the next append must start on a line of its own, or the new record is glued to
the fragment and lost too. A well-formed line lacking the keys the readers need is skipped with a warning
naming the line, never a ``KeyError``.

One folder may hold runs on several fold manifests (``--fold-manifest``) and data versions (a data root
edited between benches): a table shows the runs of one (fold manifest, data) pair only, names both hashes,
lists the others as not compared and warns; per-image comparisons never pair runs of different pairs.
Records are written by hand as JSON lines (the keys the readers use), so these tests take seconds.
"""

from __future__ import annotations

import json
import warnings

import pandas as pd
import pytest

from matcv.datamodules.core.atomic_io import sha256_bytes
from matcv.datamodules.core.records import RunRecords
from matcv.leaderboard.build import OTHERS_HEADING, leaderboard_table, write_leaderboard
from matcv.leaderboard.comparison import paired_item_scores, select_latest_runs
from matcv.leaderboard.rebuild import write_all_leaderboards, write_benchmark_tables

DATA_OLD, DATA_NEW = "0" * 63 + "1", "f" * 63 + "e"
TASK, DATASET, PROFILE = "faultprobe", "tiny", "quick"  # no YAML of that name: metrics come from the records
ITEMS = {0: ["a", "b"], 1: ["c", "d"], 2: ["e", "f"]}  # fold -> its test items


def run_record(model: str, fold: int, manifest: str, data: str = DATA_OLD, dice: float = 0.5,
               status: str = "ok", **extra) -> dict:
    record = {"key": f"{model}|fold{fold}|cfg|{manifest[:16]}|{data[:16]}", "task": TASK, "dataset": DATASET,
              "profile": PROFILE, "model": model, "fold": fold, "status": status, "config_hash": "cfg",
              "fold_manifest_sha256": manifest, "fold_manifest": f"{manifest[:4]}.json", "data_sha256": data,
              "durations": {"fit_s": 1.0, "test_s": 0.1, "total_s": 1.1}}
    if status == "ok":
        record["metrics"] = {"dice": dice}
        record["per_image"] = [{"item_id": item, "dice": dice} for item in ITEMS[fold]]
    else:
        record["error"] = "boom"
    record.update(extra)
    return record


def benchmark_folder(tmp_path, manifest_text: str = '{"folds": "default"}') -> tuple:
    """A benchmark folder with its own fold_manifest.json; returns (folder, sha256 of that manifest)."""
    folder = tmp_path / "runs" / TASK / DATASET / PROFILE
    folder.mkdir(parents=True)
    (folder / "fold_manifest.json").write_text(manifest_text)
    return folder, sha256_bytes(manifest_text.encode())


def write_lines(path, records: list[dict]) -> None:
    with open(path, "a") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


def table_rows(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("| ") and line[2:3].isdigit()]


# --- item 2: torn last line, incomplete records ----------------------------------------------------------------

@pytest.mark.parametrize("keep", [0.5, 1 / 7, "all-but-newline"])
def test_append_after_a_torn_last_line_starts_a_fresh_line(tmp_path, keep):
    records = RunRecords(tmp_path / "records.jsonl")
    written = [run_record(model, 0, "m" * 64) for model in ("first", "second", "torn")]
    for record in written:
        records.append(record)
    data = records.path.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    last = data[last_start:]
    cut = len(last) - 1 if keep == "all-but-newline" else int(len(last) * keep)
    records.path.write_bytes(data[:last_start] + last[:cut])  # a short write: no newline at the end

    records.append(run_record("rerun", 0, "m" * 64))  # the rerun of the torn run

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = records.load()
    models = [r["model"] for r in loaded]
    if keep == "all-but-newline":  # only the newline was lost: the record itself is whole
        assert models == ["first", "second", "torn", "rerun"] and not caught
    else:
        assert models == ["first", "second", "rerun"]
        assert [str(w.message) for w in caught] == [f"{records.path}:3: skipping an unreadable (torn) record line"]
    assert run_record("rerun", 0, "m" * 64)["key"] in records.finished_keys()
    # The line after the fragment is whole, and later appends keep working.
    records.append(run_record("later", 1, "m" * 64))
    assert records.path.read_bytes().endswith(b"\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert [r["model"] for r in records.load()][-2:] == ["rerun", "later"]


def test_append_to_an_empty_file_writes_no_blank_line(tmp_path):
    records = RunRecords(tmp_path / "records.jsonl")
    records.path.write_bytes(b"")
    records.append({"key": "a", "status": "ok"})
    assert records.path.read_bytes().startswith(b'{"key": "a"')


@pytest.mark.parametrize("line, problem", [
    ('{"status": "ok", "model": "m", "fold": 0}', "missing key(s) ['key']"),
    ('{"key": "k", "model": "m", "fold": 0}', "missing key(s) ['status']"),
    ('[1, 2, 3]', "not a JSON object"),
    ('"just text"', "not a JSON object"),
    ('{"key": 7, "status": "ok"}', "'key' is not a string"),
])
def test_a_record_without_the_keys_resume_needs_is_skipped_with_a_warning(tmp_path, line, problem):
    records = RunRecords(tmp_path / "records.jsonl")
    records.append({"key": "good", "status": "ok"})
    with open(records.path, "a") as handle:
        handle.write(line + "\n")
    records.append({"key": "after", "status": "failed"})
    with pytest.warns(UserWarning) as caught:
        keys = records.finished_keys()
    assert keys == {"good", "after"}
    assert any(f"{records.path}:2:" in str(w.message) and problem in str(w.message) for w in caught), \
        [str(w.message) for w in caught]


def test_a_line_of_invalid_utf8_is_skipped_not_fatal(tmp_path):
    records = RunRecords(tmp_path / "records.jsonl")
    records.append({"key": "a", "status": "ok"})
    with open(records.path, "ab") as handle:
        handle.write(b'{"key": "\xff\xfe", "sta\n')
    records.append({"key": "b", "status": "ok"})
    with pytest.warns(UserWarning, match=r"records.jsonl:2: skipping an unreadable"):
        assert [r["key"] for r in records.load()] == ["a", "b"]


@pytest.mark.parametrize("drop", ["task", "dataset", "profile", "model", "fold", "fold_manifest_sha256",
                                  "data_sha256", "metrics"])
def test_leaderboard_skips_a_record_missing_a_table_key(tmp_path, drop):
    folder, manifest = benchmark_folder(tmp_path)
    good = [run_record("unet", fold, manifest, dice=0.6 + 0.1 * fold) for fold in range(3)]
    incomplete = run_record("ghost", 0, manifest)
    del incomplete[drop]
    write_lines(folder / "records.jsonl", good[:2] + [incomplete] + good[2:])
    with pytest.warns(UserWarning) as caught:
        [markdown] = write_benchmark_tables(folder, tmp_path / "board")
    assert any("records.jsonl:3:" in str(w.message) and repr(drop) in str(w.message) for w in caught), \
        [str(w.message) for w in caught]
    rows = table_rows(markdown.read_text())
    assert len(rows) == 1 and "| unet | 3 |" in rows[0] and "ghost" not in markdown.read_text()


# --- item 3: one benchmark per table --------------------------------------------------------------------------

def test_another_fold_manifest_in_the_folder_does_not_hide_the_default_runs(tmp_path):
    """Probe 1.8: nine default runs, then one run on an edited (swapped) manifest in the same folder."""
    folder, default = benchmark_folder(tmp_path)
    swapped = "3e9e7bcd4c94" + "5" * 52
    models = ("predict-nothing", "predict-everything", "tiny-unet")
    write_lines(folder / "records.jsonl",
                [run_record(m, f, default, dice=0.1 * (i + 1)) for i, m in enumerate(models) for f in range(3)]
                + [run_record("predict-nothing", 0, swapped, dice=0.9)])

    with pytest.warns(UserWarning, match="fold manifest/data") as caught:
        [markdown] = write_benchmark_tables(folder, tmp_path / "board")
    assert any(str(folder / "records.jsonl") in str(w.message) for w in caught)
    text = markdown.read_text()
    rows = table_rows(text)
    assert [row.split(" | ")[1] for row in rows] == ["tiny-unet", "predict-everything", "predict-nothing"]
    assert all(row.split(" | ")[2] == "3" for row in rows)
    assert f"fold manifest `{default[:12]}`" in text and f"data `{DATA_OLD[:12]}`" in text
    assert "0.9000" not in text.split("## Other fold manifests")[0]  # the swapped run's score is not in the table
    others = text.split("## Other fold manifests / data versions in this folder")[1]
    assert f"fold manifest `{swapped[:12]}`" in others and "1 run" in others and "not compared" in others

    # `matcv leaderboard` rebuilds the same table.
    with pytest.warns(UserWarning, match="fold manifest/data"):
        [rebuilt] = write_all_leaderboards(tmp_path / "runs", tmp_path / "rebuilt", submissions_dir=None, html=False)
    assert rebuilt.read_text() == text

    # The bench that just ran the swapped manifest shows that benchmark (and the default one as other).
    with pytest.warns(UserWarning, match="fold manifest/data"):
        [markdown] = write_benchmark_tables(folder, tmp_path / "bench-board", benchmark=(swapped, DATA_OLD))
    text = markdown.read_text()
    rows = table_rows(text)
    assert len(rows) == 1 and "| predict-nothing | 1 |" in rows[0] and f"fold manifest `{swapped[:12]}`" in text
    assert "9 runs" in text.split("## Other fold manifests / data versions in this folder")[1]


def test_a_data_edit_starts_a_new_table_instead_of_mixing_data_versions(tmp_path):
    """Probe 1.9: a full bench, then one mask edited and only one model re-run on the new data."""
    folder, manifest = benchmark_folder(tmp_path)
    old = [run_record(m, f, manifest, DATA_OLD, dice=d) for m, d in (("predict-everything", 0.2), ("tiny-unet", 0.7))
           for f in range(3)]
    new = [run_record("predict-everything", f, manifest, DATA_NEW, dice=0.3) for f in range(3)]
    write_lines(folder / "records.jsonl", old + new)

    with pytest.warns(UserWarning, match="fold manifest/data"):
        [markdown] = write_benchmark_tables(folder, tmp_path / "board")
    text = markdown.read_text()
    table, others = text.split("## Other fold manifests / data versions in this folder")
    rows = table_rows(table)
    assert len(rows) == 1 and "| predict-everything | 3 | 0.3000 ± 0.0000 |" in rows[0]
    assert f"data `{DATA_NEW[:12]}`" in table and DATA_OLD[:12] not in table
    assert f"data `{DATA_OLD[:12]}`" in others and "6 runs" in others
    csv = pd.read_csv(markdown.with_suffix(".csv"))
    assert list(csv["model"]) == ["predict-everything"]


@pytest.mark.parametrize("order", ["old-first", "new-first"])
def test_per_image_scores_pair_only_runs_on_the_same_manifest_and_data(order):
    manifest = "a" * 64
    old = [run_record("tiny-unet", f, manifest, DATA_OLD, dice=0.7) for f in range(3)]
    new = [run_record("predict-everything", f, manifest, DATA_NEW, dice=0.3) for f in range(3)]
    records = old + new if order == "old-first" else new + old
    newest = DATA_NEW if order == "old-first" else DATA_OLD
    selection = select_latest_runs(records)
    assert (selection.fold_manifest_sha256, selection.data_sha256) == (manifest, newest)
    assert {r["data_sha256"] for r in selection.runs.values()} == {newest}
    assert list(paired_item_scores(records, "dice").columns) == \
        (["predict-everything"] if newest == DATA_NEW else ["tiny-unet"])


def test_failed_runs_of_other_benchmarks_are_not_listed_as_this_ones(tmp_path):
    folder, manifest = benchmark_folder(tmp_path)
    write_lines(folder / "records.jsonl",
                [run_record("unet", 0, manifest, DATA_OLD, status="failed", error="old data broke")]
                + [run_record("unet", f, manifest, DATA_NEW) for f in range(3)]
                + [run_record("edge", 1, manifest, DATA_NEW, status="failed", error="OOM")])
    with pytest.warns(UserWarning, match="fold manifest/data"):
        [markdown] = write_benchmark_tables(folder, tmp_path / "board")
    text = markdown.read_text()
    assert "- edge fold 1: OOM" in text and "old data broke" not in text


def test_a_single_benchmark_folder_gets_no_other_section_and_no_warning(tmp_path):
    folder, manifest = benchmark_folder(tmp_path)
    write_lines(folder / "records.jsonl", [run_record("unet", f, manifest) for f in range(3)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        [markdown] = write_benchmark_tables(folder, tmp_path / "board")
    assert "Other fold manifests" not in markdown.read_text()


def test_without_the_folders_manifest_the_newest_pair_is_shown(tmp_path):
    path = tmp_path / "records.jsonl"
    write_lines(path, [run_record("unet", f, "a" * 64) for f in range(3)] + [run_record("edge", 0, "b" * 64)])
    with pytest.warns(UserWarning, match="fold manifest/data"):
        [markdown] = write_leaderboard(path, tmp_path / "board", ["dice"])
    rows = table_rows(markdown.read_text())
    assert len(rows) == 1 and "| edge | 1 |" in rows[0]


@pytest.mark.parametrize("drop", ["model", "fold", "status", "metrics", "data_sha256"])
def test_table_functions_leave_out_an_incomplete_record_given_in_memory(drop):
    """Readers that build records themselves (the submission boards) go through the same check."""
    manifest = "a" * 64
    records = [run_record("unet", fold, manifest, dice=0.5) for fold in range(3)]
    incomplete = run_record("ghost", 0, manifest, dice=0.9)
    del incomplete[drop]
    with pytest.warns(UserWarning, match=f"leaving out run record .*{drop}"):
        board = leaderboard_table(records + [incomplete], ["dice"])
    assert list(board.table["model"]) == ["unet"] and board.data_sha256 == DATA_OLD
    with pytest.warns(UserWarning, match="leaving out run record"):
        assert list(paired_item_scores(records + [incomplete], "dice").columns) == ["unet"]


@pytest.mark.parametrize("shown_has", ["failed runs only", "no runs"])
def test_a_benchmark_without_successful_runs_says_so_and_lists_the_others(tmp_path, shown_has):
    folder, manifest = benchmark_folder(tmp_path)
    lines = [run_record("unet", f, manifest, DATA_OLD) for f in range(3)]
    if shown_has == "failed runs only":
        lines.append(run_record("unet", 0, manifest, DATA_NEW, status="failed", error="label 3 not a rating"))
    write_lines(folder / "records.jsonl", lines)
    with pytest.warns(UserWarning, match="fold manifest/data"):
        [markdown] = write_benchmark_tables(folder, tmp_path / "board", benchmark=(manifest, DATA_NEW))
    text = markdown.read_text()
    assert "No successful runs yet." in text and f"data `{DATA_NEW[:12]}`" in text and not table_rows(text)
    assert ("- unet fold 0: label 3 not a rating" in text) == (shown_has == "failed runs only")
    assert "3 runs (3 ok): unet" in text.split(OTHERS_HEADING)[1]


def test_matcv_leaderboard_ranks_a_users_own_yaml_as_matcv_bench_did(tmp_path):
    """A task YAML outside the built-in ones travels with its runs: the rebuild keeps its metric directions
    instead of the built-in segmentation YAML's (which would rank dice highest first)."""
    import yaml

    from matcv.benchmarks.cli import run_and_report
    from tests.conftest import tiny_task_config

    path = tiny_task_config(tmp_path, models={
        "predict-nothing": {"class": "matcv.lightning_modules.segmentation.ConstantMaskBaseline", "args": {"value": 0}},
        "predict-everything": {"class": "matcv.lightning_modules.segmentation.ConstantMaskBaseline",
                               "args": {"value": 1}}}, folds=2)
    own = yaml.safe_load(path.read_text())
    own["lower_is_better"] = ["dice", "iou"]  # a deliberately inverted ranking only this YAML says
    path.write_text(yaml.safe_dump(own))
    run_and_report(path, output_dir=tmp_path / "runs", leaderboard_dir=tmp_path / "bench-board", progress=False,
                   log_wandb=False, print_tables=False)
    write_all_leaderboards(tmp_path / "runs", tmp_path / "rebuilt", submissions_dir=None, html=False)
    first = [pd.read_csv(next((tmp_path / board).glob("segmentation__*__quick.csv")))["model"].iloc[0]
             for board in ("bench-board", "rebuilt")]
    assert first == ["predict-nothing", "predict-nothing"]
