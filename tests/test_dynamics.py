"""The dynamics ensemble: its likelihood, variance bounds, training, saving, and termination."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import linear_system

from offrl.model_based.dynamics import (
    DynamicsConfig,
    GaussianMLP,
    gaussian_nll,
    hopper_terminal,
    known_termination,
    load_dynamics,
    save_dynamics,
    train_dynamics,
    train_termination_classifier,
    walker2d_terminal,
)

SMALL = DynamicsConfig(num_members=3, num_elites=2, hidden_dims=(32, 32), batch_size=64, max_epochs=60,
                       epochs_per_call=10)



def test_gaussian_nll_by_hand():
    mean = jnp.array([[[0.0, 1.0]]])
    logvar = jnp.array([[[0.0, np.log(4.0)]]])
    targets = jnp.array([[2.0, 1.0]])
    # ((0-2)^2 / 1 + 0 + (1-1)^2 / 4 + log 4) / 2 outputs
    np.testing.assert_allclose(gaussian_nll(mean, logvar, targets), [(4.0 + np.log(4.0)) / 2], rtol=1e-6)


def test_log_variance_stays_inside_the_learned_bounds():
    member = GaussianMLP(output_dim=2, hidden_dims=(8,))
    params = member.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))
    upper, lower = jnp.array([0.5, 1.0]), jnp.array([-3.0, -2.0])
    params["params"]["max_logvar"], params["params"]["min_logvar"] = upper, lower
    huge = 1e3 * jax.random.normal(jax.random.PRNGKey(1), (500, 4))
    _, logvar = member.apply(params, huge)
    # upper soft clamp, then lower: above the lower bound, and above the upper one by at
    # most softplus(lower - upper) (0.03 here)
    assert jnp.all(logvar >= lower - 1e-5)
    assert jnp.all(logvar <= upper + jax.nn.softplus(lower - upper) + 1e-5)
    assert float(logvar[:, 0].max()) > 0.5 and float(logvar[:, 0].min()) < -2.9  # both bounds reached


def test_ensemble_learns_a_linear_system_and_round_trips(tmp_path):
    data = linear_system()
    model, report = train_dynamics(data, SMALL, log=None)
    assert len(report.elites) == 2 and len(report.holdout_mse) == 3
    assert report.epochs <= SMALL.max_epochs and report.history
    assert max(report.holdout_mse_per_dim[:3]) < 0.01  # delta-state errors, env units
    assert report.holdout_mse_per_dim[3] < 0.05  # reward error (reward variance is ~1.1)
    test = linear_system(200, seed=1)
    next_obs, reward, uncertainty = model.step(jnp.asarray(test["observations"]), jnp.asarray(test["actions"]),
                                               jax.random.PRNGKey(0))
    assert np.abs(np.asarray(next_obs) - test["next_observations"]).mean() < 0.1
    assert np.abs(np.asarray(reward) - test["rewards"]).mean() < 0.2
    assert uncertainty.shape == (200,) and np.all(np.asarray(uncertainty) > 0)
    save_dynamics(model, report, tmp_path / "model")
    loaded = load_dynamics(tmp_path / "model")
    for a, b in zip(model.predict(next_obs, jnp.asarray(test["actions"])), loaded.predict(next_obs, jnp.asarray(test["actions"]))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(loaded.elites), report.elites)
    # a loaded model steps inside jit with its arrays closed over, as experiments use it
    loaded_next, _, _ = jax.jit(loaded.step)(next_obs, jnp.asarray(test["actions"]), jax.random.PRNGKey(0))
    eager_next = model.step(next_obs, jnp.asarray(test["actions"]), jax.random.PRNGKey(0))[0]
    np.testing.assert_allclose(np.asarray(loaded_next), np.asarray(eager_next), rtol=1e-5, atol=1e-6)


def test_training_stops_early_once_holdout_stops_improving():
    config = DynamicsConfig(num_members=2, num_elites=1, hidden_dims=(16,), batch_size=64, max_epochs=500,
                            patience=3, epochs_per_call=4)
    _, report = train_dynamics(linear_system(1000), config, log=None)
    assert report.epochs < 500
    history = np.array(report.history)
    best_before = history[:-3].min(axis=0)
    # no member improved by 1% in the last `patience` epochs
    assert np.all(history[-3:] >= 0.99 * best_before - 1e-9)


def test_a_killed_training_continues_from_its_progress_and_ends_as_an_uninterrupted_one(tmp_path):
    config = dataclasses.replace(SMALL, max_epochs=6, patience=100, epochs_per_call=2)
    data = linear_system(1000)
    uninterrupted, full_report = train_dynamics(data, config, log=None)

    class Killed(Exception):
        pass

    def killed_after_the_first_call(message):
        raise Killed(message)

    progress = tmp_path / "ensemble.progress.msgpack"
    with pytest.raises(Killed):
        train_dynamics(data, config, log=killed_after_the_first_call, progress=progress)
    assert progress.is_file()
    messages = []
    resumed, report = train_dynamics(data, config, log=messages.append, progress=progress)
    assert messages[0].startswith("dynamics: continuing from epoch 2")
    assert len(messages) == 3 and not progress.exists()  # two more calls, then the progress is removed
    assert report.epochs == full_report.epochs == 6 and report.history == full_report.history
    for a, b in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    progress.write_bytes(b"not msgpack")
    with pytest.raises(ValueError, match="Delete it"):
        train_dynamics(data, config, log=None, progress=progress)


def test_missing_model_and_too_little_data_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="dynamics.json"):
        load_dynamics(tmp_path)
    with pytest.raises(ValueError, match="too few"):
        train_dynamics(linear_system(50), SMALL, log=None)


@pytest.mark.parametrize("env_id,rule", [("Hopper-v5", hopper_terminal), ("Walker2d-v5", walker2d_terminal)])
def test_termination_rules_match_the_simulator(env_id, rule):
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    agree = []
    for _ in range(400):
        qpos = env.init_qpos + rng.normal(scale=[0, 0.5, 0.4] + [0.5] * (env.model.nq - 3))
        qvel = rng.normal(scale=2.0, size=env.model.nv)
        env.set_state(qpos, qvel)
        obs = env._get_obs()
        agree.append(bool(rule(jnp.asarray(obs[None]))[0]) == (not env.is_healthy))
    assert all(agree)
    assert known_termination(env_id) is rule
    assert known_termination("HalfCheetah-v5")(jnp.zeros((4, 17))).sum() == 0
    assert known_termination("Hopper-v4") is None and known_termination(None) is None


def test_termination_classifier_learns_a_threshold_rule():
    rng = np.random.default_rng(0)
    next_obs = rng.normal(size=(4000, 3)).astype(np.float32)
    terminals = (next_obs[:, 0] > 1.5).astype(np.float32)  # ~7% positives
    classifier = train_termination_classifier({"next_observations": next_obs, "terminals": terminals}, epochs=30)
    test = rng.normal(size=(2000, 3)).astype(np.float32)
    predicted = np.asarray(classifier(jnp.asarray(test)))
    assert (predicted == (test[:, 0] > 1.5)).mean() > 0.95
    with pytest.raises(ValueError, match="no terminal"):
        train_termination_classifier({"next_observations": next_obs, "terminals": np.zeros(4000)})


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5"])
def test_simulator_rebuilt_from_observations_replays_the_env(env_id):
    from offrl.model_based.simulator import Simulator

    env = gym.make(env_id)
    obs, _ = env.reset(seed=3)
    rng = np.random.default_rng(0)
    observations, actions, expected, rewards = [], [], [], []
    for _ in range(30):
        action = rng.uniform(-1, 1, env.action_space.shape)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(obs), actions.append(action), expected.append(next_obs), rewards.append(reward)
        obs = next_obs
        if terminated or truncated:
            break
    simulator = Simulator(env_id)
    observations = np.array(observations)
    predicted, predicted_rewards, _ = simulator.step(observations, np.array(actions))
    # Hopper and Walker2d clip observed velocities to [-10, 10]: a state is lost where they hit it
    exact = np.abs(observations[:, simulator.nq - 1:]).max(axis=1) < 10.0
    assert exact.sum() >= 3
    np.testing.assert_allclose(predicted[exact], np.array(expected)[exact], atol=1e-4)
    np.testing.assert_allclose(predicted_rewards[exact], np.array(rewards)[exact], atol=1e-4)


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5"])
def test_batched_simulator_equals_stepping_the_gym_env_row_by_row(env_id):
    """The simulator runs the physics in mujoco.rollout and reads observations, rewards and
    terminations from the env; Gymnasium's own step, set to each state, must agree."""
    from offrl.model_based.simulator import Simulator

    simulator = Simulator(env_id)
    env = gym.make(env_id).unwrapped
    start, _ = env.reset(seed=1)
    rng = np.random.default_rng(0)
    observations = start + rng.normal(0.0, 0.3, (200, start.size)) * np.r_[np.ones(simulator.nq - 1),
                                                                            10 * np.ones(simulator.nv)]
    actions = rng.uniform(-1, 1, (200, env.action_space.shape[0]))

    def gym_step(obs, action):
        env.set_state(np.concatenate([[0.0], obs[: simulator.nq - 1]]), obs[simulator.nq - 1:])
        return env.step(action)[:3]

    expected_obs, expected_rewards, expected_terminated = map(np.array, zip(*map(gym_step, observations, actions)))
    next_obs, rewards, terminated = simulator.step(observations, actions)
    np.testing.assert_allclose(next_obs, expected_obs, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rewards, expected_rewards, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(terminated, expected_terminated)
    if env_id == "Hopper-v5":
        assert 0 < terminated.mean() < 1  # both outcomes are checked
        with pytest.raises(ValueError, match="Hopper, Walker2d and HalfCheetah"):
            Simulator("InvertedPendulum-v5")

    horizon_actions = rng.uniform(-1, 1, (10, 20, actions.shape[1]))
    replayed = simulator.replay(observations[:20], horizon_actions)
    for row in range(20):
        env.set_state(np.concatenate([[0.0], observations[row, : simulator.nq - 1]]),
                      observations[row, simulator.nq - 1:])
        stepped = [env.step(action)[0] for action in horizon_actions[:, row]]
        np.testing.assert_allclose(replayed[:, row], stepped, rtol=1e-6, atol=1e-6)
