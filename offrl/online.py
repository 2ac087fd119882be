"""Online training: Gymnasium interaction, a device-resident replay buffer, and the loop.

Each seed gets `num_envs` environments of its own and a replay buffer of its own; the
acting of all seeds is one vmapped call, and every `update_every` env steps one compiled
chunk of `update_every * num_envs * updates_per_step` updates runs for all seeds (so the
host and device meet once per chunk, not once per step).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium import spaces

from offrl import checkpoint
from offrl.buffer import TRANSITION_FIELDS, ReplayBuffer, sample_replay
from offrl.config import OnlineConfig, save_config
from offrl.data.preprocess import Preprocessing
from offrl.learner import Algorithm, init_states, make_train_steps
from offrl.logging import RunLogger
from offrl.train import RunResult, check_divergence, default_run_dir, evaluate_seeds

def action_preprocessing(action_space: spaces.Box) -> Preprocessing:
    """Rescale a bounded env action space to the actors' [-1, 1]."""
    if np.all(action_space.low == -1.0) and np.all(action_space.high == 1.0):
        return Preprocessing()
    return Preprocessing(action_low=action_space.low.astype(np.float32),
                         action_high=action_space.high.astype(np.float32))


@functools.partial(jax.jit, donate_argnums=0)  # the buffers are updated in place, not copied
def _add_all(buffers: ReplayBuffer, transitions: dict[str, jax.Array]) -> ReplayBuffer:
    return jax.vmap(ReplayBuffer.add)(buffers, transitions)


def train_online(make_algorithm, config: OnlineConfig, algo: str, show_progress: bool = True) -> RunResult:
    """Train from scratch in `config.env` (SAC and other online learners)."""
    seeds, per_seed = config.seed_list(), config.num_envs
    envs = gym.make_vec(config.env, num_envs=len(seeds) * per_seed, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    act_dim = int(np.prod(envs.single_action_space.shape))
    preprocessing = action_preprocessing(envs.single_action_space)
    run_dir = Path(config.run_dir or default_run_dir(algo, config.env, config.seeds))
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    preprocessing.save(run_dir / "preprocessing.json")
    (run_dir / "run.json").write_text(json.dumps({"algorithm": algo, "env": config.env,
                                                  "observation_dim": obs_dim, "action_dim": act_dim}))

    algorithm: Algorithm = make_algorithm(config, obs_dim, act_dim)
    states, rngs = init_states(algorithm, seeds)
    buffers = jax.vmap(lambda _: ReplayBuffer.create(config.buffer_size, obs_dim, act_dim))(jnp.arange(len(seeds)))
    updates_per_chunk = config.update_every * per_seed * config.updates_per_step
    train_steps = make_train_steps(algorithm.update, sample_replay(config.batch_size), updates_per_chunk,
                                   data_per_seed=True)
    @jax.jit
    def explore(states, obs, keys):  # one dispatch per env step: key splitting stays inside
        keys, action_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
        return jax.vmap(lambda state, o, key: algorithm.act(state, o, key, False))(states, obs, action_keys), keys

    action_rng = np.random.default_rng(seeds[0])
    act_keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds, jnp.uint32) + 1_000_003)

    logger = RunLogger(run_dir, dataclasses.asdict(config), algo, seeds, config.env_steps, 0,
                       config.wandb, config.wandb_project, show_progress)
    obs, _ = envs.reset(seed=[seed * 1000 + index for seed in seeds for index in range(per_seed)])
    episode_returns, finished_returns = np.zeros(len(obs)), [[] for _ in seeds]
    final_eval: dict[str, np.ndarray] = {}
    updates = 0
    try:
        for env_step in range(0, config.env_steps, config.update_every):
            began = time.perf_counter()
            chunk: dict[str, list] = {key: [] for key in TRANSITION_FIELDS}
            for offset in range(config.update_every):
                if env_step + offset < config.start_steps:
                    actions = action_rng.uniform(-1, 1, (len(obs), act_dim)).astype(np.float32)
                else:
                    actions, act_keys = explore(states, obs.reshape(len(seeds), per_seed, -1).astype(np.float32),
                                                act_keys)
                    actions = np.asarray(actions).reshape(len(obs), act_dim)
                next_obs, rewards, terminated, truncated, info = envs.step(preprocessing.denormalize_actions(actions))
                done = terminated | truncated
                final_obs = next_obs.copy()  # the true next state: the pre-reset one where done
                for index in np.flatnonzero(done):
                    final_obs[index] = info["final_obs"][index]
                for key, value in zip(TRANSITION_FIELDS, (obs, actions, rewards, final_obs, terminated, truncated)):
                    chunk[key].append(np.asarray(value, np.float32).reshape(len(seeds), per_seed, *np.shape(value)[1:]))
                episode_returns += rewards
                for index in np.flatnonzero(done):
                    finished_returns[index // per_seed].append(episode_returns[index])
                    episode_returns[index] = 0.0
                obs = next_obs
            transitions = {key: np.concatenate(values, axis=1) for key, values in chunk.items()}
            buffers = _add_all(buffers, transitions)
            end = env_step + config.update_every
            metrics: dict[str, np.ndarray] = {}
            speed = 0.0
            if end > config.start_steps or config.start_steps == 0:
                update_began = time.perf_counter()
                states, rngs, train_metrics, finite = jax.block_until_ready(
                    train_steps(states, rngs, buffers, updates))
                updates += updates_per_chunk
                speed = updates_per_chunk * len(seeds) / (time.perf_counter() - update_began)
                metrics = {key: np.asarray(value) for key, value in train_metrics.items()}
                check_divergence(end, np.asarray(finite), metrics, seeds, config.divergence_threshold, run_dir)
            if any(finished_returns):
                metrics["train/episode_return"] = np.array([np.mean(r[-10:]) if r else np.nan for r in finished_returns])
            if end % config.eval_every == 0 or end == config.env_steps:
                final_eval = evaluate_seeds(algorithm, states, seeds, preprocessing, config.env, config.eval_episodes)
                metrics.update(final_eval)
            metrics["env_steps_per_s"] = np.full(len(seeds), config.update_every * per_seed / (time.perf_counter() - began))
            logger.log(end, metrics, speed)
            if end % config.checkpoint_every == 0 or end == config.env_steps:
                checkpoint.save(run_dir, end, {"states": states, "rngs": rngs}, config.keep_checkpoints)
    finally:
        logger.close()
        envs.close()
    return RunResult(run_dir, config.env_steps, final_eval, None)
