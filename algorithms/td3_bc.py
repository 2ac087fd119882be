"""TD3+BC (Fujimoto & Gu 2021, "A Minimalist Approach to Offline Reinforcement Learning").

TD3 with a behavior-cloning term in the actor loss:
    pi = argmax_pi  E[ lambda * Q(s, pi(s)) - (pi(s) - a)^2 ],   lambda = alpha / mean|Q(s, pi(s))|
and states normalized with the dataset's mean and std.

    python algorithms/td3_bc.py --dataset d4rl/hopper/medium-v2 --seeds 0,1,2
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

from offrl.config import TrainConfig
from offrl.learner import Algorithm
from offrl.nets import CriticEnsemble, DeterministicActor, ensemble_member
from offrl.rl import create_train_state, run_every, soft_update, td_target
from offrl.train import main


@dataclass
class Config(TrainConfig):
    """Defaults are the paper's D4RL hyperparameters."""

    alpha: float = 2.5  # weight of the RL term relative to BC
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    hidden_dims: tuple[int, ...] = (256, 256)
    gamma: float = 0.99
    tau: float = 0.005  # target network update rate
    policy_noise: float = 0.2  # target policy smoothing noise, in [-1, 1] action units
    noise_clip: float = 0.5
    policy_freq: int = 2  # actor and target updates once every policy_freq critic updates
    normalize_observations: bool = True


class State(flax.struct.PyTreeNode):
    actor: TrainState
    critic: TrainState
    actor_target: dict
    critic_target: dict


def td3_bc_lambda(q_values: jax.Array, alpha: float) -> jax.Array:
    """lambda = alpha / mean|Q|, treated as a constant (no gradient)."""
    return jax.lax.stop_gradient(alpha / jnp.abs(q_values).mean())


def make(config: Config, obs_dim: int, act_dim: int) -> Algorithm:
    actor_net = DeterministicActor(act_dim, config.hidden_dims)
    critic_net = CriticEnsemble(2, config.hidden_dims)

    def init(rng):
        actor_rng, critic_rng = jax.random.split(rng)
        obs, action = jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim))
        actor_params = actor_net.init(actor_rng, obs)
        critic_params = critic_net.init(critic_rng, obs, action)
        return State(
            actor=create_train_state(actor_net, actor_params, optax.adam(config.actor_lr)),
            critic=create_train_state(critic_net, critic_params, optax.adam(config.critic_lr)),
            actor_target=actor_params,
            critic_target=critic_params,
        )

    def critic_loss(critic_params, state, batch, rng):
        noise = jnp.clip(config.policy_noise * jax.random.normal(rng, batch["actions"].shape),
                         -config.noise_clip, config.noise_clip)
        next_action = jnp.clip(actor_net.apply(state.actor_target, batch["next_observations"]) + noise, -1, 1)
        next_q = critic_net.apply(state.critic_target, batch["next_observations"], next_action).min(axis=0)
        target = td_target(batch["rewards"], batch["terminals"], next_q, config.gamma)
        q = critic_net.apply(critic_params, batch["observations"], batch["actions"])
        loss = ((q - jax.lax.stop_gradient(target)) ** 2).mean(axis=1).sum()
        return loss, {"critic_loss": loss, "q_mean": q.mean()}

    def actor_loss(actor_params, state, batch):
        action = actor_net.apply(actor_params, batch["observations"])
        first_critic, first_params = ensemble_member(critic_net, state.critic.params, 0)
        q = first_critic.apply(first_params, batch["observations"], action)
        bc = ((action - batch["actions"]) ** 2).mean()
        loss = -td3_bc_lambda(q, config.alpha) * q.mean() + bc
        return loss, {"actor_loss": loss, "bc_mse": bc}

    def update_actor(state, batch):
        grads, metrics = jax.grad(actor_loss, has_aux=True)(state.actor.params, state, batch)
        actor = state.actor.apply_gradients(grads=grads)
        return state.replace(
            actor=actor,
            actor_target=soft_update(state.actor_target, actor.params, config.tau),
            critic_target=soft_update(state.critic_target, state.critic.params, config.tau),
        ), metrics

    def update(state, batch, rng, step):
        grads, critic_metrics = jax.grad(critic_loss, has_aux=True)(state.critic.params, state, batch, rng)
        state = state.replace(critic=state.critic.apply_gradients(grads=grads))
        state, actor_metrics = run_every(config.policy_freq, step, update_actor, state, batch)
        return state, {**critic_metrics, **actor_metrics}

    def act(state, obs, rng, deterministic=True):
        return actor_net.apply(state.actor.params, obs)

    return Algorithm("td3_bc", init, update, act)


if __name__ == "__main__":
    main(make, Config, "td3_bc")
