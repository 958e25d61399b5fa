"""What ``matcv submit`` runs (kept apart so that the CLI does not import torch to parse arguments): the model
class for a submitted reference, and the recording of its test predictions.

``submit.py`` imports this module (lazily), never the other way round. Per task an adapter module
(``benchmarks/submission/adapters/<task>.py``, named by the task YAML's ``submission.adapter``) defines
``ADAPTER``:
  * ``evaluation_base``: the class a submitted LightningModule must subclass (the harness's scoring contract);
  * ``recording_mixin``: a ``RecordsSubmission`` subclass whose ``submission_arrays()`` returns the arrays of
    the fold's ``.npz`` (``item_ids`` + ``pred_<i>``, and whatever else the task's scorer reads), in the exact
    form ``leaderboard/scorers/<task>.py`` scores;
  * ``factory_model``: the LightningModule that trains the ``nn.Module`` a factory returns: the task's
    ``matcv.lightning_modules.factory_tasks`` class with the recording mixin (None where a task has no
    single-network form, e.g. GANs: there only LightningModule classes are accepted).
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback

from matcv.datamodules.core.config import SubmissionModules, import_object, submission_modules
from matcv.datamodules.core.submission_format import TRAINING_KEYS, SubmissionError


class PredictionRecorder(Callback):
    """Keeps the arrays the tested module's ``submission_arrays()`` returns at the end of a test."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] | None = None

    def on_test_start(self, trainer, pl_module) -> None:
        self.arrays = None

    def on_test_end(self, trainer, pl_module) -> None:
        self.arrays = pl_module.submission_arrays()


RECORDER = PredictionRecorder()  # one submission at a time per process


class RecordsOwnArrays:
    """Mixin for a task whose evaluation class defines ``submission_arrays()`` itself: attach ``RECORDER``."""

    def configure_callbacks(self):
        own = super().configure_callbacks()
        own = list(own) if isinstance(own, (list, tuple)) else ([own] if own else [])
        return own + [RECORDER]


class RecordsSubmission(RecordsOwnArrays):
    """Mixin of an adapter module: attach ``RECORDER``; the task's subclass defines ``submission_arrays()``."""

    def submission_arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError(f"{type(self).__name__} must define submission_arrays()")


def prediction_arrays(item_ids: list[str], predictions: list[np.ndarray], dtype) -> dict[str, np.ndarray]:
    """The common layout: ``item_ids`` and one ``pred_<i>`` per item, in that order."""
    arrays = {"item_ids": np.array(item_ids, dtype=str)}
    arrays.update({f"pred_{i:05d}": np.asarray(p, dtype=dtype) for i, p in enumerate(predictions)})
    return arrays


@dataclass(frozen=True)
class TaskAdapter:
    evaluation_base: str
    recording_mixin: str
    factory_model: str | None
    factory_contract: str  # what a factory's nn.Module must do, for the error messages


def adapter_for(task: str) -> TaskAdapter:
    """The ``ADAPTER`` of the module the task's YAML declares under ``submission.adapter``; for a task that
    names its ``submission.evaluation_base`` instead, an adapter accepting subclasses of that class, which
    record their own ``submission_arrays()``."""
    modules = submission_modules()
    if task not in modules:
        raise SubmissionError(f"submissions for task {task!r} are not supported "
                              f"(supported: {', '.join(modules)})")
    return adapter_from(modules[task])


def adapter_from(modules: SubmissionModules) -> TaskAdapter:
    if modules.adapter is not None:
        return importlib.import_module(modules.adapter).ADAPTER
    return TaskAdapter(evaluation_base=modules.evaluation_base, recording_mixin=f"{__name__}.RecordsOwnArrays",
                       factory_model=None,
                       factory_contract=f"a {modules.evaluation_base} subclass (LightningModule classes only)")


def model_class(task: str, reference: str, hyperparameters: dict) -> tuple[str, dict, str]:
    """(class reference for the harness, its args, kind) of a factory or LightningModule class reference."""
    adapter = adapter_for(task)
    target = import_object(reference)
    extra = {k: v for k, v in hyperparameters.items() if k not in TRAINING_KEYS}
    if isinstance(target, type) and issubclass(target, L.LightningModule):
        base = import_object(adapter.evaluation_base)
        if not issubclass(target, base):
            raise SubmissionError(f"{reference} is a LightningModule but not a {base.__name__} subclass "
                                  f"({adapter.evaluation_base}): its test predictions could not be recorded and "
                                  f"scored")
        # The class itself plus the recording mixin, registered here so that the harness can import it.
        attribute = "Submitted_" + re.sub(r"\W", "_", reference)
        mixin = import_object(adapter.recording_mixin)
        globals()[attribute] = type(attribute, (mixin, target), {"__module__": __name__})
        # lr / weight_decay go to the class when its __init__ takes them (max_epochs and batch_size are the
        # harness's, never the model's).
        accepted = inspect.signature(target.__init__).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
        extra.update({k: hyperparameters[k] for k in ("lr", "weight_decay")
                      if k in hyperparameters and (k in accepted or takes_any)})
        return f"{__name__}.{attribute}", extra, "lightning_module"
    if callable(target):
        if adapter.factory_model is None:
            raise SubmissionError(f"{reference} is not a LightningModule class: task {task!r} accepts only "
                                  f"LightningModule classes subclassing {adapter.evaluation_base}")
        args = {"factory": reference, "factory_args": extra,
                **{k: hyperparameters[k] for k in ("lr", "weight_decay") if k in hyperparameters}}
        return adapter.factory_model, args, "factory"
    raise SubmissionError(f"{reference} is neither a factory (callable) nor a LightningModule class")
