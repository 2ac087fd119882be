"""Run logging: a live console progress bar, metrics.jsonl in the run directory, and wandb.

wandb gets one run per seed, grouped by algorithm and dataset, tagged with algorithm,
dataset and seed, so dashboards can filter and aggregate. Without an API key it runs
offline into <run_dir>/wandb; `wandb sync <run_dir>/wandb/offline-run-*` uploads later.
"""

from __future__ import annotations

import contextlib
import json
import netrc
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

METRICS_FILE = "metrics.jsonl"


EvaluationListener = Callable[[int, dict[str, np.ndarray]], None]
_evaluation_listeners: list[EvaluationListener] = []


@contextlib.contextmanager
def listening_to_evaluations(listener: EvaluationListener) -> Iterator[None]:
    """While the block runs, `listener(step, metrics)` is called after every evaluation that a
    run of this process logs (metrics: name -> per-member values, with the evaluation's eval/
    and ope/ keys). Ray Tune's schedulers read a run's evaluations through it; an exception
    it raises (a scheduler stopping the trial) ends the run there, after its rows are written."""
    _evaluation_listeners.append(listener)
    try:
        yield
    finally:
        _evaluation_listeners.remove(listener)


def new_run_id() -> str:
    """A run's identity (run.json's run_id, its wandb ids): random, so that runs of one name
    in two sweeps or on two machines never resume each other's wandb runs."""
    return uuid.uuid4().hex[:12]


def resolve_wandb_mode(mode: str) -> str:
    """`auto`: wandb's own WANDB_MODE when set (e.g. disabled on a machine without wandb or
    without network), else online with an API key and offline without one. `online` without
    a key fails here, before training, rather than in wandb's login once the run has begun."""
    if mode == "online" and not wandb_api_key_set():
        raise ValueError("--wandb online needs a W&B API key (`wandb login`, or WANDB_API_KEY); without one, "
                         "train with --wandb offline and upload later with `wandb sync <run_dir>/wandb/offline-run-*`.")
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE") in ("online", "offline", "disabled"):
        return os.environ["WANDB_MODE"]
    return "online" if wandb_api_key_set() else "offline"


def wandb_api_key_set() -> bool:
    """An API key in the environment or in ~/.netrc, where `wandb login` writes it."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return bool(netrc.netrc().authenticators("api.wandb.ai"))
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


class RunLogger:
    def __init__(self, run_dir: Path, config: dict[str, Any], algo: str, seeds: list[int],
                 total_updates: int, start_update: int = 0, wandb_mode: str = "auto",
                 wandb_project: str = "offrl", show_progress: bool = True,
                 members: list[dict[str, Any]] | None = None, run_id: str = ""):
        """One metrics row per seed and step; with packed hyperparameters, `members` holds
        each trained member's values (logged as hp/<key>), `seeds` its seed. `run_id` (run.json's)
        names the run's wandb runs; without one they get a new identity."""
        self.run_dir = Path(run_dir)
        self.seeds = seeds
        self.members = members or [{} for _ in seeds]
        self.metrics_path = self.run_dir / METRICS_FILE
        if start_update and self.metrics_path.is_file():
            # a killed run logged past its last checkpoint; the resumed run logs those steps again
            kept = [row for row in read_jsonl(self.metrics_path) if row["step"] <= start_update]
            self.metrics_path.write_text("".join(json.dumps(row) + "\n" for row in kept))
        self.last_time = time.perf_counter()  # updates_per_s counts wall time from here
        self.wandb_mode = resolve_wandb_mode(wandb_mode)
        self.wandb_runs = []
        if self.wandb_mode != "disabled":
            import wandb

            if self.wandb_mode == "offline":  # else wandb's process-wide telemetry probes its server (a DNS query)
                wandb.setup(settings=wandb.Settings(mode="offline"))
            dataset = config.get("dataset") or config.get("env", "")
            group = config.get("wandb_group") or f"{algo}/{dataset}"
            for index, (seed, member) in enumerate(zip(seeds, self.members)):
                label = "".join(f"-{key}={value}" for key, value in member.items())
                self.wandb_runs.append(wandb.init(
                    project=wandb_project, dir=str(self.run_dir), mode=self.wandb_mode,
                    group=group, name=f"{algo}-{dataset.replace('/', '_')}{label}-s{seed}",
                    tags=[algo, dataset, f"seed{seed}"] + ([group] if config.get("wandb_group") else []),
                    config={**config, **member, "seed": seed},
                    id=f"{run_id or new_run_id()}-m{index}-s{seed}", resume="allow",
                    reinit="create_new",
                ))
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,}"),
            TextColumn("{task.fields[speed]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            TextColumn("{task.fields[last_eval]}"), disable=not show_progress,
        )
        self.task = self.progress.add_task(algo, total=total_updates, completed=start_update,
                                           speed="", last_eval="")
        self.progress.start()

    def log(self, step: int, metrics: dict[str, np.ndarray], updates: int) -> None:
        """metrics: name -> per-seed values. Appends one JSON line per seed. `updates`: what
        each seed trained since the previous row; its rate over the wall time since then
        (evaluations, checkpoints and compilation included) is logged as updates_per_s."""
        now = time.perf_counter()
        updates_per_s, self.last_time = updates / max(now - self.last_time, 1e-9), now
        with open(self.metrics_path, "a") as handle:
            for index, seed in enumerate(self.seeds):
                row = {"step": step, "seed": seed, "updates_per_s": updates_per_s,
                       **{f"hp/{key}": value for key, value in self.members[index].items()}}
                row.update({key: float(np.asarray(value)[index]) for key, value in metrics.items()})
                handle.write(json.dumps(row) + "\n")
                if self.wandb_runs:
                    self.wandb_runs[index].log(row, step=step)
        if any(key.startswith(("eval/", "ope/")) for key in metrics):
            for listener in list(_evaluation_listeners):
                listener(step, metrics)
        fields = {"speed": f"{updates_per_s:,.0f} upd/s"}
        if "eval/normalized_score" in metrics:
            fields["last_eval"] = f"score {np.mean(metrics['eval/normalized_score']):.1f}"
        elif "eval/return" in metrics:
            fields["last_eval"] = f"return {np.mean(metrics['eval/return']):.1f}"
        self.progress.update(self.task, completed=step, **fields)

    def close(self, diverged: str | None = None) -> None:
        """Ends the progress bar and the wandb runs; a run that diverged is marked failed in
        wandb (exit code 1, `diverged` in its summary), so dashboards can filter it out."""
        self.progress.stop()
        for run in self.wandb_runs:
            if diverged:
                run.summary["diverged"] = diverged
            run.finish(exit_code=1 if diverged else 0)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    return read_jsonl(Path(run_dir) / METRICS_FILE)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file offrl appends to. A last line cut off mid-write (a kill
    during an append, a full disk) is dropped with a one-line note: the row it held is
    written again when the run resumes. Damage anywhere else raises."""
    lines = Path(path).read_text().splitlines(keepends=True)
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                print(f"note: {path}: dropped its last line, cut off mid-write ({line[:40].strip()!r}...).",
                      file=sys.stderr)
                continue
            raise ValueError(f"{path} line {number} is not JSON ({line[:60].strip()!r}): the file is damaged; "
                             "restore it or remove the run.") from None
    return rows


def seed_curves(rows: list[dict[str, Any]], key: str) -> dict[int, list[tuple[int, float]]]:
    """(step, value) of `key` for each seed, from metrics rows (read_metrics)."""
    curves: dict[int, list[tuple[int, float]]] = {}
    for row in rows:
        if key in row:
            curves.setdefault(row["seed"], []).append((row["step"], row[key]))
    return dict(sorted(curves.items()))
