"""The in-memory form of an offline dataset: flat float32 transitions plus metadata."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec

from offrl.data.episodes import Episode
from offrl.data.errors import DatasetError
from offrl.data.reference import normalized_score

TRANSITION_KEYS = (
    "observations",
    "actions",
    "rewards",
    "next_observations",
    "terminals",
    "timeouts",
    "next_actions",
)


@dataclass
class DatasetMetadata:
    """What evaluation and reporting need to know about a dataset, without its data."""

    dataset_id: str
    observation_space: spaces.Space  # as stored; transitions hold it flattened
    action_space: spaces.Space
    eval_env_spec: EnvSpec | None = None  # None when no Gymnasium env reproduces the data
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # offrl's own metadata (provenance, ...)

    @property
    def actions_missing(self) -> bool:
        """An action-free dataset (states and rewards only): its actions are NaN."""
        return self.extra.get("actions") == "missing"

    @property
    def has_reference_scores(self) -> bool:
        return self.ref_min_score is not None and self.ref_max_score is not None

    def normalized_score(self, returns):
        """Returns on the D4RL 0-100 scale: 0 is the random policy, 100 the expert."""
        if not self.has_reference_scores:
            raise DatasetError(
                f"Dataset {self.dataset_id} has no ref_min_score/ref_max_score, so its returns "
                "cannot be normalized. Convert it again with --ref-min-score and --ref-max-score."
            )
        return normalized_score(np.asarray(returns, dtype=np.float64),
                                self.ref_min_score, self.ref_max_score)


@dataclass
class OfflineDataset:
    """Flat transitions of a dataset. All arrays are float32 with one row per transition.

    `terminals` marks true terminations (no bootstrapping from next_observations);
    `timeouts` marks truncations (time limits: bootstrap from next_observations).
    `episode_starts[i]` is the row where episode i begins; episodes are contiguous.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    episode_starts: np.ndarray
    metadata: DatasetMetadata
    proxy_actions: np.ndarray | None = None  # per transition: the action is an IDM's label, not the logged one
    proxy_spread: np.ndarray | None = None  # per transition: an IDM ensemble's spread of that label (0: logged)

    @property
    def dataset_id(self) -> str:
        return self.metadata.dataset_id

    @property
    def num_transitions(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def num_episodes(self) -> int:
        return int(self.episode_starts.shape[0])

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(np.append(self.episode_starts, self.num_transitions))

    @property
    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each episode, summed in float64."""
        return np.add.reduceat(self.rewards.astype(np.float64), self.episode_starts)

    @property
    def complete_episodes(self) -> np.ndarray:
        """Per episode, whether it ran to its end, terminated or truncated by the env, rather
        than cut off where collection stopped (a step budget, a behavior policy's share; offrl's
        collector lists those in the metadata as `cut_off_episodes`). A cut-off episode's
        return sums part of an episode, so data scores average complete ones."""
        last = np.append(self.episode_starts[1:], self.num_transitions) - 1
        complete = (self.terminals[last] > 0) | (self.timeouts[last] > 0)
        complete[self.metadata.extra.get("cut_off_episodes", [])] = False
        return complete

    @property
    def episode_ids(self) -> np.ndarray:
        """The episode index of every transition."""
        return np.repeat(np.arange(self.num_episodes), self.episode_lengths)

    @property
    def next_actions(self) -> np.ndarray:
        """The dataset's action at the next step of the same episode (ReBRAC's critic
        penalty). At an episode's last step there is none: its own action stands in; after
        a termination it is masked out of the target anyway."""
        following = np.empty_like(self.actions)
        following[:-1] = self.actions[1:]
        last = np.append(self.episode_starts[1:] - 1, self.num_transitions - 1)
        following[last] = self.actions[last]
        return following

    def normalized_score(self, returns):
        return self.metadata.normalized_score(returns)

    def summary(self) -> dict[str, Any]:
        """Episodes, steps, and the mean/min/max return of the complete episodes (normalized
        where possible: the data's score); of all episodes where none is complete."""
        complete = self.complete_episodes
        returns = self.episode_returns[complete] if complete.any() else self.episode_returns
        stats: dict[str, Any] = {
            "dataset_id": self.dataset_id,
            "episodes": self.num_episodes,
            "complete_episodes": int(complete.sum()),
            "steps": self.num_transitions,
            "observation_dim": int(self.observations.shape[1]),
            "action_dim": int(self.actions.shape[1]),
            "terminals": int(self.terminals.sum()),
            "timeouts": int(self.timeouts.sum()),
            "return_mean": float(returns.mean()),
            "return_min": float(returns.min()),
            "return_max": float(returns.max()),
            "ref_min_score": self.metadata.ref_min_score,
            "ref_max_score": self.metadata.ref_max_score,
            "eval_env": self.metadata.eval_env_spec.id if self.metadata.eval_env_spec else None,
        }
        if self.metadata.has_reference_scores:
            stats["normalized_return_mean"] = float(self.normalized_score(returns.mean()))
        return stats

    def fingerprint(self) -> str:
        """sha256 of the transitions, episode boundaries, proxy-action marks and reference
        scores: everything a run's numbers depend on. Runs with the same fingerprint trained
        on the same data and were scored alike; a dataset made again from other behavior
        policies, or converted from another file, has another one."""
        digest = hashlib.sha256(json.dumps([self.metadata.ref_min_score, self.metadata.ref_max_score]).encode())
        for array in (self.observations, self.actions, self.rewards, self.next_observations, self.terminals,
                      self.timeouts, self.episode_starts, self.proxy_actions, self.proxy_spread):
            if array is not None:
                digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def episodes(self) -> list[Episode]:
        """The dataset cut back into episodes (observations include each final next state)."""
        ends = np.append(self.episode_starts[1:], self.num_transitions)
        cut_off = set(self.metadata.extra.get("cut_off_episodes", []))
        return [Episode(observations=np.concatenate([self.observations[start:end], self.next_observations[end - 1:end]]),
                        actions=self.actions[start:end], rewards=self.rewards[start:end],
                        terminations=self.terminals[start:end].astype(bool),
                        truncations=self.timeouts[start:end].astype(bool), cut_off=index in cut_off)
                for index, (start, end) in enumerate(zip(self.episode_starts, ends))]

    def transitions(self) -> dict[str, np.ndarray]:
        """The transition arrays by name (with next_actions), e.g. to move them onto a device."""
        return {key: getattr(self, key) for key in TRANSITION_KEYS}
