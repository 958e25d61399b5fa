"""Shared fixtures: a tiny segmentation task config that trains in seconds on a CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

# The shared test data beside the repository (a user's clone has none: the tests that need it skip).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SHARED_SUPERALLOY = SHARED_DATA / "nasa-pretrained-microscopy-models" / "benchmark_segmentation_data"


def tiny_task_config(tmp_path: Path, models: dict | None = None, folds: int = 3, max_epochs: int = 2,
                     n_panels: int = 9) -> Path:
    """Write a task YAML for the corrosion data at 32 px with tiny models; return its path."""
    unet = {"class": "matcv.lightning_modules.segmentation.SmpSegmentationTask",
            "args": {"arch": "unet", "encoder_name": "resnet18", "lr": 3.0e-3,
                     "arch_kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}}}
    config = {
        "task": "segmentation",
        "datamodule": {"class": "matcv.datamodules.corrosion.CorrosionPanelsDataModule", "args": {"target": "mask"}},
        "group_column": "panel_id",
        "stratify_column": "rating",
        "metrics": ["dice", "iou"],
        "models": models if models is not None else {
            "tiny-unet": unet,
            "predict-nothing": {"class": "matcv.lightning_modules.segmentation.ConstantMaskBaseline", "args": {"value": 0}},
            "predict-everything": {"class": "matcv.lightning_modules.segmentation.ConstantMaskBaseline", "args": {"value": 1}},
        },
        "profiles": {"quick": {
            "folds": folds, "val_fraction": 0.25, "seed": 0,
            "generator": {"n_panels": n_panels, "photos_per_panel": 2, "image_size": 32},
            "datamodule": {"image_size": 32, "batch_size": 4},
            "trainer": {"max_epochs": max_epochs},
        }},
    }
    path = tmp_path / "tiny_segmentation.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Generated datasets go to one per-session temporary cache, never into the project folder; W&B is off
    (each W&B run costs seconds) except in tests/test_wandb_logging.py, which turns it on for itself.

    Session-scoped so that it is in place before module-scoped fixtures generate data.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MATCV_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "matcv-cache"))
        patch.setenv("MATCV_WANDB", "off")
        # matcv itself knows no data outside the repository; the tests point it at the shared copy of the NASA
        # superalloy release where the test machine has one (the tests that need it skip otherwise).
        if SHARED_SUPERALLOY.is_dir() and not os.environ.get("MATCV_SUPERALLOY_ROOT"):
            patch.setenv("MATCV_SUPERALLOY_ROOT", str(SHARED_SUPERALLOY))
        yield


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module of tiny models (restored afterwards). On a small shared CPU two
    threads that compete with any other process slow such models down up to 10x. Use it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_rating_config(tmp_path: Path, models: dict, image_size: int = 64, max_epochs: int = 1,
                       n_panels: int = 10, augmentation: str = "combination") -> Path:
    """A rating-task YAML on tiny generated photos (ratings 5..9, 2 photos per panel)."""
    config = {
        "task": "rating",
        "datamodule": {"class": "matcv.datamodules.corrosion.CorrosionPanelsDataModule",
                       "args": {"target": "rating", "augmentation": augmentation}},
        "group_column": "panel_id",
        "stratify_column": "rating",
        "metrics": ["accuracy", "macro_f1", "qwk", "mae", "within_1"],
        "models": models,
        "profiles": {"quick": {
            "folds": 2, "val_fraction": 0.34, "seed": 0,
            "generator": {"n_panels": n_panels, "photos_per_panel": 2, "image_size": image_size},
            "datamodule": {"image_size": image_size, "batch_size": 4},
            "trainer": {"max_epochs": max_epochs},
        }},
    }
    path = tmp_path / "tiny_rating.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
