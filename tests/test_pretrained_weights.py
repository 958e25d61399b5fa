"""Starting weights of timm backbones and smp encoders: local files load exactly, their facts reach the record,
bad files and an unreachable hub fail at build with a message that says what to do."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from matcv.datamodules.core.atomic_io import sha256_file
from matcv.lightning_modules import pretrained_weights
from matcv.lightning_modules.rating import RatingTask
from matcv.lightning_modules.segmentation import SmpSegmentationTask

TINY_UNET = {"arch": "unet", "encoder_name": "resnet18",
             "arch_kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}}


@pytest.fixture()
def resnet_files(tmp_path):
    """A resnet18 classifier's weights (with its fc head, as published files have) as safetensors and as .pt."""
    torch.manual_seed(7)
    state = {k: v.contiguous() for k, v in timm.create_model("resnet18", num_classes=10).state_dict().items()}
    save_file(state, str(tmp_path / "resnet18.safetensors"))
    torch.save(state, tmp_path / "resnet18.pt")
    return state, tmp_path


@pytest.mark.parametrize("name", ["resnet18.safetensors", "resnet18.pt"])
def test_local_file_loads_exactly_and_is_stated(resnet_files, name):
    state, folder = resnet_files
    torch.manual_seed(0)
    model = RatingTask(backbone="resnet18", weights_path=str(folder / name), pretrained_on="in-domain")
    loaded = model.backbone.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)  # every backbone tensor is the file's
    details = model.weights_facts.as_dict()
    assert details == {"source": "local-file", "file": name, "sha256": sha256_file(folder / name),
                       "pretrained_on": "in-domain"}
    assert "weights_path" not in model.hparams  # a checkpoint rebuilds without the file


def test_relative_name_found_in_weights_dir_and_default_pretrained_on(resnet_files, monkeypatch):
    _, folder = resnet_files
    monkeypatch.setenv("MATCV_WEIGHTS_DIR", str(folder))
    model = RatingTask(backbone="resnet18", weights_path="resnet18.safetensors")
    assert model.weights_facts.pretrained_on == "other" and model.weights_facts.source == "local-file"
    assert RatingTask(backbone="resnet18").weights_facts.as_dict() == {
        "source": "none", "file": None, "sha256": None, "pretrained_on": "none"}


def test_missing_and_mismatched_files_are_named(resnet_files, tmp_path, monkeypatch):
    _, folder = resnet_files
    monkeypatch.delenv("MATCV_WEIGHTS_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="nothere.safetensors"):
        RatingTask(backbone="resnet18", weights_path=str(tmp_path / "nothere.safetensors"))
    with pytest.raises(ValueError, match=r"does not fit timm backbone resnet34: .*missing"):
        RatingTask(backbone="resnet34", weights_path=str(folder / "resnet18.safetensors"))
    extra = {k: v.contiguous() for k, v in timm.create_model("resnet18", num_classes=0).state_dict().items()}
    extra["adapter.weight"] = torch.zeros(3)
    save_file(extra, str(tmp_path / "extra.safetensors"))
    with pytest.raises(ValueError, match=r"1 unexpected \(e.g. \['adapter.weight'\]\)"):
        RatingTask(backbone="resnet18", weights_path=str(tmp_path / "extra.safetensors"))
    with pytest.raises(ValueError, match="pretrained must be one of"):
        RatingTask(backbone="resnet18", pretrained="imagenet21k")
    with pytest.raises(ValueError, match="not both"):
        RatingTask(backbone="resnet18", pretrained="imagenet", weights_path=str(folder / "resnet18.pt"))


def test_code_in_a_weights_file_is_refused(tmp_path):
    torch.save({"conv1.weight": torch.zeros(1), "hook": print}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="(?i)weights only|unsupported global"):
        RatingTask(backbone="resnet18", weights_path=str(tmp_path / "evil.pt"))


@pytest.mark.parametrize("build, expected", [
    (lambda: RatingTask(backbone="resnet18", pretrained="imagenet"), "resnet18.a1_in1k.safetensors"),
    (lambda: SmpSegmentationTask(**TINY_UNET, pretrained="imagenet"), "resnet18.imagenet.safetensors"),
])
def test_imagenet_with_the_hub_unreachable_fails_at_build_naming_the_file(build, expected, tmp_path, monkeypatch):
    monkeypatch.setenv("MATCV_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(pretrained_weights, "hub_reachable", lambda timeout=0: False)  # whatever this machine has
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)  # nor a cached copy
    with pytest.raises(pretrained_weights.HubUnreachableError, match=str(tmp_path / expected)):
        build()


def test_imagenet_file_placed_locally_is_used_without_the_hub(tmp_path, monkeypatch):
    """The offline way out that the error names: timm's own loader reads the placed file (dropping its head)."""
    torch.manual_seed(3)
    state = {k: v.contiguous() for k, v in timm.create_model("resnet18").state_dict().items()}
    save_file(state, str(tmp_path / "resnet18.a1_in1k.safetensors"))
    monkeypatch.setenv("MATCV_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(pretrained_weights, "hub_reachable", lambda timeout=0: pytest.fail("asked the hub"))
    model = RatingTask(backbone="resnet18", pretrained="imagenet")
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])
    assert model.weights_facts.as_dict() == {"source": "local-file", "file": "resnet18.a1_in1k.safetensors",
                                             "sha256": sha256_file(tmp_path / "resnet18.a1_in1k.safetensors"),
                                             "pretrained_on": "imagenet"}


def test_smp_encoder_from_a_local_file_in_details(tmp_path):
    torch.manual_seed(1)
    source = SmpSegmentationTask(**TINY_UNET)
    save_file({k: v.contiguous() for k, v in source.net.encoder.state_dict().items()}, str(tmp_path / "enc.safetensors"))
    torch.manual_seed(2)
    loaded = SmpSegmentationTask(**TINY_UNET, weights_path=str(tmp_path / "enc.safetensors"), pretrained_on="imagenet")
    for name, tensor in source.net.encoder.state_dict().items():
        assert torch.equal(tensor, loaded.net.encoder.state_dict()[name]), name
    assert loaded.test_details()["weights"]["sha256"] == sha256_file(tmp_path / "enc.safetensors")
    assert loaded.test_details()["weights"]["pretrained_on"] == "imagenet"


@pytest.mark.parametrize("backbone, file, size_args, same", [
    ("vit_tiny_patch16_224", "vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors", {"img_size": 64},
     "blocks.0.attn.qkv.weight"),
    ("swin_tiny_patch4_window7_224", "swin_tiny_patch4_window7_224.ms_in1k.safetensors",
     {"img_size": 64, "window_size": 8}, "layers.0.blocks.0.attn.qkv.weight"),
])
def test_imagenet_transformers_load_at_another_image_and_window_size(backbone, file, size_args, same, tmp_path,
                                                                     monkeypatch):
    """The pretrained ViT/Swin raters use the published 224-px (window 7) weights at the profile's size: timm's
    loader resamples ViT's position embeddings and Swin's relative-position tables; the other weights are the
    file's, unchanged."""
    torch.manual_seed(5)
    state = {k: v.contiguous() for k, v in timm.create_model(backbone).state_dict().items()}
    save_file(state, str(tmp_path / file))
    monkeypatch.setenv("MATCV_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(pretrained_weights, "hub_reachable", lambda timeout=0: pytest.fail("asked the hub"))
    model = RatingTask(backbone=backbone, pretrained="imagenet", lr=1e-4, backbone_args=size_args)
    assert torch.equal(model.backbone.state_dict()[same], state[same])
    assert model.weights_facts.as_dict()["pretrained_on"] == "imagenet"
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape[0] == 2
    if backbone.startswith("vit"):  # 4 x 4 patches + the class token, resampled from 14 x 14 + 1
        assert model.backbone.pos_embed.shape[1] == 17 and state["pos_embed"].shape[1] == 197


def test_a_local_weights_run_is_recorded_with_its_sha256_in_its_own_track(tmp_path, monkeypatch):
    """Through `matcv bench`: rating.yaml's ImageNet twin of resnet18 with its file placed in MATCV_WEIGHTS_DIR
    (no hub); the record carries the file's sha256 and the table puts the row in the ImageNet track, apart from
    the from-scratch twin."""
    import json

    import yaml

    from matcv.benchmarks.cli import main
    from matcv.datamodules.core.config import TaskConfig

    torch.manual_seed(3)
    state = {k: v.contiguous() for k, v in timm.create_model("resnet18").state_dict().items()}
    weights = tmp_path / "weights" / "resnet18.a1_in1k.safetensors"
    weights.parent.mkdir()
    save_file(state, str(weights))
    monkeypatch.setenv("MATCV_WEIGHTS_DIR", str(weights.parent))
    monkeypatch.setattr(pretrained_weights, "hub_reachable", lambda timeout=0: False)
    raw = TaskConfig.load("rating").raw
    raw["profiles"] = {"local": {"folds": 2, "val_fraction": 0.25, "seed": 0,
                                 "generator": {"n_panels": 8, "photos_per_panel": 2, "image_size": 64},
                                 "datamodule": {"image_size": 64, "batch_size": 4}, "trainer": {"max_epochs": 1},
                                 "models": ["resnet18", "resnet18-imagenet"]}}
    raw["official"], raw["unpublished"] = [], {"local": "a test profile"}
    task = tmp_path / "rating.yaml"
    task.write_text(yaml.safe_dump(raw))
    code = main(["bench", "--task", str(task), "--profile", "local", "--output", str(tmp_path / "runs"),
                 "--leaderboard-dir", str(tmp_path / "board"), "--accelerator", "cpu", "--no-progress",
                 "--no-wandb"])
    assert code == 0
    records = [json.loads(line) for folder in (tmp_path / "runs" / "rating").glob("*/local")
               for line in (folder / "records.jsonl").read_text().splitlines()]
    pretrained = [r for r in records if r["model"] == "resnet18-imagenet"]
    assert len(pretrained) == 2 and all(r["status"] == "ok" for r in records)
    for record in pretrained:
        assert record["details"]["weights"] == {"source": "local-file", "file": weights.name,
                                                "sha256": sha256_file(weights), "pretrained_on": "imagenet"}
    table = next((tmp_path / "board").glob("rating__*__local.md")).read_text()
    rows = {line.split("|")[2].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert rows["resnet18-imagenet"].rstrip(" |").endswith("pretrained (ImageNet)")
    assert rows["resnet18"].rstrip(" |").endswith("from scratch")
