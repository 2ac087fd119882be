"""Offline policy evaluation: FQE against closed-form values and against true returns."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import synthetic_flat, td3_bc_config, write_neorl2_npz

from offrl.core.fqe import FQEConfig, fqe
from offrl.data import convert, local_dataset_ids
from offrl.model_based.ope import ModelOPEConfig, model_estimates
from offrl.run import checkpoint
from offrl.run.algorithms import algorithm_module
from offrl.run.ope import fqe_estimates, held_out_id
from offrl.run.train import evaluate_run, train
from offrl.tools.cli import main as cli_main


def test_fqe_recovers_the_closed_form_values_of_constant_policies():
    # r = a, next states independent of (s, a), half the transitions terminal: a policy that always
    # plays k has Q(s, a) = a + gamma / 2 * V and V = k / (1 - gamma / 2)
    rng = np.random.default_rng(0)
    rows = 5000
    data = {"observations": rng.normal(size=(rows, 2)).astype(np.float32),
            "actions": rng.uniform(-1, 1, (rows, 1)).astype(np.float32),
            "next_observations": rng.normal(size=(rows, 2)).astype(np.float32),
            "terminals": (rng.uniform(size=rows) < 0.5).astype(np.float32)}
    data["rewards"] = data["actions"][:, 0].copy()
    config = FQEConfig(gamma=0.9, hidden_dims=(64, 64), learning_rate=1e-3, tau=0.01, num_updates=4000, chunk=1000)

    def constant(policy, observations, rng, deterministic):
        return jnp.full((observations.shape[0], 1), policy["k"])

    init, train_chunk, values = fqe(constant, config, obs_dim=2, act_dim=1)
    policies = {"k": jnp.array([0.5, -0.5, 0.9])}  # three members in one program
    keys = jax.random.split(jax.random.PRNGKey(0), 6)
    states, rngs = init(keys[:3]), keys[3:]
    for step in range(0, config.num_updates, config.chunk):
        states, rngs, metrics, finite = train_chunk(states, rngs, policies, jax.device_put(data), step)
    assert np.all(finite)
    estimates = np.asarray(values(states, policies, data["observations"][:1000])).mean(axis=1)
    np.testing.assert_allclose(estimates, np.array([0.5, -0.5, 0.9]) / (1 - 0.9 / 2), atol=0.1)


@pytest.fixture
def two_checkpoints(pendulum, tmp_path):
    """One TD3+BC run on the Pendulum data, checkpointed early (update 200) and late (2,000)."""
    td3_bc = algorithm_module("td3_bc")
    config = td3_bc_config(tmp_path, "--num_updates", "2000", "--log_every", "200", "--eval_every", "2000",
                           "--checkpoint_every", "200", "--keep_checkpoints", "0", "--seeds", "0,1", name="run")
    run_dir = train(td3_bc.make, config, "td3_bc", show_progress=False).run_dir
    saved = sorted((run_dir / checkpoint.CHECKPOINT_DIR).glob("step_*.msgpack"))
    return run_dir, saved[0], saved[-1]


def test_a_policy_better_in_truth_gets_higher_estimates_from_fqe_and_from_the_model(two_checkpoints):
    run_dir, early, late = two_checkpoints
    truth = {path: evaluate_run(run_dir, episodes=5, checkpoint_path=path)["eval/return"] for path in (early, late)}
    assert np.all(truth[late] > truth[early] + 200)  # the late policy swings the pendulum up, the early one not
    config = FQEConfig(num_updates=3000, chunk=1000)
    estimates = {path: fqe_estimates(run_dir, config=config, checkpoint_path=path, log=None) for path in (early, late)}
    assert estimates[late]["seeds"] == [0, 1] and estimates[late]["data"] == "offrl/pendulum/test-v0"
    assert np.all(estimates[late]["ope/fqe_value"] > estimates[early]["ope/fqe_value"])
    assert np.all(estimates[late]["ope/fqe_normalized_score"] > estimates[early]["ope/fqe_normalized_score"])
    # rolled out in an ensemble learned from the same data: Pendulum's 200-step episodes, undiscounted
    model_config = ModelOPEConfig(gamma=1.0, horizon=200, dynamics_max_epochs=20)
    model = {path: model_estimates(run_dir, config=model_config, checkpoint_path=path) for path in (early, late)}
    assert np.all(model[late]["ope/model_value"] > model[early]["ope/model_value"])
    assert np.all(model[late]["ope/model_uncertainty"] > 0)  # the elites' spread
    assert model[late]["ope/model_normalized_score"].shape == (2,)  # gamma 1: on the scores' scale


def test_ope_refuses_a_run_without_a_policy_and_data_of_other_shapes(pendulum, tmp_path, capsys):
    td3_bc = algorithm_module("td3_bc")
    config = td3_bc_config(tmp_path, "--num_updates", "200", "--log_every", "100", "--eval_every", "200",
                           "--checkpoint_every", "200", name="run")
    run_dir = train(td3_bc.make, config, "td3_bc", show_progress=False).run_dir
    convert("neorl2", write_neorl2_npz(tmp_path / "DMSD-val.npz", synthetic_flat([50, 50], ["timeout", "timeout"],
                                                                                    obs_dim=6, act_dim=2)))
    assert cli_main(["evaluate", str(run_dir), "--ope", "fqe", "--data", "neorl2/dmsd/val-v0"]) == 2
    assert "has 6-dim observations and 2-dim actions, the run's policies 3 and 1" in capsys.readouterr().err
    for saved in (run_dir / checkpoint.CHECKPOINT_DIR).iterdir():
        saved.unlink()
    assert cli_main(["evaluate", str(run_dir), "--ope", "fqe"]) == 2
    assert "has no checkpoint yet" in capsys.readouterr().err


def test_the_held_out_split_is_found_by_name(minari_store, tmp_path):
    assert held_out_id("neorl2/dmsd/train-v0") is None  # not local
    convert("neorl2", write_neorl2_npz(tmp_path / "DMSD-val.npz", synthetic_flat([50], ["timeout"], obs_dim=6,
                                                                                    act_dim=2)))
    assert "neorl2/dmsd/val-v0" in local_dataset_ids()
    assert held_out_id("neorl2/dmsd/train-v0") == "neorl2/dmsd/val-v0"
    assert held_out_id("offrl/hopper/medium-v0") is None


def test_a_run_on_data_without_an_env_says_so_and_estimates_with_fqe(minari_store, tmp_path, capsys):
    train_file = write_neorl2_npz(tmp_path / "Simglucose-train.npz", synthetic_flat([100] * 6, ["timeout"] * 6, obs_dim=6,
                                                                               act_dim=2))
    convert("neorl2", train_file)
    convert("neorl2", write_neorl2_npz(tmp_path / "Simglucose-val.npz", synthetic_flat([100] * 2, ["timeout"] * 2,
                                                                                  obs_dim=6, act_dim=2, seed=1)))
    bc = algorithm_module("bc")
    common = ["--dataset", "neorl2/simglucose/train-v0", "--num_updates", "200", "--log_every", "100", "--eval_every", "100",
              "--checkpoint_every", "200", "--wandb", "disabled", "--hidden_dims", "16"]
    from offrl.run.config import parse_config
    from offrl.run.logging import read_metrics

    train(bc.make, parse_config(bc.Config, "bc", [*common, "--run_dir", str(tmp_path / "blind")]), "bc",
          show_progress=False)
    assert "names no Gymnasium env, so this run is not evaluated while it trains: pass --ope fqe" in \
        capsys.readouterr().out
    config = parse_config(bc.Config, "bc", [*common, "--run_dir", str(tmp_path / "fqe"), "--ope", "fqe",
                                            "--ope_updates", "1000", "--seeds", "0,1"])
    result = train(bc.make, config, "bc", show_progress=False)
    assert "FQE estimates the policies from neorl2/simglucose/val-v0 every 100 updates" in capsys.readouterr().out
    rows = [row for row in read_metrics(result.run_dir) if "ope/fqe_normalized_score" in row]
    assert [(row["step"], row["seed"]) for row in rows] == [(100, 0), (100, 1), (200, 0), (200, 1)]
    assert result.final_eval["ope/fqe_value"].shape == (2,)
    # the report shows them apart from measured scores, labelled as estimates, with what they rank first
    assert cli_main(["report", str(tmp_path / "fqe"), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Offline estimates (FQE, not measured returns)" in report
    assert f"Ranked first by FQE on neorl2/simglucose/train-v0: bc ({tmp_path / 'fqe'})." in report
    row = next(line for line in report.splitlines() if line.startswith("| neorl2/simglucose/train-v0 | bc |"))
    assert row.endswith("| – | 100 |") or row.endswith("| – | 200 |")  # no measured score; a selected step



def test_with_an_env_fqe_estimates_beside_the_measured_scores(pendulum, tmp_path):
    td3_bc = algorithm_module("td3_bc")
    config = td3_bc_config(tmp_path, "--num_updates", "200", "--log_every", "100", "--eval_every", "200",
                           "--checkpoint_every", "200", "--ope", "fqe", "--ope_updates", "1000")
    final = train(td3_bc.make, config, "td3_bc", show_progress=False).final_eval
    assert final["eval/normalized_score"].shape == final["ope/fqe_normalized_score"].shape == (1,)
