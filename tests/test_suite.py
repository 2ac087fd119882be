"""The dataset suite: generation plans, generated datasets and the shipped behavior policies."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

from offrl.core.nets import TanhGaussianActor
from offrl.data import DatasetError, generate, load_dataset, suite
from offrl.run.algorithms import algorithm_module
from offrl.run.config import parse_config
from offrl.run.train import train
from offrl.tools.cli import main as cli_main

TINY_POLICIES = {"ladder-01": 2000, "ladder-02": 4000, "medium": 6000, "expert": 10000}


@pytest.fixture
def tiny_policies(tmp_path) -> Path:
    """A manifest of small random-weight Hopper actors (the returns are made up)."""
    policy_dir = tmp_path / "policies"
    (policy_dir / "hopper").mkdir(parents=True)
    entries = []
    for index, (name, steps) in enumerate(TINY_POLICIES.items()):
        params = TanhGaussianActor(3, (16,)).init(jax.random.PRNGKey(index), jnp.zeros((1, 11)))
        path = policy_dir / "hopper" / f"{name}.msgpack"
        path.write_bytes(serialization.to_bytes(params))
        entries.append({"name": name, "file": f"hopper/{name}.msgpack", "training_steps": steps,
                        "mean_return": 100.0 * (index + 1)})
    manifest = {"hopper": {"env_id": "Hopper-v5", "hidden_dims": [16], "observation_dim": 11, "action_dim": 3,
                           "warmup_steps": 1000, "random": {"mean_return": 10.0}, "policies": entries}}
    (policy_dir / suite.MANIFEST).write_text(json.dumps(manifest))
    return policy_dir


def test_names_parse_into_env_and_kind():
    assert suite.parse_name("hopper-medium-replay") == ("hopper", "medium-replay")
    assert suite.parse_name("walker2d-medium-expert") == ("walker2d", "medium-expert")
    assert suite.parse_name("offrl/halfcheetah/random-v0") == ("halfcheetah", "random")
    with pytest.raises(DatasetError, match="kinds are"):
        suite.parse_name("hopper-mediocre")


def test_medium_replay_follows_training_progress(tiny_policies):
    env = suite.read_manifest(tiny_policies)["hopper"]
    plan = generate.replay_plan(env, None)
    # warm-up to 1000, then each rung for the steps since the previous rung, up to medium at 6000
    assert [(s.policy.name if s.policy else None, s.steps) for s in plan] == [
        (None, 1000), ("ladder-01", 1000), ("ladder-02", 2000), ("medium", 2000)]
    rescaled = generate.replay_plan(env, 600)
    assert [s.steps for s in rescaled] == [100, 100, 200, 200]
    assert sum(s.steps for s in generate.replay_plan(env, 997)) == 997


@pytest.mark.parametrize("kind,factor", [("random", 1), ("medium", 1), ("expert", 1),
                                         ("medium-replay", 1), ("medium-expert", 2)])
def test_every_kind_generates_an_exact_loadable_dataset(tiny_policies, kind, factor):
    report = generate.generate(f"hopper-{kind}", steps=600, seed=1, policy_dir=tiny_policies, num_envs=4,
                            streams=2, workers=1, show_progress=False)
    dataset = load_dataset(report.dataset_id)
    assert report.dataset_id == f"offrl/hopper/{kind}-v0"
    assert dataset.num_transitions == 600 * factor == report.steps
    assert dataset.metadata.ref_min_score == 10.0 and dataset.metadata.ref_max_score == 400.0
    assert dataset.metadata.eval_env_spec.id == "Hopper-v5"
    extra = dataset.metadata.extra
    assert extra["kind"] == kind and extra["seed"] == 1 and "mujoco" in extra["versions"]
    for name, used in extra["policies"].items():
        assert used["sha256"] == suite.file_sha256(tiny_policies / "hopper" / f"{name}.msgpack")
    assert sum(segment["steps"] for segment in extra["segments"]) == 600 * factor
    assert np.all(np.abs(dataset.actions) <= 1.0)
    # Hopper terminates when it falls: terminations are kept apart from time limits
    assert dataset.terminals.sum() > 0


def test_generation_depends_on_the_seed_not_on_the_worker_processes(tiny_policies):
    def actions(seed, workers):
        report = generate.generate("hopper-medium", steps=300, seed=seed, policy_dir=tiny_policies, num_envs=4,
                                streams=2, workers=workers, overwrite=True, show_progress=False)
        return load_dataset(report.dataset_id).actions

    in_workers, in_process, other = actions(5, workers=2), actions(5, workers=1), actions(6, workers=2)
    np.testing.assert_array_equal(in_workers, in_process)
    assert not np.array_equal(in_workers, other)


def test_the_sampler_is_the_flax_actor_in_float64(tiny_policies):
    policy = suite.read_manifest(tiny_policies)["hopper"].medium
    space = gym.spaces.Box(-2.0, 3.0, (3,), np.float32)  # not [-1, 1]: the rescaling shows
    observations = np.random.default_rng(0).normal(size=(5, 11))
    actions = policy.sampler(space)(observations, np.random.default_rng(7))
    network = TanhGaussianActor(3, (16,))
    params = network.init(jax.random.PRNGKey(0), jnp.zeros((1, 11)))
    mean, log_std = network.apply(serialization.from_bytes(params, policy.path.read_bytes()), observations)
    unit = np.tanh(np.asarray(mean) + np.exp(np.asarray(log_std)) * np.random.default_rng(7).standard_normal((5, 3)))
    assert actions.dtype == np.float64
    np.testing.assert_allclose(actions, -2.0 + (unit + 1.0) * 2.5, rtol=1e-5, atol=1e-5)
    assert (suite.LOG_STD_MIN, suite.LOG_STD_MAX) == (network.log_std_min, network.log_std_max)


def test_weights_that_disagree_with_the_manifest_are_refused(tiny_policies):
    manifest_path = tiny_policies / suite.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["hopper"]["hidden_dims"] = [32]
    manifest_path.write_text(json.dumps(manifest))
    policy = suite.read_manifest(tiny_policies)["hopper"].medium
    with pytest.raises(DatasetError, match="manifest's observation_dim, hidden_dims and action_dim"):
        policy.sampler(gym.spaces.Box(-1.0, 1.0, (3,), np.float32))


def test_a_damaged_manifest_or_policy_file_is_named_with_the_fix(tiny_policies):
    manifest_path = tiny_policies / suite.MANIFEST
    policy = suite.read_manifest(tiny_policies)["hopper"].medium
    policy.path.write_bytes(policy.path.read_bytes()[:30])  # cut short: named, not msgpack's traceback
    with pytest.raises(DatasetError, match=r"the medium policy of the manifest\) cannot be read as actor weights"):
        policy.sampler(gym.spaces.Box(-1.0, 1.0, (3,), np.float32))
    for text in (manifest_path.read_text()[:40], json.dumps({"hopper": {"env_id": "Hopper-v5"}})):
        manifest_path.write_text(text)  # cut short, or lacking fields: named, not a JSONDecodeError or KeyError
        with pytest.raises(DatasetError, match="is not a behavior-policy manifest offrl can read"):
            suite.read_manifest(tiny_policies)


def test_generate_command_and_its_errors(tiny_policies, capsys):
    assert cli_main(["datasets", "generate", "hopper-expert", "--steps", "200",
                     "--policies", str(tiny_policies), "--num-envs", "2", "--streams", "1", "--workers", "1"]) == 0
    assert "offrl/hopper/expert-v0" in capsys.readouterr().out
    assert cli_main(["datasets", "generate", "hopper-expert", "--steps", "200",
                     "--policies", str(tiny_policies)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    # several at once, keeping those already made
    assert cli_main(["datasets", "generate", "hopper-expert", "hopper-random", "--missing", "--steps", "200",
                     "--policies", str(tiny_policies), "--num-envs", "2", "--streams", "1", "--workers", "1"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "offrl/hopper/expert-v0 is in the local store; kept." in out and "Wrote offrl/hopper/random-v0" in out
    assert cli_main(["datasets", "generate", "ant-medium", "--policies", str(tiny_policies)]) == 2
    assert "No behavior policies for 'ant'" in capsys.readouterr().err
    assert cli_main(["datasets", "generate", "hopper-medium", "--policies", str(tiny_policies / "nope")]) == 2
    assert "make_behavior_policies.py" in capsys.readouterr().err


def test_datasets_made_from_other_policies_are_made_again(tiny_policies, capsys):
    """A new expert changes the data and every dataset's reference return: --missing and
    ensure_dataset replace what the old policies made."""
    layout = ["--policies", str(tiny_policies), "--num-envs", "2", "--streams", "1", "--workers", "1"]
    assert cli_main(["datasets", "generate", "hopper-expert", "hopper-random", "--steps", "200", *layout]) == 0
    assert suite.outdated("hopper-expert", tiny_policies) is None
    assert suite.outdated("hopper-random", tiny_policies) is None
    params = TanhGaussianActor(3, (16,)).init(jax.random.PRNGKey(99), jnp.zeros((1, 11)))
    (tiny_policies / "hopper" / "expert.msgpack").write_bytes(serialization.to_bytes(params))
    manifest_path = tiny_policies / suite.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["hopper"]["policies"][-1]["mean_return"] = 900.0
    manifest_path.write_text(json.dumps(manifest))
    assert "have changed (expert)" in suite.outdated("hopper-expert", tiny_policies)
    assert "reference returns (10.0, 400.0) are not the manifest's (10.0, 900.0)" in suite.outdated(
        "hopper-random", tiny_policies)
    capsys.readouterr()
    assert cli_main(["datasets", "generate", "hopper-expert", "hopper-random", "--missing", "--steps", "200",
                     *layout]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.count("in the local store is out of date") == 2 and out.count("Wrote") == 2
    assert load_dataset("offrl/hopper/random-v0").metadata.ref_max_score == 900.0
    assert suite.outdated("hopper-expert", tiny_policies) is None


def test_training_on_a_dataset_of_older_shipped_policies_warns(tiny_policies, monkeypatch, tmp_path):
    monkeypatch.setattr(suite, "SHIPPED_POLICIES", tiny_policies)
    generate.generate("hopper-random", steps=200, num_envs=2, streams=1, workers=1, show_progress=False)
    own = tmp_path / "own"
    shutil.copytree(tiny_policies, own)
    generate.generate("hopper-medium", steps=200, num_envs=2, streams=1, workers=1, show_progress=False, policy_dir=own)
    manifest_path = tiny_policies / suite.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["hopper"]["random"]["mean_return"] = -5.0
    manifest_path.write_text(json.dumps(manifest))
    bc = algorithm_module("bc")
    tiny_run = ["--num_updates", "10", "--log_every", "10", "--eval_every", "10", "--checkpoint_every", "10",
                "--eval_episodes", "1", "--wandb", "disabled"]
    with pytest.warns(UserWarning, match="offrl/hopper/random-v0 in the local store is out of date: its reference"):
        train(bc.make, parse_config(bc.Config, "bc", ["--dataset", "offrl/hopper/random-v0", *tiny_run,
                                                      "--run_dir", str(tmp_path / "stale")]), "bc", show_progress=False)
    # a set made from a user's own policies is not held against the shipped ones
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(bc.make, parse_config(bc.Config, "bc", ["--dataset", "offrl/hopper/medium-v0", *tiny_run,
                                                      "--run_dir", str(tmp_path / "own_run")]), "bc", show_progress=False)


def test_shipped_policies_match_their_manifest():
    manifest = json.loads((suite.SHIPPED_POLICIES / suite.MANIFEST).read_text())
    total_bytes = 0
    for name, entry in manifest.items():
        policies = {policy["name"]: policy for policy in entry["policies"]}
        assert {"expert", "medium"} <= set(policies), name
        assert sum(key.startswith("ladder-") for key in policies) >= 5, name
        for policy in policies.values():
            path = suite.SHIPPED_POLICIES / policy["file"]
            assert suite.file_sha256(path) == policy["sha256"], path
            assert policy["episodes"] == 100
            total_bytes += path.stat().st_size
        expert, medium = policies["expert"]["mean_return"], policies["medium"]["mean_return"]
        assert entry["random"]["mean_return"] < medium < expert
        ladder = [p for key, p in policies.items() if key.startswith("ladder-")]
        assert all(p["training_steps"] < policies["medium"]["training_steps"] for p in ladder)
    assert total_bytes <= 20 * 2**20
