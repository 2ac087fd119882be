"""Fitted Q Evaluation (Le et al. 2019; for offline model selection, Paine et al. 2020): the
value of a fixed policy learned from logged transitions alone.

    Q(s, a) <- r + gamma * (1 - terminal) * Q'(s', pi(s'))

where pi is the evaluated policy's deterministic action and Q' a Polyak-averaged copy of Q.
The policy's value is the mean of Q(s0, pi(s0)) over the data's initial states: its expected
discounted return from where the data's episodes start. Policies are members of one
compiled program, each with a critic of its own, so the seeds, checkpoints or packed
hyperparameters of a run are evaluated side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

from offrl.core.learner import compile_members, sample_uniform, scan_updates
from offrl.core.nets import CriticEnsemble
from offrl.core.rl import create_train_state, soft_update, td_target

# act(policy_state, observations, rng, deterministic) -> actions in [-1, 1], an Algorithm's act
Act = Callable[[Any, jax.Array, jax.Array, bool], jax.Array]


@dataclass(frozen=True)
class FQEConfig:
    gamma: float = 0.99
    hidden_dims: tuple[int, ...] = (256, 256)
    learning_rate: float = 3e-4
    tau: float = 0.005  # target network update rate
    batch_size: int = 256
    num_updates: int = 50_000
    chunk: int = 1_000  # updates per compiled call

    def validate(self) -> None:
        if not 0 <= self.gamma < 1:
            raise ValueError(f"FQE gamma {self.gamma}: it must be in [0, 1) for the discounted value to be finite.")
        for name in ("batch_size", "num_updates", "chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"FQE {name} {getattr(self, name)}: it must be at least 1.")
        if self.num_updates % self.chunk:
            raise ValueError(f"FQE num_updates {self.num_updates} must be a multiple of its chunk {self.chunk}.")


class FQEState(flax.struct.PyTreeNode):
    critic: TrainState
    target: dict


def fqe(act: Act, config: FQEConfig, obs_dim: int, act_dim: int):
    """(init, train_chunk, values) for evaluating policies that act with `act`:

    init(rngs) -> FQE states stacked on a leading member axis;
    train_chunk(states, rngs, policies, data, first_step) -> (states, rngs, metrics, finite):
        `config.chunk` updates for every member, member i evaluating policy state
        policies[i] (compiled once, see offrl.core.learner.compile_members);
    values(states, policies, observations) -> [members, rows] of Q(s, pi(s))."""
    critic_net = CriticEnsemble(1, config.hidden_dims)

    def init_one(rng):
        params = critic_net.init(rng, jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim)))
        return FQEState(create_train_state(critic_net, params, optax.adam(config.learning_rate)), params)

    def policy_action(policy, observations):
        return jax.lax.stop_gradient(act(policy, observations, jax.random.PRNGKey(0), True))

    def update(state: FQEState, policy, batch, step):
        next_q = critic_net.apply(state.target, batch["next_observations"],
                                  policy_action(policy, batch["next_observations"]))[0]
        target = td_target(batch["rewards"], batch["terminals"], next_q, config.gamma)

        def loss(params):
            q = critic_net.apply(params, batch["observations"], batch["actions"])[0]
            error = ((q - target) ** 2).mean()
            return error, {"fqe/td_error": error, "fqe/q_mean": q.mean()}

        grads, metrics = jax.grad(loss, has_aux=True)(state.critic.params)
        critic = state.critic.apply_gradients(grads=grads)
        return state.replace(critic=critic, target=soft_update(state.target, critic.params, config.tau)), metrics

    def chunk(state, rng, policy, data, first_step):
        updates = scan_updates(lambda s, batch, _, step: update(s, policy, batch, step),
                               sample_uniform(config.batch_size), config.chunk)
        return updates(state, rng, data, first_step)

    def init(rngs):
        return jax.tree.map(jnp.copy, jax.vmap(init_one)(rngs))

    def values_one(state, policy, observations):
        return critic_net.apply(state.critic.params, observations, policy_action(policy, observations))[0]

    train_chunk = compile_members(chunk, carried=2, other_axes=(0, None, None))
    values = jax.jit(jax.vmap(values_one, in_axes=(0, 0, None)))
    return init, train_chunk, values
