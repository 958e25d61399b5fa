"""A task YAML fitted to the data folder it runs on, so a user's own data is benchmarked without writing Python.

``matcv bench --task segmentation --data-root DIR`` runs the segmentation YAML, written for the binary corrosion
panels. When DIR has a ``dataset.yaml`` (its classes, ignore value, input size), or the command line asks for
another input size (``--image-size`` / ``--crop-size``), the YAML is adapted here before the harness sees it:

- segmentation on a described folder (or with ``--crop-size``) reads it with ``UserSegmentationDataModule``
  (any number of classes, crops or resizing), grouped by the manifest's ``group`` column and stratified by its
  ``stratum`` column; the corrosion panels' per-image extras (difficulty slices, stain false positives) go;
- every model whose class takes ``num_classes`` / ``class_names`` gets the data's (1 output for two classes),
  the way segmentation-superalloy.yaml gives its models 3; a YAML that already says otherwise is an error;
- the input size of every profile is the command line's, else dataset.yaml's, else the profile's own;
- a label task (rating, ordinal) learns the values of dataset.yaml's ``labels``, when it lists them;
- a folder whose manifest has a ``split`` column gets, beside every profile, its publisher's split as a protocol
  of its own (``<profile>-published-split``: one fold, run as a companion profile, in its own benchmark folder),
  for every task whose DataModule reads a ``split`` argument (segmentation, rating, ordinal, classification);
  grouped CV stays the profile itself, unchanged. A split that cannot be run (no test rows) is said and left out.

The adapted YAML is written to a temporary folder under the original's name (``adapted_task``); the harness keeps
a copy with the runs (``task.yaml``), so ``matcv leaderboard`` rebuilds the tables with it. Without a dataset.yaml and size
options the task is run as it is: the corrosion data, its hashes and its results do not change.
"""

from __future__ import annotations

import atexit
import copy
import csv
import inspect
import math
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from matcv.datamodules.core.atomic_io import atomic_write_text
from matcv.datamodules.core.config import ConfigError, TaskConfig, import_object, named_datasets
from matcv.datamodules.dataset_description import DatasetDescription, read_description
from matcv.datamodules.manifest import MANIFEST_NAME

CORROSION_DATAMODULE = "matcv.datamodules.corrosion.CorrosionPanelsDataModule"
USER_DATAMODULE = "matcv.datamodules.user_segmentation.UserSegmentationDataModule"
SIZE_KEYS = ("image_size", "crop_size", "crops_per_image")
# CorrosionPanelsDataModule's arguments that UserSegmentationDataModule takes too.
SHARED_ARGS = ("batch_size", "num_workers", "augment", "seed")
PUBLISHED_SUFFIX = "-published-split"  # the profile of a folder's own split, beside the grouped one


def adapted_config(task: str | Path, data_root: str | Path | None, image_size: int | None = None,
                   crop_size: int | None = None) -> dict | None:
    """The task YAML's content fitted to ``data_root`` and the size options, or None when it needs nothing."""
    if image_size is not None and crop_size is not None:
        raise ConfigError(f"give --image-size ({image_size}) or --crop-size ({crop_size}), not both: --image-size "
                          f"resizes every image, --crop-size trains on random crops at native resolution")
    config = TaskConfig.load(task)
    description = read_description(data_root) if data_root is not None and Path(data_root).is_dir() else None
    raw = copy.deepcopy(config.raw)
    datamodule = raw["datamodule"]
    target = datamodule.get("args", {}).get("target", "mask")
    described_masks = datamodule["class"] == CORROSION_DATAMODULE and target == "mask"
    switch = described_masks and data_root is not None and (description is not None or crop_size is not None)
    label_set = "labels" in datamodule.get("args", {}) and data_root is not None and Path(data_root).is_dir()
    published = data_root is not None and _has_split_column(Path(data_root))
    if published and not switch and not _reads_split(datamodule["class"]):
        _say_split_not_run(data_root, raw.get("task", "this"))
        published = False
    if not switch and description is None and datamodule["class"] != USER_DATAMODULE \
            and image_size is None and crop_size is None and not label_set and not published:
        return None
    if switch:
        _to_user_datamodule(raw)
    options = {"image_size": image_size, "crop_size": crop_size}
    if raw["datamodule"]["class"] == USER_DATAMODULE:
        _set_sizes(raw, description, options)
        _set_classes(raw, config.source, description)
        if data_root is not None:
            _fit_val_fraction(raw, Path(data_root))
    else:
        _set_options(raw, config.source, options)
        if label_set:
            _set_label_set(raw, config.source, Path(data_root), description)
        elif datamodule["class"] == CORROSION_DATAMODULE and not described_masks and description is not None:
            _set_labels(raw, config.source, description)
    if published:  # after the labels are set: the split is checked with the classes the task learns
        _add_published_split(raw, Path(data_root))
    return None if raw == config.raw else raw


def _set_labels(raw: dict, source: Path, description: DatasetDescription) -> None:
    """A label task (rating, ordinal) on a folder whose dataset.yaml lists ``labels``: their values are the labels
    the models learn (``ratings``) and the data check accepts (``rating_classes``), in dataset.yaml's order
    (lowest first, for ordinal models). Without ``labels`` the task keeps its own (ASTM ratings 5-9)."""
    if not description.labels:
        return
    if any(c.value is None for c in description.labels):
        raise ConfigError(f"{description.source}: the {raw.get('task', 'rating')} task learns numbered ratings; its labels must be "
                          f"whole numbers (lowest first), got {[c.name for c in description.labels]}: use the "
                          f"classification task for named labels")
    labels = [c.value for c in description.labels]
    raw["datamodule"].setdefault("args", {})["rating_classes"] = labels
    for name, entry in raw["models"].items():
        args = entry.setdefault("args", {})
        if "ratings" in inspect.signature(import_object(entry["class"]).__init__).parameters:
            if args.get("ratings") is not None and list(args["ratings"]) != labels:
                raise ConfigError(f"{source}: model {name!r} has ratings {args['ratings']!r}, but the data's "
                                  f"{description.source} lists the labels {labels}")
            args["ratings"] = labels


def _set_label_set(raw: dict, source: Path, data_root: Path, description: DatasetDescription | None) -> None:
    """A classification (a YAML whose DataModule takes ``labels``): the classes are dataset.yaml's ``labels``
    (their values, as the label column holds them), else the label column's distinct values, sorted. The
    DataModule turns each row's label into its class index (0..n-1), which the models learn (``ratings``)."""
    from matcv.datamodules.corrosion import label_classes  # reads the folder only when needed

    if description is not None and description.labels:
        labels = [c.name if c.value is None else str(c.value) for c in description.labels]
    else:
        labels = label_classes(data_root)
    if len(labels) < 2:
        raise ConfigError(f"{data_root / MANIFEST_NAME}: a classification needs at least two labels, found "
                          f"{labels}")
    args = raw["datamodule"].setdefault("args", {})
    given = args.get("labels")
    if given is not None and [str(v) for v in given] != labels:
        raise ConfigError(f"{source}: datamodule labels {given!r}, but the data at {data_root} has {labels}")
    args["labels"], args["rating_classes"] = labels, list(range(len(labels)))
    for name, entry in raw["models"].items():
        if "ratings" in inspect.signature(import_object(entry["class"]).__init__).parameters:
            entry.setdefault("args", {})["ratings"] = list(range(len(labels)))


def _has_split_column(data_root: Path) -> bool:
    manifest = data_root / MANIFEST_NAME
    return manifest.is_file() and "split" in _header(manifest)


def _reads_split(datamodule_class: str) -> bool:
    """Whether a DataModule can run a manifest's split column (its ``split`` argument takes "manifest")."""
    return "split" in inspect.signature(import_object(datamodule_class).__init__).parameters


def _add_published_split(raw: dict, data_root: Path) -> None:
    """``<profile>-published-split`` beside every profile (smoke tests aside) when the manifest has a ``split``
    column: the same models and settings on one fold, the publisher's split (a group it puts in two partitions is
    declared in that fold manifest and shown in its table's title), run as a companion profile of the grouped one.
    A split that cannot be run is said here, on stderr, and left out: it must not stop grouped CV."""
    datamodule = raw["datamodule"]
    args = {k: v for k, v in datamodule.get("args", {}).items() if k != "split"}
    try:
        import_object(datamodule["class"]).fixed_fold_manifest(data_root, **args, split="manifest")
    except ValueError as error:  # no test rows, bad split values, unreadable rows (the data check lists those)
        print(f"[matcv] the published split of {data_root} is not run as a protocol of its own: {error}",
              file=sys.stderr, flush=True)
        return
    declared = raw.get("official") is not None or raw.get("unpublished") is not None
    for name, profile in list(raw["profiles"].items()):
        split = profile.get("datamodule", {}).get("split", raw["datamodule"].get("args", {}).get("split"))
        if profile.get("smoke_test") or name.endswith(PUBLISHED_SUFFIX) or split == "manifest":
            continue
        published = {k: copy.deepcopy(v) for k, v in profile.items()
                     if k not in ("leakage_report", "companion_profiles", "augmentation_study", "val_fraction",
                                  "train_fractions")}
        published["folds"] = 1
        published.setdefault("datamodule", {})["split"] = "manifest"
        raw["profiles"][name + PUBLISHED_SUFFIX] = published
        profile.setdefault("companion_profiles", []).append(name + PUBLISHED_SUFFIX)
        if declared:
            raw.setdefault("unpublished", {})[name + PUBLISHED_SUFFIX] = "a user's own published split"


def _fit_val_fraction(raw: dict, data_root: Path) -> None:
    """A profile's validation share raised where the folder has too few groups for it: ``val_fraction`` asks for
    round(1 / val_fraction) grouped splits of each fold's training part, which a user's 6 specimens in 3 folds
    (4 training groups) cannot give at the YAML's 0.2. Raised to the smallest share that fits (at most 0.45, as
    ``folds.make_fold_manifest`` suggests), and said on stderr; a folder too small for any is left to the
    harness's message."""
    from matcv.datamodules.user_segmentation import UserSegmentationDataModule  # reads the folder only when needed

    try:
        n_groups = len(set(UserSegmentationDataModule.index_dataset(data_root)["groups"]))
    except (ValueError, OSError):  # an unreadable folder: the data check and the harness name its problems
        return
    raised = []
    for name, profile in raw["profiles"].items():
        folds, fraction = profile.get("folds"), profile.get("val_fraction")
        if profile.get("smoke_test") or not isinstance(folds, int) or not isinstance(fraction, (int, float)) \
                or not 2 <= folds <= n_groups or not 0 < fraction < 0.5:
            continue
        training_groups = n_groups - math.ceil(n_groups / folds)  # the smallest training part, folds even
        if training_groups < 2 or max(2, round(1 / fraction)) <= training_groups:
            continue
        profile["val_fraction"] = min(math.ceil(100 / training_groups) / 100, 0.45)
        raised.append(f"{name} ({folds} folds) {fraction:g} -> {profile['val_fraction']:g}")
    if raised:
        print(f"[matcv] {data_root}: {n_groups} groups leave too few training groups per fold for the profile's "
              f"grouped validation split (round(1 / val_fraction) splits); val_fraction raised: "
              f"{', '.join(raised)}", file=sys.stderr, flush=True)


def _say_split_not_run(data_root: str | Path, task: str) -> None:
    """Never silently: a task whose DataModule cannot run a manifest's split column says it ignores it."""
    print(f"[matcv] the split column of {Path(data_root) / MANIFEST_NAME} is not run as a protocol of its own for "
          f"the {task} task (its DataModule has no split argument): only grouped CV runs", file=sys.stderr,
          flush=True)


def _header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        return [c.strip() for c in next(csv.reader(handle), [])]


def _to_user_datamodule(raw: dict) -> None:
    raw["datamodule"] = {"class": USER_DATAMODULE,
                         "args": {k: v for k, v in raw["datamodule"].get("args", {}).items() if k in SHARED_ARGS}}
    raw["group_column"], raw["stratify_column"] = "group", "stratum"
    comparison = raw.get("comparison")
    if isinstance(comparison, dict):  # the panels' per-image difficulty flags and extras: not in a user's data
        raw["comparison"] = {k: v for k, v in comparison.items() if k not in ("slices", "item_values")}
    for profile in raw["profiles"].values():
        args = profile.get("datamodule", {})
        profile["datamodule"] = {k: v for k, v in args.items() if k in SHARED_ARGS or k in SIZE_KEYS}
        profile.pop("augmentation_study", None)  # Yin 2024's named photo augmentations are the panels' DataModule's


def _set_sizes(raw: dict, description: DatasetDescription | None, options: dict) -> None:
    """Every profile's input size: the command line's, else dataset.yaml's, else the profile's own."""
    chosen = {k: v for k, v in options.items() if v is not None}
    if not chosen and description is not None:
        chosen = {k: getattr(description, k) for k in ("image_size", "crop_size") if getattr(description, k)}
    base = raw["datamodule"].setdefault("args", {})
    for profile in raw["profiles"].values():
        args = profile.setdefault("datamodule", {})
        if chosen:
            for key in ("image_size", "crop_size"):
                base.pop(key, None)
                args.pop(key, None)
            args.update(chosen)
        if description is not None and description.crops_per_image is not None:
            args["crops_per_image"] = description.crops_per_image


def _set_options(raw: dict, source: Path, options: dict) -> None:
    """The size options on a DataModule other than a user folder's: only the arguments it takes."""
    datamodule = raw["datamodule"]["class"]
    accepted = inspect.signature(import_object(datamodule).__init__).parameters
    for key, value in options.items():
        if value is None:
            continue
        if key not in accepted:
            other = "crop_size" if key == "image_size" else "image_size"
            hint = f"; it takes --{other.replace('_', '-')}" if other in accepted else ""
            raise ConfigError(f"--{key.replace('_', '-')}: {datamodule} (the DataModule of {source}) has no "
                              f"{key}{hint}")
        for profile in raw["profiles"].values():
            profile.setdefault("datamodule", {})[key] = value


def _set_classes(raw: dict, source: Path, description: DatasetDescription | None) -> None:
    """``num_classes`` / ``class_names`` of the data for every model whose class takes them."""
    if description is None or not description.classes:
        return  # binary {0,1}/{0,255} masks: every segmentation model's default
    outputs, names = description.model_outputs, description.class_names
    for name, entry in raw["models"].items():
        accepted = inspect.signature(import_object(entry["class"]).__init__).parameters
        args = entry.setdefault("args", {})
        for key, value in (("num_classes", outputs), ("class_names", names)):
            if key not in accepted:
                continue
            if args.get(key) is not None and args[key] != value:
                raise ConfigError(f"{source}: model {name!r} has {key} {args[key]!r}, but the data's "
                                  f"{description.source} says {value!r}")
            args[key] = value
        if "num_classes" not in accepted:
            # A factory-built network (MedT, smp's SegFormer through FactorySegmentationTask) takes its output
            # channels from factory_args, here and in any profile override of them; the task itself follows the
            # DataModule's classes at run time.
            for holder in [args] + [profile.get("model_overrides", {}).get(name) or {}
                                    for profile in raw["profiles"].values()]:
                holder.update(_with_outputs(holder.get("factory_args"), outputs))


def _with_outputs(factory_args, outputs: int) -> dict:
    """``{"factory_args": ...}`` with its output-channel count (``num_classes``, or smp's ``classes``) set to
    ``outputs``; nothing when it names none."""
    if not isinstance(factory_args, dict):
        return {}
    keys = [key for key in ("num_classes", "classes") if key in factory_args]
    return {"factory_args": {**factory_args, **{key: outputs for key in keys}}} if keys else {}


def _preset_task(task: str | Path, data_root: str | Path | None) -> str | None:
    """The named-dataset YAML of ``task`` for a folder in a preset's layout, or None (said on stderr)."""
    from matcv.datamodules.superalloy_files import is_release

    if data_root is None or not isinstance(task, str) or not is_release(data_root):
        return None
    named = named_datasets(task).get("superalloy")
    if named is not None:
        print(f"[matcv] {data_root} is the NASA superalloy release's layout (no {MANIFEST_NAME}): read with its "
              f"preset, the {named!r} task", file=sys.stderr, flush=True)
    return named


def adapted_task(task: str | Path, data_root: str | Path | None, image_size: int | None = None,
                 crop_size: int | None = None) -> str | Path:
    """``task`` itself, or the path of its YAML fitted to the data and the size options: a file in a temporary
    folder that lives as long as this process (the harness reads it once, then keeps a copy with the runs).
    A folder in a preset's published layout (the NASA superalloy release, no manifest.csv) runs the task's YAML
    for that dataset (``segmentation-superalloy``), whose DataModule reads the layout as a manifest."""
    preset = _preset_task(task, data_root)
    if preset is not None:
        task = preset
    raw = adapted_config(task, data_root, image_size, crop_size)
    if raw is None:
        return task
    folder = Path(tempfile.mkdtemp(prefix="matcv-task-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / f"{TaskConfig.load(task).name}.yaml"
    atomic_write_text(path, "# Adapted by matcv to the data folder and the command line "
                            "(matcv.benchmarks.user_data)\n" + yaml.safe_dump(raw, sort_keys=False))
    return path
