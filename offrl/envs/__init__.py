"""Simulators offrl rebuilds for datasets whose own simulators cannot be installed beside it
(NeoRL-2's package pins other Gymnasium and torch versions and ships no reward files).

`register_envs()` registers their Gymnasium ids (`offrl/DMSD-v0`, `offrl/SafetyHalfCheetah-v0`),
after which `gymnasium.make` makes them; offrl calls it wherever it looks an env id up.
Datasets record the env's spec, entry point included, so a dataset's eval env is made
without it too.
"""

from __future__ import annotations

import functools


@functools.cache
def register_envs() -> None:
    import gymnasium as gym  # here, not at import: the dataset commands start without Gymnasium

    gym.register("offrl/DMSD-v0", entry_point="offrl.envs.dmsd:DoubleMassSpringDamperEnv", max_episode_steps=100)
    gym.register("offrl/SafetyHalfCheetah-v0", entry_point="offrl.envs.safety_half_cheetah:SafetyHalfCheetahEnv",
                 max_episode_steps=1000)
