"""Small pieces of RL math that several algorithms share."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState


def td_target(rewards, terminals, next_values, gamma: float):
    """r + gamma * (1 - terminal) * V(s'): bootstraps through timeouts, never terminations."""
    return rewards + gamma * (1.0 - terminals) * next_values


def soft_update(target_params, online_params, tau: float):
    """Polyak averaging: target <- tau * online + (1 - tau) * target."""
    return jax.tree.map(lambda t, o: t + tau * (o - t), target_params, online_params)


def expectile_loss(diff, expectile: float):
    """|expectile - 1(diff < 0)| * diff^2 (IQL): expectile > 0.5 weighs positive errors more."""
    weight = jnp.where(diff > 0, expectile, 1.0 - expectile)
    return weight * diff**2


def create_train_state(module, params, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState.create(apply_fn=module.apply, params=params, tx=optimizer)


def run_every(period: int, step, update: Callable, state, *operands):
    """`update(state, *operands) -> (state, metrics)` on steps divisible by `period`; the
    state unchanged and NaN metrics otherwise (the core averages metrics with nanmean).
    `step` is the shared, unbatched update index, so this stays a real branch under vmap."""
    if period == 1:
        return update(state, *operands)

    def skip(state, *operands):
        shapes = jax.eval_shape(update, state, *operands)[1]
        return state, jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype), shapes)

    return jax.lax.cond(step % period == 0, update, skip, state, *operands)


def create_scalar_state(initial_value: float, learning_rate: float) -> TrainState:
    """A learned scalar (e.g. SAC's log temperature) with its own Adam optimizer; the value
    is params["value"]."""
    return TrainState.create(apply_fn=None, params={"value": jnp.asarray(initial_value, jnp.float32)},
                             tx=optax.adam(learning_rate))


def temperature_loss(params, log_probs, target_entropy: float):
    """SAC's automatic entropy tuning on params["value"] = log alpha: alpha rises when the
    policy's entropy is below the target and falls above it."""
    return -(params["value"] * jax.lax.stop_gradient(log_probs + target_entropy)).mean()
