"""Model selection on the validation part without a file per improvement: the best epoch's weights are kept in
memory and written once, as ``best.ckpt``, when training ends.

Why not Lightning's ``ModelCheckpoint`` as it is: it writes a checkpoint every time the monitored score improves
(45 MB for a ResNet-18 rater, every few epochs early on), and the harness never resumes from a mid-run
checkpoint (a run killed half way is redone from scratch, ``runner``), so those writes are cost only: on a short
CPU run they were most of the harness's overhead over a bare training loop (docs/running.md, "Where the
time goes"). This subclass keeps ModelCheckpoint's selection (monitor, mode, ``best_model_path``,
``best_model_score``, the score handed back after a spawned DDP fit) and changes only when the file is written.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint


class BestWeightsInMemory(ModelCheckpoint):
    """Top-1, weights-only model selection (``ModelCheckpoint``'s) whose checkpoint file is written once, at the
    end of training, with the best epoch's weights (a CPU copy of the state dict taken at each improvement)."""

    def __init__(self, **kwargs):
        super().__init__(save_top_k=1, save_last=False, save_weights_only=True, **kwargs)
        self._best_state: dict[str, torch.Tensor] | None = None
        self._best_path: str | None = None

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        # A copy: the live tensors go on training. On the CPU, so GPU memory holds one model, not two.
        state = trainer.lightning_module.state_dict()
        self._best_state = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
        self._best_path = filepath
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath

    def _remove_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        # Nothing was written mid-run; a file of that name is an earlier fit's, which must not be deleted here.
        return None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write the best epoch's weights as a normal Lightning checkpoint (every rank takes part: the strategy
        writes it on rank 0). The module is left holding those weights, which the test loads anyway."""
        super().on_train_end(trainer, pl_module)
        if self._best_state is None:
            return
        pl_module.load_state_dict(self._best_state)
        trainer.save_checkpoint(self._best_path, weights_only=True)
        self._best_state = None
