"""Collecting datasets from Gymnasium environments with a batched policy.

The policy maps a batch of observations (one row per sub-environment) to a batch of
actions, so a jitted network policy runs once per vector step for all environments.
"""

from __future__ import annotations

from typing import Callable

import gymnasium as gym
import numpy as np

from offrl.data.envs import route_mujoco_warnings
from offrl.data.episodes import Episode

BatchPolicy = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def collect_episodes(env_id: str, policy: BatchPolicy, num_steps: int, num_envs: int = 8,
                     seed: int = 0, on_steps: Callable[[int], None] | None = None, **env_kwargs) -> tuple[list[Episode], gym.Space, gym.Space]:
    """Roll out `policy` until `num_steps` transitions are stored.

    Terminations and truncations are kept apart. Episodes still running at the end are
    stored truncated there, as Minari expects every episode to end terminated or truncated,
    and marked `cut_off` (the dataset's metadata lists them: see
    `OfflineDataset.complete_episodes`). `on_steps(n)` is told of every n new transitions
    (progress bars)."""
    route_mujoco_warnings()
    # Same-step autoreset: a finished sub-env returns its next episode's first observation
    # at once, with the finished episode's last observation in info["final_obs"].
    envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
                        **env_kwargs)
    rng = np.random.default_rng(seed)
    buffers = [_empty() for _ in range(num_envs)]
    episodes: list[Episode] = []
    stored = 0
    try:
        obs, _ = envs.reset(seed=seed)
        for index in range(num_envs):
            buffers[index]["obs"].append(obs[index])
        while stored < num_steps:
            stored_before = stored
            actions = np.asarray(policy(obs, rng), dtype=np.float32)
            obs, rewards, terminated, truncated, info = envs.step(actions)
            for index, buffer in enumerate(buffers):
                if stored == num_steps:  # exactly num_steps; the other envs' last step is dropped
                    break
                done = terminated[index] or truncated[index]
                buffer["act"].append(actions[index])
                buffer["rew"].append(rewards[index])
                buffer["term"].append(terminated[index])
                buffer["trunc"].append(truncated[index])
                buffer["obs"].append(info["final_obs"][index] if done else obs[index])
                stored += 1
                if done:
                    episodes.append(_episode(buffer))
                    buffers[index] = _empty()
                    buffers[index]["obs"].append(obs[index])
            if on_steps is not None:
                on_steps(stored - stored_before)
        for buffer in buffers:
            if buffer["act"]:
                buffer["trunc"][-1] = True
                episodes.append(_episode(buffer, cut_off=True))
        return episodes, envs.single_observation_space, envs.single_action_space
    finally:
        envs.close()


def _empty() -> dict[str, list]:
    return {"obs": [], "act": [], "rew": [], "term": [], "trunc": []}


def _episode(buffer: dict, cut_off: bool = False) -> Episode:
    return Episode(
        observations=np.asarray(buffer["obs"], dtype=np.float32),
        actions=np.asarray(buffer["act"], dtype=np.float32),
        rewards=np.asarray(buffer["rew"], dtype=np.float32),
        terminations=np.asarray(buffer["term"], dtype=bool),
        truncations=np.asarray(buffer["trunc"], dtype=bool),
        cut_off=cut_off,
    )
