"""Bad input gets an error that names the problem and the fix, and leaves nothing behind."""

from __future__ import annotations

import errno
import socket

import h5py
import minari
import numpy as np
import pytest
from conftest import synthetic_flat, write_d4rl_hdf5, write_neorl2_npz

from offrl.data import (
    DatasetError,
    DatasetExistsError,
    DatasetFormatError,
    DatasetNotFoundError,
    convert,
    load_dataset,
    local_dataset_ids,
)


def _nothing_written(store):
    assert local_dataset_ids() == []
    leftovers = [p.name for p in store.glob("**/*") if p.name.startswith(".offrl-staging")]
    assert leftovers == []


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the network must not be touched")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(minari, "download_dataset", refuse)


def test_unknown_id_fails_at_once_without_touching_the_network(no_network):
    with pytest.raises(DatasetNotFoundError, match="offrl datasets convert") as error:
        load_dataset("d4rl-hdf5/hopper/medium-v2")
    assert "\n" not in str(error.value)


def test_missing_suite_dataset_names_the_command_that_generates_it(no_network):
    with pytest.raises(DatasetNotFoundError, match="offrl datasets generate hopper-medium-replay"):
        load_dataset("offrl/hopper/medium-replay-v0")
    with pytest.raises(DatasetNotFoundError) as not_generated:
        load_dataset("offrl/hopper/medium-replay-labelled10-v0")
    assert "generate" not in str(not_generated.value)


def test_download_without_network_says_so(monkeypatch):
    def unreachable(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(minari, "download_dataset", lambda *a, **k: pytest.fail("no download"))
    with pytest.raises(DatasetNotFoundError, match="cannot be reached"):
        load_dataset("d4rl-hdf5/hopper/medium-v2", download=True)


def test_malformed_id_is_explained():
    with pytest.raises(DatasetError, match="with a version at the end") as error:
        load_dataset("hopper/medium")
    assert "Did you mean" not in str(error.value)
    # the experiment scripts' short names get the full ids they stand for
    with pytest.raises(DatasetError, match="Did you mean the suite's 'offrl/hopper/medium-replay-v0' or D4RL's "
                       "'d4rl-hdf5/hopper/medium-replay-v2'"):
        load_dataset("hopper-medium-replay")


def test_truncated_hdf5_is_reported_as_corrupt(tmp_path, minari_store):
    path = write_d4rl_hdf5(tmp_path / "hopper-medium-v2.hdf5", synthetic_flat([50], ["timeout"]))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(DatasetFormatError, match="truncated or corrupt"):
        convert("d4rl", path)
    _nothing_written(minari_store)


def test_truncated_npz_is_reported_as_corrupt(tmp_path, minari_store):
    path = write_neorl2_npz(tmp_path / "DMSD-train.npz", synthetic_flat([50], ["timeout"]))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetFormatError, match="truncated or corrupt"):
        convert("neorl2", path)
    _nothing_written(minari_store)


def test_files_of_the_wrong_container_or_without_rows_are_named_in_one_line(tmp_path, minari_store):
    hdf5 = write_d4rl_hdf5(tmp_path / "hopper-medium-v2.hdf5", synthetic_flat([30], ["timeout"]))
    npz = write_neorl2_npz(tmp_path / "DMSD-train.npz", synthetic_flat([30], ["timeout"]))
    empty = write_d4rl_hdf5(tmp_path / "hopper-empty-v2.hdf5", {key: value[:0] for key, value in
                                                                 synthetic_flat([30], ["timeout"]).items()})
    cases = [("neorl2", hdf5, "is an HDF5 file, not an npz archive: convert it with `offrl datasets convert d4rl"),
             ("d4rl", npz, "is an npz archive, not the HDF5 file D4RL's format is: convert it with `offrl datasets "
                           "convert neorl2"),
             ("d4rl", empty, "holds no transitions \\(actions, next_observations, observations, rewards, terminals, "
                             "timeouts empty\\)")]
    for fmt, path, message in cases:
        with pytest.raises(DatasetFormatError, match=message) as error:
            convert(fmt, path, "test/wrong/file-v0")
        assert "\n" not in str(error.value) and "allow_pickle" not in str(error.value)
    _nothing_written(minari_store)


def test_missing_keys_are_named(tmp_path):
    arrays = synthetic_flat([5], ["timeout"])
    del arrays["timeouts"]
    path = write_d4rl_hdf5(tmp_path / "hopper-medium-v2.hdf5", arrays)
    with pytest.raises(DatasetFormatError, match=r"missing key\(s\) \['timeouts'\]"):
        convert("d4rl", path)


def test_arrays_of_different_lengths_are_named(tmp_path):
    arrays = synthetic_flat([5, 5], ["timeout", "timeout"])
    arrays["actions"] = arrays["actions"][:-1]
    path = write_neorl2_npz(tmp_path / "DMSD-train.npz", arrays)
    with pytest.raises(DatasetFormatError, match="different lengths"):
        convert("neorl2", path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values_are_located(tmp_path, bad, minari_store):
    arrays = synthetic_flat([5, 5], ["timeout", "timeout"])
    arrays["rewards"][7] = bad
    path = write_d4rl_hdf5(tmp_path / "hopper-medium-v2.hdf5", arrays)
    with pytest.raises(DatasetFormatError, match=r"'rewards' has 1 NaN/inf values in 1 rows \(first at row 7\)"):
        convert("d4rl", path)
    _nothing_written(minari_store)


def test_discontinuous_episodes_warn_with_a_count_and_lose_nothing(tmp_path):
    arrays = synthetic_flat([6, 6], ["timeout", "timeout"])
    arrays["next_observations"][[1, 3, 8]] += 1.0
    path = write_neorl2_npz(tmp_path / "DMSD-train.npz", arrays)
    with pytest.warns(UserWarning, match="3 transitions inside episodes"):
        result = convert("neorl2", path)
    data = load_dataset(result.dataset_id)
    np.testing.assert_array_equal(data.next_observations, arrays["next_observations"])
    np.testing.assert_array_equal(data.observations, arrays["observations"])
    assert data.metadata.extra["split_at_discontinuities"] == 3
    assert data.terminals.sum() == 0
    np.testing.assert_array_equal(np.flatnonzero(data.timeouts), [1, 3, 5, 8, 11])


def test_existing_id_is_refused_unless_overwrite(tmp_path):
    first = synthetic_flat([5], ["timeout"])
    path = write_neorl2_npz(tmp_path / "DMSD-train.npz", first)
    convert("neorl2", path)
    with pytest.raises(DatasetExistsError, match="--overwrite"):
        convert("neorl2", path)
    second = synthetic_flat([4, 4], ["timeout", "terminal"], seed=1)
    convert("neorl2", write_neorl2_npz(tmp_path / "DMSD-train.npz", second), overwrite=True)
    data = load_dataset("neorl2/dmsd/train-v0")
    np.testing.assert_array_equal(data.rewards, second["rewards"])


def _fail_with_full_disk(monkeypatch):
    from minari.dataset._storages.hdf5_storage import HDF5Storage

    def disk_full(self, episodes):
        next(iter(episodes))  # start writing, then fail
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(HDF5Storage, "update_episodes", disk_full)


def test_failed_overwrite_keeps_the_old_dataset(tmp_path, monkeypatch):
    path = write_neorl2_npz(tmp_path / "DMSD-train.npz", synthetic_flat([5], ["timeout"]))
    convert("neorl2", path)
    before = load_dataset("neorl2/dmsd/train-v0").rewards
    with monkeypatch.context() as patch:
        _fail_with_full_disk(patch)
        with pytest.raises(DatasetError, match="disk is full"):
            convert("neorl2", path, overwrite=True)
    np.testing.assert_array_equal(load_dataset("neorl2/dmsd/train-v0").rewards, before)


def test_full_disk_leaves_no_partial_dataset(tmp_path, monkeypatch, minari_store):
    _fail_with_full_disk(monkeypatch)
    path = write_neorl2_npz(tmp_path / "DMSD-train.npz", synthetic_flat([5], ["timeout"]))
    with pytest.raises(DatasetError, match="disk is full.*Nothing was written"):
        convert("neorl2", path)
    _nothing_written(minari_store)


def test_write_protected_store_is_explained(tmp_path, monkeypatch, minari_store):
    import tempfile

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    path = write_neorl2_npz(tmp_path / "DMSD-train.npz", synthetic_flat([5], ["timeout"]))
    with pytest.raises(DatasetError, match="write-protected.*MINARI_DATASETS_PATH"):
        convert("neorl2", path)
    _nothing_written(minari_store)


def test_corrupt_stored_dataset_names_the_fix(tmp_path, minari_store):
    path = write_neorl2_npz(tmp_path / "DMSD-train.npz", synthetic_flat([5], ["timeout"]))
    convert("neorl2", path)
    main_file = minari_store / "neorl2/dmsd/train-v0/data/main_data.hdf5"
    main_file.write_bytes(main_file.read_bytes()[:200])
    with pytest.raises(DatasetFormatError, match="offrl datasets remove neorl2/dmsd/train-v0"):
        load_dataset("neorl2/dmsd/train-v0")


def test_unknown_file_name_asks_for_an_id(tmp_path):
    with h5py.File(tmp_path / "mystery.hdf5", "w") as file:
        file.create_dataset("observations", data=np.zeros((2, 2)))
    with pytest.raises(DatasetFormatError, match="Pass --id"):
        convert("d4rl", tmp_path / "mystery.hdf5")
