"""Config-driven sweeps: algorithms x datasets x hyperparameters x seeds, run locally or on Ray.

    offrl sweep experiments/sweeps/SPEC.yaml [--dry-run] [--workers N] [--ray ADDRESS] [--scheduler asha|median] [--export-wandb]
                [--algorithms A,B] [--datasets D,E] [--no-pack] [--seed-per-run]

A spec (YAML):

    name: rebrac-hopper            # the sweep's name: wandb group, runs/sweeps/<name>/
    algorithms: [rebrac]
    datasets: [offrl/hopper/medium-v0]
    seeds: [0, 1, 2]
    base: {num_updates: 100000}    # config keys shared by every run
    grid:                          # every combination
      actor_bc_coef: [0.001, 0.01]
    random:                        # `samples` draws, seeded, combined with every grid point
      samples: 4
      seed: 0
      axes:
        actor_lr: {log_uniform: [1.0e-4, 1.0e-3]}
        tau: {uniform: [0.001, 0.01]}
        batch_size: {choice: [256, 512]}

Each (algorithm, dataset, grid point, random draw) is one run that trains all the seeds
side by side in one vmapped program; points that differ only in scalar hyperparameters the
algorithm declares PACKABLE (e.g. ReBRAC's BC coefficients) are packed into one run and
program too, their values passed as traced values (`--no-pack` keeps them apart;
`--seed-per-run` splits each run into one run per seed, for CPUs). Runs are independent
processes: up to `--workers` at a time locally (each pinned to its own share of the CPUs),
or on a Ray cluster (offrl.tools.ray_sweep).
A finished or diverged run writes result.json; re-running the sweep skips it, and resumes
a run that was cut off from its last checkpoint. A sweep whose runs began on other data
than the local datasets now hold (made again since) stops before training and names them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import multiprocessing
import os
import signal
import threading
import traceback
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from offrl.run.algorithms import algorithm_module
from offrl.run.config import RunConfig, dataset_config_name, read_yaml
from offrl.run.directory import clear_unresumable, divergence, trained_on_other_data
from offrl.run.errors import StopRequested, TrainingDiverged

RESULT = "result.json"


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: an algorithm on a dataset with overrides, all seeds packed."""

    sweep: str
    algorithm: str
    dataset: str
    seeds: tuple[int, ...]
    overrides: dict[str, Any] = field(default_factory=dict, hash=False)
    label: str = ""  # the varied values, e.g. "actor_bc_coef=0.01"
    sweep_base: tuple[str, ...] = ()  # keys of the spec's base (not part of labels)

    @property
    def name(self) -> str:
        """algorithm, the full dataset id (namespace and version: d4rl-hdf5/hopper/medium-v2 and
        mujoco/hopper/medium-v0 are other data), the varied values and the seeds, e.g.
        td3_bc_offrl-hopper-medium-v0_actor_lr=0.001_s0-1-2: a spec changed to other seeds
        gets other runs, not the finished runs of the old seeds."""
        seeds = "s" + "-".join(map(str, self.seeds))
        return "_".join(part for part in (self.algorithm, self.dataset.replace("/", "-"), self.label, seeds) if part)

    def run_dir(self, root: Path) -> Path:
        return root / self.sweep / self.name

    def argv(self, root: Path) -> list[str]:
        args = ["--dataset", self.dataset, "--seeds", ",".join(map(str, self.seeds)),
                "--wandb_group", self.sweep, "--run_dir", str(self.run_dir(root))]
        for key, value in self.overrides.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            args += [f"--{key}", *map(str, values)]
        return args


@dataclass
class SweepSpec:
    name: str
    algorithms: list[str]
    datasets: list[str]
    seeds: list[int]
    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    random: dict[str, Any] = field(default_factory=dict)


def load_spec(path: str | Path) -> SweepSpec:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such sweep spec (the shipped ones are experiments/sweeps/*.yaml).")
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a sweep spec is a YAML mapping with name, algorithms, datasets and seeds "
                         "(see `offrl sweep --help`).")
    missing = [key for key in ("name", "algorithms", "datasets", "seeds") if key not in raw]
    if missing:
        raise ValueError(f"{path}: the sweep spec needs {', '.join(missing)} (see `offrl sweep --help`).")
    unknown = sorted(set(raw) - {"name", "algorithms", "datasets", "seeds", "base", "grid", "random"})
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}.")
    seeds = raw["seeds"] if isinstance(raw["seeds"], list) else [raw["seeds"]]
    try:  # the runs would refuse them one by one; say it once, before any starts
        RunConfig(seeds=",".join(map(str, seeds))).seed_list()
    except ValueError as error:
        raise ValueError(f"{path}: seeds {seeds}: {str(error).split(': ', 1)[-1]}") from None
    return SweepSpec(**{**raw, "seeds": seeds})


def restrict(spec: SweepSpec, algorithms: list[str] | None = None, datasets: list[str] | None = None) -> SweepSpec:
    """The part of a sweep for some of its algorithms and datasets (ids or short names such
    as walker2d-medium); its runs keep their directories, so one report covers all parts."""
    def chosen(kind: str, wanted: list[str] | None, available: list[str], name=lambda item: item) -> list[str]:
        if not wanted:
            return available
        unknown = [item for item in wanted if not any(item in (entry, name(entry)) for entry in available)]
        if unknown:
            raise ValueError(f"{', '.join(unknown)} not among the sweep's {kind}: {', '.join(available)}.")
        return [entry for entry in available if entry in wanted or name(entry) in wanted]

    return dataclasses.replace(spec, algorithms=chosen("algorithms", algorithms, spec.algorithms),
                               datasets=chosen("datasets", datasets, spec.datasets, dataset_config_name))


def draw(axis: dict[str, Any], rng: np.random.Generator):
    """One value of a random axis: {uniform: [lo, hi]}, {log_uniform: [lo, hi]} or {choice: [...]}."""
    (kind, values), = axis.items()
    if kind == "uniform":
        return float(rng.uniform(*values))
    if kind == "log_uniform":
        return float(np.exp(rng.uniform(np.log(values[0]), np.log(values[1]))))
    if kind == "choice":
        return values[int(rng.integers(len(values)))]
    raise ValueError(f"Unknown random axis {kind!r}: use uniform, log_uniform or choice.")


def _format(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def expand(spec: SweepSpec) -> list[SweepRun]:
    """Every run of the sweep, in a fixed order."""
    grid_keys = list(spec.grid)
    grid_points = [dict(zip(grid_keys, values)) for values in itertools.product(*spec.grid.values())] or [{}]
    random_points: list[dict] = [{}]
    if spec.random:
        rng = np.random.default_rng(spec.random.get("seed", 0))
        axes = spec.random.get("axes", {})
        random_points = [{key: draw(axis, rng) for key, axis in axes.items()}
                         for _ in range(int(spec.random.get("samples", 1)))]
    runs = []
    for algorithm, dataset in itertools.product(spec.algorithms, spec.datasets):
        for grid_point, random_point in itertools.product(grid_points, random_points):
            varied = {**grid_point, **random_point}
            label = ",".join(f"{key}={_format(value)}" for key, value in varied.items())
            runs.append(SweepRun(spec.name, algorithm, dataset, tuple(spec.seeds), {**spec.base, **varied}, label,
                                 tuple(spec.base)))
    return runs


def pack(runs: list[SweepRun]) -> list[SweepRun]:
    """Runs that differ only in their algorithm's PACKABLE hyperparameters become one run
    that trains all their points side by side (--pack), in one compiled program."""

    groups: dict[tuple, list[SweepRun]] = {}
    for run in runs:
        packable = set(getattr(algorithm_module(run.algorithm), "PACKABLE", ()))
        fixed = {key: value for key, value in run.overrides.items() if key not in packable}
        key = (run.algorithm, run.dataset, run.seeds, json.dumps(fixed, sort_keys=True, default=str))
        groups.setdefault(key, []).append(run)
    packed = []
    for (algorithm, dataset, seeds, fixed_json), members in groups.items():
        fixed = json.loads(fixed_json)
        varied = [{key: value for key, value in run.overrides.items() if key not in fixed} for run in members]
        if len(members) == 1 or not varied[0]:
            packed += members
            continue
        shared = ",".join(f"{key}={_format(value)}" for key, value in fixed.items() if key not in members[0].sweep_base)
        label = ",".join(part for part in (shared, f"packed{len(members)}") if part)
        packed.append(SweepRun(members[0].sweep, algorithm, dataset, seeds, {**fixed, "pack": json.dumps(varied)},
                               label, members[0].sweep_base))
    return packed


def seed_per_run(runs: list[SweepRun]) -> list[SweepRun]:
    """Each run split into one run per seed (`--seed-per-run`, names ending in `_s<seed>`;
    reports group them again). On a CPU, seeds as separate pinned workers train faster than vmapped
    in one program, which a second thread barely speeds up (docs/sweeps.md); on a GPU one
    program of all seeds is faster."""
    return [dataclasses.replace(run, seeds=(seed,)) for run in runs for seed in run.seeds]


def require_unique_names(runs: list[SweepRun]) -> None:
    """Two runs of one name would share a run directory (and results): refuse the sweep, e.g.
    grid values that print alike at 4 significant digits."""
    names = [run.name for run in runs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"The sweep expands to runs that share a name, and with it a run directory: "
                         f"{', '.join(repeated)}. Make their values differ in the first 4 significant digits, or "
                         "list each dataset and value once.")


def check_settings(runs: list[SweepRun], root: Path) -> None:
    """Resolve every run's config now (known keys, values in range), so that a typo in the
    spec fails before any run trains rather than in each run once the sweep has begun."""
    from offrl.run.config import config_keys, parse_config

    for run in runs:
        module = algorithm_module(run.algorithm)
        known = config_keys(module.Config)
        unknown = sorted(set(run.overrides) - known)
        if unknown:
            raise ValueError(f"{run.name}: {run.algorithm} has no setting {', '.join(unknown)} (its settings: "
                             f"{', '.join(sorted(known))}).")
        parse_config(module.Config, run.algorithm, run.argv(root))


def run_budget(run: SweepRun, root: Path) -> tuple[int, int]:
    """(num_updates, eval_every) of a run's resolved config."""
    from offrl.run.config import parse_config

    config = parse_config(algorithm_module(run.algorithm).Config, run.algorithm, run.argv(root))
    return config.num_updates, config.eval_every


def missing_datasets(spec: SweepSpec) -> list[str]:
    from offrl.data import local_dataset_ids

    local = set(local_dataset_ids())
    return [dataset for dataset in spec.datasets if dataset not in local]


def is_finished(run: SweepRun, root: Path) -> bool:
    return (run.run_dir(root) / RESULT).is_file()


def on_other_data(runs: list[SweepRun], root: Path) -> list[SweepRun]:
    """The runs begun on other data than the local dataset of their id holds now (it was made
    again since): neither resuming nor keeping them would give the sweep one dataset."""
    return [run for run in runs if trained_on_other_data(run.run_dir(root))]


def run_one(run: SweepRun, root: Path) -> dict:
    """Train one run (resuming it if it was cut off: `resumed_from` says from which update)
    and write its result.json. A run that
    diverges is a result too (its `diverged` says what diverged), so the sweep goes on and a
    rerun does not resume it into the same divergence."""
    from offrl.run import checkpoint
    from offrl.run.train import train_by_name

    run_dir = run.run_dir(root)
    resumed_from = checkpoint.latest_step(run_dir)
    if resumed_from is not None:
        argv = ["--resume", str(run_dir)]
    else:
        clear_unresumable(run_dir)
        argv = run.argv(root)
    try:
        final_eval = train_by_name(run.algorithm, argv).final_eval
    except TrainingDiverged:
        final_eval = {}
    return write_result(run, root, final_eval, resumed_from=resumed_from)


def write_result(run: SweepRun, root: Path, final_eval: dict, **outcome) -> dict:
    """A run's result.json (what marks it finished for the sweep): the run, its last
    evaluation, its divergence if any, and how it ended (`outcome`)."""
    run_dir = run.run_dir(root)
    summary = {"run": run.name, "algorithm": run.algorithm, "dataset": run.dataset, "seeds": list(run.seeds),
               "overrides": run.overrides, "final_eval": {k: np.asarray(v).tolist() for k, v in final_eval.items()},
               "diverged": divergence(run_dir), **outcome}
    (run_dir / RESULT).write_text(json.dumps(summary, indent=1))
    return summary


def cpu_shares(workers: int) -> list[list[int]] | None:
    """Disjoint sets of this process's CPUs, one per local worker, or None where workers
    cannot be pinned (no `sched_setaffinity`, or more workers than CPUs).

    XLA:CPU sizes its thread pool to the CPUs a process may use, so unpinned workers each
    spread every matmul over all the cores and contend for them (docs/sweeps.md measures
    what pinning gains)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if workers > len(cpus):
        return None
    return [[int(cpu) for cpu in share] for share in np.array_split(cpus, workers)]


def _pin_worker(shares: multiprocessing.Queue) -> None:
    """Pool initializer: the worker takes one share of the CPUs before jax starts its backend."""
    os.sched_setaffinity(0, shares.get())


def _run_or_failure(run: SweepRun, root: Path, run_fn: Callable[[SweepRun, Path], dict]) -> dict:
    try:
        return run_fn(run, root)
    except Exception as error:  # a stop (KeyboardInterrupt, StopRequested) is no run's failure: it ends the sweep
        traceback.print_exc()
        return failure(run, error)


def _run_in_worker(run: SweepRun, root: str, run_fn: Callable[[SweepRun, Path], dict]) -> dict:
    return _run_or_failure(run, Path(root), run_fn)


def failure(run: SweepRun, error: BaseException, log: Path | None = None) -> dict:
    """The record of a run that ended in an error, in place of its result: its name, the
    error in one line and, where there is one, the log that holds its traceback."""
    message = str(error).strip().splitlines()
    return {"run": run.name, "failed": f"{type(error).__name__}: {message[0] if message else ''}",
            "log": str(log) if log else None}


def run_local(runs: list[SweepRun], root: Path, workers: int,
              run_fn: Callable[[SweepRun, Path], dict] = run_one) -> list[dict]:
    """Independent runs in up to `workers` processes (spawned: jax does not survive fork),
    each pinned to its own share of the CPUs where it can be. A run that raises gives a
    `failure` record (its traceback printed) while the others go on; a stop (Ctrl-C,
    SIGTERM) stops them all. Returns one dict per run, in order."""
    workers = min(workers, len(runs))
    if workers <= 1:
        return [_run_or_failure(run, root, run_fn) for run in runs]
    context = multiprocessing.get_context("spawn")
    shares = cpu_shares(workers)
    pinning = {}
    if shares is not None:
        queue = context.Queue()
        for share in shares:
            queue.put(share)
        pinning = {"initializer": _pin_worker, "initargs": (queue,)}
    with ProcessPoolExecutor(workers, mp_context=context, **pinning) as pool, forwarding_sigterm(pool) as forwarded:
        try:
            return list(pool.map(_run_in_worker, runs, [str(root)] * len(runs), [run_fn] * len(runs)))
        except BrokenProcessPool:  # a worker between runs has no handler and ends at once: stopped as asked
            if forwarded:
                raise StopRequested("SIGTERM: the sweep's workers stopped", signal.SIGTERM) from None
            raise


@contextlib.contextmanager
def forwarding_sigterm(pool: ProcessPoolExecutor):
    """A SIGTERM to the sweep's driver (`kill PID`, a scheduler) reaches its workers, whose
    runs then checkpoint their current chunk and stop (offrl.run.directory.stopping_on_signals);
    before, the driver died and its workers trained on, orphaned, to their runs' ends.
    Yields a list that holds the signal once one was forwarded."""
    forwarded: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield forwarded
        return

    def forward(signum, frame):
        forwarded.append(signum)
        for process in list(pool._processes.values()):  # the executor's worker processes
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield forwarded
    finally:
        signal.signal(signal.SIGTERM, previous)


def summary_lines(results: list[dict]) -> list[str]:
    """What the end of a sweep prints: the runs resumed, stopped early, diverged and failed."""
    lines = []
    for result in results:
        if result.get("failed"):
            lines.append(f"[red]failed[/] {result['run']}: {result['failed']}"
                         + (f" (log: {result['log']})" if result["log"] else ""))
        elif result.get("stopped_early"):
            lines.append(f"stopped early {result['run']}: {result['stopped_early']}")
        elif result.get("diverged"):
            lines.append(f"diverged {result['run']}: {result['diverged']}")
        if result.get("resumed_from"):
            lines.append(f"resumed {result['run']} from update {result['resumed_from']:,}")
    return lines


def wandb_sweep_yaml(spec: SweepSpec, algorithm: str) -> dict:
    """An equivalent W&B sweep (one per algorithm: the program differs) for wandb agents."""
    parameters: dict[str, Any] = {"dataset": {"values": spec.datasets}, "seeds": {"values": [str(s) for s in spec.seeds]},
                                  "wandb_group": {"value": spec.name}}
    parameters.update({key: {"value": value} for key, value in spec.base.items()})
    parameters.update({key: {"values": values} for key, values in spec.grid.items()})
    for key, axis in spec.random.get("axes", {}).items():
        (kind, values), = axis.items()
        parameters[key] = ({"values": values} if kind == "choice" else
                           {"distribution": "uniform" if kind == "uniform" else "log_uniform_values",
                            "min": values[0], "max": values[1]})
    return {"name": f"{spec.name}-{algorithm}", "program": f"algorithms/{algorithm}.py",
            "method": "random" if spec.random else "grid", "project": "offrl", "parameters": parameters,
            "command": ["${env}", "${interpreter}", "${program}", "${args}"]}
