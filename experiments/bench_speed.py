"""Benchmark: learner updates/s on a Hopper-shaped dataset, against the matmul roofline.

    python experiments/bench_speed.py [--algos bc,td3_bc,iql,sac,rebrac,cql] [--seeds 1,3,8]
        [--rounds 3] [--chunk-scale K] [--out speed]

For each algorithm at its default hyperparameters: jit compile time, updates/s for 1, 3
and 8 seeds in one vmapped program, and FLOP per update from XLA's cost analysis. Each
round times every algorithm once, each in a fresh process, and rounds interleave the
algorithms (medians reported), as the peers' figures in REFERENCE.md were taken. The
roofline is the rate of a jitted chain of batch x 256 x 256 matmuls, measured in every
process; an algorithm's ceiling is roofline / FLOP per update. One update is one critic step
plus the actor step on its schedule (CORL's unit). Writes experiments/results/<out>.json
and <out>.md (`--out speed_gpu` on a GPU, with `--chunk-scale 10` so a timed call lasts long
enough; the peers' figures in REFERENCE.md are CPU figures and are shown on CPU only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from offrl.core.learner import init_states, make_train_steps, sample_uniform
from offrl.run.algorithms import algorithm_module

RESULTS = Path(__file__).resolve().parent / "results"
OBS_DIM, ACT_DIM, SIZE = 11, 3, 1_000_000
# Updates per compiled call, sized so one call takes seconds, not minutes, at 8 seeds.
CHUNKS = {"bc": 2000, "td3_bc": 1000, "iql": 1000, "sac": 1000, "rebrac": 100, "cql": 50}
# The fastest of CORL (PyTorch), JAX-CORL, unifloral and CORL JAX, updates/s measured on this kind of machine
# (2 CPU cores) on the same Hopper-shaped data: unifloral for TD3+BC, IQL and ReBRAC, CORL for CQL.
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


def time_algorithm(name: str, seed_counts: list[int], chunk: int) -> dict:
    """One round for one algorithm, in a process of its own: compile time, FLOP per update,
    the matmul roofline, and per seed count the updates/s of one timed call after a warm-up call."""
    module = algorithm_module(name)
    config = module.Config()
    algorithm = module.make(config, OBS_DIM, ACT_DIM)
    data = hopper_shaped_data(SIZE)
    row = {"algorithm": name, "batch_size": config.batch_size, "chunk": chunk,
           "hidden_dims": list(config.hidden_dims) if getattr(config, "hidden_dims", None) else None}
    for seeds in seed_counts:
        states, rngs = init_states(algorithm, list(range(seeds)))
        train_steps = make_train_steps(algorithm.update, sample_uniform(config.batch_size), chunk)
        began = time.perf_counter()
        compiled = train_steps.lower(states, rngs, data, 0).compile()
        if seeds == seed_counts[0]:
            row["compile_s"] = round(time.perf_counter() - began, 1)
            row["gflop_per_update"] = round(flop_per_update(algorithm, states, data, config.batch_size) / 1e9, 3)
        states, rngs, _, _ = jax.block_until_ready(compiled(states, rngs, data, 0))  # warm up
        began = time.perf_counter()
        jax.block_until_ready(compiled(states, rngs, data, chunk))
        row[f"updates_per_s_{seeds}_seeds"] = chunk / (time.perf_counter() - began)
    row["roofline_gflop_s"] = matmul_roofline(1024 if config.batch_size >= 1024 else 256)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", default=",".join(CHUNKS))
    parser.add_argument("--seeds", default="1,3,8")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--chunk-scale", type=int, default=1, help="multiplies the updates per timed call")
    parser.add_argument("--out", default="speed", help="results file name, without extension")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)  # one algorithm's round
    args = parser.parse_args()
    seed_counts = [int(s) for s in args.seeds.split(",")]
    if args.worker:
        print(json.dumps(time_algorithm(args.worker, seed_counts, CHUNKS[args.worker] * args.chunk_scale)))
        return
    on_cpu = jax.devices()[0].platform == "cpu"
    # Each algorithm is timed in a fresh process, as a training run would be (timed among the
    # other algorithms' programs in one process, IQL made 80% of its ceiling; alone in a fresh
    # process, 87%), and the rounds interleave the algorithms: the machine's rate drifts by
    # 10-20% within minutes, so every row sees the same conditions.
    rounds: dict[str, list[dict]] = {}
    for round_index in range(args.rounds):
        for name in args.algos.split(","):
            worker = subprocess.run([sys.executable, __file__, "--worker", name, "--seeds", args.seeds,
                                     "--chunk-scale", str(args.chunk_scale)], check=True, capture_output=True, text=True)
            timing = json.loads(worker.stdout.strip().splitlines()[-1])
            rounds.setdefault(name, []).append(timing)
            print(f"round {round_index + 1}: {name} " + ", ".join(
                f"{seeds} seeds {timing[f'updates_per_s_{seeds}_seeds']:.1f}" for seeds in seed_counts) + " updates/s",
                flush=True)
            # written after every timing, so a bench cut short (a lent machine's time limit) leaves what it timed
            write_results(rounds, seed_counts, args, on_cpu, final=round_index + 1 == args.rounds
                          and name == args.algos.split(",")[-1])


def machine_description() -> str:
    """CPU model and vector extension beside the core count: the rate of these runs changes
    from one machine of this kind to the next, so tables name the one they were taken on."""
    cpu = platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        fields = {}
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        flags = fields.get("flags", "").split()
        vectors = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
        cpu = f"{fields.get('model name', cpu)}, {vectors}"
    return f"{cpu}, {os.cpu_count()} cpus"


def write_results(rounds: dict[str, list[dict]], seed_counts: list[int], args, on_cpu: bool, final: bool) -> None:
    rows = []
    for name, timings in rounds.items():
        row = dict(timings[0])
        for key in ["compile_s", "roofline_gflop_s", *(f"updates_per_s_{seeds}_seeds" for seeds in seed_counts)]:
            row[key] = round(float(np.median([timing[key] for timing in timings])), 1)
        row["best_peer_updates_per_s"] = PEERS.get(name) if on_cpu else None
        row["ceiling_updates_per_s"] = round(row["roofline_gflop_s"] / row["gflop_per_update"], 1)
        row["share_of_ceiling"] = round(row["updates_per_s_1_seeds"] / row["ceiling_updates_per_s"], 3)
        rows.append(row)
    # Rows of algorithms not benchmarked in this run are kept from the previous report.
    json_path, md_path = RESULTS / f"{args.out}.json", RESULTS / f"{args.out}.md"
    previous = json.loads(json_path.read_text()) if json_path.is_file() else {}
    kept = [row for row in previous.get("results", []) if row["algorithm"] not in {r["algorithm"] for r in rows}]
    report = {
        "device": str(jax.devices()[0]),
        "machine": machine_description(),
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python experiments/bench_speed.py", *sys.argv[1:]]),
        "jax": jax.__version__,
        "rounds": len(next(iter(rounds.values()))),
        "results": sorted(kept + rows, key=lambda row: list(CHUNKS).index(row["algorithm"])),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    md_path.write_text(markdown(report, seed_counts))
    if final:
        print(md_path.read_text())


def markdown(report: dict, seed_counts: list[int]) -> str:
    extra = [k for k in seed_counts if k != 1]
    columns = ["algorithm", "GFLOP/update", "roofline GFLOP/s", "ceiling", "1 seed", "share of ceiling",
               "best peer", *(f"{k} seeds" for k in extra), "compile (s)"]
    lines = [
        f"# Learner speed ({report['machine']}, {report['device']}, jax {report.get('jax', '0.10.2')}"
        f"{', ' + report['date'] if 'date' in report else ''})",
        "",
        f"Command: `{report['command']}`. Hopper-shaped data (obs 11, action 3, 1M transitions),",
        "default hyperparameters. One update = one critic step plus the actor step on its",
        "schedule. Every round times each algorithm once in a fresh process, with the matmul roofline (a",
        f"jitted chain of batch x 256 x 256 matmuls); figures are medians of {report.get('rounds', 1)} interleaved rounds.",
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
