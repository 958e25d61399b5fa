"""``matcv generate``: Al–Si micrographs from a trained AlloyGAN / cGAN checkpoint, prompted by composition.

    matcv generate --checkpoint runs/alloygan/.../checkpoints/best.ckpt \
        --si 7 --fe 0.5 --cu 0.25 --mn 0.35 --mg 0.3 --ni 0 --cooling-rate 10 --modified --n 4 --out generated/
    matcv generate --checkpoint ... --alloy A356 --cooling-rate 57

Checkpoints are read weights-only (``load_from_checkpoint(weights_only=True)``): nothing in them is unpickled.
The condition normaliser fitted on the training alloys travels inside the checkpoint, so a composition the model
never saw is normalised exactly as during training (and extrapolates beyond the training range).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from matcv.datamodules.measurements.alloys import ELEMENTS, alloy_by_name
from matcv.datamodules.core.atomic_io import save_png
from matcv.datamodules.microstructure_images import to_uint8


def load_generator(checkpoint: str | Path):
    from matcv.lightning_modules.alloygan import ConditionalGANTask

    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found (AlloyGAN runs keep it under "
                                f"runs/alloygan/<dataset>/<profile>/<model>/fold-<k>/checkpoints/best.ckpt)")
    model = ConditionalGANTask.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    if not bool(model.encoder.fitted):
        raise ValueError(f"{path} has no fitted condition normaliser (made outside `matcv bench`?)")
    return model.eval()


def condition_vector(composition: dict[str, float], cooling_rate: float, modified: bool) -> torch.Tensor:
    """Raw conditions in the models' order: Si, Fe, Cu, Mn, Mg, Ni (wt%), cooling rate (K/s), Sr/P (0/1)."""
    values = [float(composition.get(element, 0.0)) for element in ELEMENTS]
    bad = [f"{name}={value}" for name, value in zip(ELEMENTS, values) if not value >= 0]
    if bad or not cooling_rate > 0:
        raise ValueError(f"compositions must be >= 0 wt% and the cooling rate > 0 K/s, got "
                         f"{', '.join(bad + ([] if cooling_rate > 0 else [f'cooling rate={cooling_rate}']))}")
    return torch.tensor(values + [float(cooling_rate), 1.0 if modified else 0.0], dtype=torch.float32)


def generate_images(checkpoint: str | Path, composition: dict[str, float] | None, cooling_rate: float,
                    modified: bool, n: int, out_dir: str | Path, alloy: str | None = None,
                    seed: int = 0) -> tuple[list[Path], float]:
    """Write ``n`` PNGs; return their paths and the seconds per image (generation only, model loaded)."""
    if alloy is not None:
        composition = alloy_by_name(alloy)
    if composition is None:
        raise ValueError("give a composition (--si ... --ni) or --alloy NAME")
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    model = load_generator(checkpoint)
    conditions = condition_vector(composition, cooling_rate, modified).repeat(n, 1)
    started = time.perf_counter()
    images = model.sample_for(conditions, seed)
    per_image = (time.perf_counter() - started) / n
    stem = (alloy or "alloy") + f"_cr{cooling_rate:g}" + ("_srp" if modified else "")
    paths = [save_png(Path(out_dir) / f"{stem}_{k:03d}.png", to_uint8(images[k, 0])) for k in range(n)]
    return paths, per_image
