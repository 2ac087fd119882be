"""Model-based offline training in one compiled loop (MOPO lineage: RAVL, MOREC).

Every epoch of `updates_per_epoch` agent updates:
1. `rollout_batch` rollouts start from dataset states and run `rollout_length` steps of the
   current policy (sampled actions) through the dynamics model; the valid transitions go
   into a device-resident model buffer holding the last `retain_epochs` epochs;
2. the agent updates on batches of `real_ratio` dataset transitions and model transitions
   for the rest.
Several epochs run per compiled call (`log_every / updates_per_epoch`), seeds side by side
under `vmap`, each with its own model buffer; the dynamics model and the dataset are shared.
The buffers are part of the checkpointed carry, so a resumed run continues exactly where it stopped.

Rewards of imagined transitions carry MOPO's penalty: r - penalty_coef * u(s, a), where u
is the largest norm of an elite's predicted std. Imagined transitions end at the task's
termination rule (dynamics.known_termination), else at a classifier learned from the
dataset's terminals, else never; the end of a rollout is a time limit, not a termination.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp

from offrl.core.buffer import ReplayBuffer, mixed_sample
from offrl.core.learner import Algorithm, compile_members, init_states, scan_updates
from offrl.data import OfflineDataset
from offrl.model_based.dynamics import (
    DynamicsModel,
    known_termination,
    never_terminal,
    train_termination_classifier,
)
from offrl.model_based.ensembles import dynamics_for
from offrl.run.config import TrainConfig, require_at_least
from offrl.run.train import TrainProgram

# (model, obs, action, rng) -> (next_obs, reward, uncertainty, keep): `keep` False ends a
# rollout at that step and drops the step (MOREC's filter); plain models keep every step.
ModelStep = Callable[[DynamicsModel, jax.Array, jax.Array, jax.Array], tuple]


def plain_model_step(model: DynamicsModel, obs, action, rng):
    next_obs, reward, uncertainty = model.step(obs, action, rng)
    return next_obs, reward, uncertainty, jnp.ones(obs.shape[0], dtype=bool)


@dataclass
class ModelBasedConfig(TrainConfig):
    """What RAVL and MOREC share: the dynamics ensemble, the rollouts and the batch mix."""

    dynamics: str = ""  # directory of a trained ensemble to reuse; empty: see share_dynamics
    share_dynamics: bool = True  # reuse the ensemble trained on the same data and settings (ROOT/dynamics)
    dynamics_max_epochs: int = 1000
    dynamics_seed: int = 0
    rollout_batch: int = 50_000  # rollouts started per epoch
    rollout_length: int = 5
    rollout_chunks: int = 1  # > 1: step only the rollouts still alive, batch / chunks rows at a time (see rollout)
    retain_epochs: int = 5  # epochs of rollouts the model buffer holds
    real_ratio: float = 0.05  # fraction of dataset transitions in each batch
    updates_per_epoch: int = 1000
    penalty_coef: float = 0.0  # MOPO's uncertainty penalty lambda
    termination: str = "auto"  # auto (known rule, else learned, else none) | learned | none

    def validate(self) -> None:
        super().validate()
        require_at_least(self, 1, "dynamics_max_epochs", "rollout_batch", "rollout_length", "rollout_chunks",
                         "retain_epochs", "updates_per_epoch")
        if self.log_every % self.updates_per_epoch:
            raise ValueError(f"log_every={self.log_every} must be a multiple of updates_per_epoch="
                             f"{self.updates_per_epoch}: a compiled call runs whole epochs.")
        if self.normalize_observations:
            raise ValueError("Model-based training runs on raw observations (rollouts apply the task's "
                             "termination rule to model states); pass --normalize_observations False.")
        if self.rollout_batch % self.rollout_chunks:
            raise ValueError(f"--rollout_chunks {self.rollout_chunks} must divide --rollout_batch {self.rollout_batch}.")
        if self.termination not in ("auto", "learned", "none"):
            raise ValueError("--termination must be auto, learned or none")
        if not 0.0 <= self.real_ratio <= 1.0:
            raise ValueError(f"--real_ratio {self.real_ratio}: the share of each batch from the dataset, in [0, 1].")


def termination_for(config: ModelBasedConfig, dataset: OfflineDataset, eval_env: str | None):
    """The termination of imagined transitions, and a word on where it came from."""
    rule = known_termination(eval_env) if config.termination == "auto" else None
    if rule is not None:
        return rule, f"known rule of {eval_env}"
    if config.termination != "none" and dataset.terminals.sum() > 0:
        data = {"next_observations": dataset.next_observations, "terminals": dataset.terminals}
        return train_termination_classifier(data, seed=config.dynamics_seed), "learned classifier"
    return never_terminal, "none (the data has no terminals)"


def rollout(model: DynamicsModel, model_step: ModelStep, terminal_fn, act, agent_state, start_obs, rng,
            length: int, penalty_coef: float, chunks: int = 1):
    """`length` imagined steps from each start state under the agent's sampled actions.

    With `chunks` > 1, each step computes only the rollouts still alive: they are moved to
    the front and stepped `batch / chunks` rows at a time, as many chunks as they fill.
    That pays where rollouts end early (MOREC's filter cuts most of its 100-step rollouts)
    and only costs where they do not. Rows are reordered and draw other random numbers
    than with `chunks` 1, so the transitions differ, not their distribution.

    Returns the transitions flattened to (length * batch, ...), the mask of valid ones
    (before the rollout terminated or was cut by the filter), and per-step statistics."""

    def imagine(obs, key):
        act_key, model_key = jax.random.split(key)
        action = act(agent_state, obs, act_key, False)
        next_obs, reward, uncertainty, keep = model_step(model, obs, action, model_key)
        return {"observations": obs, "actions": action, "rewards": reward - penalty_coef * uncertainty,
                "next_observations": next_obs, "terminals": terminal_fn(next_obs).astype(jnp.float32),
                "timeouts": jnp.zeros_like(reward)}, keep, uncertainty, reward

    def alive_only(obs, alive, key):
        batch = obs.shape[0]
        if batch % chunks:
            raise ValueError(f"{batch} rollouts do not split into {chunks} equal chunks: choose a rollout "
                             "batch that the number of chunks divides.")
        size = batch // chunks
        order = jnp.argsort(~alive, stable=True)
        obs, alive = obs[order], alive[order]
        # rows past the alive ones keep these zeros: keep False, so they stay invalid
        outputs = jax.tree.map(lambda shape: jnp.zeros((batch, *shape.shape[1:]), shape.dtype),
                               jax.eval_shape(imagine, obs[:size], key))

        def chunk(index, outputs):
            rows = jax.lax.dynamic_slice_in_dim(obs, index * size, size)
            return jax.tree.map(lambda output, part: jax.lax.dynamic_update_slice_in_dim(output, part, index * size, 0),
                                outputs, imagine(rows, jax.random.fold_in(key, index)))

        return obs, alive, jax.lax.fori_loop(0, (alive.sum() + size - 1) // size, chunk, outputs)

    def step(carry, key):
        obs, alive = carry
        if chunks > 1:
            obs, alive, (transition, keep, uncertainty, reward) = alive_only(obs, alive, key)
        else:
            transition, keep, uncertainty, reward = imagine(obs, key)
        valid = alive & keep
        return (transition["next_observations"], valid & (transition["terminals"] == 0)), (
            transition, valid, uncertainty, reward)

    alive = jnp.ones(start_obs.shape[0], dtype=bool)
    _, (transitions, valid, uncertainty, reward) = jax.lax.scan(
        step, (start_obs, alive), jax.random.split(rng, length))
    flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), transitions)
    stats = {"model/valid_fraction": valid.mean(),
             "model/uncertainty": jnp.sum(uncertainty * valid) / jnp.maximum(valid.sum(), 1),
             "model/reward": jnp.sum(reward * valid) / jnp.maximum(valid.sum(), 1)}
    return flat, valid.reshape(-1), stats


def make_epochs(algorithm: Algorithm, config: ModelBasedConfig, model_step: ModelStep, terminal_fn) -> Callable:
    """Compile `log_every / updates_per_epoch` epochs of (rollouts, updates) for a stack of seeds:
    (states, buffers, rngs, data, model, first_update) -> (states, buffers, rngs, metrics, finite)."""
    updates = scan_updates(algorithm.update, mixed_sample(config.batch_size, config.real_ratio),
                           config.updates_per_epoch)
    epochs_per_call = config.log_every // config.updates_per_epoch

    def one_seed(state, buffer, rng, data, model, first_update):
        def epoch(carry, first):
            state, buffer, rng = carry
            rng, start_rng, rollout_rng = jax.random.split(rng, 3)
            starts = data["observations"][
                jax.random.randint(start_rng, (config.rollout_batch,), 0, data["observations"].shape[0])]
            transitions, valid, stats = rollout(model, model_step, terminal_fn, algorithm.act, state, starts,
                                                rollout_rng, config.rollout_length, config.penalty_coef,
                                                config.rollout_chunks)
            buffer = buffer.add(transitions, valid)
            state, rng, metrics = updates(state, rng, (data, buffer), first)
            return (state, buffer, rng), {**jax.tree.map(jnp.nanmean, metrics), **stats}

        firsts = first_update + config.updates_per_epoch * jnp.arange(epochs_per_call)
        (state, buffer, rng), metrics = jax.lax.scan(epoch, (state, buffer, rng), firsts)
        return state, buffer, rng, metrics

    return compile_members(one_seed, carried=3, other_axes=(None, None, None))


def model_based_program(model_step: ModelStep = plain_model_step, prepare: Callable = dynamics_for):
    """A `make_program` for offrl.run.train.train that trains `algorithm` on model rollouts.

    `prepare(config, dataset, data, run_dir)` gives the model that `model_step` takes:
    the dynamics ensemble by default; MOREC pairs it with its dynamics reward."""

    def make_program(algorithm: Algorithm, config: ModelBasedConfig, seeds: list[int], data,
                     dataset: OfflineDataset, run_dir: Path) -> TrainProgram:
        model = prepare(config, dataset, data, run_dir)
        terminal_fn, origin = termination_for(config, dataset, config.eval_env or (
            dataset.metadata.eval_env_spec.id if dataset.metadata.eval_env_spec else None))
        print(f"imagined transitions terminate by: {origin}")
        obs_dim, act_dim = dataset.observations.shape[1], dataset.actions.shape[1]
        capacity = config.rollout_batch * config.rollout_length * config.retain_epochs
        states, rngs = init_states(algorithm, seeds)
        buffers = jax.vmap(lambda _: ReplayBuffer.create(capacity, obs_dim, act_dim))(jnp.arange(len(seeds)))
        epochs = make_epochs(algorithm, config, model_step, terminal_fn)

        def run(carry, data, first_update):
            states, buffers, rngs, metrics, finite = epochs(carry["states"], carry["buffers"], carry["rngs"],
                                                            data, model, first_update)
            return {"states": states, "buffers": buffers, "rngs": rngs}, metrics, finite

        return TrainProgram({"states": states, "buffers": buffers, "rngs": rngs}, run, lambda c: c["states"])

    return make_program
