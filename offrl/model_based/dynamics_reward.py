"""MOREC's dynamics reward (Luo et al. 2024): how real a transition (s, a, s') looks.

The paper learns the dynamics reward adversarially and keeps historical discriminators;
its discriminator training code is not public, so offrl derives it from the paper. Every
choice below is ours and documented in docs/model_based.md:

- The discriminator D(s, a, s') is an MLP on the dynamics model's normalized (s, a) and
  normalized state change s' - s (the reward is not part of the dynamics), giving the
  logit of "this transition is from the dataset".
- The generator is an ensemble of the dynamics model's architecture and normalization,
  starting untrained. Its samples are reparameterized (s' = s + mu + sigma * eps from a
  random member), so it learns by the pathwise gradient of the non-saturating GAN loss
  -log D(s, a, s'_model), instead of the policy gradient GAIL needs for a
  non-differentiable environment. A Gaussian NLL term on dataset transitions keeps it a
  likelihood model while it learns to fool D.
- Each iteration: one discriminator step (binary cross-entropy, dataset transitions 1,
  generated ones 0, lr 1e-3) and one generator step (lr 1e-4), on a batch of dataset (s, a).
- Every `keep_every`-th discriminator is kept (the newest `max_kept`); the dynamics
  reward is the mean of their probabilities. A single late discriminator is near 0.5 at
  the adversarial equilibrium; the history of discriminators, each trained against a
  weaker generator, keeps scoring what makes transitions real. That needs generators that
  start weak: started from the trained ensemble (`generator_from_model`), every
  discriminator on hopper-medium sat at 0.50 on dataset and model transitions alike, so
  MOREC's 0.6 threshold ended every rollout at its first step (docs/model_based.md).
- The adversarially trained generator is discarded: rollouts use the maximum-likelihood
  ensemble, filtered by the dynamics reward (offrl/model_based/rollouts.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from offrl.core.nets import MLP
from offrl.model_based.dynamics import DynamicsModel, gaussian_nll


@dataclass(frozen=True)
class DynamicsRewardConfig:
    hidden_dims: tuple[int, ...] = (128, 128)
    iterations: int = 2000
    batch_size: int = 256
    discriminator_lr: float = 1e-3
    generator_lr: float = 1e-4
    nll_weight: float = 1.0
    # False: the generator starts untrained, so the early discriminators face a weak one (see above)
    generator_from_model: bool = False
    keep_every: int = 10
    max_kept: int = 200
    seed: int = 0


class DynamicsReward(flax.struct.PyTreeNode):
    """The mean probability, over the kept discriminators, that (s, a, s') is real."""

    params: dict  # stacked on a leading axis, one slice per kept discriminator
    model: DynamicsModel  # for its normalization statistics
    hidden_dims: Sequence[int] = flax.struct.field(pytree_node=False)

    def __call__(self, obs, action, next_obs):
        """obs, action: (batch, ...); next_obs: (..., batch, obs_dim) -> rewards (..., batch) in (0, 1)."""
        features = discriminator_features(self.model, obs, action, next_obs)
        network = MLP(self.hidden_dims, 1)
        probabilities = jax.vmap(lambda params: jax.nn.sigmoid(network.apply(params, features)[..., 0]))(self.params)
        return probabilities.mean(axis=0)


def discriminator_features(model: DynamicsModel, obs, action, next_obs):
    inputs = (jnp.concatenate([obs, action], axis=-1) - model.input_mean) / model.input_std
    change = (next_obs - obs - model.target_mean[:-1]) / model.target_std[:-1]
    return jnp.concatenate([jnp.broadcast_to(inputs, (*change.shape[:-1], inputs.shape[-1])), change], axis=-1)


@dataclass
class DynamicsRewardReport:
    seconds: float
    kept: int
    real_reward_mean: float  # on up to 5000 dataset transitions
    model_reward_mean: float  # on transitions sampled from the maximum-likelihood elites
    real_above: dict[str, float]  # fraction of dataset transitions above each threshold
    model_above: dict[str, float]


def learn_dynamics_reward(model: DynamicsModel, data: dict[str, np.ndarray],
                          config: DynamicsRewardConfig = DynamicsRewardConfig(),
                          thresholds: Sequence[float] = (0.5, 0.6, 0.7)) -> tuple[DynamicsReward, DynamicsRewardReport]:
    began = time.perf_counter()
    obs = jnp.asarray(data["observations"])
    actions = jnp.asarray(data["actions"])
    next_obs = jnp.asarray(data["next_observations"])
    rewards = jnp.asarray(data["rewards"])
    size = obs.shape[0]
    network = MLP(config.hidden_dims, 1)
    rng = jax.random.PRNGKey(config.seed)
    init_rng, rng = jax.random.split(rng)
    disc_params = network.init(init_rng, jnp.zeros((1, 2 * obs.shape[1] + actions.shape[1])))
    disc_opt, gen_opt = optax.adam(config.discriminator_lr), optax.adam(config.generator_lr)
    kept_count = min(config.max_kept, config.iterations // config.keep_every)
    if kept_count == 0:
        raise ValueError(f"iterations={config.iterations} keeps no discriminator at keep_every={config.keep_every}.")
    members = model.num_members

    def generate(gen_params, o, a, key):
        generator = model.replace(params=gen_params)
        mean, std = generator.predict(o, a)
        member_key, noise_key = jax.random.split(key)
        member = jax.random.randint(member_key, (o.shape[0],), 0, members)
        rows = jnp.arange(o.shape[0])
        sample = mean[member, rows] + std[member, rows] * jax.random.normal(noise_key, mean.shape[1:])
        return o + sample[:, :-1]

    def logits(params, o, a, s):
        return network.apply(params, discriminator_features(model, o, a, s))[..., 0]

    def disc_loss(params, o, a, real_next, fake_next):
        return (optax.sigmoid_binary_cross_entropy(logits(params, o, a, real_next), 1.0).mean()
                + optax.sigmoid_binary_cross_entropy(logits(params, o, a, fake_next), 0.0).mean())

    def gen_loss(gen_params, disc, o, a, s, r, key):
        fool = optax.sigmoid_binary_cross_entropy(logits(disc, o, a, generate(gen_params, o, a, key)), 1.0).mean()
        inputs = (jnp.concatenate([o, a], -1) - model.input_mean) / model.input_std
        targets = (jnp.concatenate([s - o, r[:, None]], -1) - model.target_mean) / model.target_std
        mean, logvar = model.network.apply(gen_params, jnp.broadcast_to(inputs, (members, *inputs.shape)))
        return fool + config.nll_weight * gaussian_nll(mean, logvar, targets).mean()

    def iteration(carry, index):
        disc, disc_state, gen, gen_state, kept, key = carry
        key, batch_key, fake_key, gen_key = jax.random.split(key, 4)
        rows = jax.random.randint(batch_key, (config.batch_size,), 0, size)
        o, a, s, r = obs[rows], actions[rows], next_obs[rows], rewards[rows]
        fake = jax.lax.stop_gradient(generate(gen, o, a, fake_key))
        updates, disc_state = disc_opt.update(jax.grad(disc_loss)(disc, o, a, s, fake), disc_state)
        disc = optax.apply_updates(disc, updates)
        updates, gen_state = gen_opt.update(jax.grad(gen_loss)(gen, disc, o, a, s, r, gen_key), gen_state)
        gen = optax.apply_updates(gen, updates)
        keep = (index + 1) % config.keep_every == 0
        slot = ((index + 1) // config.keep_every - 1) % kept_count
        kept = jax.tree.map(lambda stack, leaf: jnp.where(keep, stack.at[slot].set(leaf), stack), kept, disc)
        return (disc, disc_state, gen, gen_state, kept, key), None

    kept = jax.tree.map(lambda leaf: jnp.zeros((kept_count, *leaf.shape), leaf.dtype), disc_params)
    gen_rng, rng = jax.random.split(rng)
    gen_params = (model.params if config.generator_from_model
                  else model.network.init(gen_rng, jnp.zeros((members, 1, model.input_mean.shape[0]))))
    carry = (disc_params, disc_opt.init(disc_params), gen_params, gen_opt.init(gen_params), kept, rng)
    carry, _ = jax.jit(lambda c: jax.lax.scan(iteration, c, jnp.arange(config.iterations)))(carry)
    reward = DynamicsReward(carry[4], model, tuple(config.hidden_dims))

    check_rows = np.random.default_rng(config.seed).choice(size, min(size, 5000), replace=False)
    o, a, s = obs[check_rows], actions[check_rows], next_obs[check_rows]
    mean, std = model.predict(o, a)
    elite = model.elites[0]
    sampled = o + (mean[elite] + std[elite] * jax.random.normal(jax.random.PRNGKey(1), mean.shape[1:]))[:, :-1]
    real_scores, model_scores = np.asarray(reward(o, a, s)), np.asarray(reward(o, a, sampled))
    report = DynamicsRewardReport(
        time.perf_counter() - began, kept_count, float(real_scores.mean()), float(model_scores.mean()),
        {str(t): float((real_scores >= t).mean()) for t in thresholds},
        {str(t): float((model_scores >= t).mean()) for t in thresholds})
    return reward, report


def save_dynamics_reward(reward: DynamicsReward, report: DynamicsRewardReport, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "dynamics_reward.msgpack").write_bytes(serialization.to_bytes(reward.params))
    (directory / "dynamics_reward.json").write_text(json.dumps(
        {"hidden_dims": list(reward.hidden_dims), "kept": report.kept, "report": asdict(report)}, indent=1))
    return directory


def load_dynamics_reward(directory: str | Path, model: DynamicsModel) -> DynamicsReward:
    directory = Path(directory)
    meta = json.loads((directory / "dynamics_reward.json").read_text())
    network = MLP(tuple(meta["hidden_dims"]), 1)
    features = model.input_mean.shape[0] + model.target_mean.shape[0] - 1  # (s, a) and s' - s
    one = network.init(jax.random.PRNGKey(0), jnp.zeros((1, features)))
    template = jax.tree.map(lambda leaf: jnp.zeros((meta["kept"], *leaf.shape), leaf.dtype), one)
    params = jax.tree.map(jnp.asarray, serialization.from_bytes(template, (directory / "dynamics_reward.msgpack").read_bytes()))
    return DynamicsReward(params, model, tuple(meta["hidden_dims"]))
