"""An inverse dynamics model (IDM) and proxy labelling of action-free trajectories
(Zheng et al. 2023, "Semi-Supervised Offline Reinforcement Learning with Action-Free
Trajectories").

The IDM predicts a_t from a window of normalized states (s_{t-1}, s_t, s_{t+1}) (at an
episode's first step s_{t-1} repeats s_t): a tanh-squashed diagonal Gaussian over an MLP
[1024, 1024] with dropout 0.1, trained by negative log-likelihood (lr 1e-4, batch 1024)
on the labelled trajectories for a budget of gradient steps, with about 10% of their
transitions held out as whole trajectories; the parameters whose mean action did best on
the held-out split are kept, and training stops early once they stop improving. An
optional ensemble of IDMs (each with its own init and batches) gives a per-step
uncertainty: the spread of the members' mean actions.

    offrl datasets proxy-label --labelled ID1 --unlabelled ID2 --out ID3
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from gymnasium import spaces

from offrl.core.nets import Dense, tanh_gaussian_log_prob
from offrl.data import DatasetError, OfflineDataset, load_dataset, write_dataset

ACTION_EDGE = 1.0 - 1e-4  # logged actions at the bounds are pulled inside for atanh


@dataclass(frozen=True)
class IDMConfig:
    """Defaults from the proxy-labelling paper. The budget is counted in gradient
    steps, as in the paper's code: a 10% labelled split can hold a few thousand transitions,
    where 100 epochs would be only a few hundred steps."""

    hidden_dims: tuple[int, ...] = (1024, 1024)
    dropout: float = 0.1
    learning_rate: float = 1e-4
    batch_size: int = 1024
    validation_fraction: float = 0.1  # of the labelled transitions, held out as whole trajectories
    max_steps: int = 20_000  # rounded up to whole validate_every chunks
    validate_every: int = 100  # gradient steps between validations
    patience: int = 20  # validations without a lower validation action error before stopping
    ensemble: int = 1
    seed: int = 0

    def __post_init__(self):  # an empty ensemble once labelled every action NaN, and no steps left the IDM untrained
        for name in ("batch_size", "max_steps", "validate_every", "patience", "ensemble"):
            if getattr(self, name) < 1:
                raise ValueError(f"IDM {name} {getattr(self, name)}: it must be at least 1.")
        if not 0.0 < self.validation_fraction < 1.0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"IDM validation_fraction {self.validation_fraction} must be in (0, 1) and dropout "
                             f"{self.dropout} in [0, 1).")


class InverseDynamics(nn.Module):
    action_dim: int
    hidden_dims: tuple[int, ...] = (1024, 1024)
    dropout: float = 0.1

    @nn.compact
    def __call__(self, windows, train: bool = False):
        x = windows
        for width in self.hidden_dims:
            x = nn.relu(Dense(width)(x))
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        mean, log_std = jnp.split(Dense(2 * self.action_dim)(x), 2, axis=-1)
        return mean, jnp.clip(log_std, -5.0, 2.0)


def state_windows(observations: np.ndarray, next_observations: np.ndarray, episode_starts: np.ndarray) -> np.ndarray:
    """(s_{t-1}, s_t, s_{t+1}) for every transition; s_{t-1} = s_t at an episode's first step."""
    previous = np.empty_like(observations)
    previous[1:] = observations[:-1]
    previous[episode_starts] = observations[episode_starts]
    return np.concatenate([previous, observations, next_observations], axis=1)


def unit_actions(actions: np.ndarray, action_space: spaces.Box) -> np.ndarray:
    """Env actions -> [-1, 1] (the tanh range)."""
    low, high = action_space.low, action_space.high
    return np.clip(2.0 * (actions - low) / (high - low) - 1.0, -ACTION_EDGE, ACTION_EDGE).astype(np.float32)


class IDM(flax.struct.PyTreeNode):
    """A trained IDM (or ensemble), with its input normalization and action bounds."""

    params: dict  # leading ensemble axis
    window_mean: jax.Array
    window_std: jax.Array
    action_low: jax.Array
    action_high: jax.Array
    hidden_dims: tuple[int, ...] = flax.struct.field(pytree_node=False)

    def predict(self, windows) -> tuple[jax.Array, jax.Array]:
        """Mean actions in env units, averaged over the ensemble, and the ensemble's spread
        (std of the members' mean actions, averaged over action dims; 0 for one member)."""
        network = InverseDynamics(self.action_low.shape[0], self.hidden_dims)
        normalized = (windows - self.window_mean) / self.window_std
        means = jax.vmap(lambda p: jnp.tanh(network.apply(p, normalized)[0]))(self.params)
        actions = self.action_low + (means.mean(0) + 1.0) * 0.5 * (self.action_high - self.action_low)
        return actions, means.std(0).mean(-1)


@dataclass
class IDMReport:
    steps: int  # gradient steps taken (early stopping may end training before max_steps)
    seconds: float
    validation_nll: float
    validation_action_mse: float  # mean squared error of the mean action, [-1, 1] units
    history: list[float] = field(default_factory=list)  # validation action MSE after every validate_every steps


def validation_rows(episode_starts: np.ndarray, num_rows: int, fraction: float, seed: int) -> np.ndarray:
    """Rows of whole, randomly chosen trajectories making up at least `fraction` of the rows.
    Holding out whole trajectories keeps a validation window from sharing two of its three
    states with a training window, which would make the validation error optimistic."""
    if len(episode_starts) < 2:
        raise DatasetError("The IDM needs at least 2 labelled trajectories (one to train on, one to validate "
                           f"on); got {len(episode_starts)}. Label a larger fraction of the trajectories.")
    ends = np.append(episode_starts[1:], num_rows)
    chosen, held_out = [], 0
    for episode in np.random.default_rng(seed).permutation(len(episode_starts))[:-1]:
        chosen.append(np.arange(episode_starts[episode], ends[episode]))
        held_out += ends[episode] - episode_starts[episode]
        if held_out >= fraction * num_rows:
            break
    return np.concatenate(chosen)


def train_idm(dataset: OfflineDataset, config: IDMConfig = IDMConfig(), log=print) -> tuple[IDM, IDMReport]:
    began = time.perf_counter()
    action_space = spaces.flatten_space(dataset.metadata.action_space)
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise DatasetError(f"'{dataset.dataset_id}' has an unbounded action space; the IDM's tanh-Gaussian "
                           "needs bounded actions.")
    windows = state_windows(dataset.observations, dataset.next_observations, dataset.episode_starts)
    actions = unit_actions(dataset.actions, action_space)
    valid_rows = validation_rows(dataset.episode_starts, len(windows), config.validation_fraction, config.seed)
    train_rows = np.setdiff1d(np.arange(len(windows)), valid_rows)
    mean, std = windows[train_rows].mean(0), windows[train_rows].std(0) + 1e-6
    train_x, train_y = jnp.asarray((windows[train_rows] - mean) / std), jnp.asarray(actions[train_rows])
    valid_x, valid_y = jnp.asarray((windows[valid_rows] - mean) / std), jnp.asarray(actions[valid_rows])
    network = InverseDynamics(actions.shape[1], config.hidden_dims, config.dropout)
    optimizer = optax.adam(config.learning_rate)
    keys = jax.random.split(jax.random.PRNGKey(config.seed), config.ensemble)
    params = jax.vmap(lambda key: network.init(key, train_x[:1]))(keys)

    def nll(params, x, y, dropout_key=None):
        train = dropout_key is not None
        mean, log_std = network.apply(params, x, train, rngs={"dropout": dropout_key} if train else None)
        return -tanh_gaussian_log_prob(mean, log_std, jnp.arctanh(y)).mean()

    def validate(params):
        mean, log_std = network.apply(params, valid_x)
        return (-tanh_gaussian_log_prob(mean, log_std, jnp.arctanh(valid_y)).mean(),
                ((jnp.tanh(mean) - valid_y) ** 2).mean())

    @jax.jit
    @jax.vmap
    def train_steps(params, opt_state, key):
        """`validate_every` gradient steps on uniformly drawn batches, then a validation."""

        def step(carry, step_key):
            params, opt_state = carry
            rows_key, dropout_key = jax.random.split(step_key)
            rows = jax.random.randint(rows_key, (config.batch_size,), 0, train_x.shape[0])
            grads = jax.grad(nll)(params, train_x[rows], train_y[rows], dropout_key)
            updates, opt_state = optimizer.update(grads, opt_state)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), jax.random.split(key, config.validate_every))
        return params, opt_state, *validate(params)

    opt_state = jax.vmap(optimizer.init)(params)
    best_params, best_nll, best_mse = params, np.full(config.ensemble, np.inf), np.full(config.ensemble, np.inf)
    history, since, steps = [], 0, 0
    key = jax.random.PRNGKey(config.seed + 1)
    while steps < config.max_steps and since < config.patience:
        key, chunk_key = jax.random.split(key)
        params, opt_state, valid_nll, valid_mse = train_steps(params, opt_state,
                                                              jax.random.split(chunk_key, config.ensemble))
        valid_nll, valid_mse = np.asarray(valid_nll), np.asarray(valid_mse)
        # The mean action is the label, so the model is chosen on its error: on small labelled
        # splits the NLL turns upward early as the predicted std shrinks while the mean still improves.
        better = valid_mse < best_mse
        best_params = jax.tree.map(lambda new, old: jnp.where(
            better.reshape((-1,) + (1,) * (new.ndim - 1)), new, old), params, best_params)
        best_nll, best_mse = np.where(better, valid_nll, best_nll), np.where(better, valid_mse, best_mse)
        since = 0 if better.any() else since + 1
        steps += config.validate_every
        history.append(float(valid_mse.mean()))
        if log:
            log(f"IDM step {steps}: validation NLL {valid_nll.mean():.4f}, action MSE {valid_mse.mean():.4f}")
    idm = IDM(best_params, jnp.asarray(mean), jnp.asarray(std), jnp.asarray(action_space.low, jnp.float32),
              jnp.asarray(action_space.high, jnp.float32), tuple(config.hidden_dims))
    return idm, IDMReport(steps, time.perf_counter() - began, float(best_nll.mean()), float(best_mse.mean()), history)


def label_actions(idm: IDM, dataset: OfflineDataset, chunk: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """IDM mean actions (env units) and their ensemble spread for every transition."""
    windows = state_windows(dataset.observations, dataset.next_observations, dataset.episode_starts)
    predict = jax.jit(IDM.predict)  # the model is an argument, not baked into the program
    parts = [predict(idm, jnp.asarray(windows[start:start + chunk])) for start in range(0, len(windows), chunk)]
    return (np.concatenate([np.asarray(a) for a, _ in parts]).astype(np.float32),
            np.concatenate([np.asarray(u) for _, u in parts]).astype(np.float32))


@dataclass
class ProxyLabelResult:
    dataset_id: str
    report: IDMReport
    labelled_steps: int
    proxy_steps: int


def proxy_label(labelled_id: str, unlabelled_id: str, out_id: str, config: IDMConfig = IDMConfig(),
                overwrite: bool = False, log=print) -> ProxyLabelResult:
    """Write `out_id`: the labelled trajectories with their actions, then the action-free
    ones with IDM mean actions; a per-step `proxy_action` flag (episode infos) marks which."""
    labelled, unlabelled = load_dataset(labelled_id), load_dataset(unlabelled_id)
    if labelled.metadata.actions_missing:
        raise DatasetError(f"'{labelled_id}' is action-free; the IDM needs a labelled dataset.")
    if labelled.observations.shape[1] != unlabelled.observations.shape[1]:
        raise DatasetError(f"'{labelled_id}' and '{unlabelled_id}' have different observation sizes "
                           f"({labelled.observations.shape[1]} and {unlabelled.observations.shape[1]}).")
    sources = {"labelled_fingerprint": labelled.fingerprint(), "unlabelled_fingerprint": unlabelled.fingerprint()}
    idm, report = train_idm(labelled, config, log)
    proxy, spread = label_actions(idm, unlabelled)
    unlabelled.actions = proxy
    logged, proxied = labelled.episodes(), unlabelled.episodes()
    episodes = logged + proxied
    infos = ([{"proxy_action": np.zeros(len(e.rewards), bool)} for e in logged]
             + [{"proxy_action": np.ones(len(e.rewards), bool)} for e in proxied])
    if config.ensemble > 1:  # per-step uncertainty of the labels: 0 where the action was logged
        spreads = ([np.zeros(len(e.rewards), np.float32) for e in logged]
                   + np.split(spread, unlabelled.episode_starts[1:]))
        infos = [{**info, "proxy_spread": values} for info, values in zip(infos, spreads)]
    meta = labelled.metadata
    write_dataset(
        out_id, episodes, spaces.flatten_space(meta.observation_space), spaces.flatten_space(meta.action_space),
        eval_env=meta.eval_env_spec, ref_min_score=meta.ref_min_score, ref_max_score=meta.ref_max_score,
        description=f"{labelled_id} with true actions plus {unlabelled_id} with IDM proxy actions.",
        offrl_metadata={"source": "proxy-label", "labelled": labelled_id, "unlabelled": unlabelled_id, **sources,
                        "idm": {**asdict(config), "report": {k: v for k, v in asdict(report).items() if k != "history"}},
                        "idm_validation_action_mse": report.validation_action_mse,
                        "proxy_spread_mean": float(spread.mean()) if config.ensemble > 1 else None},
        episode_infos=infos, overwrite=overwrite)
    return ProxyLabelResult(out_id, report, labelled.num_transitions, unlabelled.num_transitions)
