"""A probabilistic dynamics ensemble (the MBPO/MOPO lineage), its training, and
termination of imagined transitions.

Each member is an MLP (4x200, swish) that predicts a diagonal Gaussian over
(next_obs - obs, reward) from (obs, action). Inputs and targets are standardized with the
training split's statistics. Log-variances are soft-clamped between learned bounds, which
a small penalty pulls together (Chua et al. 2018), so that the variance cannot run off
where data is scarce.

Training (all in jit): every member sees its own shuffle of the training split each epoch;
after each epoch the held-out MSE of every member is measured and a member's parameters
are kept when they improve its best by more than 1%; training stops after `patience`
epochs without any member improving (MBPO's rule) or at `max_epochs`. The `num_elites`
members with the lowest held-out MSE are the elites that rollouts use.

Training on a million transitions takes an hour or more on a CPU, so `train_dynamics` can
save its progress (the whole training carry) after every compiled call, and a killed
training started again with the same data and settings continues from there and ends
bitwise equal to an uninterrupted one.
"""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from offrl.core.nets import MLP, Dense, dense, dense_backward, dense_forward
from offrl.run.checkpoint import write_atomically


@dataclass(frozen=True)
class DynamicsConfig:
    """Defaults: MBPO/MOPO's ensemble (7 members, 5 elites, 4x200 swish)."""

    num_members: int = 7
    num_elites: int = 5
    hidden_dims: tuple[int, ...] = (200, 200, 200, 200)
    learning_rate: float = 1e-3
    weight_decay: float = 5e-5  # MBPO decays its layers by 2.5e-5..1e-4; one value here
    batch_size: int = 256
    holdout_ratio: float = 0.1
    max_holdout: int = 5000
    max_epochs: int = 1000
    patience: int = 5  # epochs without a >1% held-out improvement before stopping
    logvar_bound_weight: float = 0.01
    epochs_per_call: int = 5  # epochs per compiled call (the host only logs between calls)
    seed: int = 0


class GaussianMLP(nn.Module):
    """One member: (normalized obs, action) -> mean and soft-clamped log-variance."""

    output_dim: int
    hidden_dims: Sequence[int] = (200, 200, 200, 200)

    @nn.compact
    def __call__(self, inputs):
        x = inputs
        for width in self.hidden_dims:
            x = nn.swish(Dense(width)(x))
        mean, logvar = jnp.split(Dense(2 * self.output_dim)(x), 2, axis=-1)
        max_logvar = self.param("max_logvar", nn.initializers.constant(0.5), (self.output_dim,))
        min_logvar = self.param("min_logvar", nn.initializers.constant(-10.0), (self.output_dim,))
        logvar = max_logvar - nn.softplus(max_logvar - logvar)
        logvar = min_logvar + nn.softplus(logvar - min_logvar)
        return mean, logvar


class GaussianEnsemble(nn.Module):
    """N members in one batched call: inputs (N, batch, in) -> means and log-variances (N, batch, out)."""

    num_members: int
    output_dim: int
    hidden_dims: Sequence[int] = (200, 200, 200, 200)

    @nn.compact
    def __call__(self, inputs):
        members = nn.vmap(GaussianMLP, variable_axes={"params": 0}, split_rngs={"params": True},
                          in_axes=0, out_axes=0, axis_size=self.num_members)
        return members(self.output_dim, self.hidden_dims)(inputs)


class DynamicsModel(flax.struct.PyTreeNode):
    """A trained ensemble with its normalization and elites, ready for rollouts."""

    params: dict
    input_mean: jax.Array
    input_std: jax.Array
    target_mean: jax.Array  # over (next_obs - obs, reward)
    target_std: jax.Array
    elites: jax.Array  # member indices, best first
    num_members: int = flax.struct.field(pytree_node=False)
    hidden_dims: tuple[int, ...] = flax.struct.field(pytree_node=False)

    @property
    def observation_dim(self) -> int:
        return self.target_mean.shape[-1] - 1  # it predicts (next_obs - obs, reward)

    @property
    def action_dim(self) -> int:
        return self.input_mean.shape[-1] - self.observation_dim  # from (obs, action)

    @property
    def network(self) -> GaussianEnsemble:
        return GaussianEnsemble(self.num_members, self.target_mean.shape[-1], self.hidden_dims)

    def predict(self, obs, action):
        """Every member's Gaussian over (next_obs - obs, reward) in env units: (mean, std), each (N, batch, out)."""
        return self.predict_each(jnp.broadcast_to(obs, (self.num_members, *obs.shape)),
                                 jnp.broadcast_to(action, (self.num_members, *action.shape)))

    def predict_each(self, obs, action):
        """As `predict`, member i from its own rows obs[i], action[i] (each (N, batch, ...)):
        one rollout per member at the cost of one prediction."""
        inputs = (jnp.concatenate([obs, action], axis=-1) - self.input_mean) / self.input_std
        mean, logvar = self.network.apply(self.params, inputs)
        return mean * self.target_std + self.target_mean, jnp.exp(0.5 * logvar) * self.target_std

    def step(self, obs, action, rng):
        """One imagined step per row, each from a random elite's sampled Gaussian.

        Returns next_obs, reward, and MOPO's uncertainty."""
        mean, std = self.predict(obs, action)
        member_rng, noise_rng = jax.random.split(rng)
        rows = jnp.arange(obs.shape[0])
        member = self.elites[jax.random.randint(member_rng, (obs.shape[0],), 0, self.elites.shape[0])]
        sample = mean[member, rows] + std[member, rows] * jax.random.normal(noise_rng, mean.shape[1:])
        return obs + sample[:, :-1], sample[:, -1], mopo_uncertainty(std)


def mopo_uncertainty(std):
    """MOPO's penalty: the largest norm, over all members, of the predicted std over all
    outputs; std (N, batch, out) -> (batch,)."""
    return jnp.linalg.norm(std, axis=-1).max(axis=0)


def gaussian_nll(mean, logvar, targets):
    """Per-member Gaussian negative log-likelihood (up to a constant), averaged over batch and outputs."""
    return (((mean - targets) ** 2) * jnp.exp(-logvar) + logvar).mean(axis=(-2, -1))


def model_inputs_targets(data: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    inputs = np.concatenate([data["observations"], data["actions"]], axis=1)
    targets = np.concatenate([data["next_observations"] - data["observations"], data["rewards"][:, None]], axis=1)
    return inputs.astype(np.float32), targets.astype(np.float32)


@dataclass
class DynamicsReport:
    epochs: int
    seconds: float
    holdout_mse: list[float]  # per member, normalized units (the early-stopping criterion)
    holdout_mse_per_dim: list[float]  # elites' mean prediction, env units, per output dim
    output_names: list[str]
    elites: list[int]
    history: list[list[float]] = field(default_factory=list)  # held-out MSE per member per epoch


def train_dynamics(data: dict[str, np.ndarray], config: DynamicsConfig = DynamicsConfig(),
                   log: Callable[[str], None] | None = print,
                   progress: Path | None = None) -> tuple[DynamicsModel, DynamicsReport]:
    """Fit the ensemble to transitions (observations, actions, next_observations, rewards).

    With `progress`, the training state is written there (atomically) after every
    `epochs_per_call` epochs and training continues from it if it exists; the caller names
    it after the data and settings (see offrl.model_based.ensembles.shared_dynamics). It is removed
    once training ends."""
    began = time.perf_counter()
    inputs, targets = model_inputs_targets(data)
    split_rng = np.random.default_rng(config.seed)
    order = split_rng.permutation(len(inputs))
    holdout_size = int(min(config.max_holdout, round(config.holdout_ratio * len(inputs))))
    if len(inputs) - holdout_size < config.batch_size:
        raise ValueError(f"{len(inputs)} transitions are too few to train a dynamics model with batch "
                         f"{config.batch_size} and a {holdout_size}-transition holdout.")
    holdout, train = order[:holdout_size], order[holdout_size:]
    input_mean, input_std = inputs[train].mean(0), inputs[train].std(0) + 1e-6
    target_mean, target_std = targets[train].mean(0), targets[train].std(0) + 1e-6
    train_x = jnp.asarray((inputs[train] - input_mean) / input_std)
    train_y = jnp.asarray((targets[train] - target_mean) / target_std)
    hold_x = jnp.asarray((inputs[holdout] - input_mean) / input_std)
    hold_y = jnp.asarray((targets[holdout] - target_mean) / target_std)

    members = config.num_members
    network = GaussianEnsemble(members, targets.shape[1], config.hidden_dims)
    rng = jax.random.PRNGKey(config.seed)
    init_rng, rng = jax.random.split(rng)
    params = network.init(init_rng, jnp.zeros((members, 1, inputs.shape[1])))
    optimizer = optax.adamw(config.learning_rate, weight_decay=config.weight_decay)
    batches = train_x.shape[0] // config.batch_size

    def loss_fn(params, x, y):
        mean, logvar = network.apply(params, x)
        bounds = params["params"]["VmapGaussianMLP_0"]
        bound_penalty = bounds["max_logvar"].sum() - bounds["min_logvar"].sum()
        return gaussian_nll(mean, logvar, y).sum() + config.logvar_bound_weight * bound_penalty

    def holdout_mse(params):
        mean, _ = network.apply(params, jnp.broadcast_to(hold_x, (members, *hold_x.shape)))
        return ((mean - hold_y) ** 2).mean(axis=(1, 2))

    def one_epoch(carry, _):
        params, opt_state, best_params, best_mse, since, epoch, rng = carry
        rng, shuffle_rng = jax.random.split(rng)
        shuffles = jax.vmap(lambda key: jax.random.permutation(key, train_x.shape[0]))(
            jax.random.split(shuffle_rng, members))

        def one_batch(carry, index):
            params, opt_state = carry
            rows = jax.lax.dynamic_slice_in_dim(shuffles, index * config.batch_size, config.batch_size, axis=1)
            grads = jax.grad(loss_fn)(params, train_x[rows], train_y[rows])
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        running = since < config.patience  # once stopped, later epochs of the call change nothing
        (new_params, new_opt_state), _ = jax.lax.scan(one_batch, (params, opt_state), jnp.arange(batches))
        params, opt_state = jax.tree.map(lambda new, old: jnp.where(running, new, old),
                                         (new_params, new_opt_state), (params, opt_state))
        mse = holdout_mse(params)
        improved = running & (mse < 0.99 * best_mse)  # by more than 1%
        best_params = jax.tree.map(
            lambda new, best: jnp.where(improved.reshape((members,) + (1,) * (new.ndim - 1)), new, best),
            params, best_params)
        best_mse = jnp.where(improved, mse, best_mse)
        since = jnp.where(improved.any(), 0, since + running.astype(jnp.int32))
        return (params, opt_state, best_params, best_mse, since, epoch + running, rng), mse

    @jax.jit
    def some_epochs(carry):
        return jax.lax.scan(one_epoch, carry, None, length=config.epochs_per_call)

    carry = (params, optimizer.init(params), params, jnp.full((members,), jnp.inf), jnp.int32(0),
             jnp.int32(0), rng)
    history: list[list[float]] = []
    seconds_before = 0.0  # spent by the calls a resumed training continues
    if progress is not None and progress.is_file():
        carry, history, seconds_before = _restore_progress(progress, carry)
        if log:
            log(f"dynamics: continuing from epoch {int(carry[5])} ({progress})")
    while int(carry[4]) < config.patience and int(carry[5]) < config.max_epochs:
        done_before = int(carry[5])
        carry, mse = some_epochs(carry)
        history += np.asarray(mse)[: int(carry[5]) - done_before].tolist()
        if progress is not None:
            _save_progress(progress, carry, history, seconds_before + time.perf_counter() - began)
        if log:
            log(f"dynamics epoch {int(carry[5])}: held-out MSE per member "
                + " ".join(f"{value:.4f}" for value in np.asarray(carry[3])))
    best_params, best_mse = carry[2], np.asarray(carry[3])
    elites = np.argsort(best_mse)[: config.num_elites]
    model = DynamicsModel(best_params, jnp.asarray(input_mean), jnp.asarray(input_std), jnp.asarray(target_mean),
                          jnp.asarray(target_std), jnp.asarray(elites), members, tuple(config.hidden_dims))
    mean, _ = model.predict(jnp.asarray(inputs[holdout][:, : data["observations"].shape[1]]),
                            jnp.asarray(inputs[holdout][:, data["observations"].shape[1]:]))
    per_dim = ((np.asarray(mean[elites]).mean(0) - targets[holdout]) ** 2).mean(0)
    names = [f"delta_obs[{i}]" for i in range(data["observations"].shape[1])] + ["reward"]
    report = DynamicsReport(int(carry[5]), seconds_before + time.perf_counter() - began, best_mse.tolist(),
                            per_dim.tolist(), names, elites.tolist(), history)
    if progress is not None:
        progress.unlink(missing_ok=True)
    return model, report


def training_code() -> str:
    """The source of everything a trained ensemble's parameters, statistics and elites depend
    on, for the fingerprints of shared ensembles (offrl.model_based.rollouts): an edit here trains new
    ensembles; edits elsewhere (rollouts, messages, properties) keep the trained ones, which
    take hours to train again on a CPU."""
    return "\n".join(inspect.getsource(piece) for piece in (
        model_inputs_targets, GaussianMLP, GaussianEnsemble, gaussian_nll, train_dynamics,
        Dense, dense.fun, dense_forward, dense_backward))


def _save_progress(path: Path, carry, history: list[list[float]], seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, serialization.msgpack_serialize({
        "carry": serialization.to_state_dict(carry), "history": np.asarray(history, np.float64),
        "seconds": seconds}))


def _restore_progress(path: Path, template) -> tuple[object, list[list[float]], float]:
    try:
        saved = serialization.msgpack_restore(path.read_bytes())
        carry = serialization.from_state_dict(template, saved["carry"])
    except Exception as error:  # a file msgpack cannot read, or a carry of other shapes
        raise ValueError(f"{path} holds no dynamics training this run can continue ({error}). Delete it to "
                         "train the ensemble from the start.") from error
    return carry, np.asarray(saved["history"]).tolist(), float(saved["seconds"])


def save_dynamics(model: DynamicsModel, report: DynamicsReport, directory: str | Path) -> Path:
    """dynamics.msgpack (the model) and dynamics.json (its shape and training report)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "dynamics.msgpack").write_bytes(serialization.to_bytes(model))
    (directory / "dynamics.json").write_text(json.dumps({
        "num_members": model.num_members, "hidden_dims": list(model.hidden_dims),
        "input_dim": int(model.input_mean.shape[0]), "output_dim": int(model.target_mean.shape[0]),
        "num_elites": int(model.elites.shape[0]), "report": asdict(report)}, indent=1))
    return directory


def load_dynamics(directory: str | Path) -> DynamicsModel:
    directory = Path(directory)
    meta_path = directory / "dynamics.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"No dynamics model in {directory} (dynamics.json is missing). Pass a saved "
                                "ensemble (a model-based run's dynamics/ or one under runs/dynamics/<dataset>/), or "
                                "leave --dynamics empty to train one.")
    meta = json.loads(meta_path.read_text())
    members, hidden = meta["num_members"], tuple(meta["hidden_dims"])
    network = GaussianEnsemble(members, meta["output_dim"], hidden)
    params = network.init(jax.random.PRNGKey(0), jnp.zeros((members, 1, meta["input_dim"])))
    zeros_in, zeros_out = jnp.zeros(meta["input_dim"]), jnp.zeros(meta["output_dim"])
    template = DynamicsModel(params, zeros_in, zeros_in, zeros_out, zeros_out,
                             jnp.zeros(meta["num_elites"], jnp.int32), members, hidden)
    # as device arrays: a NumPy elite index table cannot be indexed by a traced rng draw
    return jax.tree.map(jnp.asarray, serialization.from_bytes(template, (directory / "dynamics.msgpack").read_bytes()))


# --- termination of imagined transitions ---------------------------------------------------

TerminationFn = Callable[[jax.Array], jax.Array]  # next_obs (batch, obs_dim) -> terminal (batch,) bool


def hopper_terminal(next_obs):
    """Gymnasium Hopper-v5 is_healthy on its observation (qpos[1:], qvel): z > 0.7,
    |angle| < 0.2, and every entry of qpos[2:] and qvel inside (-100, 100)."""
    z, angle = next_obs[:, 0], next_obs[:, 1]
    healthy = (z > 0.7) & (jnp.abs(angle) < 0.2) & jnp.all(jnp.abs(next_obs[:, 1:]) < 100.0, axis=-1)
    return ~healthy


def walker2d_terminal(next_obs):
    """Gymnasium Walker2d-v5 is_healthy: 0.8 < z < 2.0 and -1 < angle < 1."""
    z, angle = next_obs[:, 0], next_obs[:, 1]
    return ~((z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0))


def never_terminal(next_obs):
    return jnp.zeros(next_obs.shape[0], dtype=bool)


KNOWN_TERMINATIONS: dict[str, TerminationFn] = {
    "Hopper": hopper_terminal,
    "Walker2d": walker2d_terminal,
    "HalfCheetah": never_terminal,
}


def known_termination(env_id: str | None) -> TerminationFn | None:
    """The termination rule of a Gymnasium MuJoCo env (v5 observations), or None."""
    if not env_id:
        return None
    name, _, version = env_id.partition("-v")
    return KNOWN_TERMINATIONS.get(name) if version == "5" else None


class TerminationClassifier(flax.struct.PyTreeNode):
    """A learned P(terminal | next_obs), for tasks without a known rule (NeoRL-2)."""

    params: dict
    obs_mean: jax.Array
    obs_std: jax.Array
    hidden_dims: tuple[int, ...] = flax.struct.field(pytree_node=False)

    def logits(self, next_obs):
        return MLP(self.hidden_dims, 1, activation="swish").apply(
            self.params, (next_obs - self.obs_mean) / self.obs_std)[..., 0]

    def __call__(self, next_obs):
        return self.logits(next_obs) > 0.0


def train_termination_classifier(data: dict[str, np.ndarray], hidden_dims: tuple[int, ...] = (200, 200),
                                 epochs: int = 20, batch_size: int = 256, learning_rate: float = 1e-3,
                                 seed: int = 0) -> TerminationClassifier:
    """Logistic MLP on next observations against the dataset's terminal flags. Terminals are
    rare, so positives are up-weighted by negatives/positives (balanced classes)."""
    next_obs = np.asarray(data["next_observations"], np.float32)
    labels = np.asarray(data["terminals"], np.float32)
    positives = labels.sum()
    if positives == 0:
        raise ValueError("The data has no terminal transitions to learn termination from; imagined "
                         "transitions then never terminate (use never_terminal).")
    obs_mean, obs_std = next_obs.mean(0), next_obs.std(0) + 1e-6
    x, y = jnp.asarray((next_obs - obs_mean) / obs_std), jnp.asarray(labels)
    pos_weight = (len(labels) - positives) / positives
    network = MLP(hidden_dims, 1, activation="swish")
    params = network.init(jax.random.PRNGKey(seed), x[:1])
    optimizer = optax.adam(learning_rate)
    batches = max(len(labels) // batch_size, 1)

    def loss_fn(params, xb, yb):
        logits = network.apply(params, xb)[..., 0]
        weights = jnp.where(yb > 0, pos_weight, 1.0)
        return (weights * optax.sigmoid_binary_cross_entropy(logits, yb)).mean()

    @jax.jit
    def train(params, rng):
        def epoch(carry, key):
            params, opt_state = carry
            order = jax.random.permutation(key, len(labels))[: batches * batch_size].reshape(batches, batch_size)

            def step(carry, rows):
                params, opt_state = carry
                updates, opt_state = optimizer.update(jax.grad(loss_fn)(params, x[rows], y[rows]), opt_state)
                return (optax.apply_updates(params, updates), opt_state), None

            return jax.lax.scan(step, (params, opt_state), order)[0], None

        return jax.lax.scan(epoch, (params, optimizer.init(params)), jax.random.split(rng, epochs))[0][0]

    params = train(params, jax.random.PRNGKey(seed + 1))
    return TerminationClassifier(params, jnp.asarray(obs_mean), jnp.asarray(obs_std), tuple(hidden_dims))
