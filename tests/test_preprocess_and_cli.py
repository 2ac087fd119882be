"""Preprocessing statistics and reward transforms; the `offrl datasets` command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_NEORL2, synthetic_flat, write_neorl2_npz

from offrl.data import Preprocessing, convert, fit_preprocessing, load_dataset
from offrl.run.errors import user_errors_as_messages
from offrl.tools.cli import main


@pytest.fixture
def toy(tmp_path):
    arrays = synthetic_flat([4, 6, 5], ["timeout", "terminal", "timeout"], obs_dim=3)
    arrays["rewards"] = np.arange(15, dtype=np.float32)  # returns 6, 39, 60
    convert("neorl2", write_neorl2_npz(tmp_path / "DMSD-train.npz", arrays))
    return load_dataset("neorl2/dmsd/train-v0"), arrays


def test_locomotion_reward_scaling(toy):
    data, arrays = toy
    prep = fit_preprocessing(data, reward_transform="locomotion")
    assert prep.reward_scale == pytest.approx(1000.0 / (60.0 - 6.0))
    np.testing.assert_allclose(prep.apply(data)["rewards"], arrays["rewards"] * 1000.0 / 54.0, rtol=1e-6)


def test_antmaze_and_scale_bias_transforms(toy):
    data, arrays = toy
    np.testing.assert_array_equal(
        fit_preprocessing(data, reward_transform="antmaze").apply(data)["rewards"], arrays["rewards"] - 1)
    prep = fit_preprocessing(data, reward_transform="scale_bias", reward_scale=0.5, reward_bias=2.0)
    np.testing.assert_allclose(prep.apply(data)["rewards"], arrays["rewards"] * 0.5 + 2.0)
    with pytest.raises(ValueError, match="choose one of"):
        fit_preprocessing(data, reward_transform="clip")


def test_state_normalization_is_recorded_and_reapplied(toy, tmp_path):
    data, arrays = toy
    prep = fit_preprocessing(data, normalize_observations=True)
    np.testing.assert_allclose(prep.obs_mean, arrays["observations"].mean(0), rtol=1e-5)
    np.testing.assert_allclose(prep.obs_std, arrays["observations"].std(0) + 1e-3, rtol=1e-5)
    normalized = prep.apply(data)
    np.testing.assert_allclose(normalized["observations"].mean(0), 0.0, atol=1e-5)
    prep.save(tmp_path / "preprocessing.json")
    again = Preprocessing.load(tmp_path / "preprocessing.json")
    np.testing.assert_array_equal(again.normalize_observations(data.observations),
                                  prep.normalize_observations(data.observations))
    assert again.reward_transform == "none"


def test_cli_convert_info_list_remove(tmp_path, capsys):
    path = write_neorl2_npz(tmp_path / "DMSD-val.npz", synthetic_flat([5, 5], ["timeout", "timeout"]))
    assert main(["datasets", "convert", "neorl2", str(path)]) == 0
    assert "neorl2/dmsd/val-v0" in capsys.readouterr().out
    assert main(["datasets", "info", "neorl2/dmsd/val-v0"]) == 0
    info = capsys.readouterr().out
    assert "849.51" in info and "episodes" in info
    assert load_dataset("neorl2/dmsd/val-v0").fingerprint() in info
    assert main(["datasets", "list"]) == 0
    assert "neorl2/dmsd/val-v0" in capsys.readouterr().out
    assert main(["datasets", "convert", "neorl2", str(path)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["datasets", "remove", "neorl2/dmsd/val-v0"]) == 0
    assert main(["datasets", "info", "neorl2/dmsd/val-v0"]) == 2
    assert "not in the local Minari store" in capsys.readouterr().err


def test_an_algorithm_script_reports_a_users_mistake_in_one_line(tmp_path):
    script = Path(__file__).resolve().parents[1] / "algorithms" / "td3_bc.py"
    for arguments, message in [
        (["--dataset", "missing/hopper/medium-v0"], "Dataset 'missing/hopper/medium-v0' is not in the local"),
        (["--resume", str(tmp_path / "nowhere")], "no run there"),
        (["--num_updates", "1500"], "must be a multiple of log_every=1000"),
        (["--dataset", "missing/[bold]x-v0"], "'missing/[bold]x-v0' is not a valid dataset id"),  # printed as given, not as markup
    ]:
        done = subprocess.run([sys.executable, str(script), *arguments], capture_output=True, text=True,
                              env=os.environ, timeout=120)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("error: ") and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr, done.stderr


def test_offrl_commands_name_a_missing_or_malformed_input(tmp_path, capsys):
    (tmp_path / "empty.yaml").write_text("")
    for command, message in [
        (["evaluate", str(tmp_path / "nowhere")], "holds no run (no run.json)"),
        (["sweep", str(tmp_path / "nowhere.yaml")], "no such sweep spec"),
        (["sweep", str(tmp_path / "empty.yaml")], "a sweep spec is a YAML mapping"),
        (["report", str(tmp_path), "--reference", str(tmp_path / "published.yaml")], "--reference"),
    ]:
        assert main(command) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a usage error of argparse's, not the default 1M steps
        main(["datasets", "generate", "hopper-medium", "--steps", "0"])
    assert "--steps: 0: it must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a usage error, not numpy's traceback mid-command
        main(["datasets", "split-labels", "offrl/hopper/medium-v0", "--seed", "-1"])
    assert "--seed: -1: a seed must be in [0, 2^32)" in capsys.readouterr().err


def test_errors_outside_offrls_code_keep_their_traceback():
    with pytest.raises(ValueError, match="reshape"):  # raised by numpy: a bug to debug, not a user's mistake
        with user_errors_as_messages():
            np.zeros(2).reshape(3)
    with pytest.raises(SystemExit):
        with user_errors_as_messages():
            load_dataset("missing/hopper/medium-v0")
    with pytest.raises(FileNotFoundError, match="not in the local Minari store"):
        with user_errors_as_messages(enabled=False):  # called from Python: raised as usual
            load_dataset("missing/hopper/medium-v0")


@pytest.mark.skipif(not (SHARED_NEORL2 / "DMSD-train.npz").exists(),
                    reason="the real NeoRL-2 files live outside the repo, in ../shared/data/neorl2")
def test_cli_on_real_dmsd_shows_the_data_score(capsys):
    assert main(["datasets", "convert", "neorl2", str(SHARED_NEORL2 / "DMSD-train.npz")]) == 0
    assert main(["datasets", "info", "neorl2/dmsd/train-v0"]) == 0
    out = capsys.readouterr().out
    assert "56.64" in out and "1,000" in out and "100,000" in out and "30.60" in out
