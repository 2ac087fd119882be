"""Behavior cloning: regress a deterministic tanh policy onto the dataset's actions.

The baseline every offline RL method should beat on mixed-quality data.

    python algorithms/bc.py --dataset d4rl-hdf5/hopper/medium-v2 --seeds 0,1,2
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax

from offrl.core.learner import Algorithm
from offrl.core.nets import DeterministicActor
from offrl.core.rl import create_train_state
from offrl.run.config import TrainConfig
from offrl.run.train import main


@dataclass
class Config(TrainConfig):
    """Defaults match CORL's BC: 2x256 MLP, Adam 3e-4, batch 256, normalized states."""

    actor_lr: float = 3e-4
    hidden_dims: tuple[int, ...] = (256, 256)
    normalize_observations: bool = True


def make(config: Config, obs_dim: int, act_dim: int) -> Algorithm:
    actor_net = DeterministicActor(act_dim, config.hidden_dims)

    def init(rng):
        params = actor_net.init(rng, jnp.zeros((1, obs_dim)))
        return create_train_state(actor_net, params, optax.adam(config.actor_lr))

    def loss(params, batch):
        mse = ((actor_net.apply(params, batch["observations"]) - batch["actions"]) ** 2).mean()
        return mse, {"bc_mse": mse}

    def update(state, batch, rng, step):
        grads, metrics = jax.grad(loss, has_aux=True)(state.params, batch)
        return state.apply_gradients(grads=grads), metrics

    def act(state, obs, rng, deterministic=True):
        return actor_net.apply(state.params, obs)

    return Algorithm("bc", init, update, act)


if __name__ == "__main__":
    main(make, Config, "bc")
