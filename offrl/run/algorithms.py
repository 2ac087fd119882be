"""offrl's algorithms by name: the modules of offrl.algorithms (algorithms/ in the
repository), looked up without importing jax until one is loaded."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from offrl.resources import installed_folder, require_installed


def algorithm_names() -> list[str]:
    """The algorithms offrl trains by name: the modules of offrl.algorithms (algorithms/ in
    the repository) but proxy_label, which wraps them."""
    folder = require_installed(installed_folder("offrl.algorithms"))
    return sorted(module.name for module in pkgutil.iter_modules([str(folder)]) if module.name != "proxy_label")


def require_known(algo: str) -> None:
    """Refuse a name that is no algorithm of offrl's, in one line that lists them."""
    if algo not in algorithm_names():
        raise ValueError(f"Unknown algorithm '{algo}': offrl has {', '.join(algorithm_names())} "
                         "(algorithms/<name>.py).")


def algorithm_module(algo: str) -> ModuleType:
    """offrl.algorithms.<algo>: its Config, make, and optional program and PACKABLE."""
    require_known(algo)
    return importlib.import_module(f"offrl.algorithms.{algo}")
