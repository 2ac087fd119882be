"""Sweeps on a Ray cluster: `offrl sweep SPEC --ray ADDRESS [--scheduler asha|median]`.

What a node needs is Python with offrl's pinned dependencies; the rest travels with the sweep:
- the code: offrl as an install lays it out (its algorithms and behavior policies inside
  the package), shipped in the job's `runtime_env` as a py_module, so a node imports the
  driver's offrl, not whatever it may hold;
- the settings: `XLA_PYTHON_CLIENT_PREALLOCATE=false` (runs share a GPU's memory), the
  driver's Minari store as `MINARI_DATASETS_PATH`, the model-based runs' dynamics ensembles
  under `--root`, and the driver's wandb, XLA and OFFRL_ variables.

Run directories, checkpoints and the Minari store must be on storage every node mounts at
the same path (NFS, a cluster file system): `--root` and the store are absolute paths, and
before any run starts one probe per node checks that it sees a file the driver wrote under
`--root` and every dataset the sweep trains on. A run whose node dies is retried, on any
node, and resumes from its last checkpoint there.

The plain runner submits one task per (packed) run, declaring the CPUs and GPUs it needs,
and collects the runs as they finish: a run that raises is recorded with its error while
the others go on. Each run's output (both streams, every attempt) goes to
`<root>/<sweep>/logs/<run>.log`. With `--scheduler`, Ray Tune runs the same runs as trials
(one trial per packed run) and ASHA or the median stopping rule stops the weaker ones early
from the evaluations the runs log; a stopped run's result.json says so, so a rerun of the
sweep keeps the decision.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from offrl.tools.sweep import RESULT, SweepRun, failure, run_budget, run_one, write_result

# the driver's settings that runs read, shipped to every node where the driver has them set
# (with every OFFRL_ variable)
FORWARDED_ENV = ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_BASE_URL", "XLA_FLAGS",
                 "JAX_PLATFORMS")
SCHEDULERS = ("asha", "median")
PROBE_TIMEOUT_S = 600  # a node's first task installs the runtime_env (unpacks offrl) before it answers


class SharedStorageError(FileNotFoundError):
    """A node of the cluster does not see the sweep's --root or datasets (a user error: one line, exit status 2)."""


def offrl_package(staging: Path) -> Path:
    """offrl laid out as an install lays it out, copied to `staging/offrl`: a checkout's
    editable install keeps offrl.algorithms and offrl.policies outside the package folder
    (algorithms/, datasets/policies), which a py_module would leave behind."""
    import offrl
    from offrl.resources import installed_folder, require_installed

    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    package = staging / "offrl"
    shutil.copytree(Path(offrl.__file__).parent, package, ignore=ignore)
    for part in ("algorithms", "policies"):
        if not (package / part).is_dir():
            shutil.copytree(require_installed(installed_folder(f"offrl.{part}")), package / part, ignore=ignore)
    return package


def runtime_env(package: Path, root: Path) -> dict[str, Any]:
    """The job's runtime_env: offrl's code and the settings its runs need on every node. The
    dynamics ensembles of model-based runs are kept under `root` unless OFFRL_DYNAMICS_CACHE
    says where, so that every node finds the ones trained on another."""
    from offrl.data.store import datasets_root

    env_vars = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "MINARI_DATASETS_PATH": str(datasets_root().resolve()),
                "OFFRL_DYNAMICS_CACHE": str(root / "dynamics")}
    env_vars |= {name: value for name, value in os.environ.items() if name in FORWARDED_ENV or name.startswith("OFFRL_")}
    return {"py_modules": [str(package)], "env_vars": env_vars}


@contextlib.contextmanager
def connected(address: str | None, root: Path) -> Iterator[None]:
    """Connected to the Ray cluster at `address` (None or "local": one started on this
    machine) for the block, with offrl's code and settings as the job's runtime_env; a
    caller's own connection is used as it is (its runtime_env is the caller's to set)."""
    import ray

    if ray.is_initialized():
        yield
        return
    with tempfile.TemporaryDirectory(prefix="offrl-ray-") as staging:
        try:
            ray.init(address=None if address == "local" else address, include_dashboard=False,
                     runtime_env=runtime_env(offrl_package(Path(staging)), root))
        except ConnectionError as error:
            raise ConnectionError(f"--ray {address}: no Ray cluster answers there ({error}). Start one (`ray start "
                                  "--head` on its head node) and pass its address, or use `--ray local` for a "
                                  "cluster of this machine, or leave --ray out for local workers.") from None
        try:
            yield
        finally:
            ray.shutdown()


def _probe(marker: str, token: str, datasets: list[str]) -> dict[str, Any]:
    """What one node sees: the driver's marker under --root, and which datasets it lacks."""
    from offrl.data import local_dataset_ids

    try:
        sees_root = Path(marker).read_text() == token
    except OSError:
        sees_root = False
    local = set(local_dataset_ids())
    return {"host": socket.gethostname(), "sees_root": sees_root,
            "missing": [dataset for dataset in datasets if dataset not in local]}


def working_nodes() -> list[dict[str, Any]]:
    """The live nodes that can run a sweep's tasks (a head started with no CPUs runs none)."""
    import ray

    return [node for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU", 0) > 0]


def check_shared_storage(root: Path, datasets: list[str]) -> list[dict[str, Any]]:
    """Refuse, before any run starts, a cluster on which some node cannot see `root` (the run
    directories: a run retried there would start over) or a dataset of the sweep. Returns
    each node's answer."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    root.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    marker = root / f".offrl-shared-check-{token}"
    marker.write_text(token)
    probe = ray.remote(num_cpus=0)(_probe)
    try:
        nodes = working_nodes()
        pending = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                   .remote(str(marker), token, datasets) for node in nodes]
        try:
            answers = ray.get(pending, timeout=PROBE_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise SharedStorageError(f"Some of the cluster's {len(nodes)} nodes did not answer the storage check within "
                                     f"{PROBE_TIMEOUT_S} s (`ray status` shows them).") from None
    finally:
        marker.unlink(missing_ok=True)
    problems = []
    for node, answer in zip(nodes, answers):
        where = f"node {node['NodeManagerAddress']} ({answer['host']})"
        if not answer["sees_root"]:
            problems.append(f"{where} does not see --root {root}")
        if answer["missing"]:
            problems.append(f"{where} lacks {', '.join(answer['missing'])} in its Minari store")
    if problems:
        raise SharedStorageError(
            f"{'; '.join(problems)}. Every node must mount the sweep's --root and the driver's Minari store "
            "(MINARI_DATASETS_PATH) at the same paths, e.g. on NFS, so that a run retried on another node resumes "
            "from its checkpoint and trains on the same data.")
    return answers


def run_log(run: SweepRun, root: Path) -> Path:
    return root / run.sweep / "logs" / f"{run.name}.log"


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    """This process's stdout and stderr, its native libraries' included, appended to `log`
    for the block, under a line naming the attempt; an exception's traceback goes there too.
    Ray reuses a worker process for many tasks, so the streams are restored after."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a") as handle:
        handle.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} on {socket.gethostname()}, process {os.getpid()}\n")
        handle.flush()
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        try:
            yield
        except BaseException:
            traceback.print_exc()
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for descriptor in saved:
                os.close(descriptor)


def _logged_run(run: SweepRun, root: Path, run_fn: Callable[[SweepRun, Path], dict]) -> dict:
    with output_to(run_log(run, root)):
        return run_fn(run, root)


def ray_failure(run: SweepRun, root: Path, error: BaseException) -> dict:
    """A run's failure record from Ray's error: the run's own exception where it raised one."""
    import ray

    cause = error.cause if isinstance(error, ray.exceptions.RayTaskError) and error.cause is not None else error
    return failure(run, cause, run_log(run, root))


def run_ray(runs: list[SweepRun], root: Path, address: str | None, cpus_per_run: float = 1.0,
            gpus_per_run: float = 0.0, max_retries: int = 3, show_progress: bool = True,
            run_fn: Callable[[SweepRun, Path], dict] = run_one) -> list[dict]:
    """Every run as one Ray task with the resources it declares, after the storage check.
    Results are collected as tasks finish; a task whose worker or node dies is retried up to
    `max_retries` times (the run resumes from its last checkpoint); a run that raises gives
    a record with `failed` and `log` instead of a result. Returns one dict per run, in order."""
    import ray
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    root = root.resolve()  # a relative path means another folder on each node
    with connected(address, root):
        check_shared_storage(root, sorted({run.dataset for run in runs}))
        task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=max_retries)(_logged_run)
        pending = {task.remote(run, root, run_fn): index for index, run in enumerate(runs)}
        results: list[dict] = [{} for _ in runs]
        progress = Progress(TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("runs"),
                            TimeElapsedColumn(), disable=not show_progress)
        with progress:
            bar = progress.add_task("runs", total=len(runs))
            try:
                while pending:
                    done, _ = ray.wait(list(pending), num_returns=1)
                    index = pending.pop(done[0])
                    try:
                        results[index] = ray.get(done[0])
                    except ray.exceptions.RayError as error:  # the run raised, or its retries ran out
                        results[index] = ray_failure(runs[index], root, error)
                    progress.advance(bar)
            except KeyboardInterrupt:  # the runs checkpoint their current chunk and stop, as on Ctrl-C
                for ref in pending:
                    ray.cancel(ref)
                raise
    return results


# what a trial reports as its score: the first of these its evaluations hold
SCORES = ("eval/normalized_score", "eval/return", "ope/fqe_normalized_score", "ope/fqe_return")


def _trial(config: dict, runs: dict[str, SweepRun], root: Path) -> None:
    """One Tune trial: one packed run, its evaluations reported as they are logged, as the
    mean over its members (seeds and packed points) of its score (SCORES). The last one is
    reported once the run has checkpointed and written its result.json: the scheduler ends
    a trial that reaches its budget at once."""
    from ray import tune

    from offrl.run.logging import listening_to_evaluations

    run = runs[config["run"]]
    budget, _ = run_budget(run, root)
    final = {}

    def report(step: int, metrics: dict[str, np.ndarray]) -> None:
        key = next(key for key in SCORES if key in metrics)
        scores = {"step": step, "score": float(np.mean(metrics[key])), "scored_by": key}
        if step < budget:
            tune.report(scores)
        else:
            final.update(scores)

    with listening_to_evaluations(report):
        _logged_run(run, root, run_one)
    if final:
        tune.report(final)


def scheduler_for(name: str, grace_updates: int, max_updates: int):
    """ASHA or the median stopping rule over the runs' updates ("step"), maximizing the score
    their evaluations report."""
    from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule

    if name not in SCHEDULERS:
        raise ValueError(f"--scheduler {name}: use {' or '.join(SCHEDULERS)}.")
    if name == "asha":
        return ASHAScheduler(time_attr="step", metric="score", mode="max", max_t=max_updates,
                             grace_period=grace_updates, reduction_factor=2)
    return MedianStoppingRule(time_attr="step", metric="score", mode="max", grace_period=grace_updates,
                              min_samples_required=2)


def run_tune(runs: list[SweepRun], root: Path, address: str | None, scheduler: str, grace_updates: int,
             max_updates: int, cpus_per_run: float = 1.0,
             gpus_per_run: float = 0.0, max_failures: int = 3, max_concurrent: int = 0) -> list[dict]:
    """The runs as Ray Tune trials under `scheduler` (asha or median): each trial trains one
    packed run in its run directory and reports its score at every evaluation; the scheduler stops the weaker trials after `grace_updates` updates. A trial
    whose worker dies is restarted (`max_failures` times) and resumes from its checkpoint.
    A stopped run's result.json records `stopped_early`; a failed trial gives a `failed`
    record. Returns one dict per run, in order."""
    from ray import tune

    root = root.resolve()
    by_name = {run.name: run for run in runs}
    with connected(address, root):
        check_shared_storage(root, sorted({run.dataset for run in runs}))
        trainable = tune.with_resources(tune.with_parameters(_trial, runs=by_name, root=root),
                                        {"cpu": cpus_per_run, "gpu": gpus_per_run})
        tuner = tune.Tuner(
            trainable, param_space={"run": tune.grid_search(list(by_name))},
            tune_config=tune.TuneConfig(scheduler=scheduler_for(scheduler, grace_updates, max_updates),
                                        max_concurrent_trials=max_concurrent or None),
            run_config=tune.RunConfig(name=runs[0].sweep, storage_path=str(root / runs[0].sweep / "tune"),
                                      failure_config=tune.FailureConfig(max_failures=max_failures), verbose=0))
        grid = tuner.fit()
    outcomes = {result.config["run"]: result for result in grid}
    return [tune_outcome(run, root, outcomes.get(run.name), scheduler) for run in runs]


def tune_outcome(run: SweepRun, root: Path, result, scheduler: str) -> dict:
    """A trial's record: the run's own result.json where it trained to its end; else, for a
    trial the scheduler stopped, a result.json saying so (written now, so that the sweep
    run again keeps the decision); else a `failed` record."""
    path = run.run_dir(root) / RESULT
    if path.is_file():
        return json.loads(path.read_text())
    if result is None or result.error is not None:
        return ray_failure(run, root, result.error if result is not None else RuntimeError("the trial never ran"))
    step = (result.metrics or {}).get("step")
    return write_result(run, root, {}, stopped_early=f"{scheduler} at update {step:,}" if step else scheduler,
                        score=(result.metrics or {}).get("score"))
