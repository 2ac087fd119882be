"""ReBRAC (Tarasov et al. 2023, "Revisiting the Minimalist Approach to Offline RL").

TD3+BC with the design choices that make it strong: deeper (3x256) networks, LayerNorm in
the critic, large batches (1024), lr 1e-3, and a behavior-cloning penalty in both losses:
    actor:  E[ actor_bc_coef * |pi(s) - a|^2  -  Q(s, pi(s)) / mean|Q| ]
    critic: y = r + gamma * (1 - d) * ( min_i Q'_i(s', a~') - critic_bc_coef * |a~' - a'|^2 )
where a~' is the target policy's noisy action and a' the dataset's next action. The two
coefficients are tuned per dataset (algorithms/configs/rebrac/*.yaml).

The networks are offrl's MLPs (LayerNorm before the ReLU, flax's default init). The authors'
code differs: LayerNorm after the ReLU, and EDAC's init (hidden biases 0.1, last layer within
±3e-3 for the critic and ±1e-3 for the actor). On the suite's halfcheetah-medium that variant
saturated the actor and did worse (experiments/results/rebrac_halfcheetah_medium.md).

    python algorithms/rebrac.py --dataset d4rl-hdf5/hopper/medium-v2 --seeds 0,1,2
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from offrl.core.learner import Algorithm
from offrl.core.nets import CriticEnsemble, DeterministicActor
from offrl.core.rl import (
    init_td3_state,
    noisy_deterministic_act,
    online_progress,
    smoothed_target_action,
    td3_update,
    td_target,
)
from offrl.run.config import TrainConfig
from offrl.run.train import main

# Hyperparameters used only in arithmetic: a sweep may train several values in one program.
PACKABLE = ("actor_bc_coef", "critic_bc_coef")


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
    exploration_noise: float = 0.1  # Gaussian action noise when acting online
    online_bc_floor: float = 0.5  # online, both BC coefficients decay linearly to this share of their value


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
        return init_td3_state(actor_net, critic_net, rng, obs_dim, act_dim, config.actor_lr, config.critic_lr)

    def losses(bc_scale):
        """The critic and actor losses with both BC coefficients scaled by bc_scale."""

        def critic_loss(critic_params, state, batch, rng):
            next_action = smoothed_target_action(actor_net, state.actor_target, batch["next_observations"], rng,
                                                 config.policy_noise, config.noise_clip)
            next_q = critic_net.apply(state.critic_target, batch["next_observations"], next_action).min(axis=0)
            next_value = critic_target_value(next_q, next_action, batch["next_actions"],
                                             bc_scale * config.critic_bc_coef)
            target = td_target(batch["rewards"], batch["terminals"], next_value, config.gamma)
            q = critic_net.apply(critic_params, batch["observations"], batch["actions"])
            loss = ((q - jax.lax.stop_gradient(target)) ** 2).mean(axis=1).sum()
            return loss, {"critic_loss": loss, "q_mean": q.mean()}

        def actor_loss(actor_params, state, batch):
            action = actor_net.apply(actor_params, batch["observations"])
            q = critic_net.apply(state.critic.params, batch["observations"], action).min(axis=0)
            scale = jax.lax.stop_gradient(1.0 / jnp.abs(q).mean()) if config.normalize_q else 1.0
            bc = bc_penalty(action, batch["actions"])
            loss = (bc_scale * config.actor_bc_coef * bc - scale * q).mean()
            return loss, {"actor_loss": loss, "actor_bc": bc.mean()}

        return critic_loss, actor_loss

    def update(state, batch, rng, step):
        return td3_update(state, batch, rng, step, *losses(1.0), config.policy_freq, config.tau)

    def online_update(state, batch, rng, step):
        """Fine-tuning: the BC coefficients fall linearly from their offline values to
        online_bc_floor of them over the online updates (Tarasov et al. 2023 relax ReBRAC's
        constraint online; the floor of 0.5 is their fine-tuning setting)."""
        bc_scale = 1.0 - (1.0 - config.online_bc_floor) * online_progress(step, config)
        state, metrics = td3_update(state, batch, rng, step, *losses(bc_scale), config.policy_freq, config.tau)
        return state, {**metrics, "bc_coef_scale": bc_scale}

    act = noisy_deterministic_act(actor_net, config.exploration_noise)
    return Algorithm("rebrac", init, update, act, online_update=online_update)


if __name__ == "__main__":
    main(make, Config, "rebrac")
