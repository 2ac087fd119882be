"""Runs: resume exactly, stop on signals, one run per directory, logging and wandb, divergence, checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import signal
from datetime import datetime
from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import PENDULUM, assert_same_checkpoint, run_in_fresh_python, td3_bc_config

import offrl
import offrl.run.logging
from offrl.data import DatasetError
from offrl.data.scripted import make_pendulum_dataset
from offrl.run import checkpoint
from offrl.run import directory as runs
from offrl.run.algorithms import algorithm_module
from offrl.run.config import parse_config
from offrl.run.directory import closing_run, divergence, resume_flag, run_status
from offrl.run.errors import StopRequested, TrainingDiverged, user_errors_as_messages
from offrl.run.logging import RunLogger, read_metrics, resolve_wandb_mode
from offrl.run.train import train

td3_bc = algorithm_module("td3_bc")


_LOG = RunLogger.log

def _sigterm_once_logged(monkeypatch, at_step: int | None, *signals: int) -> None:
    """Signal this process (SIGTERM, as a scheduler would, unless `signals` are given) right
    after the logger writes `at_step`, mid-run (None: log as usual)."""
    def log_then_terminate(self, step, *args, **kwargs):
        _LOG(self, step, *args, **kwargs)
        if step == at_step:
            for signum in signals or (signal.SIGTERM,):
                os.kill(os.getpid(), signum)

    monkeypatch.setattr(RunLogger, "log", log_then_terminate)

@pytest.fixture
def sigint_handled():
    """Python's own SIGINT handler for the test: a shell without job control starts background
    jobs (a test suite run with `&`) with SIGINT ignored, which training leaves so."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_interrupted_and_resumed_run_equals_the_uninterrupted_run(pendulum, tmp_path):
    full = train(td3_bc.make, td3_bc_config(tmp_path, name="full"), "td3_bc", show_progress=False)
    train(td3_bc.make, td3_bc_config(tmp_path, "--num_updates", "200", name="cut"), "td3_bc", show_progress=False)
    # experiments must neither reuse a run of another budget nor extend it (its schedules differ)
    with pytest.raises(FileExistsError, match="planned for 200 steps that ended at step 200"):
        run_status(tmp_path / "cut", 400)
    # what the checkpoint was trained with cannot change (other seeds cannot restore its state, another
    # reward transform would train on other rewards), how it is spelled can
    for changed in (["--seeds", "0,1"], ["--reward_transform", "locomotion"], ["--dataset", "offrl/pendulum/x-v0"]):
        with pytest.raises(ValueError, match=f"{changed[0]} {changed[1]} differs from the run's"):
            parse_config(td3_bc.Config, "td3_bc", ["--resume", str(tmp_path / "cut"), *changed])
    with pytest.raises(ValueError, match="a resumed run goes on in its own directory"):
        parse_config(td3_bc.Config, "td3_bc", ["--resume", str(tmp_path / "cut"), "--run_dir", str(tmp_path / "b")])
    resumed_config = parse_config(td3_bc.Config, "td3_bc",
                                  ["--resume", str(tmp_path / "cut"), "--num_updates", "400", "--seeds", " 0"])
    run_id = json.loads((tmp_path / "cut" / "run.json").read_text())["run_id"]
    train(td3_bc.make, resumed_config, "td3_bc", show_progress=False)
    assert_same_checkpoint(checkpoint.latest(full.run_dir), checkpoint.latest(tmp_path / "cut"))
    # one identity per run (its wandb runs' ids): kept on resume, never shared by two runs
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["run_id"] == run_id
    assert json.loads((full.run_dir / "run.json").read_text())["run_id"] != run_id
    assert run_status(tmp_path / "cut", 400, "0") == "finished" and run_status(tmp_path / "never-ran", 400) == "new"
    with pytest.raises(FileExistsError, match="seeds 0 planned"):
        run_status(tmp_path / "cut", 400, "0,1")


@pytest.mark.slow
def test_sigterm_checkpoints_the_chunk_it_ends_and_the_run_resumes_to_the_same_end(pendulum, tmp_path, monkeypatch,
                                                                                   sigint_handled):
    full = train(td3_bc.make, td3_bc_config(tmp_path, name="full"), "td3_bc", show_progress=False)
    before = signal.getsignal(signal.SIGTERM)  # SIG_DFL, or what an earlier test's ray.init set
    _sigterm_once_logged(monkeypatch, 100)
    # killed at step 100 with the next checkpoint due at 400, it would have lost those updates
    with pytest.raises(StopRequested):
        train(td3_bc.make, td3_bc_config(tmp_path, "--checkpoint_every", "400", name="cut"), "td3_bc", show_progress=False)
    assert checkpoint.latest_step(tmp_path / "cut") == 100
    assert signal.getsignal(signal.SIGTERM) == before  # the handler lives only while training
    _sigterm_once_logged(monkeypatch, None)
    train(td3_bc.make, parse_config(td3_bc.Config, "td3_bc", ["--resume", str(tmp_path / "cut")]), "td3_bc",
          show_progress=False)
    assert_same_checkpoint(checkpoint.latest(full.run_dir), checkpoint.latest(tmp_path / "cut"))
    # in the online phase too: the checkpoint holds the replay buffers and the env step reached
    _sigterm_once_logged(monkeypatch, 400 + 100)
    online = ["--online_steps", "200", "--online_update_every", "50", "--online_eval_every", "200"]
    with pytest.raises(StopRequested):
        train(td3_bc.make, td3_bc_config(tmp_path, *online, name="online"), "td3_bc", show_progress=False)
    assert checkpoint.latest_step(tmp_path / "online") == 500
    _sigterm_once_logged(monkeypatch, None)
    with pytest.raises(ValueError, match="stopped at env step 100, which update_every x num_envs = 40 does not divide"):
        train(td3_bc.make, parse_config(td3_bc.Config, "td3_bc", ["--resume", str(tmp_path / "online"),
                                                                   "--online_update_every", "40"]),
              "td3_bc", show_progress=False)
    resumed = train(td3_bc.make, parse_config(td3_bc.Config, "td3_bc", ["--resume", str(tmp_path / "online")]),
                    "td3_bc", show_progress=False)
    assert resumed.final_step == 600 and checkpoint.latest_step(tmp_path / "online") == 600
    # a first Ctrl-C does the same; a second one stops at once
    _sigterm_once_logged(monkeypatch, 300, signal.SIGINT)
    with pytest.raises(StopRequested) as stopped:
        train(td3_bc.make, td3_bc_config(tmp_path, "--checkpoint_every", "400", name="ctrl-c"), "td3_bc",
              show_progress=False)
    assert stopped.value.exit_status == 130 and checkpoint.latest_step(tmp_path / "ctrl-c") == 300
    _sigterm_once_logged(monkeypatch, 300, signal.SIGINT, signal.SIGINT)
    with pytest.raises(KeyboardInterrupt) as stopped:
        train(td3_bc.make, td3_bc_config(tmp_path, "--checkpoint_every", "400", name="twice"), "td3_bc",
              show_progress=False)
    assert not isinstance(stopped.value, StopRequested) and checkpoint.latest_step(tmp_path / "twice") is None
    _sigterm_once_logged(monkeypatch, None)


def test_a_run_resumed_with_another_log_every_keeps_its_grid_and_budget(pendulum, tmp_path, monkeypatch):
    grid = ["--num_updates", "600", "--eval_every", "300", "--checkpoint_every", "300"]
    full = train(td3_bc.make, td3_bc_config(tmp_path, *grid, name="full"), "td3_bc", show_progress=False).run_dir
    _sigterm_once_logged(monkeypatch, 100)
    with pytest.raises(StopRequested):
        train(td3_bc.make, td3_bc_config(tmp_path, *grid, name="cut"), "td3_bc", show_progress=False)
    _sigterm_once_logged(monkeypatch, None)
    # 150 does not divide the checkpoint's 100: the run logs every 50 and still lands on 300 and 600
    resumed = train(td3_bc.make, parse_config(td3_bc.Config, "td3_bc", ["--resume", str(tmp_path / "cut"),
                                                                         "--log_every", "150"]),
                    "td3_bc", show_progress=False)
    rows = read_metrics(tmp_path / "cut")
    assert resumed.final_step == 600 and "eval/normalized_score" in resumed.final_eval
    assert [row["step"] for row in rows] == [100, *range(150, 601, 50)]
    assert [row["step"] for row in rows if "eval/return" in row] == [300, 600]
    assert checkpoint.latest_step(tmp_path / "cut") == 600
    assert_same_checkpoint(checkpoint.latest(full), checkpoint.latest(tmp_path / "cut"))
    with pytest.raises(ValueError, match="has trained 600 updates already"):
        train(td3_bc.make, parse_config(td3_bc.Config, "td3_bc", ["--resume", str(full), "--num_updates", "300",
                                                                   "--eval_every", "300", "--checkpoint_every", "300"]),
              "td3_bc", show_progress=False)


def test_runs_started_in_one_second_get_directories_of_their_own(monkeypatch, tmp_path):
    class FrozenClock:
        @staticmethod
        def now():
            return datetime(2026, 12, 6, 12, 0, 0)

    monkeypatch.setattr(runs, "datetime", FrozenClock)
    monkeypatch.chdir(tmp_path)  # a relative root is the working directory's
    first, second = (runs.default_run_dir("runs", "td3_bc", "mujoco/hopper/medium-v0", "0,1") for _ in range(2))
    assert first == tmp_path / "runs/td3_bc/mujoco/hopper/medium-v0/20261206-120000-s0_1"
    assert second == first.with_name(first.name + "-2") and second.is_dir()
    # the dataset's namespace is part of the path: D4RL's hopper-medium is other data
    assert runs.default_run_dir("runs", "td3_bc", "D4RL/hopper/medium-v2", "0,1").parent != first.parent


def test_a_killed_run_planned_for_the_budget_is_resumable(pendulum, tmp_path):
    run = train(td3_bc.make, td3_bc_config(tmp_path, "--num_updates", "200", name="killed"), "td3_bc",
                show_progress=False).run_dir
    # what a run planned for 400 updates and killed after its checkpoint at 200 leaves behind
    config_file = run / "config.yaml"
    config_file.write_text(config_file.read_text().replace("num_updates: 200", "num_updates: 400"))
    assert run_status(run, 400, "0") == "resumable" and resume_flag(run, "resumable") == ["--resume", str(run)]
    # the dataset made again meanwhile: resuming would go on with other data
    make_pendulum_dataset(PENDULUM, num_steps=10_000, seed=1, overwrite=True)
    resume = parse_config(td3_bc.Config, "td3_bc", ["--resume", str(run)])
    with pytest.raises(DatasetError, match="has changed since"):
        train(td3_bc.make, resume, "td3_bc", show_progress=False)
    assert checkpoint.latest_step(run) == 200  # nothing lost
    with pytest.raises(FileExistsError, match="began on other data"):  # experiments do not reuse it either
        run_status(run, 400, "0")
    shutil.rmtree(run / checkpoint.CHECKPOINT_DIR)  # killed before its first checkpoint: nothing to resume
    with pytest.raises(FileExistsError, match="remove it"):
        run_status(run, 400, "0")


def test_a_resumed_run_logs_each_step_once(tmp_path):
    logger = RunLogger(tmp_path, {}, "td3_bc", [0], 400, 0, "disabled", show_progress=False)
    for step in (100, 200, 300):
        logger.log(step, {"critic_loss": np.array([step])}, 1.0)
    logger.close()
    # killed after logging step 300; resumed from its checkpoint at 200, it logs 300 again
    logger = RunLogger(tmp_path, {}, "td3_bc", [0], 400, 200, "disabled", show_progress=False)
    for step in (300, 400):
        logger.log(step, {"critic_loss": np.array([step])}, 1.0)
    logger.close()
    assert [row["step"] for row in read_metrics(tmp_path)] == [100, 200, 300, 400]


def test_updates_per_s_counts_the_wall_time_since_the_previous_row(tmp_path, monkeypatch):
    clock = iter([10.0, 14.0, 15.0])
    monkeypatch.setattr(offrl.run.logging, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    logger = RunLogger(tmp_path, {}, "td3_bc", [0, 1], 400, 0, "disabled", show_progress=False)
    logger.log(100, {"critic_loss": np.array([1.0, 2.0])}, 100)  # 4 s: compilation and evaluations count too
    logger.log(200, {"critic_loss": np.array([1.0, 2.0])}, 100)
    logger.close()
    assert [row["updates_per_s"] for row in read_metrics(tmp_path)] == [25.0, 25.0, 100.0, 100.0]


def test_a_torn_last_metrics_line_is_dropped_on_resume_and_other_damage_is_named(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text('{"step": 100, "seed": 0}\n{"step": 200, "seed": 0}\n{"step": 3')
    logger = RunLogger(tmp_path, {}, "td3_bc", [0], 400, 200, "disabled", show_progress=False)
    logger.log(300, {"critic_loss": np.array([1.0])}, 100)
    logger.close()
    assert [row["step"] for row in read_metrics(tmp_path)] == [100, 200, 300]
    assert "dropped its last line, cut off mid-write" in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_text('{"step": 100, "seed": 0}\n{"step": 2\n{"step": 300, "seed": 0}\n')
    with pytest.raises(ValueError, match="metrics.jsonl line 2 is not JSON"):
        read_metrics(tmp_path)


def test_divergence_stops_with_the_update_and_last_checkpoint(pendulum, tmp_path):
    config = td3_bc_config(tmp_path, "--actor_lr", "1e30", "--critic_lr", "1e30", "--divergence_threshold", "1e6",
                     "--wandb", "offline")
    with pytest.raises(TrainingDiverged, match=r"by update \d+.*no checkpoint was written before it"):
        train(td3_bc.make, config, "td3_bc", show_progress=False)
    run = tmp_path / "run"
    # marked failed in wandb (its client log records the exit code), what diverged in its summary
    offline_run, = (run / "wandb").glob("offline-run-*")
    assert "got exitcode: 1" in (offline_run / "logs" / "debug.log").read_text()
    assert b"Training diverged by update" in next(offline_run.glob("*.wandb")).read_bytes()
    # the run directory keeps what diverged, so experiments report it instead of training it again
    assert divergence(run).startswith("Training diverged by update ") and run_status(run, 400, "0") == "diverged"
    with pytest.raises(TrainingDiverged, match="Remove it to train again"):
        resume_flag(run, "diverged")
    with pytest.raises(FileExistsError, match="already holds a run: continue it with --resume"):
        train(td3_bc.make, td3_bc_config(tmp_path), "td3_bc", show_progress=False)  # a new run goes elsewhere
    assert divergence(run) is not None


def test_offline_wandb_run_holds_the_logged_history(pendulum, tmp_path):
    config = td3_bc_config(tmp_path, "--wandb", "offline")
    result = train(td3_bc.make, config, "td3_bc", show_progress=False)
    runs = list((result.run_dir / "wandb").glob("offline-run-*/*.wandb"))
    assert len(runs) == 1
    history = runs[0].read_bytes()
    for row in read_metrics(result.run_dir):
        assert repr(row["critic_loss"]).encode() in history
    assert b"td3_bc" in history and PENDULUM.encode() in history


def test_auto_wandb_mode_follows_wandb_mode_then_api_key(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert resolve_wandb_mode("auto") == "offline"
    with pytest.raises(ValueError, match="--wandb online needs a W&B API key"):  # not wandb's login prompt mid-run
        resolve_wandb_mode("online")
    monkeypatch.setenv("WANDB_API_KEY", "key")
    assert resolve_wandb_mode("online") == "online"
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("auto") == "disabled"
    assert resolve_wandb_mode("offline") == "offline"  # an explicit --wandb wins


def test_a_checkpoint_of_other_networks_is_refused_with_the_fix(tmp_path):
    saved = checkpoint.save(tmp_path, 10, {"carry": {"actor": {"kernel": jnp.zeros(3)}}})
    with pytest.raises(ValueError, match=r"does not fit this run's state.*log_std_offset.*start a new run"):
        checkpoint.restore(saved, {"carry": {"actor": {"kernel": jnp.zeros(3), "log_std_offset": jnp.zeros(())}}})


def test_a_damaged_checkpoint_names_the_one_to_resume_from(tmp_path):
    template = {"carry": {"actor": {"kernel": jnp.zeros(3)}}}
    first = checkpoint.save(tmp_path, 10, template)
    damaged = checkpoint.save(tmp_path, 20, template)
    damaged.write_bytes(damaged.read_bytes()[:20])  # e.g. a copy cut short
    # named as damaged, not as written with other settings
    with pytest.raises(ValueError, match=f"{damaged} is damaged .*: delete it, and --resume continues from "
                                         f"{first.name}"):
        checkpoint.restore(checkpoint.latest(tmp_path), template)
    damaged.unlink()
    assert checkpoint.latest(tmp_path) == first and checkpoint.latest_step(tmp_path) == 10
    first.write_bytes(b"")
    with pytest.raises(ValueError, match="no earlier checkpoint remains; start a new run"):
        checkpoint.restore(first, template)
    with pytest.raises(FileNotFoundError, match="No checkpoint at .*: pass a file from the run's checkpoints/"):
        checkpoint.restore(tmp_path / "step_000000030.msgpack", template)  # e.g. `offrl evaluate --checkpoint`


def test_a_stopped_run_closes_its_logger_and_says_where_it_can_continue(tmp_path, capsys):
    class Logger:
        closed = False

        def close(self, diverged=None):
            self.closed = True

    logger = Logger()
    checkpoint.save(tmp_path, 3000, {"carry": {"x": jnp.zeros(2)}})
    with pytest.raises(KeyboardInterrupt):
        with closing_run(logger, tmp_path):
            raise KeyboardInterrupt
    assert logger.closed
    assert f"checkpoint at step 3,000 remains: --resume {tmp_path}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stopped:  # from a shell: exit 130, no traceback
        with user_errors_as_messages():
            raise KeyboardInterrupt
    assert stopped.value.code == 130


def test_a_resumed_online_run_keeps_its_env(tmp_path):
    (tmp_path / "config.yaml").write_text("env: Pendulum-v1\nnum_envs: 2\n")
    with pytest.raises(ValueError, match="--num_envs 4 differs from the run's 2"):
        parse_config(algorithm_module("sac").Config, "sac", ["--resume", str(tmp_path), "--num_envs", "4"])


def test_resuming_another_algorithms_run_names_the_script_that_can(tmp_path):
    (tmp_path / "config.yaml").write_text("actor_bc_coef: 0.1\n")
    (tmp_path / "run.json").write_text(json.dumps({"algorithm": "rebrac"}))
    with pytest.raises(ValueError, match=r"a rebrac run, which iql cannot continue; use algorithms/rebrac.py"):
        parse_config(algorithm_module("iql").Config, "iql", ["--resume", str(tmp_path)])


def test_offline_wandb_asks_no_name_server(tmp_path):
    """wandb's process-wide telemetry probes its server unless set up offline first."""
    hosts = tmp_path / "hosts.txt"
    script = f"""
import socket
def record(host, *args, **kwargs):
    with open({str(hosts)!r}, "a") as handle:
        handle.write(str(host) + "\\n")
    raise OSError("no network in this test")
socket.getaddrinfo = record
import numpy as np
from offrl.run.logging import RunLogger
logger = RunLogger({str(tmp_path / "run")!r}, {{"dataset": "x/y/z-v0"}}, "td3_bc", [0], 200, 0, "auto",
                   show_progress=False, run_id="test")
logger.log(100, {{"critic_loss": np.array([1.0])}}, 100)
logger.close()
"""
    env = {key: value for key, value in os.environ.items() if not key.startswith("WANDB_")}
    run_in_fresh_python(script, env={**env, "HOME": str(tmp_path)})  # no API key in ~/.netrc: auto is offline
    assert (tmp_path / "run" / "wandb").is_dir()
    assert not hosts.exists() or hosts.read_text().split() == []
