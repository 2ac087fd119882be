"""TD3+BC (Fujimoto & Gu 2021, "A Minimalist Approach to Offline Reinforcement Learning").

TD3 with a behavior-cloning term in the actor loss:
    pi = argmax_pi  E[ lambda * Q(s, pi(s)) - (pi(s) - a)^2 ],   lambda = alpha / mean|Q(s, pi(s))|
and states normalized with the dataset's mean and std.

    python algorithms/td3_bc.py --dataset d4rl-hdf5/hopper/medium-v2 --seeds 0,1,2
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from offrl.core.learner import Algorithm
from offrl.core.nets import CriticEnsemble, DeterministicActor, ensemble_member
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
PACKABLE = ("alpha",)


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
    exploration_noise: float = 0.1  # Gaussian action noise when acting online (TD3's)
    online_alpha_end: float = 10.0  # online, alpha rises linearly to this: less weight on BC


def td3_bc_lambda(q_values: jax.Array, alpha: float) -> jax.Array:
    """lambda = alpha / mean|Q|, treated as a constant (no gradient)."""
    return jax.lax.stop_gradient(alpha / jnp.abs(q_values).mean())


def make(config: Config, obs_dim: int, act_dim: int) -> Algorithm:
    actor_net = DeterministicActor(act_dim, config.hidden_dims)
    critic_net = CriticEnsemble(2, config.hidden_dims)

    def init(rng):
        return init_td3_state(actor_net, critic_net, rng, obs_dim, act_dim, config.actor_lr, config.critic_lr)

    def critic_loss(critic_params, state, batch, rng):
        next_action = smoothed_target_action(actor_net, state.actor_target, batch["next_observations"], rng,
                                             config.policy_noise, config.noise_clip)
        next_q = critic_net.apply(state.critic_target, batch["next_observations"], next_action).min(axis=0)
        target = td_target(batch["rewards"], batch["terminals"], next_q, config.gamma)
        q = critic_net.apply(critic_params, batch["observations"], batch["actions"])
        loss = ((q - jax.lax.stop_gradient(target)) ** 2).mean(axis=1).sum()
        return loss, {"critic_loss": loss, "q_mean": q.mean()}

    def actor_loss_with(alpha):
        def actor_loss(actor_params, state, batch):
            action = actor_net.apply(actor_params, batch["observations"])
            first_critic, first_params = ensemble_member(critic_net, state.critic.params, 0)
            q = first_critic.apply(first_params, batch["observations"], action)
            bc = ((action - batch["actions"]) ** 2).mean()
            loss = -td3_bc_lambda(q, alpha) * q.mean() + bc
            return loss, {"actor_loss": loss, "bc_mse": bc}

        return actor_loss

    def update(state, batch, rng, step):
        return td3_update(state, batch, rng, step, critic_loss, actor_loss_with(config.alpha), config.policy_freq,
                          config.tau)

    def online_update(state, batch, rng, step):
        """Fine-tuning: alpha rises linearly from its offline value to online_alpha_end over
        the online updates, so the BC term weighs less and less (offrl's schedule, after
        Beeson & Montana 2022, who relax TD3+BC's constraint for online fine-tuning)."""
        alpha = config.alpha + (config.online_alpha_end - config.alpha) * online_progress(step, config)
        state, metrics = td3_update(state, batch, rng, step, critic_loss, actor_loss_with(alpha), config.policy_freq,
                                    config.tau)
        return state, {**metrics, "alpha": alpha}

    act = noisy_deterministic_act(actor_net, config.exploration_noise)
    return Algorithm("td3_bc", init, update, act, online_update=online_update)


if __name__ == "__main__":
    main(make, Config, "td3_bc")
