"""A picture of what a segmentation model did on test images: photo, truth, prediction, errors."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from matcv.datamodules.core.atomic_io import save_figure  # noqa: E402


def error_overlay(image: np.ndarray, truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Photo with true positives green, false positives red (e.g. stains), false negatives blue (missed creep)."""
    out = image.astype(np.float32).copy()
    colours = {(1, 1): (0, 200, 0), (0, 1): (230, 0, 0), (1, 0): (0, 90, 255)}
    for (t, p), colour in colours.items():
        where = (truth == t) & (prediction == p)
        out[where] = 0.35 * out[where] + 0.65 * np.array(colour, np.float32)
    return out.clip(0, 255).astype(np.uint8)


def save_segmentation_examples(path: str | Path, images: list[np.ndarray], truths: list[np.ndarray],
                               probabilities: list[np.ndarray], titles: list[str], threshold: float = 0.5) -> Path:
    """One row per test image: photo | probability map | errors (green TP, red FP, blue FN)."""
    rows = len(images)
    figure, axes = plt.subplots(rows, 3, figsize=(7.5, 2.5 * rows), squeeze=False)
    for row, (image, truth, probability, title) in enumerate(zip(images, truths, probabilities, titles)):
        prediction = (probability >= threshold).astype(np.uint8)
        panels = [(image, title), (probability, "probability"), (error_overlay(image, truth, prediction),
                                                                 "TP green / FP red / FN blue")]
        for axis, (picture, label) in zip(axes[row], panels):
            axis.imshow(picture, cmap="magma" if picture.ndim == 2 else None, vmin=0, vmax=1 if picture.ndim == 2 else None)
            axis.set_title(label, fontsize=8)
            axis.axis("off")
    figure.tight_layout()
    return save_figure(path, figure, dpi=110)


# Class 1 blue and class 2 red, as the NASA superalloy masks paint secondary and tertiary precipitates.
CLASS_COLOURS = np.array([(40, 40, 40), (50, 110, 255), (230, 60, 40), (60, 200, 90), (240, 200, 40),
                          (200, 80, 220)], np.uint8)


def colour_classes(classes: np.ndarray) -> np.ndarray:
    return CLASS_COLOURS[np.asarray(classes) % len(CLASS_COLOURS)]


def save_class_map_examples(path: str | Path, images: list[np.ndarray], truths: list[np.ndarray],
                            predictions: list[np.ndarray], titles: list[str], class_names: list[str]) -> Path:
    """Multi-class: one row per test image: micrograph | true classes | predicted classes | wrong pixels."""
    rows = len(images)
    figure, axes = plt.subplots(rows, 4, figsize=(10, 2.6 * rows), squeeze=False)
    for row, (image, truth, prediction, title) in enumerate(zip(images, truths, predictions, titles)):
        wrong = image.astype(np.float32).copy()
        wrong[truth != prediction] = (255, 0, 255)
        panels = [(image, title), (colour_classes(truth), "truth"), (colour_classes(prediction), "prediction"),
                  (wrong.astype(np.uint8), "wrong pixels (magenta)")]
        for axis, (picture, label) in zip(axes[row], panels):
            axis.imshow(picture)
            axis.set_title(label, fontsize=8)
            axis.axis("off")
    legend = ", ".join(f"{name}: RGB{tuple(int(v) for v in colour_classes(i))}" for i, name in enumerate(class_names))
    figure.suptitle(legend, fontsize=7)
    figure.tight_layout(rect=(0, 0, 1, 0.985))  # keep the legend clear of the first row's titles
    return save_figure(path, figure, dpi=100)
