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

from offrl.data.envs import route_mujoco_warnings

route_mujoco_warnings()


# Per env class: the bound on observed velocities, and the health check that ends an episode.
LOCOMOTION = {"HopperEnv": (10.0, "hopper"), "Walker2dEnv": (10.0, "walker2d"), "HalfCheetahEnv": (None, None)}


class Simulator:
    """Steps a batch of observations through the real MuJoCo dynamics.

    The physics of all rows runs in C on every core (`mujoco.rollout`, one MjData per
    thread); observations, rewards and terminations follow the v5 envs' definitions,
    vectorized over rows and read from the env's own settings (reward weights, healthy
    ranges), and a test holds them equal to Gymnasium's `step`. A gym.Env.step per row cost
    ~0.25 ms on 2 cores, which made the simulator the bottleneck of edge-of-reach runs and
    would idle a GPU."""

    def __init__(self, env_id: str):
        self.env = gym.make(env_id).unwrapped
        self.env.reset(seed=0)
        if type(self.env).__name__ not in LOCOMOTION or not self.env._exclude_current_positions_from_observation:
            raise ValueError(f"{env_id}: the simulator stands in for a model on Hopper, Walker2d and HalfCheetah "
                             "(v5, default observations) only.")
        self.velocity_clip, self.health_rule = LOCOMOTION[type(self.env).__name__]
        self.model, self.nq, self.nv = self.env.model, self.env.model.nq, self.env.model.nv
        self.thread_data = [mujoco.MjData(self.model) for _ in range(len(os.sched_getaffinity(0)))]
        self.state_spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
        self.template = np.zeros(mujoco.mj_stateSize(self.model, self.state_spec))
        mujoco.mj_getState(self.model, self.env.data, self.template, self.state_spec)

    def physics(self, start_obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
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

    def _observe(self, states: np.ndarray) -> np.ndarray:
        """The env's observation of each (qpos, qvel) row."""
        velocities = states[..., self.nq:]
        if self.velocity_clip is not None:
            velocities = np.clip(velocities, -self.velocity_clip, self.velocity_clip)
        return np.concatenate([states[..., 1:self.nq], velocities], axis=-1)

    def _healthy(self, states: np.ndarray) -> np.ndarray:
        env, z, angle = self.env, states[:, 1], states[:, 2]
        healthy = ((env._healthy_z_range[0] < z) & (z < env._healthy_z_range[1])
                   & (env._healthy_angle_range[0] < angle) & (angle < env._healthy_angle_range[1]))
        if self.health_rule == "hopper":  # every state entry past x and z within the range
            low, high = env._healthy_state_range
            healthy &= ((low < states[:, 2:]) & (states[:, 2:] < high)).all(axis=1)
        return healthy

    def replay(self, start_obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Observations after each of `actions` (horizon, batch, act_dim), stepping on from each
        start state without rebuilding it from (clipped) observations on the way:
        (horizon, batch, obs_dim)."""
        states = self.physics(np.asarray(start_obs, np.float64), np.swapaxes(actions, 0, 1))
        return np.swapaxes(self._observe(states), 0, 1).astype(np.float32)

    def step(self, obs: np.ndarray, actions: np.ndarray):
        """(next_obs, rewards, terminated) for each row, each from its own observation."""
        env, actions = self.env, np.asarray(actions, np.float64)
        states = self.physics(np.asarray(obs, np.float64), actions[:, None])[:, 0]
        x_velocity = states[:, 0] / env.dt  # from x = 0
        healthy = self._healthy(states) if self.health_rule else np.ones(len(states), bool)
        survive = env._healthy_reward * healthy if self.health_rule else 0.0
        # summed in the env's order, so the float64 rewards agree to the bit
        rewards = env._forward_reward_weight * x_velocity + survive - env._ctrl_cost_weight * np.square(actions).sum(axis=1)
        terminated = ~healthy & bool(getattr(env, "_terminate_when_unhealthy", False))
        return self._observe(states).astype(np.float32), rewards.astype(np.float32), terminated


def simulator_step(env_id: str):
    """A model step (offrl.model_based.rollouts.ModelStep) that calls the true simulator from inside
    the compiled loop (a host callback): the edge-of-reach check trains a
    model-based agent on perfect dynamics. The model argument is unused; uncertainty is 0."""
    simulator = Simulator(env_id)

    def step(model, obs, action, rng):
        shapes = (jax.ShapeDtypeStruct(obs.shape, jnp.float32), jax.ShapeDtypeStruct(obs.shape[:1], jnp.float32),
                  jax.ShapeDtypeStruct(obs.shape[:1], jnp.bool_))
        next_obs, reward, _ = jax.pure_callback(simulator.step, shapes, obs, action, vmap_method="sequential")
        return next_obs, reward, jnp.zeros_like(reward), jnp.ones(obs.shape[0], dtype=bool)

    return step
