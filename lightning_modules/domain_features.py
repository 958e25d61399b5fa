"""FID-domain / KID-domain: Fréchet and kernel distances in the features of a CNN trained on the task's data.

Why not Inception FID: torch-fidelity downloads its Inception-v3 weights at first use, and this project runs
offline; Inception features of ImageNet photos are also a poor description of grey SEM micrographs or Potts
grain maps. As Yin 2024 did for its FID (Part IV, Table 8: Inception fine-tuned on the training alloys;
details in docs/tasks/microstructure.md), a small CNN (``DomainFeatureNet``) is trained on the
task's *train split* to predict the items' integer labels (generator setting, microconstituent, ...); its
globally pooled features replace Inception's pool3 features. The metrics are named ``fid_domain`` /
``kid_domain`` so nobody compares them with published Inception FIDs.

* ``train_domain_extractor`` is deterministic from its seed on the CPU (seeded init, shuffling and flips /
  rot90 augmentation, without touching the global RNG), and ``cached_domain_extractor`` keys the weights
  file by a hash of the training images, labels and arguments: every model scored on one fold uses the
  identical extractor, so their FID-domain numbers are comparable.
* Weights files hold only tensors and plain metadata and are read with ``torch.load(weights_only=True)``:
  a file carrying any other pickle payload is refused, never unpickled.
* ``DomainFeatureExtractor`` is registered in torch-fidelity as ``"matcv-domain"``; torch-fidelity
  constructs it with ``feature_extractor_weights_path`` and feeds it uint8 (B, C, H, W) batches.
* ``inception_fid`` gives literature-comparable FID/KID from a *local* Inception weights file. torch-fidelity's
  own ``inception-v3-compat`` reads that file with ``torch.load(weights_only=False)``; the subclass registered
  here as ``"matcv-inception-v3-compat"`` reads it weights-only first and hands torch-fidelity a re-serialised
  copy of the tensors, so the same network runs without unpickling the user's file.

torch-fidelity is always called with ``cache=False`` (nothing written under ``~/.cache/torch``),
``save_cpu_ram=True`` (no DataLoader worker processes) and ``verbose=False``; it never downloads anything
because both extractors refuse to run without a weights path.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torch_fidelity
from torch import nn
from torch.utils.data import Dataset
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from matcv.datamodules.core.atomic_io import atomic_write_bytes
from matcv.datamodules.microstructure_images import to_uint8

DOMAIN_EXTRACTOR_NAME = "matcv-domain"
INCEPTION_EXTRACTOR_NAME = "matcv-inception-v3-compat"
EXTRACTOR_FORMAT = "matcv-domain-extractor/1"  # part of the cache key: bump when training changes
MIN_IMAGE_SIDE = 32


def _check_images(images, name: str) -> torch.Tensor:
    tensor = images.detach().cpu() if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if tensor.ndim != 4 or tensor.shape[1] != 1:
        raise ValueError(f"{name} must be (N, 1, H, W) images in [-1, 1], got shape {tuple(tensor.shape)}")
    if tensor.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if min(tensor.shape[-2:]) < MIN_IMAGE_SIDE:
        raise ValueError(f"{name} must be at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}, got {tuple(tensor.shape[-2:])}")
    if not tensor.is_floating_point():
        raise ValueError(f"{name} must be float images in [-1, 1], got {tensor.dtype}")
    return tensor.to(torch.float32)


class DomainFeatureNet(nn.Module):
    """Small CNN for one-channel images of any size >= 32: four conv3x3-BN-ReLU blocks (the first three
    followed by 2x2 max-pooling), global average pooling to ``feature_dim`` features, a linear head."""

    def __init__(self, num_classes: int, feature_dim: int = 64, width: int = 16):
        super().__init__()
        channels = [1, width, 2 * width, 4 * width, feature_dim]
        blocks = []
        for i in range(4):
            blocks += [nn.Conv2d(channels[i], channels[i + 1], 3, padding=1, bias=False),
                       nn.BatchNorm2d(channels[i + 1]), nn.ReLU(inplace=True)]
            if i < 3:
                blocks.append(nn.MaxPool2d(2))
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(feature_dim, num_classes)
        self.num_classes, self.feature_dim = num_classes, feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [-1, 1] -> (B, feature_dim) pooled features."""
        return self.body(x).mean(dim=(-2, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal / vertical flips per image and a random rot90 per batch (square images only):
    microstructure statistics do not depend on the orientation of the field of view."""
    n = batch.shape[0]
    flip_x = torch.rand(n, generator=generator) < 0.5
    flip_y = torch.rand(n, generator=generator) < 0.5
    batch = torch.where(flip_x[:, None, None, None], batch.flip(-1), batch)
    batch = torch.where(flip_y[:, None, None, None], batch.flip(-2), batch)
    turns = int(torch.randint(0, 4, (1,), generator=generator))
    if batch.shape[-1] == batch.shape[-2] and turns:
        batch = torch.rot90(batch, turns, dims=(-2, -1))
    return batch


def train_domain_extractor(images, labels, num_classes: int, seed: int, epochs: int = 15, batch_size: int = 32,
                           lr: float = 1e-3, feature_dim: int = 64, augment: bool = True,
                           progress: bool = False) -> dict:
    """Train a ``DomainFeatureNet`` to classify the train split's labels; return a weights-only state.

    images: (N, 1, H, W) float in [-1, 1]; labels: (N,) ints in [0, num_classes). Deterministic from ``seed`` on
    the CPU (the global torch RNG is left as it was). The state is ``{"format", "state_dict", "num_classes",
    "feature_dim", "image_shape", "train_accuracy"}`` — tensors and plain values only.
    """
    images = _check_images(images, "images")
    labels = torch.as_tensor(labels.detach().cpu() if isinstance(labels, torch.Tensor) else np.asarray(labels))
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels must be ({images.shape[0]},), got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    labels = labels.to(torch.int64)
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2 (a one-class 'classifier' learns no features), "
                         f"got {num_classes!r}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}) (train-split labels), "
                         f"got [{int(labels.min())}, {int(labels.max())}]")
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("feature_dim", feature_dim)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DomainFeatureNet(int(num_classes), int(feature_dim))
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    n = images.shape[0]
    accuracy = math.nan
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        correct, seen, loss_sum = 0, 0, 0.0
        for start in range(0, n, batch_size):
            index = order[start:start + batch_size]
            if len(index) < 2 and n >= 2:  # BatchNorm needs two samples; the remainder is seen next epoch
                continue
            batch = images[index]
            if augment:
                batch = _augment(batch, generator)
            logits = model(batch)
            loss = F.cross_entropy(logits, labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            correct += int((logits.argmax(1) == labels[index]).sum())
            seen += len(index)
            loss_sum += float(loss.detach()) * len(index)
        accuracy = correct / max(seen, 1)
        if progress:
            print(f"domain extractor epoch {epoch + 1}/{epochs}: loss {loss_sum / max(seen, 1):.4f} "
                  f"train accuracy {accuracy:.3f}", file=sys.stderr)
    model.eval()
    return {"format": EXTRACTOR_FORMAT,
            "state_dict": {key: value.detach().clone() for key, value in model.state_dict().items()},
            "num_classes": int(num_classes), "feature_dim": int(feature_dim),
            "image_shape": [int(images.shape[-2]), int(images.shape[-1])], "train_accuracy": float(accuracy)}


def save_domain_extractor(state: dict, path) -> Path:
    """Write a state from ``train_domain_extractor`` atomically (torch.save into memory, then one rename)."""
    for key in ("state_dict", "num_classes", "feature_dim"):
        if key not in state:
            raise ValueError(f"extractor state lacks {key!r}: expected the dict train_domain_extractor returns")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_domain_extractor(path) -> DomainFeatureNet:
    """The network of a saved extractor, in eval mode. Read with ``torch.load(weights_only=True)``: a file with any
    pickled object other than tensors and plain containers raises ValueError and nothing in it is executed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"domain feature extractor weights not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(f"{path} is not a weights-only extractor file (refusing to unpickle it): {error}") from error
    if not isinstance(state, dict) or not {"state_dict", "num_classes", "feature_dim"} <= set(state):
        raise ValueError(f"{path} is not a matcv domain extractor (expected keys state_dict, num_classes, feature_dim)")
    model = DomainFeatureNet(int(state["num_classes"]), int(state["feature_dim"]))
    model.load_state_dict(state["state_dict"], strict=True)
    model.requires_grad_(False)
    return model.eval()


def _cache_key(images: torch.Tensor, labels: torch.Tensor, num_classes: int, seed: int, train_args: dict) -> str:
    digest = hashlib.sha256()
    digest.update(EXTRACTOR_FORMAT.encode())
    digest.update(json.dumps({"images_shape": list(images.shape), "labels_shape": list(labels.shape),
                              "num_classes": int(num_classes), "seed": int(seed),
                              "train_args": {k: train_args[k] for k in sorted(train_args)}},
                             sort_keys=True, default=str).encode())
    digest.update(np.ascontiguousarray(images.numpy(), dtype="<f4").tobytes())
    digest.update(np.ascontiguousarray(labels.numpy(), dtype="<i8").tobytes())
    return digest.hexdigest()


def cached_domain_extractor(images, labels, num_classes: int, seed: int, cache_dir, **train_args) -> Path:
    """Path of the extractor trained on (images, labels) with these arguments; trained once, then reused.

    The file name carries a sha256 of the images' bytes, the labels, num_classes, seed, the train args (except
    ``progress``) and the format version, so any change in the training data gives a new extractor.
    """
    images = _check_images(images, "images")
    labels_t = torch.as_tensor(labels.detach().cpu() if isinstance(labels, torch.Tensor) else np.asarray(labels))
    key_args = {k: v for k, v in train_args.items() if k != "progress"}
    key = _cache_key(images, labels_t.to(torch.int64), num_classes, seed, key_args)
    path = Path(cache_dir) / f"domain-extractor-{key[:24]}.pt"
    if path.is_file():
        return path
    state = train_domain_extractor(images, labels_t, num_classes, seed, **train_args)
    return save_domain_extractor(state, path)


class DomainFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity wrapper of a trained ``DomainFeatureNet`` (registered as ``"matcv-domain"``).

    torch-fidelity builds it as ``cls(name, features_list, **all_calculate_metrics_kwargs)`` and calls it on
    uint8 (B, C, H, W) batches; channel 0 is taken (C = 1 or 3) and mapped back to [-1, 1]. Features:
    ``"domain"`` (pooled CNN features, float32; FID / KID / PRC) and ``"logits"`` (ISC).
    """

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError(f'"{DOMAIN_EXTRACTOR_NAME}" needs feature_extractor_weights_path '
                             "(train one with cached_domain_extractor)")
        self.net = load_domain_extractor(feature_extractor_weights_path)
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def get_provided_features_list():
        return "domain", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "domain", "kid": "domain", "prc": "domain"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 1, 64, 64, dtype=torch.uint8)

    def forward(self, x):
        if not (torch.is_tensor(x) and x.dtype == torch.uint8):
            raise ValueError(f"expecting uint8 images from torch-fidelity, got {getattr(x, 'dtype', type(x))}")
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expecting (B, 1 or 3, H, W) images, got {tuple(x.shape)}")
        x = x[:, :1].to(torch.float32) / 127.5 - 1.0
        features = self.net.features(x)
        out = {"domain": features.to(torch.float32)}
        if "logits" in self.features_list:
            out["logits"] = self.net.head(features).to(torch.float32)
        return tuple(out[name] for name in self.features_list)


class WeightsOnlyInceptionV3(FeatureExtractorInceptionV3):
    """torch-fidelity's Inception-v3 (``inception-v3-compat``: same layers, resizing and features), but the local
    weights file is read with ``torch.load(weights_only=True)``; the parent then loads an in-memory
    re-serialisation of those tensors. Never downloads: a weights path is required."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        if feature_extractor_weights_path is None:
            raise ValueError(f'"{INCEPTION_EXTRACTOR_NAME}" needs a local feature_extractor_weights_path '
                             "(it never downloads)")
        try:
            state = torch.load(feature_extractor_weights_path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise ValueError(f"{feature_extractor_weights_path} is not a weights-only state dict "
                             f"(refusing to unpickle it): {error}") from error
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        super().__init__(name, features_list, feature_extractor_weights_path=buffer, **kwargs)


def _register(name: str, cls) -> None:
    registered = FEATURE_EXTRACTORS_REGISTRY.get(name)
    if registered is cls:
        return
    if registered is None:
        torch_fidelity.register_feature_extractor(name, cls)
    elif registered.__module__ == cls.__module__ and registered.__qualname__ == cls.__qualname__:
        FEATURE_EXTRACTORS_REGISTRY[name] = cls  # this module was re-imported (e.g. importlib.reload)
    else:
        raise ValueError(f"torch-fidelity feature extractor {name!r} is already registered to "
                         f"{registered.__module__}.{registered.__qualname__}")


def register_domain_extractor() -> None:
    """Register ``"matcv-domain"`` (and ``"matcv-inception-v3-compat"``) with torch-fidelity; idempotent."""
    _register(DOMAIN_EXTRACTOR_NAME, DomainFeatureExtractor)
    _register(INCEPTION_EXTRACTOR_NAME, WeightsOnlyInceptionV3)


class UInt8Images(Dataset):
    """Images (N, 1, H, W) in [-1, 1] as torch-fidelity wants them: uint8 (C, H, W) tensors per item
    (``to_uint8``: 0 -> -1, 255 -> 1), the channel tiled ``channels`` times."""

    def __init__(self, images: torch.Tensor, channels: int = 1):
        array = torch.from_numpy(to_uint8(images))
        self.images = array.repeat(1, channels, 1, 1) if channels != 1 else array

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


def _fidelity(generated, real, extractor: str, weights_path, kid_subset_size, channels: int,
              batch_size: int, cuda: bool | None, **layers) -> dict:
    generated, real = _check_images(generated, "generated"), _check_images(real, "real")
    if generated.shape[1:] != real.shape[1:]:
        raise ValueError(f"generated images are {tuple(generated.shape[1:])}, real ones {tuple(real.shape[1:])}")
    if min(len(generated), len(real)) < 2:
        raise ValueError(f"FID/KID need at least 2 images per set, got {len(generated)} generated, {len(real)} real")
    subset = min(len(generated), len(real), 1000 if kid_subset_size is None else int(kid_subset_size))
    if subset < 2:
        raise ValueError(f"kid_subset_size must be >= 2, got {kid_subset_size}")
    register_domain_extractor()
    return torch_fidelity.calculate_metrics(
        input1=UInt8Images(generated, channels), input2=UInt8Images(real, channels),
        feature_extractor=extractor, feature_extractor_weights_path=str(weights_path),
        fid=True, kid=True, kid_subset_size=subset, batch_size=batch_size,
        cuda=torch.cuda.is_available() if cuda is None else cuda,
        cache=False, save_cpu_ram=True, verbose=False, datasets_download=False, **layers)


def fid_kid_domain(generated, real, extractor_path, kid_subset_size: int | None = None, batch_size: int = 64,
                   cuda: bool | None = None) -> dict:
    """FID-domain and KID-domain of generated vs real images (both (N, 1, H, W) in [-1, 1]) in the features of
    the extractor at ``extractor_path``; KID subsets of min(n_generated, n_real, kid_subset_size or 1000).

    KID is torch-fidelity's unbiased MMD² (100 subsets, rng_seed 2020): it can be slightly negative, and is for a
    set against itself (-2(mean k(x,x) - mean k(x,y))/m, not 0). When the subset size equals the smaller set,
    every subset of that set is the whole set, so ``kid_domain_std`` understates the uncertainty."""
    path = Path(extractor_path)
    if not path.is_file():
        raise FileNotFoundError(f"domain feature extractor weights not found: {path}")
    metrics = _fidelity(generated, real, DOMAIN_EXTRACTOR_NAME, path, kid_subset_size, 1, batch_size, cuda)
    return {"fid_domain": float(metrics[torch_fidelity.KEY_METRIC_FID]),
            "kid_domain": float(metrics[torch_fidelity.KEY_METRIC_KID_MEAN]),
            "kid_domain_std": float(metrics[torch_fidelity.KEY_METRIC_KID_STD])}


def inception_fid(generated, real, weights_path, kid_subset_size: int | None = None, batch_size: int = 32,
                  cuda: bool | None = None, feature_layer: str = "2048") -> dict:
    """Literature-comparable Inception FID / KID from a local torch-fidelity Inception weights file
    (``weights-inception-2015-12-05-6726825d.pth``); images are tiled to 3 channels, uint8.

    ``feature_layer`` "2048" (pool3) is the published FID; torch-fidelity then takes the eigenvalues of a
    2048 x 2048 matrix (~10-20 s on a CPU). "64", "192", "768" are torch-fidelity's shallower Inception layers."""
    path = Path(os.fspath(weights_path)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Inception weights file not found: {path}")
    if feature_layer not in ("64", "192", "768", "2048"):
        raise ValueError(f'feature_layer must be one of "64", "192", "768", "2048", got {feature_layer!r}')
    metrics = _fidelity(generated, real, INCEPTION_EXTRACTOR_NAME, path, kid_subset_size, 3, batch_size, cuda,
                        feature_layer_fid=feature_layer, feature_layer_kid=feature_layer)
    return {"fid_inception": float(metrics[torch_fidelity.KEY_METRIC_FID]),
            "kid_inception": float(metrics[torch_fidelity.KEY_METRIC_KID_MEAN]),
            "kid_inception_std": float(metrics[torch_fidelity.KEY_METRIC_KID_STD])}
