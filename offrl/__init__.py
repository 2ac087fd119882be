"""offrl: offline reinforcement learning on JAX.

    import offrl
    run = offrl.train("iql", "mujoco/hopper/medium-v0", seeds=[0, 1, 2], num_updates=100_000)
    run.scores, run.policy(0), run.run_dir

The Python API (offrl.run.api) is imported on first use, so that `import offrl` and the
`offrl` command start without jax.
"""

import os
from importlib import metadata

__version__ = "0.1.0"

# XLA:CPU in the pinned jaxlib hands matmuls and reductions to YNNPACK, whose column sums
# of backward passes (LayerNorm's scale gradients) and wide-batch matmuls are slower than
# Eigen's on CPU (docs/core.md, "Speed", has the measurements). With YNNPACK off XLA uses
# Eigen and its own loops. XLA reads the flag when its backend starts, so it is set at import, before
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


API = ("train", "load_run", "Run")


def __getattr__(name: str):
    if name in API:
        from offrl.run import api

        return getattr(api, name)
    raise AttributeError(f"module 'offrl' has no attribute '{name}'")


def __dir__():
    return sorted([*globals(), *API])
