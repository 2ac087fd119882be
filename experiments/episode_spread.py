"""How noisy a 10-episode evaluation is: per-episode normalized scores of a run's policies.

    python experiments/episode_spread.py RUN_DIR ... [--episodes 100]

Each seed's policy of the run's latest checkpoint plays `--episodes` episodes seeded as
training's evaluations are (`offrl evaluate`), so the first 10 repeat the run's last
10-episode evaluation. Prints the mean, the per-episode std, and the means of consecutive
10-episode blocks.
"""

from __future__ import annotations

import argparse

import numpy as np

from offrl.run.train import evaluate_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--episodes", type=int, default=100, help="a multiple of 10")
    args = parser.parse_args()
    for run_dir in args.runs:
        result = evaluate_run(run_dir, args.episodes)
        for seed, point, scores in zip(result["seeds"], result["points"], result["eval/episode_normalized_scores"]):
            blocks = scores.reshape(-1, 10).mean(axis=1)
            label = "".join(f", {key}={value:g}" for key, value in point.items())
            print(f"{run_dir} seed {seed}{label}: mean {scores.mean():.1f}, per-episode std {scores.std():.1f}, "
                  f"10-episode blocks {np.round(blocks, 1).tolist()} (std {blocks.std():.1f})")


if __name__ == "__main__":
    main()
