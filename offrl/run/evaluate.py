"""Policy evaluation in vectorized Gymnasium environments."""

from __future__ import annotations

import contextlib
import io
import sys
from functools import lru_cache
from typing import Callable

import gymnasium as gym
import jax
import numpy as np
from gymnasium.envs.registration import EnvSpec

from offrl.core.learner import seed_slice
from offrl.data.envs import route_mujoco_warnings
from offrl.data.preprocess import Preprocessing
from offrl.envs import register_envs


def make_policy(act: Callable, state, preprocessing: Preprocessing) -> Callable[[np.ndarray], np.ndarray]:
    """A host-side deterministic policy: raw env observations -> env actions.

    It acts on the CPU wherever training ran: one env step is a forward pass over a few
    observations, where a GPU round trip costs more than the arithmetic, and on a GPU
    shared by a sweep's runs each such call would queue behind the others' training."""
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


def flat_observations(env: gym.Env) -> gym.Env:
    """The env with each observation as one float vector, flattened in the order the data layer
    flattens a dataset's (`gymnasium.spaces.flatten`), so that a policy trained on a dataset
    recorded from Dict observations (gymnasium-robotics' mazes, Kitchen) acts in its env."""
    space = env.observation_space
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return env
    return gym.wrappers.FlattenObservation(env)


def registered(env: str | EnvSpec) -> str | EnvSpec:
    """The env, its id registered if offrl's simulators (offrl.envs) or gymnasium-robotics hold
    it (AntMaze, Adroit, PointMaze: the envs of Minari's D4RL datasets), since Gymnasium
    registers only its own envs; a spec (as datasets record it) names its entry point and
    needs no registration."""
    route_mujoco_warnings()  # every env offrl evaluates in, or fine-tunes in, is made from what this returns
    register_envs()
    if isinstance(env, str) and env not in gym.registry:
        notice = io.StringIO()
        with contextlib.redirect_stderr(notice):  # its import prints a notice on Adroit's rewards
            import gymnasium_robotics
        if "Adroit" in env:  # shown where it applies, not for every other id looked up here
            sys.stderr.write(notice.getvalue())
        gym.register_envs(gymnasium_robotics)
    return env


def make_env(env: str | EnvSpec, source: str) -> gym.Env:
    """gym.make with flat observations, failing with a user's error that names where the env
    came from (`source`, e.g. "--eval_env") when it cannot be made: an unknown id, a missing
    dependency."""
    try:
        return flat_observations(gym.make(registered(env)))
    except gym.error.Error as error:
        raise ValueError(f"{source} {env_name(env)} cannot be made ({error}). Pass a Gymnasium id that is registered "
                         "here, e.g. Hopper-v5; `python -c 'import gymnasium; gymnasium.pprint_registry()'` lists "
                         "them.") from None


def require_fit(env: gym.Env, source: str, data_dims: tuple[int, int] | None = None, data: str = "") -> None:
    """Refuse, before any training, an env that offrl's policies cannot act in: actions other
    than a Box, or (given `data_dims`, the observation and action sizes the policy is trained
    on) observations or actions of other sizes, found otherwise only at the first evaluation."""
    name = env_name(env.spec or "")
    if not isinstance(env.action_space, gym.spaces.Box):
        raise ValueError(f"{source} {name} takes {env.action_space} actions; offrl's policies output continuous "
                         "(Box) actions. Pass an env with a Box action space.")
    env_dims = (int(np.prod(env.observation_space.shape)), int(np.prod(env.action_space.shape)))
    if data_dims is not None and env_dims != tuple(data_dims):
        raise ValueError(f"{source} {name} has {env_dims[0]}-dim observations and {env_dims[1]}-dim actions, "
                         f"{data} has {data_dims[0]} and {data_dims[1]}: a policy trained on the one cannot act in "
                         "the other. Pass an env with the data's observation and action layout (--eval_env, "
                         "--online_env, or --env for `offrl evaluate`).")


def env_name(env: str | EnvSpec) -> str:
    return env.id if isinstance(env, EnvSpec) else env


def evaluate_policy(
    policy: Callable[[np.ndarray], np.ndarray],
    env: str | EnvSpec,
    num_episodes: int,
    seed: int,
) -> np.ndarray:
    """Undiscounted returns of `num_episodes` episodes, run side by side, one per sub-env."""
    envs = gym.make_vec(registered(env), num_envs=num_episodes, vectorization_mode="sync",
                        wrappers=[flat_observations])
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


def episode_returns(algorithm, states, seeds, preprocessing, env, episodes: int) -> np.ndarray:
    """Each seed's deterministic policy's return in each episode, [seeds, episodes]; a seed's
    episodes are seeded the same way at every evaluation."""
    return np.array([
        evaluate_policy(make_policy(algorithm.act, seed_slice(states, index), preprocessing),
                        env, episodes, seed=100_000 + seed)
        for index, seed in enumerate(seeds)
    ])


def evaluate_seeds(algorithm, states, seeds, preprocessing, env, episodes: int, normalized_score=None,
                   keep_episodes: bool = False) -> dict[str, np.ndarray]:
    """Mean return of each seed's deterministic policy (and its normalized score); with
    `keep_episodes` also every episode's ([seeds, episodes]), to judge their spread."""
    per_episode = episode_returns(algorithm, states, seeds, preprocessing, env, episodes)
    result = {"eval/return": per_episode.mean(axis=1)}
    if keep_episodes:
        result["eval/episode_returns"] = per_episode
    if normalized_score is not None:
        result["eval/normalized_score"] = normalized_score(result["eval/return"])
        if keep_episodes:
            result["eval/episode_normalized_scores"] = normalized_score(per_episode)
    return result
