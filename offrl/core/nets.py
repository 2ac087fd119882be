"""Networks shared by the algorithms: MLPs, critic ensembles, actors and value nets.

Actions live in [-1, 1]^act_dim (datasets store Box actions; evaluation rescales to the
environment's bounds), so every actor ends in tanh.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def kernel_init(orthogonal: bool, scale: float = float(np.sqrt(2.0))):
    """Orthogonal init (CQL/ReBRAC style), or flax's default lecun-normal."""
    return nn.initializers.orthogonal(scale) if orthogonal else nn.initializers.lecun_normal()


def symmetric_uniform(bound: float):
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def layer_initializers(orthogonal: bool, edac: bool, output_scale: float):
    """(hidden kernel, hidden bias, output kernel, output bias) initializers of an MLP.

    EDAC's init (An et al. 2021), which RAVL's code keeps: PyTorch's default Linear weights
    (uniform, variance 1/(3 fan_in)), every hidden bias 0.1, and a last layer drawn from
    +-output_scale (3e-3 for critics, 1e-3 for actors) so that Q-values and the policy's
    mean and log std start near 0. Otherwise biases start at 0 and output_scale scales the
    last layer's orthogonal init."""
    if edac:
        last = symmetric_uniform(output_scale)
        return (nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"), nn.initializers.constant(0.1),
                last, last)
    zeros = nn.initializers.zeros_init()
    return kernel_init(orthogonal), zeros, kernel_init(orthogonal, output_scale), zeros


@jax.custom_vjp
def dense(x, kernel, bias):
    return x @ kernel + bias


def dense_forward(x, kernel, bias):
    return dense(x, kernel, bias), (x, kernel)


def dense_backward(saved, output_grad):
    x, kernel = saved
    rows, row_grads = x.reshape(-1, x.shape[-1]), output_grad.reshape(-1, output_grad.shape[-1])
    input_grad = jax.lax.dot_general(output_grad, kernel, (((output_grad.ndim - 1,), (1,)), ((), ())))
    # x^T @ dy contracting the rows directly: JAX's own rule computes (dy^T @ x)^T, and
    # XLA:CPU leaves that transpose to the optimizer's elementwise updates, so Adam reads
    # every weight gradient strided, once per moment. In IQL's profile those updates took
    # 0.78 ms per update with JAX's rule and 0.28 ms with this one (2 CPU cores).
    kernel_grad = jax.lax.dot_general(rows, row_grads, (((0,), (0,)), ((), ())))
    return input_grad, kernel_grad, row_grads.sum(axis=0)


dense.defvjp(dense_forward, dense_backward)


class Dense(nn.Module):
    """flax's nn.Dense (same parameters and names, so checkpoints are interchangeable) with
    a weight gradient laid out as the weight. Reverse-mode only: forward-mode derivatives
    (jax.jvp, jacfwd) of a custom_vjp are not defined; second derivatives by grad-of-grad are."""

    features: int
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        bias = self.param("bias", self.bias_init, (self.features,))
        return dense(x, kernel, bias)


class MLP(nn.Module):
    hidden_dims: Sequence[int]
    output_dim: int
    layer_norm: bool = False
    orthogonal_init: bool = False
    output_scale: float = 1.0  # of the last layer's init: see layer_initializers
    activation: str = "relu"
    edac_init: bool = False

    @nn.compact
    def __call__(self, x):
        act = getattr(nn, self.activation)
        hidden_kernel, hidden_bias, output_kernel, output_bias = layer_initializers(
            self.orthogonal_init, self.edac_init, self.output_scale)
        for width in self.hidden_dims:
            x = Dense(width, kernel_init=hidden_kernel, bias_init=hidden_bias)(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = act(x)
        return Dense(self.output_dim, kernel_init=output_kernel, bias_init=output_bias)(x)


class Critic(nn.Module):
    """Q(s, a) -> scalar."""

    hidden_dims: Sequence[int] = (256, 256)
    layer_norm: bool = False
    orthogonal_init: bool = False
    edac_init: bool = False

    @nn.compact
    def __call__(self, obs, action):
        x = jnp.concatenate([obs, action], axis=-1)
        # CORL's orthogonal init (CQL) scales the last layer by 1e-2, like the actors'
        output_scale = 3e-3 if self.edac_init else 1e-2 if self.orthogonal_init else 1.0
        return MLP(self.hidden_dims, 1, self.layer_norm, self.orthogonal_init,
                   output_scale=output_scale, edac_init=self.edac_init)(x)[..., 0]


class CriticEnsemble(nn.Module):
    """N independent critics evaluated in one batched call: returns (N, batch) Q-values."""

    num_critics: int = 2
    hidden_dims: Sequence[int] = (256, 256)
    layer_norm: bool = False
    orthogonal_init: bool = False
    edac_init: bool = False

    @nn.compact
    def __call__(self, obs, action):
        ensemble = nn.vmap(
            Critic,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num_critics,
        )
        return ensemble(self.hidden_dims, self.layer_norm, self.orthogonal_init, self.edac_init)(obs, action)


def ensemble_members(ensemble: CriticEnsemble, params) -> tuple[Critic, dict]:
    """The ensemble as one plain critic module and its members' parameters stacked on a
    leading axis, for computations that treat members apart (jax.vmap over the stack)."""
    critic = Critic(ensemble.hidden_dims, ensemble.layer_norm, ensemble.orthogonal_init, ensemble.edac_init)
    return critic, params["params"][f"Vmap{Critic.__name__}_0"]


def ensemble_member(ensemble: CriticEnsemble, params, index: int) -> tuple[Critic, dict]:
    """One critic of an ensemble as a plain module with its own parameters, for losses that
    use a single member (TD3's actor uses Q1) without computing the others."""
    critic, members = ensemble_members(ensemble, params)
    return critic, {"params": jax.tree.map(lambda leaf: leaf[index], members)}


def critic_action_gradients(ensemble: CriticEnsemble, params, obs, actions) -> jax.Array:
    """dQ_i(s, a)/da for every critic i and sample: (N, batch, act_dim), from one backward
    pass. Each critic gets its own copy of the actions so the gradients stay apart; a
    jacobian of the ensemble's output would run one backward pass per critic, each
    through all N critics (N times the work)."""
    critic, members = ensemble_members(ensemble, params)

    def total_q(per_critic_actions):
        return jax.vmap(lambda member, a: critic.apply({"params": member}, obs, a))(members, per_critic_actions).sum()

    return jax.grad(total_q)(jnp.broadcast_to(actions, (ensemble.num_critics, *actions.shape)))


class ValueNet(nn.Module):
    """V(s) -> scalar."""

    hidden_dims: Sequence[int] = (256, 256)
    layer_norm: bool = False
    orthogonal_init: bool = False

    @nn.compact
    def __call__(self, obs):
        return MLP(self.hidden_dims, 1, self.layer_norm, self.orthogonal_init)(obs)[..., 0]


class DeterministicActor(nn.Module):
    """a = tanh(MLP(s))."""

    action_dim: int
    hidden_dims: Sequence[int] = (256, 256)
    layer_norm: bool = False
    orthogonal_init: bool = False

    @nn.compact
    def __call__(self, obs):
        return jnp.tanh(MLP(self.hidden_dims, self.action_dim, self.layer_norm,
                            self.orthogonal_init, output_scale=1e-2 if self.orthogonal_init else 1.0)(obs))


class TanhGaussianActor(nn.Module):
    """A diagonal Gaussian squashed by tanh (SAC, CQL). Returns (mean, log_std) pre-squash."""

    action_dim: int
    hidden_dims: Sequence[int] = (256, 256)
    layer_norm: bool = False
    orthogonal_init: bool = False
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    log_std_offset: float = 0.0  # added to the network's log std before clipping
    learned_log_std_affine: bool = False  # the offset (from log_std_offset) and a scale (from 1) are parameters
    edac_init: bool = False

    @nn.compact
    def __call__(self, obs):
        output_scale = 1e-3 if self.edac_init else 1e-2 if self.orthogonal_init else 1.0
        out = MLP(self.hidden_dims, 2 * self.action_dim, self.layer_norm, self.orthogonal_init,
                  output_scale=output_scale, edac_init=self.edac_init)(obs)
        mean, log_std = jnp.split(out, 2, axis=-1)
        scale, offset = 1.0, self.log_std_offset
        if self.learned_log_std_affine:
            scale = self.param("log_std_multiplier", nn.initializers.constant(1.0), ())
            offset = self.param("log_std_offset", nn.initializers.constant(self.log_std_offset), ())
        return mean, jnp.clip(scale * log_std + offset, self.log_std_min, self.log_std_max)


def tanh_gaussian_sample(mean, log_std, rng):
    """Reparameterized sample of tanh(N(mean, std)) and its log-probability."""
    std = jnp.exp(log_std)
    pre_tanh = mean + std * jax.random.normal(rng, mean.shape)
    action = jnp.tanh(pre_tanh)
    return action, tanh_gaussian_log_prob(mean, log_std, pre_tanh)


def tanh_gaussian_log_prob(mean, log_std, pre_tanh):
    """log pi(tanh(u)) for u ~ N(mean, std), with the tanh change of variables in a stable form."""
    gaussian = -0.5 * (((pre_tanh - mean) / jnp.exp(log_std)) ** 2 + 2 * log_std + jnp.log(2 * jnp.pi))
    # log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u))
    log_det = 2.0 * (jnp.log(2.0) - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))
    return jnp.sum(gaussian - log_det, axis=-1)


class GaussianActor(nn.Module):
    """N(tanh(MLP(s)), exp(log_std)) with a state-independent log_std (IQL's policy).
    Returns (mean, log_std); log-probabilities are of unsquashed actions."""

    action_dim: int
    hidden_dims: Sequence[int] = (256, 256)
    log_std_min: float = -5.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, obs):
        mean = jnp.tanh(MLP(self.hidden_dims, self.action_dim)(obs))
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        return mean, jnp.broadcast_to(jnp.clip(log_std, self.log_std_min, self.log_std_max), mean.shape)


def gaussian_log_prob(mean, log_std, actions):
    """Log-density of a diagonal Gaussian, summed over action dimensions."""
    return jnp.sum(-0.5 * (((actions - mean) / jnp.exp(log_std)) ** 2 + 2 * log_std + jnp.log(2 * jnp.pi)),
                   axis=-1)
