"""Reference returns used to normalize scores, and the Gymnasium envs that evaluate them.

Normalized score = 100 * (return - ref_min) / (ref_max - ref_min), as in D4RL (Fu et al. 2020).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# the native file formats offrl converts, whose tasks the tables below know
FORMATS = ("d4rl", "neorl", "neorl2")


@dataclass(frozen=True)
class TaskReference:
    ref_min_score: float | None
    ref_max_score: float | None
    eval_env_id: str | None  # a Gymnasium id whose observations match the data, if one exists
    source: str
    note: str = ""


def _without_eval_env(note: str, rows: list[tuple[str, float, float]]) -> dict[str, TaskReference]:
    """D4RL tasks sharing a reason why no Gymnasium env evaluates them by default."""
    return {key: TaskReference(low, high, None, "D4RL", note) for key, low, high in rows}


ADROIT_NOTE = ("gymnasium-robotics' AdroitHand*-v1 envs keep D4RL's observation layout, but not D4RL's episode "
               "length for pen (200 steps, D4RL's 100) nor its door, hammer and relocate rewards (changed in "
               "gymnasium-robotics 1.2.1), so no eval env is set: pass --eval-env knowingly")
MAZE2D_NOTE = ("gymnasium-robotics PointMaze uses dict observations, not D4RL's flat 4-dim layout: "
               "pass --eval-env explicitly")

# D4RL's REF_MIN_SCORE / REF_MAX_SCORE (random and expert returns of the original -v2 tasks).
# D4RL collected with mujoco-py v3 envs; the Gymnasium v5 envs keep their observation layout.
D4RL_TASKS: dict[str, TaskReference] = {
    "hopper": TaskReference(-20.272305, 3234.3, "Hopper-v5", "D4RL"),
    "halfcheetah": TaskReference(-280.178953, 12135.0, "HalfCheetah-v5", "D4RL"),
    "walker2d": TaskReference(1.629008, 4592.3, "Walker2d-v5", "D4RL"),
    "ant": TaskReference(
        -325.6, 3879.7, None, "D4RL",
        "D4RL ant observations have 111 dims, Gymnasium Ant-v5 has 105: pass --eval-env explicitly",
    ),
    "antmaze": TaskReference(
        0.0, 1.0, None, "D4RL",
        "the score is the success rate; gymnasium-robotics AntMaze uses dict observations, "
        "not D4RL's flat 29-dim layout: pass --eval-env explicitly",
    ),
    "kitchen": TaskReference(
        0.0, 4.0, None, "D4RL",
        "the return counts the 4 subtasks solved; gymnasium-robotics FrankaKitchen-v1 uses dict "
        "observations, not D4RL's flat 60-dim layout: pass --eval-env explicitly",
    ),
    # Adroit: the v1 datasets keep the v0 random and expert (DAPG) returns.
    **_without_eval_env(ADROIT_NOTE, [
        ("pen", 96.262799, 3076.8331017826877),
        ("hammer", -274.856578, 12794.134825156867),
        ("door", -56.512833, 2880.5693087298737),
        ("relocate", -6.425911, 4233.877797728884),
    ]),
    # Maze2D's references differ per maze and reward kind, so they are keyed task-dataset.
    **_without_eval_env(MAZE2D_NOTE, [
        ("maze2d-open", 0.01, 20.66),
        ("maze2d-umaze", 23.85, 161.86),
        ("maze2d-medium", 13.13, 277.39),
        ("maze2d-large", 6.7, 273.99),
        ("maze2d-open-dense", 11.17817, 27.166538620695782),
        ("maze2d-umaze-dense", 68.537689, 193.66285642381482),
        ("maze2d-medium-dense", 44.264742, 297.4552547777125),
        ("maze2d-large-dense", 30.569041, 303.4857382709002),
    ]),
}

# NeoRL-2 (Polixir, 2025) reference returns, as the NeoRL-2 data release publishes them.
# The neorl2 package's simulators cannot be installed beside offrl; the tasks offrl has
# rebuilt and checked against the released data are their eval envs (registered by offrl.envs).
NEORL2_TASKS: dict[str, TaskReference] = {
    "dmsd": TaskReference(30.60, 849.51, "offrl/DMSD-v0", "NeoRL-2"),
    "safetyhalfcheetah": TaskReference(-283.0, 2507.0, "offrl/SafetyHalfCheetah-v0", "NeoRL-2"),
    **{name.lower(): TaskReference(lo, hi, None, "NeoRL-2") for name, lo, hi in [
        ("Simglucose", 9.75, 475.0),
        ("Fusion", -107.601, 98.05),
        ("RandomFrictionHopper", -3.0, 503.0),
        ("RocketRecovery", -176.0, 208.0),
        ("Salespromotion", 357.62, 602.21),
    ]},
}


UNKNOWN = TaskReference(None, None, None, "none")


def known_reference(fmt: str, dataset_id: str) -> TaskReference:
    """The references of a dataset id such as `d4rl-hdf5/maze2d/umaze-dense-v1`: by task and
    dataset name where they differ per dataset (Maze2D), else by task; UNKNOWN if neither."""
    table = {"d4rl": D4RL_TASKS, "neorl2": NEORL2_TASKS}.get(fmt, {})
    parts = dataset_id.split("/")
    if len(parts) < 3:
        return UNKNOWN
    task, name = parts[1], re.sub(r"-v\d+$", "", parts[-1])
    return table.get(f"{task}-{name}", table.get(task, UNKNOWN))


def normalized_score(returns, ref_min_score: float, ref_max_score: float):
    """D4RL-style normalized score on the 0-100 scale (works on scalars and arrays)."""
    return 100.0 * (returns - ref_min_score) / (ref_max_score - ref_min_score)
