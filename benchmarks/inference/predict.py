"""Rate new photos with a trained rating checkpoint: ``matcv predict --task rating --checkpoint C DIR``.

The "get results by uploading" use of the MOSS platform (Yin 2024, Part I): every image in a folder gets a
predicted ASTM rating and the model's confidence; an unreadable file gets its error in the CSV and the
others are still rated. The checkpoint is loaded weights-only (a checkpoint from elsewhere cannot run code).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from matcv.datamodules.core.atomic_io import atomic_write_text
from matcv.datamodules.corrosion import resize_photo, standardize
from matcv.lightning_modules.ordinal import head_decode
from matcv.lightning_modules.rating import RatingTask

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def load_rating_model(checkpoint: str | Path) -> RatingTask:
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    model = RatingTask.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    if int(model.image_size) <= 0:
        raise ValueError(f"{path} has no training-photo statistics (made outside `matcv bench`?)")
    return model.eval()


def predict_ratings(checkpoint: str | Path, photos_dir: str | Path, out_csv: str | Path,
                    progress: bool = True) -> tuple[Path, int, int]:
    """Write ``image,predicted_rating,confidence,error`` rows; return (csv, rated, failed)."""
    model = load_rating_model(checkpoint)
    folder = Path(photos_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"photo folder {folder} not found")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    size = int(model.image_size)
    mean, std = model.input_mean.numpy(), model.input_std.numpy()
    rows, failed = [], 0
    for path in tqdm(files, desc="rating photos", unit="photo", disable=not progress):
        name = str(path.relative_to(folder))
        try:
            with Image.open(path) as handle:
                image = np.asarray(handle.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as error:
            rows.append({"image": name, "predicted_rating": "", "confidence": "", "error": f"unreadable: {error}"})
            failed += 1
            continue
        x = standardize(resize_photo(image, size), mean, std)  # exactly as the training photos were
        with torch.no_grad():
            index, probabilities = head_decode(model.hparams.head, model(x[None]))
        k = int(index[0])
        rows.append({"image": name, "predicted_rating": model.ratings[k],
                     "confidence": f"{float(probabilities[0, k]):.4f}", "error": ""})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["image", "predicted_rating", "confidence", "error"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(out_csv, buffer.getvalue()), len(rows) - failed, failed
