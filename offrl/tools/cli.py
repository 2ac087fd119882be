"""The `offrl` command line.

    offrl train ALGO --dataset ID [--seeds 0,1,2] [--num_updates N] [--root DIR] [any option of ALGO]
    offrl datasets list
    offrl datasets info ID
    offrl datasets convert {d4rl,neorl,neorl2} FILE [--id ID] [--overwrite] [--ref-min-score X --ref-max-score Y] [--eval-env ENV]
    offrl datasets generate NAME [NAME ...] [--steps N] [--seed S] [--overwrite | --missing] [--policies DIR]
    offrl datasets split-labels ID [--labelled 0.1] [--from lowest-return-50%] [--seed S]
    offrl datasets proxy-label --labelled ID1 --unlabelled ID2 --out ID3 [--ensemble N]
    offrl datasets remove ID
    offrl sweep SPEC [--dry-run] [--workers N] [--ray ADDRESS] [--scheduler asha|median] [--export-wandb] [--seed-per-run]
    offrl report RUNS_OR_SWEEP [...] [--out DIR] [--by-run] [--reference YAML]
    offrl evaluate RUN_DIR [--episodes 100] [--env ENV] [--checkpoint FILE] [--out FILE.json]
    offrl evaluate RUN_DIR --ope {fqe,model} [--data ID] [--gamma 0.99] [--fqe-updates N] [--horizon H]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from offrl import data  # its names import their modules on first use
from offrl.data.reference import FORMATS
from offrl.run.arguments import comma_list, positive_int, seed_int
from offrl.run.errors import USER_ERRORS, interrupt_exit_status, print_error, raised_by_offrl

console = Console()


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def datasets_list(_: argparse.Namespace) -> int:
    table = Table("id", "episodes", "steps", "ref min", "ref max", title=f"Local datasets in {data.store.datasets_root()}")
    for dataset_id in data.local_dataset_ids():
        raw = data.store.raw_metadata(dataset_id)
        table.add_row(dataset_id, _fmt(raw.get("total_episodes")), _fmt(raw.get("total_steps")),
                      _fmt(raw.get("ref_min_score")), _fmt(raw.get("ref_max_score")))
    if table.row_count == 0:
        console.print("No local datasets. Convert one with `offrl datasets convert` or generate one.")
    else:
        console.print(table)
    return 0


def datasets_info(args: argparse.Namespace) -> int:
    dataset = data.load_dataset(args.id, download=args.download)
    summary = dataset.summary()
    table = Table(show_header=False, title=args.id)
    for key, value in summary.items():
        table.add_row(key, _fmt(value))
    table.add_row("source", _fmt(dataset.metadata.extra.get("source")))
    console.print(table)
    console.print(f"fingerprint (runs record it in run.json): {dataset.fingerprint()}", soft_wrap=True)
    return 0


def datasets_convert(args: argparse.Namespace) -> int:
    if (args.ref_min_score is None) != (args.ref_max_score is None):
        raise data.DatasetError("Pass both --ref-min-score and --ref-max-score, or neither.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = data.convert(args.format, args.file, args.id, overwrite=args.overwrite,
                              ref_min_score=args.ref_min_score, ref_max_score=args.ref_max_score,
                              eval_env=args.eval_env)
    for warning in caught:
        console.print(f"[yellow]warning:[/] {warning.message}", highlight=False)
    console.print(f"Wrote [bold]{result.dataset_id}[/]: {result.episodes:,} episodes, "
                  f"{result.steps:,} steps -> {result.path}")
    for note in result.notes:
        console.print(f"  note: {note}")
    return 0


def datasets_generate(args: argparse.Namespace) -> int:
    from offrl.data import generate, suite

    layout = {key: value for key, value in (("num_envs", args.num_envs), ("streams", args.streams))
              if value is not None}  # unset: generate's defaults, those of the shipped datasets
    for name in args.names:
        dataset_id = suite.suite_id(*suite.parse_name(name))
        overwrite = args.overwrite
        if args.missing and dataset_id in data.local_dataset_ids():
            reason = suite.outdated(name, args.policies)
            if reason is None:
                console.print(f"{dataset_id} is in the local store; kept.")
                continue
            console.print(f"{dataset_id} in the local store is out of date: {reason}. Generating it again.")
            overwrite = True
        report = generate.generate(name, steps=args.steps, seed=args.seed, overwrite=overwrite,
                                   policy_dir=args.policies, workers=args.workers, **layout)
        summary = data.load_dataset(report.dataset_id).summary()
        console.print(f"Wrote [bold]{report.dataset_id}[/]: {report.episodes:,} episodes, {report.steps:,} steps "
                      f"in {report.seconds:.0f} s ({report.steps_per_second:,.0f} steps/s); mean return "
                      f"{summary['return_mean']:.1f}, normalized {summary['normalized_return_mean']:.1f}")
    return 0


def datasets_split_labels(args: argparse.Namespace) -> int:
    from offrl.data.labels import split_labels

    result = split_labels(args.id, args.labelled, args.selection, args.seed, args.labelled_id,
                          args.unlabelled_id, args.overwrite)
    console.print(f"Wrote [bold]{result.labelled_id}[/] ({result.labelled_episodes:,} trajectories with actions) "
                  f"and [bold]{result.unlabelled_id}[/] ({result.unlabelled_episodes:,} action-free)")
    return 0


def datasets_proxy_label(args: argparse.Namespace) -> int:
    from offrl.model_based.idm import IDMConfig, proxy_label  # imports jax: only for this command

    config = IDMConfig(ensemble=args.ensemble, seed=args.seed)
    if args.steps:
        config = replace(config, max_steps=args.steps)
    result = proxy_label(args.labelled, args.unlabelled, args.out, config, args.overwrite)
    console.print(f"Wrote [bold]{result.dataset_id}[/]: {result.labelled_steps:,} logged and "
                  f"{result.proxy_steps:,} proxy actions; IDM validation action MSE "
                  f"{result.report.validation_action_mse:.4f} ([-1, 1] units) after "
                  f"{result.report.steps:,} gradient steps")
    return 0


def datasets_remove(args: argparse.Namespace) -> int:
    data.remove_dataset(args.id)
    console.print(f"Removed {args.id}")
    return 0


def _run_state(run_dir: Path, finished: bool, stale: bool, dataset_missing: bool) -> str:
    """A sweep run's row in the table: a cut-off run continues from its checkpoint, not from scratch."""
    if stale:
        return "on other data"
    if finished:
        return "finished"
    if dataset_missing:
        return "to run (dataset missing)"
    from offrl.run import checkpoint

    step = checkpoint.latest_step(run_dir)
    return "to run" if step is None else f"to resume from step {step:,}"


def sweep(args: argparse.Namespace) -> int:
    import yaml

    from offrl.tools import ray_sweep
    from offrl.tools import sweep as sweeps

    spec = sweeps.restrict(sweeps.load_spec(args.spec), args.algorithms, args.datasets)
    runs = sweeps.expand(spec) if args.no_pack else sweeps.pack(sweeps.expand(spec))
    if args.seed_per_run:
        runs = sweeps.seed_per_run(runs)
    sweeps.require_unique_names(runs)
    root = Path(args.root)
    if args.export_wandb:
        for algorithm in spec.algorithms:
            path = Path(args.spec).with_suffix(f".{algorithm}.wandb.yaml")
            path.write_text(yaml.safe_dump(sweeps.wandb_sweep_yaml(spec, algorithm), sort_keys=False))
            console.print(f"Wrote {path} (start it with `wandb sweep {path}`)")
        return 0
    sweeps.check_settings(runs, root)
    todo = [run for run in runs if not sweeps.is_finished(run, root)]
    missing = sweeps.missing_datasets(spec)
    if missing and not args.dry_run and any(run.dataset in missing for run in todo):
        raise data.DatasetNotFoundError(
            f"Not in the local store: {', '.join(missing)}. Make them first: `offrl datasets generate NAME` for the "
            "suite's (`make datasets` makes all 15), `offrl datasets convert` for D4RL/NeoRL files.")
    stale = sweeps.on_other_data(runs, root)
    table = Table(title=f"sweep {spec.name}: {len(runs)} runs, {len(todo)} to run")
    table.add_column("run", overflow="fold")
    table.add_column("seeds")
    table.add_column("state")
    for run in runs:
        table.add_row(run.name, ",".join(map(str, run.seeds)),
                      _run_state(run.run_dir(root), run not in todo, run in stale, run.dataset in missing))
    console.print(table)
    if stale:
        console.print(f"[red]{len(stale)} runs began on other data than the local datasets now hold[/] (made again "
                      "since), so their results would not compare with new runs'. Move them away or remove them, "
                      "then rerun the sweep to train them on the local data:\n"
                      + "\n".join(f"  {run.run_dir(root)}" for run in stale))
        return 1
    if args.dry_run or not todo:
        return 0
    if args.scheduler:
        budgets = [sweeps.run_budget(run, root) for run in todo]
        grace = args.grace_updates or max(eval_every for _, eval_every in budgets)
        results = ray_sweep.run_tune(todo, root, args.ray, args.scheduler, grace, max(n for n, _ in budgets),
                                     args.cpus_per_run, args.gpus_per_run)
    elif args.ray:
        results = ray_sweep.run_ray(todo, root, args.ray, args.cpus_per_run, args.gpus_per_run)
    else:
        results = sweeps.run_local(todo, root, args.workers)
    for line in sweeps.summary_lines(results):
        console.print(line)
    failed = [result for result in results if result.get("failed")]
    console.print(f"{len(results) - len(failed)} of {len(results)} runs done under {root / spec.name}"
                  + (f", {len(failed)} failed" if failed else "") + f"; summarize with `offrl report {root / spec.name}`")
    return 1 if failed else 0


def report(args: argparse.Namespace) -> int:
    from offrl.run.config import read_yaml
    from offrl.tools.report import write_report

    missing = [path for path in args.paths if not Path(path).exists()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)}: no such run directory or folder of runs.")
    if args.reference and not Path(args.reference).is_file():
        raise FileNotFoundError(f"--reference {args.reference}: no such file (offrl's published D4RL scores are "
                                "experiments/published_d4rl.yaml).")
    reference = read_yaml(args.reference) if args.reference else None
    path = write_report([Path(p) for p in args.paths], Path(args.out) if args.out else None, args.by_run, reference)
    console.print(f"Wrote {path} and its plots")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="offrl", description="Offline RL on JAX.")
    commands = parser.add_subparsers(dest="command", required=True)

    train_parser = commands.add_parser(
        "train", help="train an algorithm (`offrl train ALGO --help` lists its options)",
        description="Runs algorithms/ALGO.py with the options that follow; runs go under --root (default: runs/ "
                    "in the working directory).")
    train_parser.add_argument("algorithm", help="bc, td3_bc, iql, cql, rebrac, ravl, morec, or sac (online)")
    train_parser.add_argument("options", nargs=argparse.REMAINDER, help="the algorithm's options, e.g. --dataset ID")
    train_parser.set_defaults(run=train)

    datasets = commands.add_parser("datasets", help="manage local Minari datasets")
    actions = datasets.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="local ids with steps, episodes and reference scores").set_defaults(run=datasets_list)
    info = actions.add_parser("info", help="episodes, steps, returns and scores of a dataset")
    info.add_argument("id")
    info.add_argument("--download", action="store_true", help="fetch it from Minari's remote if not local")
    info.set_defaults(run=datasets_info)
    convert = actions.add_parser("convert", help="convert a D4RL/NeoRL/NeoRL-2 file into a Minari dataset")
    convert.add_argument("format", choices=FORMATS)
    convert.add_argument("file")
    convert.add_argument("--id", help="dataset id (default: derived from the file name)")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    convert.add_argument("--ref-min-score", type=float, help="random-policy return for normalization")
    convert.add_argument("--ref-max-score", type=float, help="expert return for normalization")
    convert.add_argument("--eval-env", help="Gymnasium env id that evaluates policies on this data")
    convert.set_defaults(run=datasets_convert)
    generate = actions.add_parser("generate", help="generate a suite dataset from the shipped SAC policies",
                                  description="Kinds: random, medium, expert, medium-replay, medium-expert; "
                                              "envs: hopper, halfcheetah, walker2d (or any in --policies).")
    generate.add_argument("names", nargs="+", metavar="name", help="<env>-<kind>, e.g. hopper-medium-replay")
    generate.add_argument("--steps", type=positive_int, help="transitions (default: 1M as in D4RL; medium-replay: "
                                                    "the medium agent's training steps; medium-expert: N of each)")
    generate.add_argument("--seed", type=seed_int, default=0)
    replace_or_keep = generate.add_mutually_exclusive_group()
    replace_or_keep.add_argument("--overwrite", action="store_true", help="replace existing datasets")
    replace_or_keep.add_argument("--missing", action="store_true", help="generate only those not in the local "
                                 "store or made from other policies than --policies holds now, keeping the others "
                                 "(without it an existing dataset is an error)")
    generate.add_argument("--policies", type=Path, default=None, help="a directory with manifest.json "
                                                                      "(default: datasets/policies)")
    generate.add_argument("--num-envs", type=positive_int, help="environments stepped side by side, in all (default 32)")
    generate.add_argument("--streams", type=positive_int, help="independently seeded streams the environments are split "
                          "into (default 14; the data depend on --seed, --num-envs and --streams)")
    generate.add_argument("--workers", type=positive_int, help="processes stepping the streams (default: one per core); "
                          "they change the speed, not the data")
    generate.set_defaults(run=datasets_generate)
    split = actions.add_parser("split-labels", help="split into a labelled and an action-free dataset")
    split.add_argument("id")
    split.add_argument("--labelled", type=float, default=0.1, help="fraction of trajectories that keep actions")
    split.add_argument("--from", dest="selection", default="lowest-return-50%",
                       help="uniform | lowest-return-P%% | highest-return-P%%: the pool labelled ones come from")
    split.add_argument("--seed", type=seed_int, default=0)
    split.add_argument("--labelled-id", help="default: <id>-labelled<P>-v0")
    split.add_argument("--unlabelled-id", help="default: <id>-unlabelled<100-P>-v0")
    split.add_argument("--overwrite", action="store_true")
    split.set_defaults(run=datasets_split_labels)
    proxy = actions.add_parser("proxy-label", help="label action-free trajectories with an inverse dynamics model")
    proxy.add_argument("--labelled", required=True, help="dataset with actions (trains the IDM)")
    proxy.add_argument("--unlabelled", required=True, help="action-free dataset to label")
    proxy.add_argument("--out", required=True, help="id of the labelled result")
    proxy.add_argument("--ensemble", type=positive_int, default=1, help="IDMs whose spread gives per-step uncertainty")
    proxy.add_argument("--steps", type=positive_int, help="most IDM gradient steps (default 20,000; training stops "
                       "early when the validation action error stops improving)")
    proxy.add_argument("--seed", type=seed_int, default=0)
    proxy.add_argument("--overwrite", action="store_true")
    proxy.set_defaults(run=datasets_proxy_label)
    remove = actions.add_parser("remove", help="delete a local dataset")
    remove.add_argument("id")
    remove.set_defaults(run=datasets_remove)

    sweep_parser = commands.add_parser("sweep", help="run a config-driven sweep (experiments/sweeps/*.yaml)")
    sweep_parser.add_argument("spec")
    sweep_parser.add_argument("--dry-run", action="store_true", help="list the runs, run nothing")
    sweep_parser.add_argument("--algorithms", type=comma_list, help="run only these of the spec's algorithms, e.g. "
                                                                    "cql,rebrac")
    sweep_parser.add_argument("--datasets", type=comma_list, help="run only these of the spec's datasets (ids or "
                                                                  "short names, e.g. walker2d-medium)")
    sweep_parser.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1,
                              help="local programs at a time (default: one per core)")
    sweep_parser.add_argument("--ray", metavar="ADDRESS",
                              help="run on a Ray cluster (its head's HOST:PORT, auto, or local for one started here); "
                                   "--root and the Minari store must be on storage every node mounts (docs/sweeps.md)")
    sweep_parser.add_argument("--cpus-per-run", type=float, default=1.0, help="CPUs each run declares on Ray")
    sweep_parser.add_argument("--gpus-per-run", type=float, default=0.0, help="GPUs each run declares on Ray")
    sweep_parser.add_argument("--scheduler", choices=["asha", "median"],
                              help="run the sweep's runs as Ray Tune trials whose evaluations this scheduler reads, "
                                   "stopping the weaker runs early (with --ray; without, on a Ray of this machine)")
    sweep_parser.add_argument("--grace-updates", type=positive_int,
                              help="updates before --scheduler may stop a run (default: the runs' --eval_every)")
    sweep_parser.add_argument("--no-pack", action="store_true",
                              help="one program per hyperparameter point (default: pack PACKABLE ones)")
    sweep_parser.add_argument("--seed-per-run", action="store_true",
                              help="one run per seed instead of all seeds in one program: faster on a CPU, "
                                   "where each worker gets its own cores (docs/sweeps.md)")
    sweep_parser.add_argument("--export-wandb", action="store_true", help="write W&B sweep YAMLs next to SPEC")
    sweep_parser.add_argument("--root", default="runs/sweeps",
                              help="where run directories go (default: runs/sweeps in the working directory)")
    sweep_parser.set_defaults(run=sweep)

    report_parser = commands.add_parser("report", help="tables, rliable aggregates and plots over runs")
    report_parser.add_argument("paths", nargs="+", help="run directories or folders holding runs")
    report_parser.add_argument("--out", help="output directory (default: the first path)")
    report_parser.add_argument("--by-run", action="store_true", help="one row per run instead of per algorithm")
    report_parser.add_argument("--reference", help="YAML of published scores: dataset -> algorithm -> score")
    report_parser.set_defaults(run=report)

    evaluate_parser = commands.add_parser("evaluate", help="evaluate a run's policies over many episodes, or "
                                                           "estimate their value from data (--ope)")
    evaluate_parser.add_argument("run_dir", type=Path)
    evaluate_parser.add_argument("--episodes", type=positive_int, default=100, help="episodes per seed (default 100)")
    evaluate_parser.add_argument("--env", help="Gymnasium env id (default: the run's evaluation env)")
    evaluate_parser.add_argument("--checkpoint", type=Path, help="a checkpoint file (default: the run's latest)")
    evaluate_parser.add_argument("--ope", choices=("fqe", "model"),
                                 help="estimate instead from data, without an env: fqe (Fitted Q Evaluation) or "
                                      "model (rollouts in a learned dynamics ensemble)")
    evaluate_parser.add_argument("--data", help="with --ope: the dataset to learn from (default: the run's held-out "
                                                "split where one is local, else its own data)")
    evaluate_parser.add_argument("--gamma", type=float, default=0.99, help="with --ope: the discount (default 0.99)")
    evaluate_parser.add_argument("--fqe-updates", type=positive_int, default=50_000,
                                 help="with --ope fqe: critic updates (default 50,000; a multiple of 1,000)")
    evaluate_parser.add_argument("--horizon", type=positive_int, default=1000,
                                 help="with --ope model: imagined steps per rollout (default 1,000)")
    evaluate_parser.add_argument("--dynamics", help="with --ope model: a trained ensemble's directory (default: "
                                                    "the one learned from the data, trained once and shared)")
    evaluate_parser.add_argument("--out", help="also write the numbers to this JSON file")
    evaluate_parser.set_defaults(run=evaluate)
    return parser


def train(args: argparse.Namespace) -> int:
    from offrl.run.algorithms import require_known

    require_known(args.algorithm)  # mistakes in the name and the dataset id answer before jax is imported
    dataset = _option_value(args.options, "--dataset")
    if dataset:
        data.read_metadata(dataset)
    from offrl.run.train import train_by_name

    train_by_name(args.algorithm, args.options)
    return 0


def _option_value(options: list[str], flag: str) -> str | None:
    """The value given for `flag` in `--flag VALUE` or `--flag=VALUE` form, if any."""
    for index, option in enumerate(options):
        if option == flag and index + 1 < len(options):
            return options[index + 1]
        if option.startswith(flag + "="):
            return option.split("=", 1)[1]
    return None


def evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from offrl.run.directory import read_run

    read_run(args.run_dir)  # a directory without a run is refused before jax is imported
    if args.ope == "fqe":
        from offrl.core.fqe import FQEConfig
        from offrl.run.ope import fqe_estimates

        config = FQEConfig(gamma=args.gamma, num_updates=args.fqe_updates)
        result = fqe_estimates(args.run_dir, args.data, config, args.checkpoint)
        keys = ("ope/fqe_value", "ope/fqe_return", "ope/fqe_normalized_score")
        title = (f"{args.run_dir}: FQE estimates (not measured returns) from {result['data']}, gamma {config.gamma}, "
                 f"{config.num_updates:,} updates")
    elif args.ope == "model":
        from offrl.model_based.ope import ModelOPEConfig, model_estimates

        config = ModelOPEConfig(gamma=args.gamma, horizon=args.horizon)
        result = model_estimates(args.run_dir, args.data, config, args.checkpoint, args.dynamics)
        keys = ("ope/model_value", "ope/model_uncertainty", "ope/model_normalized_score")
        title = (f"{args.run_dir}: estimates (not measured returns) in a dynamics ensemble learned from "
                 f"{result['data']}, gamma {config.gamma}, {config.horizon} steps; uncertainty: the spread of its "
                 "members")
    else:
        from offrl.run.train import evaluate_run

        result = evaluate_run(args.run_dir, args.episodes, args.env, args.checkpoint)
        keys = ("eval/return", "eval/normalized_score")
        title = f"{args.run_dir}: {args.episodes} episodes per seed in {result['env']}"
    scores = {key: np.asarray(result[key]) for key in keys if key in result}
    table = Table(title=title)
    table.add_column("seed")
    for key in scores:
        table.add_column(key.split("/")[1].replace("_", " "), justify="right")
    labels = [",".join(f"{key}={value:g}" for key, value in point.items()) for point in result["points"]]
    for label in dict.fromkeys(labels):  # a packed run: each hyperparameter point apart
        if label:
            table.add_row(f"[bold]{label}[/]")
        rows = [index for index, other in enumerate(labels) if other == label]
        for index in rows:
            table.add_row(str(result["seeds"][index]), *(f"{values[index]:.1f}" for values in scores.values()))
        table.add_row("mean ± std", *(f"{np.mean(values[rows]):.1f} ± {np.std(values[rows]):.1f}"
                                      for values in scores.values()))
    console.print(table)
    if args.out:
        Path(args.out).write_text(json.dumps({key: np.asarray(value).tolist() for key, value in result.items()}))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM: a stopped run has said where to resume
        return interrupt_exit_status(interrupt)
    except USER_ERRORS as error:
        if not raised_by_offrl(error):
            raise
        print_error(error)
        return 2


if __name__ == "__main__":
    sys.exit(main())
