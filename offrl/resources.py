"""Where the parts of offrl that live outside its source folder are: offrl.algorithms
(algorithms/ in the repository, with their configs) and offrl.policies (datasets/policies,
the suite's behavior policies). An install maps them into the package; a checkout's own
offrl/ folder imported without one has neither, which `require_installed` names."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def installed_folder(package: str) -> Path:
    """The folder of offrl.algorithms or offrl.policies; where this offrl has none, the
    folder an install would have made (which does not exist)."""
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(__file__).resolve().parent / package.rsplit(".", 1)[1]


def require_installed(folder: Path) -> Path:
    """`folder` (from installed_folder), or one line that says why it is missing and the fix."""
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} does not exist: this Python imports offrl from {folder.parent}, a checkout's source folder, "
            "without the algorithms, configs and behavior policies an install maps into it. Install the checkout "
            "(`pip install -e .`, as `make install` does), or run outside its folder.")
    return folder
