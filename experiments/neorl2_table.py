"""The NeoRL-2 table: offrl's algorithms on a NeoRL-2 task, scored in offrl's rebuilt
simulator where it has one (DMSD, SafetyHalfCheetah) and else estimated by FQE on the task's
held-out val split, beside the published NeoRL-2 rows.

    offrl datasets convert neorl2 DMSD-train.npz      # the released file: neorl2/dmsd/train-v0
    python experiments/neorl2_table.py --task DMSD --algos bc,td3_bc,iql,rebrac,cql,ravl,morec \\
        --seeds 7,42,210 --episodes 1000 --out neorl2_dmsd

Each algorithm trains one run of all seeds (NeoRL-2's 7, 42, 210) with its per-domain defaults
for `--updates` updates (per algorithm; NeoRL-2's protocol is 1M, which the CPU does not
allow; RAVL's and MOREC's dynamics ensembles train at most `--dynamics-epochs` epochs, where
their default is 1,000), then each seed's final policy plays `--episodes` episodes in the simulator (NeoRL-2
evaluates 1,000). Reported per algorithm: the mean over seeds of the seeds' mean normalized
scores, their standard error over seeds, and the largest standard error of one seed's mean
over its episodes (the evaluation's own noise). On a task without a simulator (Simglucose)
each seed's score is its FQE estimate from neorl2/<task>/val-v0 (`--fqe-updates` critic
updates), labelled as an estimate. A rerun reuses finished runs and measured rows
(experiments/results/<out>.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from offrl.core.fqe import FQEConfig
from offrl.data import read_metadata
from offrl.run.ope import fqe_estimates
from offrl.run.train import evaluate_run, finished_run

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "experiments" / "results"
PUBLISHED = REPO_ROOT / "experiments" / "published_neorl2.yaml"
# CPU-sized budgets (NeoRL-2's protocol: 1M): at most about 20 minutes of 2 cores per algorithm
DEFAULT_UPDATES = {"bc": 50_000, "td3_bc": 50_000, "iql": 50_000, "rebrac": 10_000, "cql": 5_000,
                   "ravl": 5_000, "morec": 5_000}
MODEL_BASED = ("ravl", "morec")
NAMES = {"bc": "BC", "td3_bc": "TD3+BC", "iql": "IQL", "rebrac": "ReBRAC", "cql": "CQL", "ravl": "RAVL",
         "morec": "MOREC", "edac": "EDAC", "mcq": "MCQ", "mopo": "MOPO", "combo": "COMBO", "rambo": "RAMBO",
         "mobile": "MOBILE"}


def measure(algo: str, updates: int, args: argparse.Namespace) -> dict:
    dataset = f"neorl2/{args.task.lower()}/train-v0"
    argv = ["--dataset", dataset, "--seeds", args.seeds, "--num_updates", str(updates),
            "--log_every", str(min(1000, updates)), "--eval_every", str(updates), "--eval_episodes", "10",
            "--checkpoint_every", str(updates), "--wandb", "disabled"]
    if algo in MODEL_BASED:
        argv += ["--dynamics_max_epochs", str(args.dynamics_epochs)]
    began = time.perf_counter()
    run_dir = finished_run(algo, REPO_ROOT / "runs" / "neorl2_table" / dataset / algo, updates, args.seeds, argv)
    trained = time.perf_counter() - began
    if read_metadata(dataset).eval_env_spec is None:
        estimate = fqe_estimates(run_dir, config=FQEConfig(num_updates=args.fqe_updates), log=None)
        seed_means, episode_se, scored_by = np.asarray(estimate["ope/fqe_normalized_score"]), None, estimate["data"]
    else:
        per_episode = np.asarray(evaluate_run(run_dir, args.episodes)["eval/episode_normalized_scores"])
        seed_means, scored_by = per_episode.mean(axis=1), "simulator"  # per_episode: [seeds, episodes]
        episode_se = float((per_episode.std(axis=1, ddof=1) / np.sqrt(per_episode.shape[1])).max())
    return {"algorithm": algo, "updates": updates, "seeds": args.seeds, "episodes": args.episodes,
            "dynamics_max_epochs": args.dynamics_epochs if algo in MODEL_BASED else None,
            "scored_by": scored_by, "seed_scores": seed_means.tolist(), "mean": float(seed_means.mean()),
            "se_over_seeds": float(seed_means.std(ddof=1) / np.sqrt(len(seed_means))),
            "largest_episode_se": episode_se, "train_seconds": trained}


def write_table(done: dict, path: Path, command: str) -> None:
    task, settings = done["settings"]["task"], done["settings"]
    published = yaml.safe_load(PUBLISHED.read_text()).get(task, {})
    simulated = any(row["scored_by"] == "simulator" for row in done["rows"])
    scored = (f"over {settings['episodes']} episodes in offrl's rebuilt simulator, or, where the source says so, its "
              "FQE estimate" if simulated else "its FQE estimate")
    lines = [f"# NeoRL-2 {task}: offrl {'in its rebuilt simulator' if simulated else 'estimated by FQE'}, beside "
             "the published table", "",
             f"Made by `{command}`. offrl rows: the mean over seeds {settings['seeds']} ± its standard error of "
             f"each seed's final policy's normalized score, {scored} on the held-out val split (an estimate, not "
             "a measured score); `episode SE` is the largest standard error of one seed's mean over its episodes. "
             "Published rows: NeoRL-2's table at 1M updates (MOPO 3M, RAMBO 2M), each algorithm's best of a grid "
             "chosen by its score in the simulator, ± as published. offrl's rows use one setting each (per-domain "
             "defaults, not tuned on the simulator) and far fewer updates. Data (the released train file): "
             f"{published.get('data', '–')}.", "",
             "| algorithm | source | updates | score | episode SE |", "|---|---|---|---|---|"]
    for row in done["rows"]:
        estimated = row["scored_by"] != "simulator"
        source = f"offrl, FQE estimate on {row['scored_by']}" if estimated else "offrl"
        episode_se = "–" if estimated else f"{row['largest_episode_se']:.2f}"
        budget = f"{row['updates']:,}" + (f", dynamics ≤ {row['dynamics_max_epochs']} epochs"
                                           if row.get("dynamics_max_epochs") else "")
        lines.append(f"| {NAMES[row['algorithm']]} | {source} | {budget} | {row['mean']:.1f} ± "
                     f"{row['se_over_seeds']:.1f} | {episode_se} |")
    for algo, value in published.items():
        if algo != "data":
            lines.append(f"| {NAMES[algo]} | NeoRL-2 | 1M | {value[0]:.1f} ± {value[1]:.1f} | – |")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="DMSD")
    parser.add_argument("--algos", default=",".join(DEFAULT_UPDATES))
    parser.add_argument("--seeds", default="7,42,210")
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--updates", default="", help="per-algorithm budgets, e.g. cql=10000,ravl=5000 "
                                                      f"(defaults: {DEFAULT_UPDATES})")
    parser.add_argument("--fqe-updates", type=int, default=50_000, help="FQE critic updates where the task has "
                                                                         "no simulator")
    parser.add_argument("--dynamics-epochs", type=int, default=200,
                        help="cap on the dynamics ensemble's epochs for RAVL and MOREC (their default: 1,000)")
    parser.add_argument("--out", default="neorl2_dmsd")
    args = parser.parse_args()
    budgets = DEFAULT_UPDATES | {algo: int(n) for algo, n in (item.split("=") for item in args.updates.split(",") if item)}
    out = RESULTS / f"{args.out}.json"
    done = json.loads(out.read_text()) if out.is_file() else {"rows": []}
    done["settings"] = {key: getattr(args, key) for key in ("task", "seeds", "episodes")}
    for algo in args.algos.split(","):
        wanted = (algo, budgets[algo], args.seeds, args.episodes)
        if not any((row["algorithm"], row["updates"], row["seeds"], row["episodes"]) == wanted for row in done["rows"]):
            done["rows"] = [row for row in done["rows"] if row["algorithm"] != algo] + [measure(algo, budgets[algo], args)]
            out.write_text(json.dumps(done, indent=1))
            print(f"{algo}: {done['rows'][-1]}", flush=True)
    write_table(done, out.with_suffix(".md"), "python experiments/neorl2_table.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
