"""offrl's rebuilt NeoRL-2 simulators: the released data replayed step by step, the physics
against closed-form answers, and a NeoRL-2 run scored in its env. The replays skip where the
NeoRL-2 files are absent (they live outside the repository)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from conftest import SHARED_NEORL2, write_neorl2_npz

from offrl.data import convert, load_dataset
from offrl.data.reference import D4RL_TASKS, NEORL2_TASKS
from offrl.envs import register_envs
from offrl.envs.dmsd import EPISODE_STEPS, MASS, MAX_FORCE, STIFFNESS, SWITCH_STEP
from offrl.run.algorithms import algorithm_module
from offrl.run.config import parse_config
from offrl.run.logging import read_metrics
from offrl.run.train import train

DMSD = "offrl/DMSD-v0"
SAFETY_HALF_CHEETAH = "offrl/SafetyHalfCheetah-v0"
register_envs()


def released(name: str) -> dict[str, np.ndarray]:
    path = SHARED_NEORL2 / f"{name}.npz"
    if not path.exists():
        pytest.skip("the real NeoRL-2 files live outside the repo, in ../shared/data/neorl2")
    return dict(np.load(path))  # loaded once: an npz reads an array from disk at every access


def replay_differences(data: dict[str, np.ndarray]) -> tuple[float, float, int]:
    """The largest differences between the DMSD simulator's next observations and rewards and
    a NeoRL-2 file's, each episode started from its first state with its target schedule."""
    ends = np.flatnonzero(data["done"] + data["truncated"])
    env = gym.make(DMSD)
    worst_obs = worst_reward = 0.0
    for start, end in zip(np.r_[0, ends[:-1] + 1], ends):
        targets = np.concatenate([data["obs"][start:start + 1, 4:], data["next_obs"][start:end, 4:]])
        obs, _ = env.reset(options={"state": data["obs"][start, :4], "targets": targets})
        assert np.array_equal(obs, data["obs"][start])
        for row in range(start, end + 1):
            obs, reward, terminated, truncated, _ = env.step(data["action"][row])
            worst_obs = max(worst_obs, float(np.abs(obs - data["next_obs"][row]).max()))
            worst_reward = max(worst_reward, abs(reward - float(data["reward"][row])))
        assert truncated == bool(data["truncated"][end]) and not terminated
    return worst_obs, worst_reward, len(ends)


@pytest.mark.parametrize("split", ["train", "val"])
def test_dmsd_reproduces_every_released_transition(split):
    worst_obs, worst_reward, episodes = replay_differences(released(f"DMSD-{split}"))
    assert episodes == {"train": 1000, "val": 200}[split]
    # float32 rounding: next observations within 2 ulp of values up to ~2.6; rewards (up to
    # ~9, slope up to 100 near a target) within what a 1-ulp difference in position gives
    assert worst_obs <= 2.5e-7 and worst_reward <= 2e-5, (worst_obs, worst_reward)


def test_a_changed_simulator_fails_the_replay(tmp_path, monkeypatch):
    """The replay check can fail: with a heavier mass (NeoRL-2's val mode) it is far off."""
    data = released("DMSD-val")
    monkeypatch.setattr("offrl.envs.dmsd.MASS", 30.0)
    worst_obs, worst_reward, _ = replay_differences(data)
    assert worst_obs > 0.1 and worst_reward > 1.0


def test_dmsd_settles_where_the_springs_balance_a_constant_force():
    # a force F on mass 1 alone: K x = (F, 0) with K = [[2k, -k], [-k, 2k]] gives x = (2F, F) / (3k)
    env = gym.make(DMSD).unwrapped
    env.reset(options={"state": np.zeros(4), "targets": np.zeros((EPISODE_STEPS, 2))})
    for _ in range(3000):  # far past the 100-step episode: the damped system settles
        obs, *_ = env.step(np.array([1.0, 0.0]))
    np.testing.assert_allclose(obs[:2], [2 * MAX_FORCE / (3 * STIFFNESS), MAX_FORCE / (3 * STIFFNESS)], rtol=1e-5)
    np.testing.assert_allclose(obs[2:4], 0.0, atol=1e-5)
    # one step from rest: only the force acts, v = F dt / m, and positions move a step later
    env.reset(options={"state": np.zeros(4), "targets": np.zeros((EPISODE_STEPS, 2))})
    obs, reward, *_ = env.step(np.array([0.5, -1.0]))
    np.testing.assert_allclose(obs[:4], [0.0, 0.0, 0.5 * MAX_FORCE * 0.2 / MASS, -MAX_FORCE * 0.2 / MASS], rtol=1e-6)
    assert reward == pytest.approx(-2 * np.log(0.01), rel=1e-6)  # both masses on their targets


def test_dmsd_draws_episodes_as_neorl2_does():
    env = gym.make(DMSD)
    switches, lengths = set(), set()
    for seed in range(40):
        obs, _ = env.reset(seed=seed)
        assert np.all(np.abs(obs[:2]) <= 0.25) and np.all(np.abs(obs[2:4]) <= 0.1) and np.all(np.abs(obs[4:]) <= 1.5)
        targets, steps, truncated = [obs[4:]], 0, False
        while not truncated:
            obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
            targets.append(obs[4:])
            steps += 1
            assert not terminated
        lengths.add(steps)
        changes = np.flatnonzero(np.any(np.diff(np.array(targets), axis=0) != 0, axis=1)) + 1
        switches.add(tuple(changes))
    assert lengths == {EPISODE_STEPS}
    assert switches == {(), (SWITCH_STEP,)}  # one target per mass, or a second from step 50
    first, _ = env.reset(seed=7)
    again, _ = env.reset(seed=7)
    assert np.array_equal(first, again)


def one_step_differences(env, data: dict[str, np.ndarray], rounding: np.random.Generator | None = None):
    """Per transition: the largest difference between the next observation the simulator
    reaches in one step from the released observation and the released one, and the reward's.
    With `rounding`, the simulator is compared with itself instead, started once from the
    observation and once from it moved within its float32 rounding (half a unit in the last
    place): the differences rounding alone explains."""
    obs_errors, reward_errors = [], []
    for obs, action, next_obs, reward in zip(data["obs"], data["action"], data["next_obs"], data["reward"]):
        state = obs.astype(np.float64)
        env.set_state(state[:9], state[9:])
        reached, reached_reward, *_ = env.step(action)
        if rounding is not None:
            state = state + rounding.uniform(-0.5, 0.5, state.shape) * np.spacing(np.abs(obs)).astype(np.float64)
            env.set_state(state[:9], state[9:])
            next_obs, reward, *_ = env.step(action)
        obs_errors.append(np.abs(reached.astype(np.float32) - np.float32(next_obs)).max())
        reward_errors.append(abs(reached_reward - float(reward)))
    return np.array(obs_errors), np.array(reward_errors)


@pytest.mark.parametrize("split", ["train", "val"])
def test_safety_half_cheetah_reproduces_every_released_transition_within_rounding(split):
    data = released(f"SafetyHalfCheetah-{split}")
    env = gym.make(SAFETY_HALF_CHEETAH).unwrapped
    env.reset(seed=0)
    obs_errors, reward_errors = one_step_differences(env, data)
    by_rounding, _ = one_step_differences(env, data, np.random.default_rng(0))
    # contacts amplify the float32 rounding of a state in one step: most transitions agree to a
    # few ulp, a few by up to ~1e-3, as the simulator disagrees with itself when only that
    # rounding differs (the largest few of either are single draws of a heavy tail: bounded)
    assert np.median(obs_errors) <= 2e-6
    for quantile in (0.9, 0.99):
        assert np.quantile(obs_errors, quantile) <= 2 * np.quantile(by_rounding, quantile) + 1e-6, quantile
    assert obs_errors.max() <= 2e-3
    assert reward_errors.max() <= 5e-5  # rewards from float64 positions, as NeoRL-2 computed them
    assert np.all(data["done"] == 0) and np.flatnonzero(data["truncated"]).tolist() == \
        list(range(999, len(data["obs"]), 1000))


def test_safety_half_cheetah_replay_tells_another_model_apart():
    data = released("SafetyHalfCheetah-val")
    env = gym.make(SAFETY_HALF_CHEETAH, frame_skip=4).unwrapped  # 0.04 s steps instead of 0.05
    env.reset(seed=0)
    obs_errors, _ = one_step_differences(env, data)
    assert np.median(obs_errors) > 1e-2


def test_safety_half_cheetah_penalizes_running_over_the_speed_limit():
    env = gym.make(SAFETY_HALF_CHEETAH)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (18,) and env.spec.max_episode_steps == 1000
    qpos, qvel = env.unwrapped.data.qpos.copy(), env.unwrapped.data.qvel.copy()
    for speed, penalized in ((1.0, False), (8.0, True)):
        qvel[0] = speed
        env.unwrapped.set_state(qpos, qvel)
        _, reward, terminated, _, info = env.step(np.zeros(6))
        assert info["over_velocity_limit"] == penalized and not terminated
        assert (reward == -100.0) == penalized
        if not penalized:
            assert reward == pytest.approx(info["x_velocity"])


def test_every_eval_env_the_task_tables_name_can_be_made():
    for reference in (*D4RL_TASKS.values(), *NEORL2_TASKS.values()):
        if reference.eval_env_id:
            gym.spec(reference.eval_env_id)


def _dmsd_file(path, episodes: int):
    """A DMSD-train.npz of random-action episodes from the simulator, laid out as NeoRL-2's."""
    env = gym.make(DMSD)
    rows = {key: [] for key in ("observations", "actions", "next_observations", "rewards", "terminals", "timeouts")}
    for seed in range(episodes):
        obs, _ = env.reset(seed=seed)
        truncated = False
        while not truncated:
            action = env.action_space.sample()
            next_obs, reward, _, truncated, _ = env.step(action)
            for key, value in zip(rows, (obs, action, next_obs, reward, 0.0, float(truncated))):
                rows[key].append(value)
            obs = next_obs
    return write_neorl2_npz(path, {key: np.array(value, np.float32) for key, value in rows.items()})


@pytest.mark.slow
def test_a_neorl2_dmsd_run_is_scored_in_the_rebuilt_simulator(minari_store, tmp_path):
    result = convert("neorl2", _dmsd_file(tmp_path / "DMSD-train.npz", episodes=20))
    assert load_dataset(result.dataset_id).metadata.eval_env_spec.id == DMSD
    module = algorithm_module("bc")
    config = parse_config(module.Config, "bc", [
        "--dataset", result.dataset_id, "--num_updates", "200", "--log_every", "100", "--eval_every", "200",
        "--eval_episodes", "2", "--wandb", "disabled", "--run_dir", str(tmp_path / "run")])
    run_dir = train(module.make, config, "bc", show_progress=False).run_dir
    scored = [row for row in read_metrics(run_dir) if "eval/normalized_score" in row]
    assert scored and np.isfinite(scored[-1]["eval/normalized_score"])

