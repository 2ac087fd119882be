"""What offrl sets up once per process before it makes a MuJoCo environment."""

from __future__ import annotations

import functools
import warnings


@functools.cache
def route_mujoco_warnings() -> None:
    """MuJoCo's C library reports warnings by printing them and appending them to
    MUJOCO_LOG.TXT in the working directory, once per model it compiles: Gymnasium's
    HalfCheetah-v5 model uses a compiler attribute MuJoCo 4 deprecates, so every env made
    (dozens per evaluation or generation) would print the same lines and grow that file.
    Routed through Python's warnings, each shows once per process and no file is written.
    Called where offrl makes environments, not at import, so that importing offrl stays light."""
    try:
        import mujoco
    except ImportError:
        return
    mujoco.set_mju_user_warning(lambda message: warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2))
