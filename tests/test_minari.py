"""Datasets offrl writes are Minari datasets in full: other Minari tools load them, recover
their environments and normalize their scores; Minari's own mujoco/*-v0 datasets train here."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import minari
import numpy as np
import pytest
from conftest import synthetic_flat, write_d4rl_hdf5, write_neorl2_npz

import offrl
from offrl.data import convert, write_dataset
from offrl.data.collect import collect_episodes
from offrl.data.converters import default_dataset_id
from offrl.data.scripted import make_pendulum_dataset
from offrl.data.suite import suite_id
from offrl.run.algorithms import algorithm_module
from offrl.run.config import parse_config

# Minari's own top-level namespaces that offrl's ids sit beside in one store
MINARI_NAMESPACES = ("D4RL", "mujoco", "minigrid", "atari")


def _as_d3rlpy_loads_it(dataset_id: str):
    """What d3rlpy's get_minari does with an id: load, recover the env, flatten the episodes."""
    dataset = minari.load_dataset(dataset_id)
    env = dataset.recover_environment()
    observations, actions, rewards, terminals, timeouts = [], [], [], [], []
    for episode in dataset.iterate_episodes():
        assert len(episode.observations) == len(episode.actions) + 1  # the last next observation is kept
        observations.append(episode.observations[:-1])
        actions.append(episode.actions)
        rewards.append(episode.rewards)
        terminals.append(episode.terminations)
        timeouts.append(episode.truncations)
    observations, actions = np.concatenate(observations), np.concatenate(actions)
    assert observations.shape[1:] == env.observation_space.shape
    assert actions.shape[1:] == env.action_space.shape
    env.reset(seed=0)
    env.step(np.clip(actions[0], env.action_space.low, env.action_space.high))  # the data's actions fit the env
    env.close()
    return dataset


def _check_metadata(dataset, author: str, permalink: str, requirements: tuple[str, ...]):
    metadata = dataset.storage.metadata
    assert author in metadata["author"] and metadata["code_permalink"] == permalink
    installed = {name: importlib.metadata.version(name) for name in requirements}
    assert sorted(metadata["requirements"]) == sorted(f"{name}=={version}" for name, version in installed.items())


def test_a_generated_dataset_recovers_the_env_that_made_it(minari_store):
    make_pendulum_dataset("offrl/pendulum/test-v0", num_steps=1_000)
    dataset = _as_d3rlpy_loads_it("offrl/pendulum/test-v0")
    assert dataset.spec.env_spec.id == "Pendulum-v1"
    assert dataset.recover_environment(eval_env=True).spec.id == "Pendulum-v1"
    _check_metadata(dataset, "offrl", f"offrl {importlib.metadata.version('offrl')}", ("gymnasium",))
    metadata = dataset.storage.metadata
    low, high = metadata["ref_min_score"], metadata["ref_max_score"]
    np.testing.assert_allclose(minari.get_normalized_score(dataset, np.array([low, high])), [0.0, 1.0])


def test_a_d4rl_conversion_recovers_its_eval_env_with_its_requirements(minari_store, tmp_path):
    arrays = synthetic_flat([10, 6], ["timeout", "terminal"], obs_dim=11, act_dim=3)
    result = convert("d4rl", write_d4rl_hdf5(tmp_path / "hopper_medium-v2.hdf5", arrays))
    dataset = _as_d3rlpy_loads_it(result.dataset_id)
    assert dataset.spec.env_spec.id == dataset.recover_environment(eval_env=True).spec.id == "Hopper-v5"
    _check_metadata(dataset, "D4RL (Fu et al. 2020)", "https://github.com/Farama-Foundation/D4RL",
                    ("gymnasium", "mujoco"))
    # D4RL's reference returns: 0 and 1 at the random and expert scores, as with D4RL's own loader
    np.testing.assert_allclose(minari.get_normalized_score(dataset, np.array([-20.272305, 3234.3])), [0.0, 1.0])


def test_a_neorl2_conversion_recovers_offrls_simulator_or_none(minari_store, tmp_path):
    arrays = synthetic_flat([100, 100], ["timeout", "timeout"], obs_dim=6, act_dim=2)
    result = convert("neorl2", write_neorl2_npz(tmp_path / "DMSD-train.npz", arrays))
    dataset = minari.load_dataset(result.dataset_id)
    # DMSD's rebuilt simulator, which another Minari tool makes from the recorded spec
    assert dataset.recover_environment(eval_env=True).spec.id == "offrl/DMSD-v0"
    _check_metadata(dataset, "NeoRL-2, Polixir (2025)", "https://github.com/polixir/NeoRL2", ("gymnasium", "offrl"))
    np.testing.assert_allclose(minari.get_normalized_score(dataset, np.array([30.60, 849.51])), [0.0, 1.0],
                               atol=1e-6)
    # a task offrl has not rebuilt ships no simulator (docs/data.md)
    result = convert("neorl2", write_neorl2_npz(tmp_path / "Simglucose-train.npz", arrays))
    dataset = minari.load_dataset(result.dataset_id)
    assert dataset.spec.env_spec is None and dataset.storage.metadata["requirements"] == []
    with pytest.raises(ValueError, match="env_spec is None"):
        dataset.recover_environment()


def test_no_two_namespaces_differ_only_by_case():
    produced = {default_dataset_id(fmt, Path(name)).split("/")[0]
                for fmt, name in (("d4rl", "hopper_medium-v2.hdf5"), ("neorl2", "DMSD-train.npz"),
                                  ("neorl", "HalfCheetah-v3-low-1000-train.npz"))}
    produced.add(suite_id("hopper", "medium").split("/")[0])
    everything = produced | set(MINARI_NAMESPACES)
    assert len({namespace.lower() for namespace in everything}) == len(everything), everything


@pytest.fixture
def minari_hopper(minari_store):
    """A small local dataset under the id of Minari's own mujoco/hopper/medium-v0, with the
    metadata Minari's mujoco datasets carry: Hopper-v5 and reference scores."""
    episodes, observation_space, action_space = collect_episodes(
        "Hopper-v5", lambda obs, rng: rng.uniform(-1, 1, (len(obs), 3)), 600, num_envs=2)
    write_dataset("mujoco/hopper/medium-v0", episodes, observation_space, action_space, eval_env="Hopper-v5",
                  ref_min_score=-20.0, ref_max_score=3200.0, author="a Minari maintainer",
                  code_permalink="https://github.com/Farama-Foundation/minari-dataset-generation-scripts")
    return "mujoco/hopper/medium-v0"


def test_minari_mujoco_datasets_train_with_their_eval_env_scores_and_configs(minari_hopper, tmp_path,
                                                                             monkeypatch):
    # per-environment and per-dataset settings apply by env and kind, whatever the namespace
    morec = algorithm_module("morec")
    assert parse_config(morec.Config, "morec", ["--dataset", minari_hopper]).penalty_coef == 15.0  # morec/hopper.yaml
    rebrac = algorithm_module("rebrac")
    replay = parse_config(rebrac.Config, "rebrac", ["--dataset", "mujoco/hopper/medium-replay-v0"])
    assert (replay.actor_bc_coef, replay.critic_bc_coef) == (0.05, 0.5)  # rebrac/hopper-medium-replay.yaml
    monkeypatch.chdir(tmp_path)
    run = offrl.train("td3_bc", minari_hopper, num_updates=100, log_every=100, eval_every=100, eval_episodes=1,
                      checkpoint_every=100, wandb="disabled", hidden_dims=(16, 16))
    record = run.record
    assert record["eval_env"]["id"] == "Hopper-v5" and (record["ref_min_score"], record["ref_max_score"]) == (
        -20.0, 3200.0)
    rows = [row for row in run.metrics() if "eval/normalized_score" in row]
    assert rows and rows[-1]["eval/normalized_score"] == pytest.approx(
        100 * (rows[-1]["eval/return"] + 20.0) / 3220.0)
