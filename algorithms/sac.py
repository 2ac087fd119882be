"""SAC (Haarnoja et al. 2018, "Soft Actor-Critic"), online in a Gymnasium environment.

Maximum-entropy RL with N critics (the minimum over them in the target), a tanh-Gaussian
actor, and automatic entropy tuning towards -action_dim. With `eta > 0` the critics also
minimize EDAC's ensemble-diversity loss (An et al. 2021). RAVL and MOREC train this agent
on model rollouts, and offrl trains the behavior policies of its dataset suite with it
(datasets/README.md).

`make(config, obs_dim, act_dim)` reads num_critics, actor_lr, critic_lr, alpha_lr,
hidden_dims, gamma, tau, and (where present) eta and edac_init from any config that has them.

    python algorithms/sac.py --env Hopper-v5 --env_steps 1000000 --seeds 0
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.struct
import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from offrl.core.learner import Algorithm
from offrl.core.nets import CriticEnsemble, TanhGaussianActor, critic_action_gradients, tanh_gaussian_sample
from offrl.core.rl import create_scalar_state, init_actor_critic, soft_update, td_target, temperature_loss
from offrl.run.config import OnlineConfig, parse_config
from offrl.run.errors import user_errors_as_messages
from offrl.run.online import train_online


@dataclass
class Config(OnlineConfig):
    """Defaults are the SAC paper's MuJoCo settings."""

    num_critics: int = 2
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    hidden_dims: tuple[int, ...] = (256, 256)
    gamma: float = 0.99
    tau: float = 0.005
    eta: float = 0.0  # EDAC ensemble-diversity weight (0: plain SAC)


class SACState(flax.struct.PyTreeNode):
    actor: TrainState
    critic: TrainState
    critic_target: dict
    log_alpha: TrainState


def ensemble_diversity(action_grads: jax.Array) -> jax.Array:
    """EDAC's diversity term from each critic's gradient with respect to the action,
    action_grads (N, batch, act_dim): the mean over the batch of
    sum_{i != j} cos(grad_i, grad_j) / (N - 1). Minimizing it spreads the critics'
    action-gradients apart, so that their minimum penalizes out-of-distribution actions."""
    num_critics = action_grads.shape[0]
    unit = action_grads / (jnp.linalg.norm(action_grads, axis=-1, keepdims=True) + 1e-10)
    cosines = jnp.einsum("iba,jba->bij", unit, unit)
    off_diagonal = cosines.sum(axis=(1, 2)) - jnp.trace(cosines, axis1=1, axis2=2)
    return off_diagonal.mean() / (num_critics - 1)


def make(config, obs_dim: int, act_dim: int) -> Algorithm:
    edac_init = getattr(config, "edac_init", False)
    actor_net = TanhGaussianActor(act_dim, config.hidden_dims, edac_init=edac_init)
    critic_net = CriticEnsemble(config.num_critics, config.hidden_dims, edac_init=edac_init)
    target_entropy = -float(act_dim)
    eta = getattr(config, "eta", 0.0)

    def init(rng):
        return SACState(
            **init_actor_critic(actor_net, critic_net, rng, obs_dim, act_dim, config.actor_lr, config.critic_lr),
            log_alpha=create_scalar_state(0.0, config.alpha_lr),
        )

    def critic_loss(critic_params, state, batch, rng):
        mean, log_std = actor_net.apply(state.actor.params, batch["next_observations"])
        next_action, next_log_pi = tanh_gaussian_sample(mean, log_std, rng)
        alpha = jnp.exp(state.log_alpha.params["value"])
        next_q = critic_net.apply(state.critic_target, batch["next_observations"], next_action).min(axis=0)
        target = td_target(batch["rewards"], batch["terminals"], next_q - alpha * next_log_pi, config.gamma)
        q = critic_net.apply(critic_params, batch["observations"], batch["actions"])
        loss = ((q - jax.lax.stop_gradient(target)) ** 2).mean(axis=1).sum()
        metrics = {"critic_loss": loss, "q_mean": q.mean(), "q_std_across_critics": q.std(axis=0).mean()}
        if eta > 0:
            action_grads = critic_action_gradients(critic_net, critic_params, batch["observations"], batch["actions"])
            diversity = ensemble_diversity(action_grads)
            loss = loss + eta * diversity
            metrics["diversity_loss"] = diversity
        return loss, metrics

    def actor_loss(actor_params, state, batch, rng):
        mean, log_std = actor_net.apply(actor_params, batch["observations"])
        action, log_pi = tanh_gaussian_sample(mean, log_std, rng)
        q = critic_net.apply(state.critic.params, batch["observations"], action).min(axis=0)
        alpha = jnp.exp(state.log_alpha.params["value"])
        loss = (alpha * log_pi - q).mean()
        return loss, (log_pi, {"actor_loss": loss, "entropy": -log_pi.mean(), "alpha": alpha})

    def update(state, batch, rng, step):
        critic_rng, actor_rng = jax.random.split(rng)
        grads, critic_metrics = jax.grad(critic_loss, has_aux=True)(state.critic.params, state, batch, critic_rng)
        critic = state.critic.apply_gradients(grads=grads)
        state = state.replace(critic=critic, critic_target=soft_update(state.critic_target, critic.params, config.tau))
        grads, (log_pi, actor_metrics) = jax.grad(actor_loss, has_aux=True)(state.actor.params, state, batch, actor_rng)
        log_alpha = state.log_alpha.apply_gradients(
            grads=jax.grad(temperature_loss)(state.log_alpha.params, log_pi, target_entropy))
        return state.replace(actor=state.actor.apply_gradients(grads=grads), log_alpha=log_alpha), \
            {**critic_metrics, **actor_metrics}

    def act(state, obs, rng, deterministic=True):
        mean, log_std = actor_net.apply(state.actor.params, obs)
        if deterministic:
            return jnp.tanh(mean)
        return tanh_gaussian_sample(mean, log_std, rng)[0]

    return Algorithm("sac", init, update, act)


def main(argv: list[str] | None = None):
    with user_errors_as_messages(enabled=argv is None):
        config = parse_config(Config, "sac", argv)
        result = train_online(make, config, "sac")
    print(f"sac on {config.env}: final return {result.final_eval.get('eval/return')}; run: {result.run_dir}")
    return result


if __name__ == "__main__":
    main()
