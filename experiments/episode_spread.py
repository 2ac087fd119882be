"""How noisy a 10-episode evaluation is: per-episode normalized scores of a run's policy.

    python experiments/episode_spread.py RUN_DIR[:SEED_INDEX] ... [--episodes 100]

For each run (and seed index of a packed run, default 0), the policy of its latest
checkpoint plays `--episodes` episodes seeded as training's evaluations are, so the first
10 repeat the run's last 10-episode evaluation. Prints the mean, the per-episode std, and
the means of consecutive 10-episode blocks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from gymnasium.envs.registration import EnvSpec

from offrl.data.reference import normalized_score
from offrl.evaluate import evaluate_policy, make_policy
from offrl.learner import seed_slice
from offrl.train import restore_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="RUN_DIR or RUN_DIR:SEED_INDEX")
    parser.add_argument("--episodes", type=int, default=100, help="a multiple of 10")
    args = parser.parse_args()
    for spec in args.runs:
        run_dir, _, index = spec.partition(":")
        index = int(index or 0)
        algorithm, states, preprocessing, config = restore_run(Path(run_dir))
        run = json.loads((Path(run_dir) / "run.json").read_text())
        env = EnvSpec.from_json(json.dumps(run["eval_env"])) if isinstance(run["eval_env"], dict) else run["eval_env"]
        seed = config.seed_list()[index % len(config.seed_list())]  # a packed run repeats its seeds per point
        policy = make_policy(algorithm.act, seed_slice(states, index), preprocessing)
        returns = evaluate_policy(policy, env, args.episodes, seed=100_000 + seed)  # training's evaluation seeds
        scores = normalized_score(returns, run["ref_min_score"], run["ref_max_score"])
        blocks = scores.reshape(-1, 10).mean(axis=1)
        print(f"{run_dir} seed {seed}: mean {scores.mean():.1f}, per-episode std {scores.std():.1f}, "
              f"10-episode blocks {np.round(blocks, 1).tolist()} (std {blocks.std():.1f})")


if __name__ == "__main__":
    main()
