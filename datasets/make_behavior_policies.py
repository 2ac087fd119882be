"""Pick the suite's behavior policies out of a SAC run and write them with their manifest.

1. Train SAC, with a snapshot of its states every 2,000 env steps:

       python algorithms/sac.py --env Hopper-v5 --env_steps 1000000 --seeds 0 \\
           --snapshot_every 2000 --eval_every 10000 --run_dir RUN

2. Export:

       python datasets/make_behavior_policies.py --run RUN --name hopper [--out datasets/policies]

Choices (D4RL's protocol, made concrete):
- expert: of the checkpoints evaluated during training, the 3 best by deterministic
  return are rolled out for 100 episodes with sampled actions; the best mean wins.
- medium: the checkpoints around the first one whose training return (the mean of the
  last 10 training episodes) reaches a third of the expert's are rolled out for 100
  episodes; the one closest to a third of the expert's return wins.
- ladder: 10 checkpoints evenly spaced in training steps from the first one after SAC's
  random warm-up up to (not including) the medium one.
- random: uniform random actions, 100 episodes: the ref_min_score of every dataset.

Every return in the manifest is the mean over 100 episodes with actions sampled from the
stochastic policy, the way the datasets are generated.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
import yaml
from flax import serialization

from offrl.core.learner import seed_slice
from offrl.data.suite import MANIFEST, SHIPPED_POLICIES, BehaviorPolicy, file_sha256, uniform_policy
from offrl.run import checkpoint
from offrl.run.evaluate import evaluate_policy
from offrl.run.logging import read_metrics
from offrl.run.train import restore_run

EPISODES = 100



def policy_return(policy: Callable[[np.ndarray, np.random.Generator], np.ndarray], env_id: str,
                  episodes: int = 100, seed: int = 0) -> np.ndarray:
    """Returns of `episodes` full episodes of a (stochastic) batched policy."""
    rng = np.random.default_rng(seed)
    return evaluate_policy(lambda obs: policy(obs, rng), env_id, episodes, seed)

def checkpoint_steps(run_dir: Path) -> dict[int, Path]:
    """Every saved state of the run by step: its snapshots and checkpoints (older runs kept
    all their checkpoints instead of snapshots)."""
    return {int(path.stem.split("_")[1]): path
            for directory in (checkpoint.SNAPSHOT_DIR, checkpoint.CHECKPOINT_DIR)
            for path in (run_dir / directory).glob("step_*.msgpack")}


def first_reaching(rows: list[dict], key: str, target: float) -> int | None:
    """The first logged step whose `key` reaches target."""
    for row in rows:
        if key in row and row[key] >= target:
            return row["step"]
    return None


def nearest(steps: list[int], step: float) -> int:
    return min(steps, key=lambda candidate: abs(candidate - step))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, type=Path, help="SAC run directory with snapshots (or all checkpoints)")
    parser.add_argument("--name", required=True, help="the suite's env name, e.g. hopper")
    parser.add_argument("--out", type=Path, default=SHIPPED_POLICIES)
    parser.add_argument("--ladder", type=int, default=10, help="rungs from random to medium")
    parser.add_argument("--seed", type=int, default=0, help="evaluation seed")
    args = parser.parse_args()

    config = json.loads((args.run / "run.json").read_text())
    env_id = config["env"]
    sac_config = yaml.safe_load((args.run / "config.yaml").read_text())
    hidden_dims = [int(width) for width in sac_config["hidden_dims"]]
    warmup_steps = int(sac_config["start_steps"])
    action_space = gym.make(env_id).action_space
    checkpoints = checkpoint_steps(args.run)
    steps = sorted(step for step in checkpoints if step > warmup_steps)
    rows = [row for row in read_metrics(args.run) if row.get("seed", 0) == 0]
    out_dir = args.out / args.name
    out_dir.mkdir(parents=True, exist_ok=True)

    actors: dict[int, dict] = {}

    def actor_params(step: int):
        if step not in actors:
            _, states, _, _ = restore_run(args.run, checkpoints[step])
            actors[step] = seed_slice(states, 0).actor.params
        return actors[step]

    returns: dict[int, np.ndarray] = {}

    def evaluate(step: int) -> float:
        if step not in returns:
            path = out_dir / f"step_{step}.msgpack.tmp"
            path.write_bytes(serialization.to_bytes(actor_params(step)))
            policy = BehaviorPolicy(env_id, f"step {step}", path, step, 0.0, tuple(hidden_dims),
                                    config["observation_dim"], config["action_dim"])
            returns[step] = policy_return(policy.sampler(action_space), env_id, EPISODES, args.seed)
            path.unlink()
            print(f"  step {step:>9,}: {returns[step].mean():9.1f} ± {returns[step].std():.1f}", flush=True)
        return float(returns[step].mean())

    print(f"{env_id}: {len(steps)} checkpoints after the {warmup_steps}-step warm-up")
    evaluated = sorted((row["eval/return"], row["step"]) for row in rows
                       if "eval/return" in row and row["step"] in checkpoints)
    print("expert candidates:")
    expert = max((step for _, step in evaluated[-3:]), key=evaluate)
    target = evaluate(expert) / 3
    print(f"medium candidates (target {target:.1f}):")
    crossing = first_reaching(rows, "train/episode_return", target) or expert
    index = steps.index(nearest(steps, crossing))
    medium = min(steps[max(0, index - 2): index + 3], key=lambda step: abs(evaluate(step) - target))
    print("ladder:")
    ladder = sorted({nearest(steps, step) for step in np.linspace(steps[0], medium, args.ladder + 1)[:-1]} - {medium})
    for step in ladder:
        evaluate(step)
    random_returns = policy_return(uniform_policy(action_space), env_id, EPISODES, args.seed)
    print(f"random: {random_returns.mean():.1f} ± {random_returns.std():.1f}")

    for old in out_dir.glob("*.msgpack"):
        old.unlink()
    chosen = [(f"ladder-{rank:02d}", step) for rank, step in enumerate(ladder, 1)]
    chosen += [("medium", medium), ("expert", expert)]
    policies = []
    for name, step in chosen:
        path = out_dir / f"{name}.msgpack"
        path.write_bytes(serialization.to_bytes(actor_params(step)))
        policies.append({"name": name, "file": f"{args.name}/{path.name}", "training_steps": step,
                         "mean_return": round(float(returns[step].mean()), 2),
                         "std_return": round(float(returns[step].std()), 2),
                         "episodes": EPISODES, "sha256": file_sha256(path)})
    manifest_path = args.out / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest[args.name] = {
        "env_id": env_id, "algorithm": "sac", "seed": int(str(sac_config["seeds"]).split(",")[0]),
        "hidden_dims": hidden_dims, "observation_dim": config["observation_dim"],
        "action_dim": config["action_dim"], "warmup_steps": warmup_steps,
        "trained_env_steps": max(checkpoints),
        "random": {"mean_return": round(float(random_returns.mean()), 2),
                   "std_return": round(float(random_returns.std()), 2), "episodes": EPISODES},
        "policies": policies,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(policies)} policies to {out_dir} and {manifest_path}")


if __name__ == "__main__":
    main()
