"""Online training in Gymnasium environments: from scratch (SAC) or fine-tuning an
offline-trained agent with mixed offline/online replay.

Each seed gets `num_envs` environments and a device-resident replay buffer of its own;
the acting of all seeds is one jitted call per vector step, and every `update_every`
vector steps one compiled chunk of updates runs for all seeds (update-to-data ratio
`updates_per_step`). When fine-tuning, each batch takes `online_ratio` of its rows from
the online buffer and the rest from the offline dataset (0.5 is RLPD's symmetric sampling).

Online data goes through the run's preprocessing (observation normalization, reward
transform, action rescaling), so it matches the offline data. A transition enters the
buffer once the next action is known (ReBRAC's critic penalty uses it); at an episode's
end its own action stands in, as in the offline datasets. Where the algorithm adds columns
computed over whole episodes (`dataset_columns`: Cal-QL's Monte-Carlo returns), a
transition enters once its episode has ended and the columns are known.

The loop's state (algorithm states, rngs, buffers, action keys, env step) is checkpointed
whole: a killed run resumes with its online buffer. The environments themselves cannot be
saved: a resumed run starts fresh episodes (seeded by the env step), and the transitions
not yet in the buffer (one per env, or the episode so far where transitions wait for its
end) are lost.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec

from offrl.core.buffer import ReplayBuffer, mixed_sample, sample_replay
from offrl.core.learner import Algorithm, init_states, make_train_steps
from offrl.data.dataset import TRANSITION_KEYS
from offrl.data.preprocess import Preprocessing
from offrl.run import checkpoint
from offrl.run.config import OnlineConfig
from offrl.run.directory import (
    RunResult,
    check_divergence,
    closing_run,
    default_run_dir,
    record_run,
    resume_step,
    run_directory,
    stop_if_requested,
    stop_requested,
)
from offrl.run.evaluate import evaluate_seeds, flat_observations, make_env, registered, require_fit
from offrl.run.logging import RunLogger, resolve_wandb_mode


@dataclass(frozen=True)
class OnlinePhase:
    """One online phase. Steps count transitions of one seed."""

    env: str | EnvSpec
    env_steps: int
    num_envs: int = 1  # environments per seed
    update_every: int = 50  # vector steps between compiled chunks of updates
    updates_per_step: int = 1  # update-to-data ratio
    start_steps: int = 0  # uniform random actions first
    batch_size: int = 256
    online_ratio: float = 1.0  # share of each batch from the online buffer (the rest: offline data)
    buffer_size: int = 1_000_000
    eval_every: int = 10_000
    eval_episodes: int = 10
    checkpoint_every: int = 50_000
    keep_checkpoints: int = 2
    divergence_threshold: float = 1e8
    step_offset: int = 0  # where the phase starts on the run's step axis (after offline updates)
    snapshot_every: int = 0  # env steps between snapshots of the states alone (0: none)

    @classmethod
    def from_scratch(cls, config: OnlineConfig) -> OnlinePhase:
        """Online training from scratch (SAC): every batch from the online buffer."""
        return cls(env=config.env, env_steps=config.env_steps, num_envs=config.num_envs,
                   update_every=config.update_every, updates_per_step=config.updates_per_step,
                   start_steps=config.start_steps, batch_size=config.batch_size, online_ratio=1.0,
                   buffer_size=config.buffer_size, eval_every=config.eval_every, eval_episodes=config.eval_episodes,
                   checkpoint_every=config.checkpoint_every, keep_checkpoints=config.keep_checkpoints,
                   divergence_threshold=config.divergence_threshold, snapshot_every=config.snapshot_every)

    @classmethod
    def fine_tuning(cls, config, env) -> OnlinePhase:
        """Fine-tuning after `config.num_updates` offline updates (a TrainConfig's online_*
        settings), in `env`; it checkpoints at its evaluations."""
        return cls(env=env, env_steps=config.online_steps, num_envs=config.online_num_envs,
                   update_every=config.online_update_every, updates_per_step=config.online_updates_per_step,
                   batch_size=config.batch_size, online_ratio=config.online_ratio,
                   buffer_size=config.online_buffer_size, eval_every=config.online_eval_every,
                   eval_episodes=config.eval_episodes, checkpoint_every=config.online_eval_every,
                   keep_checkpoints=config.keep_checkpoints, divergence_threshold=config.divergence_threshold,
                   step_offset=config.num_updates)

    @property
    def steps_per_chunk(self) -> int:
        return self.update_every * self.num_envs

    def check(self) -> None:
        for name in ("env_steps", "start_steps", "eval_every", "checkpoint_every", "snapshot_every"):
            if getattr(self, name) % self.steps_per_chunk:
                raise ValueError(f"{name}={getattr(self, name)} must be a multiple of update_every x num_envs "
                                 f"= {self.steps_per_chunk} (env steps between compiled update chunks): change it, or "
                                 "update_every.")


def action_preprocessing(action_space: spaces.Box) -> Preprocessing:
    """Rescale a bounded env action space to the actors' [-1, 1]."""
    if np.all(action_space.low == -1.0) and np.all(action_space.high == 1.0):
        return Preprocessing()
    return Preprocessing(action_low=action_space.low.astype(np.float32),
                         action_high=action_space.high.astype(np.float32))


def new_buffers(num_seeds: int, capacity: int, obs_dim: int, act_dim: int, fields=TRANSITION_KEYS) -> ReplayBuffer:
    return jax.vmap(lambda _: ReplayBuffer.create(capacity, obs_dim, act_dim, fields))(jnp.arange(num_seeds))


@functools.partial(jax.jit, donate_argnums=0)  # the buffers are updated in place, not copied
def _add_all(buffers: ReplayBuffer, transitions: dict[str, jax.Array], valid: jax.Array) -> ReplayBuffer:
    return jax.vmap(ReplayBuffer.add)(buffers, transitions, valid)


class TransitionCollector:
    """Holds each env's last transition until its next action is known, then commits it.

    With `episode_columns` (the algorithm's `dataset_columns` hook, e.g. Cal-QL's Monte-Carlo
    returns) a transition waits for the end of its episode instead; the hook then computes
    its columns from the whole episode, as it did for the offline data's episodes. Cal-QL's
    code likewise adds an online trajectory to its buffer once the trajectory has ended."""

    def __init__(self, num_seeds: int, per_seed: int, shapes: dict[str, tuple[int, ...]],
                 episode_columns: Callable[[dict, np.ndarray], dict] | None = None):
        self.num_seeds, self.per_seed, self.shapes = num_seeds, per_seed, shapes
        self.episode_columns = episode_columns
        self.pending: list[dict | None] = [None] * (num_seeds * per_seed)
        self.episodes: list[list[dict]] = [[] for _ in range(num_seeds * per_seed)]
        self.committed: list[list[dict]] = [[] for _ in range(num_seeds)]

    def _complete(self, index: int, transition: dict) -> None:
        if self.episode_columns is None:
            self.committed[index // self.per_seed].append(transition)
        else:
            self.episodes[index].append(transition)

    def act(self, actions: np.ndarray) -> None:
        """The envs chose `actions`: their pending transitions are complete."""
        for index, transition in enumerate(self.pending):
            if transition is not None:
                self._complete(index, {**transition, "next_actions": actions[index]})
                self.pending[index] = None

    def step(self, index: int, transition: dict, done: bool) -> None:
        if not done:
            self.pending[index] = transition
            return
        self._complete(index, {**transition, "next_actions": transition["actions"]})  # no next action: its own
        if self.episode_columns is not None:
            episode = self.episodes[index]
            arrays = {key: np.stack([step[key] for step in episode]) for key in episode[0]}
            columns = self.episode_columns(arrays, np.array([0]))
            self.committed[index // self.per_seed].extend(
                {**step, **{key: values[row] for key, values in columns.items()}} for row, step in enumerate(episode))
            self.episodes[index] = []

    def drain(self, min_rows: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Committed transitions as (seeds, rows) arrays with a validity mask. A chunk of
        `update_every` vector steps commits at most update_every + 1 per env (the first one
        left pending by the chunk before), `min_rows` in all; whole episodes, when they wait
        for their end, can commit more, and then the rows round up to a power of two, so
        that few shapes are compiled."""
        longest = max(len(transitions) for transitions in self.committed)
        rows = min_rows if longest <= min_rows else 1 << (longest - 1).bit_length()
        valid = np.zeros((self.num_seeds, rows), bool)
        arrays = {key: np.zeros((self.num_seeds, rows, *shape), np.float32) for key, shape in self.shapes.items()}
        for seed_index, transitions in enumerate(self.committed):
            valid[seed_index, :len(transitions)] = True
            for row, transition in enumerate(transitions):
                for key, value in transition.items():
                    arrays[key][seed_index, row] = value
        self.committed = [[] for _ in range(self.num_seeds)]
        return arrays, valid


def run_online(algorithm: Algorithm, update: Callable, phase: OnlinePhase, seeds: list[int], carry: dict,
               preprocessing: Preprocessing, run_dir: Path, logger: RunLogger, offline_data=None,
               normalized_score=None) -> tuple[dict, dict[str, np.ndarray]]:
    """Run (or continue, from carry["env_step"]) an online phase. `carry` holds states,
    rngs, buffers and act_keys with a leading seed axis, and env_step."""
    phase.check()
    per_seed, num_seeds = phase.num_envs, len(seeds)
    envs = gym.make_vec(registered(phase.env), num_envs=num_seeds * per_seed, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
                        wrappers=[flat_observations])
    act_dim = int(np.prod(envs.single_action_space.shape))
    sample = (sample_replay(phase.batch_size) if offline_data is None
              else mixed_sample(phase.batch_size, 1.0 - phase.online_ratio))
    updates_per_chunk = phase.steps_per_chunk * phase.updates_per_step
    train_steps = make_train_steps(update, sample, updates_per_chunk,
                                   data_axes=0 if offline_data is None else (None, 0))

    @jax.jit
    def explore(states, obs, keys, random_phase):  # one dispatch per vector step
        keys, action_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
        policy = jax.vmap(lambda state, o, key: algorithm.act(state, o, key, False))(states, obs, action_keys)
        uniform = jax.vmap(lambda key: jax.random.uniform(key, policy.shape[1:], minval=-1.0, maxval=1.0))(
            jax.vmap(lambda key: jax.random.fold_in(key, 1))(action_keys))
        return jnp.where(random_phase, uniform, policy), keys

    columns = {key: value.shape[2:] for key, value in carry["buffers"].data.items()}
    extra_columns = set(columns) - set(TRANSITION_KEYS)  # the dataset_columns hook's, e.g. Cal-QL's returns
    collector = TransitionCollector(num_seeds, per_seed, columns, algorithm.dataset_columns if extra_columns else None)
    start = int(carry["env_step"])
    obs, _ = envs.reset(seed=[seed * 100_003 + start + index for seed in seeds for index in range(per_seed)])
    episode_returns, finished_returns = np.zeros(len(obs)), [[] for _ in seeds]
    final_eval: dict[str, np.ndarray] = {}
    states, rngs, buffers, act_keys = carry["states"], carry["rngs"], carry["buffers"], carry["act_keys"]
    try:
        for env_step in range(start, phase.env_steps, phase.steps_per_chunk):
            began = time.perf_counter()
            for offset in range(phase.update_every):
                normalized = preprocessing.normalize_observations(obs.astype(np.float32))
                random_phase = env_step + offset * per_seed < phase.start_steps
                actions, act_keys = explore(states, normalized.reshape(num_seeds, per_seed, -1), act_keys, random_phase)
                actions = np.asarray(actions).reshape(len(obs), act_dim)
                collector.act(actions)
                next_obs, rewards, terminated, truncated, info = envs.step(preprocessing.denormalize_actions(actions))
                done = terminated | truncated
                final_obs = next_obs.copy()  # the true next state: the pre-reset one where done
                for index in np.flatnonzero(done):
                    final_obs[index] = info["final_obs"][index]
                normalized_next = preprocessing.normalize_observations(final_obs.astype(np.float32))
                transformed = preprocessing.transform_rewards(rewards.astype(np.float32))
                for index in range(len(obs)):
                    collector.step(index, {"observations": normalized[index], "actions": actions[index],
                                           "rewards": transformed[index], "next_observations": normalized_next[index],
                                           "terminals": float(terminated[index]), "timeouts": float(truncated[index])},
                                   bool(done[index]))
                episode_returns += rewards
                for index in np.flatnonzero(done):
                    finished_returns[index // per_seed].append(episode_returns[index])
                    episode_returns[index] = 0.0
                obs = next_obs
            transitions, valid = collector.drain(phase.steps_per_chunk + per_seed)
            buffers = _add_all(buffers, transitions, valid)
            end = env_step + phase.steps_per_chunk
            metrics: dict[str, np.ndarray] = {}
            updates = 0
            if end > phase.start_steps:
                updates = updates_per_chunk
                data = buffers if offline_data is None else (offline_data, buffers)
                first_update = phase.step_offset + env_step * phase.updates_per_step
                states, rngs, train_metrics, finite = jax.block_until_ready(
                    train_steps(states, rngs, data, first_update))
                metrics = {key: np.asarray(value) for key, value in train_metrics.items()}
                check_divergence(phase.step_offset + end, np.asarray(finite), metrics, seeds,
                                 phase.divergence_threshold, run_dir)
            if any(finished_returns):
                metrics["train/episode_return"] = np.array([np.mean(r[-10:]) if r else np.nan for r in finished_returns])
            if end % phase.eval_every == 0 or end == phase.env_steps:
                final_eval = evaluate_seeds(algorithm, states, seeds, preprocessing, phase.env, phase.eval_episodes,
                                            normalized_score)
                metrics.update(final_eval)
            metrics["env_steps"] = np.full(num_seeds, float(end))
            metrics["env_steps_per_s"] = np.full(num_seeds, phase.steps_per_chunk / (time.perf_counter() - began))
            logger.log(phase.step_offset + end, metrics, updates)
            carry = {"states": states, "rngs": rngs, "buffers": buffers, "act_keys": act_keys,
                     "env_step": np.int64(end)}
            if end % phase.checkpoint_every == 0 or end == phase.env_steps or stop_requested():
                checkpoint.save(run_dir, phase.step_offset + end, {"carry": carry}, phase.keep_checkpoints)
            if phase.snapshot_every and end % phase.snapshot_every == 0:
                checkpoint.save_snapshot(run_dir, phase.step_offset + end, states)
            stop_if_requested(phase.step_offset + end)
    finally:
        envs.close()
    return carry, final_eval


def require_chunk_boundary(env_step: int, steps_per_chunk: int) -> None:
    """A run resumed at `env_step` goes on in chunks of `steps_per_chunk` env steps, which must
    end on its evaluations and budget as the uninterrupted run's did."""
    if env_step % steps_per_chunk:
        raise ValueError(f"The run stopped at env step {env_step:,}, which update_every x num_envs = {steps_per_chunk} "
                         "does not divide: resume it with the update_every it trained with (--update_every, or "
                         "--online_update_every when fine-tuning).")


def online_carry(states, rngs, seeds: list[int], buffers: ReplayBuffer) -> dict:
    act_keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds, jnp.uint32) + 1_000_003)
    return {"states": states, "rngs": rngs, "buffers": buffers, "act_keys": act_keys, "env_step": np.int64(0)}


def train_online(make_algorithm, config: OnlineConfig, algo: str, show_progress: bool = True) -> RunResult:
    """Train from scratch in `config.env` (SAC and other online learners)."""
    seeds = config.seed_list()
    probe = make_env(config.env, "--env")
    require_fit(probe, "--env")
    resolve_wandb_mode(config.wandb)  # --wandb online without a key fails now, not after the run began
    obs_dim = int(np.prod(probe.observation_space.shape))
    act_dim = int(np.prod(probe.action_space.shape))
    preprocessing = action_preprocessing(probe.action_space)
    probe.close()
    run_path = Path(config.resume or config.run_dir or default_run_dir(config.root, algo, config.env, config.seeds))
    with run_directory(run_path, resume=bool(config.resume)) as run_dir:
        start = resume_step(run_dir) if config.resume else 0
        run_id = record_run(run_dir, config, {"algorithm": algo, "env": config.env, "observation_dim": obs_dim,
                                              "action_dim": act_dim})
        if not config.resume:
            preprocessing.save(run_dir / "preprocessing.json")
        algorithm: Algorithm = make_algorithm(config, obs_dim, act_dim)
        states, rngs = init_states(algorithm, seeds)
        carry = online_carry(states, rngs, seeds, new_buffers(len(seeds), config.buffer_size, obs_dim, act_dim))
        if start:
            carry = checkpoint.restore(checkpoint.latest(run_dir), {"carry": carry})["carry"]
            require_chunk_boundary(int(carry["env_step"]), config.update_every * config.num_envs)
        logger = RunLogger(run_dir, dataclasses.asdict(config), algo, seeds, config.env_steps,
                           int(carry["env_step"]), config.wandb, config.wandb_project, show_progress, run_id=run_id)
        with closing_run(logger, run_dir):
            carry, final_eval = run_online(algorithm, algorithm.update, OnlinePhase.from_scratch(config), seeds, carry,
                                           preprocessing, run_dir, logger)
    return RunResult(run_dir, config.env_steps, final_eval, None)
