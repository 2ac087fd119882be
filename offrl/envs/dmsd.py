"""NeoRL-2's DMSD task, rebuilt: two masses between springs and dampers, each pushed towards a target.

The system is a wall, a spring and damper, mass 1, a spring and damper, mass 2, a spring
and damper, a wall. Each mass weighs 20, each spring has stiffness 2 and each damper
coefficient 4 (NeoRL-2's default, "train", mode, which generated the released data). The
state (positions x1, x2, velocities v1, v2) advances by explicit Euler steps of dt = 0.2:
positions move with the old velocities, and velocities with the old spring and damper
forces plus the applied ones. An action in [-1, 1]^2 is a force of up to 30 on each mass.

Each mass has its own target schedule over the 100-step episode: one target, or two with
the switch at step 50, each drawn uniformly from [-1.5, 1.5]. The observation is
(x1, x2, v1, v2, target1, target2) in float32, the targets being those of the step just
reached. The reward is sum_i -log(|x_i - target_i| + 0.01), computed from that float32
observation: up to about 9.2 when both masses sit on their targets. Episodes never
terminate; the registration's time limit truncates them at 100 steps.

Given an episode's start state and target schedule (`reset(options=...)`), the simulator
reproduces the released files step by step (tests/test_neorl2_sim.py; docs/data.md states
the largest differences).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

MASS = 20.0
STIFFNESS = 2.0
DAMPING = 4.0
DT = 0.2
MAX_FORCE = 30.0
EPISODE_STEPS = 100
SWITCH_STEP = EPISODE_STEPS // 2
TARGET_BOUND = 1.5
START_POSITION_BOUND = 0.25
START_VELOCITY_BOUND = 0.1


def transition_matrix() -> np.ndarray:
    """The Euler step of the unforced system on (x1, x2, v1, v2). Each mass feels its wall's
    spring and damper and the middle pair, which pulls by the masses' relative motion."""
    k, c, m = STIFFNESS, DAMPING, MASS
    return np.array([
        [1.0, 0.0, DT, 0.0],
        [0.0, 1.0, 0.0, DT],
        [-2 * k * DT / m, k * DT / m, 1.0 - 2 * c * DT / m, c * DT / m],
        [k * DT / m, -2 * k * DT / m, c * DT / m, 1.0 - 2 * c * DT / m],
    ])


def reward(observation: np.ndarray) -> np.ndarray:
    """Closeness of each mass to its target, on a log scale, summed over the two masses."""
    error = np.abs(observation[..., :2] - observation[..., 4:])
    return np.sum(-np.log(error + np.float32(0.01)), axis=-1)


class DoubleMassSpringDamperEnv(gym.Env):
    """The DMSD simulator as a Gymnasium env. `reset(options={"state": (4,), "targets":
    (100, 2)})` replays a given start state and target schedule (targets[t] is the target
    observed after t steps); without options both are drawn from NeoRL-2's distributions."""

    metadata = {"render_modes": []}

    def __init__(self):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (6,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._matrix = transition_matrix()
        self._state = np.zeros(4)
        self._targets = np.zeros((EPISODE_STEPS, 2))
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        state = options.get("state")
        self._state = np.asarray(state, np.float64).copy() if state is not None else self._draw_start()
        targets = options.get("targets")
        self._targets = np.asarray(targets, np.float64).copy() if targets is not None else self._draw_targets()
        if self._state.shape != (4,) or self._targets.shape != (EPISODE_STEPS, 2):
            raise ValueError(f"DMSD reset options: state must have shape (4,) and targets ({EPISODE_STEPS}, 2), "
                             f"got {self._state.shape} and {self._targets.shape}.")
        self._t = 0
        return self._observation(), {}

    def step(self, action):
        force = np.clip(np.asarray(action, np.float64), -1.0, 1.0) * MAX_FORCE
        self._t += 1
        self._state = self._matrix @ self._state
        self._state[2:] += DT / MASS * force
        observation = self._observation()
        return observation, float(reward(observation)), False, False, {}

    def _observation(self) -> np.ndarray:
        target = self._targets[min(self._t, EPISODE_STEPS - 1)]
        return np.concatenate([self._state, target]).astype(np.float32)

    def _draw_start(self) -> np.ndarray:
        position = self.np_random.uniform(-START_POSITION_BOUND, START_POSITION_BOUND, 2)
        velocity = self.np_random.uniform(-START_VELOCITY_BOUND, START_VELOCITY_BOUND, 2)
        return np.concatenate([position, velocity])

    def _draw_targets(self) -> np.ndarray:
        """Per mass: one target for the whole episode, or (with probability 1/2) a second
        one from step SWITCH_STEP on."""
        targets = np.empty((EPISODE_STEPS, 2))
        for mass in range(2):
            first, second = self.np_random.uniform(-TARGET_BOUND, TARGET_BOUND, 2)
            targets[:, mass] = first
            if self.np_random.integers(2):
                targets[SWITCH_STEP:, mass] = second
        return targets
