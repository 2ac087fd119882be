"""offrl's data layer: Minari datasets as flat float32 transitions, converters, preprocessing.

The names below are imported from their modules on first use, so that commands which need
only a few of them (`offrl --help`, `offrl datasets list`) start without h5py or gymnasium's
environments.
"""

from __future__ import annotations

import importlib

EXPORTS = {
    "offrl.data.converters": ("FORMATS", "ConversionResult", "convert"),
    "offrl.data.dataset": ("DatasetMetadata", "OfflineDataset"),
    "offrl.data.errors": ("DatasetError", "DatasetExistsError", "DatasetFormatError", "DatasetNotFoundError",
                          "UnsupportedSpaceError"),
    "offrl.data.preprocess": ("Preprocessing", "fit_preprocessing"),
    "offrl.data.reference": ("normalized_score",),
    "offrl.data.store": ("load_dataset", "local_dataset_ids", "local_fingerprint", "read_metadata", "remove_dataset",
                         "write_dataset"),
}
MODULE_OF = {name: module for module, names in EXPORTS.items() for name in names}
__all__ = sorted(MODULE_OF)


def __getattr__(name: str):
    if name in MODULE_OF:
        return getattr(importlib.import_module(MODULE_OF[name]), name)
    try:  # a submodule, e.g. offrl.data.store
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module 'offrl.data' has no attribute '{name}'")


def __dir__():
    return sorted([*globals(), *__all__])
