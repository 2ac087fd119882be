"""The JIT core with TD3+BC: hand-checked loss pieces, learning, seeds side by side, one compilation."""

from __future__ import annotations

import os
from importlib import metadata

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import PENDULUM, assert_same_metrics, run_in_fresh_python, td3_bc_config

import offrl
import offrl.run.logging
from offrl.core.rl import td_target
from offrl.data import load_dataset
from offrl.data.preprocess import Preprocessing
from offrl.run.algorithms import algorithm_module
from offrl.run.evaluate import make_policy
from offrl.run.logging import read_metrics
from offrl.run.train import load_policy, train

td3_bc = algorithm_module("td3_bc")


def _xla_flags_after_importing_offrl(xla_flags: str | None) -> str:
    env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    script = "import os, offrl, jax; jax.numpy.ones(2).block_until_ready(); print(os.environ['XLA_FLAGS'])"
    return run_in_fresh_python(script, env)


def test_td3_bc_lambda_and_terminal_masking_by_hand():
    assert float(td3_bc.td3_bc_lambda(jnp.array([1.0, -3.0]), 2.5)) == pytest.approx(2.5 / 2.0)
    target = td_target(jnp.array([1.0, 1.0]), jnp.array([0.0, 1.0]), jnp.array([10.0, 10.0]), 0.9)
    np.testing.assert_allclose(target, [1.0 + 0.9 * 10.0, 1.0])


@pytest.mark.slow
def test_td3_bc_beats_the_random_policy_and_the_data(pendulum, tmp_path):
    config = td3_bc_config(tmp_path, "--num_updates", "4000", "--log_every", "1000",
                     "--eval_every", "4000", "--checkpoint_every", "4000", "--eval_episodes", "10")
    result = train(td3_bc.make, config, "td3_bc", show_progress=False)
    score = float(result.final_eval["eval/normalized_score"][0])
    data_score = load_dataset(PENDULUM).summary()["normalized_return_mean"]
    assert score > 50.0 and score > data_score  # random is 0 by definition
    policy = load_policy(result.run_dir)
    action = policy(np.array([[1.0, 0.0, 0.0]], np.float32))
    assert action.shape == (1, 1) and np.all(np.abs(action) <= 2.0)
    with pytest.raises(ValueError, match="seed_index 1: .* holds 1 policies \\(seeds 0\\); pass an index from 0 to 0"):
        load_policy(result.run_dir, seed_index=1)  # named in one line, not an IndexError


def test_same_seed_same_metrics_and_seeds_run_side_by_side(pendulum, tmp_path):
    first = train(td3_bc.make, td3_bc_config(tmp_path, "--seeds", "3,4", name="a"), "td3_bc", show_progress=False)
    second = train(td3_bc.make, td3_bc_config(tmp_path, "--seeds", "3,4", name="b"), "td3_bc", show_progress=False)
    rows_a = read_metrics(first.run_dir)
    assert_same_metrics(rows_a, read_metrics(second.run_dir))
    by_seed = {row["seed"]: row["critic_loss"] for row in rows_a if row["step"] == 400}
    assert by_seed[3] != by_seed[4]


def test_policies_of_one_algorithm_share_one_compilation():
    traces = []

    def act(state, obs, rng, deterministic):
        traces.append(deterministic)  # runs only when jax traces, i.e. compiles
        return obs * state["scale"]

    for scale in (1.0, 2.0):  # e.g. two seeds, or two evaluations of one run
        actions = make_policy(act, {"scale": jnp.float32(scale)}, Preprocessing())(np.ones((2, 3), np.float32))
    assert traces == [True]
    np.testing.assert_allclose(actions, 2.0)


def test_xla_cpu_flag_is_set_for_the_pinned_jaxlib_and_yields_to_the_user():
    assert metadata.version("jaxlib") == offrl.PINNED_JAXLIB, (
        "the jaxlib pin changed: re-measure CQL and ReBRAC with and without offrl.YNNPACK_OFF "
        "(experiments/bench_speed.py --algos rebrac,cql), then update offrl.PINNED_JAXLIB")
    # XLA aborts on a flag it does not know, so a clean exit shows the flag is accepted.
    assert _xla_flags_after_importing_offrl(None) == offrl.YNNPACK_OFF
    own = "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
    assert _xla_flags_after_importing_offrl(own) == own
