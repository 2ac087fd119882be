"""Check: do a trained IQL critic's advantages of the data's actions track their real value?

    python experiments/iql_advantage_check.py RUN_DIR

For every transition of the run's dataset (preprocessed as the run saw it): the advantage
A = min_i Q_i'(s, a) - V(s) of the latest checkpoint's first seed, the discounted Monte-Carlo
return G of the logged episode, and whether the episode ends in a fall within 20 steps.
Prints how Q and V compare with G, how much of the data sits at the advantage-weight clip,
how A correlates with the reward and with the realized G - V, and what the 10% of actions
with the highest advantage (the ones AWR weights most) have in common, and V - G, mean A and
reward grouped by the steps left before the episode's fall. Used in
experiments/results/iql_walker2d_medium.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np
import yaml

from offrl.data import load_dataset
from offrl.learner import seed_slice
from offrl.nets import CriticEnsemble, ValueNet
from offrl.rl import monte_carlo_returns
from offrl.train import restore_run

FALL_HORIZON = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    _, states, preprocessing = restore_run(args.run_dir)
    state = seed_slice(states, 0)
    saved = yaml.safe_load((args.run_dir / "config.yaml").read_text())
    dataset = load_dataset(json.loads((args.run_dir / "run.json").read_text())["dataset"])
    data = preprocessing.apply(dataset)
    critic, value = CriticEnsemble(2, tuple(saved["hidden_dims"])), ValueNet(tuple(saved["hidden_dims"]))
    q_of = jax.jit(lambda params, obs, act: critic.apply(params, obs, act).min(0))
    v_of = jax.jit(lambda params, obs: value.apply(params, obs))
    size, chunk = len(data["rewards"]), 100_000
    q = np.concatenate([np.asarray(q_of(state.critic_target, data["observations"][i:i + chunk], data["actions"][i:i + chunk]))
                        for i in range(0, size, chunk)])
    v = np.concatenate([np.asarray(v_of(state.value.params, data["observations"][i:i + chunk]))
                        for i in range(0, size, chunk)])
    advantage = q - v
    returns = monte_carlo_returns(data["rewards"], dataset.episode_starts, saved["gamma"])
    starts = dataset.episode_starts
    ends = np.r_[starts[1:], size]
    steps_left = np.concatenate([np.arange(end - start, 0, -1) for start, end in zip(starts, ends)])
    falls = np.repeat(data["terminals"][ends - 1] > 0, ends - starts)  # the row's episode ends in a fall
    falls_soon = (steps_left <= FALL_HORIZON) & falls
    corr = lambda x, y: np.corrcoef(x, y)[0, 1]  # noqa: E731
    beta, clip = saved["beta"], saved["max_weight"]
    top = advantage > np.quantile(advantage, 0.9)
    print(f"Q - G: mean {np.mean(q - returns):.1f}, std {np.std(q - returns):.1f}; V - G: mean {np.mean(v - returns):.1f}")
    print(f"A: mean {advantage.mean():.2f}, std {advantage.std():.2f}; at the weight clip (beta {beta:g}): "
          f"{np.mean(advantage > np.log(clip) / beta):.3f} of the data")
    print(f"corr(A, r) {corr(advantage, data['rewards']):.3f}; corr(A, G - V) {corr(advantage, returns - v):.3f}")
    print(f"top 10% by A: reward {data['rewards'][top].mean():.2f} (all: {data['rewards'].mean():.2f}); fall within "
          f"{FALL_HORIZON} steps {falls_soon[top].mean():.3f} (all: {falls_soon.mean():.3f}); "
          f"G - V {np.mean((returns - v)[top]):.1f} (all: {np.mean(returns - v):.1f})")
    print("Before a fall: does V see it coming, and which actions get the advantage?")
    print("steps left | transitions | V - G | A | reward")
    groups = {f"{low}-{high}": falls & (steps_left >= low) & (steps_left <= high)
              for low, high in [(1, 1), (2, 5), (6, 10), (11, 20), (21, 50), (51, 100)]}
    groups[">100 or no fall"] = ~falls | (steps_left > 100)
    for name, rows in groups.items():
        print(f"{name} | {rows.sum():,} | {np.mean((v - returns)[rows]):.1f} | {advantage[rows].mean():.2f} | "
              f"{data['rewards'][rows].mean():.2f}")


if __name__ == "__main__":
    main()
