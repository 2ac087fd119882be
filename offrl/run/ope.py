"""Offline policy evaluation of a run's policies with Fitted Q Evaluation (offrl.core.fqe):
scores where no simulator is, from held-out data.

The evaluation data default to the run's dataset's held-out split where one is local (a
NeoRL-2 `.../train-v0` run is evaluated on `.../val-v0`), else the training data itself. It is
preprocessed as the run's policies saw their data (observations normalized, actions in
[-1, 1]), with the true rewards, so the estimates are in the task's own units.

Estimates: `ope/fqe_value`, each policy's expected discounted return from the data's initial
states; `ope/fqe_return`, that value spread over the data's mean episode length L as an
undiscounted return, R = V * L * (1 - gamma) / (1 - gamma^L) (exact where every step pays
the same reward, an approximation otherwise); and, where the dataset has reference scores,
`ope/fqe_normalized_score`, R on the scores' 0-100 scale. All are estimates, not returns
measured in an environment.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import jax
import numpy as np

from offrl.core.fqe import FQEConfig, fqe
from offrl.data import DatasetError, OfflineDataset, load_dataset, local_dataset_ids, normalized_score
from offrl.run.directory import read_run


def held_out_id(dataset_id: str) -> str | None:
    """The held-out split of a dataset id, where its name says train and a val split of it
    is local: neorl2/dmsd/train-v0 -> neorl2/dmsd/val-v0."""
    candidate = re.sub(r"(^|[/-])train(?=-v\d+$)", r"\1val", dataset_id)
    return candidate if candidate != dataset_id and candidate in local_dataset_ids() else None


def evaluation_data(run: dict, data_id: str | None) -> OfflineDataset:
    """The dataset FQE learns from: `data_id`, else the held-out split, else the run's own."""
    dataset = load_dataset(data_id or held_out_id(run["dataset"]) or run["dataset"])
    found = dataset.observations.shape[1], dataset.actions.shape[1]
    expected = run["observation_dim"], run["action_dim"]
    if found != expected:
        raise DatasetError(f"{dataset.metadata.dataset_id} has {found[0]}-dim observations and {found[1]}-dim "
                           f"actions, the run's policies {expected[0]} and {expected[1]}: evaluate them on data of "
                           f"their task (--data ID), e.g. the held-out split of {run['dataset']}.")
    return dataset


def offline_policies(run_dir: str | Path, data_id: str | None, checkpoint_path: str | Path | None):
    """What an offline estimate of a run needs: (run.json, algorithm, stacked policy states,
    preprocessing, config, evaluation data)."""
    from offrl.run.train import restore_run  # train imports this module for its in-run estimates

    run_dir = Path(run_dir)
    run = read_run(run_dir)
    if "dataset" not in run:
        raise ValueError(f"{run_dir} is an online run (trained in {run.get('env')}): evaluate it in its env with "
                         "`offrl evaluate RUN_DIR` instead of offline.")
    algorithm, policies, preprocessing, run_config = restore_run(run_dir, checkpoint_path)
    return run, algorithm, policies, preprocessing, run_config, evaluation_data(run, data_id)


class FQEvaluator:
    """FQE of policies that act with `act`, learned from `dataset` as preprocessed for them;
    built once (one compilation) and called for each set of policies, e.g. at every
    evaluation of a training run. Returns per-policy `ope/...` estimates."""

    def __init__(self, act, dataset: OfflineDataset, preprocessing, config: FQEConfig,
                 reference: tuple[float | None, float | None]):
        config.validate()
        self.config, self.reference = config, reference
        self.data_id = dataset.metadata.dataset_id
        arrays = replace(preprocessing, reward_transform="none", reward_scale=1.0, reward_bias=0.0).apply(dataset)
        self.data = jax.device_put({key: arrays[key] for key in
                                    ("observations", "actions", "rewards", "next_observations", "terminals")})
        self.initial = self.data["observations"][np.asarray(dataset.episode_starts)]
        length = float(len(dataset.rewards)) / len(dataset.episode_starts)
        self.spread = length * (1 - config.gamma) / (1 - config.gamma**length)
        self.init, self.train_chunk, self.values = fqe(act, config, dataset.observations.shape[1],
                                                       dataset.actions.shape[1])

    def __call__(self, policies, seed: int = 0, log=None) -> dict[str, np.ndarray]:
        members = len(jax.tree.leaves(policies)[0])
        keys = jax.random.split(jax.random.PRNGKey(seed), 2 * members)
        states, rngs = self.init(keys[:members]), keys[members:]
        began, config = time.perf_counter(), self.config
        for step in range(0, config.num_updates, config.chunk):
            states, rngs, metrics, finite = jax.block_until_ready(
                self.train_chunk(states, rngs, policies, self.data, step))
            if not np.all(finite):
                raise FloatingPointError(f"FQE diverged by update {step + config.chunk:,} (NaN/inf in a critic): "
                                         "try a lower learning rate or gamma.")
            if log and (step + config.chunk) % max(config.num_updates // 10, config.chunk) == 0:
                log(f"FQE {step + config.chunk:,}/{config.num_updates:,} updates, TD error "
                    f"{float(np.mean(metrics['fqe/td_error'])):.4g} ({time.perf_counter() - began:.0f} s)")
        value = np.asarray(self.values(states, policies, self.initial)).mean(axis=1)
        estimates = {"ope/fqe_value": value, "ope/fqe_return": value * self.spread}
        if None not in self.reference:
            estimates["ope/fqe_normalized_score"] = normalized_score(estimates["ope/fqe_return"], *self.reference)
        return estimates


def fqe_estimates(run_dir: str | Path, data_id: str | None = None, config: FQEConfig = FQEConfig(),
                  checkpoint_path: str | Path | None = None, seed: int = 0, log=print) -> dict[str, Any]:
    """FQE estimates of every policy of a run (its seeds, times its packed points), from its
    latest checkpoint or the one given."""
    from offrl.run.train import run_members  # train imports this module for its in-run estimates

    config.validate()
    run, algorithm, policies, preprocessing, run_config, dataset = offline_policies(run_dir, data_id, checkpoint_path)
    evaluator = FQEvaluator(algorithm.act, dataset, preprocessing, config,
                            (run.get("ref_min_score"), run.get("ref_max_score")))
    seeds, points = run_members(run_config)
    return {"seeds": seeds, "points": points, **evaluator(policies, seed, log), "data": evaluator.data_id,
            "gamma": config.gamma, "num_updates": config.num_updates}
