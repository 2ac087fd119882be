"""The true simulator in place of a learned model, for Gymnasium MuJoCo locomotion tasks.

Their v5 observations are qpos without the x position, then qvel. Locomotion dynamics do
not depend on x, so a state can be rebuilt from an observation with x = 0 (the reward uses
x only through its change within a step). Hopper and Walker2d clip observed velocities to
[-10, 10]; where one hits the clip the rebuilt state differs from the true one.
"""

from __future__ import annotations

import os

import gymnasium as gym
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import rollout


class Simulator:
    """Steps a batch of observations through the real MuJoCo dynamics.

    The physics of all rows runs in C on every core (`mujoco.rollout`, one MjData per
    thread); observations, rewards and terminations then come from the Gymnasium env's own
    methods, row by row on the host, so they are the env's, not a copy of its formulas.
    A gym.Env.step per row cost ~0.5 ms, which made the simulator the bottleneck of the
    compiled loop (edge-of-reach runs) and would idle a GPU."""

    def __init__(self, env_id: str):
        self.env = gym.make(env_id).unwrapped
        self.env.reset(seed=0)
        self.model, self.nq, self.nv = self.env.model, self.env.model.nq, self.env.model.nv
        if self.env.observation_space.shape[0] != self.nq - 1 + self.nv:
            raise ValueError(f"{env_id}: observations are not qpos[1:] + qvel; the simulator cannot stand in "
                             "for a model here.")
        self.thread_data = [mujoco.MjData(self.model) for _ in range(len(os.sched_getaffinity(0)))]
        self.state_spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
        self.template = np.zeros(mujoco.mj_stateSize(self.model, self.state_spec))
        mujoco.mj_getState(self.model, self.env.data, self.template, self.state_spec)

    def _physics(self, start_obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """(qpos, qvel) after each of `actions` (batch, horizon, act_dim), each held for the env's
        frame_skip physics steps, from states rebuilt from `start_obs` (x = 0):
        (batch, horizon, nq + nv)."""
        batch, horizon = actions.shape[:2]
        # full-physics state layout: time, qpos, qvel, then the rest (act, ...) as at reset
        initial = np.tile(self.template, (batch, 1))
        initial[:, 1] = 0.0
        initial[:, 2:1 + self.nq] = start_obs[:, : self.nq - 1]
        initial[:, 1 + self.nq:1 + self.nq + self.nv] = start_obs[:, self.nq - 1:]
        controls = np.repeat(np.asarray(actions, np.float64), self.env.frame_skip, axis=1)
        states, _ = rollout.rollout(self.model, self.thread_data, initial, controls, persistent_pool=True)
        after_each_action = states[:, self.env.frame_skip - 1:: self.env.frame_skip]
        return after_each_action[..., 1:1 + self.nq + self.nv]

    def _observe(self, qpos_qvel: np.ndarray, action: np.ndarray | None = None):
        """The env's observation (and reward, termination after `action` from x = 0) in this state."""
        self.env.data.qpos[:] = qpos_qvel[: self.nq]
        self.env.data.qvel[:] = qpos_qvel[self.nq:]
        if action is None:
            return self.env._get_obs()
        reward, _ = self.env._get_rew(qpos_qvel[0] / self.env.dt, action)
        terminated = hasattr(self.env, "is_healthy") and self.env._terminate_when_unhealthy and not self.env.is_healthy
        return self.env._get_obs(), reward, terminated

    def replay(self, start_obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Observations after each of `actions` (horizon, batch, act_dim), stepping on from each
        start state without rebuilding it from (clipped) observations on the way:
        (horizon, batch, obs_dim)."""
        states = self._physics(np.asarray(start_obs, np.float64), np.swapaxes(actions, 0, 1))
        return np.array([[self._observe(state) for state in row] for row in np.swapaxes(states, 0, 1)], np.float32)

    def step(self, obs: np.ndarray, actions: np.ndarray):
        """(next_obs, rewards, terminated) for each row, each from its own observation."""
        actions = np.asarray(actions, np.float64)
        states = self._physics(np.asarray(obs, np.float64), actions[:, None])[:, 0]
        next_obs, rewards, terminated = zip(*(self._observe(state, action) for state, action in zip(states, actions)))
        return (np.asarray(next_obs, np.float32), np.asarray(rewards, np.float32), np.asarray(terminated, bool))


def simulator_step(env_id: str):
    """A model step (offrl.model_based.ModelStep) that calls the true simulator from inside
    the compiled loop (a host callback, row by row): the edge-of-reach check trains a
    model-based agent on perfect dynamics. The model argument is unused; uncertainty is 0."""
    simulator = Simulator(env_id)

    def step(model, obs, action, rng):
        shapes = (jax.ShapeDtypeStruct(obs.shape, jnp.float32), jax.ShapeDtypeStruct(obs.shape[:1], jnp.float32),
                  jax.ShapeDtypeStruct(obs.shape[:1], jnp.bool_))
        next_obs, reward, _ = jax.pure_callback(simulator.step, shapes, obs, action, vmap_method="sequential")
        return next_obs, reward, jnp.zeros_like(reward), jnp.ones(obs.shape[0], dtype=bool)

    return step
