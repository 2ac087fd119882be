"""A device-resident ring buffer of transitions: online replay and model rollouts."""

from __future__ import annotations

from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp

TRANSITION_FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")


class ReplayBuffer(flax.struct.PyTreeNode):
    """A ring buffer of transitions kept on the device."""

    data: dict[str, jax.Array]
    size: jax.Array  # number of valid rows
    pointer: jax.Array  # next row to write

    @classmethod
    def create(cls, capacity: int, obs_dim: int, act_dim: int, fields=TRANSITION_FIELDS) -> "ReplayBuffer":
        """Zeros for `fields`: observation- and action-shaped ones by name, scalars otherwise."""
        widths = {"observations": obs_dim, "next_observations": obs_dim, "actions": act_dim, "next_actions": act_dim}
        data = {key: jnp.zeros((capacity, widths[key]) if key in widths else (capacity,), jnp.float32)
                for key in fields}
        return cls(data=data, size=jnp.int32(0), pointer=jnp.int32(0))

    @property
    def capacity(self) -> int:
        return self.data["rewards"].shape[-1]

    def add(self, transitions: dict[str, jax.Array], valid: jax.Array | None = None) -> "ReplayBuffer":
        """Append a batch of transitions, overwriting the oldest rows when full. With a
        `valid` mask only the valid rows are appended (e.g. model rollout steps after a
        termination are not), still in one fixed-shape scatter."""
        if valid is None:
            valid = jnp.ones(transitions["rewards"].shape[0], dtype=bool)
        offsets = jnp.cumsum(valid) - 1
        count = valid.sum()
        # invalid rows get an out-of-range index, which the scatter drops
        rows = jnp.where(valid, (self.pointer + offsets) % self.capacity, self.capacity)
        data = {key: value.at[rows].set(transitions[key], mode="drop") for key, value in self.data.items()}
        return ReplayBuffer(data=data, size=jnp.minimum(self.size + count, self.capacity),
                            pointer=(self.pointer + count) % self.capacity)


def sample_replay(batch_size: int) -> Callable[[ReplayBuffer, jax.Array], dict[str, jax.Array]]:
    """Uniform sampling over the filled part of a replay buffer."""

    def sample(buffer: ReplayBuffer, rng: jax.Array) -> dict[str, jax.Array]:
        index = jax.random.randint(rng, (batch_size,), 0, jnp.maximum(buffer.size, 1))
        return {key: value[index] for key, value in buffer.data.items()}

    return sample


def mixed_sample(batch_size: int, data_fraction: float):
    """`data_fraction` of each batch uniformly from a dataset (a dict of arrays), the rest
    from a replay buffer, for the buffer's fields: model-based batches (5% real) and
    offline-to-online fine-tuning (50/50 in RLPD). While the buffer is empty (fine-tuning
    whose online transitions wait for their episode's end) the dataset fills its share."""
    data_size = int(round(batch_size * data_fraction))
    sample_buffer = sample_replay(batch_size - data_size)

    def sample(data_and_buffer, rng):
        data, buffer = data_and_buffer
        data_rng, buffer_rng = jax.random.split(rng)
        data_rows = data["observations"].shape[0]
        rows = jax.random.randint(data_rng, (data_size,), 0, data_rows)
        stand_in_rows = jax.random.randint(jax.random.fold_in(data_rng, 1), (batch_size - data_size,), 0, data_rows)
        from_buffer = sample_buffer(buffer, buffer_rng)
        return {key: jnp.concatenate([data[key][rows],
                                      jnp.where(buffer.size > 0, from_buffer[key], data[key][stand_in_rows])])
                for key in buffer.data}

    return sample
