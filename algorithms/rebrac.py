"""ReBRAC (Tarasov et al. 2023, "Revisiting the Minimalist Approach to Offline RL").

TD3+BC with the design choices that make it strong: deeper (3x256) networks, LayerNorm in
the critic, large batches (1024), lr 1e-3, and a behavior-cloning penalty in both losses:
    actor:  E[ actor_bc_coef * |pi(s) - a|^2  -  Q(s, pi(s)) / mean|Q| ]
    critic: y = r + gamma * (1 - d) * ( min_i Q'_i(s', a~') - critic_bc_coef * |a~' - a'|^2 )
where a~' is the target policy's noisy action and a' the dataset's next action. The two
coefficients are tuned per dataset (experiments/configs/rebrac/*.yaml).

    python algorithms/rebrac.py --dataset d4rl/hopper/medium-v2 --seeds 0,1,2
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
from offrl.nets import CriticEnsemble, DeterministicActor
from offrl.rl import create_train_state, run_every, soft_update, td_target
from offrl.train import main


@dataclass
class Config(TrainConfig):
    """Defaults follow the ReBRAC paper's D4RL locomotion settings (no state or reward
    normalization there: the authors' configs set both off)."""

    actor_bc_coef: float = 0.01
    critic_bc_coef: float = 0.01
    batch_size: int = 1024
    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    hidden_dims: tuple[int, ...] = (256, 256, 256)
    critic_layer_norm: bool = True
    actor_layer_norm: bool = False
    gamma: float = 0.99
    tau: float = 5e-3
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    policy_freq: int = 2
    normalize_q: bool = True  # divide Q by mean|Q| in the actor loss


class State(flax.struct.PyTreeNode):
    actor: TrainState
    critic: TrainState
    actor_target: dict
    critic_target: dict


def bc_penalty(actions, reference_actions):
    """Squared distance per sample, summed over action dimensions."""
    return ((actions - reference_actions) ** 2).sum(axis=-1)


def critic_target_value(next_q, next_action, dataset_next_action, critic_bc_coef):
    """min_i Q'_i(s', a~') minus the critic BC penalty towards the dataset's next action."""
    return next_q - critic_bc_coef * bc_penalty(next_action, dataset_next_action)


def make(config: Config, obs_dim: int, act_dim: int) -> Algorithm:
    actor_net = DeterministicActor(act_dim, config.hidden_dims, config.actor_layer_norm)
    critic_net = CriticEnsemble(2, config.hidden_dims, config.critic_layer_norm)

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
        next_value = critic_target_value(next_q, next_action, batch["next_actions"], config.critic_bc_coef)
        target = td_target(batch["rewards"], batch["terminals"], next_value, config.gamma)
        q = critic_net.apply(critic_params, batch["observations"], batch["actions"])
        loss = ((q - jax.lax.stop_gradient(target)) ** 2).mean(axis=1).sum()
        return loss, {"critic_loss": loss, "q_mean": q.mean()}

    def actor_loss(actor_params, state, batch):
        action = actor_net.apply(actor_params, batch["observations"])
        q = critic_net.apply(state.critic.params, batch["observations"], action).min(axis=0)
        scale = jax.lax.stop_gradient(1.0 / jnp.abs(q).mean()) if config.normalize_q else 1.0
        bc = bc_penalty(action, batch["actions"])
        loss = (config.actor_bc_coef * bc - scale * q).mean()
        return loss, {"actor_loss": loss, "actor_bc": bc.mean()}

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

    return Algorithm("rebrac", init, update, act)


if __name__ == "__main__":
    main(make, Config, "rebrac")
