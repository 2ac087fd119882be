"""NeoRL-2's SafetyHalfCheetah, rebuilt: Gymnasium's HalfCheetah-v5 with its x position
observed and a speed limit.

The robot, its model file, the 5 MuJoCo steps of 0.01 s per env step, the start-state noise
(0.1) and the reward (forward velocity minus 0.1 |a|^2) are Gymnasium's HalfCheetah-v5. As
in NeoRL-2, the observation adds the x position in front (18 values: qpos, then qvel), and a
step faster than 3.2096 m/s is rewarded -100 in place of its usual reward, the penalty a
safety-constrained policy avoids. Episodes never terminate; the registration's time limit
truncates them at 1,000 steps.

One step from each released observation reproduces the released next observation as closely
as the float32 rounding of that observation allows (docs/data.md states the differences).
Whole episodes cannot be replayed: contacts make the dynamics chaotic, so a rounding error in
the start state grows to whole metres within a few hundred steps.
"""

from __future__ import annotations

from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

VELOCITY_LIMIT = 3.2096  # m/s
OVER_LIMIT_REWARD = -100.0


class SafetyHalfCheetahEnv(HalfCheetahEnv):
    def __init__(self, **kwargs):
        super().__init__(exclude_current_positions_from_observation=False, **kwargs)

    def _get_rew(self, x_velocity: float, action):
        reward, reward_info = super()._get_rew(x_velocity, action)
        over_limit = x_velocity > VELOCITY_LIMIT
        return (OVER_LIMIT_REWARD if over_limit else reward), {**reward_info, "over_velocity_limit": over_limit}
