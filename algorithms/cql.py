"""CQL (Kumar et al. 2020, "Conservative Q-Learning for Offline Reinforcement Learning").

SAC whose critics are pushed down on actions the data does not support and up on the
data's own actions:
    L_Q = TD error + cql_alpha * E_s[ logsumexp_a Q(s, a) - Q(s, a_data) ]
with the logsumexp estimated by importance sampling over `num_sampled_actions` uniform
actions (density 0.5^d), actions of the current policy pi(.|s) and of pi(.|s') (each
divided by its density). The Lagrange variant tunes cql_alpha so that the gap stays near
`target_action_gap`. Settings follow CORL's D4RL configuration.

    python algorithms/cql.py --dataset d4rl-hdf5/hopper/medium-v2 --seeds 0,1,2
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax.training.train_state import TrainState

from offrl.core.learner import Algorithm
from offrl.core.nets import CriticEnsemble, TanhGaussianActor, tanh_gaussian_log_prob, tanh_gaussian_sample
from offrl.core.rl import (
    create_scalar_state,
    init_actor_critic,
    monte_carlo_returns,
    soft_update,
    td_target,
    temperature_loss,
)
from offrl.run.config import TrainConfig
from offrl.run.train import main

# Hyperparameters used only in arithmetic: a sweep may train several values in one program.
PACKABLE = ("cql_alpha",)


@dataclass
class Config(TrainConfig):
    cql_alpha: float = 10.0
    num_sampled_actions: int = 10  # per source: uniform, pi(s), pi(s')
    temperature: float = 1.0  # of the logsumexp
    lagrange: bool = False
    target_action_gap: float = -1.0  # used with lagrange
    actor_lr: float = 3e-5
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-5  # entropy temperature, at the policy's lr as in CORL (the Lagrange multiplier: critic_lr)
    hidden_dims: tuple[int, ...] = (256, 256, 256)
    orthogonal_init: bool = True
    gamma: float = 0.99
    tau: float = 5e-3
    bc_steps: int = 0  # first updates train the actor by max-likelihood on dataset actions
    cal_ql: bool = False  # Cal-QL: policy-action Q-values pushed down no lower than the data's MC returns
    normalize_observations: bool = True

    def validate(self) -> None:
        super().validate()
        if self.lagrange and self.target_action_gap <= 0:  # the gap sits above it, so the multiplier only grows
            raise ValueError(f"--lagrange True with --target_action_gap {self.target_action_gap}: the Lagrange form "
                             "holds the CQL gap near a positive target; set one, e.g. --target_action_gap 0.8 "
                             "(Cal-QL's AntMaze setting), or train without --lagrange.")


class State(flax.struct.PyTreeNode):
    actor: TrainState
    critic: TrainState
    critic_target: dict
    log_alpha: TrainState  # entropy temperature
    log_alpha_prime: TrainState  # Lagrange multiplier of the CQL gap (unused without lagrange)


def cql_logsumexp(q_random, q_current, q_next, log_pi_current, log_pi_next, action_dim, temperature):
    """Importance-sampled logsumexp over sampled actions: (critics, batch, n) each -> (critics, batch)."""
    log_uniform_density = action_dim * np.log(0.5)
    samples = jnp.concatenate([
        q_random - log_uniform_density,
        q_current - jax.lax.stop_gradient(log_pi_current),
        q_next - jax.lax.stop_gradient(log_pi_next),
    ], axis=-1)
    return jax.nn.logsumexp(samples / temperature, axis=-1) * temperature


def calibrated(q_policy, mc_returns):
    """Cal-QL (Nakamoto et al. 2023): Q at the policy's actions, (critics, batch, n), no
    lower than the Monte-Carlo return of the state under the policy that collected it, so
    the CQL term stops pushing it below the data's own value (the cause of CQL's dip when
    fine-tuning starts). Online transitions carry the returns of their own episode, as in
    Cal-QL's code (offrl.run.online holds them until the episode ends)."""
    return jnp.maximum(q_policy, mc_returns[None, :, None])


def make(config: Config, obs_dim: int, act_dim: int) -> Algorithm:
    # The policy of CQL's reference code (JaxCQL, CORL): log std = scale * output + offset,
    # both learned with the policy, from 1 and -1 (initial std about e^-1, not 1), clipped to [-20, 2].
    # Its hidden layers start orthogonal as in JaxCQL; CORL's code leaves the actor's at PyTorch's default.
    actor_net = TanhGaussianActor(act_dim, config.hidden_dims, orthogonal_init=config.orthogonal_init,
                                  log_std_min=-20.0, log_std_offset=-1.0, learned_log_std_affine=True)
    critic_net = CriticEnsemble(2, config.hidden_dims, orthogonal_init=config.orthogonal_init)
    target_entropy = -float(act_dim)
    n = config.num_sampled_actions

    def init(rng):
        return State(
            **init_actor_critic(actor_net, critic_net, rng, obs_dim, act_dim, config.actor_lr, config.critic_lr),
            log_alpha=create_scalar_state(0.0, config.alpha_lr),
            log_alpha_prime=create_scalar_state(1.0, config.critic_lr),  # CORL's initial value and lr
        )

    def policy_sample(actor_params, obs, rng):
        mean, log_std = actor_net.apply(actor_params, obs)
        return tanh_gaussian_sample(mean, log_std, rng)

    def policy_samples(actor_params, obs, rng):
        """n actions per state, (B, n, a), and their log-probabilities. The actor runs once per
        state and the n samples share its output; CORL runs it on n copies of each state,
        which gives the same samples for 8% more FLOPs per update."""
        mean, log_std = actor_net.apply(actor_params, obs)
        per_sample = lambda x: jnp.broadcast_to(x[:, None, :], (x.shape[0], n, x.shape[-1]))  # noqa: E731
        return tanh_gaussian_sample(per_sample(mean), per_sample(log_std), rng)

    def actor_loss(actor_params, state, batch, rng, step):
        mean, log_std = actor_net.apply(actor_params, batch["observations"])
        action, log_pi = tanh_gaussian_sample(mean, log_std, rng)
        alpha = jnp.exp(state.log_alpha.params["value"])
        q = critic_net.apply(state.critic.params, batch["observations"], action).min(axis=0)
        data_actions = jnp.clip(batch["actions"], -1 + 1e-6, 1 - 1e-6)
        log_likelihood = tanh_gaussian_log_prob(mean, log_std, jnp.arctanh(data_actions))
        objective = jnp.where(step < config.bc_steps, log_likelihood, q)
        loss = (alpha * log_pi - objective).mean()
        return loss, (log_pi, {"actor_loss": loss, "entropy": -log_pi.mean(), "alpha": alpha})

    def sampled_q(critic_params, obs, actions):
        """Q of every critic for n actions per state: obs (B, d), actions (B, n, a) -> (2, B, n)."""
        repeated = jnp.broadcast_to(obs[:, None, :], (*actions.shape[:2], obs.shape[-1]))
        return critic_net.apply(critic_params, repeated, actions)

    def critic_loss(critic_params, state, batch, rng):
        next_rng, random_rng, current_rng, next_sample_rng = jax.random.split(rng, 4)
        next_action, _ = policy_sample(state.actor.params, batch["next_observations"], next_rng)
        next_q = critic_net.apply(state.critic_target, batch["next_observations"], next_action).min(axis=0)
        target = jax.lax.stop_gradient(td_target(batch["rewards"], batch["terminals"], next_q, config.gamma))
        q_data = critic_net.apply(critic_params, batch["observations"], batch["actions"])
        td_loss = ((q_data - target) ** 2).mean(axis=1)

        batch_size = batch["observations"].shape[0]
        random_actions = jax.random.uniform(random_rng, (batch_size, n, act_dim), minval=-1.0, maxval=1.0)
        current_actions, log_pi_current = policy_samples(state.actor.params, batch["observations"], current_rng)
        next_actions, log_pi_next = policy_samples(state.actor.params, batch["next_observations"], next_sample_rng)
        q_current = sampled_q(critic_params, batch["observations"], current_actions)
        q_next = sampled_q(critic_params, batch["observations"], next_actions)
        if config.cal_ql:
            q_current, q_next = calibrated(q_current, batch["mc_returns"]), calibrated(q_next, batch["mc_returns"])
        logsumexp = cql_logsumexp(
            sampled_q(critic_params, batch["observations"], random_actions), q_current, q_next,
            log_pi_current, log_pi_next, act_dim, config.temperature)
        gap = (logsumexp - q_data).mean(axis=1)  # per critic
        if config.lagrange:
            alpha_prime = jnp.clip(jnp.exp(state.log_alpha_prime.params["value"]), 0.0, 1e6)
            cql_loss = jax.lax.stop_gradient(alpha_prime) * config.cql_alpha * (gap - config.target_action_gap)
        else:
            cql_loss = config.cql_alpha * gap
        loss = (td_loss + cql_loss).sum()
        return loss, (gap, {"critic_loss": td_loss.sum(), "cql_gap": gap.mean(), "q_mean": q_data.mean()})

    def update(state, batch, rng, step):
        # All losses from the networks at the start of the step, as in CORL's update.
        actor_rng, critic_rng = jax.random.split(rng)
        (_, (log_pi, actor_metrics)), actor_grads = jax.value_and_grad(actor_loss, has_aux=True)(
            state.actor.params, state, batch, actor_rng, step)
        (_, (gap, critic_metrics)), critic_grads = jax.value_and_grad(critic_loss, has_aux=True)(
            state.critic.params, state, batch, critic_rng)
        log_alpha = state.log_alpha.apply_gradients(
            grads=jax.grad(temperature_loss)(state.log_alpha.params, log_pi, target_entropy))
        state = state.replace(actor=state.actor.apply_gradients(grads=actor_grads), log_alpha=log_alpha)
        critic = state.critic.apply_gradients(grads=critic_grads)
        log_alpha_prime = state.log_alpha_prime
        if config.lagrange:
            # The multiplier grows while the gap exceeds the target and shrinks below it.
            prime_loss = lambda p: -(jnp.clip(jnp.exp(p["value"]), 0.0, 1e6) * config.cql_alpha  # noqa: E731
                                     * (jax.lax.stop_gradient(gap) - config.target_action_gap)).mean()
            log_alpha_prime = log_alpha_prime.apply_gradients(grads=jax.grad(prime_loss)(log_alpha_prime.params))
            critic_metrics["alpha_prime"] = jnp.exp(log_alpha_prime.params["value"])
        state = state.replace(critic=critic, log_alpha_prime=log_alpha_prime,
                              critic_target=soft_update(state.critic_target, critic.params, config.tau))
        return state, {**actor_metrics, **critic_metrics}

    def act(state, obs, rng, deterministic=True):
        mean, log_std = actor_net.apply(state.actor.params, obs)
        if deterministic:
            return jnp.tanh(mean)
        return tanh_gaussian_sample(mean, log_std, rng)[0]

    def dataset_columns(arrays, episode_starts):
        if not config.cal_ql:
            return {}
        return {"mc_returns": monte_carlo_returns(arrays["rewards"], episode_starts, config.gamma)}

    return Algorithm("cql", init, update, act, dataset_columns=dataset_columns)


if __name__ == "__main__":
    main(make, Config, "cql")
