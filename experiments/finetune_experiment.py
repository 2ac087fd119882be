"""Experiment: offline-to-online fine-tuning (issue 7).

    python experiments/finetune_experiment.py [--dataset hopper-medium-replay] [--offline-updates 100000]
        [--online-steps 100000] [--seeds 0,1,2] [--agents iql,rebrac,cql,cql+cal-ql,sac] [--out finetune]

Pre-trains IQL, ReBRAC, CQL and CQL with Cal-QL offline on a suite dataset, then fine-tunes
each online for the same env-step budget (50/50 offline/online batches, UTD 1), and runs
SAC from scratch for that budget. Reports, per algorithm, the normalized score at the end
of the offline phase, at the end of fine-tuning, and the dip: the lowest score over the
first `--dip-window` online env steps, minus the offline score. Results go to
experiments/results/<out>.json and <out>.md (`--out`, default finetune); runs to runs/finetune/<dataset>/<agent>/,
where a finished run is reused on the next call and a killed one resumes (`--runs` moves them).
`--include FILE.json` adds the agents of an earlier results file of the same dataset and budget
to the table and to the plot (<out>.png: mean score over seeds against online env steps, the
seeds' range shaded), so agents trained in separate calls are reported together.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # no pyplot: nothing here needs a display backend

from offrl.data import load_dataset
from offrl.data.generate import ensure_dataset
from offrl.run.errors import user_errors_as_messages
from offrl.run.logging import read_metrics, seed_curves
from offrl.run.train import finished_run

REPO_ROOT = Path(__file__).resolve().parents[1]  # runs of experiments go under its runs/

RESULTS = Path(__file__).resolve().parent / "results"
AGENTS = {"iql": ("iql", []), "rebrac": ("rebrac", []), "cql": ("cql", []), "cql+cal-ql": ("cql", ["--cal_ql", "True"])}


def sac_from_scratch(dataset_id: str, args, runs: Path) -> dict:
    """SAC trained online from nothing for the same env-step budget."""
    env_id = load_dataset(dataset_id).metadata.eval_env_spec.id
    finished_run("sac", runs / "sac", args.online_steps, args.seeds, [
        "--env", env_id, "--env_steps", str(args.online_steps), "--seeds", args.seeds, "--eval_every",
        str(args.eval_every), "--checkpoint_every", str(args.checkpoint_every), "--wandb", "disabled"])
    normalize = load_dataset(dataset_id).normalized_score
    sac_curves = {seed: [(step, float(normalize(value))) for step, value in curve]
                  for seed, curve in seed_curves(read_metrics(runs / "sac"), "eval/return").items()}
    return {"final": [curve[-1][1] for curve in sac_curves.values()], "curves": sac_curves}


def main_cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="hopper-medium-replay")
    parser.add_argument("--offline-updates", type=int, default=100_000)
    parser.add_argument("--online-steps", type=int, default=100_000)
    parser.add_argument("--eval-every", type=int, default=5_000, help="env steps between online evaluations")
    parser.add_argument("--dip-window", type=int, default=20_000)
    parser.add_argument("--checkpoint-every", type=int, default=10_000,
                        help="offline updates (and SAC's env steps) between checkpoints, so a killed run resumes "
                        "from at most this far back; the online phase checkpoints at each evaluation")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--cql-overrides", default="", help="extra flags for both CQL agents, e.g. smaller "
                        "networks on a CPU: '--hidden_dims 256 256 --num_sampled_actions 4'")
    parser.add_argument("--rebrac-overrides", default="", help="extra flags for ReBRAC, e.g. '--batch_size 256'")
    parser.add_argument("--agents", default=",".join([*AGENTS, "sac"]),
                        help="which agents to report; a finished run of one under --runs is reused "
                        "(remove its directory to train it again)")
    parser.add_argument("--runs", default="runs/finetune", help="where the run directories go (under "
                        "<runs>/<dataset>/<agent>), relative to the repository")
    parser.add_argument("--out", default="finetune", help="results file name under experiments/results/, "
                        "without extension")
    parser.add_argument("--include", nargs="*", default=[], metavar="FILE",
                        help="earlier results files (.json) of the same dataset and budget whose agents join the "
                        "table and the plot")
    args = parser.parse_args()
    chosen = args.agents.split(",")
    overrides = {"cql": args.cql_overrides.split(), "rebrac": args.rebrac_overrides.split()}
    dataset_id = ensure_dataset(args.dataset)
    runs = REPO_ROOT / args.runs / args.dataset
    results = {}
    for name, (algo, extra) in AGENTS.items():
        if name not in chosen:
            continue
        finished_run(algo, runs / name, args.offline_updates + args.online_steps, args.seeds, [
            "--dataset", dataset_id, "--num_updates", str(args.offline_updates), "--seeds", args.seeds,
            "--eval_every", str(args.offline_updates), "--checkpoint_every", str(args.checkpoint_every),
            "--online_steps", str(args.online_steps), "--online_eval_every", str(args.eval_every),
            "--wandb", "disabled", *extra, *overrides.get(algo, [])])
        curves = seed_curves(read_metrics(runs / name), "eval/normalized_score")
        offline = [dict(curve)[args.offline_updates] for curve in curves.values()]
        final = [curve[-1][1] for curve in curves.values()]
        switch, window_end = args.offline_updates, args.offline_updates + args.dip_window
        dips = [min(score for step, score in curve if switch < step <= window_end) - dict(curve)[switch]
                for curve in curves.values()]
        results[name] = {"offline": offline, "final": final, "dip": dips, "curves": curves}
    if "sac" in chosen:
        results["sac from scratch"] = sac_from_scratch(dataset_id, args, runs)
    for path in args.include:
        results = {**included_results(Path(path), args), **results}
    order = [*AGENTS, "sac from scratch"]
    results = dict(sorted(results.items(), key=lambda item: order.index(item[0])))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps({**vars(args), "dataset_id": dataset_id, "results": results}))
    lines = report_lines(args, chosen, overrides, results)
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    plot_curves(results, args, dataset_id).savefig(RESULTS / f"{args.out}.png", dpi=100, bbox_inches="tight")
    print("\n".join(lines))


def included_results(path: Path, args) -> dict:
    """The agents of an earlier results file, which must share this call's dataset, budget and dip window."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"--include {path}: cannot be read as a results file ({error}).") from None
    for key in ("dataset", "offline_updates", "online_steps", "dip_window"):
        value = getattr(args, key)
        if earlier.get(key) != value:
            raise ValueError(f"--include {path}: its {key} is {earlier.get(key)!r}, this call's {value!r}; "
                             "only results of the same dataset, budget and dip window are reported together.")
    # each row remembers the call that trained it, through any number of includes
    return {name: {"from": str(path), **entry} for name, entry in earlier["results"].items()}


def report_lines(args, chosen: list[str], overrides: dict, results: dict) -> list[str]:
    cell = lambda values: f"{np.mean(values):.1f} ± {np.std(values):.1f}"  # noqa: E731
    lines = ["# Offline-to-online fine-tuning (issue 7)", "",
             f"Command: `python experiments/finetune_experiment.py --dataset {args.dataset} --offline-updates "
             f"{args.offline_updates} --online-steps {args.online_steps} --eval-every {args.eval_every} "
             f"--dip-window {args.dip_window} --seeds {args.seeds}"
             + "".join(f" --{algo}-overrides '{' '.join(flags)}'" for algo, flags in overrides.items() if flags)
             + (f" --agents {args.agents}" if set(chosen) != {*AGENTS, "sac"} else "")
             + (f" --runs {args.runs}" if args.runs != "runs/finetune" else "")
             + (f" --out {args.out}" if args.out != "finetune" else "")
             + "".join(f" --include {path}" for path in args.include)
             + "`. Normalized scores, "
             f"mean ± std over seeds; dip = lowest score in the first {args.dip_window:,} online steps minus the "
             "offline score.", "", "| agent | offline | after fine-tuning | dip |", "|---|---|---|---|"]
    for name, entry in results.items():
        lines.append(f"| {name} | {cell(entry['offline']) if 'offline' in entry else '–'} | {cell(entry['final'])} | "
                     f"{cell(entry['dip']) if 'dip' in entry else '–'} |")
    sources: dict[str, list[str]] = {}
    for name, entry in results.items():
        if "from" in entry:
            sources.setdefault(entry["from"], []).append(name)
    if sources:
        lines += ["", "Rows of earlier calls: " + "; ".join(f"{', '.join(names)} from {source}"
                                                          for source, names in sources.items()) + "."]
    return lines


def plot_curves(results: dict, args, dataset_id: str) -> Figure:
    """Mean normalized score over seeds against online env steps (0: the switch; the
    pre-trained agents' offline score sits there), the seeds' range shaded."""
    figure = Figure(figsize=(7, 4))
    axis = figure.subplots()
    for name, entry in results.items():
        # the agents' steps count offline updates first; SAC's are env steps from the start
        offset = 0 if "offline" not in entry else args.offline_updates
        steps = np.array([step for step, _ in next(iter(entry["curves"].values()))]) - offset
        scores = np.array([[score for _, score in curve] for curve in entry["curves"].values()])
        axis.plot(steps, scores.mean(axis=0), marker="o", markersize=3, label=name)
        axis.fill_between(steps, scores.min(axis=0), scores.max(axis=0), alpha=0.2)
    axis.axvline(0, color="grey", linestyle="--", linewidth=1)
    axis.set(xlabel="online env steps", ylabel="normalized score (mean, seeds' range shaded)",
             title=f"{dataset_id}: {args.offline_updates:,} offline updates, then online")
    axis.legend(fontsize=8)
    return figure


if __name__ == "__main__":
    with user_errors_as_messages():  # one line for a user's mistake; a SIGTERM or Ctrl-C stop exits quietly
        main_cli()
