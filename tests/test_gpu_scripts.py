"""experiments/gpu/pending.sh: the waiting runs within one device call's budget."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_pending_runs_its_steps_in_order_and_stops_at_the_budget(tmp_path):
    calls = tmp_path / "calls.txt"
    fake_python = tmp_path / "python"  # stands in for every step's program: logs its call, then runs long
    fake_python.write_text(f"#!/usr/bin/env bash\necho \"$*\" >> {calls}\nsleep 60\n")
    fake_python.chmod(0o755)
    out = tmp_path / "out"
    began = time.monotonic()
    result = subprocess.run([str(REPO / "experiments/gpu/pending.sh"), "8", "finetune bench bench-model-based"], capture_output=True,
                            text=True, env={**os.environ, "PYTHON": str(fake_python), "OUT": str(out)}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - began < 40  # the first step was stopped at the budget, not left to run
    assert calls.read_text().splitlines() == [
        "experiments/finetune_experiment.py --agents cql,cql+cal-ql --runs runs/finetune_100k "
        "--out finetune_100k --include experiments/results/finetune_100k.json"]
    log = (out / "pending.log").read_text()
    assert "== finetune: exit cut off at the deadline" in log
    assert "== bench: not started, the budget is spent" in log
    assert "== bench-model-based: not started" in log


def test_pending_refuses_an_unknown_step(tmp_path):
    result = subprocess.run([str(REPO / "experiments/gpu/pending.sh"), "3", "quality"], capture_output=True, text=True,
                            env={**os.environ, "PYTHON": "false", "OUT": str(tmp_path)}, timeout=30)
    assert result.returncode == 2 and "unknown step quality" in result.stderr
