"""Benchmark: what model-based training (RAVL, MOREC) costs, piece by piece.

    python experiments/bench_model_based.py [--size 1000000] [--seeds 1,3] [--out speed_model_based]

On a Hopper-shaped dataset (obs 11, action 3, random transitions; speed does not depend on
what the model has learned, except MOREC's rollouts, which step only the rollouts its filter
has not ended: their share of valid steps is reported beside them):
- ensemble training: seconds per epoch over the whole dataset (7 members, 4x200, batch 256),
  the first epoch's compile separated from the second's steady state;
- the dynamics reward (MOREC): seconds for its adversarial training at the defaults;
- rollout steps/s: RAVL's plain ensemble (50,000 starts x 5 steps) and MOREC's filtered
  rollouts (2,000 starts x 100 steps, 10 candidates scored by every kept discriminator);
- agent updates/s of each SAC variant alone (bench_speed's method, with its FLOP count and
  matmul ceiling);
- whole epochs (rollouts, buffer insert, 1000 updates on mixed batches): updates/s as a run
  sees them, for 1 seed and more in one vmapped program.
Writes experiments/results/<out>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from bench_speed import ACT_DIM, OBS_DIM, hopper_shaped_data, time_algorithm

from offrl.core.buffer import ReplayBuffer
from offrl.core.learner import init_states
from offrl.model_based.dynamics import DynamicsConfig, hopper_terminal, train_dynamics
from offrl.model_based.dynamics_reward import DynamicsRewardConfig, learn_dynamics_reward
from offrl.model_based.rollouts import make_epochs, plain_model_step, rollout
from offrl.run.algorithms import algorithm_module

RESULTS = Path(__file__).resolve().parent / "results"


def timed(function, *args, rounds: int = 1) -> tuple[float, float, object]:
    """(seconds of the first call, including compilation; median seconds of the next `rounds`,
    one by default, since an epoch of MOREC's rollouts takes minutes on 2 CPU cores; the
    first call's output)."""
    began = time.perf_counter()
    output = jax.block_until_ready(function(*args))
    first = time.perf_counter() - began
    seconds = []
    for _ in range(rounds):
        began = time.perf_counter()
        jax.block_until_ready(function(*args))
        seconds.append(time.perf_counter() - began)
    return first, float(np.median(seconds)), output


def bench_ensemble(arrays: dict[str, np.ndarray]) -> tuple[object, dict]:
    """Two single-epoch calls of train_dynamics' compiled loop: compile + epoch, then an epoch."""
    stamps = [time.perf_counter()]
    model, report = train_dynamics(arrays, DynamicsConfig(max_epochs=2, epochs_per_call=1, patience=10),
                                   log=lambda _: stamps.append(time.perf_counter()))
    first, second = np.diff(stamps)[:2]
    batches = (len(arrays["observations"]) - DynamicsConfig().max_holdout) // DynamicsConfig().batch_size
    return model, {"transitions": len(arrays["observations"]), "batches_per_epoch": int(batches),
                   "first_epoch_s_with_compile": round(float(first), 1), "epoch_s": round(float(second), 1),
                   "member_batches_per_s": round(batches * DynamicsConfig().num_members / float(second), 1)}


def bench_rollouts(name: str, model_step, model, data) -> dict:
    """Imagined steps/s of one epoch's rollouts at the algorithm's defaults (1 seed)."""
    module = algorithm_module(name)
    config = module.Config()
    algorithm = module.make(config, OBS_DIM, ACT_DIM)
    states, _ = init_states(algorithm, [0])
    state = jax.tree.map(lambda leaf: leaf[0], states)
    starts = data["observations"][: config.rollout_batch]

    @jax.jit
    def one_epoch_of_rollouts(state, rng):
        transitions, valid, _ = rollout(model, model_step(config), hopper_terminal, algorithm.act, state, starts,
                                        rng, config.rollout_length, config.penalty_coef, config.rollout_chunks)
        return transitions["next_observations"].sum(), valid.mean()

    first, seconds, (_, valid_fraction) = timed(one_epoch_of_rollouts, state, jax.random.PRNGKey(0))
    steps = config.rollout_batch * config.rollout_length
    return {"algorithm": name, "rollout_batch": config.rollout_batch, "rollout_length": config.rollout_length,
            "rollout_chunks": config.rollout_chunks, "valid_fraction": round(float(valid_fraction), 3),
            "first_call_s_with_compile": round(first, 1), "seconds": round(seconds, 2),
            "imagined_steps_per_s": round(steps / seconds)}


def bench_epochs(name: str, model_step, model, data, seed_counts: list[int]) -> dict:
    """Updates/s of whole epochs (rollouts + 1000 mixed-batch updates), one epoch per call."""
    module = algorithm_module(name)
    config = module.Config(log_every=1000, updates_per_epoch=1000)
    algorithm = module.make(config, OBS_DIM, ACT_DIM)
    epochs = make_epochs(algorithm, config, model_step(config), hopper_terminal)
    capacity = config.rollout_batch * config.rollout_length * config.retain_epochs
    result = {"algorithm": name}
    for seeds in seed_counts:
        states, rngs = init_states(algorithm, list(range(seeds)))
        buffers = jax.vmap(lambda _: ReplayBuffer.create(capacity, OBS_DIM, ACT_DIM))(jnp.arange(seeds))
        carry = (states, buffers, rngs)
        began = time.perf_counter()
        carry = epochs(*carry, data, model, 0)[:3]
        jax.block_until_ready(carry)
        if seeds == 1:
            result["first_epoch_s_with_compile"] = round(time.perf_counter() - began, 1)
        began = time.perf_counter()  # one timed epoch: MOREC's last minutes on 2 CPU cores
        jax.block_until_ready(epochs(*carry, data, model, 1000)[:3])
        result[f"updates_per_s_{seeds}_seeds"] = round(1000 / (time.perf_counter() - began), 1)
    return result


def plain_step(config):
    return plain_model_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="transitions in the dataset")
    parser.add_argument("--seeds", default="1,3")
    parser.add_argument("--out", default="speed_model_based")
    args = parser.parse_args()
    seed_counts = [int(s) for s in args.seeds.split(",")]
    morec = algorithm_module("morec")
    data = hopper_shaped_data(args.size)

    arrays = {key: np.asarray(data[key]) for key in ("observations", "actions", "next_observations", "rewards")}
    model, ensemble = bench_ensemble(arrays)
    print("ensemble", json.dumps(ensemble), flush=True)
    reward, reward_report = learn_dynamics_reward(model, arrays, DynamicsRewardConfig())
    dynamics_reward = {"iterations": DynamicsRewardConfig().iterations, "kept": reward_report.kept,
                       "seconds_with_compile": round(reward_report.seconds, 1)}
    print("dynamics reward", json.dumps(dynamics_reward), flush=True)
    models = {"ravl": (plain_step, model), "morec": (morec.filtered_step, (model, reward))}

    rollouts, agents, epochs = [], [], []
    for name, (model_step, step_model) in models.items():
        rollouts.append(bench_rollouts(name, model_step, step_model, data))
        print("rollouts", json.dumps(rollouts[-1]), flush=True)
        agent = time_algorithm(name, seed_counts, chunk=100)  # bench_speed's method, roofline measured beside it
        agent["roofline_gflop_s"] = round(agent["roofline_gflop_s"], 1)
        agent.update({key: round(value, 1) for key, value in agent.items() if key.startswith("updates_per_s")})
        agent["ceiling_updates_per_s"] = round(agent["roofline_gflop_s"] / agent["gflop_per_update"], 1)
        agent["share_of_ceiling"] = round(agent["updates_per_s_1_seeds"] / agent["ceiling_updates_per_s"], 3)
        agents.append(agent)
        print("agent", json.dumps(agent), flush=True)
        epochs.append(bench_epochs(name, model_step, step_model, data, seed_counts))
        print("epochs", json.dumps(epochs[-1]), flush=True)

    report = {"device": str(jax.devices()[0]), "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
              "command": " ".join(["python experiments/bench_model_based.py", *sys.argv[1:]]),
              "jax": jax.__version__, "ensemble_training": ensemble, "dynamics_reward": dynamics_reward,
              "rollouts": rollouts, "agent_updates": agents, "epochs": epochs}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(report, indent=1) + "\n")
    (RESULTS / f"{args.out}.md").write_text(markdown(report, seed_counts))
    print((RESULTS / f"{args.out}.md").read_text())


def markdown(report: dict, seed_counts: list[int]) -> str:
    ensemble, reward = report["ensemble_training"], report["dynamics_reward"]
    lines = [
        f"# Model-based speed ({report['machine']}, {report['device']}, jax {report['jax']})", "",
        f"Command: `{report['command']}`. Hopper-shaped random data, {ensemble['transitions']:,} transitions.", "",
        f"- Ensemble training (7 x 4x200, batch 256): {ensemble['epoch_s']} s per epoch "
        f"({ensemble['batches_per_epoch']:,} batches, {ensemble['member_batches_per_s']:,} member-batches/s); "
        f"first epoch with compilation {ensemble['first_epoch_s_with_compile']} s.",
        f"- MOREC's dynamics reward: {reward['iterations']} adversarial iterations, {reward['kept']} "
        f"discriminators kept, {reward['seconds_with_compile']} s with compilation.", "",
        "| rollouts | starts x steps | chunks | valid | s per epoch | imagined steps/s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['algorithm']} | {r['rollout_batch']:,} x {r['rollout_length']} | {r['rollout_chunks']} | "
              f"{r['valid_fraction']:.0%} | {r['seconds']} | {r['imagined_steps_per_s']:,} |" for r in report["rollouts"]]
    more_seeds = seed_counts[1:]
    extra_heads = "".join(f" {k} seeds |" for k in more_seeds)

    def extra_cells(row):
        return "".join(f" {row[f'updates_per_s_{k}_seeds']} |" for k in more_seeds)

    lines += ["", "| agent update alone | GFLOP/update | ceiling | 1 seed | share |" + extra_heads,
              "|---|---|---|---|---|" + "---|" * len(more_seeds)]
    lines += [f"| {a['algorithm']} | {a['gflop_per_update']} | {a['ceiling_updates_per_s']} | "
              f"{a['updates_per_s_1_seeds']} | {a['share_of_ceiling']:.0%} |" + extra_cells(a)
              for a in report["agent_updates"]]
    lines += ["", "| whole epochs (rollouts + 1000 updates) | 1 seed |" + extra_heads,
              "|---|---|" + "---|" * len(more_seeds)]
    lines += [f"| {e['algorithm']} | {e['updates_per_s_1_seeds']} |" + extra_cells(e) for e in report["epochs"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
