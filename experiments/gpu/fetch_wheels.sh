#!/usr/bin/env bash
# On a machine that reaches PyPI: fetch, at requirements.lock's versions, the wheels offrl needs
# on a GPU machine without network whose python3 already holds JAX with CUDA, flax, optax,
# numpy, h5py, matplotlib, rich, pyyaml, typer and cloudpickle (a common ML image; wandb,
# rliable and ray are imported only when used, so they stay behind: run with wandb disabled and
# build reports where the runs are copied back). Carry the folder over, then source setup.sh.
#   experiments/gpu/fetch_wheels.sh [PYTHON_VERSION (3.12)] [DEST (.wheels)]
set -euo pipefail
cd "$(dirname "$0")/../.."
python_version=${1:-3.12}
dest=${2:-.wheels}
# minari and gymnasium with what they need beyond such an image; mujoco 4 is three wheels;
# setuptools installs offrl itself from the checkout there.
packages="minari gymnasium farama-notifications mujoco mujoco-core mujoco-studio glfw pyopengl
          tyro docstring-parser typeguard setuptools"
mkdir -p "$dest"
for name in $packages; do
    pin=$(grep -i "^${name//-/[-_]}==" requirements.lock) || { echo "no pin for $name in requirements.lock" >&2; exit 1; }
    python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$dest" \
        --python-version "$python_version" --implementation cp --platform any \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 "$pin"
done
du -sh "$dest"
