"""Benchmark: the true simulator that stands in for a model (offrl.model_based.simulator) against
Gymnasium's own step, on dataset states.

    python experiments/bench_simulator.py [--dataset hopper-medium] [--rows 5000] [--rounds 3]

`Simulator.step` on the observations and actions of `--rows` random transitions of a suite
dataset (generated first if it is not in the local store), timed against `env.set_state` +
`env.step` row by row on the same rows; medians of `--rounds` after a first call. Writes
experiments/results/speed_simulator.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from bench_model_based import timed  # experiments/ is on sys.path when run as a script

from offrl.data import load_dataset
from offrl.data.generate import ensure_dataset
from offrl.model_based.simulator import Simulator

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="hopper-medium", help="a suite dataset")
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    dataset = load_dataset(ensure_dataset(args.dataset))
    rows = np.random.default_rng(0).choice(len(dataset.observations), args.rows, replace=False)
    observations, actions = dataset.observations[rows].astype(np.float64), dataset.actions[rows].astype(np.float64)
    simulator = Simulator(dataset.metadata.eval_env_spec.id)
    env = simulator.env
    positions = simulator.nq - 1

    def gym_steps():
        for obs, action in zip(observations, actions):
            env.set_state(np.concatenate([[0.0], obs[:positions]]), obs[positions:])
            env.step(action)

    micro = 1e6 / args.rows
    result = {
        "dataset": args.dataset, "rows": args.rows, "threads": len(simulator.thread_data),
        "cpus": os.cpu_count(),
        "simulator_us_per_row": round(timed(simulator.step, observations, actions, rounds=args.rounds)[1] * micro, 1),
        "physics_us_per_row": round(timed(simulator.physics, observations, actions[:, None], rounds=args.rounds)[1]
                                    * micro, 1),
        "gym_step_us_per_row": round(timed(gym_steps, rounds=args.rounds)[1] * micro, 1),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "speed_simulator.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
