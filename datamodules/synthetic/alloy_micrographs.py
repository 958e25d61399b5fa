"""Synthetic Al–Si casting-alloy micrographs with known truth, for AlloyGAN's metrics.

One 128x128 grey image per (alloy, cooling rate, Sr/P modification) of the alloy table and image index,
generated on first use and cached under ``default_cache_dir()/alloy-micrographs/<fingerprint>`` (the
fingerprint covers every setting and ``GENERATOR_VERSION``). The domain trends the AlloyGAN metrics test are
true *by construction*, and every image's truth is in the manifest, so the metrics
(``matcv.datamodules.measurements.alloy_measure``) can be checked against it.

Physics (all fractions are area fractions of the image; a section's area fraction estimates the volume
fraction, and mass ≈ volume fractions here: Al 2.70, Si 2.33 g/cm³, ignored):

* Hypoeutectic (C0 <= 12.6 wt% Si): lever rule with Si solubility 1.65 wt%: eutectic fraction
  f_E = (C0 - 1.65) / (12.6 - 1.65), α-Al dendrites 1 - f_E; eutectic Si is 12.7 % of the eutectic, so
  ``si_area_fraction_expected`` = 0.127 f_E (A355 3.9 %, A356 6.2 %, A369 11.4 %, A339 12.0 %).
* Hypereutectic (A393, 22 wt%): primary Si f_P = (C0 - 12.6) / (100 - 12.6) (10.8 %) as polygonal blocks.
  Cast hypereutectic alloys also show non-equilibrium α-Al dendrites ("halos", the skewed coupled zone); we
  render ``HYPER_ALPHA_FRACTION`` = 25 % of the non-primary area as α-Al, so that λ2 is visible in every
  alloy, and the rest is eutectic: expected = f_P + 0.127 * 0.75 * (1 - f_P) (A393: 18.9 %).
  No scaling is applied: at 128 px even A355's 3.9 % is ~640 Si pixels.
* λ2 = 45 µm · CR^(-1/3) (≈21 µm at 10 K/s); with ``um_per_px`` = 1 it spans 33, 21, 12 and 8.6 px over the
  four cooling rates. Primary trunks are 3 λ2 (±10 %) apart, one orientation per image (a 128 µm field lies
  inside one grain), secondary arms perpendicular to them at exactly λ2 (``lambda2_px``).
* Sr (P for primary Si) modification: unmodified eutectic Si is coarse plates/needles (two criss-crossing
  families of elongated particles whose length grows with λ2), modified Si is fine fibres/dots; primary Si
  blocks are refined by P (radius 9 -> 4 px: smaller and more numerous).
* Intermetallics in the interdendritic space, area fraction = Table 7's factor x wt% (the factor read as
  area fraction per wt%): Fe -> β-Al5FeSi needles (0.018/wt%), Mn -> α-Al15(Fe,Mn)3Si2 "Chinese script"
  (0.018), Mg -> Mg2Si "Chinese script" (0.021), Cu -> Al2Cu blocks (0.016), Ni -> Al3Ni blocks (0.017).

Rendering: a label map (α-Al, eutectic Al, Si, intermetallics) -> grey α-Al 225, eutectic Al 175,
intermetallics 125 (mid-dark, above the Si threshold), Si 25; Gaussian blur sigma 0.5 px and noise sd 4, so
it binarises cleanly at ``alloy_measure.SI_THRESHOLD``. Exact pixel counts: α-Al by rank of a dendrite
field, Si by rank of a particle field inside the free eutectic, so ``si_area_fraction_true`` (the fraction of
Si-labelled pixels) equals the expected fraction up to one pixel. Intermetallic shapes are drawn until their
target is reached (true fractions in the manifest).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from matcv.datamodules.core.atomic_io import atomic_write_csv, atomic_write_text, save_png, sha256_bytes
from matcv.datamodules.core.cache import default_cache_dir
from matcv.datamodules.measurements.alloys import (
    ALLOYS,
    COOLING_RATES,
    ELEMENTS,
    MODIFIABLE,
    canonical_alloy_name,
    condition_label,
)

GENERATOR_VERSION = 1  # bump when generation changes, so cached datasets are regenerated
SOURCE = "alloy-micrographs"
MANIFEST_NAME = "manifest.csv"
GENERATOR_NAME = "generator.json"

# Al–Si physics (module doc).
EUTECTIC_SI_WT = 12.6
SI_SOLUBILITY_WT = 1.65
EUTECTIC_SI_VOLUME = 0.127
HYPER_ALPHA_FRACTION = 0.25
LAMBDA2_K_UM, LAMBDA2_N = 45.0, 1.0 / 3.0
TRUNK_SPACING_RATIO = 3.0
# Intermetallics: (element, phase, shape, area fraction per wt% = Table 7's factor).
INTERMETALLICS = (
    ("Fe", "al5fesi", "needle", 0.018),
    ("Mn", "alfemnsi", "script", 0.018),
    ("Mg", "mg2si", "script", 0.021),
    ("Cu", "al2cu", "block", 0.016),
    ("Ni", "al3ni", "block", 0.017),
)
PRIMARY_SI_RADIUS_PX = {0: 9.0, 1: 4.0}  # unmodified / P-refined primary Si blocks

# Label map and grey levels (uint8).
ALPHA, EUTECTIC_AL, SI = 0, 1, 2  # intermetallic phase i is 3 + i
GREY_ALPHA, GREY_EUTECTIC, GREY_INTERMETALLIC, GREY_SI = 225, 175, 125, 25
BLUR_SIGMA, NOISE_SD = 0.5, 4.0


# --- physics ------------------------------------------------------------------------------------------------------

def lambda2_um(cooling_rate: float) -> float:
    """Secondary dendrite arm spacing λ2 = 45 µm · CR^(-1/3)."""
    return LAMBDA2_K_UM * float(cooling_rate) ** (-LAMBDA2_N)


def phase_fractions(si_wt: float) -> dict:
    """Area fractions of α-Al, eutectic, primary Si and the expected total Si for a Si content (module doc)."""
    c0 = float(si_wt)
    if c0 <= EUTECTIC_SI_WT:
        eutectic = min(max((c0 - SI_SOLUBILITY_WT) / (EUTECTIC_SI_WT - SI_SOLUBILITY_WT), 0.0), 1.0)
        primary, alpha = 0.0, 1.0 - eutectic
    else:
        primary = min((c0 - EUTECTIC_SI_WT) / (100.0 - EUTECTIC_SI_WT), 1.0)
        alpha = HYPER_ALPHA_FRACTION * (1.0 - primary)
        eutectic = 1.0 - primary - alpha
    return {"alpha": alpha, "eutectic": eutectic, "primary_si": primary,
            "si_expected": primary + EUTECTIC_SI_VOLUME * eutectic}


def intermetallic_targets(composition: dict, room: float) -> dict[str, float]:
    """Area fraction per intermetallic phase (Table 7 factor x wt%), scaled down to fit in ``room``."""
    targets = {phase: factor * max(float(composition.get(element, 0.0)), 0.0)
               for element, phase, _, factor in INTERMETALLICS}
    total = sum(targets.values())
    scale = min(1.0, room / total) if total > 0 else 1.0
    return {phase: value * scale for phase, value in targets.items()}


# --- rendering ----------------------------------------------------------------------------------------------------

def _top_pixels(field: np.ndarray, allowed: np.ndarray, count: int) -> np.ndarray:
    """Mask of the ``count`` allowed pixels with the largest field values (exact count)."""
    chosen = np.zeros(field.shape, bool)
    index = np.flatnonzero(allowed.ravel())
    count = int(min(max(count, 0), len(index)))
    if count:
        values = field.ravel()[index]
        chosen.ravel()[index[np.argpartition(-values, count - 1)[:count]]] = True
    return chosen


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    field = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), sigma,
                             borderType=cv2.BORDER_REFLECT)
    return field / max(float(field.std()), 1e-6)


def _oriented_noise(rng: np.random.Generator, size: int, sigma_long: float, sigma_short: float) -> np.ndarray:
    """Noise smoothed by a Gaussian elongated along a random direction: plate/needle-like blobs."""
    angle = rng.uniform(0, math.pi)
    half = math.ceil(3 * sigma_long)
    y, x = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    along = x * math.cos(angle) + y * math.sin(angle)
    across = -x * math.sin(angle) + y * math.cos(angle)
    kernel = np.exp(-0.5 * ((along / sigma_long) ** 2 + (across / sigma_short) ** 2)).astype(np.float32)
    field = cv2.filter2D(rng.standard_normal((size, size)).astype(np.float32), -1, kernel / kernel.sum(),
                         borderType=cv2.BORDER_REFLECT)
    return field / max(float(field.std()), 1e-6)


def dendrite_field(rng: np.random.Generator, size: int, lambda2: float) -> tuple[np.ndarray, dict]:
    """A field whose upper level sets are α-Al dendrites: trunks 3 λ2 apart, tapering arms at exactly λ2."""
    angle = rng.uniform(0, math.pi)
    lambda1 = TRUNK_SPACING_RATIO * lambda2 * rng.uniform(0.9, 1.1)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    u = x * math.cos(angle) + y * math.sin(angle)  # along the trunks
    v = -x * math.sin(angle) + y * math.cos(angle) - rng.uniform(0, lambda1)
    trunk = np.floor(v / lambda1 + 0.5)
    offset = v - trunk * lambda1  # signed distance to the nearest trunk's axis
    side = (offset >= 0).astype(int)
    first = int(trunk.min())
    phases = rng.uniform(0, lambda2, size=(int(trunk.max()) - first + 1, 2))
    phase = phases[trunk.astype(int) - first, side]
    # Flat-topped arm profile: an arm is ~λ2/2 wide at any level, so thin (low α-Al) dendrites keep distinct
    # arms and the α-Al fraction sets how far the tapering arms reach, not how thin they are.
    profile = np.tanh(2.5 * np.cos(2 * math.pi * (u - phase) / lambda2)) / math.tanh(2.5)
    arms = profile - 1.2 * np.abs(offset) / (lambda1 / 2)
    trunks = 0.85 - np.abs(offset) / (0.3 * lambda2)  # below the arm roots: thin dendrites keep their arms
    field = np.maximum(arms, trunks) + 0.12 * _smooth_noise(rng, size, max(0.15 * lambda2, 1.0))
    return field, {"lambda1_px": lambda1, "dendrite_angle_deg": math.degrees(angle)}


def _draw_shape(canvas: np.ndarray, shape: str, rng: np.random.Generator, centre: tuple[float, float],
                scale: float) -> None:
    cx, cy = centre
    if shape == "needle":
        angle, length = rng.uniform(0, math.pi), scale * rng.uniform(0.6, 1.4)
        dx, dy = 0.5 * length * math.cos(angle), 0.5 * length * math.sin(angle)
        cv2.line(canvas, (round(cx - dx), round(cy - dy)), (round(cx + dx), round(cy + dy)), 1,
                 thickness=int(rng.integers(1, 3)))
    elif shape == "script":  # a branched, bent skeleton: "Chinese script"
        points = [(cx, cy)]
        angle = rng.uniform(0, 2 * math.pi)
        for _ in range(int(rng.integers(4, 8))):
            start = points[int(rng.integers(len(points)))]
            angle += rng.uniform(-1.2, 1.2)
            step = rng.uniform(2.5, 5.0)
            end = (start[0] + step * math.cos(angle), start[1] + step * math.sin(angle))
            cv2.line(canvas, (round(start[0]), round(start[1])), (round(end[0]), round(end[1])), 1, thickness=1)
            points.append(end)
    else:  # block
        axes = (int(rng.integers(2, 5)), int(rng.integers(2, 5)))
        cv2.ellipse(canvas, (round(cx), round(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)


def _polygon_block(canvas: np.ndarray, rng: np.random.Generator, centre: tuple[float, float], radius: float) -> None:
    """A faceted (5–7 sided) convex Si block."""
    sides = int(rng.integers(5, 8))
    start = rng.uniform(0, 2 * math.pi)
    angles = start + np.linspace(0, 2 * math.pi, sides, endpoint=False) + rng.uniform(-0.2, 0.2, sides)
    radii = radius * rng.uniform(0.8, 1.2) * rng.uniform(0.85, 1.15, sides)
    points = np.stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)], 1)
    cv2.fillConvexPoly(canvas, np.rint(points).astype(np.int32), 1)


def _fill_until(labels: np.ndarray, free: np.ndarray, value: int, target: int, rng: np.random.Generator,
                draw) -> int:
    """Draw shapes at random free pixels into ``labels`` (free pixels only) until ``target`` pixels."""
    size = labels.shape[0]
    placed, attempts = 0, 0
    while placed < target and attempts < 4000:
        attempts += 1
        candidates = np.flatnonzero(free.ravel())
        if not len(candidates):
            break
        cy, cx = divmod(int(candidates[rng.integers(len(candidates))]), size)
        canvas = np.zeros(labels.shape, np.uint8)
        draw(canvas, (cx, cy))
        new = (canvas > 0) & free
        if placed + int(new.sum()) > target:  # trim the last shape so the phase does not overshoot much
            index = np.flatnonzero(new.ravel())
            new = np.zeros(labels.shape, bool)
            new.ravel()[index[: target - placed]] = True
        labels[new] = value
        free &= ~new
        placed += int(new.sum())
    return placed


def render_alloy_micrograph(composition: dict, cooling_rate: float, modified: int, seed, size: int = 128,
                            um_per_px: float = 1.0) -> tuple[np.ndarray, dict]:
    """One micrograph (uint8, size²) and its truth; ``seed`` is anything ``np.random.default_rng`` takes."""
    rng = np.random.default_rng(seed)
    n = size * size
    fractions = phase_fractions(composition["Si"])
    lambda2 = lambda2_um(cooling_rate) / um_per_px
    labels = np.full((size, size), EUTECTIC_AL, np.uint8)
    field, geometry = dendrite_field(rng, size, lambda2)
    alpha = _top_pixels(field, np.ones_like(labels, bool), round(fractions["alpha"] * n))
    labels[alpha] = ALPHA
    free = ~alpha  # interdendritic pixels not yet taken by primary Si or intermetallics
    si_target = round(fractions["si_expected"] * n)
    primary = 0
    if fractions["primary_si"] > 0:
        radius = PRIMARY_SI_RADIUS_PX[int(modified)]
        primary = _fill_until(labels, free, SI, round(fractions["primary_si"] * n), rng,
                              lambda canvas, centre: _polygon_block(canvas, rng, centre, radius))
    room = 0.8 * (free.mean() - (si_target - primary) / n)
    truth = {}
    scale = max(8.0, 1.2 * lambda2)  # intermetallic needle length grows with the dendrite scale
    for i, (phase, target) in enumerate(intermetallic_targets(composition, room).items()):
        shape = next(s for _, p, s, _ in INTERMETALLICS if p == phase)
        drawn = _fill_until(labels, free, 3 + i, round(target * n), rng,
                            lambda canvas, centre, shape=shape: _draw_shape(canvas, shape, rng, centre, scale))
        truth[f"{phase}_fraction_true"] = drawn / n
        truth[f"{phase}_fraction_expected"] = target
    if modified:  # Sr: fine fibrous / dotted eutectic Si
        particles = _smooth_noise(rng, size, 0.9)
    else:  # coarse plates / needles, two criss-crossing families, longer for slower cooling
        sigma_long = 2.0 + 0.12 * lambda2
        particles = np.maximum(_oriented_noise(rng, size, sigma_long, 0.9), _oriented_noise(rng, size, sigma_long, 0.9))
    eutectic_si = _top_pixels(particles, free, si_target - primary)
    labels[eutectic_si] = SI
    grey_of = np.array([GREY_ALPHA, GREY_EUTECTIC, GREY_SI] + [GREY_INTERMETALLIC] * len(INTERMETALLICS), np.float32)
    grey = cv2.GaussianBlur(grey_of[labels], (0, 0), BLUR_SIGMA, borderType=cv2.BORDER_REFLECT)
    grey = grey + NOISE_SD * rng.standard_normal(grey.shape).astype(np.float32)
    image = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    truth = {
        "si_area_fraction_true": float((labels == SI).mean()),
        "si_area_fraction_expected": fractions["si_expected"],
        "primary_si_fraction_true": primary / n,
        "alpha_fraction_true": float((labels == ALPHA).mean()),
        "eutectic_fraction_expected": fractions["eutectic"],
        "lambda2_px": lambda2,
        **geometry,
        "intermetallic_fraction_true": float((labels >= 3).mean()),
        **truth,
    }
    return image, truth


# --- the generated dataset ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AlloyGeneratorConfig:
    """Settings of the generated dataset; their hash names the cache folder.

    Every Table 6 condition of the chosen ``alloys`` and ``cooling_rates`` (modified as Table 6 says),
    ``images_per_condition`` images each; image k of a condition has its own seed (seed, alloy, rate,
    modified, k), so adding alloys or rates leaves the other images unchanged.
    """

    size: int = 128
    images_per_condition: int = 4
    seed: int = 0
    um_per_px: float = 1.0
    alloys: tuple[str, ...] = tuple(ALLOYS)
    cooling_rates: tuple[float, ...] = COOLING_RATES

    def __post_init__(self) -> None:
        def fix(name: str, value) -> None:  # YAML gives lists and ints: normalise so equal settings hash equally
            object.__setattr__(self, name, value)

        fix("size", int(self.size))
        fix("images_per_condition", int(self.images_per_condition))
        fix("seed", int(self.seed))
        fix("um_per_px", float(self.um_per_px))
        fix("alloys", tuple(canonical_alloy_name(a) for a in self.alloys))
        fix("cooling_rates", tuple(float(r) for r in self.cooling_rates))
        if self.size < 32:
            raise ValueError(f"size must be >= 32, got {self.size}")
        if self.images_per_condition < 1:
            raise ValueError(f"images_per_condition must be >= 1, got {self.images_per_condition}")
        if self.um_per_px <= 0:
            raise ValueError(f"um_per_px must be positive, got {self.um_per_px}")
        if not self.alloys or len(set(self.alloys)) != len(self.alloys):
            raise ValueError(f"alloys must be distinct Table 6 alloys, got {self.alloys}")
        if not self.cooling_rates or min(self.cooling_rates) <= 0:
            raise ValueError(f"cooling_rates must be positive, got {self.cooling_rates}")

    def to_dict(self) -> dict:
        return {"generator_version": GENERATOR_VERSION, "source": SOURCE, **dataclasses.asdict(self),
                "image_kind": "grey", "periodic": False}

    def fingerprint(self) -> str:
        return sha256_bytes(json.dumps(self.to_dict(), sort_keys=True).encode())[:16]

    def conditions(self) -> list[dict]:
        """Table 6's conditions of ``alloys`` at ``cooling_rates`` (any positive rate, not only Table 6's)."""
        return [{"alloy": alloy, **ALLOYS[alloy], "cooling_rate": rate, "modified": modified}
                for alloy in self.alloys for modified in ((0, 1) if alloy in MODIFIABLE else (0,))
                for rate in self.cooling_rates]


def image_seed(config: AlloyGeneratorConfig, alloy: str, cooling_rate: float, modified: int, k: int) -> tuple:
    return (config.seed, zlib.crc32(alloy.encode()), round(1000 * cooling_rate), int(modified), k)


def generate_alloy_dataset(config: AlloyGeneratorConfig, out_dir: str | os.PathLike | None = None,
                           progress: bool = True) -> Path:
    """Write the images, ``manifest.csv`` and ``generator.json`` once; return the folder.

    Images are written atomically as they are drawn; the manifest is written last, so a folder with a
    manifest is complete (and is refused if its settings differ), one without is (re)generated.
    """
    out = Path(out_dir) if out_dir is not None else default_cache_dir() / SOURCE / config.fingerprint()
    manifest_path, settings_path = out / MANIFEST_NAME, out / GENERATOR_NAME
    if manifest_path.exists():
        if not settings_path.exists() or json.loads(settings_path.read_text()) != json.loads(json.dumps(config.to_dict())):
            raise FileExistsError(f"{out} already holds an alloy micrograph dataset made with other settings "
                                  f"(see {settings_path}); choose another folder or delete it")
        return out
    plan = [(c, k) for c in config.conditions() for k in range(config.images_per_condition)]
    rows = []
    for condition, k in tqdm(plan, desc="generating alloy micrographs", unit="image", disable=not progress):
        alloy, rate, modified = condition["alloy"], condition["cooling_rate"], condition["modified"]
        image, truth = render_alloy_micrograph(condition, rate, modified, image_seed(config, alloy, rate, modified, k),
                                               config.size, config.um_per_px)
        path = f"{alloy}/cr{rate:g}_{'mod' if modified else 'unmod'}/{k:03d}.png"
        save_png(out / path, image)
        rows.append({"image_path": path, "alloy": alloy, "group": alloy,
                     **{e: f"{condition[e]:g}" for e in ELEMENTS}, "cooling_rate": f"{rate:g}",
                     "modified": int(modified), "label": condition_label(alloy, rate, modified),
                     "stratum": "sr-p-modifiable" if alloy in MODIFIABLE else "unmodified-only",
                     **{key: (f"{value:.6g}" if isinstance(value, float) else value) for key, value in truth.items()}})
    atomic_write_text(settings_path, json.dumps(config.to_dict(), indent=2, sort_keys=True))
    atomic_write_csv(manifest_path, rows)  # last: its presence means the folder is complete
    return out
