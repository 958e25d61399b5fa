"""What a corrosion panel's manifest row says about a segmentation of it, item by item.

Used by the segmentation models' test step (``SegmentationEvaluation``) through the datamodule's
``item_evaluator``; every value is added to the item's test record:
* difficulty flags from the generator (``thin``, ``under_coating``, ``stain``): the leaderboard reports
  Dice separately on each slice, where edge guidance and FTL are claimed to help;
* ``stain_fp_fraction``: the part of the water-stain area (outside the corrosion) predicted as corrosion;
* ``rating_from_mask`` / ``rating_match``: the ASTM D1654 procedure (creep at 12 stations per scribe,
  then the table) applied to the *predicted* mask, and whether it gives the expert's rating — the link
  between segmentation and rating; ``rating_match_true_mask`` is the same procedure on the true mask
  (the ceiling, and a check of the procedure itself).
A user's data with fewer columns simply gets fewer of these.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np

from matcv.datamodules.measurements.astm import measure_creep_along_lines, rating_from_creep
from matcv.datamodules.manifest import read_mask
from matcv.datamodules.synthetic.panels import parse_scribe_lines

FLAG_COLUMNS = ("thin", "under_coating", "stain")
RATING_COLUMNS = ("rating", "scribe_lines_px", "mm_per_px")


def scribe_width_from_generator(root: str | Path) -> float | None:
    """The scribe width (mm) the synthetic generator used, from the data root's ``generator.json``."""
    settings = Path(root) / "generator.json"
    if not settings.is_file():
        return None
    return float(json.loads(settings.read_text())["scribe_width_mm"])


def rate_mask(mask: np.ndarray, lines: list[tuple[float, float, float, float]], scribe_width_mm: float,
              mm_per_px: float) -> int:
    """ASTM D1654 rating of a (predicted or true) corrosion mask: mean creep at 12 stations per scribe."""
    creep, _ = measure_creep_along_lines(np.asarray(mask).astype(bool), lines, scribe_width_mm, mm_per_px)
    return rating_from_creep(creep)


def rescale_lines(lines: list[tuple[float, float, float, float]], scale: float) -> list[tuple[float, ...]]:
    """Scribe lines in pixel-centre coordinates of a photo resized by ``scale`` (new / old pixels)."""
    return [tuple((v + 0.5) * scale - 0.5 for v in line) for line in lines]


def _present(value) -> bool:
    return value is not None and str(value) not in ("", "nan", "None")


class PanelItemEvaluator:
    """Callable ``(item_id, predicted_mask, true_mask) -> dict`` for the items of one partition."""

    def __init__(self, records: dict[str, object], root: Path, native_sizes: dict[str, tuple[int, int]],
                 image_size: int, scribe_width_mm: float | None):
        self.records, self.root, self.native_sizes = records, Path(root), native_sizes
        self.image_size, self.scribe_width_mm = image_size, scribe_width_mm
        self._stains: dict[str, np.ndarray | None] = {}

    @classmethod
    def for_items(cls, table, items: list[str], root: Path, native_sizes: dict[str, tuple[int, int]],
                  image_size: int) -> "PanelItemEvaluator | None":
        """None when the manifest has nothing to add beyond Dice/IoU."""
        useful = set(FLAG_COLUMNS) | {"stain_mask_path"} | set(RATING_COLUMNS)
        if not useful & set(table.columns):
            return None
        wanted = set(items)
        # Plain namespaces, not pandas' row tuples: a DDP (spawn) run pickles the datamodule with this evaluator.
        records = {r.image_path: SimpleNamespace(**r._asdict()) for r in table.itertuples(index=False)
                   if r.image_path in wanted}
        return cls(records, root, native_sizes, image_size, scribe_width_from_generator(root))

    def __call__(self, item_id: str, predicted: np.ndarray, truth: np.ndarray) -> dict:
        record = self.records[item_id]
        out: dict = {}
        for flag in FLAG_COLUMNS:
            value = getattr(record, flag, None)
            if _present(value):
                out[flag] = bool(int(float(value)))
        stains = self._stain_region(record)
        if stains is not None:
            region = stains & ~truth.astype(bool)
            out["stain_fp_fraction"] = float((predicted.astype(bool) & region).sum() / region.sum()) if region.any() else None
        out.update(self._ratings(record, predicted, truth))
        return out

    def _stain_region(self, record) -> np.ndarray | None:
        path = getattr(record, "stain_mask_path", None)
        if not _present(path):
            return None
        if record.image_path not in self._stains:
            stain_record = SimpleNamespace(**{**vars(record), "mask_path": path})
            native = read_mask(self.root, stain_record, self.native_sizes[record.image_path])
            size = self.image_size
            if native.shape != (size, size):
                native = cv2.resize(native.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA) >= 0.5
            self._stains[record.image_path] = native.astype(bool)
        return self._stains[record.image_path]

    def _ratings(self, record, predicted: np.ndarray, truth: np.ndarray) -> dict:
        if self.scribe_width_mm is None or not all(_present(getattr(record, c, None)) for c in RATING_COLUMNS):
            return {}
        native_width = self.native_sizes[record.image_path][1]
        scale = predicted.shape[1] / native_width  # the datamodule resized the photo to image_size
        lines = rescale_lines(parse_scribe_lines(record.scribe_lines_px), scale)
        mm_per_px = float(record.mm_per_px) / scale
        from_prediction = rate_mask(predicted, lines, self.scribe_width_mm, mm_per_px)
        from_truth = rate_mask(truth, lines, self.scribe_width_mm, mm_per_px)
        expert = int(record.rating)
        return {"rating_from_mask": from_prediction, "rating_match": float(from_prediction == expert),
                "rating_match_true_mask": float(from_truth == expert)}
