"""What the benchmark harness asks of every model it runs: ``BenchmarkModule``.

A task's YAML names models by dotted class path; the harness builds each one, trains it (or not), tests it on
the fold's held-out part and writes one record. Every evaluation base of a task (``SegmentationEvaluation``,
``RatingEvaluation``, ``LocalizationEvaluation``, ``GenerativeEvaluation``, ``AlloyEvaluation``) subclasses
this class, so scoring code is shared between trained networks and baselines, and the harness calls the
hooks below instead of probing for them. The data side of the contract is
``matcv.datamodules.base.BenchmarkDataModule``.

The order in which the harness uses a model, for one model x fold run:

1. ``L.seed_everything(run seed)``, the DataModule and then the model are built (that order fixes the
   parameter initialisation), and ``datamodule.setup("fit")`` runs.
2. ``set_input_normalization_from(datamodule)``, then ``prepare_from_training_data(datamodule)``: what the
   training part of the fold tells the model before any fitting (channel statistics, target statistics, a
   condition normaliser, a feature extractor). Only the training part may be read here.
3. If ``requires_training``: a Lightning ``Trainer.fit`` with a checkpoint on ``monitor`` / ``mode``
   (validation only, never test); with several devices DDP is told ``ddp_find_unused_parameters``.
4. ``fit_baseline(datamodule)``: fitting done outside Lightning (scikit-learn, closed-form, procedures).
5. ``Trainer.test`` on one device (from the best checkpoint when one was trained); the model fills
   ``test_results`` with one dict per test item, each with its ``"item_id"``.
6. ``test_summary()``: fold-level metrics that are not means over items (kappa, pooled R², FID, ...);
   any metric it does not give is the mean of the per-item values.
7. ``test_details()``: JSON-able extras for the record (e.g. the fold's confusion matrix), or None.
8. ``save_test_figure(path, datamodule)``: a picture of the test predictions, or None.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L


class BenchmarkModule(L.LightningModule):
    """The harness contract of a model (the module docstring gives the order of the calls).

    Class attributes a subclass sets:
      ``monitor``, ``mode``: the validation metric (logged by ``validation_step``) that selects the checkpoint,
        and whether lower ("min") or higher ("max") is better.
      ``requires_training``: False for a model that no Trainer fits (a baseline fitted by ``fit_baseline`` or
        needing no fitting at all); the harness then tests it directly.
      ``ddp_find_unused_parameters``: True when some parameters get no gradient in a step (DDP must know).

    Every hook has a default that does nothing, so a model implements only what it needs.
    """

    monitor: str = "val_loss"
    mode: str = "min"
    requires_training: bool = True
    ddp_find_unused_parameters: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.test_results: list[dict] = []  # one dict per test item: {"item_id": ..., <metric>: ...}

    def set_input_normalization_from(self, datamodule) -> None:
        """Store the training part's input statistics, for a model that carries them with its weights so new
        images can be standardised as the training images were. Called before ``prepare_from_training_data``."""

    def prepare_from_training_data(self, datamodule) -> None:
        """Learn what the training part of the fold tells the model before fitting (e.g. target statistics).
        Only the training part may be read: anything taken from validation or test would leak."""

    def fit_baseline(self, datamodule) -> None:
        """Fit a model outside Lightning on the fold's training part (called after the Trainer's fit, if any)."""

    def test_summary(self) -> dict[str, float]:
        """Fold-level test metrics that are not means over the test items."""
        return {}

    def test_details(self) -> dict | None:
        """JSON-able extras of the test for the run's record, or None for none."""
        return None

    def save_test_figure(self, path: Path, datamodule) -> Path | None:
        """Write a picture of the test predictions to ``path``; the path written, or None for no figure."""
        return None
