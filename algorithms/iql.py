"""IQL (Kostrikov et al. 2021, "Offline Reinforcement Learning with Implicit Q-Learning").

Never queries Q on actions outside the dataset:
    value:  V(s) <- expectile_tau of Q'(s, a) over dataset actions      (tau = 0.7)
    critic: Q(s, a) <- r + gamma * (1 - d) * V(s')
    actor:  advantage-weighted regression, weights exp(beta * (Q'(s, a) - V(s))) clipped at 100
with a cosine-decayed actor learning rate and locomotion rewards scaled by
1000 / (max episode return - min episode return).

The three losses read the networks as they were at the start of the update, so their
gradients are independent: the paper runs policy extraction concurrently with value
training, and CORL and unifloral also take the critic's V(s') from before the value step.
XLA can then run the three backward passes side by side instead of one after another
(docs/core.md, "Speed", measures the gain).

    python algorithms/iql.py --dataset d4rl-hdf5/hopper/medium-v2 --seeds 0,1,2
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

from offrl.core.learner import Algorithm
from offrl.core.nets import CriticEnsemble, DeterministicActor, GaussianActor, ValueNet, gaussian_log_prob
from offrl.core.rl import create_train_state, expectile_loss, soft_update, td_target
from offrl.run.config import TrainConfig
from offrl.run.train import main

# Hyperparameters used only in arithmetic: a sweep may train several values in one program.
PACKABLE = ("expectile", "beta", "gamma")


@dataclass
class Config(TrainConfig):
    """Defaults are the paper's D4RL locomotion settings, which also serve NeoRL-2's
    SafetyHalfCheetah (locomotion with 1,000-step episodes); its AntMaze ones (expectile 0.9,
    beta 10, reward_transform antmaze) are algorithms/configs/iql/antmaze.yaml. On NeoRL-2's
    shorter episodes the locomotion reward rule is applied per episode length
    (algorithms/configs/iql/dmsd.yaml and simglucose.yaml say why)."""

    expectile: float = 0.7
    beta: float = 3.0  # inverse temperature of the advantage weights
    max_weight: float = 100.0
    actor_lr: float = 3e-4
    value_lr: float = 3e-4
    critic_lr: float = 3e-4
    hidden_dims: tuple[int, ...] = (256, 256)
    gamma: float = 0.99
    tau: float = 0.005
    deterministic_actor: bool = False  # True: weighted MSE instead of weighted log-likelihood
    normalize_observations: bool = True
    reward_transform: str = "locomotion"


class State(flax.struct.PyTreeNode):
    actor: TrainState
    critic: TrainState
    value: TrainState
    critic_target: dict


def advantage_weights(advantage, beta: float, max_weight: float):
    """exp(beta * A), clipped at max_weight, as a constant for the actor's gradient."""
    return jax.lax.stop_gradient(jnp.minimum(jnp.exp(beta * advantage), max_weight))


def make(config: Config, obs_dim: int, act_dim: int) -> Algorithm:
    actor_net = (DeterministicActor(act_dim, config.hidden_dims) if config.deterministic_actor
                 else GaussianActor(act_dim, config.hidden_dims))
    critic_net = CriticEnsemble(2, config.hidden_dims)
    value_net = ValueNet(config.hidden_dims)
    # The actor's cosine decay spans every update the run will make: ending it with the
    # offline phase would freeze the actor (learning rate 0) for all of fine-tuning.
    total_updates = config.num_updates + config.online_steps * config.online_updates_per_step
    actor_schedule = optax.cosine_decay_schedule(config.actor_lr, total_updates)

    def init(rng):
        actor_rng, critic_rng, value_rng = jax.random.split(rng, 3)
        obs, action = jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim))
        critic_params = critic_net.init(critic_rng, obs, action)
        return State(
            actor=create_train_state(actor_net, actor_net.init(actor_rng, obs), optax.adam(actor_schedule)),
            critic=create_train_state(critic_net, critic_params, optax.adam(config.critic_lr)),
            value=create_train_state(value_net, value_net.init(value_rng, obs), optax.adam(config.value_lr)),
            critic_target=critic_params,
        )

    def value_loss(value_params, target_q, batch):
        v = value_net.apply(value_params, batch["observations"])
        loss = expectile_loss(target_q - v, config.expectile).mean()
        return loss, ({"value_loss": loss, "v_mean": v.mean()}, v)

    def actor_loss(actor_params, advantage, batch):
        weights = advantage_weights(advantage, config.beta, config.max_weight)
        if config.deterministic_actor:
            action = actor_net.apply(actor_params, batch["observations"])
            per_sample = ((action - batch["actions"]) ** 2).sum(axis=-1)
        else:
            mean, log_std = actor_net.apply(actor_params, batch["observations"])
            per_sample = -gaussian_log_prob(mean, log_std, batch["actions"])
        loss = (weights * per_sample).mean()
        return loss, {"actor_loss": loss, "adv_weight_mean": weights.mean()}

    def critic_loss(critic_params, next_v, batch):
        target = td_target(batch["rewards"], batch["terminals"], next_v, config.gamma)
        q = critic_net.apply(critic_params, batch["observations"], batch["actions"])
        loss = ((q - target) ** 2).mean(axis=1).sum()
        return loss, {"critic_loss": loss, "q_mean": q.mean()}

    def update(state, batch, rng, step):
        target_q = critic_net.apply(state.critic_target, batch["observations"], batch["actions"]).min(axis=0)
        next_v = value_net.apply(state.value.params, batch["next_observations"])
        grads, (value_metrics, v) = jax.grad(value_loss, has_aux=True)(state.value.params, target_q, batch)
        value = state.value.apply_gradients(grads=grads)
        grads, actor_metrics = jax.grad(actor_loss, has_aux=True)(state.actor.params, target_q - v, batch)
        actor = state.actor.apply_gradients(grads=grads)
        grads, critic_metrics = jax.grad(critic_loss, has_aux=True)(state.critic.params, next_v, batch)
        critic = state.critic.apply_gradients(grads=grads)
        state = State(actor=actor, critic=critic, value=value,
                      critic_target=soft_update(state.critic_target, critic.params, config.tau))
        return state, {**value_metrics, **actor_metrics, **critic_metrics}

    def act(state, obs, rng, deterministic=True):
        if config.deterministic_actor:
            return actor_net.apply(state.actor.params, obs)
        mean, log_std = actor_net.apply(state.actor.params, obs)
        if deterministic:
            return mean
        return jnp.clip(mean + jnp.exp(log_std) * jax.random.normal(rng, mean.shape), -1.0, 1.0)

    return Algorithm("iql", init, update, act)


if __name__ == "__main__":
    main(make, Config, "iql")
