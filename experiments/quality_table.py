"""Benchmark: normalized scores of the offline algorithms on the offrl dataset suite.

    python experiments/quality_table.py --updates 100000 [--algos bc,td3_bc,iql,cql,rebrac]
        [--datasets hopper-medium,...] [--seeds 0,1,2] [--eval-every 10000]

Every algorithm gets the same update budget, its published hyperparameters (plus the
per-dataset YAML, e.g. ReBRAC's coefficients) and all seeds side by side in one program.
Missing suite datasets are generated first. Each (algorithm, dataset) pair writes
experiments/results/quality/<algo>_<dataset>.json as soon as it finishes, so an
interrupted table resumes where it stopped; pairs already done at the same budget and
seeds are skipped. The table (experiments/results/quality.md) shows the final score
(last evaluation) and the best score (best evaluation), mean ± std over seeds, beside the
dataset's own normalized return and the published D4RL numbers (../shared/REFERENCE.md),
which are a sanity check of ordering and magnitude: the suite uses Gymnasium v5 envs and
its own behavior policies, so they are not the same numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from offrl.data import load_dataset
from offrl.logging import read_metrics
from offrl.suite import ensure_dataset
from offrl.train import REPO_ROOT, algorithm_module, main

RESULTS = Path(__file__).resolve().parent / "results"
PAIRS = RESULTS / "quality"
RUNS = REPO_ROOT / "runs" / "quality"
ALGOS = ("bc", "td3_bc", "iql", "cql", "rebrac")
DATASETS = ("hopper-medium", "hopper-medium-replay", "halfcheetah-medium", "walker2d-medium",
            "walker2d-medium-replay")
# CORL's D4RL -v2 final scores (../shared/REFERENCE.md); the suite is not D4RL, see above.
PUBLISHED = {
    "halfcheetah-medium": {"td3_bc": 48.1, "iql": 48.3, "cql": 47.0, "rebrac": 64.0},
    "halfcheetah-medium-replay": {"td3_bc": 44.8, "iql": 44.5, "cql": 45.0, "rebrac": 51.2},
    "halfcheetah-medium-expert": {"td3_bc": 90.8, "iql": 94.7, "cql": 95.6, "rebrac": 103.8},
    "hopper-medium": {"td3_bc": 60.4, "iql": 67.5, "cql": 59.1, "rebrac": 102.3},
    "hopper-medium-replay": {"td3_bc": 64.4, "iql": 97.4, "cql": 95.1, "rebrac": 95.0},
    "hopper-medium-expert": {"td3_bc": 101.2, "iql": 107.4, "cql": 99.3, "rebrac": 109.5},
    "walker2d-medium": {"td3_bc": 82.7, "iql": 80.9, "cql": 80.8, "rebrac": 85.8},
    "walker2d-medium-replay": {"td3_bc": 85.6, "iql": 82.2, "cql": 73.1, "rebrac": 84.3},
    "walker2d-medium-expert": {"td3_bc": 110.0, "iql": 111.7, "cql": 109.6, "rebrac": 111.9},
}


def run_pair(algo: str, name: str, updates: int, seeds: str, eval_every: int, eval_episodes: int) -> dict:
    dataset_id = ensure_dataset(name)
    module = algorithm_module(algo)
    log_every = min(1000, eval_every)
    run_dir = RUNS / f"{algo}_{name}"
    began = time.perf_counter()
    result = main(module.make, module.Config, algo, [
        "--dataset", dataset_id, "--num_updates", str(updates), "--seeds", seeds,
        "--eval_every", str(eval_every), "--eval_episodes", str(eval_episodes), "--log_every", str(log_every),
        "--checkpoint_every", str(updates), "--wandb", "disabled", "--run_dir", str(run_dir)])
    scores = [row for row in read_metrics(result.run_dir) if "eval/normalized_score" in row]
    curves = {seed: [(row["step"], row["eval/normalized_score"]) for row in scores if row["seed"] == seed]
              for seed in sorted({row["seed"] for row in scores})}
    return {
        "algorithm": algo, "dataset": name, "dataset_id": dataset_id, "updates": updates, "seeds": seeds,
        "eval_episodes": eval_episodes, "seconds": time.perf_counter() - began,
        "final": [curve[-1][1] for curve in curves.values()],
        "best": [max(score for _, score in curve) for curve in curves.values()],
        "curves": {str(seed): curve for seed, curve in curves.items()},
        "dataset_score": float(load_dataset(dataset_id).summary()["normalized_return_mean"]),
        "machine": f"{platform.processor() or platform.machine()}, CPU",
    }


def cell(values: list[float]) -> str:
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}"


def render(results: list[dict]) -> str:
    algos = [algo for algo in ALGOS if any(r["algorithm"] == algo for r in results)]
    datasets = [name for name in PUBLISHED | dict.fromkeys(DATASETS) if any(r["dataset"] == name for r in results)]
    by_pair = {(r["algorithm"], r["dataset"]): r for r in results}
    budgets = sorted({(r["updates"], r["seeds"]) for r in results})
    lines = ["# Quality table: the offline algorithms on the offrl dataset suite", "",
             "Produced by `experiments/quality_table.py`; budgets (updates, seeds): "
             + "; ".join(f"{u:,} updates, seeds {s}" for u, s in budgets) + ".",
             "Normalized scores (0 = uniform random policy, 100 = the suite's SAC expert), mean ± std over "
             "seeds. 'final' is the last evaluation, 'best' the best one. 'published' is CORL's D4RL -v2 "
             "final score, a check of ordering and magnitude only (D4RL used other envs and policies, "
             "and 1M updates).", ""]
    for kind in ("final", "best"):
        lines += [f"## {kind}", "", "| dataset | data | " + " | ".join(algos) + " |",
                  "|---|---|" + "---|" * len(algos)]
        for name in datasets:
            row = [name, f"{next(r for r in results if r['dataset'] == name)['dataset_score']:.1f}"]
            for algo in algos:
                pair = by_pair.get((algo, name))
                published = PUBLISHED.get(name, {}).get(algo)
                text = cell(pair[kind]) if pair else "–"
                row.append(text + (f" ({published})" if published is not None and kind == "final" else ""))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    lines += ["Published numbers in parentheses. Wall-clock per pair: "
              + ", ".join(f"{r['algorithm']}/{r['dataset']} {r['seconds'] / 60:.0f} min" for r in results) + "."]
    return "\n".join(lines) + "\n"


def main_cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", default=",".join(ALGOS))
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--updates", type=int, default=1_000_000)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--eval-every", type=int, default=None, help="default: a tenth of --updates")
    parser.add_argument("--eval-episodes", type=int, default=10)
    args = parser.parse_args()
    PAIRS.mkdir(parents=True, exist_ok=True)
    eval_every = args.eval_every or max(args.updates // 10, 1)
    for name in args.datasets.split(","):
        for algo in args.algos.split(","):
            path = PAIRS / f"{algo}_{name}.json"
            if path.is_file():
                done = json.loads(path.read_text())
                if done["updates"] == args.updates and done["seeds"] == args.seeds:
                    print(f"skip {algo} on {name}: done")
                    continue
            result = run_pair(algo, name, args.updates, args.seeds, eval_every, args.eval_episodes)
            path.write_text(json.dumps(result, indent=1) + "\n")
            print(f"{algo} on {name}: final {cell(result['final'])}, best {cell(result['best'])}")
    results = [json.loads(path.read_text()) for path in sorted(PAIRS.glob("*.json"))]
    (RESULTS / "quality.md").write_text(render(results))
    print(f"wrote {RESULTS / 'quality.md'}")


if __name__ == "__main__":
    main_cli()
