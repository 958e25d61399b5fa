"""A built-in run's test predictions, kept the way submissions keep theirs: ``<run folder>/predictions.npz``.

The arrays are the ones a submission's ``predictions/fold-<k>.npz`` holds (``item_ids`` + ``pred_<i>``, and
whatever else the task's scorer reads), produced by the same code: the recording mixin of the task's submission
adapter (``matcv.benchmarks.submission.models``, named by the task YAML's ``submission`` block). Nothing is
pickled, so ``matcv verify`` (``matcv.leaderboard.verify``) reads the file with ``allow_pickle=False`` and
rescores it with the task's scorer, without the model's code.

The run's record says where the file is: ``record["predictions"] = {"path": <relative to the benchmark
folder>, "sha256", "bytes"}``; ``None`` with ``record["predictions_error"]`` when they could not be kept (the
run's metrics are kept all the same); no key at all when the task YAML declares no ``submission`` block.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from matcv.benchmarks.submission.models import adapter_from
from matcv.datamodules.core.atomic_io import atomic_write_bytes, sha256_bytes
from matcv.datamodules.core.config import TaskConfig, import_object

PREDICTIONS_FILE = "predictions.npz"

_recording_classes: dict[tuple[type, type], type] = {}


def recording_class(mixin: type, model_class: type) -> type:
    """``model_class`` with the adapter's recording mixin in front (made once per pair)."""
    key = (mixin, model_class)
    if key not in _recording_classes:
        _recording_classes[key] = type(f"Recording{model_class.__name__}", (mixin, model_class),
                                       {"__module__": model_class.__module__,
                                        "__qualname__": f"Recording{model_class.__qualname__}"})
    return _recording_classes[key]


@dataclass
class PredictionRecording:
    """The test predictions of one run: ``start`` before the test, ``save`` after it. ``problem``: why the
    model cannot record them (the record then says so)."""

    problem: str | None = None

    @classmethod
    def start(cls, model, config: TaskConfig) -> PredictionRecording | None:
        """Make ``model`` record its test predictions, as a submitted model of its task does: its class becomes
        the same class with the task's recording mixin in front (nothing else of the model changes). None for a
        task YAML without a ``submission`` block (nothing is recorded, nothing said).

        Called just before the test, after any fit: a spawned DDP fit (``--devices N``) pickles the model by
        its class's name, which a class made at run time does not have in the spawned processes."""
        modules = config.submission
        if modules is None:
            return None
        try:
            adapter = adapter_from(modules)
            mixin = import_object(adapter.recording_mixin)
            base = import_object(adapter.evaluation_base)
        except Exception as error:  # noqa: BLE001 - a broken adapter must not fail the run
            return cls(f"the task's submission adapter could not be loaded ({type(error).__name__}: {error})")
        if isinstance(model, mixin):  # a submission's model records already
            return cls()
        if not isinstance(model, base):
            return cls(f"{type(model).__name__} is not a {base.__name__} subclass ({adapter.evaluation_base}), "
                       f"the class whose test predictions the task's recording mixin keeps")
        model.__class__ = recording_class(mixin, type(model))
        return cls()

    def save(self, model, run_dir: Path, benchmark_folder: Path, test_ids: list[str]) -> dict:
        """Write the tested model's ``submission_arrays()`` to ``run_dir/predictions.npz`` (atomically) and
        return what the record says of them: ``{"predictions": {"path", "sha256", "bytes"}}``, or, when they
        cannot be kept, ``{"predictions": None, "predictions_error": reason}`` with a warning. Never raises
        (but for Ctrl-C): a run's metrics are worth keeping without its predictions."""
        try:
            if self.problem is not None:
                raise RuntimeError(self.problem)
            arrays = model.submission_arrays()
            recorded = arrays["item_ids"].tolist()
            if sorted(recorded) != sorted(test_ids):
                missing = sorted(set(test_ids) - set(recorded))
                raise RuntimeError(f"recorded predictions for {len(recorded)} items, the fold has {len(test_ids)} "
                                   f"test items ({len(missing)} missing, e.g. {missing[:2]})")
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **arrays)
            data = buffer.getvalue()
            path = atomic_write_bytes(Path(run_dir) / PREDICTIONS_FILE, data)
            return {"predictions": {"path": _relative(path, benchmark_folder), "sha256": sha256_bytes(data),
                                    "bytes": len(data)}}
        except Exception as error:  # noqa: BLE001 - see the docstring
            reason = f"{type(error).__name__}: {error}"
            warnings.warn(f"test predictions of {_relative(Path(run_dir), benchmark_folder)} not kept: {reason}",
                          stacklevel=2)
            return {"predictions": None, "predictions_error": reason}


def _relative(path: Path, folder: Path) -> str:
    """``path`` relative to the benchmark folder (the folder can move), or as it is when outside it."""
    try:
        return Path(path).resolve().relative_to(Path(folder).resolve()).as_posix()
    except ValueError:
        return str(path)
