"""Benchmark: learner updates/s on a Hopper-shaped dataset, against the matmul roofline.

    python experiments/bench_speed.py [--algos bc,td3_bc,iql,sac,rebrac,cql] [--seeds 1,3,8]
        [--rounds 5] [--chunk-scale K] [--out speed]

For each algorithm at its default hyperparameters: jit compile time, updates/s for 1, 3
and 8 seeds in one vmapped program, and FLOP per update from XLA's cost analysis. All
programs are compiled first, then timed in interleaved rounds (each program once per round,
medians reported), as the peers' figures in REFERENCE.md were. The roofline is the rate of a
jitted chain of batch x 256 x 256 matmuls, measured in every round; an algorithm's ceiling
is roofline / FLOP per update. One update is one critic step
plus the actor step on its schedule (CORL's unit). Writes experiments/results/<out>.json
and <out>.md (`--out speed_gpu` on a GPU, with `--chunk-scale 10` so a timed call lasts long
enough; the peers' figures in REFERENCE.md are CPU figures and are shown on CPU only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from offrl.learner import init_states, make_train_steps, sample_uniform
from offrl.train import algorithm_module

RESULTS = Path(__file__).resolve().parent / "results"
OBS_DIM, ACT_DIM, SIZE = 11, 3, 1_000_000
# Updates per compiled call, sized so one call takes seconds, not minutes, at 8 seeds.
CHUNKS = {"bc": 2000, "td3_bc": 1000, "iql": 1000, "sac": 1000, "rebrac": 100, "cql": 50}
# Best peer, updates/s on this kind of machine (../shared/REFERENCE.md).
PEERS = {"td3_bc": 296, "iql": 265, "cql": 11, "rebrac": 43}


def hopper_shaped_data(size: int) -> dict[str, jax.Array]:
    rng = np.random.default_rng(0)
    return jax.device_put({
        "observations": rng.normal(size=(size, OBS_DIM)).astype(np.float32),
        "next_observations": rng.normal(size=(size, OBS_DIM)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (size, ACT_DIM)).astype(np.float32),
        "next_actions": rng.uniform(-1, 1, (size, ACT_DIM)).astype(np.float32),
        "rewards": rng.normal(size=size).astype(np.float32),
        "terminals": (rng.random(size) < 0.001).astype(np.float32),
        "timeouts": np.zeros(size, np.float32),
    })


def matmul_roofline(batch: int, width: int = 256, repeats: int = 200) -> float:
    """GFLOP/s of a jitted chain of (batch x width) @ (width x width) matmuls."""
    weights = jax.random.normal(jax.random.PRNGKey(0), (8, width, width)) / np.sqrt(width)

    @jax.jit
    def chain(x):
        def body(x, _):
            for w in weights:
                x = jnp.tanh(x @ w)
            return x, None
        return jax.lax.scan(body, x, length=repeats)[0]

    x = jnp.ones((batch, width))
    chain(x).block_until_ready()
    timings = []
    for _ in range(5):
        began = time.perf_counter()
        chain(x).block_until_ready()
        timings.append(time.perf_counter() - began)
    return 2 * batch * width * width * 8 * repeats / float(np.median(timings)) / 1e9


def flop_per_update(algorithm, states, data, batch_size: int) -> float:
    """XLA's FLOP count of one update, averaged over a two-step schedule period (delayed
    actors update on even steps; a Python step lets XLA drop the untaken branch)."""
    state = jax.tree.map(lambda leaf: leaf[0], states)
    batch = sample_uniform(batch_size)(data, jax.random.PRNGKey(0))
    flops = []
    for step in (0, 1):
        compiled = jax.jit(lambda s, b, r: algorithm.update(s, b, r, step)).lower(
            state, batch, jax.random.PRNGKey(1)).compile()
        cost = compiled.cost_analysis()
        flops.append((cost[0] if isinstance(cost, list) else cost)["flops"])
    return float(np.mean(flops))


def compile_algorithm(name: str, seed_counts: list[int], data, chunk: int) -> tuple[dict, dict[int, Callable]]:
    """An algorithm's row (compile time, FLOP per update) and, per seed count, a warmed-up
    program: a call runs `chunk` more updates and returns the updates/s it took."""
    module = algorithm_module(name)
    config = module.Config()
    algorithm = module.make(config, OBS_DIM, ACT_DIM)
    row = {"algorithm": name, "batch_size": config.batch_size, "chunk": chunk,
           "hidden_dims": list(config.hidden_dims) if getattr(config, "hidden_dims", None) else None}
    timed_calls = {}
    for seeds in seed_counts:
        states, rngs = init_states(algorithm, list(range(seeds)))
        train_steps = make_train_steps(algorithm.update, sample_uniform(config.batch_size), chunk)
        began = time.perf_counter()
        compiled = train_steps.lower(states, rngs, data, 0).compile()
        if seeds == seed_counts[0]:
            row["compile_s"] = round(time.perf_counter() - began, 1)
            row["gflop_per_update"] = round(flop_per_update(algorithm, states, data, config.batch_size) / 1e9, 3)
        carry = {"states": states, "rngs": rngs, "step": 0}

        def timed_call(compiled=compiled, carry=carry) -> float:
            began = time.perf_counter()
            carry["states"], carry["rngs"], _, _ = jax.block_until_ready(
                compiled(carry["states"], carry["rngs"], data, carry["step"]))
            carry["step"] += chunk
            return chunk / (time.perf_counter() - began)

        timed_call()  # warm up
        timed_calls[seeds] = timed_call
    return row, timed_calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", default=",".join(CHUNKS))
    parser.add_argument("--seeds", default="1,3,8")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are reported")
    parser.add_argument("--chunk-scale", type=int, default=1, help="multiplies the updates per timed call")
    parser.add_argument("--out", default="speed", help="results file name, without extension")
    args = parser.parse_args()
    on_cpu = jax.devices()[0].platform == "cpu"
    seed_counts = [int(s) for s in args.seeds.split(",")]

    data = hopper_shaped_data(SIZE)
    rows, timed_calls = [], []
    for name in args.algos.split(","):
        row, calls = compile_algorithm(name, seed_counts, data, CHUNKS[name] * args.chunk_scale)
        rows.append(row)
        timed_calls += [(row, f"updates_per_s_{seeds}_seeds", call) for seeds, call in calls.items()]
    # The machine's rate drifts by 10-20% within minutes: every round times each program once,
    # and the roofline at each batch size, so all rows see the same conditions.
    roofline_batches = sorted({1024 if row["batch_size"] >= 1024 else 256 for row in rows})
    rates, rooflines = {}, {}
    for round_index in range(args.rounds):
        for row, key, call in timed_calls:
            rates.setdefault((row["algorithm"], key), []).append(call())
        for batch in roofline_batches:
            rooflines.setdefault(batch, []).append(matmul_roofline(batch))
        print(f"round {round_index + 1} of {args.rounds} done", flush=True)
    for row in rows:
        for key in (f"updates_per_s_{seeds}_seeds" for seeds in seed_counts):
            row[key] = round(float(np.median(rates[row["algorithm"], key])), 1)
        row["best_peer_updates_per_s"] = PEERS.get(row["algorithm"]) if on_cpu else None
        row["roofline_gflop_s"] = round(float(np.median(rooflines[1024 if row["batch_size"] >= 1024 else 256])), 1)
        row["ceiling_updates_per_s"] = round(row["roofline_gflop_s"] / row["gflop_per_update"], 1)
        row["share_of_ceiling"] = round(row["updates_per_s_1_seeds"] / row["ceiling_updates_per_s"], 3)
        print(json.dumps(row))
    # Rows of algorithms not benchmarked in this run are kept from the previous report.
    json_path, md_path = RESULTS / f"{args.out}.json", RESULTS / f"{args.out}.md"
    previous = json.loads(json_path.read_text()) if json_path.is_file() else {}
    kept = [row for row in previous.get("results", []) if row["algorithm"] not in {r["algorithm"] for r in rows}]
    report = {
        "device": str(jax.devices()[0]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "command": " ".join(["python experiments/bench_speed.py", *sys.argv[1:]]),
        "jax": jax.__version__,
        "rounds": args.rounds,
        "results": sorted(kept + rows, key=lambda row: list(CHUNKS).index(row["algorithm"])),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    md_path.write_text(markdown(report, seed_counts))
    print(md_path.read_text())


def markdown(report: dict, seed_counts: list[int]) -> str:
    extra = [k for k in seed_counts if k != 1]
    columns = ["algorithm", "GFLOP/update", "roofline GFLOP/s", "ceiling", "1 seed", "share of ceiling",
               "best peer", *(f"{k} seeds" for k in extra), "compile (s)"]
    lines = [
        f"# Learner speed ({report['machine']}, {report['device']}, jax {report.get('jax', '0.10.2')})",
        "",
        f"Command: `{report['command']}`. Hopper-shaped data (obs 11, action 3, 1M transitions),",
        "default hyperparameters. One update = one critic step plus the actor step on its",
        "schedule. Every round times each program once, then the matmul roofline (a jitted chain of",
        f"batch x 256 x 256 matmuls); figures are medians of {report.get('rounds', 3)} such interleaved rounds.",
        "Ceiling = roofline / FLOP per update (XLA cost analysis). With k seeds, one update advances",
        "all k seeds; `k seeds` columns give updates/s of the program (multiply by k for",
        "seed-updates/s).",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in report["results"]:
        cells = [row["algorithm"], row["gflop_per_update"], row["roofline_gflop_s"], row["ceiling_updates_per_s"],
                 row["updates_per_s_1_seeds"], f"{row['share_of_ceiling']:.0%}", row["best_peer_updates_per_s"] or "-",
                 *(row.get(f"updates_per_s_{k}_seeds", "-") for k in extra), row["compile_s"]]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
