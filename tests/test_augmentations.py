"""The Table 1 augmentations of Yin 2024, Part II (datamodules/augmentations.py).

Parameters are written out here from Yin 2024, independently of the module. Each transform is forced to
apply by setting p = 1 on the built pipeline's transforms (albumentations 2.x has no always_apply).
"""

from __future__ import annotations

import math

import albumentations as A
import cv2
import numpy as np
import pytest
from albumentations.augmentations.geometric import functional as fgeometric

from matcv.datamodules.augmentations import (
    PERSPECTIVE_DISTORTION_SCALE,
    PERSPECTIVE_SCALE,
    TABLE1_AUGMENTATIONS,
    augmentation_transform,
    build_augmentation,
)

SIZE = 64
NAMES = ("color_jitter", "gaussian_blur", "hflip", "random_erasing", "perspective",
         "random_resized_crop", "rotation", "vflip", "random_crop")
GEOMETRIC = ("hflip", "vflip", "rotation", "perspective", "random_resized_crop", "random_crop")
COLOUR = ("color_jitter", "gaussian_blur")
SQUARE = (slice(10, 30), slice(6, 22))  # off-centre, so that flips and shifts move it


def image_and_mask() -> tuple[np.ndarray, np.ndarray]:
    """A noisy mid-grey image (40..120) with a white square, and the square as a {0,1} mask."""
    image = np.random.default_rng(0).integers(40, 121, (SIZE, SIZE, 3), dtype=np.uint8)
    image[SQUARE] = 255
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[SQUARE] = 1
    return image, mask


def forced(names, seed: int = 0) -> A.Compose:
    aug = build_augmentation(names, SIZE, seed)
    for transform in aug.transforms:
        transform.p = 1.0
    return aug


def run(aug: A.Compose, calls: int) -> list[dict]:
    image, mask = image_and_mask()
    return [aug(image=image, mask=mask) for _ in range(calls)]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def test_names_in_table_order():
    assert TABLE1_AUGMENTATIONS == NAMES


# --- every transform: shapes, dtypes, mask values -------------------------------------------------

@pytest.mark.parametrize("name", NAMES + ("combination",))
def test_forced_output_shapes_and_mask_values(name):
    for out in run(forced(name), 5):
        assert out["image"].shape == (SIZE, SIZE, 3) and out["image"].dtype == np.uint8
        assert out["mask"].shape == (SIZE, SIZE) and out["mask"].dtype == np.uint8
        assert set(np.unique(out["mask"])) <= {0, 1}


# --- geometry moves image and mask together ------------------------------------------------------

@pytest.mark.parametrize(("name", "flip"), [("hflip", np.fliplr), ("vflip", np.flipud)])
def test_flips_are_exact_on_image_and_mask(name, flip):
    image, mask = image_and_mask()
    out = forced(name)(image=image, mask=mask)
    assert np.array_equal(out["image"], flip(image)) and np.array_equal(out["mask"], flip(mask))


def test_random_crop_is_a_shift_of_at_most_4_px_with_zero_fill_on_both():
    image, mask = image_and_mask()
    padded_image = np.pad(image, ((4, 4), (4, 4), (0, 0)))
    padded_mask = np.pad(mask, 4)
    shifts = set()
    for out in run(forced("random_crop"), 30):
        matches = [(dy, dx) for dy in range(9) for dx in range(9)
                   if np.array_equal(out["image"], padded_image[dy:dy + SIZE, dx:dx + SIZE])]
        assert len(matches) == 1
        dy, dx = matches[0]
        assert np.array_equal(out["mask"], padded_mask[dy:dy + SIZE, dx:dx + SIZE])
        shifts.add((dy, dx))
    assert len(shifts) > 5


@pytest.mark.parametrize("name", ["rotation", "perspective", "random_resized_crop"])
def test_warps_keep_mask_on_the_bright_pixels(name):
    _, mask = image_and_mask()
    moved = 0
    for out in run(forced(name), 20):
        bright = out["image"].min(axis=2) >= 188  # halfway between the background's 120 and the square's 255
        assert iou(bright, out["mask"] == 1) >= 0.7  # 0.27 if the mask stayed put
        moved += not np.array_equal(out["mask"], mask)
    assert moved >= 15


def test_perspective_keeps_the_whole_image_in_view_like_torchvision():
    # fit_output=True: the image shrinks into a quadrilateral, the corners get the constant-0 fill.
    corners = [out["image"][[0, 0, -1, -1], [0, -1, 0, -1]] for out in run(forced("perspective"), 20)]
    assert sum((c == 0).all(axis=1).any() for c in corners) >= 10
    assert all(out["mask"].sum() > 0 for out in run(forced("perspective"), 20))


def test_perspective_scale_matches_torchvision_mean_corner_offset():
    # torchvision: each corner coordinate moves inward by U{0..floor(d/2 * side)} px, mean d/4 of the side.
    offsets = np.concatenate([
        np.minimum(p, 1 - p).ravel()
        for p in (fgeometric.generate_perspective_points((1, 1), PERSPECTIVE_SCALE, np.random.default_rng(s))
                  for s in range(5000))])
    assert offsets.mean() == pytest.approx(PERSPECTIVE_DISTORTION_SCALE / 4, rel=0.05)


# --- colour and erasing leave the mask alone ----------------------------------------------------------

@pytest.mark.parametrize("name", COLOUR)
def test_colour_transforms_change_the_image_not_the_mask(name):
    image, mask = image_and_mask()
    for out in run(forced(name), 5):
        assert np.array_equal(out["mask"], mask)
        assert not np.array_equal(out["image"], image)


def test_random_erasing_blacks_out_one_rectangle_of_at_most_5_percent():
    image, mask = image_and_mask()
    areas = []
    for out in run(forced("random_erasing"), 50):
        assert np.array_equal(out["mask"], mask)
        changed = (out["image"] != image).any(axis=2)
        areas.append(int(changed.sum()))
        if not changed.any():
            continue
        rows, cols = np.nonzero(changed)
        h, w = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert changed.sum() == h * w and (out["image"][changed] == 0).all()
        assert (h - 0.5) * (w - 0.5) <= 0.05 * SIZE * SIZE  # sides are rounded from an area <= 5 %
    assert sum(a > 0 for a in areas) >= 40


# --- seeding ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES + ("combination",))
def test_same_seed_same_outputs_different_seed_different(name):
    def outputs(seed):
        return [np.concatenate([o["image"].ravel(), o["mask"].ravel()])
                for o in run(build_augmentation(name, SIZE, seed), 20)]
    first, again, other = outputs(0), outputs(0), outputs(1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_transforms_draw_independently_also_after_worker_reseed():
    # albumentations 2.0.8 seeds each child with the same seed: hflip (p .25) fired only together with
    # vflip (p .5). The module shares one stream; the DataLoader worker's set_random_seed must keep that.
    image = np.arange(SIZE * SIZE * 3, dtype=np.uint8).reshape(SIZE, SIZE, 3)
    aug = build_augmentation("hflip,vflip", SIZE, seed=0)
    for reseed in (None, 12345):
        if reseed is not None:
            aug.set_random_seed(reseed)
        outcomes = {"none": 0, "h": 0, "v": 0, "hv": 0}
        for _ in range(800):
            out = aug(image=image)["image"]
            key = next(k for k, ref in (("none", image), ("h", np.fliplr(image)), ("v", np.flipud(image)),
                                        ("hv", image[::-1, ::-1])) if np.array_equal(out, ref))
            outcomes[key] += 1
        expected = {"none": 0.75 * 0.5, "h": 0.25 * 0.5, "v": 0.75 * 0.5, "hv": 0.25 * 0.5}
        for key, p in expected.items():
            assert outcomes[key] / 800 == pytest.approx(p, abs=0.06), outcomes


# --- parameters of Yin 2024, Part II, Table 1 ---------------------------------------------------------

def test_parameters_match_seed_table_1():
    t = {name: augmentation_transform(name, SIZE) for name in NAMES}
    assert {name: t[name].p for name in NAMES} == {
        "color_jitter": 0.25, "gaussian_blur": 0.75, "hflip": 0.25, "random_erasing": 0.25, "perspective": 0.75,
        "random_resized_crop": 0.25, "rotation": 0.75, "vflip": 0.5, "random_crop": 0.5}

    jitter = t["color_jitter"]
    assert isinstance(jitter, A.ColorJitter)
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == ((1.5, 2), (0.5, 1.5), (0.5, 1.5),
                                                                                   (-0.5, 0.5))
    blur = t["gaussian_blur"]
    assert isinstance(blur, A.GaussianBlur) and blur.blur_limit == (11, 11) and blur.sigma_limit == (5, 5)
    assert isinstance(t["hflip"], A.HorizontalFlip) and isinstance(t["vflip"], A.VerticalFlip)

    erasing = t["random_erasing"]
    assert isinstance(erasing, A.Erasing) and erasing.scale == (0, 0.05) and erasing.ratio == (0.3, 3.3)
    assert erasing.fill == 0 and erasing.fill_mask is None

    perspective = t["perspective"]
    assert isinstance(perspective, A.Perspective) and PERSPECTIVE_DISTORTION_SCALE == 0.25
    assert perspective.scale == pytest.approx((0.25 / 4 * math.sqrt(math.pi / 2),) * 2)
    assert perspective.keep_size and perspective.fit_output

    crop = t["random_resized_crop"]
    assert isinstance(crop, A.RandomResizedCrop) and crop.size == (SIZE, SIZE) and crop.scale == (0.3, 0.7)
    assert crop.ratio == pytest.approx((3 / 4, 4 / 3))

    rotation = t["rotation"]
    assert isinstance(rotation, A.Rotate) and rotation.limit == (-25, 25) and not rotation.crop_border

    random_crop = t["random_crop"]
    assert isinstance(random_crop, A.Sequential)
    pad, cut = random_crop.transforms
    assert isinstance(pad, A.Pad) and pad.padding == 4 and pad.p == 1.0
    assert isinstance(cut, A.RandomCrop) and (cut.height, cut.width) == (SIZE, SIZE) and cut.p == 1.0

    for warp in (perspective, rotation, pad):  # constant-0 fill on image and mask
        assert (warp.border_mode, warp.fill, warp.fill_mask) == (cv2.BORDER_CONSTANT, 0, 0)
    for warp in (perspective, crop, rotation):
        assert warp.mask_interpolation == cv2.INTER_NEAREST


# --- parsing and errors ------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["none", " none ", "", []])
def test_none_and_empty_give_no_augmentation(spec):
    assert build_augmentation(spec, SIZE, seed=0) is None


def test_names_parse_as_string_list_or_combination():
    def kinds(spec):
        return [type(t) for t in build_augmentation(spec, SIZE, seed=0).transforms]
    assert kinds("hflip, vflip") == kinds(["hflip", "vflip"]) == [A.HorizontalFlip, A.VerticalFlip]
    assert kinds("combination") == [type(augmentation_transform(n, SIZE)) for n in NAMES]


@pytest.mark.parametrize("call", [lambda: augmentation_transform("sharpen", SIZE),
                                  lambda: build_augmentation("hflip, sharpen", SIZE, 0),
                                  lambda: build_augmentation(["Hflip"], SIZE, 0)])
def test_unknown_names_raise_listing_valid_names(call):
    with pytest.raises(ValueError, match="sharpen|Hflip") as error:
        call()
    assert all(name in str(error.value) for name in NAMES)


def test_none_or_combination_mixed_with_names_raises():
    for spec in ("none,hflip", ["combination", "vflip"]):
        with pytest.raises(ValueError, match="stand alone"):
            build_augmentation(spec, SIZE, 0)


def test_wrong_input_size_raises():
    with pytest.raises(ValueError, match="64x64"):
        build_augmentation("hflip", SIZE, 0)(image=np.zeros((32, 32, 3), np.uint8))
