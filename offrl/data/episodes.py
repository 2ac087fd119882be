"""Turning flat transition files (D4RL, NeoRL) into episodes, checking them on the way.

Minari stores an episode as T actions/rewards/flags and T+1 observations, so the next
observation of step t is the observation of step t+1. Flat files store transitions, and
may lack next observations or break that identity; `split_episodes` handles both without
inventing data, and counts every adjustment so the converter can report it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from offrl.data.errors import DatasetFormatError


@dataclass
class FlatTransitions:
    """Transitions as read from a flat file, before they are split into episodes."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray  # bool
    timeouts: np.ndarray  # bool
    next_observations: np.ndarray | None = None
    episode_starts: np.ndarray | None = None  # explicit boundaries (NeoRL v1 `index`)


@dataclass
class Episode:
    observations: np.ndarray  # (T + 1, obs_dim)
    actions: np.ndarray  # (T, act_dim)
    rewards: np.ndarray  # (T,)
    terminations: np.ndarray  # (T,) bool
    truncations: np.ndarray  # (T,) bool
    cut_off: bool = False  # truncated where collection stopped, not by the env: a part of an episode


@dataclass
class SplitReport:
    """What `split_episodes` had to change so that the data fits Minari's episode form."""

    placeholder_final_observations: int = 0  # terminal steps whose next obs was unknown
    dropped_final_transitions: int = 0  # non-terminal last steps whose next obs was unknown
    discontinuities: int = 0  # obs[t+1] != next_obs[t] inside an episode: split there
    notes: list[str] = field(default_factory=list)

    def as_metadata(self) -> dict[str, int]:
        return {
            "placeholder_final_observations": self.placeholder_final_observations,
            "dropped_final_transitions": self.dropped_final_transitions,
            "split_at_discontinuities": self.discontinuities,
        }


def check_arrays(arrays: dict[str, np.ndarray], source: str) -> int:
    """Same length, finite values. Returns the number of rows."""
    lengths = {key: int(np.shape(value)[0]) for key, value in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise DatasetFormatError(
            f"{source}: arrays have different lengths {lengths}. Every key must hold one row per "
            "transition; re-export the file so that they match."
        )
    for key, value in arrays.items():
        if not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
            raise DatasetFormatError(f"{source}: '{key}' has non-numeric dtype {value.dtype}.")
        if not np.issubdtype(value.dtype, np.floating):
            continue
        bad = ~np.isfinite(value)
        if bad.any():
            rows = np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1))
            raise DatasetFormatError(
                f"{source}: '{key}' has {int(bad.sum())} NaN/inf values in {rows.size} rows "
                f"(first at row {int(rows[0])}). Remove or repair those transitions, then convert again."
            )
    return next(iter(lengths.values()))


def _episode_bounds(flat: FlatTransitions, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive (start, end) rows of each episode from flags, explicit starts and the data end."""
    ends = set(np.flatnonzero(flat.terminals | flat.timeouts).tolist())
    if flat.episode_starts is not None:
        starts = np.asarray(flat.episode_starts, dtype=np.int64)
        if starts.size == 0 or starts[0] != 0 or np.any(np.diff(starts) <= 0) or starts[-1] >= n:
            raise DatasetFormatError(
                "The episode start index must begin at 0 and increase strictly below the number "
                f"of transitions ({n}); got {starts[:5]}... Fix the file's 'index' array."
            )
        ends.update((starts[1:] - 1).tolist())
    ends.add(n - 1)  # the data may stop mid-episode: that last episode ends without a flag
    ends_array = np.array(sorted(ends), dtype=np.int64)
    return np.r_[0, ends_array[:-1] + 1], ends_array


def split_episodes(flat: FlatTransitions, source: str) -> tuple[list[Episode], SplitReport]:
    n = flat.rewards.shape[0]
    report = SplitReport()
    starts, ends = _episode_bounds(flat, n)
    if flat.next_observations is not None:
        # Split where the stored next observation disagrees with the following row, so that
        # every transition keeps its exact next observation. The cut is a truncation: the
        # episode record stops but the state was not terminal.
        inside = np.ones(n, dtype=bool)
        inside[ends] = False
        inside[-1] = False
        follows = np.zeros(n, dtype=bool)
        follows[:-1] = np.all(flat.observations[1:] == flat.next_observations[:-1], axis=1)
        breaks = np.flatnonzero(inside & ~follows)
        report.discontinuities = int(breaks.size)
        if breaks.size:
            warnings.warn(
                f"{source}: {breaks.size} transitions inside episodes have next_observations "
                f"that differ from the following observation (first at row {int(breaks[0])}). "
                "Each is kept with its own next observation by ending the episode segment "
                "there as a truncation.",
                stacklevel=3,
            )
            ends = np.union1d(ends, breaks)
            starts = np.r_[0, ends[:-1] + 1]

    timeouts = flat.timeouts.copy()
    if report.discontinuities:
        timeouts[breaks] = True

    episodes = []
    for start, end in zip(starts.tolist(), ends.tolist()):
        last = end
        if flat.next_observations is not None:
            final_obs = flat.next_observations[end]
        elif flat.terminals[end]:
            # The terminal next state is never bootstrapped from; repeat the last state.
            final_obs = flat.observations[end]
            report.placeholder_final_observations += 1
        else:
            # Unknown next observation after a time limit: drop the step, and the step
            # before becomes the truncation (its next observation is known).
            last = end - 1
            report.dropped_final_transitions += 1
            if last < start:
                continue
            final_obs = flat.observations[end]
        steps = slice(start, last + 1)
        truncations = timeouts[steps].copy()
        if last != end:
            truncations[-1] = True
        episodes.append(Episode(
            observations=np.concatenate([flat.observations[steps], final_obs[None]], axis=0),
            actions=flat.actions[steps],
            rewards=flat.rewards[steps],
            terminations=flat.terminals[steps].copy(),
            truncations=truncations,
        ))
    if not episodes:
        raise DatasetFormatError(f"{source}: no complete transition is left to store.")
    return episodes, report
