"""The quick-start run behind `make train`.

Generates the embedded default dataset if it is missing (hopper-medium-replay from the
suite: 100k steps of the shipped SAC checkpoint ladder on Hopper-v5), trains IQL on it for
a few minutes on CPU, evaluates in the real environment, and prints where everything went.
On mixed-quality data offline RL clearly beats the data's own average, which the first run
should show; docs/status.md quotes what it scores.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from offrl.data.generate import ensure_dataset  # noqa: E402
from offrl.run.algorithms import algorithm_module  # noqa: E402
from offrl.run.logging import read_metrics  # noqa: E402
from offrl.run.train import main  # noqa: E402

DEFAULT_DATASET = "hopper-medium-replay"
ALGORITHM = "iql"
DEFAULT_ARGS = ["--num_updates", "40000", "--log_every", "1000", "--eval_every", "5000",
                "--checkpoint_every", "10000"]


def plot_learning_curve(run_dir: Path, data_score: float) -> Path:
    rows = [row for row in read_metrics(run_dir) if "eval/normalized_score" in row]
    figure, axis = plt.subplots(figsize=(6, 4))
    for seed in sorted({row["seed"] for row in rows}):
        points = [(row["step"], row["eval/normalized_score"]) for row in rows if row["seed"] == seed]
        axis.plot(*zip(*points), marker="o", label=f"seed {seed}")
    axis.axhline(data_score, color="gray", linestyle="--", label="dataset average")
    axis.set_xlabel("updates")
    axis.set_ylabel("normalized score")
    axis.legend()
    path = run_dir / "learning_curve.png"
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


def run(argv: list[str]) -> None:
    dataset_id = ensure_dataset(DEFAULT_DATASET)
    module = algorithm_module(ALGORITHM)
    result = main(module.make, module.Config, ALGORITHM, ["--dataset", dataset_id] + DEFAULT_ARGS + argv)
    data_score = float(result.dataset.summary()["normalized_return_mean"])
    policy_score = result.final_eval["eval/normalized_score"]
    plot = plot_learning_curve(result.run_dir, data_score)
    wandb_dirs = sorted((result.run_dir / "wandb").glob("offline-run-*"))
    print("\n== Summary ==")
    print(f"{ALGORITHM} on {dataset_id}: normalized score {np.mean(policy_score):.1f} "
          f"(dataset average {data_score:.1f}; 0 = random policy, 100 = the SAC expert)")
    run_dir = os.path.relpath(result.run_dir)
    print(f"run directory:  {run_dir}")
    print(f"checkpoint:     {run_dir}/checkpoints/")
    print(f"metrics:        {run_dir}/metrics.jsonl")
    print(f"learning curve: {os.path.relpath(plot)}")
    if wandb_dirs:
        print(f"wandb (offline): {os.path.relpath(wandb_dirs[0].parent)}; upload with "
              f"`wandb sync {os.path.relpath(wandb_dirs[0].parent)}/offline-run-*`")


if __name__ == "__main__":
    run(sys.argv[1:])
