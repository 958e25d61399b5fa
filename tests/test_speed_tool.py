"""The training-speed tool runs end to end and reports every phase of a harness fit (numbers are never asserted:
speed is measured by the tool, not by tests)."""

from __future__ import annotations

import re

import pytest

from matcv.benchmarks.speed.training_speed import PHASES, batch_length, main, phase_seconds

pytestmark = [pytest.mark.usefixtures("one_torch_thread")]


def test_phases_group_the_profilers_actions_and_the_rest_is_the_wall_time_left():
    durations = {
        "[_TrainingEpochLoop].train_dataloader_next": [0.5, 0.5],
        "[_EvaluationLoop].val_next": [0.25],
        "[Strategy]SingleDeviceStrategy.batch_to_device": [0.25],
        "[Strategy]SingleDeviceStrategy.training_step": [1.0, 1.0],
        "[LightningModule]RatingTask.optimizer_step": [3.0, 3.0],  # holds training_step and backward
        "[LightningModule]RatingTask.optimizer_zero_grad": [0.5],
        "[Strategy]SingleDeviceStrategy.validation_step": [2.0],
        "save_checkpoint": [1.0],  # inside the hook below: not counted twice
        "[Callback]ModelCheckpoint{'monitor': 'val_qwk'}.on_validation_end": [1.5],
        "run_training_epoch": [99.0],  # an enclosing action: in no phase
    }
    phases = phase_seconds(durations, wall=20.0)
    assert list(phases) == list(PHASES)
    assert phases["data loading"] == pytest.approx(1.5)
    assert phases["forward (training_step)"] == pytest.approx(2.0)
    assert phases["backward + optimizer"] == pytest.approx(4.5)
    assert phases["validation"] == pytest.approx(2.0)
    assert phases["checkpointing"] == pytest.approx(1.5)
    assert phases["logging + loop (rest)"] == pytest.approx(20.0 - 11.5)


def test_batch_length_counts_the_images_of_dict_and_tuple_batches():
    import torch

    assert batch_length({"item_id": ["a", "b", "c"], "image": torch.zeros(3, 1, 4, 4)}) == 3
    assert batch_length((torch.zeros(2, 5), torch.zeros(2))) == 2
    with pytest.raises(TypeError, match="no tensor"):
        batch_length({"item_id": ["a"]})


def test_breakdown_fits_one_tiny_epoch_and_prints_every_phase_and_the_ratio(tmp_path, capsys):
    main(["--task", "rating", "--profile", "tiny", "--breakdown", "--models", "resnet18", "--epochs", "1",
          "--output", str(tmp_path)])
    out = capsys.readouterr().out
    for phase in PHASES:
        assert re.search(rf"^  {re.escape(phase)}\s+\d+\.\d\d\s+\d+\.\d%$", out, re.M), f"no line for {phase}:\n{out}"
    assert re.search(r"harness fit \(wall\)\s+\d+\.\d\d\s+\d+\.\d training images/s", out)
    assert re.search(r"bare PyTorch loop\s+\d+\.\d\d\s+\d+\.\d training images/s", out)
    assert re.search(r"harness / bare = \d+\.\d\dx", out)
    metrics = re.search(r"per-epoch log of the harness fit: (\S+)", out).group(1)
    header = open(metrics).readline()
    assert "val_qwk" in header and "train_loss" in header  # the harness's CSVLogger wrote the epoch


def test_shorten_epochs_cuts_every_stage_the_model_runs_itself():
    from matcv.benchmarks.speed.training_speed import shorten_epochs

    args = {"backbone": "resnet18", "seg_max_epochs": 20, "pretraining": {"method": "pirl", "epochs": 5, "lr": 1e-3}}
    short, name = shorten_epochs(args, 1)
    assert short == {"backbone": "resnet18", "seg_max_epochs": 1, "pretraining": {"method": "pirl", "epochs": 1,
                                                                                  "lr": 1e-3}}
    assert name == "seg_max_epochs" and args["pretraining"]["epochs"] == 5  # the config itself is untouched
    assert shorten_epochs({"lr": 1e-3}, 1) == ({"lr": 1e-3}, None)
