"""``dataset.yaml``: what a user's data folder says about itself, and how its masks and images are read.

A data folder holds ``manifest.csv`` (``datamodules/manifest.py``) and, optionally, ``dataset.yaml``:

    name: my-steel              # the dataset's name on the leaderboard (letters, digits, '.', '_', '-')
    classes:                    # class index = position in this list; masks give a value OR a colour
      - {name: matrix, value: 0}
      - {name: ferrite, value: 1}
      - {name: carbide, value: 2}
    ignore: 255                 # optional: pixels neither learnt nor scored ([r, g, b] for colour masks)
    unlisted_class: matrix      # optional: pixels of any other value/colour are this class (else an error)
    pixel_size_um: 0.05         # optional, recorded
    crop_size: 256              # task options: crop_size (native resolution, random crops) or image_size
    crops_per_image: 8          #   (resize to a square), augment: square | flips | none
    labels:                     # optional, for the label tasks (rating, ordinal): the label column's values,
      - {name: fine, value: 0}  #   lowest first
      - {name: coarse, value: 1}
    loss: {name: focal, class_weights: inverse_frequency}  # optional: the training loss of SmpSegmentationTask
    image_bits: 8               # optional: read 16-bit images by their high byte, as 8-bit (default: full depth)
    oversample: {class: crack, factor: 4}  # optional: training crops with a rare class drawn more often

Masks are index images (8/16-bit grey PNG/TIFF, or palette PNGs whose palette *indices* are the values) when
the classes give values, or RGB(A) images painted with the class colours when they give colours (16-bit colour
masks are read by their high byte, so 65535 is 255). Images are
PNG/JPEG/TIFF, grey or RGB, 8- or 16-bit; 16-bit images are scaled by 1/65535, never clipped to 8 bits.
Without ``dataset.yaml`` the folder is read as before: binary masks with values {0, 1} or {0, 255}.

Everything here reports problems instead of stopping at the first (``decode_mask`` returns them), so a data
check names every bad file in one pass; a bad ``dataset.yaml`` is a ``DatasetDescriptionError`` naming the
file and the key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from matcv.datamodules.manifest import IMAGE_ERRORS, ManifestError, open_image

DESCRIPTION_NAME = "dataset.yaml"
IGNORE_INDEX = 255  # the class index of an ignored pixel in a decoded mask (so at most 255 classes)
MAX_CLASSES = 255
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # one folder name of runs/<task>/<dataset>/
AUGMENTS = ("square", "flips", "none")
KEYS = ("name", "classes", "ignore", "unlisted_class", "pixel_size_um", "image_size", "crop_size", "crops_per_image",
        "augment", "labels", "loss", "oversample", "rare_classes", "image_bits")
IMAGE_BITS = (8, 16)
# ``loss: {name: ...}``: what ``lightning_modules.segmentation_losses`` builds; "default" is BCE/CE + Dice.
LOSS_NAMES = ("default", "ce", "dice", "focal", "tversky", "lovasz")
LOSS_KEYS = ("name", "class_weights", "alpha", "beta", "gamma")
INVERSE_FREQUENCY = "inverse_frequency"
OVERSAMPLE_KEYS = ("class", "classes", "factor", "crop_probability")
DEFAULT_OVERSAMPLE_FACTOR = 4.0
DEFAULT_RARE_CROP_PROBABILITY = 0.5
# PIL modes read as grey/RGB with 8 bits per channel, and as one 16-bit channel.
EIGHT_BIT_MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


class DatasetDescriptionError(ManifestError):
    """A ``dataset.yaml`` that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class ClassSpec:
    name: str
    value: int | None = None  # in an index mask
    color: tuple[int, int, int] | None = None  # in an RGB(A) mask


@dataclass(frozen=True)
class LossSpec:
    """``loss:`` of a dataset.yaml (or a model's ``loss`` argument): a loss name and its options."""

    name: str = "default"
    class_weights: tuple[float, ...] | str | None = None  # one per class, or "inverse_frequency"
    alpha: float | None = None  # focal: the class-balance alpha; tversky: the weight of false positives
    beta: float | None = None  # tversky: the weight of false negatives
    gamma: float | None = None  # focal: the focusing exponent; tversky: the focal exponent


@dataclass(frozen=True)
class OversampleSpec:
    """``oversample:`` (or ``rare_classes:``): training images holding one of ``classes`` are drawn ``factor``
    times as often, and a crop is placed over one of their pixels with probability ``crop_probability``."""

    classes: tuple[str, ...]
    factor: float = DEFAULT_OVERSAMPLE_FACTOR
    crop_probability: float = DEFAULT_RARE_CROP_PROBABILITY


@dataclass(frozen=True)
class DatasetDescription:
    """A dataset's classes and task options: from a ``dataset.yaml``, or a built-in preset (``source`` says
    which, for messages)."""

    name: str | None
    classes: tuple[ClassSpec, ...]  # of the masks; empty when dataset.yaml describes labels only
    ignore: int | tuple[int, int, int] | None = None
    unlisted_class: str | None = None
    pixel_size_um: float | None = None
    image_size: int | None = None
    crop_size: int | None = None
    crops_per_image: int | None = None
    augment: str | None = None
    source: str = DESCRIPTION_NAME
    labels: tuple[ClassSpec, ...] = ()  # the label column's values (label tasks), when given
    loss: LossSpec | None = None  # the training loss it asks for (None: the model's own, BCE/CE + Dice)
    oversample: OversampleSpec | None = None  # rare classes to over-sample in training (None: off)
    # 8: every image read as 8-bit, 16-bit files by their high byte (PIL's reading; the NASA superalloy release's
    # published results were computed so, one Super2 micrograph being a 16-bit RGB TIFF); None: full depth.
    image_bits: int | None = None

    @property
    def by_color(self) -> bool:
        return bool(self.classes) and self.classes[0].color is not None

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def model_outputs(self) -> int:
        """The ``num_classes`` of a model for this data: 1 (one sigmoid map) for two classes, else one per class."""
        return 1 if len(self.classes) == 2 else len(self.classes)

    def listed(self) -> str:
        """The class map as a message shows it: ``matrix=0, ferrite=1``."""
        return ", ".join(f"{c.name}={list(c.color) if self.by_color else c.value}" for c in self.classes)

    def lookup(self) -> tuple[dict[int, int], int | None]:
        """(mask key -> class index, the class index of unlisted keys or None). Keys are values, or colours packed
        as r << 16 | g << 8 | b; the ignore value maps to IGNORE_INDEX."""
        table = {_key(c.color if self.by_color else c.value): index for index, c in enumerate(self.classes)}
        if self.ignore is not None:
            table[_key(self.ignore)] = IGNORE_INDEX
        other = self.class_names.index(self.unlisted_class) if self.unlisted_class is not None else None
        return table, other


def _key(value) -> int:
    if isinstance(value, tuple):
        return (value[0] << 16) | (value[1] << 8) | value[2]
    return int(value)


def _unkey(key: int, by_color: bool):
    return [key >> 16, (key >> 8) & 255, key & 255] if by_color else key


# --- reading dataset.yaml ------------------------------------------------------------------------------------

def description_path(data_root: str | Path) -> Path:
    return Path(data_root) / DESCRIPTION_NAME


def read_description(data_root: str | Path) -> DatasetDescription | None:
    """The data root's ``dataset.yaml``, checked; None when there is none (binary masks, as before)."""
    path = description_path(data_root)
    if not path.is_file():
        return None
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise DatasetDescriptionError(f"{path}: not readable YAML ({error})") from error
    return parse_description(raw, str(path))


def parse_description(raw, source: str) -> DatasetDescription:
    """A ``DatasetDescription`` from the mapping a ``dataset.yaml`` holds; every problem named with its key."""
    if not isinstance(raw, Mapping):
        raise DatasetDescriptionError(f"{source}: expected a mapping with keys such as name, classes, ignore; "
                                      f"got {type(raw).__name__}")
    problems: list[str] = []

    def problem(key: str, text: str) -> None:
        problems.append(f"key '{key}' {text}")

    unknown = sorted(str(k) for k in raw if k not in KEYS)
    if unknown:
        problems.append(f"unknown key(s) {unknown}; known: {', '.join(KEYS)}")
    name = raw.get("name")
    if name is not None and (not isinstance(name, str) or not NAME_PATTERN.match(name)):
        problem("name", f"must be a name of letters, digits, '.', '_' and '-' (it names the benchmark folder), "
                        f"got {name!r}")
        name = None
    classes = _parse_classes(raw.get("classes"), problem) if "classes" in raw or "labels" not in raw else []
    labels = _parse_classes(raw.get("labels"), problem, "labels", colours=False) if "labels" in raw else []
    by_color = bool(classes) and classes[0].color is not None
    ignore = _parse_ignore(raw.get("ignore"), by_color, classes, problem)
    unlisted = raw.get("unlisted_class")
    if unlisted is not None and unlisted not in [c.name for c in classes]:
        problem("unlisted_class", f"must name one of the classes {[c.name for c in classes]}, got {unlisted!r}")
        unlisted = None
    pixel_size = raw.get("pixel_size_um")
    if pixel_size is not None and (isinstance(pixel_size, bool) or not isinstance(pixel_size, (int, float))
                                   or not math.isfinite(pixel_size) or pixel_size <= 0):
        problem("pixel_size_um", f"must be a positive number (micrometres per pixel), got {pixel_size!r}")
        pixel_size = None
    sizes = {}
    for key, minimum in (("image_size", 32), ("crop_size", 32), ("crops_per_image", 1)):
        value = raw.get(key)
        if value is None:
            continue
        multiple = 32 if key != "crops_per_image" else 1  # five 2x down-samplings of a UNet encoder
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum or value % multiple:
            what = f"a multiple of {multiple} of at least {minimum}" if multiple > 1 else f"a whole number >= {minimum}"
            problem(key, f"must be {what}, got {value!r}")
        else:
            sizes[key] = value
    if "image_size" in sizes and "crop_size" in sizes:
        problems.append("keys 'image_size' and 'crop_size' are both given: give image_size (resize every image) "
                        "or crop_size (random crops at native resolution), not both")
    augment = raw.get("augment")
    if augment is not None and augment not in AUGMENTS:
        problem("augment", f"must be one of {', '.join(AUGMENTS)}, got {augment!r}")
        augment = None
    names = [c.name for c in classes]
    loss = parse_loss(raw["loss"], len(names), problem) if raw.get("loss") is not None else None
    oversample = _parse_oversample(raw, names, problem)
    image_bits = raw.get("image_bits")
    if image_bits is not None and (isinstance(image_bits, bool) or image_bits not in IMAGE_BITS):
        problem("image_bits", f"must be 8 (read 16-bit images by their high byte) or 16 (full depth, the default), "
                              f"got {image_bits!r}")
        image_bits = None
    if problems:
        raise DatasetDescriptionError(f"{source}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return DatasetDescription(name, tuple(classes), ignore, unlisted, pixel_size, sizes.get("image_size"),
                              sizes.get("crop_size"), sizes.get("crops_per_image"), augment, source, tuple(labels),
                              loss, oversample, 8 if image_bits == 8 else None)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_loss(raw, n_classes: int, problem) -> LossSpec | None:
    """A ``LossSpec`` of ``loss:`` (a name, or a mapping with ``name`` and options); ``problem(key, text)`` is told
    what is wrong. ``n_classes``: the data's class count (0: unknown), which a weight list must match."""
    raw = {"name": raw} if isinstance(raw, str) else raw
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
        problem("loss", f"must be a loss name or {{name: {' | '.join(LOSS_NAMES)}, class_weights: [...] | "
                        f"{INVERSE_FREQUENCY}, alpha: ..., beta: ..., gamma: ...}}, got {raw!r}")
        return None
    unknown = sorted(str(k) for k in raw if k not in LOSS_KEYS)
    name, ok = raw["name"], True
    if unknown:
        problem("loss", f"has unknown key(s) {unknown}; known: {', '.join(LOSS_KEYS)}")
        ok = False
    if name not in LOSS_NAMES:
        problem("loss.name", f"must be one of {', '.join(LOSS_NAMES)}, got {name!r}")
        ok = False
    weights = raw.get("class_weights")
    if weights is not None and weights != INVERSE_FREQUENCY:
        if not isinstance(weights, (list, tuple)) or not weights or not all(_number(w) and w >= 0 for w in weights):
            problem("loss.class_weights", f"must be {INVERSE_FREQUENCY!r} or a list of non-negative numbers, one per "
                                          f"class, got {weights!r}")
            ok = False
        elif n_classes and len(weights) != n_classes:
            problem("loss.class_weights", f"lists {len(weights)} weights for {n_classes} classes")
            ok = False
        else:
            weights = tuple(float(w) for w in weights)
    if weights is not None and name in ("default", "lovasz"):
        problem("loss.class_weights", f"cannot weight the {name!r} loss: use ce, dice, focal or tversky")
        ok = False
    options = {}
    for key in ("alpha", "beta", "gamma"):
        value = raw.get(key)
        if value is not None and (not _number(value) or value < 0):
            problem(f"loss.{key}", f"must be a non-negative number, got {value!r}")
            ok = False
        options[key] = float(value) if value is not None and _number(value) else None
    return LossSpec(name, weights, **options) if ok else None


def _parse_oversample(raw: Mapping, names: list[str], problem) -> OversampleSpec | None:
    """``oversample: {class: crack, factor: 4, crop_probability: 0.5}`` or the short ``rare_classes: [crack]``."""
    if raw.get("oversample") is not None and raw.get("rare_classes") is not None:
        problem("rare_classes", "and 'oversample' are both given: give one (rare_classes: [..] is oversample with "
                                "the default factor)")
        return None
    if raw.get("rare_classes") is not None:
        entry, key = {"classes": raw["rare_classes"]}, "rare_classes"
        if isinstance(entry["classes"], str):
            entry = {"classes": [entry["classes"]]}
    elif raw.get("oversample") is not None:
        entry, key = raw["oversample"], "oversample"
    else:
        return None
    if not isinstance(entry, Mapping) or set(entry) - set(OVERSAMPLE_KEYS):
        problem(key, f"must be {{class: <name> (or classes: [..]), factor: N, crop_probability: p}}, got {entry!r}")
        return None
    wanted = entry.get("classes", [entry["class"]] if "class" in entry else None)
    if not isinstance(wanted, (list, tuple)) or not wanted or not all(isinstance(c, str) for c in wanted):
        problem(key, f"must name the rare class(es) (class: crack, or classes: [crack, pore]), got {entry!r}")
        return None
    missing = [c for c in wanted if c not in names]
    if missing:
        problem(key, f"names {missing}, not among the classes {names}")
        return None
    factor = entry.get("factor", DEFAULT_OVERSAMPLE_FACTOR)
    probability = entry.get("crop_probability", DEFAULT_RARE_CROP_PROBABILITY)
    if not _number(factor) or factor < 1:
        problem(f"{key}.factor", f"must be a number >= 1 (how many times as often), got {factor!r}")
        return None
    if not _number(probability) or not 0 <= probability <= 1:
        problem(f"{key}.crop_probability", f"must be a probability 0-1, got {probability!r}")
        return None
    return OversampleSpec(tuple(wanted), float(factor), float(probability))


def _is_int(value, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _color(value) -> tuple[int, int, int] | None:
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(_is_int(v, 0, 255) for v in value):
        return tuple(int(v) for v in value)
    return None


def _parse_classes(raw, problem, what: str = "classes", colours: bool = True) -> list[ClassSpec]:
    shapes = "{name: ..., value: N} (index masks) or {name: ..., color: [r, g, b]} (colour masks)" if colours \
        else "a value of the label column, or {name: ..., value: N}"
    if not isinstance(raw, list) or len(raw) < 2:
        problem(what, f"must list at least two classes, each {shapes}")
        return []
    if len(raw) > MAX_CLASSES:
        problem(what, f"lists {len(raw)} classes; at most {MAX_CLASSES}")
        return []
    classes: list[ClassSpec] = []
    for index, entry in enumerate(raw):
        key = f"{what}[{index}]"
        if not colours and isinstance(entry, (str, int)) and not isinstance(entry, bool):
            # A label list may simply list the label column's values: `labels: [ferrite, pearlite]` or `[5, 6, 7]`.
            text = str(entry).strip()
            if not re.fullmatch(r"[\w.-]+", text):
                problem(key, f"must be a label of letters, digits, '.', '_' or '-', got {entry!r}")
                continue
            classes.append(ClassSpec(text, value=entry if isinstance(entry, int) else None))
            continue
        if not colours and isinstance(entry, Mapping) and "color" in entry:
            problem(key, f"must be {shapes}: labels are values, not colours")
            continue
        if not isinstance(entry, Mapping) or set(entry) - {"name", "value", "color"} or "name" not in entry:
            problem(key, f"must be {{name: ..., value: N}} or {{name: ..., color: [r, g, b]}}, got {entry!r}")
            continue
        name = entry["name"]
        if not isinstance(name, str) or not name.strip() or not re.fullmatch(r"[\w.-]+", name.strip()):
            problem(f"{key}.name", f"must be a name of letters, digits, '.', '_' or '-' (it names the per-class "
                                   f"metrics), got {name!r}")
            continue
        if ("value" in entry) == ("color" in entry):
            problem(key, f"must give either 'value' (index masks) or 'color' (colour masks), got {dict(entry)!r}")
            continue
        if "value" in entry:
            if not _is_int(entry["value"], 0, 65535):
                problem(f"{key}.value", f"must be a whole number 0-65535 (a mask value), got {entry['value']!r}")
                continue
            classes.append(ClassSpec(name.strip(), value=int(entry["value"])))
        else:
            color = _color(entry["color"])
            if color is None:
                problem(f"{key}.color", f"must be three whole numbers 0-255 [r, g, b], got {entry['color']!r}")
                continue
            classes.append(ClassSpec(name.strip(), color=color))
    if len(classes) != len(raw):
        return []
    if len({c.color is None for c in classes}) > 1:
        problem(what, "mixes 'value' and 'color': a mask holds either class values or class colours")
        return []
    names = [c.name for c in classes]
    keys = [c.color or c.value for c in classes if c.color is not None or c.value is not None]  # named labels: no key
    for field, listed in (("name", names), ("value/color", keys)):
        repeated = sorted({str(v) for v in listed if listed.count(v) > 1})
        if repeated:
            problem(what, f"gives the same {field} to two classes: {', '.join(repeated)}")
            return []
    return classes


def _parse_ignore(raw, by_color: bool, classes: list[ClassSpec], problem):
    if raw is None or not classes:
        return None
    value = _color(raw) if by_color else (int(raw) if _is_int(raw, 0, 65535) else None)
    if value is None:
        problem("ignore", "must be " + ("a colour [r, g, b] (the classes are colours)" if by_color
                                        else "a whole number 0-65535 (the classes are mask values)") + f", got {raw!r}")
        return None
    clash = [c.name for c in classes if (c.color if by_color else c.value) == value]
    if clash:
        problem("ignore", f"is {list(value) if by_color else value}, the value of class {clash[0]!r}")
        return None
    return value


# --- masks -------------------------------------------------------------------------------------------------

def _place(mask: np.ndarray) -> str:
    y, x = np.argwhere(mask)[0]
    return f"first at x={x}, y={y}"


def decode_mask(array: np.ndarray, mode: str, description: DatasetDescription) -> tuple[np.ndarray | None, list[str]]:
    """(class indices uint8 H x W, ignored pixels = IGNORE_INDEX; or None) and the problems of one mask as
    ``read`` by PIL in ``mode``. A problem says what is wrong and where (pixel count, first pixel)."""
    array = np.asarray(array)
    if description.by_color:
        if array.ndim != 3 or array.shape[-1] not in (3, 4):
            return None, [f"is a single-channel ({mode}) image; {description.source} gives class colours: expected an "
                          f"RGB(A) mask painted with them ({description.listed()})"]
        if array.dtype != np.uint8:
            return None, [f"is a {array.dtype} colour image; colour masks must be 8-bit (class colours are 0-255)"]
        if array.shape[-1] == 4:
            translucent = array[..., 3] != 255
            if translucent.any():
                return None, [f"{int(translucent.sum())} pixel(s) are not fully opaque (alpha != 255), "
                              f"{_place(translucent)}; flatten the mask (no transparency) and save it again"]
        rgb = array[..., :3].astype(np.int64)
        keys = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    else:
        if array.ndim == 3:
            channels = array[..., :3] if array.shape[-1] >= 3 else array[..., :1]
            if not (channels == channels[..., :1]).all():
                return None, [f"is a colour ({mode}) image; {description.source} gives class values: expected a "
                              f"single-channel index mask (grey or palette) with values {description.listed()}"]
            array = channels[..., 0]
        if array.dtype.kind not in "ub" and not (array.dtype.kind == "i" and (array.size == 0 or array.min() >= 0)):
            return None, [f"holds {array.dtype} values; index masks hold whole numbers 0-65535"]
        keys = array.astype(np.int64)
    return map_keys(keys, description)


def map_keys(keys: np.ndarray, description: DatasetDescription) -> tuple[np.ndarray | None, list[str]]:
    """Class indices of a mask of keys (values, or packed colours), or the unlisted keys as a problem."""
    table, other = description.lookup()
    unique, inverse = np.unique(keys, return_inverse=True)
    classes = np.array([table.get(int(k), IGNORE_INDEX if other is None else other) for k in unique], np.uint8)
    unknown = [int(k) for k in unique if int(k) not in table]
    if unknown and other is None:
        bad = np.isin(keys, unknown)
        shown = [_unkey(k, description.by_color) for k in unknown[:8]]
        more = f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""
        what = "colours" if description.by_color else "values"
        ignore = "" if description.ignore is None else \
            f" nor its ignore {_unkey(_key(description.ignore), description.by_color)}"
        return None, [f"has {what} {shown}{more} that are not in {description.source}'s classes "
                      f"({description.listed()}){ignore}: {int(bad.sum())} px, {_place(bad)}"]
    return classes[inverse.reshape(keys.shape)], []


def read_mask_file(path: Path, description: DatasetDescription) -> np.ndarray:
    """Class indices (uint8 H x W) of one mask file, or ManifestError naming the file and the problem."""
    try:
        with open_image(path) as handle:
            mode = handle.mode
            if description.by_color and mode == "P":
                array = np.asarray(handle.convert("RGBA"))  # a palette mask with colour classes: its colours
            elif not description.by_color and mode == "LA":
                array = np.asarray(handle.getchannel(0))
            else:
                # A 16-bit RGB(A) file comes as its high bytes (PIL's reading): pure 16-bit colours are the 8-bit
                # ones (65535 -> 255), as two of the published Super2 masks need.
                array = np.asarray(handle)  # mode "P": the palette indices themselves
    except IMAGE_ERRORS as error:
        raise ManifestError(f"{path}: cannot read mask ({error})") from error
    classes, problems = decode_mask(array, mode, description)
    if problems:
        raise ManifestError(f"{path}: mask " + "; ".join(problems))
    return classes


# --- images ------------------------------------------------------------------------------------------------

def _sixteen_bit_colour(handle) -> bool:
    """True for an RGB(A) file with 16 bits per channel, which PIL reduces to 8 bits without a word."""
    if handle.mode not in ("RGB", "RGBA") or not handle.tile:
        return False
    args = handle.tile[0].args
    raw = args[0] if isinstance(args, tuple) and args else args
    return isinstance(raw, str) and ";16" in raw


def read_image_file(path: Path, bits: int | None = None) -> np.ndarray:
    """RGB (H, W, 3) of one image file: uint8 for 8-bit files, float32 in [0, 1] for 16-bit ones (value /
    65535, so no precision is lost and 8- and 16-bit images of one scene agree); grey is copied to three
    channels. ``bits=8`` (dataset.yaml's ``image_bits``): uint8 always, 16-bit files by their high byte.
    ManifestError names the file and the problem."""
    try:
        with open_image(path) as handle:
            mode = handle.mode
            if _sixteen_bit_colour(handle) and bits != 8:
                pass  # read below by OpenCV, which keeps the 16 bits (after PIL checked the header's size)
            elif mode in EIGHT_BIT_MODES:
                return np.asarray(handle.convert("RGB"))  # 16-bit colour: PIL reads its high bytes
            elif mode in SIXTEEN_BIT_MODES and bits == 8:
                high = (np.asarray(handle).astype(np.uint32) >> 8).astype(np.uint8)
                return np.repeat(high[..., None], 3, axis=-1)
            elif mode in SIXTEEN_BIT_MODES or mode == "I":
                grey = np.asarray(handle)
                if mode == "I" and grey.size and (grey.min() < 0 or grey.max() > 65535):
                    raise ManifestError(f"{path}: 32-bit image with values {grey.min()}..{grey.max()}; matcv reads "
                                        f"8- and 16-bit images: save it as 16-bit")
                unit = grey.astype(np.float32) / 65535.0
                return np.repeat(unit[..., None], 3, axis=-1)
            else:
                raise ManifestError(f"{path}: image mode {mode!r} is not 8- or 16-bit grey or RGB; save it as such")
    except IMAGE_ERRORS as error:
        raise ManifestError(f"{path}: cannot read image ({error})") from error
    colour = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # BGR(A) order: turned to RGB below
    if colour is None or colour.ndim != 3 or colour.dtype != np.uint16:
        raise ManifestError(f"{path}: cannot read its 16-bit colour channels")
    return cv2.cvtColor(colour[..., :3], cv2.COLOR_BGR2RGB).astype(np.float32) / 65535.0

