"""Reading and writing datasets in the local Minari store (MINARI_DATASETS_PATH).

Writes are atomic: a dataset is built in a hidden staging directory beside its final
place and renamed into it, so a failed, interrupted (Ctrl-C, SIGTERM) or killed write
leaves no partial dataset; a staging directory left by kill -9 is removed by the next write
of that id. One process writes an id at a time (`writing`): a second writer is refused.
Reads never touch the network unless `download=True` is asked for.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import glob
import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import urllib.parse
from pathlib import Path
from typing import Any, Iterable, Iterator

import gymnasium as gym
import minari
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec
from minari.data_collector.episode_buffer import EpisodeBuffer
from minari.dataset.minari_dataset import parse_dataset_id
from minari.dataset.minari_storage import MinariStorage
from minari.namespace import create_namespace, list_local_namespaces
from minari.storage.datasets_root_dir import get_dataset_path

from offrl.data.dataset import DatasetMetadata, OfflineDataset
from offrl.data.episodes import Episode, check_arrays
from offrl.data.errors import (
    DatasetBusyError,
    DatasetError,
    DatasetExistsError,
    DatasetFormatError,
    DatasetNotFoundError,
)
from offrl.data.spaces import flat_dim, flatten_batch
from offrl.envs import register_envs
from offrl.locks import exclusive

OFFRL_KEY = "offrl"  # our own entries in a Minari dataset's metadata.json
MINARI_REMOTE_HOST = ("huggingface.co", 443)


def datasets_root() -> Path:
    return Path(get_dataset_path())


def dataset_path(dataset_id: str) -> Path:
    _check_id(dataset_id)
    return datasets_root() / dataset_id


DATASET_ID = re.compile(r"(?:[A-Za-z0-9_.-]+/)*[A-Za-z0-9_.-]+-v\d+")
# The D4RL-style suite that offrl generates itself (offrl.data.suite): its kinds, and its ids,
# e.g. offrl/hopper/medium-v0.
SUITE_KINDS = ("random", "medium", "expert", "medium-replay", "medium-expert")
_SUITE_KIND = "|".join(map(re.escape, SUITE_KINDS))
SUITE_ID = re.compile(rf"offrl/(?P<env>[A-Za-z0-9_]+)/(?P<kind>{_SUITE_KIND})-v0")
# the short names the suite's commands and experiment scripts take, e.g. hopper-medium-replay
SUITE_NAME = re.compile(rf"(?P<env>[A-Za-z0-9_-]+?)-(?P<kind>{_SUITE_KIND})")


def _check_id(dataset_id: str) -> None:
    if not DATASET_ID.fullmatch(dataset_id):
        short = SUITE_NAME.fullmatch(dataset_id)  # what a user of the experiment scripts may try
        hint = (f" Did you mean the suite's 'offrl/{short['env']}/{short['kind']}-v0' or D4RL's "
                f"'d4rl-hdf5/{short['env']}/{short['kind']}-v2'?" if short else "")
        raise DatasetError(
            f"'{dataset_id}' is not a valid dataset id: ids are 'namespace/env/name-vN' with a "
            f"version at the end, e.g. 'd4rl-hdf5/hopper/medium-v2'.{hint}"
        )


def local_dataset_ids() -> list[str]:
    return sorted(minari.list_local_datasets().keys())


def _network_reachable(timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection(MINARI_REMOTE_HOST, timeout=timeout_s):
            return True
    except OSError:
        return False


def _not_found(dataset_id: str) -> DatasetNotFoundError:
    """One line: what is missing, and the one way to get it that fits the id."""
    close = difflib.get_close_matches(dataset_id, local_dataset_ids(), n=3)
    suite = SUITE_ID.fullmatch(dataset_id)
    if close:
        fix = f"did you mean {' or '.join(close)}?"
    elif suite:
        fix = f"generate it from the shipped policies with `offrl datasets generate {suite['env']}-{suite['kind']}`."
    else:
        fix = ("convert a file you have (`offrl datasets convert {d4rl,neorl,neorl2} FILE --id ID`), download it "
               "(`offrl datasets info ID --download`), or point MINARI_DATASETS_PATH at the store that holds it.")
    return DatasetNotFoundError(f"Dataset '{dataset_id}' is not in the local Minari store ({datasets_root()}): {fix}")


def read_metadata(dataset_id: str) -> DatasetMetadata:
    """Metadata of a local dataset, without reading its episodes."""
    return _metadata_from_storage(dataset_id, _open_storage(dataset_id))


def _open_storage(dataset_id: str, download: bool = False) -> MinariStorage:
    data_path = dataset_path(dataset_id) / "data"
    if not data_path.is_dir():
        if not download:
            raise _not_found(dataset_id)
        if not _network_reachable():
            raise DatasetNotFoundError(
                f"Dataset '{dataset_id}' is not local and {MINARI_REMOTE_HOST[0]} cannot be "
                "reached, so it cannot be downloaded. Convert or generate it instead."
            )
        minari.download_dataset(dataset_id)
    try:
        return MinariStorage.read(data_path)
    except Exception as error:
        raise DatasetFormatError(
            f"Dataset '{dataset_id}' at {data_path} cannot be read ({type(error).__name__}: "
            f"{error}). It may be corrupt or half-written: remove it with "
            f"`offrl datasets remove {dataset_id}` and convert or generate it again."
        ) from error


def _metadata_from_storage(dataset_id: str, storage: MinariStorage) -> DatasetMetadata:
    raw = storage.metadata
    eval_spec = raw.get("eval_env_spec") or raw.get("env_spec")
    return DatasetMetadata(
        dataset_id=dataset_id,
        observation_space=storage.observation_space,
        action_space=storage.action_space,
        eval_env_spec=EnvSpec.from_json(eval_spec) if eval_spec else None,
        ref_min_score=raw.get("ref_min_score"),
        ref_max_score=raw.get("ref_max_score"),
        extra=raw.get(OFFRL_KEY, {}),
    )


def load_dataset(dataset_id: str, download: bool = False) -> OfflineDataset:
    """Load a Minari dataset by id into flat float32 transition arrays.

    Observations and actions are flattened (Box, or Dict/Tuple of Box); any other space
    raises UnsupportedSpaceError. Truncated steps are bootstrapped through, terminal ones not.
    """
    storage = _open_storage(dataset_id, download)
    metadata = _metadata_from_storage(dataset_id, storage)
    obs_space, act_space = storage.observation_space, storage.action_space
    flat_dim(obs_space, "observation")
    flat_dim(act_space, "action")

    columns: dict[str, list[np.ndarray]] = {key: [] for key in
                                            ("obs", "next_obs", "act", "rew", "term", "trunc", "proxy", "spread")}
    lengths = []
    try:
        for episode in storage.get_episodes(range(storage.total_episodes)):
            observations = flatten_batch(obs_space, episode["observations"], "observation")
            steps = len(episode["rewards"])
            if observations.shape[0] != steps + 1:
                raise DatasetFormatError(
                    f"Dataset '{dataset_id}' episode {episode['id']} has {observations.shape[0]} "
                    f"observations for {steps} steps (expected {steps + 1})."
                )
            columns["obs"].append(observations[:-1])
            columns["next_obs"].append(observations[1:])
            columns["act"].append(flatten_batch(act_space, episode["actions"], "action"))
            columns["rew"].append(episode["rewards"])
            columns["term"].append(episode["terminations"])
            columns["trunc"].append(episode["truncations"])
            infos = episode.get("infos") or {}
            if "proxy_action" in infos:
                columns["proxy"].append(np.asarray(infos["proxy_action"], bool))
            if "proxy_spread" in infos:
                columns["spread"].append(np.asarray(infos["proxy_spread"], np.float32))
            lengths.append(steps)
    except (OSError, KeyError) as error:
        raise DatasetFormatError(
            f"Dataset '{dataset_id}' is corrupt ({type(error).__name__}: {error}). Remove it with "
            f"`offrl datasets remove {dataset_id}` and convert or generate it again."
        ) from error
    if not lengths:
        raise DatasetFormatError(f"Dataset '{dataset_id}' holds no episodes.")

    def stack(key: str) -> np.ndarray:
        return np.concatenate(columns.pop(key)).astype(np.float32, copy=False)

    proxy = np.concatenate(columns.pop("proxy")) if len(columns["proxy"]) == len(lengths) else None
    spread = np.concatenate(columns.pop("spread")) if len(columns["spread"]) == len(lengths) else None

    dataset = OfflineDataset(
        observations=stack("obs"),
        next_observations=stack("next_obs"),
        actions=stack("act"),
        rewards=stack("rew").reshape(-1),
        terminals=stack("term").reshape(-1),
        timeouts=stack("trunc").reshape(-1),
        episode_starts=np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int64),
        metadata=metadata,
        proxy_actions=proxy,
        proxy_spread=spread,
    )
    arrays = dataset.transitions()
    if metadata.actions_missing:  # NaN actions by design; everything else must be finite
        arrays = {key: value for key, value in arrays.items() if key not in ("actions", "next_actions")}
    check_arrays(arrays, f"dataset '{dataset_id}'")
    return dataset


def _id_key(dataset_id: str) -> str:
    """The id as one file name (its slashes escaped), for its lock and staging directories."""
    return urllib.parse.quote(dataset_id, safe="")


@contextlib.contextmanager
def writing(dataset_id: str) -> Iterator[None]:
    """Hold the write lock of `dataset_id` for the block (a whole generate or convert, so a
    second writer is refused before it does any work); write_dataset takes it too. The kernel
    releases it however the holder ends."""
    _check_id(dataset_id)
    lock = datasets_root() / ".offrl-locks" / f"{_id_key(dataset_id)}.lock"
    with exclusive(lock, lambda holder: DatasetBusyError(
            f"Dataset '{dataset_id}' is being written by {holder}: wait for it to finish (`offrl datasets list` "
            "then shows it), or write to another --id.")):
        yield


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit(143) for the block, so a write cleans up after itself as
    after Ctrl-C, rather than ending with its staging directory left behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def leave(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, leave)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def write_dataset(
    dataset_id: str,
    episodes: Iterable[Episode],
    observation_space: spaces.Space,
    action_space: spaces.Space,
    *,
    eval_env: str | EnvSpec | None = None,
    env: str | EnvSpec | None = None,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    description: str = "",
    author: str = "offrl",
    code_permalink: str = "",
    offrl_metadata: dict[str, Any] | None = None,
    episode_infos: Iterable[dict] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write episodes as a Minari dataset, atomically. Returns the dataset's directory.

    The metadata is Minari's whole set, so that other Minari tools load the dataset as they
    load Minari's own: `env` (default: the eval env) is the env whose spec
    `recover_environment()` makes, `requirements` the packages it needs at the versions
    installed here, `author` and `code_permalink` who made the data and with what (default:
    this offrl version). A dataset without an env (NeoRL-2's) has no env spec."""
    eval_spec = _spec(eval_env)
    env_spec = _spec(env) or eval_spec
    metadata: dict[str, Any] = {
        "dataset_id": dataset_id,
        "minari_version": minari.__version__,
        "description": description,
        "algorithm_name": (offrl_metadata or {}).get("source", "offrl"),
        "author": {author},
        "code_permalink": code_permalink or offrl_permalink(),
        "requirements": env_requirements(env_spec),
        OFFRL_KEY: offrl_metadata or {},
    }
    if eval_spec is not None:
        metadata["eval_env_spec"] = eval_spec.to_json()
    if ref_min_score is not None and ref_max_score is not None:
        metadata["ref_min_score"] = float(ref_min_score)
        metadata["ref_max_score"] = float(ref_max_score)
    infos = iter(episode_infos) if episode_infos is not None else None
    with writing(dataset_id), _sigterm_as_exit():
        final = dataset_path(dataset_id)
        if final.exists() and not overwrite:
            raise DatasetExistsError(
                f"Dataset '{dataset_id}' already exists at {final}. Pass --overwrite (overwrite=True) "
                "to replace it, or choose another --id."
            )
        staging = _staging_directory(dataset_id)
        try:
            storage = MinariStorage.new(staging / "data", observation_space=observation_space,
                                        action_space=action_space, env_spec=env_spec)
            storage.update_metadata(metadata)
            cut_off: list[int] = []
            storage.update_episodes(_buffers(episodes, infos, cut_off))
            if cut_off:  # what collection cut off, for data scores over complete episodes
                storage.update_metadata({OFFRL_KEY: {**metadata[OFFRL_KEY], "cut_off_episodes": cut_off}})
            _move_into_place(staging, final, dataset_id)
        except OSError as error:
            shutil.rmtree(staging, ignore_errors=True)
            raise _write_error(dataset_id, datasets_root(), error) from error
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return final


def _spec(env: str | EnvSpec | None) -> EnvSpec | None:
    register_envs()  # the ids of offrl's own simulators, which the task tables name
    return gym.spec(env) if isinstance(env, str) else env


def env_requirements(spec: EnvSpec | None) -> list[str]:
    """Minari's `requirements`: the pip packages that make `spec`, pinned to the versions
    installed here (Gymnasium, and MuJoCo or gymnasium-robotics where its entry point uses them)."""
    if spec is None:
        return []
    entry_point = spec.entry_point if isinstance(spec.entry_point, str) else spec.entry_point.__module__
    packages = ["gymnasium"]
    if entry_point.startswith("offrl."):
        packages.append("offrl")
    elif entry_point.startswith("gymnasium_robotics"):
        packages += ["gymnasium-robotics", "mujoco"]
    elif "mujoco" in entry_point:
        packages.append("mujoco")
    return [f"{name}=={importlib.metadata.version(name)}" for name in packages]


def offrl_permalink() -> str:
    """The code behind a dataset offrl makes itself: this version of offrl."""
    return f"offrl {importlib.metadata.version('offrl')}"


def _buffers(episodes: Iterable[Episode], infos, cut_off: list[int]) -> Iterator[EpisodeBuffer]:
    """Minari's episode buffers, one at a time; the indices of cut-off episodes go to `cut_off`."""
    for index, episode in enumerate(episodes):
        if episode.cut_off:
            cut_off.append(index)
        yield EpisodeBuffer(id=index, observations=episode.observations, actions=episode.actions,
                            rewards=episode.rewards, terminations=episode.terminations,
                            truncations=episode.truncations, infos=next(infos) if infos is not None else None)


def _staging_directory(dataset_id: str) -> Path:
    """A new hidden directory in the store to build the dataset in. Its writer holds the id's
    lock, so any other staging directory of this id is a killed writer's, and goes."""
    root = datasets_root()
    prefix = f".offrl-staging-{_id_key(dataset_id)}-"
    try:
        root.mkdir(parents=True, exist_ok=True)
        for leftover in root.glob(f"{glob.escape(prefix)}*"):
            shutil.rmtree(leftover)
        return Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    except OSError as error:
        raise _write_error(dataset_id, root, error) from error


def _move_into_place(staging: Path, final: Path, dataset_id: str) -> None:
    namespace = parse_dataset_id(dataset_id)[0]
    if namespace is not None and namespace not in list_local_namespaces():
        create_namespace(namespace)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        retired = staging.with_name(staging.name + "-old")
        os.replace(final, retired)
        os.replace(staging, final)
        shutil.rmtree(retired)
    else:
        os.replace(staging, final)


def _write_error(dataset_id: str, root: Path, error: OSError) -> DatasetError:
    if error.errno == errno.ENOSPC:
        problem, fix = "the disk is full", "free space, or point MINARI_DATASETS_PATH at a larger disk"
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        problem, fix = "the directory is write-protected", (
            "make it writable, or point MINARI_DATASETS_PATH at a writable directory")
    else:
        problem, fix = f"{type(error).__name__}: {error}", "check the directory and try again"
    return DatasetError(
        f"Could not write dataset '{dataset_id}' under {root}: {problem}. Nothing was written; "
        f"{fix}."
    )


def remove_dataset(dataset_id: str) -> None:
    """Remove a local dataset; refused while another process writes that id."""
    path = dataset_path(dataset_id)
    with writing(dataset_id):
        if not path.exists():
            raise _not_found(dataset_id)
        shutil.rmtree(path)


_fingerprints: dict[tuple, str] = {}  # by the dataset's files as they are: a dataset made again is read again


def local_fingerprint(dataset_id: str) -> str | None:
    """The fingerprint (OfflineDataset.fingerprint) of the local dataset of this id, None if
    there is none."""
    data = dataset_path(dataset_id) / "data"
    if not data.is_dir():
        return None
    files = tuple((path.name, path.stat().st_mtime_ns, path.stat().st_size) for path in sorted(data.iterdir()))
    if (dataset_id, files) not in _fingerprints:
        _fingerprints[(dataset_id, files)] = load_dataset(dataset_id).fingerprint()
    return _fingerprints[(dataset_id, files)]


def raw_metadata(dataset_id: str) -> dict[str, Any]:
    """metadata.json exactly as stored (for `offrl datasets info`)."""
    path = dataset_path(dataset_id) / "data" / "metadata.json"
    if not path.is_file():
        raise _not_found(dataset_id)
    return json.loads(path.read_text())
