"""What a run's record says beyond its scores: the size of the model, and the group of every test item.

Both serve the analyses of a benchmark's records: per-item statistics that must respect the grouping (a
specimen's photos are not independent samples), and comparisons of accuracy against model size.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

# The suffix a DataModule gives the patches or crops of one item of the fold manifest ("<item>#<k>"): such a
# test item belongs to the group of the item it was cut from.
PART_SEPARATOR = "#"


def parameter_count(model: torch.nn.Module) -> tuple[int, str | None]:
    """(number of torch parameters, note or None). A model fitted outside torch (a scikit-learn baseline) has
    0 parameters; the note then says what it fitted instead, e.g. "RandomForestClassifier: 8212 tree nodes"."""
    count = sum(p.numel() for p in model.parameters())
    if count:
        return count, None
    # Plain attributes of an nn.Module live in its __dict__ (parameters and sub-modules do not).
    fitted = [_describe(value) for value in vars(model).values() if isinstance(value, BaseEstimator)]
    if not fitted:
        return 0, None
    return 0, "no network parameters; fitted outside torch: " + "; ".join(fitted)


def _describe(estimator: BaseEstimator) -> str:
    steps = [step for _, step in estimator.steps] if isinstance(estimator, Pipeline) else [estimator]
    parts = []
    for step in steps:
        name = type(step).__name__
        trees = getattr(step, "estimators_", None)
        if trees is not None and all(hasattr(tree, "tree_") for tree in trees):
            name += f": {sum(tree.tree_.node_count for tree in trees)} tree nodes"
        elif hasattr(step, "coef_"):
            name += f": {np.size(step.coef_) + np.size(getattr(step, 'intercept_', []))} coefficients"
        parts.append(name)
    return " + ".join(parts)


def with_groups(per_item: list[dict], groups: Mapping[str, str], source: str) -> list[dict]:
    """``per_item`` with each entry's ``"group"`` from the fold manifest's ``groups`` (item id -> group); a
    patch "<item>#<k>" takes its item's group. An item the manifest does not list is an error naming it: the
    fold's test part comes from that manifest, so it would mean the two disagree."""
    out = []
    for entry in per_item:
        item = str(entry["item_id"])
        group = groups.get(item)
        if group is None and PART_SEPARATOR in item:
            group = groups.get(item.rpartition(PART_SEPARATOR)[0])
        if group is None:
            raise KeyError(f"test item {item!r} has no group in {source} (its 'groups' map): the model scored an "
                           f"item the fold manifest does not list")
        out.append({**entry, "group": group})
    return out
