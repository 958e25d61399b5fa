"""Which UHCSDB micrographs are used, and how each is grouped and rescaled.

The public release is the rows whose primary_microconstituent is one of ``RELEASE_CONSTITUENTS``. Every
micrograph is rescaled to one target magnification (default: the median of the rows used), so a pixel means
the same length in every patch; rows without a usable magnification, or enlarged more than ``max_upscale``,
are skipped with the reason. Folds are grouped by specimen (``sample_key``), since the micrographs of one
specimen are near copies. The curation and why it is done this way: docs/tasks/microstructure.md.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from matcv.datamodules.manifest import ManifestError
from matcv.datamodules.uhcsdb.metadata import (
    RELEASE_CONSTITUENTS,
    MetadataRow,
    metadata_path,
    parse_magnification,
    read_metadata,
    release_rows,
)

def check_constituents(constituents: Sequence[str] | None) -> tuple[str, ...]:
    """The chosen classes (default: all seven release classes), checked against the release's."""
    if constituents is None:
        return RELEASE_CONSTITUENTS
    if isinstance(constituents, str):
        constituents = [constituents]
    chosen = tuple(dict.fromkeys(constituents))
    unknown = [c for c in chosen if c not in RELEASE_CONSTITUENTS]
    if not chosen or unknown:
        raise ValueError(f"constituents must be a non-empty subset of {list(RELEASE_CONSTITUENTS)}, "
                         f"got {list(constituents)}")
    return chosen


@dataclass(frozen=True)
class UHCSMicrograph:
    """A release micrograph that is used: where it is, its group and how much it is rescaled."""

    micrograph_id: int
    item_id: str  # "micrographs/micrograph12.tif", relative to the data root
    constituent: str  # primary_microconstituent (the fold strata)
    group: str  # "sample-<sample_key>", or "orphan-<micrograph_id>" for an image without one
    label: str  # the label column's value
    magnification: float
    scale: float  # target magnification / magnification


@dataclass(frozen=True)
class Selection:
    micrographs: list[UHCSMicrograph]  # sorted by micrograph id
    skipped: list[tuple[str, str]]  # (item id, reason): release rows of the chosen constituents left out
    target_magnification: float
    n_release: int  # release rows in the metadata (all seven classes)


def group_of(row: MetadataRow) -> str:
    """The specimen group: ``sample-<sample_key>``, or ``orphan-<micrograph_id>`` when there is no key."""
    return f"sample-{row.sample_key}" if row.sample_key is not None else f"orphan-{row.micrograph_id}"


def select_micrographs(rows: Sequence[MetadataRow], constituents: Sequence[str] | None = None,
                       target_magnification: float | None = None, max_upscale: float | None = None) -> Selection:
    """The release micrographs of the chosen constituents that can be rescaled, and why the others cannot.

    ``target_magnification`` None: the median magnification of the chosen rows that have one.
    ``max_upscale``: rows whose scale (target / magnification) exceeds it are skipped.
    """
    chosen = check_constituents(constituents)
    release = release_rows(rows)
    usable: list[tuple[MetadataRow, float]] = []
    skipped: list[tuple[str, str]] = []
    for row in release:
        if row.constituent not in chosen:
            continue
        try:
            usable.append((row, parse_magnification(row.magnification)))
        except ValueError as error:
            skipped.append((row.item_id, str(error)))
    if not usable:
        raise ManifestError(f"no release micrograph of {list(chosen)} has a usable magnification "
                            f"({len(skipped)} skipped, e.g. {skipped[:3]})")
    if target_magnification is None:
        target = float(np.median([m for _, m in usable]))
    else:
        target = float(target_magnification)
        if not math.isfinite(target) or target <= 0:
            raise ValueError(f"target_magnification must be a positive number, got {target_magnification!r}")
    if max_upscale is not None and not float(max_upscale) > 0:
        raise ValueError(f"max_upscale must be positive (or None), got {max_upscale!r}")
    micrographs = []
    for row, magnification in usable:
        scale = target / magnification
        if max_upscale is not None and scale > float(max_upscale):
            reason = (f"magnification {magnification:g}X would be enlarged {scale:.3g}x to {target:g}X, more than "
                      f"max_upscale={float(max_upscale):g}")
            skipped.append((row.item_id, reason))
            continue
        micrographs.append(UHCSMicrograph(row.micrograph_id, row.item_id, row.constituent, group_of(row), row.label,
                                          magnification, scale))
    if not micrographs:
        raise ManifestError(f"every release micrograph of {list(chosen)} was skipped, e.g. {skipped[:3]}")
    return Selection(micrographs, skipped, target, len(release))


def scan_release(data_root: str | Path, constituents: Sequence[str] | None = None,
                 target_magnification: float | None = None, max_upscale: float | None = None,
                 label: str = "primary_microconstituent") -> tuple[Path, Selection]:
    """(metadata file, selection) of a release folder, from the metadata alone; skipped rows are warned about."""
    metadata = metadata_path(data_root)
    selection = select_micrographs(read_metadata(metadata, label), constituents, target_magnification, max_upscale)
    if selection.skipped:
        shown = "; ".join(f"{item}: {reason}" for item, reason in selection.skipped[:3])
        warnings.warn(f"{metadata}: {len(selection.skipped)} release micrograph(s) of the chosen constituents "
                      f"skipped ({shown}{'; ...' if len(selection.skipped) > 3 else ''})", stacklevel=3)
    return metadata, selection


def index_release(metadata: Path, selection: Selection) -> dict:
    items = [m.item_id for m in selection.micrographs]
    return {"items": items, "groups": [m.group for m in selection.micrographs],
            "strata": [m.constituent for m in selection.micrographs], "files": sorted([*items, metadata.name])}
