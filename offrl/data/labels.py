"""Splitting a dataset into a labelled part and an action-free part (Zheng et al. 2023's setting).

    offrl datasets split-labels ID --labelled 0.1 --from lowest-return-50% [--seed S]

`labelled_fraction` of the trajectories (rounded to a whole number) keep their actions;
they are drawn, seeded, from a pool: all trajectories (`uniform`), or the lowest or
highest `P`% by return (`lowest-return-P%`, `highest-return-P%`; the pool is rounded up to
whole trajectories). Every other trajectory goes into the action-free dataset: its
actions are NaN and its metadata says `actions: missing`, so that training on it fails
with a clear error instead of learning from NaNs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

from offrl.data.errors import DatasetError
from offrl.data.store import load_dataset, write_dataset

SELECTION = re.compile(r"^(uniform|(lowest|highest)-return-(\d+(?:\.\d+)?)%)$")


def labelled_episodes(returns: np.ndarray, labelled_fraction: float, selection: str, seed: int) -> np.ndarray:
    """Indices of the labelled trajectories, sorted."""
    match = SELECTION.match(selection)
    if not match:
        raise DatasetError(f"Unknown selection '{selection}': use uniform, lowest-return-P% or highest-return-P%.")
    if not 0.0 < labelled_fraction < 1.0:
        raise DatasetError(f"--labelled must be a fraction in (0, 1), got {labelled_fraction}.")
    count = len(returns)
    wanted = int(round(labelled_fraction * count))
    if match.group(1) == "uniform":
        pool = np.arange(count)
    else:
        pool_size = math.ceil(float(match.group(3)) / 100.0 * count)
        order = np.argsort(returns, kind="stable")
        pool = order[:pool_size] if match.group(2) == "lowest" else order[::-1][:pool_size]
    if not 0 < wanted <= len(pool):
        raise DatasetError(f"Cannot label {wanted} of {count} trajectories from a pool of {len(pool)} "
                           f"('{selection}'): change --labelled or --from.")
    return np.sort(np.random.default_rng(seed).choice(pool, wanted, replace=False))


@dataclass
class SplitResult:
    labelled_id: str
    unlabelled_id: str
    labelled_episodes: int
    unlabelled_episodes: int


def default_split_ids(dataset_id: str, labelled_fraction: float) -> tuple[str, str]:
    """'offrl/hopper/medium-replay-v0', 0.1 -> ('.../medium-replay-labelled10-v0', '.../medium-replay-unlabelled90-v0')"""
    stem, version = re.match(r"^(.*?)(-v\d+)?$", dataset_id).groups()
    percent = round(100 * labelled_fraction)
    return f"{stem}-labelled{percent}{version or ''}", f"{stem}-unlabelled{100 - percent}{version or ''}"


def split_labels(dataset_id: str, labelled_fraction: float = 0.1, selection: str = "lowest-return-50%",
                 seed: int = 0, labelled_id: str | None = None, unlabelled_id: str | None = None,
                 overwrite: bool = False) -> SplitResult:
    dataset = load_dataset(dataset_id)
    if dataset.metadata.actions_missing:
        raise DatasetError(f"Dataset '{dataset_id}' is already action-free; split a labelled dataset.")
    chosen = labelled_episodes(dataset.episode_returns, labelled_fraction, selection, seed)
    default_labelled, default_unlabelled = default_split_ids(dataset_id, labelled_fraction)
    labelled_id, unlabelled_id = labelled_id or default_labelled, unlabelled_id or default_unlabelled
    episodes = dataset.episodes()
    is_labelled = np.zeros(len(episodes), bool)
    is_labelled[chosen] = True
    meta = dataset.metadata
    obs_space, act_space = spaces.flatten_space(meta.observation_space), spaces.flatten_space(meta.action_space)
    provenance = {"source": "split-labels", "split_of": dataset_id, "labelled_fraction": labelled_fraction,
                  "selection": selection, "seed": seed}
    common = dict(eval_env=meta.eval_env_spec, ref_min_score=meta.ref_min_score, ref_max_score=meta.ref_max_score,
                  overwrite=overwrite)
    write_dataset(labelled_id, [e for e, keep in zip(episodes, is_labelled) if keep], obs_space, act_space,
                  description=f"Labelled part of {dataset_id} ({selection}).",
                  offrl_metadata={**provenance, "part": "labelled", "episodes": chosen.tolist()}, **common)
    action_free = []
    for episode, keep in zip(episodes, is_labelled):
        if not keep:
            episode.actions = np.full_like(episode.actions, np.nan)
            action_free.append(episode)
    write_dataset(unlabelled_id, action_free, obs_space, act_space,
                  description=f"Action-free part of {dataset_id}: states and rewards only.",
                  offrl_metadata={**provenance, "part": "unlabelled", "actions": "missing"}, **common)
    return SplitResult(labelled_id, unlabelled_id, int(is_labelled.sum()), int((~is_labelled).sum()))
