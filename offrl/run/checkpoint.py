"""Checkpoints: the whole training state of all seeds as one msgpack file, written atomically.

A checkpoint holds the stacked algorithm states, the training rngs and the update count.
Together with the run's config.yaml and preprocessing.json it resumes a run exactly (see
docs/core.md on CPU rounding), and `load_policy` turns it into a plain `obs -> action` function.

A snapshot holds the algorithm states alone. Online runs can write one every few thousand
env steps to keep the policy's history (the behavior-policy exporter picks from it) at a
few MB each, where a checkpoint also carries the replay buffer (about 200 MB at 1M rows).

flax (and with it jax) is imported by the functions that write and read states, so that
finding a run's checkpoints stays light.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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
    from flax import serialization

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
    from flax import serialization

    directory = Path(run_dir) / SNAPSHOT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step_{step:09d}.msgpack"
    write_atomically(path, serialization.to_bytes({"step": step, "states": states}))
    return path


def latest(run_dir: Path) -> Path | None:
    """The checkpoint latest.json names or, where that file is gone (deleted as damaged), the
    newest one left."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    pointer = directory / LATEST
    if pointer.is_file() and (named := directory / json.loads(pointer.read_text())["file"]).is_file():
        return named
    saved = sorted(directory.glob("step_*.msgpack"))
    return saved[-1] if saved else None


def latest_step(run_dir: Path) -> int | None:
    """The step of the latest checkpoint (from its name, without reading it)."""
    path = latest(run_dir)
    return int(path.stem.removeprefix("step_")) if path is not None else None


def read(path: Path) -> dict[str, Any]:
    """A checkpoint's saved tree (nested dicts of arrays), or an error naming the damage and the fix."""
    from flax import serialization

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}: pass a file from the run's checkpoints/ folder.")
    try:
        return serialization.msgpack_restore(path.read_bytes())
    except ValueError as error:  # cut short or overwritten: not a file this code wrote whole
        earlier = [other.name for other in sorted(path.parent.glob("step_*.msgpack")) if other < path]
        fix = (f"delete it, and --resume continues from {earlier[-1]}" if earlier else
               "no earlier checkpoint remains; start a new run")
        raise ValueError(f"{path} is damaged ({error}): {fix}.") from error


def fill(template: Any, saved: dict[str, Any], path: Path) -> Any:
    """`template`'s structure with the values of `saved` (a part of what `read` gave)."""
    from flax import serialization

    try:
        return serialization.from_state_dict(template, saved)
    except ValueError as error:  # flax names the keys or shapes that differ
        raise ValueError(f"{path} does not fit this run's state: it was written with other settings or by an "
                         f"earlier version of the algorithm's networks ({error}). Resume it with the code and "
                         "settings that wrote it, or start a new run.") from error


def restore(path: Path, template: dict[str, Any]) -> dict[str, Any]:
    """Fill `template` (same structure as saved, e.g. freshly initialized states)."""
    return fill({"step": 0, **template}, read(path), path)
