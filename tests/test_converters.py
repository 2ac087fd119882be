"""Converters from D4RL HDF5, NeoRL-2 npz and NeoRL v1 npz, checked by exact round trips."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_NEORL2, synthetic_flat, write_d4rl_hdf5, write_neorl2_npz

from offrl.data import convert, load_dataset, read_metadata
from offrl.data.reference import D4RL_TASKS


def _assert_same_transitions(data, arrays):
    for key in ("observations", "next_observations", "actions", "rewards", "terminals", "timeouts"):
        np.testing.assert_array_equal(getattr(data, key), arrays[key].astype(np.float32), err_msg=key)


def test_d4rl_with_next_observations_round_trips_exactly(tmp_path):
    arrays = synthetic_flat([10, 4, 8, 5], ["timeout", "terminal", "timeout", None], obs_dim=11, act_dim=3)
    path = write_d4rl_hdf5(tmp_path / "hopper_medium-v2.hdf5", arrays)
    result = convert("d4rl", path)
    assert result.dataset_id == "d4rl-hdf5/hopper/medium-v2"

    data = load_dataset("d4rl-hdf5/hopper/medium-v2")
    _assert_same_transitions(data, arrays)
    np.testing.assert_array_equal(data.episode_starts, [0, 10, 14, 22])
    reference = D4RL_TASKS["hopper"]
    assert data.metadata.ref_min_score == reference.ref_min_score == -20.272305
    assert data.metadata.ref_max_score == reference.ref_max_score == 3234.3
    assert data.metadata.eval_env_spec.id == "Hopper-v5"
    np.testing.assert_allclose(data.episode_returns,
                               np.add.reduceat(arrays["rewards"].astype(np.float64), [0, 10, 14, 22]))
    assert data.metadata.extra["source"] == "d4rl"
    assert len(data.metadata.extra["source_sha256"]) == 64


def test_d4rl_without_next_observations_drops_only_unknown_transitions(tmp_path):
    arrays = synthetic_flat([6, 4, 5], ["timeout", "terminal", "timeout"])
    path = write_d4rl_hdf5(tmp_path / "walker2d-medium-v2.hdf5", arrays, with_next_observations=False)
    result = convert("d4rl", path)
    data = load_dataset(result.dataset_id)

    # Timeout episodes lose their last step (next obs unknown); the step before is the timeout.
    assert data.num_episodes == 3
    np.testing.assert_array_equal(data.episode_lengths, [5, 4, 4])
    keep = np.r_[0:5, 6:10, 10:14]
    np.testing.assert_array_equal(data.observations, arrays["observations"][keep])
    np.testing.assert_array_equal(data.actions, arrays["actions"][keep])
    np.testing.assert_array_equal(np.flatnonzero(data.timeouts), [4, 12])
    np.testing.assert_array_equal(np.flatnonzero(data.terminals), [8])
    # Next observations are the real following states, except the terminal placeholder.
    np.testing.assert_array_equal(data.next_observations[:4], arrays["observations"][1:5])
    np.testing.assert_array_equal(data.next_observations[4], arrays["observations"][5])
    np.testing.assert_array_equal(data.next_observations[8], arrays["observations"][9])
    extra = data.metadata.extra
    assert extra["dropped_final_transitions"] == 2 and extra["placeholder_final_observations"] == 1
    assert any("dropped" in note for note in result.notes)


def test_neorl2_synthetic_round_trip_and_reference_scores(tmp_path):
    arrays = synthetic_flat([7, 3, 9], ["timeout", "terminal", "timeout"])
    path = write_neorl2_npz(tmp_path / "DMSD-val.npz", arrays)
    result = convert("neorl2", path)
    assert result.dataset_id == "neorl2/dmsd/val-v0"
    data = load_dataset(result.dataset_id)
    _assert_same_transitions(data, arrays)
    assert (data.metadata.ref_min_score, data.metadata.ref_max_score) == (30.60, 849.51)
    # DMSD's rebuilt simulator has 6-dim observations, this file 3: a policy could not act in it
    assert data.metadata.eval_env_spec is None
    assert any("offrl/DMSD-v0 has 6-dim observations" in note for note in result.notes)


@pytest.mark.skipif(not (SHARED_NEORL2 / "DMSD-train.npz").exists(),
                    reason="the real NeoRL-2 files live outside the repo, in ../shared/data/neorl2")
def test_real_neorl2_dmsd_matches_the_published_data_score():
    result = convert("neorl2", SHARED_NEORL2 / "DMSD-train.npz")
    data = load_dataset(result.dataset_id)
    raw = np.load(SHARED_NEORL2 / "DMSD-train.npz")
    assert data.num_episodes == 1000 and data.num_transitions == 100_000
    np.testing.assert_array_equal(data.timeouts, raw["truncated"])
    np.testing.assert_array_equal(data.next_observations, raw["next_obs"])
    assert data.summary()["normalized_return_mean"] == pytest.approx(56.6, abs=0.05)
    assert data.metadata.eval_env_spec.id == "offrl/DMSD-v0"


@pytest.mark.skipif(not (SHARED_NEORL2 / "Simglucose-val.npz").exists(),
                    reason="the real NeoRL-2 files live outside the repo, in ../shared/data/neorl2")
def test_real_neorl2_simglucose_keeps_terminals_apart_from_truncations():
    raw = np.load(SHARED_NEORL2 / "Simglucose-val.npz")
    data = load_dataset(convert("neorl2", SHARED_NEORL2 / "Simglucose-val.npz").dataset_id)
    np.testing.assert_array_equal(data.terminals, raw["done"])
    np.testing.assert_array_equal(data.timeouts, raw["truncated"])
    assert data.num_episodes == int((raw["done"] + raw["truncated"]).sum())


def test_neorl_v1_uses_the_index_and_marks_time_limits(tmp_path):
    arrays = synthetic_flat([6, 4, 5], [None, "terminal", None])
    path = tmp_path / "Hopper-v3-low-100-train.npz"
    np.savez(path, obs=arrays["observations"], next_obs=arrays["next_observations"],
             action=arrays["actions"], reward=arrays["rewards"][:, None],
             done=arrays["terminals"][:, None], index=np.array([0, 6, 10]))
    result = convert("neorl", path, ref_min_score=0.0, ref_max_score=100.0)
    assert result.dataset_id == "neorl/hopper-v3/low-100-v0"
    data = load_dataset(result.dataset_id)
    np.testing.assert_array_equal(data.episode_starts, [0, 6, 10])
    np.testing.assert_array_equal(np.flatnonzero(data.terminals), [9])
    np.testing.assert_array_equal(np.flatnonzero(data.timeouts), [5, 14])
    assert read_metadata(result.dataset_id).ref_max_score == 100.0
    assert data.metadata.extra["reference_scores_from"] == "command line"


@pytest.mark.parametrize("file_name, dataset_id, low, high", [
    ("pen-human-v1.hdf5", "d4rl-hdf5/pen/human-v1", 96.262799, 3076.8331017826877),
    ("door-cloned-v1.hdf5", "d4rl-hdf5/door/cloned-v1", -56.512833, 2880.5693087298737),
    ("kitchen-mixed-v0.hdf5", "d4rl-hdf5/kitchen/mixed-v0", 0.0, 4.0),
    # Maze2D's references differ per maze and reward kind
    ("maze2d-umaze-v1.hdf5", "d4rl-hdf5/maze2d/umaze-v1", 23.85, 161.86),
    ("maze2d-umaze-dense-v1.hdf5", "d4rl-hdf5/maze2d/umaze-dense-v1", 68.537689, 193.66285642381482),
])
def test_d4rl_reference_scores_beyond_locomotion(tmp_path, file_name, dataset_id, low, high):
    arrays = synthetic_flat([6, 5], ["timeout", "terminal"])
    result = convert("d4rl", write_d4rl_hdf5(tmp_path / file_name, arrays))
    assert result.dataset_id == dataset_id
    metadata = read_metadata(dataset_id)
    assert (metadata.ref_min_score, metadata.ref_max_score) == (low, high)
    # no Gymnasium env has D4RL's layout for these: the note says to pass one
    assert metadata.eval_env_spec is None
    assert any("--eval-env" in note for note in result.notes)


def test_unknown_d4rl_task_converts_without_reference_scores(tmp_path):
    arrays = synthetic_flat([6, 5], ["timeout", "terminal"])
    result = convert("d4rl", write_d4rl_hdf5(tmp_path / "maze2d-spiral-v1.hdf5", arrays))
    assert read_metadata(result.dataset_id).ref_min_score is None
    assert any("--ref-min-score" in note for note in result.notes)
