"""Fault injection: training, checkpoint writing and dataset conversion killed with SIGKILL
(or stopped by SIGTERM) at chosen points, then resumed or rerun; and two processes at once.

Each fault happens in a child process at a point its code reaches, never after a delay,
so the outcome does not depend on how loaded the machine is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_same_checkpoint, assert_same_metrics, synthetic_flat, write_d4rl_hdf5

from offrl.data import convert, load_dataset, local_dataset_ids
from offrl.data.scripted import make_pendulum_dataset
from offrl.data.store import dataset_path, writing
from offrl.run import checkpoint
from offrl.run.algorithms import algorithm_module
from offrl.run.config import parse_config
from offrl.run.directory import run_directory
from offrl.run.logging import read_metrics
from offrl.run.train import train

REPO = Path(__file__).resolve().parents[1]
DATASET = "offrl/pendulum/test-v0"
td3_bc = algorithm_module("td3_bc")


def _argv(run_dir: Path) -> list[str]:
    return ["--dataset", DATASET, "--num_updates", "400", "--log_every", "100", "--eval_every", "200",
            "--eval_episodes", "2", "--checkpoint_every", "200", "--wandb", "disabled", "--run_dir", str(run_dir)]


def _child(code: str, *argv: str) -> subprocess.CompletedProcess:
    """Run `code` in a new interpreter (with this test's Minari store in its environment)."""
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=600,
                          cwd=REPO)


# Each patch kills the child at one point of a 400-update run that checkpoints at 200 and 400.
KILL_POINTS = {
    # after logging update 300: metrics hold a row the checkpoint at 200 does not cover
    "after a logged chunk": """
real = RunLogger.log
def log(self, step, *args):
    real(self, step, *args)
    if step == 300:
        die()
RunLogger.log = log
""",
    # a row cut off mid-append (disk full, a kill during the write)
    "mid metrics line": """
real = RunLogger.log
def log(self, step, *args):
    if step == 300:
        with open(self.metrics_path, "a") as handle:
            handle.write('{"step": 300, "seed": 0, "crit')
        die()
    real(self, step, *args)
RunLogger.log = log
""",
    # half of the checkpoint at 400 written to its temporary file
    "mid checkpoint write": """
real = checkpoint.write_atomically
def write(path, data):
    if path.name == "step_000000400.msgpack":
        path.with_suffix(".tmp").write_bytes(data[: len(data) // 2])
        die()
    real(path, data)
checkpoint.write_atomically = write
""",
    # the checkpoint at 400 in place, latest.json still naming the one at 200
    "before latest.json": """
real = checkpoint.write_atomically
def write(path, data):
    real(path, data)
    if path.name == "step_000000400.msgpack":
        die()
checkpoint.write_atomically = write
""",
}

TRAIN_AND_DIE = """
import os, signal, sys
from offrl.run import checkpoint
from offrl.run.logging import RunLogger
from offrl.run.algorithms import algorithm_module
from offrl.run.train import main
def die():
    os.kill(os.getpid(), signal.SIGKILL)
{patch}
module = algorithm_module("td3_bc")
main(module.make, module.Config, "td3_bc", sys.argv[1:])
"""


@pytest.fixture
def pendulum(minari_store):
    make_pendulum_dataset(DATASET, num_steps=10_000)
    return DATASET


@pytest.mark.slow
def test_training_killed_anywhere_resumes_to_the_uninterrupted_result(pendulum, tmp_path):
    full = train(td3_bc.make, parse_config(td3_bc.Config, "td3_bc", _argv(tmp_path / "full")), "td3_bc",
                 show_progress=False).run_dir
    for name, patch in KILL_POINTS.items():
        run_dir = tmp_path / name.replace(" ", "-")
        killed = _child(TRAIN_AND_DIE.format(patch=patch), *_argv(run_dir))
        assert killed.returncode == -signal.SIGKILL, (name, killed.stderr[-2000:])
        # the kernel released the dead process's lock on the run directory: it resumes at once
        train(td3_bc.make, parse_config(td3_bc.Config, "td3_bc", ["--resume", str(run_dir)]), "td3_bc",
              show_progress=False)
        assert checkpoint.latest_step(run_dir) == 400, name
        assert_same_checkpoint(checkpoint.latest(full), checkpoint.latest(run_dir))
        assert_same_metrics(read_metrics(full), read_metrics(run_dir))


# signals itself once the dataset is written in its staging directory, before it moves into place
CONVERT_AND_DIE = """
import os, signal, sys
from offrl.tools.cli import main
from offrl.data import store
real = store._move_into_place
def move_into_place(*args):
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    real(*args)
store._move_into_place = move_into_place
sys.exit(main(["datasets", "convert", "d4rl", *sys.argv[2:]]))
"""


def _staging(store: Path) -> list[str]:
    return [path.name for path in store.glob(".offrl-staging-*")]


def test_a_killed_conversion_leaves_no_dataset_and_the_next_write_cleans_up(minari_store, tmp_path):
    source = write_d4rl_hdf5(tmp_path / "hopper-medium-v2.hdf5", synthetic_flat([30, 40, 25], ["terminal", "timeout",
                                                                                                None]))
    expected = convert("d4rl", source, "test/uninterrupted/copy-v0")
    dataset_id = "test/killed/copy-v0"
    # SIGTERM cleans up after itself and exits as that signal asks
    stopped = _child(CONVERT_AND_DIE, "SIGTERM", str(source), "--id", dataset_id)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-2000:]
    assert not dataset_path(dataset_id).exists() and _staging(minari_store) == []
    # SIGKILL cannot: its staging directory stays, hidden from Minari, until the next write of the id
    killed = _child(CONVERT_AND_DIE, "SIGKILL", str(source), "--id", dataset_id)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not dataset_path(dataset_id).exists() and len(_staging(minari_store)) == 1
    assert dataset_id not in local_dataset_ids()
    convert("d4rl", source, dataset_id)
    assert _staging(minari_store) == []
    assert load_dataset(dataset_id).fingerprint() == load_dataset(expected.dataset_id).fingerprint()


def test_a_second_writer_of_a_dataset_is_refused_in_one_line(minari_store, tmp_path):
    source = write_d4rl_hdf5(tmp_path / "hopper-medium-v2.hdf5", synthetic_flat([30, 40], ["terminal", "timeout"]))
    with writing("test/busy/copy-v0"):  # held here, as by a conversion still running
        second = subprocess.run([sys.executable, "-m", "offrl.tools.cli", "datasets", "convert", "d4rl", str(source),
                                 "--id", "test/busy/copy-v0"], capture_output=True, text=True, timeout=300)
    assert second.returncode == 2, second.stderr[-2000:]
    line, = second.stderr.strip().splitlines()
    assert f"is being written by process {os.getpid()}" in line and "another --id" in line
    assert "test/busy/copy-v0" not in local_dataset_ids()


def test_a_run_directory_has_one_writer_and_one_run(pendulum, tmp_path):
    run_dir = tmp_path / "run"
    with run_directory(run_dir, resume=False):  # held here, as by a run still training
        second = subprocess.run([sys.executable, str(REPO / "algorithms" / "td3_bc.py"), *_argv(run_dir)],
                                capture_output=True, text=True, timeout=600)
    assert second.returncode == 2, second.stderr[-2000:]
    line, = second.stderr.strip().splitlines()
    assert f"is in use by process {os.getpid()}" in line
    train(td3_bc.make, parse_config(td3_bc.Config, "td3_bc", _argv(run_dir)), "td3_bc", show_progress=False)
    # a new run (here of other seeds) where one has trained would serve the old run's checkpoints as its own
    with pytest.raises(FileExistsError, match="already holds a run: continue it with --resume .*another --run_dir"):
        train(td3_bc.make, parse_config(td3_bc.Config, "td3_bc", [*_argv(run_dir), "--seeds", "7"]), "td3_bc",
              show_progress=False)
    assert [row["seed"] for row in read_metrics(run_dir)] == [0] * 4 and checkpoint.latest_step(run_dir) == 400
    assert np.isfinite([row["critic_loss"] for row in read_metrics(run_dir)]).all()
