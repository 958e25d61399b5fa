"""The harness's model selection (BestWeightsInMemory): the best validation epoch's weights, written once when
training ends, as ModelCheckpoint would have written them at that epoch; nothing is written mid-run."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from matcv.benchmarks.harness.best_weights import BestWeightsInMemory

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCORES = [0.2, 0.9, 0.4, 0.6]  # the validation score of each epoch: epoch 1 is the best


class Scripted(L.LightningModule):
    """A linear model whose validation score per epoch is scripted, and which keeps a copy of its weights at the
    end of every epoch's validation."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.register_buffer("seen", torch.zeros(()))  # a buffer must come back with the weights too
        self.weights_at_epoch: list[dict] = []

    def training_step(self, batch, _):
        x, y = batch
        self.seen += 1
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch, _):
        self.log("val_score", SCORES[self.current_epoch])

    def on_validation_epoch_end(self):
        if not self.trainer.sanity_checking:
            self.weights_at_epoch.append({k: v.clone() for k, v in self.state_dict().items()})

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class FileWatcher(L.Callback):
    def __init__(self, path):
        self.path, self.seen_mid_run = path, []

    def on_train_epoch_end(self, trainer, pl_module):
        self.seen_mid_run.append(self.path.exists())


def test_the_best_epochs_weights_are_written_once_at_the_end(tmp_path):
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(16, 3), torch.randn(16, 1))
    model = Scripted()
    checkpoint = BestWeightsInMemory(dirpath=tmp_path, filename="best", monitor="val_score", mode="max")
    watcher = FileWatcher(tmp_path / "best.ckpt")
    trainer = L.Trainer(max_epochs=len(SCORES), callbacks=[checkpoint, watcher], logger=False, accelerator="cpu",
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, DataLoader(data, batch_size=4), DataLoader(data, batch_size=16))

    assert watcher.seen_mid_run == [False] * len(SCORES)  # no write while training
    assert checkpoint.best_model_path == str(tmp_path / "best.ckpt")
    assert checkpoint.best_model_score == pytest.approx(0.9)
    saved = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
    best = model.weights_at_epoch[1]
    assert set(saved["state_dict"]) == set(best)
    for name, value in best.items():
        assert torch.equal(saved["state_dict"][name], value), name
    assert not torch.equal(saved["state_dict"]["layer.weight"], model.weights_at_epoch[-1]["layer.weight"])
    assert "optimizer_states" not in saved  # weights only: runs restart from scratch
    # The module itself now holds the selected weights (what the test then loads anyway).
    assert torch.equal(model.layer.weight, best["layer.weight"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt"]
