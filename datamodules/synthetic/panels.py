"""Synthetic photos of scribed, coated steel panels after corrosion testing (the built-in default data).

Physics and procedure follow Yin 2024, Parts I–III (described in docs/data.md):

* A panel is drawn once, in millimetres, on a fine raster (``panel_mm_per_px``, 0.1 mm by default)
  covering its central 104 x 104 mm. It has one or two vertical scribes of width w0 and length 70 mm.
* Along each scribe a creep profile is drawn per side: log-normal variation with a slow and a fast
  (rough edge) component, sometimes with gaps where the scribe is not corroded at all (thin and
  discontinuous corrosion), sometimes with an outer part that is corroded *under* the coating and only
  faintly visible. The profile is scaled so that its mean over the 12 ASTM stations hits a creep inside
  the target rating's bin, away from the bin edges; the mask on the raster is then measured at those
  stations (``astm.measure_creep_mm``) and must give the same rating, so image, mask and rating agree.
* Distractors that are not corrosion and not in the mask: water stains with tide lines, rust-coloured
  spots away from or across the scribe, coating colour and orange-peel variation, gloss highlights,
  lighting gradients, exposure, white balance, blur and sensor noise.
* Each panel is photographed several times (pose: window size, shift, rotation; light; exposure) and
  all photos share the panel's ``panel_id`` group. A photo's mask is the raster mask seen through the
  same camera (area-weighted, thresholded at one half).

Everything is deterministic from ``seed``: panel i uses its own generator ``default_rng([seed, i])``.

``n_unlabelled_panels`` more panels (default none) are drawn by the same process and photographed the same way,
under panel ids of their own (numbered after the labelled ones), but written with empty rating, mask and creep
cells: unlabelled photos, for semi-supervised raters (``manifest.unlabelled_rows``). Their ratings are drawn as
the labelled panels' are, from a stream of their own, so adding them leaves the labelled panels unchanged.
Such a dataset is for the rating tasks: segmentation needs every row's mask.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from matcv.datamodules.core.cache import default_cache_dir
from matcv.datamodules.measurements import astm
from matcv.datamodules.core.atomic_io import atomic_write_csv, atomic_write_text, save_png, sha256_bytes

GENERATOR_VERSION = 4  # bump when the rendering changes, so cached datasets are regenerated

PANEL_WIDTH_MM = 101.6  # 4 in
RASTER_SPAN_MM = 104.0  # raster covers the panel centre; columns beyond the panel edge show the bench

COATINGS: dict[str, tuple[float, float, float]] = {
    # Army coatings (CARC green 383, tan 686) and common primers/topcoats.
    "carc-green": (0.30, 0.34, 0.22),
    "carc-tan": (0.70, 0.60, 0.43),
    "grey-primer": (0.55, 0.56, 0.57),
    "white": (0.86, 0.86, 0.83),
    "black": (0.13, 0.13, 0.14),
    "navy": (0.14, 0.19, 0.33),
    "red-oxide-primer": (0.52, 0.24, 0.18),
}

RUST_LIGHT = np.array([0.78, 0.46, 0.20], np.float32)
RUST_MID = np.array([0.55, 0.28, 0.11], np.float32)
RUST_DARK = np.array([0.24, 0.13, 0.07], np.float32)
BARE_STEEL = np.array([0.68, 0.69, 0.71], np.float32)
BENCH = np.array([0.18, 0.18, 0.19], np.float32)

MANIFEST_COLUMNS = (
    "image_path", "mask_path", "rating", "panel_id", "photo_index", "mean_creep_mm", "scribe_count",
    "thin", "under_coating", "stain", "stain_across_scribe", "coating", "mm_per_px", "rotation_deg",
    "scribe_lines_px", "stain_mask_path",
)


@dataclass(frozen=True)
class PanelGeneratorConfig:
    n_panels: int = 40
    photos_per_panel: int = 4
    image_size: int = 128
    ratings: tuple[int, ...] = (5, 6, 7, 8, 9)
    seed: int = 0
    panel_mm_per_px: float = 0.1
    scribe_length_mm: float = 70.0
    scribe_width_mm: float = 0.5
    view_mm: tuple[float, float] = (84.0, 94.0)
    max_rotation_deg: float = 3.0
    double_scribe_prob: float = 0.35
    gap_prob_thin: float = 0.5  # chance of discontinuous corrosion for ratings 8-9
    gap_prob_other: float = 0.15
    under_coating_prob: float = 0.3
    stain_prob: float = 0.6
    coatings: tuple[str, ...] = field(default=tuple(COATINGS))
    n_unlabelled_panels: int = 0  # more panels, written without rating or mask (module doc)

    def __post_init__(self) -> None:
        bad = [r for r in self.ratings if r not in range(1, 10)]
        if bad:
            raise ValueError(f"synthetic panels can be drawn for ratings 1..9 (creep > 0); got {bad}")
        unknown = [c for c in self.coatings if c not in COATINGS]
        if unknown:
            raise ValueError(f"unknown coating(s) {unknown}; known: {sorted(COATINGS)}")
        if self.n_panels < 1 or self.photos_per_panel < 1 or self.image_size < 16:
            raise ValueError("need n_panels >= 1, photos_per_panel >= 1 and image_size >= 16")
        if self.n_unlabelled_panels < 0:
            raise ValueError(f"n_unlabelled_panels must be >= 0, got {self.n_unlabelled_panels}")

    def to_dict(self) -> dict:
        settings = dataclasses.asdict(self)
        if not self.n_unlabelled_panels:
            # Left out when 0: the settings (hence the fingerprint, the cache folder and the dataset's name) of
            # every dataset generated before unlabelled panels existed stay what they were.
            del settings["n_unlabelled_panels"]
        return {"generator_version": GENERATOR_VERSION, **settings}

    def fingerprint(self) -> str:
        return sha256_bytes(json.dumps(self.to_dict(), sort_keys=True).encode())[:16]


@dataclass
class Panel:
    """A drawn panel: raster image and mask plus the facts the rating is derived from."""

    image: np.ndarray  # (H, W, 3) float32 in [0, 1]
    mask: np.ndarray  # (H, W) bool
    rating: int
    mean_creep_mm: float  # drawn creep, mean over the 12 stations of every scribe
    measured_creep_mm: float  # the same, measured on the raster mask
    scribe_columns_px: list[float]
    scribe_rows_px: tuple[float, float]
    thin: bool
    under_coating: bool
    stain: bool
    stain_across_scribe: bool
    coating: str
    stain_region: np.ndarray  # (H, W) bool: where water stains were painted (scores false positives on them)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], correlation_px: float) -> np.ndarray:
    """Zero-mean, unit-variance noise with roughly ``correlation_px`` correlation length (1-D or 2-D).

    Coarse white noise upsampled with bicubic interpolation: far cheaper than a Gaussian filter on the
    full 1000^2 raster and visually equivalent for textures.
    """
    two_d = len(shape) == 2
    h, w = (shape if two_d else (shape[0], 1))
    step = max(correlation_px, 1.0)
    coarse = rng.standard_normal((int(h / step) + 4, int(w / step) + 4 if two_d else 4)).astype(np.float32)
    big = cv2.resize(coarse, (int(round(coarse.shape[1] * step)), int(round(coarse.shape[0] * step))),
                     interpolation=cv2.INTER_CUBIC)
    out = big[2 * int(step) : 2 * int(step) + h, 2 * int(step) : 2 * int(step) + w] if two_d else \
        big[2 * int(step) : 2 * int(step) + h, big.shape[1] // 2]
    out = out - out.mean()
    return out / (out.std() + 1e-8)


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a + (b - a) * t[..., None]


def _raster_box(centre_u: float, centre_v: float, half_mm: float, s: float, n: int, pad: int = 0) -> tuple[slice, slice]:
    """Row and column slices of the raster around a point given in panel millimetres."""
    def around(c: float) -> slice:
        return slice(max(0, int((c - half_mm + RASTER_SPAN_MM / 2) / s)),
                     min(n, int((c + half_mm + RASTER_SPAN_MM / 2) / s) + pad))

    return around(centre_v), around(centre_u)


def _draw_distractors(image: np.ndarray, rng: np.random.Generator, stain_prob: float, scribe_u: list[float],
                      centres_mm: np.ndarray, s: float) -> tuple[bool, bool, np.ndarray]:
    """Water stains (tinted blots with a dark tide line) and rust-coloured spots, painted onto ``image``.

    Returns (any stain drawn, a stain placed across a scribe, the stains' region with their tide lines).
    None of this is corrosion of the scribe.
    """
    n = image.shape[0]
    region = np.zeros((n, n), bool)
    if rng.random() >= stain_prob:
        return False, False, region
    across = False
    for _ in range(rng.integers(1, 4)):
        radius = rng.uniform(5, 14)
        if rng.random() < 0.4:
            cu, across = scribe_u[rng.integers(len(scribe_u))] + rng.uniform(-4, 4), True
        else:
            cu = rng.uniform(-45, 45)
        cv_ = rng.uniform(-45, 45)
        rows, cols = _raster_box(cu, cv_, radius * 1.6, s, n)
        if rows.stop <= rows.start or cols.stop <= cols.start:
            continue
        yy, xx = np.meshgrid(centres_mm[rows], centres_mm[cols], indexing="ij")
        r = np.hypot((xx - cu) / radius, (yy - cv_) / (radius * rng.uniform(0.6, 1.4)))
        field_ = r + 0.25 * smooth_noise(rng, r.shape, 2.0 / s)
        inside = field_ < 1.0
        tide = np.exp(-((field_ - 1.0) / 0.04) ** 2)  # dark ring where the drop dried
        region[rows, cols] |= field_ < 1.08  # the blot and its tide line
        tint = RUST_LIGHT * rng.uniform(0.8, 1.1)
        alpha = rng.uniform(0.15, 0.4) * inside + rng.uniform(0.3, 0.6) * tide
        patch = image[rows, cols]
        image[rows, cols] = _mix(patch, np.broadcast_to(tint, patch.shape), alpha.astype(np.float32))
    for _ in range(rng.integers(5, 40)):
        radius = rng.uniform(0.2, 1.0)
        cu = scribe_u[0] + rng.uniform(-6, 6) if rng.random() < 0.2 else rng.uniform(-50, 50)
        cv_ = rng.uniform(-50, 50)
        rows, cols = _raster_box(cu, cv_, 2 * radius, s, n, pad=1)
        yy, xx = np.meshgrid(centres_mm[rows], centres_mm[cols], indexing="ij")
        alpha = np.exp(-(((xx - cu) ** 2 + (yy - cv_) ** 2) / radius**2) ** 2).astype(np.float32)
        colour = _mix(RUST_MID[None], RUST_DARK[None], np.array([rng.uniform(0, 1)], np.float32))[0]
        patch = image[rows, cols]
        image[rows, cols] = _mix(patch, np.broadcast_to(colour, patch.shape), alpha * rng.uniform(0.6, 1.0))
    return True, across, region


def draw_panel(config: PanelGeneratorConfig, rating: int, rng: np.random.Generator) -> Panel:
    """One panel of the given rating on the fine raster: scribes, creep profiles, mask, colours (module doc)."""
    s = config.panel_mm_per_px
    n = int(round(RASTER_SPAN_MM / s))
    centres_mm = (np.arange(n, dtype=np.float32) + 0.5) * s - RASTER_SPAN_MM / 2
    u = centres_mm[None, :]  # across the scribe
    half = config.scribe_length_mm / 2
    row0, row1 = (-half + RASTER_SPAN_MM / 2) / s, (half + RASTER_SPAN_MM / 2) / s
    span = slice(int(math.floor(row0)), int(math.ceil(row1)))
    n_rows = span.stop - span.start
    w0 = config.scribe_width_mm

    # --- scribe geometry -------------------------------------------------------------------------
    double = rng.random() < config.double_scribe_prob
    if double:
        offset = rng.uniform(-3, 3)
        gap = rng.uniform(28, 40)
        scribe_u = [offset - gap / 2, offset + gap / 2]
    else:
        scribe_u = [rng.uniform(-8, 8)]

    # --- creep profiles --------------------------------------------------------------------------
    thin_rating = rating >= 8
    discontinuous = rng.random() < (config.gap_prob_thin if thin_rating else config.gap_prob_other)
    under_coating = rng.random() < config.under_coating_prob
    slow_amp, rough_amp = rng.uniform(0.2, 0.6), rng.uniform(0.1, 0.35)
    profiles = []  # per scribe: (corroded[rows], creep_left[rows], creep_right[rows], visible fractions)
    for _ in scribe_u:
        corroded = np.ones(n_rows, bool)
        if discontinuous:
            for _gap in range(rng.integers(2, 5)):
                length = rng.uniform(3, 9) / s
                start = rng.uniform(0, n_rows - length)
                corroded[int(start) : int(start + length)] = False
        sides = []
        for _side in range(2):
            log_c = slow_amp * smooth_noise(rng, (n_rows,), 8.0 / s) + rough_amp * smooth_noise(rng, (n_rows,), 0.6 / s)
            sides.append(np.exp(log_c - log_c.mean()).astype(np.float32))
        visible = []
        for _side in range(2):
            if under_coating and rng.random() < 0.7:
                frac = np.clip(0.5 + 0.2 * smooth_noise(rng, (n_rows,), 10.0 / s), 0.25, 0.8)
                segment = smooth_noise(rng, (n_rows,), 12.0 / s) > -0.2  # parts of the scribe only
                visible.append(np.where(segment, frac, 1.0).astype(np.float32))
            else:
                visible.append(np.ones(n_rows, np.float32))
        profiles.append([corroded, sides[0], sides[1], visible[0], visible[1]])

    # Scale the profiles so their 12-station mean sits inside the rating's bin, away from its edges
    # (the raster quantises widths to one pixel, i.e. creep to +-s/2).
    station_rows = np.floor(astm.station_positions(row0, row1)).astype(int) - span.start
    def station_mean() -> float:
        return float(np.mean([np.where(p[0][station_rows], (p[1][station_rows] + p[2][station_rows]) / 2, 0.0)
                              for p in profiles]))
    if station_mean() == 0.0:  # every station fell into a gap: reopen the scribe
        for p in profiles:
            p[0][:] = True
        discontinuous = False
    lo, hi = astm.creep_interval(rating)
    target = lo + (hi - lo) * rng.uniform(0.2, 0.8)
    scale = target / station_mean()
    for p in profiles:
        p[1] *= scale
        p[2] *= scale
    mean_creep = station_mean()

    # --- mask ------------------------------------------------------------------------------------
    mask = np.zeros((n, n), bool)
    visible_mask = np.zeros((n, n), bool)
    depth = np.full((n, n), np.inf, np.float32)  # distance to the scribe, relative to the band half-width
    groove = np.zeros((n, n), bool)
    groove_corroded = np.zeros((n, n), bool)
    for us, (corroded, c_left, c_right, vis_left, vis_right) in zip(scribe_u, profiles):
        rows = slice(span.start, span.stop)
        left = (us - w0 / 2 - c_left)[:, None]
        right = (us + w0 / 2 + c_right)[:, None]
        band = (u >= left) & (u <= right) & corroded[:, None]
        vis_band = (u >= us - w0 / 2 - c_left[:, None] * vis_left[:, None]) & \
                   (u <= us + w0 / 2 + c_right[:, None] * vis_right[:, None]) & corroded[:, None]
        in_groove = np.abs(u - us) <= w0 / 2
        mask[rows] |= band
        visible_mask[rows] |= vis_band
        groove[rows] |= np.broadcast_to(in_groove, band.shape)
        groove_corroded[rows] |= in_groove & corroded[:, None]
        rel = np.where(u < us, (us - u) / (w0 / 2 + c_left[:, None]), (u - us) / (w0 / 2 + c_right[:, None]))
        depth[rows] = np.minimum(depth[rows], rel)

    off_panel = np.abs(u) > PANEL_WIDTH_MM / 2
    mask &= ~off_panel
    scribe_columns_px = [(us + RASTER_SPAN_MM / 2) / s for us in scribe_u]
    measured, _ = astm.measure_creep_mm(mask, scribe_columns_px, (row0, row1), w0, s)
    if astm.rating_from_creep(measured) != rating:
        raise RuntimeError(
            f"generator inconsistency: drawn creep {mean_creep:.3f} mm (rating {rating}) measures "
            f"{measured:.3f} mm on the mask (rating {astm.rating_from_creep(measured)})"
        )

    # --- colours ---------------------------------------------------------------------------------
    coating_name = str(rng.choice(config.coatings))
    coating = np.array(COATINGS[coating_name], np.float32) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    peel = 1 + 0.035 * smooth_noise(rng, (n, n), 25.0) + 0.015 * smooth_noise(rng, (n, n), 3.0)
    image = np.clip(coating[None, None, :] * peel[..., None], 0, 1)

    # Stains and spots go under the corrosion (they are on the coating) and are never in the mask.
    stain, across, stain_region = _draw_distractors(image, rng, config.stain_prob, scribe_u, centres_mm, s)

    # Corrosion: dark near the scribe, orange towards the creep front, mottled.
    mottle = np.clip(0.5 + 0.3 * smooth_noise(rng, (n, n), 0.8 / s) + 0.15 * smooth_noise(rng, (n, n), 0.2 / s), 0, 1)
    front = np.clip(np.where(np.isfinite(depth), depth, 1.0), 0, 1)
    rust = _mix(_mix(RUST_DARK[None, None], RUST_MID[None, None], mottle), RUST_LIGHT[None, None],
                (front**2 * mottle).astype(np.float32))
    rust *= rng.uniform(0.85, 1.1)
    image = np.where(visible_mask[..., None], rust, image)
    faint = mask & ~visible_mask  # under-coating corrosion: in the mask, barely visible through paint
    if faint.any():
        blister = np.clip(0.5 + 0.5 * smooth_noise(rng, (n, n), 0.5 / s), 0, 1)
        alpha = (rng.uniform(0.10, 0.22) * (0.6 + 0.4 * blister)).astype(np.float32)
        image = np.where(faint[..., None], _mix(image, np.broadcast_to(RUST_MID, image.shape), alpha), image)
    steel = BARE_STEEL * (1 + 0.05 * smooth_noise(rng, (n, n), 2.0))[..., None]
    image = np.where((groove & ~groove_corroded)[..., None], steel, image)
    image = np.where(groove_corroded[..., None], RUST_DARK * 0.7, image)
    image = np.where(off_panel[..., None], np.broadcast_to(BENCH, image.shape), image)

    thin = discontinuous or mean_creep <= 1.0
    return Panel(
        image=np.clip(image, 0, 1).astype(np.float32), mask=mask, rating=rating,
        mean_creep_mm=mean_creep, measured_creep_mm=measured, scribe_columns_px=scribe_columns_px,
        scribe_rows_px=(row0, row1), thin=thin, under_coating=bool(faint.any()), stain=stain,
        stain_across_scribe=across, coating=coating_name, stain_region=stain_region & ~mask,
    )


def photograph(panel: Panel, config: PanelGeneratorConfig, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """One photo of a panel: pose, light, exposure, blur, noise.

    Returns the uint8 image, the {0,255} corrosion mask, the {0,255} stain-region mask and the photo's facts.
    """
    size, s = config.image_size, config.panel_mm_per_px
    view = rng.uniform(*config.view_mm)
    mm_per_px = view / size
    theta = math.radians(rng.uniform(-config.max_rotation_deg, config.max_rotation_deg))
    shift = rng.uniform(-2.5, 2.5, 2)
    # Photo pixel (x, y) -> panel mm -> raster pixel, in OpenCV's pixel-centre convention.
    a = mm_per_px / s
    cos, sin = math.cos(theta) * a, math.sin(theta) * a
    c = (size - 1) / 2
    tx = (RASTER_SPAN_MM / 2 + shift[0]) / s - 0.5 - (cos * c - sin * c)
    ty = (RASTER_SPAN_MM / 2 + shift[1]) / s - 0.5 - (sin * c + cos * c)
    warp = np.array([[cos, -sin, tx], [sin, cos, ty]], np.float32)
    sigma = 0.45 * a  # anti-alias before sampling every a-th raster pixel
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    image = cv2.warpAffine(cv2.GaussianBlur(panel.image, (0, 0), sigma), warp, (size, size), flags=flags,
                           borderMode=cv2.BORDER_REPLICATE)
    area = cv2.warpAffine(cv2.GaussianBlur(panel.mask.astype(np.float32), (0, 0), sigma), warp, (size, size),
                          flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    # A pixel is corrosion when at least half of it is; a band thinner than half a pixel (thin creep in a
    # low-resolution photo) keeps its centre line, as an annotator would, so the mask never loses it.
    ridge = (area > 0.2) & (area >= cv2.dilate(area, np.ones((1, 3), np.uint8)))
    mask = ((area >= 0.5) | ridge).astype(np.uint8) * 255
    stain_area = cv2.warpAffine(cv2.GaussianBlur(panel.stain_region.astype(np.float32), (0, 0), sigma), warp,
                                (size, size), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    stains = ((stain_area >= 0.5) & (mask == 0)).astype(np.uint8) * 255

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    direction = rng.uniform(0, 2 * math.pi)
    light = 1 + rng.uniform(0.05, 0.3) * (xx * math.cos(direction) + yy * math.sin(direction))
    hx, hy, hr = rng.uniform(-0.4, 0.4, 2).tolist() + [rng.uniform(0.1, 0.35)]
    gloss = rng.uniform(0.0, 0.25) * np.exp(-((xx - hx) ** 2 + (yy - hy) ** 2) / (2 * hr**2))
    white_balance = rng.uniform(0.93, 1.07, 3).astype(np.float32)
    exposure = rng.uniform(0.75, 1.25)
    image = image * (light * exposure)[..., None] * white_balance + gloss[..., None]
    blur = rng.uniform(0, 1.1)
    if blur > 0.3:
        image = cv2.GaussianBlur(image, (0, 0), blur)
    image = image + rng.normal(0, rng.uniform(0.005, 0.025), image.shape).astype(np.float32)
    image8 = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    facts = {"mm_per_px": round(mm_per_px, 6), "rotation_deg": round(math.degrees(theta), 4),
             "scribe_lines_px": format_scribe_lines(scribe_lines_in_photo(panel, warp))}
    return image8, mask, stains, facts


def scribe_lines_in_photo(panel: Panel, warp: np.ndarray) -> list[tuple[float, float, float, float]]:
    """Each scribe's centre line (x_top, y_top, x_bottom, y_bottom) in the photo's pixel-centre coordinates.

    ``warp`` maps photo pixels to raster pixels (OpenCV convention, centres at integers); the raster's
    scribe columns/rows use the [j, j+1) convention, hence the half-pixel shift.
    """
    to_photo = cv2.invertAffineTransform(warp)
    lines = []
    for column in panel.scribe_columns_px:
        ends = np.array([[column - 0.5, panel.scribe_rows_px[0] - 0.5, 1.0],
                         [column - 0.5, panel.scribe_rows_px[1] - 0.5, 1.0]])
        (x0, y0), (x1, y1) = ends @ to_photo.T
        lines.append((float(x0), float(y0), float(x1), float(y1)))
    return lines


def format_scribe_lines(lines: list[tuple[float, float, float, float]]) -> str:
    """``"x0 y0 x1 y1;x0 y0 x1 y1"`` (one group per scribe), the manifest's ``scribe_lines_px`` column."""
    return ";".join(" ".join(f"{v:.2f}" for v in line) for line in lines)


def parse_scribe_lines(text: str) -> list[tuple[float, float, float, float]]:
    lines = []
    for group in str(text).split(";"):
        values = [float(v) for v in group.split()]
        if len(values) != 4:
            raise ValueError(f"scribe line {group!r}: expected 'x_top y_top x_bottom y_bottom'")
        lines.append(tuple(values))
    return lines


def generate_panels(config: PanelGeneratorConfig, out_dir: str | os.PathLike | None = None,
                    progress: bool = True) -> Path:
    """Write the dataset (PNG images, PNG masks, manifest.csv, generator.json) once; return its folder.

    The manifest is written last: a folder with a manifest is complete, one without is regenerated.
    """
    out = Path(out_dir) if out_dir is not None else default_cache_dir() / "synthetic-panels" / config.fingerprint()
    manifest_path = out / "manifest.csv"
    if manifest_path.exists():
        settings = out / "generator.json"
        if not settings.exists() or json.loads(settings.read_text()) != json.loads(json.dumps(config.to_dict())):
            raise FileExistsError(f"{out} already holds a dataset made with other generator settings "
                                  f"(see {settings}); choose another folder or delete it")
        return out
    rng_ratings = np.random.default_rng([config.seed, 10**6])
    ratings = rng_ratings.permutation(np.resize(np.array(config.ratings), config.n_panels))
    # The unlabelled panels' hidden ratings: drawn as the labelled ones, from another stream.
    hidden = np.random.default_rng([config.seed, 10**6 + 1]).permutation(
        np.resize(np.array(config.ratings), config.n_unlabelled_panels))
    rows = []
    total = config.n_panels + config.n_unlabelled_panels
    for index in tqdm(range(total), desc="drawing corrosion panels", disable=not progress, unit="panel"):
        rng = np.random.default_rng([config.seed, index])
        labelled = index < config.n_panels
        panel = draw_panel(config, int(ratings[index] if labelled else hidden[index - config.n_panels]), rng)
        panel_id = f"panel-{index:04d}"
        for photo in range(config.photos_per_panel):
            image, mask, stains, facts = photograph(panel, config, rng)
            name = f"{panel_id}_photo{photo}.png"
            save_png(out / "images" / name, image)
            if not labelled:  # a photo nobody rated or annotated: no rating, no mask, no creep
                rows.append({"image_path": f"images/{name}", "panel_id": panel_id, "photo_index": photo,
                             "coating": panel.coating, **facts})
                continue
            save_png(out / "masks" / name, mask)
            save_png(out / "stains" / name, stains)
            rows.append({
                "image_path": f"images/{name}", "mask_path": f"masks/{name}", "rating": panel.rating,
                "panel_id": panel_id, "photo_index": photo, "mean_creep_mm": round(panel.mean_creep_mm, 4),
                "scribe_count": len(panel.scribe_columns_px), "thin": int(panel.thin),
                "under_coating": int(panel.under_coating), "stain": int(panel.stain),
                "stain_across_scribe": int(panel.stain_across_scribe), "coating": panel.coating, **facts,
                "stain_mask_path": f"stains/{name}",
            })
    atomic_write_text(out / "generator.json", json.dumps(config.to_dict(), indent=2, sort_keys=True))
    atomic_write_csv(manifest_path, rows, MANIFEST_COLUMNS)
    return out
