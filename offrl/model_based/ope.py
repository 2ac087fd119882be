"""Model-based offline policy evaluation: a run's policies rolled out in a dynamics ensemble
learned from data, the spread of the ensemble's members reported as the uncertainty.

From every initial state of the data's episodes, each elite member of the ensemble rolls
each policy out on its own for `horizon` steps with its mean prediction (no sampling), until
the task's termination rule (or a classifier learned from the data's terminals) ends the
rollout. A member's estimate is the mean discounted return over the initial states; the
estimate is the mean over the elites, the uncertainty their standard deviation: where the
members disagree the model has not seen the policy's states. The ensemble is offrl's own
(offrl.model_based.dynamics), trained once per data and settings and shared through the
dynamics cache, as RAVL and MOREC share theirs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from offrl.data import normalized_score
from offrl.model_based.dynamics import (
    DynamicsConfig,
    DynamicsModel,
    known_termination,
    load_dynamics,
    never_terminal,
    train_termination_classifier,
)
from offrl.model_based.ensembles import shared_dynamics


@dataclass(frozen=True)
class ModelOPEConfig:
    gamma: float = 0.99
    horizon: int = 1000  # imagined steps per rollout at most
    dynamics_max_epochs: int = 1000
    dynamics_seed: int = 0

    def validate(self) -> None:
        if not 0 <= self.gamma <= 1:
            raise ValueError(f"model OPE gamma {self.gamma}: it must be in [0, 1].")
        if self.horizon < 1 or self.dynamics_max_epochs < 1:
            raise ValueError("model OPE horizon and dynamics_max_epochs must be at least 1.")


def member_returns(model: DynamicsModel, act, policies, normalize, terminal, starts, horizon: int, gamma: float):
    """[policies, elites] mean discounted returns of each policy under each elite's mean
    dynamics from `starts` (raw observations); `normalize` maps them to what the policies see.
    Every member rolls out at once (one ensemble prediction per step); the elites' are kept."""

    def one(policy):
        def step(carry, t):
            obs, alive, total = carry  # (members, starts, ...): one rollout per member
            action = jax.vmap(lambda rows: act(policy, normalize(rows), jax.random.PRNGKey(0), True))(obs)
            mean, _ = model.predict_each(obs, action)
            next_obs = obs + mean[..., :-1]
            total = total + alive * gamma**t * mean[..., -1]
            return (next_obs, alive * (1.0 - jax.vmap(terminal)(next_obs).astype(jnp.float32)), total), None

        shape = (model.num_members, starts.shape[0])
        carry = (jnp.broadcast_to(starts, (*shape, starts.shape[1])), jnp.ones(shape), jnp.zeros(shape))
        (_, _, total), _ = jax.lax.scan(step, carry, jnp.arange(horizon, dtype=jnp.float32))
        return total[model.elites].mean(axis=1)

    return jax.jit(jax.vmap(one))(policies)


def model_estimates(run_dir: str | Path, data_id: str | None = None, config: ModelOPEConfig = ModelOPEConfig(),
                    checkpoint_path: str | Path | None = None, dynamics: str | Path | None = None) -> dict[str, Any]:
    """Model-based estimates of every policy of a run (its seeds, times its packed points):
    `ope/model_value` (mean discounted return over the elites), `ope/model_uncertainty`
    (their standard deviation) and, with gamma 1 and reference scores, `ope/model_normalized_score`."""
    from offrl.run.ope import offline_policies
    from offrl.run.train import run_members

    config.validate()
    run, algorithm, policies, preprocessing, run_config, dataset = offline_policies(run_dir, data_id, checkpoint_path)
    # the model learns raw observations and rewards, and actions as the policies give them ([-1, 1])
    plain = replace(preprocessing, obs_mean=None, obs_std=None, reward_transform="none", reward_scale=1.0,
                    reward_bias=0.0).apply(dataset)
    arrays = {key: plain[key] for key in ("observations", "actions", "next_observations", "rewards", "terminals")}
    if dynamics:
        model = load_dynamics(dynamics)
    else:
        dynamics_config = DynamicsConfig(max_epochs=config.dynamics_max_epochs, seed=config.dynamics_seed)
        model = load_dynamics(shared_dynamics(dataset.metadata.dataset_id,
                                              {key: arrays[key] for key in ("observations", "actions",
                                                                            "next_observations", "rewards")},
                                              dynamics_config, run_config.root))
    env = dataset.metadata.eval_env_spec
    terminal = known_termination(env.id if env else None)
    if terminal is None:
        terminal = (train_termination_classifier(arrays, seed=config.dynamics_seed) if arrays["terminals"].sum()
                    else never_terminal)
    returns = np.asarray(member_returns(model, algorithm.act, policies, preprocessing.normalize_observations,
                                        terminal, jnp.asarray(arrays["observations"][dataset.episode_starts]),
                                        config.horizon, config.gamma))
    seeds, points = run_members(run_config)
    result = {"seeds": seeds, "points": points, "ope/model_value": returns.mean(axis=1),
              "ope/model_uncertainty": returns.std(axis=1), "data": dataset.metadata.dataset_id,
              "settings": asdict(config)}
    reference = run.get("ref_min_score"), run.get("ref_max_score")
    if config.gamma == 1 and None not in reference:  # an undiscounted return: on the scores' scale
        result["ope/model_normalized_score"] = normalized_score(result["ope/model_value"], *reference)
    return result
