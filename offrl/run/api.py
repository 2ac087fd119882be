"""offrl from Python: train an algorithm by name, then read its scores and use its policies.

    import offrl
    run = offrl.train("td3_bc", "mujoco/hopper/medium-v0", seeds=[0, 1, 2], num_updates=100_000)
    run.scores          # each seed's last evaluation: {seed: normalized score (or return)}
    act = run.policy(0)  # seed 0's policy: env observation -> env action
    run.evaluate(episodes=100)
    offrl.load_run(run.run_dir)  # the same run in a later session

Settings are the command line's options as keyword arguments and are resolved the same way:
the algorithm's defaults, its per-environment and per-dataset YAML, then the arguments, with
the same checks. Errors raise (no one-line message and exit as on the command line).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from offrl.run.directory import read_run
from offrl.run.logging import read_metrics

SCORE = "eval/normalized_score"
RETURN = "eval/return"


@dataclass(frozen=True)
class Run:
    """A training run on disk: what its directory holds, read when asked."""

    run_dir: Path

    @property
    def record(self) -> dict[str, Any]:
        """run.json: the algorithm, the dataset (or env), dimensions and reference scores."""
        return read_run(self.run_dir)

    @property
    def algorithm(self) -> str:
        return self.record["algorithm"]

    @property
    def seeds(self) -> list[int]:
        from offrl.run.config import read_yaml

        return [int(seed) for seed in str(read_yaml(self.run_dir / "config.yaml")["seeds"]).split(",")]

    def metrics(self) -> list[dict[str, Any]]:
        """Every logged row of metrics.jsonl: one per seed and logged step."""
        return read_metrics(self.run_dir)

    @property
    def scores(self) -> dict[int, float]:
        """Each seed's score at its last evaluation: the normalized score where the dataset
        has reference scores, else the mean return. Empty for a run never evaluated (a
        dataset without an env, such as NeoRL-2's)."""
        rows = self.metrics()
        if any(key.startswith("hp/") for row in rows for key in row):
            raise ValueError(f"{self.run_dir} packs several hyperparameter points per seed (a sweep's run): read "
                             "their scores with `offrl report` or from metrics(), whose rows name their hp/ values.")
        last: dict[int, float] = {}
        for row in rows:
            value = row.get(SCORE, row.get(RETURN))
            if value is not None:
                last[int(row["seed"])] = float(value)
        return last

    def policy(self, seed: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
        """The policy of `seed` (default: the run's first) at the latest checkpoint, as a
        plain function of raw env observations, batched or not, to env actions."""
        from offrl.run.train import load_policy

        seeds = self.seeds
        if seed is None:
            seed = seeds[0]
        if seed not in seeds:
            raise ValueError(f"seed {seed}: {self.run_dir} trained seeds {seeds}; pass one of them.")
        return load_policy(self.run_dir, seeds.index(seed))

    def evaluate(self, episodes: int = 100, env: str | None = None) -> dict[str, Any]:
        """Each seed's returns (and normalized scores) over `episodes` episodes of its
        deterministic policy; see offrl.run.train.evaluate_run."""
        from offrl.run.train import evaluate_run

        return evaluate_run(self.run_dir, episodes, env)


def as_option(key: str, value: Any) -> list[str]:
    """One keyword argument as the command line spells it."""
    if key == "seeds" and not isinstance(value, str):
        value = ",".join(str(seed) for seed in ([value] if isinstance(value, int) else value))
    if isinstance(value, (list, tuple)):
        return [f"--{key}", *map(str, value)]
    if isinstance(value, dict):
        value = json.dumps(value)
    return [f"--{key}", str(value)]


def train(algorithm: str, dataset: str | None = None, **settings: Any) -> Run:
    """Train `algorithm` (a name: td3_bc, iql, cql, rebrac, bc, ravl, morec, or sac with
    env=...) on the local dataset `dataset`, with any of its options as keyword arguments
    (seeds as a list), and return the finished run. `resume=RUN_DIR` continues a run."""
    from offrl.run.train import train_by_name

    if dataset is not None:
        settings = {"dataset": dataset, **settings}
    argv = [token for key, value in settings.items() for token in as_option(key, value)]
    result = train_by_name(algorithm, argv, show_summary=False)
    return Run(Path(result.run_dir).resolve())


def load_run(run_dir: str | Path) -> Run:
    """A run trained before, by `offrl.train` or a script."""
    run = Run(Path(run_dir).resolve())
    run.record  # a directory without a run fails here, in one line naming it
    return run
