"""Where a network's starting weights come from, loaded safely and stated in the run's record.

A model that starts from ImageNet weights competes on another footing than one trained from scratch on ~100
photos (Yin 2024, Table 1: ResNet-18 0.81 from scratch vs 0.83 pretrained), so every timm backbone and smp
encoder says where its weights came from: ``weights_facts`` -> record ``details["weights"]``::

    {"source": "none" | "imagenet-hub" | "local-file", "file": <name or None>, "sha256": <of the file or None>,
     "pretrained_on": "none" | "imagenet" | "in-domain" | "other"}

Two ways to start from weights:

* ``pretrained: imagenet``: the weights timm (or smp, for its own encoders) publishes on the Hugging Face hub.
  A file of the expected name in ``$MATCV_WEIGHTS_DIR`` is used first (no network), then the hub cache, then a
  download. With the hub unreachable (``HF_HUB_OFFLINE``, or no answer within ``HUB_TIMEOUT_S``) the model
  build fails at once with the file to place in ``$MATCV_WEIGHTS_DIR``: never a hang in a retry loop.
* ``weights_path: <file>``: a local safetensors file, or a weights-only torch state dict (read with
  ``weights_only=True``: a pickle that would run code is refused). A relative path not found from the working
  directory is looked up in ``$MATCV_WEIGHTS_DIR``. ``pretrained_on`` says what it was trained on (default
  ``other``). Keys must match exactly; only classifier-head tensors of the file may be left over.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from matcv.datamodules.core.atomic_io import sha256_file

PRETRAINED = ("none", "imagenet")
PRETRAINED_ON = ("none", "imagenet", "in-domain", "other")
WEIGHTS_DIR_ENV = "MATCV_WEIGHTS_DIR"
HUB_TIMEOUT_S = 5.0
# Heads of classifiers the file may carry and a backbone (num_classes=0) or smp encoder has not.
CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.", "last_linear.", "head_dist.", "aux_head.")


@dataclass(frozen=True)
class WeightsFacts:
    source: str = "none"
    file: str | None = None
    sha256: str | None = None
    pretrained_on: str = "none"

    def as_dict(self) -> dict:
        return asdict(self)


class HubUnreachableError(RuntimeError):
    """ImageNet weights were asked for, none is stored locally and the hub cannot be reached."""


def check_choice(pretrained: str | None, weights_path: str | None, pretrained_on: str | None) -> str:
    """The validated ``pretrained`` value; one source of weights at most."""
    pretrained = "none" if pretrained in (None, False) else str(pretrained)
    if pretrained not in PRETRAINED:
        raise ValueError(f"pretrained must be one of {PRETRAINED}, got {pretrained!r} (a local file goes in "
                         f"weights_path)")
    if pretrained != "none" and weights_path:
        raise ValueError(f"give pretrained: {pretrained} or weights_path: {weights_path}, not both")
    if pretrained_on is not None and pretrained_on not in PRETRAINED_ON:
        raise ValueError(f"pretrained_on must be one of {PRETRAINED_ON}, got {pretrained_on!r}")
    if pretrained_on is not None and not weights_path:
        raise ValueError("pretrained_on describes a weights_path file; without one it has nothing to describe")
    return pretrained


def weights_dir() -> Path | None:
    value = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(value).expanduser() if value else None


def resolve_weights_path(path: str | os.PathLike) -> Path:
    """``path`` as given (absolute, or from the working directory), else relative to ``$MATCV_WEIGHTS_DIR``."""
    given = Path(path).expanduser()
    if given.is_file():
        return given
    folder = weights_dir()
    if not given.is_absolute() and folder is not None and (folder / given).is_file():
        return folder / given
    where = f" nor in ${WEIGHTS_DIR_ENV}={folder}" if folder is not None and not given.is_absolute() else ""
    hint = "" if given.is_absolute() or folder is not None else f" (set ${WEIGHTS_DIR_ENV} to look up relative names there)"
    raise FileNotFoundError(f"weights file {path} not found{where}{hint}")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or of a weights-only torch file (a ``state_dict`` / ``model`` entry of a
    training checkpoint is unwrapped); never unpickles code."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except Exception as error:  # noqa: BLE001 - name the file whatever the parser says
            raise ValueError(f"{path}: not a readable safetensors file ({type(error).__name__}: {error})") from error
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for wrapper in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
                state = state[wrapper]
                break
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    not_tensors = [k for k, v in state.items() if not torch.is_tensor(v)]
    if not_tensors:
        raise ValueError(f"{path}: entries that are not tensors: {not_tensors[:5]}")
    return state


def _is_classifier(key: str) -> bool:
    return key.startswith(CLASSIFIER_PREFIXES)


def load_state_strictly(module: nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike,
                        what: str = "the network") -> None:
    """Copy ``state`` into ``module``: every tensor of the module must be in the file with its shape, and the file
    may have nothing else but classifier-head tensors; otherwise one error lists what is missing, unexpected and
    of another shape."""
    own = module.state_dict()
    if not any(k in own for k in state):
        raise ValueError(f"{path}: none of its tensors match {what} (file has e.g. {list(state)[:3]}, "
                         f"{what} has e.g. {list(own)[:3]})")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own and not _is_classifier(k)]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} missing (e.g. {missing[:5]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[:5]})" if unexpected else "",
                 f"{len(shapes)} of another shape (file vs model: {shapes[:3]})" if shapes else ""]
        raise ValueError(f"{path} does not fit {what}: " + "; ".join(p for p in parts if p))
    # nn.Module's own strict load: smp encoders override load_state_dict (dropping fc keys) with looser checks.
    nn.Module.load_state_dict(module, {k: state[k] for k in own}, strict=True)


def load_local_weights(module: nn.Module, weights_path: str | os.PathLike, pretrained_on: str | None,
                       what: str = "the network") -> WeightsFacts:
    path = resolve_weights_path(weights_path)
    load_state_strictly(module, read_state_dict(path), path, what)
    return WeightsFacts("local-file", path.name, sha256_file(path), pretrained_on or "other")


def hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """False when ``HF_HUB_OFFLINE`` is set or the hub's host does not accept a connection within ``timeout``."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    parsed = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def fetch_hub_file(repo_id: str, filename: str, revision: str | None, local_name: str) -> tuple[Path, str]:
    """(path, source) of a published weights file: ``$MATCV_WEIGHTS_DIR/<local_name>`` ("local-file"), else the
    hub cache or a download ("imagenet-hub"); a clear error naming the local file when the hub is unreachable."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    folder = weights_dir()
    if folder is not None and (folder / local_name).is_file():
        return folder / local_name, "local-file"
    cached = try_to_load_from_cache(repo_id, filename, revision=revision)
    if isinstance(cached, str) and Path(cached).is_file():
        return Path(cached), "imagenet-hub"
    url = f"{constants.ENDPOINT}/{repo_id}/resolve/{revision or 'main'}/{filename}"
    placed = (folder or Path(f"${WEIGHTS_DIR_ENV}")) / local_name
    advice = (f"download {url} on a machine with network access and place it as {placed} "
              f"(set {WEIGHTS_DIR_ENV} to that folder), or train from scratch with pretrained: none")
    if not hub_reachable():
        raise HubUnreachableError(f"ImageNet weights {repo_id}/{filename}: the Hugging Face hub is unreachable "
                                  f"(offline or no answer within {HUB_TIMEOUT_S:g} s) and they are not in the local "
                                  f"cache; {advice}")
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, etag_timeout=HUB_TIMEOUT_S)), "imagenet-hub"
    except Exception as error:  # noqa: BLE001 - any download failure gets the same way out
        raise HubUnreachableError(f"ImageNet weights {repo_id}/{filename} could not be downloaded "
                                  f"({type(error).__name__}: {error}); {advice}") from error


def create_timm_backbone(name: str, in_chans: int = 3, pretrained: str | None = "none",
                         weights_path: str | None = None, pretrained_on: str | None = None,
                         **kwargs) -> tuple[nn.Module, WeightsFacts]:
    """A timm feature extractor (``num_classes=0``) and where its weights came from."""
    import timm

    pretrained = check_choice(pretrained, weights_path, pretrained_on)
    if pretrained == "imagenet":
        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is None or not cfg.hf_hub_id:
            raise ValueError(f"timm publishes no hub weights for {name!r}: give a local weights_path instead")
        local_name = f"{cfg.hf_hub_id.split('/')[-1]}.safetensors"
        path, source = fetch_hub_file(cfg.hf_hub_id, "model.safetensors", None, local_name)
        # timm's own loader from that file: it drops the classifier and adapts the stem to in_chans.
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, num_classes=0,
                                  in_chans=in_chans, **kwargs)
        return model, WeightsFacts(source, path.name if source == "local-file" else local_name, sha256_file(path),
                                   "imagenet")
    model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
    if weights_path:
        return model, load_local_weights(model, weights_path, pretrained_on, f"timm backbone {name}")
    return model, WeightsFacts()


def create_smp_model(arch: str, encoder_name: str, in_channels: int, classes: int, pretrained: str | None = "none",
                     weights_path: str | None = None, pretrained_on: str | None = None,
                     **arch_kwargs) -> tuple[nn.Module, WeightsFacts]:
    """An smp model whose encoder starts from random, ImageNet or a local file's weights."""
    import segmentation_models_pytorch as smp
    from segmentation_models_pytorch.encoders import encoders as smp_encoders

    pretrained = check_choice(pretrained, weights_path, pretrained_on)
    # Weights are for 3 channels: load them first, then let smp adapt the stem as its own loader does.
    build_channels = 3 if in_channels != 3 and (pretrained != "none" or weights_path) else in_channels
    net = smp.create_model(arch, encoder_name=encoder_name, encoder_weights=None, in_channels=build_channels,
                           classes=classes, **arch_kwargs)
    timm_universal = encoder_name.startswith("tu-")
    target = net.encoder.model if timm_universal else net.encoder
    what = f"smp encoder {encoder_name}"
    if pretrained == "imagenet":
        if timm_universal:
            raise ValueError(f"{what}: pretrained: imagenet is supported for smp's own encoders and timm backbones; "
                             f"for a tu- encoder give the timm weights file as weights_path")
        settings = smp_encoders.get(encoder_name, {}).get("pretrained_settings", {}).get("imagenet")
        if settings is None:
            raise ValueError(f"smp publishes no ImageNet weights for encoder {encoder_name!r}")
        local_name = f"{settings['repo_id'].split('/')[-1]}.safetensors"
        path, source = fetch_hub_file(settings["repo_id"], "model.safetensors", settings.get("revision"), local_name)
        load_state_strictly(target, read_state_dict(path), path, what)
        facts = WeightsFacts(source, path.name if source == "local-file" else local_name, sha256_file(path),
                             "imagenet")
    elif weights_path:
        facts = load_local_weights(target, weights_path, pretrained_on, what)
    else:
        facts = WeightsFacts()
    if build_channels != in_channels:
        net.encoder.set_in_channels(in_channels, pretrained=True)
    return net, facts
