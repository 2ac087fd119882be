"""Experiment: semi-supervised offline RL with proxy labels (Zheng et al. 2023), issue 6.

    python experiments/proxy_label_experiment.py [--datasets hopper-medium-replay,walker2d-medium-replay]
        [--algos td3_bc,iql] [--updates 100000] [--seeds 0,1,2]

For each suite dataset (generated if missing) and algorithm, four settings:
  (a) the fully labelled dataset;
  (b) 10% of trajectories labelled, drawn from the lowest-return 50%, plus IDM proxy
      labels for the rest;
  (c) the 10% labelled data alone;
  (d) BC on (b).
It also measures the IDM's action error on the held-out true actions: the proxy actions
of (b) against the logged actions of the same transitions in the full dataset. Results go
to experiments/results/<out>.json and <out>.md (default proxy_label_<updates>k); runs to
runs/<out>/<dataset>/; the results of datasets not named in --datasets are kept from the
results file when it was made at the same updates and seeds. A finished run is reused and
a killed one resumes from its last checkpoint (every tenth of the budget), and the
proxy-labelled dataset is relabelled only when missing, made with other IDM settings or
made from other data (the suite dataset made again since), so the experiment can be spread
over several sessions. Runs that began on data the local datasets no longer hold are
refused (`offrl.run.directory.run_status`): remove them to train them again.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from offrl.data import load_dataset, local_dataset_ids, local_fingerprint
from offrl.data.generate import ensure_dataset
from offrl.data.labels import split_labels
from offrl.model_based.idm import IDMConfig, proxy_label
from offrl.run.algorithms import algorithm_module
from offrl.run.directory import divergence, resume_flag, run_status
from offrl.run.errors import TrainingDiverged, user_errors_as_messages
from offrl.run.logging import read_metrics, seed_curves
from offrl.run.train import main

REPO_ROOT = Path(__file__).resolve().parents[1]  # runs of experiments go under its runs/

RESULTS = Path(__file__).resolve().parent / "results"


def train_scores(algo: str, dataset_id: str, run_dir: Path, updates: int, seeds: str) -> list[float] | str:
    """Each seed's final normalized score, training (or resuming) the run unless it finished.
    A run that diverges (now or in an earlier call) is reported by what diverged instead."""
    status = run_status(run_dir, updates, seeds)
    if status == "diverged":
        return divergence(run_dir)
    if status != "finished":
        module = algorithm_module(algo)
        every = str(max(updates // 10, 1000))
        try:
            main(module.make, module.Config, algo, [
                "--dataset", dataset_id, "--num_updates", str(updates), "--seeds", seeds,
                "--eval_every", str(updates), "--checkpoint_every", every, "--wandb", "disabled",
                "--run_dir", str(run_dir), *resume_flag(run_dir, status)])
        except TrainingDiverged:
            return divergence(run_dir)
    scores = seed_curves(read_metrics(run_dir), "eval/normalized_score")
    return [points[-1][1] for points in scores.values()]


def proxy_labelled(labelled_id: str, unlabelled_id: str, proxy_id: str, config: IDMConfig) -> dict:
    """Make the proxy-labelled dataset unless it exists with these IDM settings, made from
    the labelled and unlabelled data as they are now (runs in progress train on it); returns
    the IDM's training report (steps, seconds, validation NLL and action MSE)."""
    wanted = json.loads(json.dumps(asdict(config)))  # tuples as the metadata's lists
    made = load_dataset(proxy_id).metadata.extra if proxy_id in local_dataset_ids() else None
    sources = {"labelled_fingerprint": local_fingerprint(labelled_id),
               "unlabelled_fingerprint": local_fingerprint(unlabelled_id)}
    if not (made and {key: made["idm"].get(key) for key in wanted} == wanted and made["labelled"] == labelled_id
            and all(made.get(key) == value for key, value in sources.items())):
        proxy_label(labelled_id, unlabelled_id, proxy_id, config, overwrite=True)
    return load_dataset(proxy_id).metadata.extra["idm"]["report"]


def idm_action_error(full_id: str, proxy_id: str, labelled_id: str) -> dict[str, float]:
    """Proxy actions against the true ones they replaced (matched by the full dataset's order)."""
    full, proxied = load_dataset(full_id), load_dataset(proxy_id)
    chosen = set(load_dataset(labelled_id).metadata.extra["episodes"])
    true_actions = np.concatenate([episode.actions for index, episode in enumerate(full.episodes())
                                   if index not in chosen])
    proxy_actions = proxied.actions[proxied.proxy_actions]
    error = proxy_actions - true_actions
    return {"mse": float((error ** 2).mean()), "mae": float(np.abs(error).mean()),
            "true_action_variance": float(true_actions.var())}


def score_cell(scores: list[float] | str) -> str:
    """Mean ± std over seeds, or what diverged (its |metric| bars escaped for the table)."""
    return scores.replace("|", "\\|") if isinstance(scores, str) else f"{np.mean(scores):.1f} ± {np.std(scores):.1f}"


def main_cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="hopper-medium-replay,walker2d-medium-replay")
    parser.add_argument("--algos", default="td3_bc,iql")
    parser.add_argument("--updates", type=int, default=100_000)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--idm-steps", type=int, default=IDMConfig.max_steps)
    parser.add_argument("--out", default="", help="results file name in experiments/results/ "
                        "(default proxy_label_<updates in thousands>k)")
    args = parser.parse_args()
    args.out = args.out or f"proxy_label_{args.updates // 1000}k"
    results_file = RESULTS / f"{args.out}.json"
    earlier = json.loads(results_file.read_text()) if results_file.exists() else {}
    # Datasets finished in an earlier session at the same budget keep their results, so
    # the datasets can be run in different sessions (and on machines that lost runs/).
    same_budget = (earlier.get("updates"), earlier.get("seeds")) == (args.updates, args.seeds)
    results = earlier["results"] if same_budget else {}
    for name in args.datasets.split(","):
        full_id = ensure_dataset(name)
        split = split_labels(full_id, 0.1, "lowest-return-50%", seed=0, overwrite=True)
        proxy_id = full_id.replace("-v0", "-proxy10-v0")
        idm = proxy_labelled(split.labelled_id, split.unlabelled_id, proxy_id, IDMConfig(max_steps=args.idm_steps))
        results[name] = entry = {
            "idm_training": idm, "idm_error_on_unlabelled": idm_action_error(full_id, proxy_id, split.labelled_id),
            "data_score": load_dataset(full_id).summary()["normalized_return_mean"], "scores": {}}
        settings = [(f"{algo} {setting}", algo, dataset_id, f"{algo}_{setting[1]}")
                    for algo in args.algos.split(",")
                    for setting, dataset_id in (("(a) full", full_id), ("(b) 10% + proxy", proxy_id),
                                                ("(c) 10% only", split.labelled_id))]
        settings.append(("bc (d) on (b)", "bc", proxy_id, "bc_d"))
        runs = REPO_ROOT / "runs" / args.out / name
        for setting, algo, dataset_id, run_name in settings:
            entry["scores"][setting] = train_scores(algo, dataset_id, runs / run_name, args.updates, args.seeds)
            write_results(args, results)  # after every run: a session cut short keeps what finished
    print(write_results(args, results))


def write_results(args, results: dict) -> str:
    """<out>.json and <out>.md from the results so far; returns the markdown."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(
        {"updates": args.updates, "seeds": args.seeds, "results": results}, indent=1))
    lines = ["# Proxy labelling (issue 6)", "", f"Command: `python experiments/proxy_label_experiment.py "
             f"--datasets {','.join(results)} --algos {args.algos} --updates {args.updates} --seeds {args.seeds} "
             f"--idm-steps {args.idm_steps} --out {args.out}`.",
             "Final normalized scores, mean ± std over seeds.", ""]
    for name, entry in results.items():
        error, idm = entry["idm_error_on_unlabelled"], entry["idm_training"]
        lines += [f"## {name} (data {entry['data_score']:.1f})", "",
                  f"IDM: {idm['steps']:,} gradient steps ({idm['seconds'] / 60:.0f} min), validation action MSE "
                  f"{idm['validation_action_mse']:.4f} on held-out labelled trajectories; on the unlabelled "
                  f"transitions MSE {error['mse']:.4f}, MAE {error['mae']:.4f} "
                  f"(true action variance {error['true_action_variance']:.4f}).", "",
                  "| setting | score |", "|---|---|"]
        lines += [f"| {setting} | {score_cell(scores)} |" for setting, scores in entry["scores"].items()]
        lines.append("")
    markdown = "\n".join(lines)
    (RESULTS / f"{args.out}.md").write_text(markdown)
    return markdown

if __name__ == "__main__":
    with user_errors_as_messages():  # one line for a user's mistake; a SIGTERM or Ctrl-C stop exits quietly
        main_cli()
