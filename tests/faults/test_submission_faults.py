"""Tampered submissions never stop the board: each bad one is rejected with a reason that names the file or field
and the problem, while the valid submission beside it keeps its table row and ``index.html`` is written.

Every case is rebuilt in a submissions folder of its own holding only the valid submission and that one bad copy,
so that a crash in one case cannot hide behind another's rejection. The valid submission is written here from the
ground truth (all-empty masks, metrics computed by the scorer): no training, a few seconds in all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from matcv.benchmarks.submission.submit import publish_official, submit
from matcv.datamodules.core.submission_format import SCHEMA, SubmissionError
from matcv.leaderboard.rebuild import write_all_leaderboards
from matcv.leaderboard.scorers import scorer_for
from tests.conftest import tiny_task_config
from tests.submission_tampering import copy_submission, edit_metadata, rewrite_npz

VALID = "good-net"
TASK = "segmentation"
SCRIPT = "<script>alert('x')</script><img src=x onerror=alert(1)>"


def _write_valid(folder: Path, official: Path, entry: dict) -> None:
    """A complete, honest submission: empty masks for every test item, the scorer's own metrics claimed."""
    scorer = scorer_for(TASK)
    truth = scorer.load_truth(entry, official)
    folds = []
    for k, fold in enumerate(truth.folds):
        arrays = {f"pred_{i:05d}": np.zeros_like(fold.targets[item], dtype=np.uint8)
                  for i, item in enumerate(fold.item_ids)}
        metrics, _ = scorer.score_fold(dict(arrays), list(fold.item_ids), fold)
        (folder / "predictions").mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / "predictions" / f"fold-{k}.npz", item_ids=np.array(fold.item_ids), **arrays)
        folds.append({"fold": k, "predictions": f"predictions/fold-{k}.npz", "metrics": metrics})
    metadata = {"schema": SCHEMA, "name": folder.name, "task": TASK, "profile": entry["profile"],
                "dataset": entry["dataset"], "authors": ["A. Person"], "description": "empty masks",
                "model": {"reference": "tests.faults:empty", "kind": "factory"}, "hyperparameters": {"width": 8},
                "tuning": "not tuned", "hardware": {"platform": "test"}, "matcv": {"git_commit": "0" * 40},
                "fold_manifest_sha256": entry["sha256"], "fold_manifest": entry["path"], "folds": folds}
    (folder / "metadata.json").write_text(json.dumps(metadata, indent=1))


@pytest.fixture(scope="module")
def official_world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("submission-faults")
    official = tmp / "official"
    entry = publish_official(tiny_task_config(tmp, folds=3, max_epochs=1), "quick", official)
    template = tmp / "template"
    _write_valid(template / TASK / VALID, official, entry)
    return {"official": official, "entry": entry, "template": template}


def _rebuild(world: dict, tmp_path: Path, tamper=None, name: str = "bad-net"):
    """The valid submission plus one tampered copy of it, then ``matcv leaderboard``'s rebuild:
    (submissions folder, output folder, what it printed)."""
    subs, out = tmp_path / "submissions", tmp_path / "results"
    shutil.copytree(world["template"], subs, symlinks=True)
    if tamper is not None:
        tamper(copy_submission(subs, TASK, VALID, name))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        write_all_leaderboards(tmp_path / "runs", out, submissions_dir=subs, official_dir=world["official"])
    return subs, out, printed.getvalue()


def _board(out: Path) -> Path:
    boards = sorted(out.glob("*__submissions.md"))
    assert len(boards) == 1, sorted(p.name for p in out.iterdir())
    return boards[0]


def _assert_valid_submission_on_board(out: Path) -> None:
    assert f"| {VALID} (submission) | submission | 3 |" in _board(out).read_text()
    page = (out / "index.html").read_text()
    assert f"{VALID} (submission)" in page


# ---------------------------------------------------------------- ways to tamper

def _members(path: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def _rewrite_members(path: Path, change) -> None:
    """Rewrite a predictions .npz member by member: ``change(list of (name, bytes))`` returns the new list."""
    members = change(_members(path))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)


def _replace_member(member: str, data: bytes, new_name: str | None = None, fold: int = 0):
    def tamper(folder: Path):
        _rewrite_members(folder / "predictions" / f"fold-{fold}.npz",
                         lambda members: [(new_name or n, data) if n == member else (n, d) for n, d in members])
    return tamper


def _npy_header_only(shape: tuple, descr: str) -> bytes:
    """A valid .npy header that claims ``shape`` of ``descr``, followed by no data at all."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _renamed_member(folder: Path):
    """``pred_00000.npy`` stored as ``pred_00000`` (a valid array, but not an .npy member)."""
    _rewrite_members(folder / "predictions" / "fold-0.npz",
                     lambda members: [("pred_00000" if n == "pred_00000.npy" else n, d) for n, d in members])


def _duplicate_member(folder: Path):
    """A second ``pred_00000.npy`` member: which of the two would be scored is up to the reader."""
    def change(members):
        first = dict(members)["pred_00000.npy"]
        return members + [("pred_00000.npy", _npy(np.ones_like(np.load(io.BytesIO(first)))))]
    with pytest.warns(UserWarning, match="Duplicate name"):
        _rewrite_members(folder / "predictions" / "fold-0.npz", change)


def _deep_json(folder: Path):
    (folder / "metadata.json").write_text("[" * 200_000 + "]" * 200_000)


def _deep_json_field(folder: Path):
    text = (folder / "metadata.json").read_text()
    (folder / "metadata.json").write_text(text.replace("{", '{"extra": ' + "[" * 200_000 + "]" * 200_000 + ", ", 1))


def _set(key, value):
    return lambda folder: edit_metadata(folder, lambda meta: meta.update({key: value}))


def _object_array(folder: Path):
    def change(arrays):
        arrays["pred_00000"] = np.array([arrays["pred_00000"], "x"], dtype=object)
    path = folder / "predictions" / "fold-0.npz"
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    change(arrays)
    np.savez_compressed(path, **arrays)


def _symlink(folder: Path):
    os.symlink("/etc/hostname", folder / "notes.md")


def _claimed_metrics(folder: Path):
    edit_metadata(folder, lambda m: m["folds"][1]["metrics"].update(dice=m["folds"][1]["metrics"]["dice"] + 0.05))


def _fold_as_bool(folder: Path):
    edit_metadata(folder, lambda m: m["folds"][1].update(fold=True))


def _fold_twice(folder: Path):
    edit_metadata(folder, lambda m: m["folds"].append(dict(m["folds"][0])))


def _bomb(folder: Path):
    # 4 MB of zeros (a few kB compressed) against an official fold of ~1 MB of masks
    rewrite_npz(folder / "predictions" / "fold-0.npz",
                lambda a: a.update(pred_00000=np.zeros((2000, 2000), dtype=np.uint8)))


def _not_a_zip(folder: Path):
    (folder / "predictions" / "fold-0.npz").write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")


def _big_readme(folder: Path):
    with open(folder / "README.md", "wb") as readme:
        readme.truncate(3 << 20)  # sparse: cheap to make, never worth reading


def _unsafe_path(folder: Path):
    edit_metadata(folder, lambda m: m["folds"][0].update(predictions="../good-net/predictions/fold-0.npz"))


def _missing_fold(folder: Path):
    (folder / "predictions" / "fold-2.npz").unlink()


def _truncated_json(folder: Path):
    text = (folder / "metadata.json").read_text()
    (folder / "metadata.json").write_text(text[: len(text) // 2])


# name -> (tamper, substrings the REJECTED line must hold: the file or field, and the problem)
TAMPERED = {
    # the four crash classes (each used to abort the whole build)
    "deep-json": (_deep_json, ["metadata.json", "nested more than"]),
    "deep-json-field": (_deep_json_field, ["metadata.json", "nested more than"]),
    "raw-item-ids": (_replace_member("item_ids.npy", b"not an npy file"),
                     ["predictions/fold-0.npz", "member 'item_ids.npy' is not an .npy array"]),
    "raw-prediction": (_replace_member("pred_00000.npy", b"not an npy file", fold=1),
                       ["predictions/fold-1.npz", "member 'pred_00000.npy' is not an .npy array"]),
    "member-without-suffix": (_renamed_member, ["predictions/fold-0.npz", "member 'pred_00000'", "not an .npy"]),
    "header-200000": (_replace_member("pred_00000.npy", _npy_header_only((200_000, 200_000), "|u1")),
                      ["predictions/fold-0.npz", "'pred_00000.npy'", "(200000, 200000)", "40000000000 bytes"]),
    "header-1e7": (_replace_member("pred_00000.npy", _npy_header_only((10**7, 10**7), "<f8")),
                   ["predictions/fold-0.npz", "'pred_00000.npy'", "(10000000, 10000000)"]),
    "header-huge-strings": (_replace_member("item_ids.npy", _npy_header_only((6,), "<U100000000")),
                            ["predictions/fold-0.npz", "'item_ids.npy'", "<U100000000"]),
    "header-negative": (_replace_member("pred_00000.npy", _npy_header_only((-1, 32), "|u1")),
                        ["'pred_00000.npy'", "shape (-1, 32)"]),
    "surrogate-description": (_set("description", "reliability \ud800 probe"),
                              ["metadata.json", "'description'", "surrogate"]),
    "surrogate-key": (_set("hyperparameters", {"w\udcff": 1}),
                      ["metadata.json", "key 'hyperparameters.w\\xff'", "surrogate"]),
    "control-authors": (_set("authors", ["A. Person", "B\x1b[31m. Red"]),
                        ["metadata.json", "'authors[1]'", "control character"]),
    "bidi-tuning": (_set("tuning", "not tuned\u202e"), ["metadata.json", "'tuning'", "U+202E"]),
    "duplicate-member": (_duplicate_member, ["predictions/fold-0.npz", "'pred_00000.npy' twice"]),
    "fold-as-bool": (_fold_as_bool, ["metadata.json", "folds[1]", "integer 'fold'", "True"]),
    "fold-twice": (_fold_twice, ["metadata.json", "fold 0 is listed twice"]),
    "big-readme": (_big_readme, ["README.md is larger than"]),
    # rejected before as well: kept here so that the probe stays a test
    "object-array": (_object_array, ["predictions/fold-0.npz", "cannot be read without pickle"]),
    "pickle-file": (lambda f: (f / "model.pkl").write_bytes(b"\x80\x04K\x01."), ["model.pkl has a forbidden type"]),
    "symlink": (_symlink, ["notes.md is a symbolic link"]),
    "not-a-zip": (_not_a_zip, ["predictions/fold-0.npz is not a readable .npz file"]),
    "bomb": (_bomb, ["predictions/fold-0.npz unpacks to more than"]),
    "truncated-json": (_truncated_json, ["metadata.json is not valid JSON"]),
    "huge-integer": (lambda f: (f / "metadata.json").write_text('{"schema": 1' + "0" * 5000 + "}"),
                     ["metadata.json is not valid JSON", "4300 digits"]),
    "claimed-metrics": (_claimed_metrics, ["claimed metrics do not match the predictions: fold 1 dice claimed"]),
    "unsafe-path": (_unsafe_path, ["unsafe path '../good-net/predictions/fold-0.npz' in metadata.json"]),
    "missing-fold": (_missing_fold, ["fold 2: predictions file predictions/fold-2.npz is missing"]),
    "wrong-sha": (_set("fold_manifest_sha256", "0" * 64), ["fold manifest sha256 0000000000000000... differs"]),
}


@pytest.mark.parametrize("name", sorted(TAMPERED))
def test_tampered_submission_is_rejected_and_the_board_is_still_written(official_world, tmp_path, name):
    tamper, expected = TAMPERED[name]
    _, out, printed = _rebuild(official_world, tmp_path, tamper, name)
    line = next((x for x in printed.splitlines() if x.startswith("REJECTED") and f"/{name}:" in x), None)
    assert line is not None, printed
    for part in expected:
        assert part in line, line
    _assert_valid_submission_on_board(out)
    page = (out / "index.html").read_text()
    assert name in page.split("Rejected submissions")[1]
    assert name not in _board(out).read_text()


def test_an_unforeseen_error_while_scoring_rejects_only_that_submission(official_world, tmp_path, monkeypatch):
    """The catch-all: an exception no check foresaw (here raised by the scorer) is a rejection naming its type,
    its message and the file being scored; the other submission is scored as usual."""
    from matcv.leaderboard.scorers import segmentation

    scorer = segmentation.SCORERS[TASK]

    def score_fold(arrays, item_ids, truth):
        if arrays["pred_00000"][0, 0] == 1:
            raise ZeroDivisionError("an unforeseen failure")
        return scorer.score_fold(arrays, item_ids, truth)

    monkeypatch.setitem(segmentation.SCORERS, TASK, dataclasses.replace(scorer, score_fold=score_fold))

    def tamper(folder):
        def mark(arrays):
            arrays["pred_00000"][0, 0] = 1
        rewrite_npz(folder / "predictions" / "fold-1.npz", mark)

    _, out, printed = _rebuild(official_world, tmp_path, tamper, "odd-net")
    line = next(x for x in printed.splitlines() if "/odd-net:" in x)
    assert line.startswith("REJECTED") and "predictions/fold-1.npz" in line
    assert "ZeroDivisionError: an unforeseen failure" in line
    _assert_valid_submission_on_board(out)


def test_free_text_is_escaped_in_markdown_and_html(official_world, tmp_path):
    """Markup in a description or an author name is shown as text, in the Markdown table as in the page."""
    def tamper(folder):
        edit_metadata(folder, lambda m: m.update(description=f"dilated FCN {SCRIPT} [x](javascript:alert(1))",
                                                 authors=[SCRIPT], tuning="*none* | `x`"))

    _, out, printed = _rebuild(official_world, tmp_path, tamper, "markup-net")
    assert "REJECTED" not in printed, printed
    markdown, page = _board(out).read_text(), (out / "index.html").read_text()
    assert "| markup-net (submission) | submission | 3 |" in markdown
    for text in (markdown, page):
        assert "<script" not in text and "<img src=x" not in text
        assert "&lt;script&gt;alert(" in text
    assert "[x](javascript:" not in markdown
    _assert_valid_submission_on_board(out)


def test_a_folder_name_that_is_not_utf8_is_rejected_and_the_page_is_written(official_world, tmp_path):
    def tamper(folder):
        os.rename(folder, os.fsencode(folder.parent) + b"/bad-\xff")

    _, out, printed = _rebuild(official_world, tmp_path, tamper, "to-rename")
    line = next(x for x in printed.splitlines() if "bad-" in x)
    assert line.startswith("REJECTED") and "unsafe submission name" in line
    _assert_valid_submission_on_board(out)
    assert "bad-\\xff" in (out / "index.html").read_text()


def test_a_board_that_cannot_be_written_does_not_stop_the_page(official_world, tmp_path, monkeypatch):
    from matcv.leaderboard.submission import boards

    def broken_plot(*args, **kwargs):
        raise RuntimeError("no space left for the plot")

    monkeypatch.setattr(boards, "per_fold_plot", broken_plot)
    _, out, printed = _rebuild(official_world, tmp_path)
    assert "RuntimeError: no space left for the plot" in printed
    assert "segmentation/" in printed
    assert (out / "index.html").is_file()


def test_a_task_folder_that_cannot_be_listed_is_rejected_and_the_page_is_written(official_world, tmp_path,
                                                                                 monkeypatch):
    """(Permissions cannot be taken away from root, who runs the tests in containers: the listing fails here.)"""
    listing = Path.iterdir

    def iterdir(path):
        if path.name == "rating":
            raise PermissionError(13, "Permission denied", str(path))
        return listing(path)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    _, out, printed = _rebuild(official_world, tmp_path, lambda folder: (folder.parent.parent / "rating").mkdir())
    assert any(x.startswith("REJECTED") and x.endswith("/rating: the task folder cannot be listed (permissions?)")
               for x in printed.splitlines()), printed
    _assert_valid_submission_on_board(out)


@pytest.mark.parametrize("field, value", [("description", "reliability \ud800 probe"), ("tuning", "grid \x1b[31m"),
                                          ("authors", ["A. Author", "B. \u202eAuthor"])])
def test_matcv_submit_refuses_free_text_the_leaderboard_would_reject_before_training(field, value, tmp_path):
    with pytest.raises(SubmissionError, match=field):
        submit("segmentation", "no_such_package.nets:build", "my-net", **{field: value}, submissions_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing written, nothing trained
