"""The nine augmentations of the corrosion-rating study (Yin 2024, Part II, Table 1), in albumentations.

Yin 2024 used torchvision; albumentations is the project's standard because it moves a mask with the
image. Each factory below maps Yin 2024's torchvision parameters onto albumentations 2.x arguments, with
a comment where the semantics differ. Every transform keeps an ``image_size`` x ``image_size`` input at
that size, moves an optional ``mask`` with nearest interpolation, and never changes mask values by colour.

Fill for geometric transforms: constant 0 (image and mask). It is Yin 2024's choice (torchvision's
default fill, and "Padding Mode Constant" for the crop), and reflection would mirror scribe lines and
corrosion into the border: phantom scribes whose creep the rating would then have to explain.

Pixel parameters (blur kernel 11 / sigma 5, crop padding 4) are Yin 2024's, in pixels, as stated; they
are relatively stronger on images smaller than Yin 2024's 512 px photos.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import albumentations as A
import cv2

TABLE1_AUGMENTATIONS: tuple[str, ...] = (
    "color_jitter", "gaussian_blur", "hflip", "random_erasing", "perspective",
    "random_resized_crop", "rotation", "vflip", "random_crop",
)

# Yin 2024, Part II, Table 1: RandomPerspective(distortion_scale=0.25).
PERSPECTIVE_DISTORTION_SCALE = 0.25
# torchvision moves each corner inward by U[0, distortion_scale/2] of the side (mean distortion_scale/4);
# A.Perspective by |N(0, scale)| of the side. Same mean offset: scale = (d/4)·sqrt(pi/2) ≈ 0.078.
PERSPECTIVE_SCALE = PERSPECTIVE_DISTORTION_SCALE / 4 * math.sqrt(math.pi / 2)

_GEOMETRY: dict[str, Any] = {"border_mode": cv2.BORDER_CONSTANT, "fill": 0, "fill_mask": 0}


def _color_jitter(image_size: int) -> A.BasicTransform:
    # ColorJitter(brightness=(1.5, 2), contrast=(.5, 1.5), saturation=(.5, 1.5), hue=.5), p .25: same
    # factor ranges (hue .5 -> (-.5, .5)), random order in both; OpenCV's HSV and saturating uint8 maths
    # instead of PIL's make outputs differ slightly. Image only: the mask is untouched.
    return A.ColorJitter(brightness=(1.5, 2.0), contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue=(-0.5, 0.5),
                         p=0.25)


def _gaussian_blur(image_size: int) -> A.BasicTransform:
    # GaussianBlur(kernel_size=11, sigma=5), p .75: a fixed 11-tap kernel with sigma 5, reflect-101
    # borders (= torch's "reflect" padding). Image only.
    return A.GaussianBlur(blur_limit=(11, 11), sigma_limit=(5.0, 5.0), p=0.75)


def _hflip(image_size: int) -> A.BasicTransform:
    return A.HorizontalFlip(p=0.25)


def _random_erasing(image_size: int) -> A.BasicTransform:
    # RandomErasing(p=.25, scale=(0, .05), ratio=(.3, 3.3), value=0). A.Erasing takes the same area and
    # aspect ranges (A.CoarseDropout sizes holes by height/width, not area). Differences: the aspect is
    # drawn uniformly, not log-uniformly, and directly within what fits instead of by retries; Yin 2024's
    # "Max Attempt 5" is moot anyway (<= 5 % of the area with aspect <= 3.3 always fits at once). Black
    # fill on uint8, before standardisation. The mask is kept (fill_mask=None): the corrosion is still
    # there under the occluder, as a classification label stays unchanged.
    return A.Erasing(scale=(0.0, 0.05), ratio=(0.3, 3.3), fill=0, fill_mask=None, p=0.25)


def _perspective(image_size: int) -> A.BasicTransform:
    # RandomPerspective(distortion_scale=.25), p .75. torchvision squeezes the whole image into an inward
    # quadrilateral (fill at the corners); A.Perspective stretches an inward quadrilateral to the frame
    # (a zoom-in) unless fit_output=True, which keeps the whole image in view and resizes it back to
    # image_size, like torchvision. Corner offsets are half-normal (mean matched above), not uniform.
    return A.Perspective(scale=(PERSPECTIVE_SCALE, PERSPECTIVE_SCALE), keep_size=True, fit_output=True,
                         interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST, p=0.75,
                         **_GEOMETRY)


def _random_resized_crop(image_size: int) -> A.BasicTransform:
    # RandomResizedCrop(size, scale=(.3, .7), ratio=(3/4, 4/3)), p .25: the same sampler (10 tries,
    # log-uniform aspect, centre-crop fallback). Bilinear for the image, nearest for the mask.
    return A.RandomResizedCrop(size=(image_size, image_size), scale=(0.3, 0.7), ratio=(3 / 4, 4 / 3),
                               interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST, p=0.25)


def _rotation(image_size: int) -> A.BasicTransform:
    # RandomRotation(degrees=(-25, 25), fill=0), p .75: same uniform angle, same frame (expand=False ->
    # crop_border=False). Bilinear for the image where torchvision defaults to nearest.
    return A.Rotate(limit=(-25, 25), interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
                    crop_border=False, p=0.75, **_GEOMETRY)


def _vflip(image_size: int) -> A.BasicTransform:
    return A.VerticalFlip(p=0.5)


def _random_crop(image_size: int) -> A.BaseCompose:
    # RandomCrop(size, padding=4, padding_mode="constant"), p .5: pad 4 px of 0 on every side, then crop
    # back to size at a uniform offset in 0..8 (inclusive in both) = a shift of up to ±4 px.
    return A.Sequential([A.Pad(padding=4, **_GEOMETRY),
                         A.RandomCrop(height=image_size, width=image_size, p=1.0)], p=0.5)


_FACTORIES: dict[str, Callable[[int], A.BasicTransform | A.BaseCompose]] = {
    "color_jitter": _color_jitter, "gaussian_blur": _gaussian_blur, "hflip": _hflip,
    "random_erasing": _random_erasing, "perspective": _perspective, "random_resized_crop": _random_resized_crop,
    "rotation": _rotation, "vflip": _vflip, "random_crop": _random_crop,
}
assert tuple(_FACTORIES) == TABLE1_AUGMENTATIONS


def augmentation_transform(name: str, image_size: int) -> A.BasicTransform | A.BaseCompose:
    """One Table 1 augmentation with Yin 2024's probability and parameters."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown augmentation {name!r}; valid names: {', '.join(TABLE1_AUGMENTATIONS)} "
                         f"(or 'combination' / 'none' for build_augmentation)")
    return _FACTORIES[name](image_size)


class OneStreamCompose(A.Compose):
    """A.Compose whose transforms all draw from one RNG stream, and which checks the input size.

    albumentations 2.0.8's ``set_random_seed`` gives every child its own generator seeded with the *same*
    seed, so their draws coincide: HorizontalFlip(p=.25) then only ever fires together with
    VerticalFlip(p=.5). Re-pointing every child at the Compose's own generators makes their decisions
    independent, still deterministic per seed, and survives the per-worker reseed of the dataset.
    """

    def __init__(self, transforms: list, image_size: int, seed: int):
        self.image_size = image_size
        super().__init__(transforms, seed=seed)

    def set_random_seed(self, seed: int | None) -> None:
        super().set_random_seed(seed)
        self.set_random_state(self.random_generator, self.py_random)

    def __call__(self, *args: Any, force_apply: bool = False, **data: Any) -> dict[str, Any]:
        # Transforms that keep their input's size return image_size only when given image_size.
        image = data.get("image")
        if image is not None and image.shape[:2] != (self.image_size, self.image_size):
            raise ValueError(f"augmentation built for {self.image_size}x{self.image_size} images, "
                             f"got {image.shape[:2]}; resize before augmenting")
        return super().__call__(*args, force_apply=force_apply, **data)


def _parse(names: str | Sequence[str]) -> list[str]:
    parts = names.split(",") if isinstance(names, str) else list(names)
    parts = [part.strip() for part in parts if part.strip()]
    if parts in ([], ["none"]):
        return []
    if parts == ["combination"]:
        return list(TABLE1_AUGMENTATIONS)
    if "none" in parts or "combination" in parts:
        raise ValueError(f"'none' and 'combination' stand alone, got {parts}")
    return parts


def build_augmentation(names: str | Sequence[str], image_size: int, seed: int) -> A.Compose | None:
    """The training augmentation for ``names``: "none" / [] -> None, "combination" -> all nine in Table 1
    order, else a comma-separated string or a list of names, applied in the given order. Seeded."""
    parts = _parse(names)
    if not parts:
        return None
    return OneStreamCompose([augmentation_transform(name, image_size) for name in parts], image_size, seed)
