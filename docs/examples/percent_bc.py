"""%BC (Chen et al. 2021, the filtered behavior cloning of "Decision Transformer"): clone
only the episodes whose return is in the top `fraction` of the dataset.

A complete offrl algorithm in one file, the example of "Add an algorithm" in README.md:

    python docs/examples/percent_bc.py --dataset offrl/hopper/medium-replay-v0 --fraction 0.1
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from offrl.core.learner import Algorithm
from offrl.core.nets import DeterministicActor
from offrl.core.rl import create_train_state
from offrl.run.config import TrainConfig
from offrl.run.train import main


@dataclass
class Config(TrainConfig):
    """Every option is a command-line flag: --fraction 0.25, --actor_lr 1e-3, ..."""

    fraction: float = 0.1  # share of the episodes to clone, best first
    actor_lr: float = 3e-4
    hidden_dims: tuple[int, ...] = (256, 256)
    normalize_observations: bool = True

    def validate(self) -> None:
        super().validate()
        if not 0 < self.fraction <= 1:
            raise ValueError(f"--fraction {self.fraction}: it must be in (0, 1].")


def make(config: Config, obs_dim: int, act_dim: int) -> Algorithm:
    actor = DeterministicActor(act_dim, config.hidden_dims)

    def best_episodes(arrays, episode_starts):
        """A column computed once from the dataset: 1 on the transitions of the kept episodes."""
        returns = np.add.reduceat(np.asarray(arrays["rewards"]), episode_starts)
        lengths = np.diff(np.append(episode_starts, len(arrays["rewards"])))
        kept = returns >= np.quantile(returns, 1.0 - config.fraction)
        return {"kept": np.repeat(kept, lengths).astype(np.float32)}

    def init(rng):
        return create_train_state(actor, actor.init(rng, jnp.zeros((1, obs_dim))), optax.adam(config.actor_lr))

    def loss(params, batch):
        errors = ((actor.apply(params, batch["observations"]) - batch["actions"]) ** 2).mean(axis=1)
        mse = (batch["kept"] * errors).sum() / jnp.maximum(batch["kept"].sum(), 1.0)
        return mse, {"bc_mse": mse, "kept_share": batch["kept"].mean()}

    def update(state, batch, rng, step):
        grads, metrics = jax.grad(loss, has_aux=True)(state.params, batch)
        return state.apply_gradients(grads=grads), metrics

    def act(state, obs, rng, deterministic=True):
        return actor.apply(state.params, obs)

    return Algorithm("percent_bc", init, update, act, dataset_columns=best_episodes)


if __name__ == "__main__":
    main(make, Config, "percent_bc")
