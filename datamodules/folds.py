"""Specimen-grouped folds, written once as a fold manifest and checked on every use.

Folds are data, not code (matbench): ``make_fold_manifest`` draws k stratified group folds
(scikit-learn's StratifiedGroupKFold) and, inside each training part, a grouped validation split;
the result is a JSON file whose sha256 is recorded with every result. Each item's group is stored in
the file, so ``check_no_group_leak`` can verify on every setup that no group (panel, specimen, alloy,
sample) sits in two partitions of a fold, and ``check_matches_data`` that the file belongs to the data.

One exception, never silent: a publisher's own split (``protocol: "published split"``) may put a group in two
partitions. It is then run as published, beside the grouped folds, with the leak written into the manifest
(``leaky_groups``: group -> its partitions) and into the table's title; a leak the manifest does not declare,
group by group and partition by partition, is still a ``GroupLeakError``.
"""

from __future__ import annotations

import json
import math
import unicodedata
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from matcv.datamodules.core.atomic_io import atomic_write_text, sha256_bytes

FORMAT = "matcv-fold-manifest/1"
PARTITIONS = ("train", "val", "test")
PUBLISHED_SPLIT = "published split"  # a fold manifest's ``protocol`` when it is a publisher's own split


class GroupLeakError(ValueError):
    """A group appears in two partitions of a fold: scores would be inflated by leakage."""


class FoldManifestError(ValueError):
    """A fold manifest that is malformed or does not belong to the data it is used with."""


# Characters that print as nothing: a BOM or zero-width space pasted from a spreadsheet or a web page.
_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"


def normalise_group(value) -> str:
    """A group id as matcv compares it: Unicode NFC, without surrounding whitespace or invisible characters.

    ``"panel-0000 "`` and ``"panel-0000"``, or an "é" typed as one character and as e + accent, are one panel
    to the person who wrote them; as two groups their photos could land in train and test of one fold.
    Case is kept: see ``similar_group_problems``.
    """
    text = unicodedata.normalize("NFC", str(value))
    return text.strip().strip(_INVISIBLE).strip()


def _group_key(group: str) -> str:
    # What is left of a group id when case, spacing, invisible characters and compatibility forms (full-width
    # letters, ligatures) are ignored: two distinct ids with one key are almost surely one specimen.
    text = unicodedata.normalize("NFKC", group).casefold()
    return "".join(c for c in text if not c.isspace() and unicodedata.category(c) != "Cf")


def similar_group_problems(groups: Sequence[str], where: Mapping[str, str] | None = None,
                           column: str = "group") -> list[str]:
    """One problem per set of distinct group ids that differ only in case, spacing or invisible characters.

    These are an error rather than a warning, and are not folded together silently. Folding would guess:
    "A1" and "a1" may name two specimens in some lab's scheme. A warning scrolls past in a bench log while the
    benchmark goes on to split one specimen across train and test, the leak grouped CV exists to prevent. An
    error costs a rename, and a rename is also the fix when they really are two specimens. ``where`` tells,
    for a group, where it was read (e.g. "rows 2, 3"), for the message.
    """
    by_key: dict[str, list[str]] = {}
    for group in dict.fromkeys(groups):
        by_key.setdefault(_group_key(group), []).append(group)
    problems = []
    for spellings in by_key.values():
        if len(spellings) > 1:
            shown = " and ".join(f"{g!r}" + (f" ({where[g]})" if where and g in where else "") for g in spellings)
            problems.append(f"{column} values {shown} differ only in case or spacing: if they are one specimen, "
                            f"spell them alike (as two groups its photos could fall on both sides of a split); if "
                            f"they are different specimens, name them apart by more than case or spacing")
    return problems


def _grouped_split(items: np.ndarray, groups: np.ndarray, strata: np.ndarray, n_splits: int, seed: int,
                   too_few: Callable[[int], str], what: str):
    """``n_splits`` grouped splits; ``too_few(n_groups)`` says why there are too few groups, and ``what``
    names the split in the warning when it cannot be stratified."""
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise FoldManifestError(too_few(n_groups))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    try:
        return list(splitter.split(items, strata, groups))
    except ValueError as error:
        # Too few items of some stratum for this many splits (small data, inner validation split):
        # keep the grouping, drop the stratification, and say so.
        warnings.warn(f"stratified group split into {n_splits} failed for {what} ({error}); using unstratified "
                      f"group splits for this split", stacklevel=3)
        return list(splitter.split(items, np.zeros(len(items), int), groups))


def make_fold_manifest(
    items: Sequence[str],
    groups: Sequence[str],
    strata: Sequence | None = None,
    n_folds: int = 3,
    val_fraction: float = 0.2,
    seed: int = 0,
    group_column: str = "panel_id",
    stratify_column: str | None = "rating",
) -> dict:
    """k grouped test folds, each with a grouped validation split of its training part.

    ``strata`` (e.g. the rating) balances label distributions across folds; without it the folds
    are plain shuffled group folds. Groups that are empty, or that differ only in case or spacing, are refused
    whatever DataModule produced them (``similar_group_problems``).
    """
    items_arr = np.asarray(items, dtype=object)
    groups_arr = np.asarray(groups, dtype=object)
    if len(set(items_arr)) != len(items_arr):
        raise FoldManifestError("item ids must be unique")
    if group_column not in PER_ITEM_GROUP_COLUMNS:
        empty = [item for item, group in zip(items_arr, groups_arr) if not normalise_group(group)]
        problems = [f"{len(empty)} item(s) with an empty {group_column}, e.g. {empty[:3]}"] if empty else []
        problems += similar_group_problems([str(g) for g in groups_arr], column=group_column)
        if problems:
            raise FoldManifestError("cannot draw grouped folds: " + "; ".join(problems))
    strata_arr = np.zeros(len(items_arr), int) if strata is None else np.asarray(strata)
    if not 0 < val_fraction < 0.5:
        raise FoldManifestError(f"val_fraction must be in (0, 0.5), got {val_fraction}")
    inner_splits = max(2, int(round(1 / val_fraction)))
    n_all = len(set(groups_arr.tolist()))
    folds = []

    def too_few_for_folds(n_groups: int) -> str:
        return (f"cannot make {n_folds} grouped splits from only {n_groups} groups ({group_column}): "
                f"{n_folds} test folds need at least {n_folds} groups; ask for fewer folds or give more groups")

    outer = _grouped_split(items_arr, groups_arr, strata_arr, n_folds, seed, too_few_for_folds, "the test folds")
    for fold, (train_val_idx, test_idx) in enumerate(outer):

        def too_few_for_validation(n_groups: int, fold: int = fold) -> str:
            # max(2, round(1 / val_fraction)) inner splits, one of which becomes the validation part: the
            # training part needs that many groups. val_fraction must stay below 0.5, hence the 0.45 cap.
            suggested = min(math.ceil(100 / max(n_groups, 1)) / 100, 0.45)
            hint = (f"use val_fraction {suggested:g} or more (below 0.5), fewer folds, or more groups"
                    if n_groups >= 2 else "use fewer folds or give more groups")
            return (f"fold {fold}: cannot make its grouped validation split: val_fraction {val_fraction:g} asks "
                    f"for {inner_splits} grouped splits of the training part (one becomes the validation part), "
                    f"but that training part holds only {n_groups} groups ({group_column}): the data's {n_all} "
                    f"groups less fold {fold}'s test part, {n_folds} folds being asked (cannot make {inner_splits} "
                    f"grouped splits from only {n_groups} groups); {hint}")

        inner = _grouped_split(items_arr[train_val_idx], groups_arr[train_val_idx], strata_arr[train_val_idx],
                               inner_splits, seed + 1 + fold, too_few_for_validation,
                               f"the validation split of fold {fold} (val_fraction {val_fraction:g})")
        train_idx, val_idx = train_val_idx[inner[0][0]], train_val_idx[inner[0][1]]
        folds.append({name: sorted(items_arr[idx].tolist()) for name, idx in
                      (("train", train_idx), ("val", val_idx), ("test", test_idx))})
    manifest = {
        "format": FORMAT,
        "n_folds": n_folds,
        "seed": seed,
        "val_fraction": val_fraction,
        "group_column": group_column,
        "stratify_column": stratify_column if strata is not None else None,
        "groups": dict(sorted(zip(items_arr.tolist(), groups_arr.tolist()))),
        "folds": folds,
    }
    check_no_group_leak(manifest)
    return manifest


def fold_manifest_bytes(manifest: Mapping) -> bytes:
    return (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()


def write_fold_manifest(path: str | Path, manifest: Mapping) -> str:
    """Write atomically; return the file's sha256 (the hash recorded with every result)."""
    data = fold_manifest_bytes(manifest)
    atomic_write_text(path, data.decode())
    return sha256_bytes(data)


def read_fold_manifest(path: str | Path) -> tuple[dict, str]:
    """(manifest, sha256 of the file) after checking its structure and that it does not leak."""
    path = Path(path)
    if not path.is_file():
        raise FoldManifestError(f"fold manifest {path} not found")
    data = path.read_bytes()
    try:
        manifest = json.loads(data)
    except json.JSONDecodeError as error:
        raise FoldManifestError(f"fold manifest {path} is not valid JSON: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise FoldManifestError(f"fold manifest {path}: expected format {FORMAT!r}")
    for key in ("groups", "folds"):
        if key not in manifest:
            raise FoldManifestError(f"fold manifest {path}: missing {key!r}")
    for k, fold in enumerate(manifest["folds"]):
        if set(fold) != set(PARTITIONS):
            raise FoldManifestError(f"fold manifest {path}: fold {k} must have exactly {PARTITIONS}")
    check_no_group_leak(manifest, source=str(path))
    return manifest, sha256_bytes(data)


def group_leaks(manifest: Mapping, source: str = "fold manifest") -> list[dict[str, list[str]]]:
    """Per fold, {group: the partitions it is in (in PARTITIONS order)} for every group in more than one."""
    groups = manifest["groups"]
    leaks = []
    for k, fold in enumerate(manifest["folds"]):
        where: dict[str, list[str]] = {}
        for partition in PARTITIONS:
            for item in fold[partition]:
                if item not in groups:
                    raise FoldManifestError(f"{source}: fold {k} {partition} lists {item!r}, which has no group")
                parts = where.setdefault(groups[item], [])
                if partition not in parts:
                    parts.append(partition)
        leaks.append({group: parts for group, parts in sorted(where.items()) if len(parts) > 1})
    return leaks


def declare_leaks(manifest: dict, source: str = "fold manifest") -> dict:
    """Mark ``manifest`` (a publisher's split, one fold) as the published-split protocol and write down every group
    it puts in two partitions (``leaky_groups``), so that it can be run as published without the leak going
    unnoticed. A manifest without leaks gets ``leaky_groups: {}``."""
    leaks = group_leaks(manifest, source)
    if len(leaks) != 1:
        raise FoldManifestError(f"{source}: a published split has one fold, not {len(leaks)}")
    manifest["protocol"] = PUBLISHED_SPLIT
    manifest["leaky_groups"] = leaks[0]
    return manifest


def fixed_split_manifest(rows: Sequence[tuple[str, str, str | None]], source: str, group_column: str = "group",
                         declare: bool = False) -> dict:
    """A one-fold manifest (``make_fold_manifest``'s format) of a split fixed in advance: ``rows`` are (item, group,
    partition) with partition train/val/test, or None for an item the split leaves out. ``declare``: the
    published-split protocol, every group in two partitions written down (``declare_leaks``); otherwise a leak is
    a ``GroupLeakError``."""
    fold = {partition: sorted(item for item, _, part in rows if part == partition) for partition in PARTITIONS}
    kept = {item for part in fold.values() for item in part}
    manifest = {
        "format": FORMAT,
        "n_folds": 1,
        "seed": None,  # nothing is drawn: the publisher's split
        # The realised share of validation items in train+val, where make_fold_manifest stores its target.
        "val_fraction": len(fold["val"]) / max(1, len(fold["train"]) + len(fold["val"])),
        "group_column": group_column,
        "stratify_column": None,
        "groups": dict(sorted((item, group) for item, group, _ in rows if item in kept)),
        "folds": [fold],
    }
    if declare:  # the published-split protocol: a leak is written down, not refused
        return declare_leaks(manifest, source)
    check_no_group_leak(manifest, source=source)  # a copy could mix groups
    return manifest


def published_split_manifest(rows: Sequence[tuple[str, str, str | None]], source: str,
                             group_column: str = "group", val_fraction: float = 0.2, seed: int = 0) -> dict:
    """A user's own split (a manifest's ``split`` column; ``rows`` as ``fixed_split_manifest``'s) as the
    published-split protocol: one fold, taken as the publisher made it, with every group it puts in two partitions
    declared rather than refused, so that it runs beside grouped CV and its table says it leaks. A split without
    training or test rows cannot be run: FoldManifestError saying so.

    Many publishers give train and test only; checkpoint selection still needs a validation part, so one is drawn
    from the training groups that are not also in test (grouped, ``val_fraction`` of them, seeded), written into
    the manifest (``validation_drawn``) and said in the table's protocol note. The test part is never touched."""
    sizes = {p: sum(1 for _, _, part in rows if part == p) for p in PARTITIONS}
    empty = [p for p in ("train", "test") if not sizes[p]]
    if empty:
        raise FoldManifestError(f"{source}: the published split has no {' and no '.join(empty)} rows "
                                f"({', '.join(f'{n} {p}' for p, n in sizes.items())}): the published-split "
                                f"protocol needs train and test rows; grouped CV does not use the split column")
    drawn = None
    if not sizes["val"]:
        rows, drawn = _draw_validation(rows, source, val_fraction, seed)
    manifest = fixed_split_manifest(rows, source, group_column, declare=True)
    if drawn is not None:
        manifest["validation_drawn"] = drawn
    return manifest


def _draw_validation(rows: Sequence[tuple[str, str, str | None]], source: str, val_fraction: float,
                     seed: int) -> tuple[list[tuple[str, str, str | None]], dict]:
    """``rows`` with a grouped validation part moved out of their training rows (``published_split_manifest``)."""
    test_groups = {group for _, group, part in rows if part == "test"}
    candidates = [(item, group) for item, group, part in rows if part == "train" and group not in test_groups]
    n_splits = max(2, int(round(1 / val_fraction)))
    n_groups = len({group for _, group in candidates})
    if n_groups < n_splits:
        raise FoldManifestError(f"{source}: the published split has no val rows, and its training part has "
                                f"{n_groups} group(s) outside test, too few to draw a grouped validation part "
                                f"(val_fraction {val_fraction:g} needs {n_splits}): mark some training groups "
                                f"'val' in the split column")
    items = np.array([item for item, _ in candidates])
    groups = np.array([group for _, group in candidates])
    splits = _grouped_split(items, groups, np.zeros(len(items), int), n_splits, seed,
                            lambda n: f"{source}: {n} training groups", "the published split's validation part")
    validation = set(items[splits[0][1]].tolist())
    moved = [(item, group, "val" if item in validation else part) for item, group, part in rows]
    return moved, {"from": "train", "val_fraction": val_fraction, "seed": seed,
                   "groups": sorted({group for item, group, _ in rows if item in validation})}


def check_no_group_leak(manifest: Mapping, source: str = "fold manifest") -> None:
    """Raise GroupLeakError naming the first group found in two partitions of a fold, unless the manifest is a
    published split that declares exactly that leak (``declare_leaks``): the same groups, each in the same
    partitions. A declared leak that is not there is an error too (the declaration belongs to other folds)."""
    declared = manifest.get("leaky_groups")
    if declared is not None and manifest.get("protocol") != PUBLISHED_SPLIT:
        raise FoldManifestError(f"{source}: declares leaky_groups but is not a {PUBLISHED_SPLIT!r} protocol; "
                                f"grouped folds never leak")
    if declared is not None and (not isinstance(declared, Mapping) or
                                 not all(isinstance(p, list) for p in declared.values())):
        raise FoldManifestError(f"{source}: leaky_groups must map each group to a list of partitions, "
                                f"got {declared!r}")
    declared = {g: sorted(p, key=_partition_order) for g, p in (declared or {}).items()}
    column = manifest.get("group_column", "group")
    for k, leaks in enumerate(group_leaks(manifest, source)):
        for group, parts in leaks.items():
            if declared.get(group) != parts:
                item = next(i for i in manifest["folds"][k][parts[1]] if manifest["groups"][i] == group)
                said = f" (the manifest declares it in {' and '.join(declared[group])} only)" \
                    if group in declared else ""
                raise GroupLeakError(
                    f"{source}: group {group!r} ({column}) is in both {parts[0]} and {parts[1]} of fold {k} "
                    f"(e.g. item {item!r}){said}; grouped CV forbids this"
                )
        stale = sorted(set(declared) - set(leaks))
        if stale:
            raise FoldManifestError(f"{source}: declares group(s) {stale} in two partitions, but fold {k} keeps "
                                    f"them apart: the declaration does not belong to these folds")


def _partition_order(partition: str) -> int:
    return PARTITIONS.index(partition) if partition in PARTITIONS else len(PARTITIONS)


def protocol_note(manifest: Mapping) -> str | None:
    """How a table names a protocol other than grouped CV, e.g. "published split; leaky: group 'S3' in train and
    test"; None for grouped folds."""
    if manifest.get("protocol") != PUBLISHED_SPLIT:
        return None
    leaks = manifest.get("leaky_groups") or {}
    said = "; ".join(f"group {g} in {' and '.join(p)}" for g, p in leaks.items())
    drawn = manifest.get("validation_drawn")
    validation = (f"; validation drawn from its training groups ({len(drawn.get('groups', []))} groups)"
                  if isinstance(drawn, Mapping) else "")
    return PUBLISHED_SPLIT + (f"; leaky: {said}" if said else "") + validation


def check_matches_data(manifest: Mapping, groups_by_item: Mapping[str, str], source: str = "fold manifest") -> None:
    """The fold manifest must list exactly the data's items, each with the data's group."""
    listed = manifest["groups"]
    missing = sorted(set(groups_by_item) - set(listed))
    extra = sorted(set(listed) - set(groups_by_item))
    if missing or extra:
        raise FoldManifestError(
            f"{source} does not belong to this data: {len(missing)} data item(s) not in it "
            f"{missing[:3]}, {len(extra)} listed item(s) not in the data {extra[:3]}"
        )
    changed = [item for item, group in groups_by_item.items() if listed[item] != group]
    if changed:
        item = changed[0]
        raise FoldManifestError(f"{source}: item {item!r} has group {listed[item]!r} there but "
                                f"{groups_by_item[item]!r} in the data ({len(changed)} item(s) differ)")
    for k, fold in enumerate(manifest["folds"]):
        counted = sum(len(fold[p]) for p in PARTITIONS)
        if counted != len(set().union(*(fold[p] for p in PARTITIONS))) or counted != len(listed):
            raise FoldManifestError(f"{source}: fold {k} must put every item in exactly one partition")


# The harness's deliberately leaky item-level folds (the leakage report) group by the item itself.
PER_ITEM_GROUP_COLUMNS = ("image_path", "item_id")


def load_fold(path: str | Path, fold: int,
              groups_by_item: Mapping[str, str] | Callable[[str | None], Mapping[str, str]],
              source: str | None = None) -> dict[str, list[str]]:
    """The item ids of fold ``fold``'s train, val and test parts, after every check a DataModule's setup needs:
    no group in two parts (``read_fold_manifest``), the manifest's items and groups are the data's
    (``check_matches_data``; against the items themselves for item-level folds) and the fold exists.

    ``groups_by_item`` may be a function of the manifest's ``group_column``, for data whose table offers several
    group columns (a user's corrosion manifest): the folds are then checked against the column they were
    grouped by.
    """
    manifest, _ = read_fold_manifest(path)
    column = manifest.get("group_column")
    if callable(groups_by_item):
        groups_by_item = groups_by_item(column)
    if column in PER_ITEM_GROUP_COLUMNS:
        groups_by_item = {item: item for item in groups_by_item}
    check_matches_data(manifest, groups_by_item, source=source or str(path))
    if not 0 <= fold < len(manifest["folds"]):
        raise FoldManifestError(f"fold {fold} does not exist in {path} ({len(manifest['folds'])} folds)")
    return {part: list(manifest["folds"][fold][part]) for part in PARTITIONS}
