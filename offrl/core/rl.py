"""Small pieces of RL math that several algorithms share."""

from __future__ import annotations

from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
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


class TD3State(flax.struct.PyTreeNode):
    """State of the TD3 family (TD3+BC, ReBRAC): a deterministic actor, critics, targets."""

    actor: TrainState
    critic: TrainState
    actor_target: dict
    critic_target: dict


def init_actor_critic(actor_net, critic_net, rng, obs_dim: int, act_dim: int,
                      actor_lr: float, critic_lr: float) -> dict:
    """Fresh actor and critic TrainStates (Adam) and the critic target, as State fields."""
    actor_rng, critic_rng = jax.random.split(rng)
    obs, action = jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim))
    critic_params = critic_net.init(critic_rng, obs, action)
    return {
        "actor": create_train_state(actor_net, actor_net.init(actor_rng, obs), optax.adam(actor_lr)),
        "critic": create_train_state(critic_net, critic_params, optax.adam(critic_lr)),
        "critic_target": critic_params,
    }


def init_td3_state(actor_net, critic_net, rng, obs_dim: int, act_dim: int,
                   actor_lr: float, critic_lr: float) -> TD3State:
    fields = init_actor_critic(actor_net, critic_net, rng, obs_dim, act_dim, actor_lr, critic_lr)
    return TD3State(**fields, actor_target=fields["actor"].params)


def smoothed_target_action(actor_net, target_params, next_observations, rng, noise_std: float,
                           noise_clip: float):
    """TD3's target policy smoothing: pi'(s') plus clipped Gaussian noise, kept in [-1, 1]."""
    action = actor_net.apply(target_params, next_observations)
    noise = jnp.clip(noise_std * jax.random.normal(rng, action.shape), -noise_clip, noise_clip)
    return jnp.clip(action + noise, -1.0, 1.0)


def td3_update(state: TD3State, batch, rng, step, critic_loss: Callable, actor_loss: Callable,
               policy_freq: int, tau: float):
    """TD3's schedule (Fujimoto et al. 2018): a critic step on every update; the actor step
    and the Polyak update of both targets once every `policy_freq` updates.
    critic_loss(critic_params, state, batch, rng) and actor_loss(actor_params, state, batch)
    return (loss, metrics)."""
    grads, critic_metrics = jax.grad(critic_loss, has_aux=True)(state.critic.params, state, batch, rng)
    state = state.replace(critic=state.critic.apply_gradients(grads=grads))

    def update_actor(state, batch):
        grads, metrics = jax.grad(actor_loss, has_aux=True)(state.actor.params, state, batch)
        actor = state.actor.apply_gradients(grads=grads)
        return state.replace(
            actor=actor,
            actor_target=soft_update(state.actor_target, actor.params, tau),
            critic_target=soft_update(state.critic_target, state.critic.params, tau),
        ), metrics

    state, actor_metrics = run_every(policy_freq, step, update_actor, state, batch)
    return state, {**critic_metrics, **actor_metrics}


def noisy_deterministic_act(actor_net, exploration_noise: float):
    """`act` of a deterministic actor (TD3+BC, ReBRAC): its action when evaluating; when
    acting online, TD3's Gaussian exploration noise of std `exploration_noise`, kept in [-1, 1]."""

    def act(state, obs, rng, deterministic=True):
        action = actor_net.apply(state.actor.params, obs)
        if deterministic:
            return action
        return jnp.clip(action + exploration_noise * jax.random.normal(rng, action.shape), -1.0, 1.0)

    return act


def online_progress(step, config):
    """The share of the online phase's updates done by update `step`: 0 until fine-tuning
    starts, 1 at its end. Schedules that relax an offline constraint online follow it."""
    online_updates = max(config.online_steps * config.online_updates_per_step, 1)
    return jnp.clip((step - config.num_updates) / online_updates, 0.0, 1.0)


def monte_carlo_returns(rewards: np.ndarray, episode_starts: np.ndarray, gamma: float) -> np.ndarray:
    """Discounted reward-to-go within each episode, 0 after its last step (Cal-QL's
    reference values of the behavior policy)."""
    returns = np.zeros(len(rewards), np.float64)
    last = np.zeros(len(rewards), bool)
    last[np.append(episode_starts[1:], len(rewards)) - 1] = True
    running = 0.0
    for row in range(len(rewards) - 1, -1, -1):
        running = rewards[row] + (0.0 if last[row] else gamma * running)
        returns[row] = running
    return returns.astype(np.float32)
