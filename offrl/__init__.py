"""offrl: offline reinforcement learning on JAX."""

import os
from importlib import metadata

__version__ = "0.1.0"

# XLA:CPU in the pinned jaxlib hands matmuls and reductions to YNNPACK. Its column sums
# of backward passes (LayerNorm's scale gradients: a sum over the batch axis of a
# 2 x 1024 x 256 array) run about as slowly as a whole 1024 x 256 x 256 matmul, and its
# matmuls ran 11-14% slower than Eigen's on the wide batches of CQL (2,560 rows) and ReBRAC
# (1,024) on 2 CPU cores (docs/core.md, "Speed"). With YNNPACK off XLA uses Eigen and its
# own loops. XLA reads the flag when its backend starts, so it is set at import, before
# any computation. Only for the pinned jaxlib, whose flag names are known; setting
# `--xla_cpu_experimental_ynn_fusion_type` yourself in XLA_FLAGS overrides it.
YNNPACK_OFF = "--xla_cpu_experimental_ynn_fusion_type="
PINNED_JAXLIB = "0.10.2"


def _xla_cpu_flags() -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    try:
        jaxlib_version = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return
    if jaxlib_version == PINNED_JAXLIB and "ynn_fusion_type" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {YNNPACK_OFF}".strip()


_xla_cpu_flags()


def _mujoco_warnings_once() -> None:
    """MuJoCo's C library reports warnings by printing them and appending them to
    MUJOCO_LOG.TXT in the working directory, once per model it compiles: Gymnasium's
    HalfCheetah-v5 model uses a compiler attribute MuJoCo 4 deprecates, so every env made
    (dozens per evaluation or generation) printed the same lines and grew that file. Routed
    through Python's warnings, each shows once per process and no file is written."""
    try:
        import mujoco
    except ImportError:
        return
    import warnings

    mujoco.set_mju_user_warning(lambda message: warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2))


_mujoco_warnings_once()
