"""What every training loop shares: run directories and their records, results, stopping
on signals, and the divergence check. Free of jax, so that commands which only read runs
start fast."""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import sys
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from offrl.data import OfflineDataset, local_fingerprint
from offrl.locks import exclusive
from offrl.run import checkpoint
from offrl.run.config import read_yaml, save_config
from offrl.run.errors import StopRequested, TrainingDiverged
from offrl.run.logging import METRICS_FILE, new_run_id, read_metrics

DIVERGED = "diverged.txt"  # what diverged and by which update, left in the run directory by check_divergence
LOCK = ".lock"  # held by the process that trains in the run directory


@dataclass
class RunResult:
    run_dir: Path
    final_step: int
    final_eval: dict[str, np.ndarray]  # per-seed eval metrics of the last evaluation
    dataset: OfflineDataset


def default_run_dir(root: str | Path, algo: str, target: str, seeds: str) -> Path:
    """A new directory ROOT/<algo>/<dataset id or env id>/<time>-s<seeds> (absolute), made
    here; runs started in the same second get -2, -3, ... appended, never one directory
    between them."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    parent = Path(root).resolve() / algo / target
    parent.mkdir(parents=True, exist_ok=True)
    name = f"{stamp}-s{seeds.replace(',', '_')}"
    for attempt in itertools.count(1):
        candidate = parent / (name if attempt == 1 else f"{name}-{attempt}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue


def read_run(run_dir: Path) -> dict:
    """A run's run.json: its algorithm, data, dimensions and seeds."""
    if not (run_dir / "run.json").is_file():
        raise FileNotFoundError(f"{run_dir} holds no run (no run.json): pass the `run directory:` a training run "
                                "printed, e.g. runs/<algo>/<dataset id>/<time>.")
    return json.loads((run_dir / "run.json").read_text())


def resume_step(run_dir: Path) -> int:
    """The step of the run's latest checkpoint, where a resumed run goes on."""
    step = checkpoint.latest_step(run_dir)
    if step is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint to resume from: start a new run in another --run_dir.")
    return step


def record_run(run_dir: Path, config, facts: dict) -> str:
    """Write the run's config.yaml (on resume too: it may add steps) and run.json (`facts`
    and the run's id, which a resumed run keeps); returns the id."""
    save_config(config, run_dir / "config.yaml")
    run_id = (read_run(run_dir).get("run_id") if config.resume else None) or new_run_id()
    (run_dir / "run.json").write_text(json.dumps({**facts, "run_id": run_id}))
    return run_id


def holds_run(run_dir: Path) -> bool:
    """Whether a run has trained in `run_dir`: it logged metrics, wrote a checkpoint or
    diverged. What a run killed before its first log leaves (its config, run.json) holds
    nothing to lose."""
    logged = any((run_dir / name).is_file() for name in (METRICS_FILE, DIVERGED))
    return logged or checkpoint.latest(run_dir) is not None


class RunInUseError(FileExistsError):
    """Another process trains in the run directory."""


def _in_use(run_dir: Path) -> Callable[[str], Exception]:
    return lambda holder: RunInUseError(f"{run_dir} is in use by {holder}, which trains there: wait for it to end "
                                        "(or stop it), or pass another --run_dir.")


@contextlib.contextmanager
def run_directory(run_dir: Path, resume: bool) -> Iterator[Path]:
    """Hold `run_dir` for one run: made if need be, and locked for the block, so no second
    process writes there (the kernel releases the lock however this one ends). A new run
    (not `resume`) is refused where a run has trained, since mixing the two would serve one
    run's checkpoints and metrics as the other's. A run resumed here (with other settings) is
    no longer the one that diverged, so an old divergence record goes; check_divergence
    writes it again if need be."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(run_dir / LOCK, _in_use(run_dir)):
        if not resume and holds_run(run_dir):
            raise FileExistsError(f"{run_dir} already holds a run: continue it with --resume {run_dir}, or start a "
                                  "new one in another --run_dir (leave --run_dir out for a new timestamped one).")
        (run_dir / DIVERGED).unlink(missing_ok=True)
        yield run_dir


def clear_unresumable(run_dir: Path) -> None:
    """For sweeps, which own their run directories: a run there cut off before its first
    checkpoint has nothing to resume, so its metrics go and the run starts over (a divergence
    record goes too: a sweep's diverged run writes its result.json, so one without was killed
    before that). Refused while another process trains there."""
    with exclusive(run_dir / LOCK, _in_use(run_dir)):
        if checkpoint.latest(run_dir) is None:
            for name in (METRICS_FILE, DIVERGED):
                (run_dir / name).unlink(missing_ok=True)


def divergence(run_dir: Path) -> str | None:
    """What diverged in this run, by which update; None if it did not diverge."""
    record = run_dir / DIVERGED
    return record.read_text() if record.is_file() else None


def recorded_fingerprint(run_dir: Path) -> str | None:
    """The fingerprint of the data the run trained on, as its run.json recorded it (None:
    no run there, or one from before run.json had it)."""
    record = run_dir / "run.json"
    return json.loads(record.read_text()).get("dataset_fingerprint") if record.is_file() else None


def trained_on_other_data(run_dir: Path) -> bool:
    """Whether the run began on other data than the local dataset of its id holds now (it
    was made again since). False where either is unknown: no run, a run from before run.json
    recorded the fingerprint, an online run, or a dataset that is not local."""
    record = run_dir / "run.json"
    run = json.loads(record.read_text()) if record.is_file() else {}
    if run.get("dataset_fingerprint") is None:
        return False
    return local_fingerprint(run["dataset"]) not in (None, run["dataset_fingerprint"])


def planned_steps(run_dir: Path) -> int:
    """The steps a run was planned for: offline updates plus online steps, or env steps."""
    saved = read_yaml(run_dir / "config.yaml")
    return saved["num_updates"] + saved["online_steps"] if "num_updates" in saved else saved["env_steps"]


def run_status(run_dir: Path, total_steps: int, seeds: str | None = None) -> str:
    """For experiments that reuse their runs: 'finished' (run_dir holds a run of `total_steps`
    steps with these seeds, or with any seeds if None), 'diverged' (it stopped on divergence:
    resuming it would diverge again, since a resumed run repeats the uninterrupted one; see
    `divergence`), 'resumable' (a killed such run with a checkpoint: continue it with
    `--resume run_dir`) or 'new' (no run there). A run of other seeds or another budget
    raises: it must be removed first, since extending it would not equal a run planned for
    the new budget (learning-rate schedules span the planned steps); so does a run on data
    the local dataset no longer holds (`trained_on_other_data`)."""
    logged = (run_dir / "metrics.jsonl").is_file()
    if not logged and divergence(run_dir) is None:
        return "new"
    if trained_on_other_data(run_dir):
        raise FileExistsError(f"{run_dir} began on other data than the local dataset of its id now holds (made "
                              "again since): remove it to train again on the local data.")
    last = max(row["step"] for row in read_metrics(run_dir)) if logged else 0
    saved = read_yaml(run_dir / "config.yaml")
    planned = planned_steps(run_dir)
    if planned == total_steps and seeds in (None, str(saved["seeds"])):
        if divergence(run_dir) is not None:
            return "diverged"
        if last == total_steps:
            return "finished"
        if checkpoint.latest(run_dir) is not None:
            return "resumable"
    raise FileExistsError(f"{run_dir} holds a run of seeds {saved['seeds']} planned for {planned} steps that "
                          f"ended at step {last}, not one of seeds {seeds} and {total_steps} steps: remove it "
                          "to train again with these settings.")


_stop_signals: list[int] = []  # SIGTERM or SIGINT received while a run trains


def _note_stop(signum: int, frame) -> None:
    if signum == signal.SIGINT and _stop_signals:  # Ctrl-C again: stop now, from the last checkpoint
        raise KeyboardInterrupt
    if signum == signal.SIGINT:
        print("\nCtrl-C: stopping once the current chunk of updates is checkpointed; Ctrl-C again stops now, "
              "losing the updates since the last checkpoint.", file=sys.stderr, flush=True)
    _stop_signals.append(signum)


@contextlib.contextmanager
def stopping_on_signals():
    """While training, SIGTERM (a scheduler's preemption, `timeout`, a sweep's deadline) and a
    first Ctrl-C are noted instead of ending the process mid-chunk: the loop checkpoints the
    chunk it is in, then stops (`stop_if_requested`), so nothing trained is lost. A second
    Ctrl-C, or SIGKILL, stops at once. Signal handlers belong to the main thread, so elsewhere
    (a thread of a caller's) the signals keep their handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _note_stop) for signum in (signal.SIGTERM, signal.SIGINT)
                if signal.getsignal(signum) is not signal.SIG_IGN}  # e.g. SIGINT in a shell's background job
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _stop_signals.clear()


def stop_requested() -> bool:
    return bool(_stop_signals)


def stop_if_requested(step: int) -> None:
    """Called after a chunk's checkpoint (which a requested stop makes due)."""
    if _stop_signals:
        signum = _stop_signals[0]
        raise StopRequested(f"{signal.Signals(signum).name}: stopped at step {step:,}, checkpointed", signum)


@contextlib.contextmanager
def closing_run(logger, run_dir: Path):
    """Close the run's logger however training ends (a divergence marks its wandb runs failed);
    after a Ctrl-C or a SIGTERM, say where the run can continue from."""
    interrupted = False
    try:
        with stopping_on_signals():
            yield
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        logger.close(diverged=divergence(run_dir))  # open_run_dir cleared any earlier record
        if interrupted:
            step = checkpoint.latest_step(run_dir)
            print(f"stopped before the first checkpoint of {run_dir}: nothing to resume." if step is None else
                  f"stopped; the checkpoint at step {step:,} remains: --resume {run_dir} continues from it.")


def resume_flag(run_dir: Path, status: str) -> list[str]:
    """The command-line flag that continues a run `run_status` found resumable. A diverged
    run is not trained again: that would repeat its divergence."""
    if status == "diverged":
        raise TrainingDiverged(f"{run_dir}: {divergence(run_dir)}. Remove it to train again with other settings.")
    return ["--resume", str(run_dir)] if status == "resumable" else []


def check_divergence(step: int, finite: np.ndarray, metrics: dict[str, np.ndarray],
                      seeds: list[int], threshold: float, run_dir: Path) -> None:
    problems = [f"seed {seed}: NaN/inf in the training state" for seed, ok in zip(seeds, finite) if not ok]
    for name, values in metrics.items():
        for seed, value in zip(seeds, values):
            if abs(value) > threshold:
                problems.append(f"seed {seed}: |{name}| = {abs(value):.3g} > {threshold:g}")
    if problems:
        what = f"Training diverged by update {step}: " + "; ".join(problems)
        (run_dir / DIVERGED).write_text(what)
        good = checkpoint.latest(run_dir)
        fix = ("no checkpoint was written before it, so lower the learning rates or check the data for outliers, "
               "then start a new run in another --run_dir" if good is None else
               f"lower the learning rates or check the data for outliers; the last good checkpoint is {good} "
               f"(--resume {run_dir} continues from it)")
        raise TrainingDiverged(f"{what}: {fix}.")
