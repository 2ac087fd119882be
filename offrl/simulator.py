"""The true simulator in place of a learned model, for Gymnasium MuJoCo locomotion tasks.

Their v5 observations are qpos without the x position, then qvel. Locomotion dynamics do
not depend on x, so a state can be rebuilt from an observation with x = 0 (the reward uses
x only through its change within a step). Hopper and Walker2d clip observed velocities to
[-10, 10]; where one hits the clip the rebuilt state differs from the true one.
"""

from __future__ import annotations

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np


class Simulator:
    """Steps a batch of observations through the real MuJoCo dynamics, one env reused."""

    def __init__(self, env_id: str):
        self.env = gym.make(env_id).unwrapped
        self.env.reset(seed=0)
        self.nq, self.nv = self.env.model.nq, self.env.model.nv
        if self.env.observation_space.shape[0] != self.nq - 1 + self.nv:
            raise ValueError(f"{env_id}: observations are not qpos[1:] + qvel; the simulator cannot stand in "
                             "for a model here.")

    def set_from_observation(self, obs: np.ndarray) -> None:
        qpos = np.concatenate([[0.0], obs[: self.nq - 1]])
        self.env.set_state(qpos, obs[self.nq - 1:])

    def replay(self, start_obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Observations after each of `actions` (horizon, batch, act_dim), stepping on from each
        start state without rebuilding it from (clipped) observations on the way:
        (horizon, batch, obs_dim)."""
        observations = np.zeros((*actions.shape[:2], start_obs.shape[-1]), np.float32)
        for row, start in enumerate(np.asarray(start_obs, np.float64)):
            self.set_from_observation(start)
            for t, action in enumerate(np.asarray(actions[:, row], np.float64)):
                observations[t, row] = self.env.step(action)[0]
        return observations

    def step(self, obs: np.ndarray, actions: np.ndarray):
        """(next_obs, rewards, terminated) for each row, each from its own observation."""
        next_obs, rewards, terminated = [], [], []
        for row, action in zip(np.asarray(obs, np.float64), np.asarray(actions, np.float64)):
            self.set_from_observation(row)
            observation, reward, done, _, _ = self.env.step(action)
            next_obs.append(observation)
            rewards.append(reward)
            terminated.append(done)
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
