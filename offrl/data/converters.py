"""Converters from native offline-RL files into Minari datasets.

- D4RL HDF5: observations, actions, rewards, terminals, timeouts [, next_observations, infos/*]
- NeoRL-2 npz: obs, action, next_obs, reward, done, truncated
- NeoRL v1 npz: obs, next_obs, action, reward, done, index (episode start rows)
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from offrl.data.envs import route_mujoco_warnings
from offrl.data.episodes import FlatTransitions, check_arrays, split_episodes
from offrl.data.errors import DatasetFormatError
from offrl.data.reference import FORMATS, known_reference
from offrl.data.spaces import flat_dim
from offrl.data.store import write_dataset
from offrl.envs import register_envs

# who made the data of each format, and where their code is (Minari's author and code_permalink)
ORIGINS = {
    "d4rl": ("D4RL (Fu et al. 2020)", "https://github.com/Farama-Foundation/D4RL"),
    "neorl": ("NeoRL, Polixir (Qin et al. 2022)", "https://github.com/polixir/NeoRL"),
    "neorl2": ("NeoRL-2, Polixir (2025)", "https://github.com/polixir/NeoRL2"),
}


@dataclass
class ConversionResult:
    dataset_id: str
    path: Path
    episodes: int
    steps: int
    notes: list[str]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _require(keys, required: tuple[str, ...], source: str, layout: str) -> None:
    missing = [key for key in required if key not in keys]
    if missing:
        raise DatasetFormatError(
            f"{source}: missing key(s) {missing}; found {sorted(keys)}. The {layout} layout needs "
            f"{list(required)}. Check that this is a {layout} file, or pick the right format."
        )


def _corrupt(source: str, kind: str, error: Exception) -> DatasetFormatError:
    return DatasetFormatError(
        f"{source} is not a readable {kind} file ({type(error).__name__}: {error}): it may be "
        "truncated or corrupt; download or export it again."
    )


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _require_container(path: Path, hdf5: bool) -> None:
    """A file of the other container (an npz given as d4rl, an HDF5 as neorl2) is named as
    such, rather than reported as corrupt with a reader's own advice."""
    with open(path, "rb") as handle:
        is_hdf5 = handle.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE
    if hdf5 and zipfile.is_zipfile(path):
        raise DatasetFormatError(f"{path} is an npz archive, not the HDF5 file D4RL's format is: convert it with "
                                 "`offrl datasets convert neorl2 FILE` (or neorl for NeoRL v1).")
    if not hdf5 and is_hdf5:
        raise DatasetFormatError(f"{path} is an HDF5 file, not an npz archive: convert it with "
                                 "`offrl datasets convert d4rl FILE`.")


def read_d4rl_hdf5(path: Path) -> FlatTransitions:
    required = ("observations", "actions", "rewards", "terminals", "timeouts")
    _require_container(path, hdf5=True)
    try:
        import h5py  # only where HDF5 is read: `offrl --help` and the other commands start without it

        with h5py.File(path, "r") as file:
            _require(file.keys(), required, str(path), "D4RL HDF5")
            arrays = {key: file[key][()] for key in required}
            if "next_observations" in file:
                arrays["next_observations"] = file["next_observations"][()]
    except DatasetFormatError:
        raise
    except (OSError, KeyError, ValueError) as error:
        raise _corrupt(str(path), "HDF5", error) from error
    return _flat(arrays, str(path), {"terminals": "terminals", "timeouts": "timeouts"})


def _read_npz(path: Path, required: tuple[str, ...], layout: str) -> dict[str, np.ndarray]:
    _require_container(path, hdf5=False)
    if not zipfile.is_zipfile(path):  # numpy's own error suggests allow_pickle, which would run code in the file
        raise DatasetFormatError(f"{path} is not an npz archive (a zip of .npy arrays) as the {layout} format "
                                 "is: it may be truncated or corrupt, or another kind of file; export it again.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            _require(archive.files, required, str(path), layout)
            return {key: archive[key] for key in required}
    except DatasetFormatError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise _corrupt(str(path), "npz", error) from error


def read_neorl2_npz(path: Path) -> FlatTransitions:
    arrays = _read_npz(path, ("obs", "action", "next_obs", "reward", "done", "truncated"), "NeoRL-2 npz")
    renamed = {"observations": arrays["obs"], "actions": arrays["action"],
               "next_observations": arrays["next_obs"], "rewards": arrays["reward"],
               "terminals": arrays["done"], "timeouts": arrays["truncated"]}
    return _flat(renamed, str(path), {"terminals": "done", "timeouts": "truncated"})


def read_neorl_npz(path: Path) -> FlatTransitions:
    arrays = _read_npz(path, ("obs", "next_obs", "action", "reward", "done", "index"), "NeoRL npz")
    done = arrays["done"].reshape(-1)
    n = done.shape[0]
    starts = arrays["index"].reshape(-1).astype(np.int64)
    # NeoRL v1 has no timeout flag: an episode that ends without `done` hit its time limit.
    ends = np.r_[starts[1:] - 1, n - 1] if starts.size else np.array([], dtype=np.int64)
    timeouts = np.zeros(n, dtype=bool)
    if ends.size and ends.max() < n:
        timeouts[ends] = done[ends] == 0
    renamed = {"observations": arrays["obs"], "actions": arrays["action"],
               "next_observations": arrays["next_obs"], "rewards": arrays["reward"],
               "terminals": done, "timeouts": timeouts}
    flat = _flat(renamed, str(path), {"terminals": "done"})
    flat.episode_starts = starts
    return flat


def _flat(arrays: dict[str, np.ndarray], source: str, flag_names: dict[str, str]) -> FlatTransitions:
    arrays = dict(arrays)
    if any(np.size(array) == 0 for array in arrays.values()):
        empty = sorted(key for key, array in arrays.items() if np.size(array) == 0)
        raise DatasetFormatError(f"{source} holds no transitions ({', '.join(empty)} empty): export the data "
                                 "again, or pass the file that holds them.")
    arrays["rewards"] = arrays["rewards"].reshape(arrays["rewards"].shape[0], -1)
    if arrays["rewards"].shape[1] != 1:
        raise DatasetFormatError(f"{source}: rewards must be one value per transition, "
                                 f"got shape {arrays['rewards'].shape}.")
    check_arrays(arrays, source)
    for key, name in flag_names.items():
        values = np.unique(arrays[key])
        if not np.isin(values, (0, 1)).all():
            raise DatasetFormatError(f"{source}: '{name}' must hold only 0/1, found {values[:5]}.")
    two_d = {key: arrays[key].reshape(arrays[key].shape[0], -1).astype(np.float32)
             for key in ("observations", "actions", "next_observations") if key in arrays}
    return FlatTransitions(
        observations=two_d["observations"],
        actions=two_d["actions"],
        rewards=arrays["rewards"].reshape(-1).astype(np.float32),
        terminals=arrays["terminals"].reshape(-1).astype(bool),
        timeouts=arrays["timeouts"].reshape(-1).astype(bool),
        next_observations=two_d.get("next_observations"),
    )


def default_dataset_id(fmt: str, path: Path) -> str:
    """The dataset id guessed from a file name; raises if the name has no known form."""
    stem = path.name.removesuffix(".hdf5").removesuffix(".h5").removesuffix(".npz")
    if fmt == "d4rl":
        match = re.fullmatch(r"([a-z0-9]+)[_-]([a-z0-9_-]+?)-v(\d+)", stem.lower())
        if match:
            task, name, version = match.groups()
            return f"d4rl-hdf5/{task}/{name.replace('_', '-')}-v{version}"
    elif fmt == "neorl2":
        match = re.fullmatch(r"([A-Za-z0-9]+)-(train|val)", stem)
        if match:
            task, split = match.groups()
            return f"neorl2/{task.lower()}/{split}-v0"
    elif fmt == "neorl":
        match = re.fullmatch(r"([A-Za-z0-9]+-v\d+)-(low|medium|high|expert|human)-(\d+)(?:-(train|val))?", stem)
        if match:
            env, quality, size, split = match.groups()
            suffix = f"-{split}" if split and split != "train" else ""
            return f"neorl/{env.lower()}/{quality}-{size}{suffix}-v0"
    raise DatasetFormatError(
        f"Cannot derive a dataset id from the file name '{path.name}'. Pass --id, e.g. "
        + {"d4rl": "d4rl-hdf5/hopper/medium-v2", "neorl2": "neorl2/dmsd/train-v0",
           "neorl": "neorl/hopper-v3/low-1000-v0"}[fmt] + "."
    )


def fitting_env(env_id: str | None, data_dims: tuple[int, int], notes: list[str]) -> str | None:
    """The task's eval env if it acts on the data's observation and action sizes. A file named
    after a task but holding other data (a user's own, a test's) gets none, and a note: a
    policy trained on it could not act in that env."""
    if env_id is None:
        return None
    register_envs()
    route_mujoco_warnings()
    env = gym.make(env_id)
    env_dims = (flat_dim(env.observation_space), flat_dim(env.action_space))
    env.close()
    if env_dims == data_dims:
        return env_id
    notes.append(f"the task's eval env {env_id} has {env_dims[0]}-dim observations and {env_dims[1]}-dim actions, "
                 f"the data {data_dims[0]} and {data_dims[1]}: no eval env recorded (pass --eval-env ENV that fits)")
    return None


def convert(
    fmt: str,
    path: str | Path,
    dataset_id: str | None = None,
    *,
    overwrite: bool = False,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    eval_env: str | None = None,
) -> ConversionResult:
    """Convert a native file into a Minari dataset; reference scores and eval env come from
    the known task tables unless given. A failed conversion leaves nothing behind."""
    if fmt not in FORMATS:
        raise DatasetFormatError(f"Unknown format '{fmt}'; choose one of {FORMATS}.")
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"{path} does not exist or is not a file.")
    dataset_id = dataset_id or default_dataset_id(fmt, path)

    reader = {"d4rl": read_d4rl_hdf5, "neorl2": read_neorl2_npz, "neorl": read_neorl_npz}[fmt]
    flat = reader(path)
    episodes, report = split_episodes(flat, str(path))

    known = known_reference(fmt, dataset_id)
    notes = [known.note] if known.note else []
    ref_min = known.ref_min_score if ref_min_score is None else ref_min_score
    ref_max = known.ref_max_score if ref_max_score is None else ref_max_score
    if ref_min is None or ref_max is None:
        notes.append("no reference scores: pass --ref-min-score and --ref-max-score to normalize")
    obs_dim, act_dim = flat.observations.shape[1], flat.actions.shape[1]
    eval_env = eval_env or fitting_env(known.eval_env_id, (obs_dim, act_dim), notes)
    observation_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    low, high = float(flat.actions.min()), float(flat.actions.max())
    bound = 1.0 if low >= -1.0 and high <= 1.0 else max(abs(low), abs(high))
    action_space = spaces.Box(-bound, bound, (act_dim,), np.float32)
    offrl_metadata = {
        "source": fmt,
        "source_file": path.name,
        "source_sha256": _sha256(path),
        "reference_scores_from": "command line" if ref_min_score is not None else known.source,
        **report.as_metadata(),
    }
    author, upstream = ORIGINS[fmt]
    target = write_dataset(
        dataset_id, episodes, observation_space, action_space,
        eval_env=eval_env,
        ref_min_score=ref_min, ref_max_score=ref_max,
        description=f"Converted by offrl from {fmt} file {path.name}.",
        author=author, code_permalink=upstream,
        offrl_metadata=offrl_metadata, overwrite=overwrite,
    )
    for count, what in ((report.placeholder_final_observations, "terminal steps had no next "
                         "observation; the last state is repeated (never bootstrapped from)"),
                        (report.dropped_final_transitions, "time-limit steps had no next "
                         "observation and were dropped"),
                        (report.discontinuities, "episodes were split where next_obs[t] != obs[t+1]")):
        if count:
            notes.append(f"{count} {what}")
    return ConversionResult(dataset_id, target, len(episodes),
                            int(sum(len(e.rewards) for e in episodes)), notes)
