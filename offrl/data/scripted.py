"""A scripted swing-up controller for Pendulum-v1, and datasets collected with it.

These small datasets back the fast learning tests and the quick-start run: the controller
is a known good policy (about -140 mean return against about -1200 for random actions),
and Gaussian action noise turns it into a mediocre behavior policy with room to improve.
"""

from __future__ import annotations

import numpy as np

from offrl.data.collect import collect_episodes
from offrl.data.store import write_dataset

ENV_ID = "Pendulum-v1"
MAX_TORQUE = 2.0


def swing_up(obs: np.ndarray) -> np.ndarray:
    """Energy pumping far from upright, PD control near it (theta = 0 is upright)."""
    cos, sin, velocity = obs[:, 0], obs[:, 1], obs[:, 2]
    energy = 0.5 * velocity**2 + 15.0 * (cos - 1.0)  # 0 at rest upright (3g/2l = 15)
    pump = -energy * velocity * 0.5
    hold = -(10.0 * np.arctan2(sin, cos) + 2.0 * velocity)
    return np.clip(np.where(cos > 0.85, hold, pump), -MAX_TORQUE, MAX_TORQUE)[:, None]


def mean_return(policy, episodes: int = 100, seed: int = 10_000) -> float:
    collected, _, _ = collect_episodes(ENV_ID, policy, episodes * 200, num_envs=episodes, seed=seed)
    return float(np.mean([episode.rewards.sum() for episode in collected]))


def random_policy(obs, rng):
    return rng.uniform(-MAX_TORQUE, MAX_TORQUE, (len(obs), 1))


def make_pendulum_dataset(dataset_id: str, num_steps: int = 50_000, noise_std: float = 3.0,
                          seed: int = 0, overwrite: bool = False) -> str:
    """Collect `num_steps` of the swing-up controller with N(0, noise_std) torque noise."""
    def noisy(obs, rng):
        return np.clip(swing_up(obs) + noise_std * rng.normal(size=(len(obs), 1)), -MAX_TORQUE, MAX_TORQUE)

    episodes, obs_space, action_space = collect_episodes(ENV_ID, noisy, num_steps, num_envs=10, seed=seed)
    write_dataset(
        dataset_id, episodes, obs_space, action_space, eval_env=ENV_ID,
        ref_min_score=mean_return(random_policy), ref_max_score=mean_return(lambda o, r: swing_up(o)),
        description=f"Pendulum-v1, scripted swing-up with N(0, {noise_std}) torque noise.",
        offrl_metadata={"source": "scripted", "noise_std": noise_std, "seed": seed},
        overwrite=overwrite,
    )
    return dataset_id
