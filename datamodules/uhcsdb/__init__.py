"""UHCSDB (Ultrahigh Carbon Steel micrograph database; DeCost et al. 2017) as patches for the microstructure
autoencoder / GAN task, read from the release as published.

``metadata`` finds the release and reads its metadata (CSV or sqlite), ``curation`` selects, groups and
scales the micrographs, ``rescale`` banner-crops, rescales and caches them, ``patches`` draws the random
crops and ``datamodule`` holds ``UHCSDBDataModule``. The curation and why it is done this way:
docs/tasks/microstructure.md.
"""

from matcv.datamodules.uhcsdb.curation import Selection, UHCSMicrograph, check_constituents, scan_release, select_micrographs
from matcv.datamodules.uhcsdb.datamodule import UHCSDBDataModule
from matcv.datamodules.uhcsdb.metadata import (
    DATASET_NAME,
    METADATA_CSV,
    METADATA_SQLITE,
    ROOT_ENV,
    MetadataRow,
    metadata_path,
    parse_magnification,
    read_metadata,
    release_rows,
    resolve_data_root,
)
from matcv.datamodules.uhcsdb.patches import crop_count, draw_crops
from matcv.datamodules.uhcsdb.rescale import cache_folder, cached_path, read_grey, rescale_micrograph, rescaled_shape

__all__ = [
    "DATASET_NAME", "METADATA_CSV", "METADATA_SQLITE", "ROOT_ENV", "MetadataRow", "Selection", "UHCSDBDataModule",
    "UHCSMicrograph", "cache_folder", "cached_path", "check_constituents", "crop_count", "draw_crops",
    "metadata_path", "parse_magnification", "read_grey", "read_metadata", "release_rows", "rescale_micrograph",
    "rescaled_shape", "resolve_data_root", "scan_release", "select_micrographs",
]
