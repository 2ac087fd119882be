"""Evaluation and environments: the evaluate command, env checks before training, Dict observations."""

from __future__ import annotations

import json
import os

import gymnasium as gym
import numpy as np
import pytest
from conftest import PENDULUM, run_in_fresh_python, td3_bc_config

from offrl.data import remove_dataset
from offrl.run.algorithms import algorithm_module
from offrl.run.config import parse_config
from offrl.run.evaluate import evaluate_policy, make_env
from offrl.run.logging import read_metrics
from offrl.run.train import load_policy, train
from offrl.tools.cli import main as cli_main

td3_bc = algorithm_module("td3_bc")


class DictPendulum(gym.ObservationWrapper):
    """Pendulum-v1 observing a Dict, as gymnasium-robotics' envs do; flattened in key order
    (angle, velocity) its observations are Pendulum's own."""

    def __init__(self):
        super().__init__(gym.make("Pendulum-v1"))
        self.observation_space = gym.spaces.Dict({"angle": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
                                                  "velocity": gym.spaces.Box(-8.0, 8.0, (1,), np.float32)})

    def observation(self, obs):
        return {"angle": obs[:2], "velocity": obs[2:]}


DICT_PENDULUM = "offrl-test/DictPendulum-v0"
gym.register(DICT_PENDULUM, entry_point=DictPendulum)


def _stderr_of_looking_up(env_id: str) -> str:
    script = ("import sys; sys.stderr = sys.stdout\nfrom offrl.run.evaluate import registered\n"
              f"registered({env_id!r})")
    return run_in_fresh_python(script, dict(os.environ))


def test_evaluate_command_repeats_the_runs_last_evaluation_and_goes_further(pendulum, tmp_path, capsys):
    run = train(td3_bc.make, td3_bc_config(tmp_path, "--seeds", "3,4"), "td3_bc", show_progress=False).run_dir
    logged = {row["seed"]: row for row in read_metrics(run) if row["step"] == 400}
    out = tmp_path / "evaluation.json"
    # the run evaluated 2 episodes per seed, in environments seeded as evaluate seeds them;
    # evaluate needs no local dataset: run.json holds the env and the reference scores
    remove_dataset(PENDULUM)
    assert cli_main(["evaluate", str(run), "--episodes", "2", "--out", str(out)]) == 0
    again = json.loads(out.read_text())
    assert again["seeds"] == [3, 4] and again["env"] == "Pendulum-v1"
    for key in ("eval/return", "eval/normalized_score"):
        np.testing.assert_allclose(again[key], [logged[3][key], logged[4][key]], rtol=1e-5)
    assert cli_main(["evaluate", str(run), "--episodes", "5", "--out", str(out)]) == 0
    assert "mean ± std" in capsys.readouterr().out and json.loads(out.read_text())["episodes"] == 5
    further = json.loads(out.read_text())
    assert not np.allclose(further["eval/return"], again["eval/return"])
    # every episode is kept, and the first two of five are the two evaluated before
    episodes = np.array(further["eval/episode_returns"])
    assert episodes.shape == (2, 5)
    np.testing.assert_allclose(episodes.mean(axis=1), further["eval/return"])
    np.testing.assert_allclose(episodes[:, :2], again["eval/episode_returns"])


def test_mujoco_warnings_show_once_and_leave_no_log_file(tmp_path):
    # Gymnasium's HalfCheetah-v5 model makes MuJoCo 4 warn each time it is compiled; the envs offrl
    # makes route those warnings through Python's
    script = ("import warnings\n"
              "from offrl.run.evaluate import make_env\n"
              "with warnings.catch_warnings(record=True) as caught:\n"
              "    warnings.simplefilter('default')\n"
              "    for _ in range(3):\n"
              "        make_env('HalfCheetah-v5', 'test').close()\n"
              "print(sum('MuJoCo: ' in str(warning.message) for warning in caught))")
    assert run_in_fresh_python(script, dict(os.environ), cwd=tmp_path) == "1"
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()


def test_gymnasium_robotics_notice_shows_for_adroit_ids_only():
    # its import printed the Adroit reward notice under every error about an unknown id
    assert "reward functions were updated" not in _stderr_of_looking_up("Hopper-v9")
    assert "reward functions were updated" in _stderr_of_looking_up("AdroitHandDoor-v1")


def test_an_env_that_cannot_be_made_stops_the_run_before_it_starts(pendulum, tmp_path):
    with pytest.raises(ValueError, match=r"--eval_env Pendulum-v99 cannot be made .*registered here"):
        train(td3_bc.make, td3_bc_config(tmp_path, "--eval_env", "Pendulum-v99"), "td3_bc", show_progress=False)
    with pytest.raises(ValueError, match=r"--online_env Nowhere-v0 cannot be made"):
        train(td3_bc.make, td3_bc_config(tmp_path, "--online_steps", "100", "--online_update_every", "50",
                                   "--online_eval_every", "100", "--online_env", "Nowhere-v0"), "td3_bc",
              show_progress=False)
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_an_env_whose_spaces_do_not_fit_the_data_stops_the_run_before_it_starts(pendulum, tmp_path):
    with pytest.raises(ValueError, match=r"--eval_env MountainCarContinuous-v0 has 2-dim observations and 1-dim "
                                         r"actions, offrl/pendulum/test-v0 has 3 and 1"):
        train(td3_bc.make, td3_bc_config(tmp_path, "--eval_env", "MountainCarContinuous-v0"), "td3_bc", show_progress=False)
    with pytest.raises(ValueError, match=r"--eval_env CartPole-v1 takes Discrete\(2\) actions.*Box action space"):
        train(td3_bc.make, td3_bc_config(tmp_path, "--eval_env", "CartPole-v1"), "td3_bc", show_progress=False)
    assert not (tmp_path / "run").exists()


def test_dict_observations_are_flattened_as_the_data_layer_flattens_them():
    # what a policy trained on a dataset recorded from Dict observations sees when it acts
    assert make_env(DICT_PENDULUM, "--eval_env").observation_space.shape == (3,)
    policy = lambda obs: np.clip(-2.0 * obs[:, 1:2] - 0.5 * obs[:, 2:3], -2.0, 2.0)  # noqa: E731
    np.testing.assert_array_equal(evaluate_policy(policy, DICT_PENDULUM, 3, seed=5),
                                  evaluate_policy(policy, "Pendulum-v1", 3, seed=5))


def test_online_training_runs_in_an_env_with_dict_observations(tmp_path):
    sac = algorithm_module("sac")
    config = parse_config(sac.Config, "sac", [
        "--env", DICT_PENDULUM, "--env_steps", "400", "--start_steps", "200", "--eval_every", "400",
        "--eval_episodes", "2", "--checkpoint_every", "400", "--buffer_size", "1000", "--wandb", "disabled",
        "--run_dir", str(tmp_path / "sac")])
    result = sac.train_online(sac.make, config, "sac", show_progress=False)  # crosses the episode end at 200
    assert np.isfinite(result.final_eval["eval/return"]).all()
    assert load_policy(result.run_dir)(np.zeros((1, 3), np.float32)).shape == (1, 1)
