"""Where a model-based run gets its dynamics ensemble: its own saved copy, one given, or one
trained once per data and settings and shared by every run that needs it, published
atomically under a lock so that concurrent runs and killed trainings never see half of one."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import jax
import numpy as np

from offrl.data import OfflineDataset
from offrl.model_based.dynamics import (
    DynamicsConfig,
    DynamicsModel,
    load_dynamics,
    save_dynamics,
    train_dynamics,
    training_code,
)
from offrl.run.config import dataset_config_name

if TYPE_CHECKING:
    from offrl.model_based.rollouts import ModelBasedConfig


def dynamics_cache(root: str | Path = "runs") -> Path:
    """Where trained ensembles are kept for other runs: $OFFRL_DYNAMICS_CACHE, else ROOT/dynamics
    beside the runs."""
    return Path(os.environ.get("OFFRL_DYNAMICS_CACHE") or Path(root) / "dynamics")


def dynamics_fingerprint(arrays: dict[str, np.ndarray], config: DynamicsConfig) -> str:
    """What a trained ensemble depends on: the training data, the settings, and the code and
    jax version that trained it (an edit to the training code, dynamics.training_code, trains
    a new one)."""
    digest = hashlib.sha256(json.dumps([asdict(config), jax.__version__]).encode())
    digest.update(training_code().encode())
    for key in sorted(arrays):
        digest.update(key.encode() + np.ascontiguousarray(arrays[key]).tobytes())
    return digest.hexdigest()[:16]


def shared_dynamics(dataset_id: str, arrays: dict[str, np.ndarray], config: DynamicsConfig,
                    root: str | Path = "runs") -> Path:
    """The directory in dynamics_cache() of the ensemble trained on `arrays` with `config`,
    trained and published there first if no run or experiment has done so yet.

    One process trains a given ensemble at a time: the others that need it (the seeds of a
    `--seed-per-run` sweep start together) wait for it under a lock file beside it, which
    the kernel releases if the training process dies."""
    shared = dynamics_cache(root) / dataset_config_name(dataset_id) / dynamics_fingerprint(arrays, config)
    shared.parent.mkdir(parents=True, exist_ok=True)
    with open(shared.with_name(shared.name + ".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"dynamics ensemble: waiting for another process that trains {shared}", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        if (shared / "dynamics.json").is_file():
            print(f"dynamics ensemble: reusing {shared}")
        else:
            progress = shared.with_name(shared.name + ".progress.msgpack")  # a killed training continues
            trained = train_dynamics(arrays, config, progress=progress)
            publish(shared, lambda directory: save_dynamics(*trained, directory))
    return shared


def dynamics_for(config: ModelBasedConfig, dataset: OfflineDataset, data, run_dir: Path) -> DynamicsModel:
    """The run's ensemble: its own saved copy (a resumed run), the one given by --dynamics,
    or one trained on the (preprocessed) dataset and saved into the run directory. Trained
    ones are shared (RAVL and MOREC on one dataset, a sweep's runs, seeds run apart): with
    share_dynamics, an ensemble of the same fingerprint in dynamics_cache() is copied
    instead of trained again, and a newly trained one is added there."""
    own = run_dir / "dynamics"
    if (own / "dynamics.json").is_file():
        return load_dynamics(own)
    if config.dynamics:
        given = load_dynamics(config.dynamics)
        obs_dim, action_dim = data["observations"].shape[1], data["actions"].shape[1]
        if (given.observation_dim, given.action_dim) != (obs_dim, action_dim):
            raise ValueError(f"--dynamics {config.dynamics} models {given.observation_dim}-dim observations and "
                             f"{given.action_dim}-dim actions, {dataset.metadata.dataset_id} has {obs_dim} and "
                             f"{action_dim}: pass an ensemble trained on this data, or leave --dynamics empty to "
                             "train one.")
        return given
    arrays = {key: np.asarray(data[key]) for key in ("observations", "actions", "next_observations", "rewards")}
    dynamics_config = DynamicsConfig(max_epochs=config.dynamics_max_epochs, seed=config.dynamics_seed)
    if config.share_dynamics:
        shared = shared_dynamics(dataset.metadata.dataset_id, arrays, dynamics_config, config.root)
        publish(own, lambda directory: shutil.copytree(shared, directory, dirs_exist_ok=True))
    else:
        trained = train_dynamics(arrays, dynamics_config, progress=run_dir / "dynamics.progress.msgpack")
        publish(own, lambda directory: save_dynamics(*trained, directory))
    return load_dynamics(own)


def publish(target: Path, fill: Callable[[Path], object]) -> None:
    """Fill a fresh sibling directory, then rename it to `target`, so that a reader (another
    run, a resumed one) sees all of it or nothing. If another process published `target`
    first, its copy stays. `fill` only writes (training happens before), so a killed process
    leaves at most a half-written hidden sibling, which the next publish of `target` removes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for leftover in target.parent.glob(f".{target.name}-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    fill(staging)
    try:
        os.rename(staging, target)
    except OSError:  # renaming onto a directory that is not empty fails
        shutil.rmtree(staging)
