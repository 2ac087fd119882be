"""Check: do a trained IQL critic's advantages of the data's actions track their real value?

    python experiments/iql_advantage_check.py RUN_DIR

For every transition of the run's dataset (preprocessed as the run saw it): the advantage
A = min_i Q_i'(s, a) - V(s) of the latest checkpoint's first seed, the discounted Monte-Carlo
return G of the logged episode, and whether the episode ends in a fall within 20 steps.
Prints how Q and V compare with G, how much of the data sits at the advantage-weight clip,
how A correlates with the reward and with the realized G - V, and what the 10% of actions
with the highest advantage (the ones AWR weights most) have in common, and V - G, mean A and
reward grouped by the steps left before the episode's fall.

    python experiments/iql_advantage_check.py RUN_DIR --train-actors 40000

also trains fresh actors by IQL's actor loss against these frozen advantages, 3 seeds, with
weights from (1) A itself, (2) A shuffled over the transitions (the same weights, no
ranking) and (3) no weights (BC with IQL's actor); a seed's three actors share their
initialization and batches. It prints their normalized scores every tenth of the budget:
if (1) falls below (2) and (3), the critic's ranking of the actions is at fault, not the
weighting itself. Used in experiments/results/iql_walker2d_medium.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import yaml

from offrl.core.learner import seed_slice
from offrl.core.nets import CriticEnsemble, GaussianActor, ValueNet, gaussian_log_prob
from offrl.core.rl import monte_carlo_returns
from offrl.data import load_dataset
from offrl.run.algorithms import algorithm_module
from offrl.run.evaluate import evaluate_policy, make_policy
from offrl.run.train import restore_run

FALL_HORIZON = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--train-actors", type=int, default=0, metavar="UPDATES")
    parser.add_argument("--actor-seeds", type=int, default=3)
    parser.add_argument("--eval-episodes", type=int, default=10)
    args = parser.parse_args()
    _, states, preprocessing, _ = restore_run(args.run_dir)
    state = seed_slice(states, 0)
    saved = yaml.safe_load((args.run_dir / "config.yaml").read_text())
    dataset = load_dataset(json.loads((args.run_dir / "run.json").read_text())["dataset"])
    data = preprocessing.apply(dataset)
    critic, value = CriticEnsemble(2, tuple(saved["hidden_dims"])), ValueNet(tuple(saved["hidden_dims"]))
    q_of = jax.jit(lambda params, obs, act: critic.apply(params, obs, act).min(0))
    v_of = jax.jit(lambda params, obs: value.apply(params, obs))
    size, chunk = len(data["rewards"]), 100_000
    q = np.concatenate([np.asarray(q_of(state.critic_target, data["observations"][i:i + chunk], data["actions"][i:i + chunk]))
                        for i in range(0, size, chunk)])
    v = np.concatenate([np.asarray(v_of(state.value.params, data["observations"][i:i + chunk]))
                        for i in range(0, size, chunk)])
    advantage = q - v
    returns = monte_carlo_returns(data["rewards"], dataset.episode_starts, saved["gamma"])
    starts = dataset.episode_starts
    ends = np.r_[starts[1:], size]
    steps_left = np.concatenate([np.arange(end - start, 0, -1) for start, end in zip(starts, ends)])
    falls = np.repeat(data["terminals"][ends - 1] > 0, ends - starts)  # the row's episode ends in a fall
    falls_soon = (steps_left <= FALL_HORIZON) & falls
    corr = lambda x, y: np.corrcoef(x, y)[0, 1]  # noqa: E731
    beta, clip = saved["beta"], saved["max_weight"]
    top = advantage > np.quantile(advantage, 0.9)
    print(f"Q - G: mean {np.mean(q - returns):.1f}, std {np.std(q - returns):.1f}; V - G: mean {np.mean(v - returns):.1f}")
    print(f"A: mean {advantage.mean():.2f}, std {advantage.std():.2f}; at the weight clip (beta {beta:g}): "
          f"{np.mean(advantage > np.log(clip) / beta):.3f} of the data")
    print(f"corr(A, r) {corr(advantage, data['rewards']):.3f}; corr(A, G - V) {corr(advantage, returns - v):.3f}")
    print(f"top 10% by A: reward {data['rewards'][top].mean():.2f} (all: {data['rewards'].mean():.2f}); fall within "
          f"{FALL_HORIZON} steps {falls_soon[top].mean():.3f} (all: {falls_soon.mean():.3f}); "
          f"G - V {np.mean((returns - v)[top]):.1f} (all: {np.mean(returns - v):.1f})")
    print("Before a fall: does V see it coming, and which actions get the advantage?")
    print("steps left | transitions | V - G | A | reward")
    groups = {f"{low}-{high}": falls & (steps_left >= low) & (steps_left <= high)
              for low, high in [(1, 1), (2, 5), (6, 10), (11, 20), (21, 50), (51, 100)]}
    groups[">100 or no fall"] = ~falls | (steps_left > 100)
    for name, rows in groups.items():
        print(f"{name} | {rows.sum():,} | {np.mean((v - returns)[rows]):.1f} | {advantage[rows].mean():.2f} | "
              f"{data['rewards'][rows].mean():.2f}")
    if args.train_actors:
        weightings = {"A": advantage, "A shuffled": np.random.default_rng(0).permutation(advantage),
                      "no weights": None}
        train_actors(weightings, data, saved, args.train_actors, args.eval_episodes, dataset, preprocessing,
                     args.actor_seeds)


def train_actors(weightings: dict, data: dict, saved: dict, updates: int, eval_episodes: int, dataset, preprocessing,
                 seeds: int):
    """IQL's actor loss and schedule, one actor per weighting and seed: the actors of a seed
    share their initialization and batches, so they differ only by their weights."""
    iql = algorithm_module("iql")
    actor = GaussianActor(data["actions"].shape[1], tuple(saved["hidden_dims"]))
    act = lambda actor_params, obs, rng, deterministic: actor.apply(actor_params, obs)[0]  # noqa: E731
    optimizer = optax.adam(optax.cosine_decay_schedule(saved["actor_lr"], updates))
    size = len(data["rewards"])
    weights = jnp.stack([jnp.ones(size) if a is None
                         else iql.advantage_weights(jnp.asarray(a), saved["beta"], saved["max_weight"])
                         for a in weightings.values()])
    init_keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    per_seed = jax.vmap(lambda key: actor.init(key, data["observations"][:1]))(init_keys)
    params = jax.tree.map(lambda x: jnp.stack([x] * len(weightings)), per_seed)  # (weightings, seeds, ...)
    opt_states = jax.vmap(jax.vmap(optimizer.init))(params)
    observations, actions = jnp.asarray(data["observations"]), jnp.asarray(data["actions"])

    def loss(actor_params, sample_weights, rows):
        mean, log_std = actor.apply(actor_params, observations[rows])
        return (sample_weights[rows] * -gaussian_log_prob(mean, log_std, actions[rows])).mean()

    def step(carry, key):
        actor_params, opt_state = carry
        rows = jax.random.randint(key, (seeds, saved["batch_size"]), 0, size)  # a seed's rows serve every weighting
        per_seed_grad = jax.vmap(jax.grad(loss), in_axes=(0, None, 0))
        grads = jax.vmap(per_seed_grad, in_axes=(0, 0, None))(actor_params, weights, rows)
        changes, opt_state = jax.vmap(jax.vmap(optimizer.update))(grads, opt_state, actor_params)
        return (optax.apply_updates(actor_params, changes), opt_state), None

    chunk = updates // 10
    run_chunk = jax.jit(lambda carry, key: jax.lax.scan(step, carry, jax.random.split(key, chunk))[0])
    carry, key = (params, opt_states), jax.random.PRNGKey(1)
    print(f"Actors trained on the frozen advantages (beta {saved['beta']:g}), normalized score, mean ± std over "
          f"{seeds} seeds:")
    print("updates | " + " | ".join(weightings))
    for done in range(chunk, chunk * 10 + 1, chunk):
        key, chunk_key = jax.random.split(key)
        carry = run_chunk(carry, chunk_key)
        scores = np.array([[dataset.normalized_score(evaluate_policy(
            make_policy(act, jax.tree.map(lambda x: x[w, s], carry[0]), preprocessing), dataset.metadata.eval_env_spec,
            eval_episodes, seed=0).mean()) for s in range(seeds)] for w in range(len(weightings))])
        print(f"{done} | " + " | ".join(f"{row.mean():.1f} ± {row.std():.1f}" for row in scores), flush=True)


if __name__ == "__main__":
    main()
