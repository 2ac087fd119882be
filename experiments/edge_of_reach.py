"""Experiment: the edge-of-reach check of Sims et al. (2024) with the true simulator as the model.

    python experiments/edge_of_reach.py --dataset offrl/hopper/medium-v0 [--updates 100000] [--seeds 0,1,2]
        [--agents mopo_style,ravl]

Model-based training where every imagined step is the real MuJoCo step (offrl.model_based.simulator):
model error is zero, so whatever goes wrong is the edge-of-reach problem. Two agents on
the same rollouts (5 steps from dataset states, 5% real data, no reward penalty, since a
perfect model has no uncertainty):
- "MOPO-style": SAC with 2 critics, the recipe that trusts the model;
- RAVL: SAC with 10 critics and EDAC's diversity loss.
The paper's claim: the first one's Q-values blow up and its score collapses, RAVL's do not.
Writes experiments/results/edge_of_reach_<dataset>_<updates>k.{json,md,png}; runs go to
runs/edge_of_reach/<agent>_<dataset>_s<seeds>/, where a finished run of the same budget and
seeds is reused and a killed one resumes from its last checkpoint. The report gathers every
run of each agent at this budget, so seeds can be trained in separate calls (--seeds 1, then
--seeds 2: on 2 CPU cores one seed at a time is as fast as vmapped ones); an unfinished run
is reported up to its last evaluation. Seeds in the earlier results file of this budget
whose runs are gone are kept from that file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from offrl.data import read_metadata  # noqa: E402
from offrl.model_based.rollouts import model_based_program  # noqa: E402
from offrl.model_based.simulator import simulator_step  # noqa: E402
from offrl.run.algorithms import algorithm_module  # noqa: E402
from offrl.run.config import dataset_config_name, parse_config  # noqa: E402
from offrl.run.directory import planned_steps, resume_flag, run_status  # noqa: E402
from offrl.run.errors import user_errors_as_messages  # noqa: E402
from offrl.run.logging import read_metrics, seed_curves  # noqa: E402
from offrl.run.train import train  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]  # runs of experiments go under its runs/

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = REPO_ROOT / "runs" / "edge_of_reach"
AGENTS = {"mopo_style": ["--num_critics", "2", "--eta", "0.0", "--hidden_dims", "256", "256"],
          "ravl": []}


def no_model(config, dataset, data, run_dir):
    return None  # the simulator step needs no learned model


def agent_runs(agent: str, name: str, updates: int) -> list[Path]:
    """The run directories of one agent on one dataset planned for `updates`, one per set of seeds."""
    return [run_dir for run_dir in sorted(RUNS.glob(f"{agent}_{name}_s*"))
            if (run_dir / "config.yaml").is_file() and planned_steps(run_dir) == updates]


def check_seeds_unused(runs: list[Path], run_dir: Path, seeds: str) -> None:
    """Seeds are trained in one run each, so that the report has one curve per seed."""
    for other in runs:
        trained = {int(seed) for seed in str(yaml.safe_load((other / "config.yaml").read_text())["seeds"]).split(",")}
        overlap = trained & {int(seed) for seed in seeds.split(",")}
        if other != run_dir and overlap:
            raise FileExistsError(f"{other} already trains seeds {sorted(overlap)}: choose other --seeds, "
                                  "or remove that run to train them again.")


def merged_seed_curves(runs: list[list[dict]], key: str) -> dict[int, list[tuple[int, float]]]:
    """seed_curves of several runs with disjoint seeds, in one dict."""
    return dict(sorted(item for rows in runs for item in seed_curves(rows, key).items()))


def recorded_curves(report: Path, args) -> dict[str, dict[str, dict[int, list]]]:
    """The curves of an earlier report of this dataset and budget, by agent, key and seed:
    seeds whose run directories are gone (another machine, a cleaned runs/) stay reported."""
    if not report.is_file():
        return {}
    earlier = json.loads(report.read_text())
    if (earlier["dataset"], earlier["updates"], earlier["rollout_batch"]) != (args.dataset, args.updates,
                                                                            args.rollout_batch):
        return {}
    return {agent: {key: {int(seed): points for seed, points in result[key].items()} for key in ("q_mean", "score")}
            for agent, result in earlier["agents"].items()}


def markdown_table(args, results: dict) -> str:
    """Mean Q on training batches and normalized score (mean ± std over seeds) at each evaluation."""
    steps = sorted({step for result in results.values() for points in result["score"].values() for step, _ in points})
    lines = [f"# Edge of reach on {args.dataset}, true dynamics, {args.updates:,} updates",
             "", "| agent | seeds | " + " | ".join(f"{step // 1000}k" for step in steps) + " |",
             "|---|---|" + "---|" * len(steps)]
    for agent, result in results.items():
        for key, label in (("q_mean", "mean Q"), ("score", "score")):
            by_step = {}
            for points in result[key].values():
                for step, value in points:
                    by_step.setdefault(step, []).append(value)
            cells = [f"{np.mean(by_step[step]):.1f} ± {np.std(by_step[step]):.1f}" if step in by_step else "–"
                     for step in steps]
            lines.append(f"| {agent}: {label} | {','.join(map(str, result[key]))} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="offrl/hopper/medium-v0")
    parser.add_argument("--updates", type=int, default=100_000)
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the agents trained now")
    parser.add_argument("--rollout-batch", type=int, default=5000)
    parser.add_argument("--agents", default=",".join(AGENTS),
                        help="agents to train; the others' runs of the same budget are reported, whatever their seeds")
    args = parser.parse_args()
    env_id = read_metadata(args.dataset).eval_env_spec.id
    ravl = algorithm_module("ravl")
    program = model_based_program(simulator_step(env_id), prepare=no_model)
    name = dataset_config_name(args.dataset)
    stem = RESULTS / f"edge_of_reach_{name}_{args.updates // 1000}k"
    recorded = recorded_curves(stem.with_suffix(".json"), args)
    results = {}
    for agent, extra in AGENTS.items():
        if agent in args.agents.split(","):
            run_dir = RUNS / f"{agent}_{name}_s{args.seeds.replace(',', '_')}"
            check_seeds_unused(agent_runs(agent, name, args.updates), run_dir, args.seeds)
            status = run_status(run_dir, args.updates, args.seeds)
            if status != "finished":
                every = str(max(args.updates // 10, 1000))  # checkpoints too: a killed run resumes
                config = parse_config(ravl.Config, "ravl", [
                    "--dataset", args.dataset, "--num_updates", str(args.updates), "--seeds", args.seeds,
                    "--eval_every", every, "--checkpoint_every", every, "--rollout_batch", str(args.rollout_batch),
                    "--wandb", "disabled", "--run_dir", str(run_dir), *extra, *resume_flag(run_dir, status)])
                train(ravl.make, config, agent, make_program=program)
        # every run of this agent and budget, whatever its seeds; an unfinished one (killed,
        # not chosen now) is reported up to its last evaluation
        runs = [read_metrics(run_dir) for run_dir in agent_runs(agent, name, args.updates)]
        earlier = recorded.get(agent, {"q_mean": {}, "score": {}})
        q_mean, scores = (dict(sorted({**earlier[key], **merged_seed_curves(runs, metric)}.items()))
                          for key, metric in (("q_mean", "q_mean"), ("score", "eval/normalized_score")))
        if not scores:  # no run, or killed before its first evaluation
            continue
        results[agent] = {"q_mean": q_mean, "score": scores,
                          "last_step": max(points[-1][0] for points in scores.values()),
                          "final_score": [points[-1][1] for points in scores.values()]}
    RESULTS.mkdir(exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(
        {"dataset": args.dataset, "updates": args.updates,
         "rollout_batch": args.rollout_batch, "agents": results}, indent=1))
    stem.with_suffix(".md").write_text(markdown_table(args, results))
    figure, (q_axis, score_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for agent, result in results.items():
        for seed, points in result["q_mean"].items():
            q_axis.plot(*zip(*points), label=f"{agent} seed {seed}")
        for seed, points in result["score"].items():
            score_axis.plot(*zip(*points), marker="o", label=f"{agent} seed {seed}")
    q_axis.set(xlabel="updates", ylabel="mean Q on training batches", yscale="symlog", title="Q-values")
    score_axis.set(xlabel="updates", ylabel="normalized score", title=f"{name}, true dynamics")
    q_axis.legend(fontsize=7)
    figure.savefig(stem.with_suffix(".png"), dpi=100, bbox_inches="tight")
    for agent, result in results.items():
        final_q = [points[-1][1] for points in result["q_mean"].values()]
        last = result["last_step"]
        unfinished = f" (unfinished: step {last} of {args.updates})" if last < args.updates else ""
        print(f"{agent}: final Q {np.mean(final_q):.1f}, final score {np.mean(result['final_score']):.1f}{unfinished}")


if __name__ == "__main__":
    with user_errors_as_messages():  # one line for a user's mistake; a SIGTERM or Ctrl-C stop exits quietly
        main()
