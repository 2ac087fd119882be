"""Offline-to-online fine-tuning: mixed replay, the hooks, schedules, Cal-QL, and resume with the buffer."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import synthetic_flat, write_neorl2_npz
from flax import serialization

from offrl.core.buffer import ReplayBuffer, mixed_sample
from offrl.core.learner import Algorithm
from offrl.core.rl import monte_carlo_returns
from offrl.data import DatasetError, convert
from offrl.data.scripted import make_pendulum_dataset
from offrl.run import checkpoint
from offrl.run.algorithms import algorithm_module
from offrl.run.config import TrainConfig, parse_config
from offrl.run.logging import read_metrics
from offrl.run.online import new_buffers, online_carry
from offrl.run.train import train

DATASET = "offrl/pendulum/finetune-v0"


@pytest.fixture
def pendulum(minari_store):
    make_pendulum_dataset(DATASET, num_steps=4000)
    return DATASET


def test_batches_mix_offline_and_online_data_at_the_set_ratio():
    data = {key: jnp.ones((100, 3)) if key in ("observations", "next_observations", "actions", "next_actions")
            else jnp.ones(100) for key in ReplayBuffer.create(1, 3, 3, tuple(
                ["observations", "actions", "rewards", "next_observations", "terminals", "timeouts", "next_actions"])).data}
    buffer = ReplayBuffer.create(64, 3, 3, tuple(data))
    buffer = buffer.add({key: -jnp.ones_like(value[:64]) for key, value in data.items()})
    for online_ratio in (0.5, 0.25):
        batch = mixed_sample(256, 1.0 - online_ratio)((data, buffer), jax.random.PRNGKey(0))
        assert int((batch["rewards"] < 0).sum()) == int(256 * online_ratio)
    empty = ReplayBuffer.create(64, 3, 3, tuple(data))  # online data not in yet: the dataset fills in
    assert bool(jnp.all(mixed_sample(256, 0.5)((data, empty), jax.random.PRNGKey(0))["rewards"] == 1))


def test_monte_carlo_returns_and_the_cal_ql_bound_by_hand():
    returns = monte_carlo_returns(np.array([1.0, 1.0, 1.0, 2.0, 2.0]), np.array([0, 3]), 0.5)
    np.testing.assert_allclose(returns, [1 + 0.5 + 0.25, 1 + 0.5, 1, 2 + 1, 2])
    cql = algorithm_module("cql")
    q = jnp.array([[[0.0, 5.0]], [[-3.0, 1.0]]])  # (critics, batch 1, 2 actions)
    np.testing.assert_allclose(cql.calibrated(q, jnp.array([2.0])), [[[2.0, 5.0]], [[2.0, 2.0]]])


class CountingState(flax.struct.PyTreeNode):
    hook_calls: jax.Array
    updates: jax.Array


def counting_algorithm(config, obs_dim, act_dim) -> Algorithm:
    """Does nothing but count its updates and how often the online hook ran."""
    def update(state, batch, rng, step):
        return state.replace(updates=state.updates + 1), {"batch_reward": batch["rewards"].mean()}

    return Algorithm(
        "counting", lambda rng: CountingState(jnp.int32(0), jnp.int32(0)), update,
        lambda state, obs, rng, deterministic: jnp.zeros(obs.shape[:-1] + (act_dim,)),
        on_online_start=lambda state, config: state.replace(hook_calls=state.hook_calls + 1))


def _config(tmp_path, name, *extra):
    return parse_config(TrainConfig, "counting", [
        "--dataset", DATASET, "--num_updates", "200", "--log_every", "100", "--eval_every", "200",
        "--eval_episodes", "1", "--checkpoint_every", "200", "--online_steps", "400", "--online_eval_every", "200",
        "--online_update_every", "50", "--seeds", "0,1", "--wandb", "disabled", "--run_dir", str(tmp_path / name),
        *extra])


def _final_carry(run_dir, config):
    algorithm = counting_algorithm(config, 3, 1)
    states = jax.vmap(algorithm.init)(jnp.arange(2))
    template = online_carry(states, jnp.zeros((2, 2), jnp.uint32), [0, 1], new_buffers(
        2, config.online_buffer_size, 3, 1, ("observations", "actions", "rewards", "next_observations",
                                             "terminals", "timeouts", "next_actions")))
    return checkpoint.restore(checkpoint.latest(run_dir), {"carry": template})["carry"]


def test_the_online_hook_fires_once_and_a_killed_run_keeps_its_buffer(pendulum, tmp_path):
    config = _config(tmp_path, "cut", "--online_steps", "200")
    train(counting_algorithm, config, "counting", show_progress=False)  # "killed" after 200 online steps
    resumed = parse_config(TrainConfig, "counting", ["--resume", str(tmp_path / "cut"), "--online_steps", "400"])
    train(counting_algorithm, resumed, "counting", show_progress=False)
    carry = _final_carry(tmp_path / "cut", resumed)
    np.testing.assert_array_equal(carry["states"].hook_calls, [1, 1])
    np.testing.assert_array_equal(carry["states"].updates, [200 + 400, 200 + 400])
    assert int(carry["env_step"]) == 400
    # the buffer came back from the checkpoint: 400 steps per seed minus the one transition
    # per env left pending when the run stopped and at the end
    assert np.all(np.asarray(carry["buffers"].size) >= 398)
    rows = read_metrics(tmp_path / "cut")
    steps = sorted({row["step"] for row in rows})
    assert steps[-1] == 600 and all(b > a for a, b in zip(steps, steps[1:]))  # one continuous axis


def _tiny_finetune_config(algo: str, tmp_path, *extra: str):
    """200 offline updates, then 200 online steps in chunks of 50, with small networks."""
    return parse_config(algorithm_module(algo).Config, algo, [
        "--dataset", DATASET, "--num_updates", "200", "--log_every", "100", "--eval_every", "200",
        "--eval_episodes", "1", "--checkpoint_every", "200", "--online_steps", "200", "--online_eval_every", "200",
        "--online_update_every", "50", "--batch_size", "64", "--hidden_dims", "32", "32", "--wandb", "disabled",
        "--run_dir", str(tmp_path / algo), *extra])


def test_rebrac_bc_coefficients_decay_online_as_configured(pendulum, tmp_path):
    rebrac = algorithm_module("rebrac")
    train(rebrac.make, _tiny_finetune_config("rebrac", tmp_path), "rebrac", show_progress=False)
    online_rows = [row for row in read_metrics(tmp_path / "rebrac") if "bc_coef_scale" in row]
    assert [row["step"] for row in online_rows] == [250, 300, 350, 400]
    for row in online_rows:  # each chunk logs the mean scale of its 50 updates
        updates = np.arange(row["step"] - 250, row["step"] - 200)
        expected = np.mean(1.0 - 0.5 * np.clip(updates / 200, 0, 1))
        assert row["bc_coef_scale"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_iql_actor_keeps_learning_online(pendulum, tmp_path):
    """IQL's cosine learning-rate decay must not end with the offline phase."""
    iql = algorithm_module("iql")
    train(iql.make, _tiny_finetune_config("iql", tmp_path, "--keep_checkpoints", "0"), "iql", show_progress=False)
    offline, online = (serialization.msgpack_restore(path.read_bytes())
                       for path in sorted((tmp_path / "iql" / checkpoint.CHECKPOINT_DIR).glob("step_*.msgpack")))
    assert offline["step"] == 200 and online["step"] == 400
    changes = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                           offline["carry"]["states"]["actor"]["params"], online["carry"]["states"]["actor"]["params"])
    assert max(jax.tree.leaves(changes)) > 1e-4


@pytest.mark.slow
def test_cal_ql_online_transitions_carry_the_returns_of_their_own_episode(pendulum, tmp_path):
    """Cal-QL's code bounds online Q-values too, by the Monte-Carlo return of the trajectory
    that collected them: each online transition waits for its episode's end, then enters the
    buffer with that episode's returns; until the first one ends the dataset fills the batches."""
    cql = algorithm_module("cql")
    config = _tiny_finetune_config("cql", tmp_path, "--cal_ql", "True", "--online_steps", "400",
                                   "--online_eval_every", "400", "--num_sampled_actions", "2")
    train(cql.make, config, "cql", show_progress=False)
    saved = serialization.msgpack_restore(checkpoint.latest(tmp_path / "cql").read_bytes())
    buffer = saved["carry"]["buffers"]
    assert int(np.asarray(buffer["size"])[0]) == 400  # Pendulum's two 200-step episodes, each added whole
    data = {key: np.asarray(value)[0, :400] for key, value in buffer["data"].items()}
    np.testing.assert_array_equal(np.flatnonzero(data["timeouts"]), [199, 399])
    np.testing.assert_allclose(data["mc_returns"], monte_carlo_returns(data["rewards"], np.array([0, 200]),
                                                                       config.gamma), rtol=1e-5, atol=1e-4)
    finite = [row["critic_loss"] for row in read_metrics(tmp_path / "cql") if "critic_loss" in row]
    assert len(finite) > 0 and np.all(np.isfinite(finite))


def test_fine_tuning_without_an_env_is_refused_before_the_offline_phase(tmp_path):
    convert("neorl2", write_neorl2_npz(tmp_path / "Simglucose-train.npz", synthetic_flat([60, 60],
                                                                                      ["timeout", "timeout"])))
    config = _tiny_finetune_config("iql", tmp_path, "--dataset", "neorl2/simglucose/train-v0")
    with pytest.raises(DatasetError, match="names no Gymnasium env to fine-tune in; pass --online_env"):
        train(algorithm_module("iql").make, config, "iql", show_progress=False)
    assert not (tmp_path / "iql").exists()  # refused before any offline update, not after them


def _finetune_experiment():
    path = Path(__file__).resolve().parents[1] / "experiments" / "finetune_experiment.py"
    spec = importlib.util.spec_from_file_location("finetune_experiment", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_finetune_results_of_separate_calls_join_one_table_and_plot(tmp_path):
    experiment = _finetune_experiment()
    args = argparse.Namespace(dataset="hopper-medium-replay", offline_updates=100, online_steps=20, dip_window=10)
    curves = {"0": [[100, 10.0], [110, 4.0], [120, 30.0]], "1": [[100, 12.0], [110, 8.0], [120, 40.0]]}
    earlier = {**vars(args), "results": {"iql": {"offline": [10.0, 12.0], "final": [30.0, 40.0], "dip": [-6.0, -4.0],
                                                 "curves": curves},
                                         "sac from scratch": {"final": [5.0], "curves": {"0": [[10, 2.0], [20, 5.0]]}}}}
    (tmp_path / "earlier.json").write_text(json.dumps(earlier))
    included = experiment.included_results(tmp_path / "earlier.json", args)
    assert set(included) == {"iql", "sac from scratch"}
    lines = experiment.report_lines(argparse.Namespace(**vars(args), eval_every=10, seeds="0,1", agents="iql",
                                                       runs="runs/finetune", out="x", include=["earlier.json"]),
                                    ["iql"], {}, included)
    assert "| iql | 11.0 ± 1.0 | 35.0 ± 5.0 | -5.0 ± 1.0 |" in lines and "--include earlier.json" in lines[2]
    assert lines[-1] == f"Rows of earlier calls: iql, sac from scratch from {tmp_path / 'earlier.json'}."
    # included again from a combined file, a row still names the call that trained it
    (tmp_path / "combined.json").write_text(json.dumps({**earlier, "results": included}))
    assert experiment.included_results(tmp_path / "combined.json", args)["iql"]["from"] == str(tmp_path / "earlier.json")
    axis = experiment.plot_curves(included, args, "offrl/hopper/medium-replay-v0").axes[0]
    iql_line, sac_line = axis.get_lines()[:2]
    # the agent's curve starts at the switch (its offline score), SAC's at its first env steps
    assert list(iql_line.get_xdata()) == [0, 10, 20] and list(iql_line.get_ydata()) == [11.0, 6.0, 35.0]
    assert list(sac_line.get_xdata()) == [10, 20]
    for key, value in (("offline_updates", 200), ("dip_window", 5), ("dataset", "walker2d-medium-replay")):
        with pytest.raises(ValueError, match=f"its {key} is"):
            experiment.included_results(tmp_path / "earlier.json", argparse.Namespace(**{**vars(args), key: value}))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="cannot be read as a results file"):
        experiment.included_results(tmp_path / "broken.json", args)


def test_a_buffer_the_size_of_the_step_budget_trains_as_the_default_one(pendulum, tmp_path):
    """docs/online.md advises it to shrink checkpoints: nothing is overwritten, and the
    batches are drawn from the filled rows alone, so the runs must agree."""
    td3_bc = algorithm_module("td3_bc")
    for name, size in (("large", "1000000"), ("budget", "200")):
        train(td3_bc.make, _tiny_finetune_config("td3_bc", tmp_path / name, "--online_buffer_size", size),
              "td3_bc", show_progress=False)
    large, budget = (serialization.msgpack_restore(checkpoint.latest(tmp_path / name / "td3_bc").read_bytes())
                     for name in ("large", "budget"))
    assert large["carry"]["buffers"]["data"]["rewards"].shape[-1] == 1_000_000
    assert budget["carry"]["buffers"]["data"]["rewards"].shape[-1] == 200
    np.testing.assert_array_equal(budget["carry"]["buffers"]["data"]["rewards"],
                                  large["carry"]["buffers"]["data"]["rewards"][:, :200])
    for path, leaf in jax.tree_util.tree_leaves_with_path(large["carry"]["states"]):
        np.testing.assert_array_equal(leaf, _leaf_at(budget["carry"]["states"], path), err_msg=str(path))


def _leaf_at(tree, path):
    for key in path:
        tree = tree[key.key]
    return tree
