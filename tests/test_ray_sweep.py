"""Sweeps on Ray: a multi-node cluster on this machine (a head without CPUs and two worker
nodes of one CPU each, in their own temp dirs), a worker SIGKILLed mid-run, a run that
raises, the storage check, and Ray Tune's ASHA stopping a weak run."""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from offrl.data.scripted import make_pendulum_dataset
from offrl.run.logging import read_metrics
from offrl.tools import ray_sweep, sweep

DATASET = "offrl/pendulum/ray-v0"
TINY = {"num_updates": 300, "log_every": 100, "eval_every": 100, "eval_episodes": 2, "checkpoint_every": 100,
        "batch_size": 64, "wandb": "disabled"}
WAIT_S = 300  # the longest a test waits for a worker to reach the point where it is killed


@pytest.fixture
def pendulum(minari_store, tmp_path, monkeypatch):
    make_pendulum_dataset(DATASET, num_steps=3000)
    # from the repository root the workers would import the checkout's offrl (Ray puts the
    # driver's working directory on their path); from here, only the package the sweep ships
    monkeypatch.chdir(tmp_path)
    return DATASET


@pytest.fixture
def cluster():
    """A head without CPUs (so it runs no task) and two worker nodes of one CPU each."""
    from ray.cluster_utils import Cluster

    with tempfile.TemporaryDirectory(prefix="offrl-ray-", dir="/tmp") as temp:  # short: Ray's socket paths
        dirs = [Path(temp) / name for name in ("head", "node1", "node2")]
        nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "temp_dir": str(dirs[0])})
        try:
            for path in dirs[1:]:
                nodes.add_node(num_cpus=1, temp_dir=str(path))
            nodes.wait_for_nodes()
            yield nodes
        finally:
            nodes.shutdown()


def runs_of(*labels: str) -> list[sweep.SweepRun]:
    return [sweep.SweepRun("tiny", "bc", DATASET, (0, 1), {**TINY, "actor_lr": lr}, label)
            for label, lr in zip(labels, (1e-3, 3e-4, 1e-4))]


def killed_once_mid_run(run: sweep.SweepRun, root: Path) -> dict:
    """The test's stand-in for a preempted node, a failing run and a healthy one: the run
    labelled `killed` waits after its first checkpoint, the first time, for the test to
    SIGKILL its worker; `raises` raises; the others train. Each reports the offrl it ran."""
    import offrl
    from offrl.run import checkpoint

    if run.label == "raises":
        raise ValueError("the test's failing run")
    waiting = Path(root) / f"{run.name}.pid"
    if run.label == "killed" and not waiting.exists():
        save = checkpoint.save

        def save_then_wait(*args, **kwargs):
            save(*args, **kwargs)
            waiting.write_text(str(os.getpid()))
            time.sleep(WAIT_S)

        checkpoint.save = save_then_wait
    return {**sweep.run_one(run, Path(root)), "offrl": offrl.__file__}


def kill_when_waiting(path: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(int(path.read_text()), signal.SIGKILL)


@pytest.mark.slow
def test_a_sweep_on_a_multi_node_cluster_survives_a_killed_worker_and_a_failing_run(pendulum, cluster, tmp_path):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the nodes cannot import this file
    runs = runs_of("killed", "raises", "healthy")
    root = tmp_path / "runs"
    killer = threading.Thread(target=kill_when_waiting, args=(root / f"{runs[0].name}.pid",), daemon=True)
    killer.start()
    killed, raised, healthy = ray_sweep.run_ray(runs, root, cluster.address, show_progress=False,
                                                run_fn=killed_once_mid_run)
    killer.join()

    # the killed run was retried and went on from its checkpoint at update 100, not from 0
    assert killed["resumed_from"] == 100 and len(killed["final_eval"]["eval/return"]) == 2
    assert [row["step"] for row in read_metrics(runs[0].run_dir(root))] == [100, 100, 200, 200, 300, 300]
    assert ray_sweep.run_log(runs[0], root).read_text().count("--- ") == 2  # both attempts logged
    # the failing run is a record with its error and its log, and the others finished
    assert raised == {"run": runs[1].name, "failed": "ValueError: the test's failing run",
                      "log": str(ray_sweep.run_log(runs[1], root))}
    assert "Traceback" in Path(raised["log"]).read_text()
    assert healthy["resumed_from"] is None and (runs[2].run_dir(root) / sweep.RESULT).is_file()
    # the nodes ran the offrl the sweep shipped, algorithms included, not the checkout's
    repository = Path(__file__).resolve().parents[1]
    assert not Path(killed["offrl"]).is_relative_to(repository) and "runtime_resources" in killed["offrl"]
    assert any(line.startswith("resumed") for line in sweep.summary_lines([killed, raised, healthy]))

    # a node that lacks a dataset of the sweep is named before any run starts
    with ray_sweep.connected(cluster.address, root):
        with pytest.raises(ray_sweep.SharedStorageError, match=r"node .* lacks offrl/pendulum/absent-v0"):
            ray_sweep.check_shared_storage(root, ["offrl/pendulum/absent-v0"])


@pytest.mark.slow
def test_tune_with_asha_stops_the_weaker_run_and_a_rerun_keeps_the_decision(pendulum, tmp_path, capsys):
    from offrl.tools.cli import main as cli_main

    # one trial at a time, so ASHA sees the learning run's score before the one that cannot learn
    spec = {"name": "tiny", "algorithms": ["bc"], "datasets": [DATASET], "seeds": [0, 1], "base": TINY,
            "grid": {"actor_lr": [1e-3, 1e-9]}}
    (tmp_path / "spec.yaml").write_text(json.dumps(spec))
    runs = sweep.expand(sweep.load_spec(tmp_path / "spec.yaml"))
    root = tmp_path / "runs"
    learning, frozen = ray_sweep.run_tune(runs, root, "local", "asha", grace_updates=100, max_updates=300,
                                          max_concurrent=1)
    assert "stopped_early" not in learning and len(learning["final_eval"]["eval/return"]) == 2
    assert frozen["stopped_early"] == "asha at update 100"
    assert max(row["step"] for row in read_metrics(runs[1].run_dir(root))) < 300
    assert json.loads((runs[1].run_dir(root) / sweep.RESULT).read_text())["stopped_early"] == "asha at update 100"
    assert cli_main(["sweep", str(tmp_path / "spec.yaml"), "--root", str(root), "--dry-run"]) == 0
    assert "2 runs, 0 to run" in " ".join(capsys.readouterr().out.split())


def test_a_ray_address_nobody_answers_is_named_with_the_fix(tmp_path, monkeypatch):
    import ray

    def unreachable(address, **kwargs):
        raise ConnectionError(f"Failed to connect to Ray cluster at {address}")

    monkeypatch.setattr(ray, "init", unreachable)  # what a wrong address gives, without 20 s of retries
    with pytest.raises(ConnectionError, match=r"--ray 10.0.0.9:6379: no Ray cluster answers there .*ray start --head"):
        ray_sweep.run_ray([], tmp_path, address="10.0.0.9:6379")
