"""Offline policy evaluation against the truth: FQE and model-based estimates of many policies
of different quality on a dataset with an env, against their returns measured in the env.

    python experiments/ope_validation.py --dataset offrl/hopper/medium-replay-v0 \
        --algos bc,td3_bc,iql --seeds 0,1 --num_updates 30000 --checkpoints 3 --out ope_hopper_mr

Policies: each algorithm trains one run of all seeds, checkpointed `--checkpoints` times
(every seed of every checkpoint is a policy). Truth: each policy's mean return and normalized
score over `--episodes` episodes in the dataset's env. Estimates from the dataset's held-out
split where one is local (neorl2/dmsd/val-v0 for neorl2/dmsd/train-v0; the suite has none),
else from the dataset itself: FQE, and with `--model-epochs N` the model-based estimate
(undiscounted, over the env's episode length, in an ensemble trained for at most N epochs).
Metrics after Fu et al. 2021 ("Benchmarks for Deep Off-Policy Evaluation"): the Spearman
rank correlation of estimates and true scores, regret@1 (the true score of the best policy
minus that of the policy the estimates rank first) and the mean absolute error of the
normalized estimate, in normalized points. A rerun reuses finished runs and measured
policies (experiments/results/<out>.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from offrl.core.fqe import FQEConfig
from offrl.data import read_metadata
from offrl.model_based.ope import ModelOPEConfig, model_estimates
from offrl.run import checkpoint
from offrl.run.ope import fqe_estimates, held_out_id
from offrl.run.train import evaluate_run, finished_run

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "experiments" / "results"


def trained_run(algo: str, args: argparse.Namespace) -> Path:
    """The algorithm's run of all seeds with its checkpoints, trained or resumed as needed."""
    every = args.num_updates // args.checkpoints
    argv = ["--dataset", args.dataset, "--seeds", args.seeds, "--num_updates", str(args.num_updates),
            "--log_every", str(min(1000, every)), "--eval_every", str(args.num_updates),
            "--checkpoint_every", str(every), "--keep_checkpoints", "0", "--wandb", "disabled"]
    return finished_run(algo, REPO_ROOT / "runs" / "ope_validation" / args.dataset / algo, args.num_updates,
                        args.seeds, argv)


def measure(run_dir: Path, path: Path, args: argparse.Namespace) -> list[dict]:
    """Truth and FQE estimate of every seed's policy at one checkpoint."""
    truth = evaluate_run(run_dir, args.episodes, checkpoint_path=path)
    began = time.perf_counter()
    estimate = fqe_estimates(run_dir, config=FQEConfig(num_updates=args.fqe_updates), checkpoint_path=path,
                             log=None)
    seconds = time.perf_counter() - began
    step = int(path.stem.split("_")[1])
    return [{"algorithm": run_dir.name, "seed": seed, "step": step,
             "true_return": float(truth["eval/return"][index]),
             "true_score": float(truth["eval/normalized_score"][index]),
             "fqe_value": float(estimate["ope/fqe_value"][index]),
             "fqe_return": float(estimate["ope/fqe_return"][index]),
             "fqe_score": float(estimate["ope/fqe_normalized_score"][index]), "fqe_seconds": seconds}
            for index, seed in enumerate(truth["seeds"])]


def measure_model(run_dir: Path, path: Path, args: argparse.Namespace) -> dict[int, tuple[float, float, float]]:
    """Per seed: the model-based normalized estimate (undiscounted, over the env's episode
    length, as the true score is), its uncertainty and the seconds taken."""
    began = time.perf_counter()
    horizon = read_metadata(args.dataset).eval_env_spec.max_episode_steps
    config = ModelOPEConfig(gamma=1.0, horizon=horizon, dynamics_max_epochs=args.model_epochs)
    estimate = model_estimates(run_dir, config=config, checkpoint_path=path)
    seconds = time.perf_counter() - began
    return {seed: (float(estimate["ope/model_normalized_score"][index]),
                   float(estimate["ope/model_uncertainty"][index]), seconds)
            for index, seed in enumerate(estimate["seeds"])}


def metrics(policies: list[dict], key: str) -> dict[str, float]:
    policies = [policy for policy in policies if key in policy]
    true = np.array([policy["true_score"] for policy in policies])
    estimated = np.array([policy[key] for policy in policies])
    return {"policies": len(policies), "spearman": float(spearmanr(estimated, true).statistic),
            "regret_at_1": float(true.max() - true[np.argmax(estimated)]),
            "mean_absolute_error": float(np.mean(np.abs(estimated - true))),
            "true_score_range": [float(true.min()), float(true.max())]}


def estimated_on(dataset_id: str) -> str:
    held_out = held_out_id(dataset_id)
    return f"the held-out split {held_out}" if held_out else "the training data itself"


def write_table(done: dict, path: Path, command: str) -> None:
    """The validation as markdown: the metrics per estimator, then every policy."""
    model = any("model_score" in policy for policy in done["policies"])
    lines = [f"# Offline policy evaluation against true returns: {done['settings']['dataset']}", "",
             f"Made by `{command}`. Estimates from {estimated_on(done['settings']['dataset'])}; truth: the mean "
             "normalized score over "
             f"{done['settings']['episodes']} episodes in the env. Spearman: rank correlation of estimates and true "
             "scores; regret@1: the true score of the best policy minus that of the policy ranked first; MAE: mean "
             "absolute error of the normalized estimate, in normalized points." + (
                 f" Model-based: an ensemble trained for at most {done['settings']['model_epochs']} epochs, each "
                 "policy rolled out undiscounted over the env's episode length; ± is the spread of its elites' "
                 "estimates (standard deviation), in normalized points." if model else ""), "",
             "| estimator | policies | Spearman | regret@1 | MAE | true scores |", "|---|---|---|---|---|---|"]
    for name in ("fqe", "model") if model else ("fqe",):
        m = done[name]
        low, high = m["true_score_range"]
        lines.append(f"| {name} | {m['policies']} | {m['spearman']:.2f} | {m['regret_at_1']:.1f} | "
                     f"{m['mean_absolute_error']:.1f} | {low:.1f} to {high:.1f} |")
    metadata = read_metadata(done["settings"]["dataset"])
    points_per_return = 100.0 / (metadata.ref_max_score - metadata.ref_min_score)  # the spread is kept as a return
    lines += ["", "| algorithm | step | seed | true score | FQE estimate |" + (" model estimate ± elites' std |" if model
                                                                              else ""),
              "|---|---|---|---|---|" + ("---|" if model else "")]
    for policy in sorted(done["policies"], key=lambda p: (p["algorithm"], p["step"], p["seed"])):
        row = (f"| {policy['algorithm']} | {policy['step']:,} | {policy['seed']} | {policy['true_score']:.1f} | "
               f"{policy['fqe_score']:.1f} |")
        if model:
            row += (f" {policy['model_score']:.1f} ± {policy['model_uncertainty'] * points_per_return:.1f} |"
                    if "model_score" in policy
                    else " – |")
        lines.append(row)
    path.write_text("\n".join(lines) + "\n")


def main_experiment() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="offrl/hopper/medium-replay-v0")
    parser.add_argument("--algos", default="bc,td3_bc,iql")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--num_updates", type=int, default=30_000)
    parser.add_argument("--checkpoints", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--fqe-updates", type=int, default=50_000)
    parser.add_argument("--model-epochs", type=int, default=0, help="model-based OPE too, its ensemble trained "
                                                                      "for at most this many epochs (0: none)")
    parser.add_argument("--out", default="ope_validation")
    args = parser.parse_args()
    out = RESULTS / f"{args.out}.json"
    done = json.loads(out.read_text()) if out.is_file() else {"policies": []}
    measured = {(policy["algorithm"], policy["step"]) for policy in done["policies"]}
    for algo in args.algos.split(","):
        run_dir = trained_run(algo, args)
        for path in sorted((run_dir / checkpoint.CHECKPOINT_DIR).glob("step_*.msgpack")):
            step = int(path.stem.split("_")[1])
            if (algo, step) not in measured:
                done["policies"] += measure(run_dir, path, args)
            these = [policy for policy in done["policies"] if (policy["algorithm"], policy["step"]) == (algo, step)]
            if args.model_epochs and any("model_score" not in policy for policy in these):
                by_seed = measure_model(run_dir, path, args)
                for policy in these:
                    policy["model_score"], policy["model_uncertainty"], policy["model_seconds"] = by_seed[policy["seed"]]
            done["settings"] = vars(args)
            done["fqe"] = metrics(done["policies"], "fqe_score")
            if args.model_epochs:
                done["model"] = metrics(done["policies"], "model_score")
            out.write_text(json.dumps(done, indent=1))
            print(f"{algo} {path.name}: {len(done['policies'])} policies; FQE {done['fqe']}; model "
                  f"{done.get('model')}", flush=True)
    write_table(done, out.with_suffix(".md"), "python experiments/ope_validation.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main_experiment()
