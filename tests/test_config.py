"""Configs: defaults, then per-environment and per-dataset YAML, then options; ranges and unknown options."""

from __future__ import annotations

import pytest
from conftest import td3_bc_config

from offrl.run.algorithms import algorithm_module
from offrl.run.config import parse_config
from offrl.run.train import train

td3_bc = algorithm_module("td3_bc")


def test_config_layers_defaults_then_dataset_yaml_then_command_line():
    rebrac = algorithm_module("rebrac")
    config = parse_config(rebrac.Config, "rebrac", ["--dataset", "d4rl-hdf5/hopper/medium-replay-v2"])
    assert (config.actor_bc_coef, config.critic_bc_coef) == (0.05, 0.5)
    assert config.batch_size == 1024 and config.critic_layer_norm
    config = parse_config(rebrac.Config, "rebrac", ["--dataset", "offrl/hopper/medium-replay-v0",
                                                    "--critic_bc_coef", "0.2"])
    assert (config.actor_bc_coef, config.critic_bc_coef) == (0.05, 0.2)
    assert parse_config(rebrac.Config, "rebrac", ["--dataset", "neorl2/dmsd/train-v0"]).actor_bc_coef == 0.01
    # per domain: IQL's rewards on DMSD's 100-step episodes at the locomotion rule's per-step scale
    assert parse_config(algorithm_module("iql").Config, "iql", ["--dataset", "neorl2/dmsd/train-v0"]).reward_scale \
        == pytest.approx(0.289)
    # per environment: IQL's AntMaze settings for every maze, from D4RL's files or Minari's
    iql = algorithm_module("iql")
    for dataset in ("d4rl-hdf5/antmaze/umaze-diverse-v2", "D4RL/antmaze/large-play-v1"):
        config = parse_config(iql.Config, "iql", ["--dataset", dataset])
        assert (config.expectile, config.beta, config.reward_transform) == (0.9, 10.0, "antmaze")
    config = parse_config(rebrac.Config, "rebrac", ["--dataset", "D4RL/antmaze/medium-diverse-v1"])
    assert (config.gamma, config.batch_size, config.actor_bc_coef, config.critic_bc_coef) == (0.999, 256, 0.001, 0.0005)
    with pytest.raises(ValueError, match="multiple of"):
        parse_config(rebrac.Config, "rebrac", ["--eval_every", "1500"])


@pytest.mark.parametrize("algo, arguments, message", [
    ("td3_bc", ["--seeds", "0,one"], "seeds are integers separated by commas"),
    ("td3_bc", ["--seeds", "0,-1"], r"--seeds 0,-1: each seed must be in \[0, 2\^32\)"),  # not an OverflowError
    ("iql", ["--seeds", "0,1,0"], "--seeds 0,1,0: a seed is repeated"),  # trained seed 0 twice
    ("td3_bc", ["--num_updates", "0"], "--num_updates 0 with no --online_steps leaves nothing to train"),
    ("td3_bc", ["--batch_size", "0"], "--batch_size 0: it must be at least 1"),
    ("td3_bc", ["--eval_every", "0"], "--eval_every 0: it must be at least 1"),  # not a ZeroDivisionError
    ("td3_bc", ["--reward_transform", "clip"], "--reward_transform clip: choose one of none, locomotion"),
    ("iql", ["--online_steps", "-5"], "--online_steps -5: it must be at least 0"),
    ("sac", ["--num_envs", "0"], "--num_envs 0: it must be at least 1"),
    ("ravl", ["--rollout_length", "0"], "--rollout_length 0: it must be at least 1"),
    ("morec", ["--real_ratio", "5"], "--real_ratio 5.0: the share of each batch from the dataset"),
    # settings whose math has a range: they trained quietly on another objective before
    ("iql", ["--expectile", "1.5"], r"--expectile 1.5: it must be in \(0, 1\)"),
    ("rebrac", ["--actor_bc_coef", "-0.1"], "--actor_bc_coef -0.1: it must be at least 0"),
    ("cql", ["--temperature", "0"], "--temperature 0.0: it must be positive"),
    ("sac", ["--gamma", "1.2"], r"--gamma 1.2: it must be in \[0, 1\]"),
    ("td3_bc", ["--critic_lr", "0"], "--critic_lr 0.0: it must be positive"),
    ("rebrac", ["--pack", '[{"actor_bc_coef": 0.1}, {"actor_bc_coef": -1}]'], "--actor_bc_coef -1: it must be at"),
    ("rebrac", ["--pack", '[{"actor_bc_kof": 0.1}]'], "--pack sets actor_bc_kof, which this algorithm has no"),
    # counts and widths: these began minutes of ensemble training, then failed or trained on NaN
    ("ravl", ["--num_critics", "0"], "--num_critics 0: it must be at least 1"),
    ("cql", ["--num_sampled_actions", "0"], "--num_sampled_actions 0: it must be at least 1"),
    ("td3_bc", ["--hidden_dims", "256", "0"], "--hidden_dims 256 0: a network needs at least one hidden layer"),
    ("morec", ["--reward_threshold", "1.5"], r"--reward_threshold 1.5: it must be in \[0, 1\]"),
    ("morec", ["--dynamics_seed", "-1"], r"--dynamics_seed -1: it must be in \[0, 2\^32\)"),
])
def test_settings_out_of_range_are_refused_when_parsed(algo, arguments, message):
    with pytest.raises(ValueError, match=message):
        parse_config(algorithm_module(algo).Config, algo, arguments)


def test_an_unknown_option_is_one_line_naming_the_closest_one():
    with pytest.raises(ValueError, match=r"^unknown option --num_update: did you mean --num_updates\? `--help` "):
        parse_config(td3_bc.Config, "td3_bc", ["--num_update", "5"])
    assert parse_config(td3_bc.Config, "td3_bc", ["--reward_bias", "-1", "--num_updates=500", "--log_every",
                                                   "100"]).reward_bias == -1.0


def test_a_saved_config_without_a_newer_setting_resumes_and_one_with_an_unknown_setting_is_refused(pendulum,
                                                                                                  tmp_path):
    # a run saved by an offrl without `root` (runs made before it) takes its default; a setting this
    # offrl does not know is named in one line
    train(td3_bc.make, td3_bc_config(tmp_path, "--num_updates", "200", name="saved"), "td3_bc", show_progress=False)
    saved = tmp_path / "saved" / "config.yaml"
    lines = saved.read_text().splitlines(keepends=True)
    saved.write_text("".join(line for line in lines if not line.startswith("root:")))
    resumed = parse_config(td3_bc.Config, "td3_bc", ["--resume", str(tmp_path / "saved"), "--num_updates", "400"])
    assert resumed.root == "runs"
    assert train(td3_bc.make, resumed, "td3_bc", show_progress=False).final_step == 400
    saved.write_text(saved.read_text() + "retired_setting: 3\n")
    with pytest.raises(ValueError, match=r"config.yaml: unknown config keys \['retired_setting'\]"):
        parse_config(td3_bc.Config, "td3_bc", ["--resume", str(tmp_path / "saved")])
