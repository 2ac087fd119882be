"""Label splitting, the inverse dynamics model, proxy labelling, and the action-free guard."""

from __future__ import annotations

import re

import numpy as np
import pytest
from gymnasium import spaces
from offrl.algorithms import proxy_label as proxy_label_script

from offrl.data import DatasetError, load_dataset, local_dataset_ids, write_dataset
from offrl.data.episodes import Episode
from offrl.data.labels import labelled_episodes, split_labels
from offrl.model_based.idm import IDMConfig, proxy_label, train_idm, validation_rows
from offrl.run.algorithms import algorithm_module
from offrl.run.config import parse_config
from offrl.run.train import train

MIXING = np.array([[0.5, 0.1], [-0.2, 0.4], [0.3, -0.3]], np.float32)  # s' = s + MIXING @ a


def linear_episodes(count=20, length=50, seed=0):
    """Episodes of s' = s + M a with uniform actions in [-0.9, 0.9]; episode i's rewards sum to i."""
    rng = np.random.default_rng(seed)
    episodes = []
    for index in range(count):
        actions = rng.uniform(-0.9, 0.9, (length, 2)).astype(np.float32)
        states = [rng.normal(size=3).astype(np.float32)]
        for action in actions:
            states.append(states[-1] + MIXING @ action)
        episodes.append(Episode(observations=np.array(states, np.float32), actions=actions,
                                rewards=np.full(length, index / length, np.float32),
                                terminations=np.zeros(length, bool), truncations=np.eye(1, length, length - 1, bool)[0]))
    return episodes


@pytest.fixture
def linear_dataset(minari_store):
    write_dataset("synthetic/linear/full-v0", linear_episodes(), spaces.Box(-np.inf, np.inf, (3,)),
                  spaces.Box(-1.0, 1.0, (2,)), ref_min_score=0.0, ref_max_score=20.0)
    return "synthetic/linear/full-v0"


def test_selection_modes_are_exact_and_seeded():
    returns = np.arange(20.0)[::-1]  # episode 19 has the lowest return
    low = labelled_episodes(returns, 0.1, "lowest-return-50%", seed=1)
    assert len(low) == 2 and set(low) <= set(range(10, 20))
    np.testing.assert_array_equal(low, labelled_episodes(returns, 0.1, "lowest-return-50%", seed=1))
    assert any(not np.array_equal(low, labelled_episodes(returns, 0.1, "lowest-return-50%", seed=s)) for s in range(2, 8))
    high = labelled_episodes(returns, 0.25, "highest-return-30%", seed=0)
    assert len(high) == 5 and set(high) <= set(range(6))
    assert len(labelled_episodes(returns, 0.5, "uniform", seed=0)) == 10
    with pytest.raises(DatasetError, match="pool of 2"):
        labelled_episodes(returns, 0.5, "lowest-return-10%", seed=0)
    with pytest.raises(DatasetError, match="Unknown selection"):
        labelled_episodes(returns, 0.1, "median", seed=0)


def test_split_writes_a_labelled_and_an_action_free_dataset(linear_dataset):
    result = split_labels(linear_dataset, 0.1, "lowest-return-50%", seed=0)
    assert (result.labelled_id, result.unlabelled_id) == ("synthetic/linear/full-labelled10-v0",
                                                          "synthetic/linear/full-unlabelled90-v0")
    labelled, action_free = load_dataset(result.labelled_id), load_dataset(result.unlabelled_id)
    assert (labelled.num_episodes, action_free.num_episodes) == (2, 18)
    assert labelled.num_transitions + action_free.num_transitions == 1000
    assert np.all(labelled.episode_returns < 10) and np.isfinite(labelled.actions).all()
    assert action_free.metadata.actions_missing and np.isnan(action_free.actions).all()
    assert np.isfinite(action_free.observations).all()
    with pytest.raises(DatasetError, match="action-free"):
        train(*_td3_bc(result.unlabelled_id))


def _td3_bc(dataset_id):
    module = algorithm_module("td3_bc")
    config = parse_config(module.Config, "td3_bc", ["--dataset", dataset_id, "--num_updates", "1000",
                                                    "--wandb", "disabled"])
    return module.make, config, "td3_bc"


def test_idm_learns_a_linear_inverse_model(linear_dataset):
    idm, report = train_idm(load_dataset(linear_dataset), IDMConfig(hidden_dims=(128, 128), batch_size=128,
                                                                     learning_rate=1e-3, max_steps=500,
                                                                     validate_every=50), log=None)
    assert report.validation_action_mse < 0.01  # actions span [-0.9, 0.9]: variance 0.27
    assert report.steps <= 500 and len(report.history) == report.steps // 50
    test = linear_episodes(count=2, seed=5)[0]
    windows = np.concatenate([np.r_[test.observations[:1], test.observations[:-2]], test.observations[:-1],
                              test.observations[1:]], axis=1)
    predicted, spread = idm.predict(windows)
    assert np.abs(np.asarray(predicted) - test.actions).mean() < 0.1
    assert np.all(np.asarray(spread) == 0.0)  # one member: no spread


def test_idm_validation_holds_out_whole_trajectories():
    starts = np.array([0, 50, 80, 200, 260])  # episodes of 50, 30, 120, 60 and 40 rows
    rows = validation_rows(starts, 300, 0.1, seed=0)
    ends = dict(zip(starts, [50, 80, 200, 260, 300]))
    held_out = {start for start in starts if start in rows}
    assert sorted(rows) == sorted(np.concatenate([np.arange(start, ends[start]) for start in held_out]))
    assert len(rows) >= 30 and len(held_out) < len(starts)  # at least 10%, and something left to train on
    np.testing.assert_array_equal(rows, validation_rows(starts, 300, 0.1, seed=0))
    assert len(validation_rows(starts, 300, 0.9, seed=0)) < 300  # one trajectory always stays for training
    with pytest.raises(DatasetError, match="at least 2 labelled trajectories"):
        validation_rows(np.array([0]), 100, 0.1, seed=0)


def test_proxy_labels_and_their_flags_survive_the_round_trip(linear_dataset):
    split = split_labels(linear_dataset, 0.5, "uniform", seed=0)
    result = proxy_label(split.labelled_id, split.unlabelled_id, "synthetic/linear/proxy-v0",
                         IDMConfig(hidden_dims=(64, 64), batch_size=64, learning_rate=1e-3, max_steps=100,
                                  validate_every=50, ensemble=2),
                         log=None)
    proxied = load_dataset(result.dataset_id)
    labelled = load_dataset(split.labelled_id)
    assert proxied.num_transitions == 1000 and np.isfinite(proxied.actions).all()
    np.testing.assert_array_equal(proxied.proxy_actions, np.r_[np.zeros(500, bool), np.ones(500, bool)])
    np.testing.assert_array_equal(proxied.actions[:500], labelled.actions)
    extra = proxied.metadata.extra
    assert extra["idm_validation_action_mse"] == pytest.approx(result.report.validation_action_mse)
    assert extra["labelled_fingerprint"] == labelled.fingerprint()  # what it was made from, to tell when it is stale
    assert extra["unlabelled_fingerprint"] == load_dataset(split.unlabelled_id).fingerprint()
    assert extra["proxy_spread_mean"] > 0 and not proxied.metadata.actions_missing
    assert np.all(proxied.proxy_spread[:500] == 0) and np.all(proxied.proxy_spread[500:] > 0)
    assert proxied.proxy_spread[500:].mean() == pytest.approx(extra["proxy_spread_mean"], rel=1e-5)


def test_the_pipeline_script_splits_labels_and_trains(linear_dataset, tmp_path):
    pipeline = proxy_label_script
    result = pipeline.main(["--algo", "bc", "--dataset", linear_dataset, "--labelled", "0.5", "--from", "uniform",
                            "--idm-steps", "100", "--idm-batch-size", "64", "--num_updates", "200",
                            "--log_every", "100", "--wandb", "disabled", "--run_dir", str(tmp_path / "bc")])
    assert load_dataset("synthetic/linear/full-proxy50-v0").proxy_actions.sum() == 500
    assert (result.run_dir / "checkpoints").is_dir()


@pytest.mark.parametrize("arguments, message", [
    (["--algo", "td3bc"], "Unknown algorithm 'td3bc'"),
    (["--algo", "bc", "--seeds", "0,x"], "seeds are integers separated by commas"),
])
def test_the_pipeline_script_checks_the_algorithm_before_labelling(linear_dataset, arguments, message):
    # these failed only after the split and the inverse dynamics model had been made
    before = set(local_dataset_ids())
    with pytest.raises(ValueError, match=message):
        proxy_label_script.main(["--dataset", linear_dataset, "--labelled", "0.5", "--idm-steps", "100",
                                              "--idm-batch-size", "64", *arguments])
    assert set(local_dataset_ids()) == before


def test_idm_settings_that_cannot_train_are_refused_before_anything_is_written(linear_dataset, capsys):
    # an empty ensemble wrote NaN proxy actions, 0 steps an untrained IDM's
    with pytest.raises(ValueError, match="IDM ensemble 0: it must be at least 1"):
        IDMConfig(ensemble=0)
    before = set(local_dataset_ids())
    for flag, value, message in [("--idm-ensemble", "0", "0: it must be at least 1"),
                                 ("--split-seed", "-1", r"-1: a seed must be in \[0, 2\^32\)")]:
        with pytest.raises(SystemExit):
            proxy_label_script.main(["--algo", "bc", "--dataset", linear_dataset, flag, value])
        assert re.search(f"{flag}: {message}", capsys.readouterr().err)
    assert set(local_dataset_ids()) == before

