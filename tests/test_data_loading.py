"""Loading Minari datasets written by Minari itself into flat transitions."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import minari
import numpy as np
import pytest
from gymnasium import spaces
from minari.data_collector.episode_buffer import EpisodeBuffer

from offrl.data import UnsupportedSpaceError, load_dataset, write_dataset
from offrl.data.collect import collect_episodes
from offrl.run.algorithms import algorithm_module
from offrl.run.train import train


def _buffers(lengths, flags, obs_fn, act_dim=2, seed=0):
    rng = np.random.default_rng(seed)
    buffers = []
    for index, (length, flag) in enumerate(zip(lengths, flags)):
        terminations = np.zeros(length, bool)
        truncations = np.zeros(length, bool)
        if flag == "terminal":
            terminations[-1] = True
        elif flag == "timeout":
            truncations[-1] = True
        buffers.append(EpisodeBuffer(
            id=index,
            observations=obs_fn(rng, length + 1),
            actions=rng.uniform(-1, 1, (length, act_dim)).astype(np.float32),
            rewards=rng.normal(size=length).astype(np.float32),
            terminations=terminations,
            truncations=truncations,
        ))
    return buffers


BOX = spaces.Box(-np.inf, np.inf, (4,), np.float32)
ACTIONS = spaces.Box(-1, 1, (2,), np.float32)


def test_minari_buffers_round_trip_exactly():
    lengths, flags = [5, 3, 7, 4], ["terminal", "timeout", "timeout", None]
    buffers = _buffers(lengths, flags, lambda rng, n: rng.normal(size=(n, 4)).astype(np.float32))
    minari.create_dataset_from_buffers(
        "test/toy/mixed-v0", buffers, observation_space=BOX, action_space=ACTIONS,
        eval_env="Pendulum-v1", ref_min_score=-10.0, ref_max_score=30.0,
    )
    data = load_dataset("test/toy/mixed-v0")

    assert data.num_episodes == 4 and data.num_transitions == sum(lengths)
    np.testing.assert_array_equal(data.episode_starts, [0, 5, 8, 15])
    np.testing.assert_array_equal(data.episode_lengths, lengths)
    np.testing.assert_array_equal(np.flatnonzero(data.terminals), [4])
    np.testing.assert_array_equal(np.flatnonzero(data.timeouts), [7, 14])
    for buffer, start in zip(buffers, data.episode_starts):
        steps = slice(start, start + len(buffer.rewards))
        np.testing.assert_array_equal(data.observations[steps], buffer.observations[:-1])
        np.testing.assert_array_equal(data.next_observations[steps], buffer.observations[1:])
        np.testing.assert_array_equal(data.actions[steps], buffer.actions)
    np.testing.assert_allclose(data.episode_returns, [b.rewards.sum() for b in buffers], rtol=1e-6)
    for array in data.transitions().values():
        assert array.dtype == np.float32
    assert data.metadata.eval_env_spec.id == "Pendulum-v1"
    assert (data.metadata.ref_min_score, data.metadata.ref_max_score) == (-10.0, 30.0)
    assert data.normalized_score(10.0) == pytest.approx(50.0)
    summary = data.summary()
    assert summary["episodes"] == 4 and summary["steps"] == 19
    assert summary["return_max"] == pytest.approx(max(b.rewards.sum() for b in buffers))


def test_the_fingerprint_follows_the_data_and_reference_scores():
    buffers = _buffers([5, 3], ["terminal", "timeout"], lambda rng, n: rng.normal(size=(n, 4)).astype(np.float32))
    minari.create_dataset_from_buffers("test/toy/print-v0", buffers, observation_space=BOX, action_space=ACTIONS,
                                       eval_env="Pendulum-v1", ref_min_score=-10.0, ref_max_score=30.0)
    data = load_dataset("test/toy/print-v0")
    assert data.fingerprint() == load_dataset("test/toy/print-v0").fingerprint()
    changed = [dataclasses.replace(data, rewards=data.rewards + np.float32(1e-3)),
               dataclasses.replace(data, timeouts=np.zeros_like(data.timeouts)),
               dataclasses.replace(data, episode_starts=np.array([0, 4])),
               dataclasses.replace(data, metadata=dataclasses.replace(data.metadata, ref_max_score=31.0))]
    assert len({data.fingerprint()} | {other.fingerprint() for other in changed}) == 5


def test_dict_observations_flatten_like_gymnasium():
    obs_space = spaces.Dict({"position": spaces.Box(-1, 1, (2,)), "goal": spaces.Box(-1, 1, (3,))})

    def dict_obs(rng, n):
        return {"position": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
                "goal": rng.uniform(-1, 1, (n, 3)).astype(np.float32)}

    buffers = _buffers([4, 6], ["timeout", "terminal"], dict_obs)
    minari.create_dataset_from_buffers("test/toy/dict-v0", buffers,
                                       observation_space=obs_space, action_space=ACTIONS)
    data = load_dataset("test/toy/dict-v0")
    assert data.observations.shape == (10, 5)
    first = {key: value[0] for key, value in buffers[0].observations.items()}
    np.testing.assert_array_equal(data.observations[0], spaces.flatten(obs_space, first))


def test_discrete_actions_are_refused_with_a_clear_error():
    from dataclasses import replace

    buffers = _buffers([3], ["timeout"], lambda rng, n: rng.normal(size=(n, 4)).astype(np.float32))
    buffers = [replace(buffer, actions=np.array([0, 1, 2])) for buffer in buffers]
    minari.create_dataset_from_buffers("test/toy/discrete-v0", buffers,
                                       observation_space=BOX, action_space=spaces.Discrete(3))
    with pytest.raises(UnsupportedSpaceError, match="action space contains Discrete"):
        load_dataset("test/toy/discrete-v0")


def test_hopper_collection_keeps_terminations_and_timeouts():
    env = minari.DataCollector(gym.make("Hopper-v5", max_episode_steps=40))
    env.action_space.seed(0)
    collected = []
    for episode in range(6):
        env.reset(seed=episode)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += reward
            done = terminated or truncated
        collected.append((total, terminated, truncated))
    env.create_dataset("test/hopper/random-v0", eval_env="Hopper-v5")

    data = load_dataset("test/hopper/random-v0")
    assert data.num_episodes == 6
    assert data.observations.shape[1] == 11 and data.actions.shape[1] == 3
    np.testing.assert_allclose(data.episode_returns, [c[0] for c in collected], rtol=1e-5)
    ends = data.episode_starts[1:] - 1
    ends = np.append(ends, data.num_transitions - 1)
    np.testing.assert_array_equal(data.terminals[ends], [c[1] for c in collected])
    np.testing.assert_array_equal(data.timeouts[ends], [c[2] for c in collected])
    # Inside episodes the next observation is the following row's observation.
    inside = np.setdiff1d(np.arange(data.num_transitions - 1), ends)
    np.testing.assert_array_equal(data.next_observations[inside], data.observations[inside + 1])
    # Flags appear only at episode ends.
    assert data.terminals.sum() + data.timeouts.sum() == (data.terminals[ends] + data.timeouts[ends]).sum()


def test_a_minari_d4rl_style_antmaze_dataset_trains_and_evaluates_in_its_env(tmp_path):
    # Minari's D4RL AntMaze datasets record Dict observations from gymnasium-robotics' AntMaze
    # and name that env for evaluation; a small one made the same way goes end to end.
    from offrl.run.config import parse_config
    from offrl.run.evaluate import registered
    from offrl.run.train import evaluate_run

    env = minari.DataCollector(gym.make(registered("AntMaze_UMaze-v4"), max_episode_steps=100))
    env.reset(seed=0)
    for _ in range(600):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    env.create_dataset("test/antmaze/umaze-v0", eval_env=gym.spec("AntMaze_UMaze-v4"),
                       ref_min_score=0.0, ref_max_score=1.0)
    data = load_dataset("test/antmaze/umaze-v0")
    assert data.observations.shape[1] == 2 + 2 + 27  # achieved goal, desired goal, the ant's state

    iql = algorithm_module("iql")
    config = parse_config(iql.Config, "iql", [
        "--dataset", "test/antmaze/umaze-v0", "--reward_transform", "antmaze", "--num_updates", "100",
        "--log_every", "100", "--eval_every", "100", "--eval_episodes", "1", "--wandb", "disabled",
        "--run_dir", str(tmp_path / "iql")])
    result = train(iql.make, config, "iql", show_progress=False)
    assert np.isfinite(result.final_eval["eval/normalized_score"]).all()
    # by id, as a user passes it: gymnasium-robotics registers it on first use
    scores = evaluate_run(result.run_dir, episodes=1, env="AntMaze_UMaze-v4")
    assert scores["env"] == "AntMaze_UMaze-v4"


def test_episodes_cut_off_by_the_collection_budget_end_truncated_and_data_scores_skip_them():
    policy = lambda obs, rng: rng.uniform(-1.0, 1.0, (len(obs), 3))  # noqa: E731
    episodes, obs_space, act_space = collect_episodes("Hopper-v5", policy, num_steps=600, num_envs=4, seed=0)
    assert all(episode.terminations[-1] or episode.truncations[-1] for episode in episodes)
    cut_off = [episode.cut_off for episode in episodes]
    assert sum(cut_off) == 4 and not any(episode.terminations[-1] for episode in episodes if episode.cut_off)
    write_dataset("test/hopper/cut-v0", episodes, obs_space, act_space, eval_env="Hopper-v5",
                  ref_min_score=0.0, ref_max_score=100.0)
    data = load_dataset("test/hopper/cut-v0")
    np.testing.assert_array_equal(data.complete_episodes, np.logical_not(cut_off))
    assert [episode.cut_off for episode in data.episodes()] == cut_off  # kept when a dataset is written again
    summary = data.summary()
    assert summary["complete_episodes"] == len(episodes) - 4
    assert summary["return_mean"] == pytest.approx(data.episode_returns[~np.array(cut_off)].mean())
