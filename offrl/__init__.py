"""offrl: offline reinforcement learning on JAX."""

import os
from importlib import metadata

__version__ = "0.1.0"

# XLA:CPU in the pinned jaxlib hands reductions to YNNPACK, which runs the column sums of
# backward passes (LayerNorm's scale and bias gradients: a sum over the batch axis of a
# 2 x 1024 x 256 array) about as slowly as a whole 1024 x 256 x 256 matmul. Without that
# fusion ReBRAC runs 27% faster on 2 CPU cores and no algorithm got slower (docs/core.md,
# "Speed"). XLA reads the flag when its backend starts, so it is set at import, before any
# computation. Only for the pinned jaxlib, whose flag names are known; setting
# `--xla_cpu_experimental_ynn_fusion_type` yourself in XLA_FLAGS overrides it.
YNN_REDUCE_OFF = "--xla_cpu_experimental_ynn_fusion_type=-LIBRARY_FUSION_TYPE_REDUCE"
PINNED_JAXLIB = "0.10.2"


def _xla_cpu_flags() -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    try:
        jaxlib_version = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return
    if jaxlib_version == PINNED_JAXLIB and "ynn_fusion_type" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {YNN_REDUCE_OFF}".strip()


_xla_cpu_flags()
