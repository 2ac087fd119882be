"""Preprocessing shared by the algorithms: state normalization, reward transforms, and
rescaling bounded actions to [-1, 1] (the range of every tanh actor).

Everything is recorded in a `Preprocessing` value that is saved with each run, so that
evaluation and exported policies see observations exactly as training did.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from offrl.data.dataset import OfflineDataset

REWARD_TRANSFORMS = ("none", "locomotion", "antmaze", "scale_bias")
ARRAY_FIELDS = ("obs_mean", "obs_std", "action_low", "action_high")


@dataclass(frozen=True)
class Preprocessing:
    obs_mean: np.ndarray | None = None  # None: observations are used as they are
    obs_std: np.ndarray | None = None
    reward_transform: str = "none"  # the rule that produced scale and bias
    reward_scale: float = 1.0
    reward_bias: float = 0.0
    action_low: np.ndarray | None = None  # finite action bounds: the learner sees [-1, 1]
    action_high: np.ndarray | None = None

    def normalize_actions(self, actions):
        if self.action_low is None:
            return actions
        return 2.0 * (actions - self.action_low) / (self.action_high - self.action_low) - 1.0

    def denormalize_actions(self, actions):
        """Policy output in [-1, 1] -> the environment's action bounds."""
        if self.action_low is None:
            return actions
        return self.action_low + (actions + 1.0) * 0.5 * (self.action_high - self.action_low)

    def normalize_observations(self, observations):
        """(obs - mean) / std; works on numpy and jax arrays alike."""
        if self.obs_mean is None:
            return observations
        return (observations - self.obs_mean) / self.obs_std

    def transform_rewards(self, rewards):
        return rewards * self.reward_scale + self.reward_bias

    def apply(self, dataset: OfflineDataset) -> dict[str, np.ndarray]:
        """The dataset's transition arrays as the learner sees them."""
        arrays = dataset.transitions()
        arrays["observations"] = self.normalize_observations(arrays["observations"])
        arrays["next_observations"] = self.normalize_observations(arrays["next_observations"])
        arrays["rewards"] = self.transform_rewards(arrays["rewards"])
        arrays["actions"] = self.normalize_actions(arrays["actions"])
        arrays["next_actions"] = self.normalize_actions(arrays["next_actions"])
        return {key: np.asarray(value, dtype=np.float32) for key, value in arrays.items()}

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        for key in ARRAY_FIELDS:
            if record[key] is not None:
                record[key] = np.asarray(record[key]).tolist()
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "Preprocessing":
        record = dict(record)
        for key in ARRAY_FIELDS:
            if record.get(key) is not None:
                record[key] = np.asarray(record[key], dtype=np.float32)
        return cls(**record)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "Preprocessing":
        return cls.from_dict(json.loads(Path(path).read_text()))


def fit_preprocessing(
    dataset: OfflineDataset,
    normalize_observations: bool = False,
    reward_transform: str = "none",
    reward_scale: float = 1.0,
    reward_bias: float = 0.0,
    obs_std_eps: float = 1e-3,
) -> Preprocessing:
    """Compute preprocessing statistics from a dataset.

    reward_transform:
      - "none": rewards unchanged;
      - "locomotion": r * 1000 / (max episode return - min episode return) (IQL, ReBRAC);
      - "antmaze": r - 1 (IQL, ReBRAC on AntMaze);
      - "scale_bias": r * reward_scale + reward_bias.
    obs_std_eps is added to the std, as TD3+BC does, so constant features stay finite.
    """
    if reward_transform not in REWARD_TRANSFORMS:
        raise ValueError(
            f"Unknown reward_transform '{reward_transform}'; choose one of {REWARD_TRANSFORMS}."
        )
    if reward_transform == "locomotion":
        returns = dataset.episode_returns
        spread = float(returns.max() - returns.min())
        if spread <= 0:
            raise ValueError(
                f"Dataset {dataset.dataset_id}: every episode has the same return, so the "
                "locomotion reward scaling 1000 / (max - min return) is undefined. Use "
                "reward_transform='scale_bias' instead."
            )
        reward_scale, reward_bias = 1000.0 / spread, 0.0
    elif reward_transform == "antmaze":
        reward_scale, reward_bias = 1.0, -1.0
    elif reward_transform == "none":
        reward_scale, reward_bias = 1.0, 0.0

    action_low = action_high = None
    bounds = spaces.flatten_space(dataset.metadata.action_space)
    finite = np.all(np.isfinite(bounds.low)) and np.all(np.isfinite(bounds.high))
    if finite and not (np.all(bounds.low == -1.0) and np.all(bounds.high == 1.0)):
        action_low = bounds.low.astype(np.float32)
        action_high = bounds.high.astype(np.float32)
    obs_mean = obs_std = None
    if normalize_observations:
        obs_mean = dataset.observations.mean(axis=0, dtype=np.float64).astype(np.float32)
        obs_std = (dataset.observations.std(axis=0, dtype=np.float64) + obs_std_eps).astype(np.float32)
    return Preprocessing(obs_mean, obs_std, reward_transform, float(reward_scale),
                         float(reward_bias), action_low, action_high)
