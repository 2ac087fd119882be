"""Reference returns used to normalize scores, and the Gymnasium envs that evaluate them.

Normalized score = 100 * (return - ref_min) / (ref_max - ref_min), as in D4RL (Fu et al. 2020).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskReference:
    ref_min_score: float | None
    ref_max_score: float | None
    eval_env_id: str | None  # a Gymnasium id whose observations match the data, if one exists
    source: str
    note: str = ""


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
}

# NeoRL-2 (Polixir, 2025) reference returns, from ../shared/data/neorl2/README.md.
# NeoRL-2 tasks run in the neorl2 package's simulators, not in Gymnasium's registry.
NEORL2_TASKS: dict[str, TaskReference] = {
    name.lower(): TaskReference(lo, hi, None, "NeoRL-2")
    for name, lo, hi in [
        ("DMSD", 30.60, 849.51),
        ("SafetyHalfCheetah", -283.0, 2507.0),
        ("Simglucose", 9.75, 475.0),
        ("Fusion", -107.601, 98.05),
        ("RandomFrictionHopper", -3.0, 503.0),
        ("RocketRecovery", -176.0, 208.0),
        ("Salespromotion", 357.62, 602.21),
    ]
}


def normalized_score(returns, ref_min_score: float, ref_max_score: float):
    """D4RL-style normalized score on the 0-100 scale (works on scalars and arrays)."""
    return 100.0 * (returns - ref_min_score) / (ref_max_score - ref_min_score)
