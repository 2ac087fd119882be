"""Lossless flattening of Gymnasium spaces into float32 vectors.

Box spaces, and Dict/Tuple spaces whose leaves are all Box, flatten in the same order as
`gymnasium.spaces.flatten`, so a flat policy output can be turned back with
`gymnasium.spaces.unflatten`. Anything else is refused with a clear error.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from offrl.data.errors import UnsupportedSpaceError


def _check(space: spaces.Space, role: str) -> None:
    if isinstance(space, spaces.Box):
        return
    if isinstance(space, spaces.Dict):
        for sub in space.spaces.values():
            _check(sub, role)
        return
    if isinstance(space, spaces.Tuple):
        for sub in space.spaces:
            _check(sub, role)
        return
    raise UnsupportedSpaceError(
        f"The {role} space contains {space!r}, which is not a Box and cannot be flattened "
        "losslessly into a float vector. offrl's algorithms need Box spaces (or Dict/Tuple "
        "spaces of Box); re-encode the dataset's {role}s as Box arrays first."
    )


def flat_dim(space: spaces.Space, role: str = "observation") -> int:
    """Size of the flat float vector for `space`; raises UnsupportedSpaceError if none exists."""
    _check(space, role)
    return int(spaces.flatdim(space))


def flatten_batch(space: spaces.Space, data, role: str = "observation") -> np.ndarray:
    """Flatten a batch (leading axis = steps) of `space` samples into an (n, flat_dim) array."""
    _check(space, role)
    if isinstance(space, spaces.Box):
        array = np.asarray(data)
        return array.reshape(array.shape[0], -1).astype(np.float32, copy=False)
    if isinstance(space, spaces.Dict):
        parts = [flatten_batch(sub, data[key], role) for key, sub in space.spaces.items()]
    else:
        parts = [flatten_batch(sub, part, role) for sub, part in zip(space.spaces, data)]
    return np.concatenate(parts, axis=1)
