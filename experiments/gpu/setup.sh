# Source from the repository root on the GPU machine (see fetch_wheels.sh):
#   . experiments/gpu/setup.sh [WHEELS (.wheels)]
# Installs the carried wheels beside the image's packages (no index, no dependencies), then this
# checkout as it is now, with the carried setuptools (offrl's algorithms and behavior policies
# install into the package), and puts them on PYTHONPATH; `$offrl` is then the command line.
wheels=${1:-.wheels}
python3 -m pip install --quiet --no-index --no-deps --no-compile --target /tmp/offrl-site "$wheels"/*.whl \
    && export PYTHONPATH="/tmp/offrl-site${PYTHONPATH:+:$PYTHONPATH}" \
    && python3 -m pip install --quiet --no-index --no-deps --no-build-isolation --upgrade --target /tmp/offrl-site . \
    && python3 -P -c "import offrl.algorithms.td3_bc, offrl.data.suite, mujoco, minari, tyro" \
    || { echo "offrl's setup on this machine failed (see above)" >&2; return 1; }
# Several programs share the GPU: none may take 75% of its memory up front. No wandb here.
export XLA_PYTHON_CLIENT_PREALLOCATE=false WANDB_MODE=disabled
# -P: the checkout's own offrl/ in the working directory must not shadow the installed package,
# which alone holds the algorithms and the policies
offrl="python3 -P -m offrl.tools.cli"
python3 -c "import jax; print('offrl ready on', jax.devices())"
