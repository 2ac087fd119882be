"""The JIT core: many updates in one `lax.scan`, many seeds in one program via `vmap`.

An algorithm is four pure functions over a pytree state (see `Algorithm`). The core
samples batches on the device, inside the compiled program, from a data pytree that is
passed in (never closed over, so it is not baked into the program as a constant and can
change between calls, e.g. a model-rollout or online replay buffer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp

State = Any
Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


@dataclass(frozen=True)
class Algorithm:
    """The four pure functions of an algorithm.

    init(rng) -> state
    update(state, batch, rng, step) -> (state, metrics)
        `step` is the global update index, shared by all seeds (not vmapped), so schedules
        such as TD3's delayed actor stay real branches (`lax.cond`) under `vmap` instead of
        becoming selects that compute both sides. A metric not computed at a step (the
        delayed actor's loss) is NaN there; the core averages with nanmean.
    act(state, obs, rng, deterministic) -> action in [-1, 1]

    Optional, for offline-to-online fine-tuning and extra data:
    on_online_start(state, config) -> state
        called once per seed when the online phase begins (not again on resume).
    online_update(state, batch, rng, step) -> (state, metrics)
        the update of the online phase (default: `update`); `step` continues counting
        after the offline updates, so schedules can be functions of it.
    dataset_columns(arrays, episode_starts) -> dict of extra per-transition arrays
        computed from the preprocessed dataset (Cal-QL's Monte-Carlo returns).
    """

    name: str
    init: Callable[[jax.Array], State]
    update: Callable[[State, Batch, jax.Array, jax.Array], tuple[State, Metrics]]
    act: Callable[[State, jax.Array, jax.Array, bool], jax.Array]
    on_online_start: Callable[[State, Any], State] | None = None
    online_update: Callable[[State, Batch, jax.Array, jax.Array], tuple[State, Metrics]] | None = None
    dataset_columns: Callable[[dict, Any], dict] | None = None


def all_finite(tree) -> jax.Array:
    checks = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)]
    return jnp.all(jnp.stack(checks)) if checks else jnp.bool_(True)


def sample_uniform(batch_size: int) -> Callable[[Batch, jax.Array], Batch]:
    """Uniform sampling with replacement from a dict of equally long arrays."""

    def sample(data: Batch, rng: jax.Array) -> Batch:
        size = next(iter(data.values())).shape[0]
        index = jax.random.randint(rng, (batch_size,), 0, size)
        return {key: value[index] for key, value in data.items()}

    return sample


def scan_updates(
    update: Callable[[State, Batch, jax.Array, jax.Array], tuple[State, Metrics]],
    sample: Callable[[Any, jax.Array], Batch],
    num_updates: int,
) -> Callable:
    """One seed's `num_updates` updates as one `lax.scan`, sampling each batch from `data`
    on the device: (state, rng, data, first_step) -> (state, rng, metrics of every update)."""

    def run(state, rng, data, first_step):
        def body(carry, step):
            state, rng = carry
            rng, sample_rng, update_rng = jax.random.split(rng, 3)
            state, metrics = update(state, sample(data, sample_rng), update_rng, step)
            return (state, rng), metrics

        (state, rng), metrics = jax.lax.scan(body, (state, rng), first_step + jnp.arange(num_updates))
        return state, rng, metrics

    return run


def compile_members(chunk: Callable, carried: int, other_axes: tuple) -> Callable:
    """The one compiled program of every training loop: `chunk` for a stack of members
    (seeds, or seeds times hyperparameter points) under `vmap`, jitted.

    chunk(*carry, *others) -> (*carry, metrics) advances one member: its carry (the
    algorithm state first, then its rng and anything else it keeps, e.g. a model buffer)
    has a leading member axis in the stack and is donated (updated in place); `other_axes`
    says for the other inputs which are shared (None) and which per member (0). The
    compiled program returns (*carry, metrics, finite): metrics nan-averaged per member
    over what `chunk` did (a metric not computed at a step is NaN there), and whether every
    float of each member's new state is finite."""

    def member(*args):
        *carry, metrics = chunk(*args)
        return (*carry, jax.tree.map(jnp.nanmean, metrics), all_finite(carry[0]))

    return jax.jit(jax.vmap(member, in_axes=(0,) * carried + tuple(other_axes)),
                   donate_argnums=tuple(range(carried)))


def make_train_steps(
    update: Callable[[State, Batch, jax.Array, jax.Array], tuple[State, Metrics]],
    sample: Callable[[Any, jax.Array], Batch],
    num_updates: int,
    data_axes=None,
) -> Callable:
    """Compile `num_updates` updates for a stack of seeds: train_steps(states, rngs, data,
    first_step) -> (states, rngs, metrics, finite) (see `compile_members`). `data_axes`
    says which parts of data carry a seed axis (vmap in_axes: None, shared by all seeds; 0,
    per seed, e.g. replay buffers; or a tuple for (dataset, buffers) pairs); first_step is
    shared."""
    return compile_members(scan_updates(update, sample, num_updates), carried=2, other_axes=(data_axes, None))


def init_states(algorithm: Algorithm, seeds: list[int]) -> tuple[State, jax.Array]:
    """Per-seed initial states and training rngs, stacked on a leading axis."""
    keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds, dtype=jnp.uint32))
    init_keys, train_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
    # Not jitted: with jax 0.10.2 on CPU, a jitted program holding several batched LAPACK QRs
    # (orthogonal init of an nn.vmap ensemble) can deadlock: always when seeds are vmapped,
    # now and then even for one seed. Op-by-op dispatch runs one QR at a time, and for these
    # small networks it is no slower than compiling the init. Eager init lets leaves share a
    # buffer (a target network is its online network at step 0); training donates the state,
    # so every leaf gets a buffer of its own.
    states = jax.tree.map(jnp.copy, jax.vmap(algorithm.init)(init_keys))
    return states, train_keys


def seed_slice(tree, index: int):
    """One seed's slice of a stacked pytree."""
    return jax.tree.map(lambda leaf: leaf[index], tree)
