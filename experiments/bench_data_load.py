"""Benchmark: load a 1M-transition, Hopper-shaped Minari dataset into device arrays.

    python experiments/bench_data_load.py [--steps 1000000]

Writes experiments/results/data_load.json and prints a summary. The dataset is synthetic
(obs 11, action 3, 1000-step episodes) and is written to a temporary Minari store.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "data_load.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--episode-length", type=int, default=1000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as store:
        os.environ["MINARI_DATASETS_PATH"] = store
        import jax
        from gymnasium import spaces

        from offrl.data import load_dataset, write_dataset
        from offrl.data.episodes import Episode

        rng = np.random.default_rng(0)
        length, count = args.episode_length, args.steps // args.episode_length
        episodes = (
            Episode(
                observations=rng.normal(size=(length + 1, 11)).astype(np.float32),
                actions=rng.uniform(-1, 1, (length, 3)).astype(np.float32),
                rewards=rng.normal(size=length).astype(np.float32),
                terminations=np.zeros(length, bool),
                truncations=np.eye(1, length, length - 1, dtype=bool)[0],
            )
            for _ in range(count)
        )
        start = time.perf_counter()
        write_dataset("bench/hopper/synthetic-v0", episodes,
                      spaces.Box(-np.inf, np.inf, (11,), np.float32),
                      spaces.Box(-1, 1, (3,), np.float32))
        write_s = time.perf_counter() - start

        start = time.perf_counter()
        dataset = load_dataset("bench/hopper/synthetic-v0")
        read_s = time.perf_counter() - start
        start = time.perf_counter()
        on_device = jax.block_until_ready(jax.device_put(dataset.transitions()))
        put_s = time.perf_counter() - start

    result = {
        "transitions": dataset.num_transitions,
        "episodes": dataset.num_episodes,
        "write_minari_s": round(write_s, 2),
        "load_to_numpy_s": round(read_s, 2),
        "device_put_s": round(put_s, 3),
        "load_total_s": round(read_s + put_s, 2),
        "device": str(jax.devices()[0]),
        "bytes_on_device": int(sum(x.nbytes for x in on_device.values())),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "command": "python experiments/bench_data_load.py",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
