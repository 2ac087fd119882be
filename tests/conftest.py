"""Shared fixtures: every test gets its own empty Minari store and no network."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from flax import serialization

SHARED_NEORL2 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "neorl2"


def run_in_fresh_python(script: str, env: dict[str, str] | None = None, timeout: int = 300,
                        cwd: Path | None = None) -> str:
    """stdout of `python -c script` in a new interpreter (for what one process can do only
    once: XLA's flags, its first compilation); fails with the child's stderr."""
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=cwd)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


@pytest.fixture(autouse=True)
def minari_store(tmp_path, monkeypatch) -> Path:
    store = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(store))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OFFRL_DYNAMICS_CACHE", str(tmp_path / "dynamics_cache"))  # trained ensembles shared by runs
    return store


PENDULUM = "offrl/pendulum/test-v0"  # scripted swing-up data: every algorithm learns it in a few thousand updates


@pytest.fixture
def pendulum(minari_store):
    from offrl.data.scripted import make_pendulum_dataset

    make_pendulum_dataset(PENDULUM, num_steps=10_000)
    return PENDULUM


def td3_bc_config(tmp_path: Path, *extra: str, name: str = "run"):
    """A short TD3+BC run on the Pendulum data in tmp_path/name: 400 updates, checkpoints at 200."""
    from offrl.run.algorithms import algorithm_module
    from offrl.run.config import parse_config

    args = ["--dataset", PENDULUM, "--num_updates", "400", "--log_every", "100", "--eval_every", "400",
            "--eval_episodes", "2", "--checkpoint_every", "200", "--wandb", "disabled",
            "--run_dir", str(tmp_path / name), *extra]
    return parse_config(algorithm_module("td3_bc").Config, "td3_bc", args)


# XLA on a multi-threaded CPU can round the same compiled program differently from call to
# call (jax-ml/jax#39741: about 1e-9 relative per call, seen here on CI as last-bit changes
# after 400 updates). Repeat-run comparisons therefore hold integers (steps, seeds, rng keys,
# counters) exactly and floats to a tolerance far below what a wrong seed or a lost state gives.
REPEAT_RTOL, REPEAT_ATOL = 1e-4, 1e-5


def assert_same_metrics(rows_a: list[dict], rows_b: list[dict]) -> None:
    """Two metrics files of repeated runs: the same rows and keys, the same values up to rounding."""
    timing = {"updates_per_s"}
    assert [sorted(set(r) - timing) for r in rows_a] == [sorted(set(r) - timing) for r in rows_b]
    for row_a, row_b in zip(rows_a, rows_b):
        assert (row_a["step"], row_a["seed"]) == (row_b["step"], row_b["seed"])
        for key in set(row_a) - timing - {"step", "seed"}:
            np.testing.assert_allclose(row_a[key], row_b[key], rtol=REPEAT_RTOL, atol=REPEAT_ATOL, err_msg=key)


def assert_same_checkpoint(path_a: Path, path_b: Path) -> None:
    """Two checkpoints of repeated runs: the same tree, integer leaves equal, floats equal up to rounding."""
    tree_a = serialization.msgpack_restore(Path(path_a).read_bytes())
    tree_b = serialization.msgpack_restore(Path(path_b).read_bytes())

    def compare(a, b, where):
        if isinstance(a, dict):
            assert isinstance(b, dict) and sorted(a) == sorted(b), where
            for key in a:
                compare(a[key], b[key], f"{where}/{key}")
            return
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and a.dtype == b.dtype, where
        if np.issubdtype(a.dtype, np.floating):
            np.testing.assert_allclose(a, b, rtol=REPEAT_RTOL, atol=REPEAT_ATOL, err_msg=where)
        else:
            np.testing.assert_array_equal(a, b, err_msg=where)

    compare(tree_a, tree_b, "checkpoint")


def synthetic_flat(episode_lengths, end_flags, obs_dim=3, act_dim=2, seed=0):
    """Flat transitions with contiguous episodes. end_flags[i] is 'terminal', 'timeout' or None
    (the data stops mid-episode). Observations are continuous across each episode."""
    rng = np.random.default_rng(seed)
    obs, next_obs, terminals, timeouts = [], [], [], []
    for length, flag in zip(episode_lengths, end_flags):
        states = rng.normal(size=(length + 1, obs_dim)).astype(np.float32)
        obs.append(states[:-1])
        next_obs.append(states[1:])
        term = np.zeros(length, np.float32)
        tout = np.zeros(length, np.float32)
        if flag == "terminal":
            term[-1] = 1
        elif flag == "timeout":
            tout[-1] = 1
        terminals.append(term)
        timeouts.append(tout)
    n = sum(episode_lengths)
    return {
        "observations": np.concatenate(obs),
        "next_observations": np.concatenate(next_obs),
        "actions": rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": np.concatenate(terminals),
        "timeouts": np.concatenate(timeouts),
    }


def linear_system(n=3000, seed=0):
    """Transitions of a known smooth system for the dynamics tests: s' = s + 0.1 a (+ small noise), r = s_0 - a_0^2."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, 3)).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    next_obs = obs + 0.1 * np.concatenate([actions, actions[:, :1]], axis=1) + 0.01 * rng.normal(size=(n, 3))
    rewards = obs[:, 0] - actions[:, 0] ** 2
    return {"observations": obs, "actions": actions, "next_observations": next_obs.astype(np.float32),
            "rewards": rewards.astype(np.float32), "terminals": np.zeros(n, np.float32)}


def write_d4rl_hdf5(path: Path, arrays: dict, with_next_observations=True) -> Path:
    with h5py.File(path, "w") as file:
        for key, value in arrays.items():
            if key == "next_observations" and not with_next_observations:
                continue
            file.create_dataset(key, data=value)
        file.create_dataset("infos/qpos", data=np.zeros((len(arrays["rewards"]), 2)))
    return path


def write_neorl2_npz(path: Path, arrays: dict) -> Path:
    np.savez(path, obs=arrays["observations"], action=arrays["actions"],
             next_obs=arrays["next_observations"], reward=arrays["rewards"],
             done=arrays["terminals"], truncated=arrays["timeouts"])
    return path
