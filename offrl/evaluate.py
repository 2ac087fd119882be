"""Policy evaluation in vectorized Gymnasium environments."""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import gymnasium as gym
import jax
import numpy as np
from gymnasium.envs.registration import EnvSpec

from offrl.data.preprocess import Preprocessing


def make_policy(act: Callable, state, preprocessing: Preprocessing) -> Callable[[np.ndarray], np.ndarray]:
    """A host-side deterministic policy: raw env observations -> env actions.

    It acts on the CPU wherever training ran: one env step is a forward pass over a few
    observations, where a GPU round trip costs more than the arithmetic, and on a GPU
    shared by a sweep's runs each such call queues behind the others' training (on an
    H100 running 10 runs, CQL's training calls took 240 s of a run's ~14 minutes)."""
    state = jax.device_put(state, jax.devices("cpu")[0])
    act_jit = deterministic_act(act)

    def policy(observations: np.ndarray) -> np.ndarray:
        obs = preprocessing.normalize_observations(np.asarray(observations, np.float32))
        action = np.asarray(act_jit(state, obs))
        return preprocessing.denormalize_actions(action)

    return policy


@lru_cache(maxsize=32)
def deterministic_act(act: Callable) -> Callable:
    """One jitted deterministic `act` per algorithm, so the evaluations of a run (every
    seed, every `eval_every`) reuse its compilation instead of paying ~0.1 s each."""
    return jax.jit(lambda state, obs: act(state, obs, jax.random.PRNGKey(0), True))


def make_env(env: str | EnvSpec, source: str) -> gym.Env:
    """gym.make, failing with a user's error that names where the env came from (`source`,
    e.g. "--eval_env") when it cannot be made: an unknown id, a missing dependency."""
    try:
        return gym.make(env)
    except gym.error.Error as error:
        name = env.id if isinstance(env, EnvSpec) else env
        raise ValueError(f"{source} {name} cannot be made ({error}). Pass a Gymnasium id that is registered here, "
                         "e.g. Hopper-v5; `python -c 'import gymnasium; gymnasium.pprint_registry()'` lists "
                         "them.") from None


def evaluate_policy(
    policy: Callable[[np.ndarray], np.ndarray],
    env: str | EnvSpec,
    num_episodes: int,
    seed: int,
) -> np.ndarray:
    """Undiscounted returns of `num_episodes` episodes, run side by side, one per sub-env."""
    envs = gym.make_vec(env, num_envs=num_episodes, vectorization_mode="sync")
    try:
        obs, _ = envs.reset(seed=[seed + i for i in range(num_episodes)])
        returns = np.zeros(num_episodes)
        running = np.ones(num_episodes, dtype=bool)
        low, high = envs.single_action_space.low, envs.single_action_space.high
        while running.any():
            action = np.clip(policy(obs), low, high)
            obs, reward, terminated, truncated, _ = envs.step(action)
            returns += reward * running
            running &= ~(terminated | truncated)
    finally:
        envs.close()
    return returns
