"""offrl's data layer: Minari datasets as flat float32 transitions, converters, preprocessing."""

from offrl.data.converters import FORMATS, ConversionResult, convert
from offrl.data.dataset import DatasetMetadata, OfflineDataset
from offrl.data.errors import (
    DatasetError,
    DatasetExistsError,
    DatasetFormatError,
    DatasetNotFoundError,
    UnsupportedSpaceError,
)
from offrl.data.preprocess import Preprocessing, fit_preprocessing
from offrl.data.reference import normalized_score
from offrl.data.store import (
    load_dataset,
    local_dataset_ids,
    local_fingerprint,
    read_metadata,
    remove_dataset,
    write_dataset,
)

__all__ = [
    "FORMATS", "ConversionResult", "convert", "DatasetMetadata", "OfflineDataset",
    "DatasetError", "DatasetExistsError", "DatasetFormatError", "DatasetNotFoundError",
    "UnsupportedSpaceError", "Preprocessing", "fit_preprocessing", "normalized_score",
    "load_dataset", "local_dataset_ids", "local_fingerprint", "read_metadata", "remove_dataset", "write_dataset",
]
