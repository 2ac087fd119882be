"""Checkpoints: the whole training state of all seeds as one msgpack file, written atomically.

A checkpoint holds the stacked algorithm states, the training rngs and the update count.
Together with the run's config.yaml and preprocessing.json it resumes a run exactly (see
docs/core.md on CPU rounding), and `load_policy` turns it into a plain `obs -> action` function.

A snapshot holds the algorithm states alone. Online runs can write one every few thousand
env steps to keep the policy's history (the behavior-policy exporter picks from it) at a
few MB each, where a checkpoint also carries the replay buffer (about 200 MB at 1M rows).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from flax import serialization

CHECKPOINT_DIR = "checkpoints"
SNAPSHOT_DIR = "snapshots"
LATEST = "latest.json"


def write_atomically(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a reader sees the old file or the new one."""
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def save(run_dir: Path, step: int, payload: dict[str, Any], keep: int = 2) -> Path:
    """Write checkpoints/step_<N>.msgpack via a temporary file and rename, then point
    latest.json at it; keeps the newest `keep` checkpoints (all of them when keep is 0)."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step_{step:09d}.msgpack"
    write_atomically(path, serialization.to_bytes({"step": step, **payload}))
    write_atomically(directory / LATEST, json.dumps({"step": step, "file": path.name}).encode())
    if keep > 0:
        for old in sorted(directory.glob("step_*.msgpack"))[:-keep]:
            old.unlink()
    return path


def save_snapshot(run_dir: Path, step: int, states: Any) -> Path:
    """Write snapshots/step_<N>.msgpack: the stacked algorithm states, nothing to resume from."""
    directory = Path(run_dir) / SNAPSHOT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step_{step:09d}.msgpack"
    write_atomically(path, serialization.to_bytes({"step": step, "states": states}))
    return path


def latest(run_dir: Path) -> Path | None:
    pointer = Path(run_dir) / CHECKPOINT_DIR / LATEST
    if not pointer.is_file():
        return None
    return pointer.parent / json.loads(pointer.read_text())["file"]


def latest_step(run_dir: Path) -> int | None:
    """The step of the latest checkpoint (from latest.json, without reading the checkpoint)."""
    pointer = Path(run_dir) / CHECKPOINT_DIR / LATEST
    return int(json.loads(pointer.read_text())["step"]) if pointer.is_file() else None


def restore(path: Path, template: dict[str, Any]) -> dict[str, Any]:
    """Fill `template` (same structure as saved, e.g. freshly initialized states)."""
    try:
        return serialization.from_bytes({"step": 0, **template}, Path(path).read_bytes())
    except ValueError as error:  # flax names the keys or shapes that differ
        raise ValueError(f"{path} does not fit this run's state: it was written with other settings or by an "
                         f"earlier version of the algorithm's networks ({error}). Resume it with the code and "
                         "settings that wrote it, or start a new run.") from error
