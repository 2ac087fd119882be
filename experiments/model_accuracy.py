"""Experiment: how far imagined rollouts drift from the real ones, against the horizon.

    python experiments/model_accuracy.py --dataset offrl/hopper/medium-v0 [--dynamics DIR] [--horizon 100]
        [--max-epochs N]

From dataset states that have `horizon` more steps in their episode (and no velocity at
the observation clip, so the simulator can rebuild the state), replay the dataset's own
actions through:
- the plain ensemble (a random elite per step, sampled, as RAVL and MOPO roll out);
- the ensemble with MOREC's filter (the candidate with the highest dynamics reward);
- the true simulator (offrl.model_based.simulator), set once from the start observation and stepped on.
The error at step t is the L2 distance to the dataset's recorded state s_t. The simulator
line is the floor: the float32 rounding of the start state, grown by the contact dynamics.
MOREC's first line follows every rollout to the horizon; its second only the rollouts
whose chosen dynamics reward has stayed above the threshold (those MOREC would still be
rolling out), whose fraction is reported too. Writes experiments/results/model_accuracy_<dataset>.json/.png.

Without --dynamics, the ensemble is the one RAVL and MOREC runs train on the same data and
settings (offrl.model_based.ensembles.shared_dynamics: reused from runs/dynamics if there, else trained
and put there), and the dynamics reward is kept in runs/model_accuracy/<dataset>/<ensemble>,
so a dataset made again since gets a new ensemble rather than a stale one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from offrl.data import load_dataset  # noqa: E402
from offrl.model_based.dynamics import DynamicsConfig, load_dynamics  # noqa: E402
from offrl.model_based.dynamics_reward import learn_dynamics_reward, load_dynamics_reward, save_dynamics_reward  # noqa: E402
from offrl.model_based.ensembles import shared_dynamics  # noqa: E402
from offrl.model_based.simulator import Simulator  # noqa: E402
from offrl.run.algorithms import algorithm_module  # noqa: E402
from offrl.run.config import dataset_config_name  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]  # runs of experiments go under its runs/

RESULTS = Path(__file__).resolve().parent / "results"
VELOCITY_CLIP = 10.0  # Hopper-v5 and Walker2d-v5 clip observed velocities to +-10


def start_rows(dataset, horizon: int, count: int, seed: int) -> np.ndarray:
    """Rows with `horizon` more steps in the same episode, no termination before them, and
    no clipped velocity in the start observation (the simulator could not rebuild that state)."""
    ends = np.append(dataset.episode_starts[1:], dataset.num_transitions)
    exact = (np.abs(dataset.observations) < VELOCITY_CLIP).all(axis=1)
    rows = [row for start, end in zip(dataset.episode_starts, ends) for row in range(start, end - horizon + 1)
            if exact[row] and not dataset.terminals[row:row + horizon - 1].any()]
    return np.random.default_rng(seed).choice(np.array(rows), min(count, len(rows)), replace=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="offrl/hopper/medium-v0")
    parser.add_argument("--dynamics", type=Path, help="a saved ensemble (and dynamics reward); default: train one")
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--starts", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-epochs", type=int, default=DynamicsConfig.max_epochs,
                        help="cap on the ensemble's training epochs (early stopping may end it sooner)")
    args = parser.parse_args()
    dataset = load_dataset(args.dataset)
    name = dataset_config_name(args.dataset)
    arrays = {key: getattr(dataset, key) for key in ("observations", "actions", "next_observations", "rewards")}
    if args.dynamics:
        directory = ensemble = args.dynamics
    else:  # the ensemble RAVL and MOREC runs on this data share; the dynamics reward beside it, per ensemble
        ensemble = shared_dynamics(args.dataset, arrays, DynamicsConfig(max_epochs=args.max_epochs))
        directory = REPO_ROOT / "runs" / "model_accuracy" / name / ensemble.name
    model = load_dynamics(ensemble)
    morec = algorithm_module("morec")
    config = morec.Config()
    if (directory / "dynamics_reward.json").is_file():
        reward = load_dynamics_reward(directory, model)
    else:
        reward, reward_report = learn_dynamics_reward(model, arrays)
        save_dynamics_reward(reward, reward_report, directory)

    rows = start_rows(dataset, args.horizon, args.starts, args.seed)
    truth = np.stack([dataset.next_observations[rows + t] for t in range(args.horizon)])  # (horizon, starts, obs)
    actions = np.stack([dataset.actions[rows + t] for t in range(args.horizon)])
    plain_step = jax.jit(model.step)
    filtered_step = jax.jit(lambda o, a, key: morec.filtered_step(config)((model, reward), o, a, key))
    simulated = Simulator(dataset.metadata.eval_env_spec.id).replay(dataset.observations[rows], actions)
    states = {"plain ensemble": jnp.asarray(dataset.observations[rows]),
              "MOREC filter": jnp.asarray(dataset.observations[rows])}
    kept_line = "MOREC filter, rollouts it keeps"
    errors = {key: [] for key in (*states, kept_line, "true simulator")}
    median_errors = {key: [] for key in errors}  # a few runaway rollouts can make the mean infinite
    above_threshold, alive = [], np.ones(len(rows), bool)
    key = jax.random.PRNGKey(args.seed)
    for t in range(args.horizon):
        key, plain_key, filter_key = jax.random.split(key, 3)
        states["plain ensemble"] = plain_step(states["plain ensemble"], jnp.asarray(actions[t]), plain_key)[0]
        next_obs, _, _, keep = filtered_step(states["MOREC filter"], jnp.asarray(actions[t]), filter_key)
        states["MOREC filter"] = next_obs
        alive &= np.asarray(keep)
        above_threshold.append(float(alive.mean()))
        states["true simulator"] = simulated[t]
        distances = {method: np.linalg.norm(np.asarray(state, np.float64) - truth[t], axis=-1)
                     for method, state in states.items()}
        distances[kept_line] = distances["MOREC filter"][alive]
        for method, distance in distances.items():
            errors[method].append(float(distance.mean()) if distance.size else float("nan"))
            median_errors[method].append(float(np.median(distance)) if distance.size else float("nan"))

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"model_accuracy_{name}.json").write_text(json.dumps({
        "dataset": args.dataset, "horizon": args.horizon, "starts": len(rows), "mean_l2_error": errors,
        "median_l2_error": median_errors,
        "morec_still_above_threshold": above_threshold, "threshold": config.reward_threshold,
        "dynamics_training": json.loads((ensemble / "dynamics.json").read_text())["report"],
        "dynamics_reward": json.loads((directory / "dynamics_reward.json").read_text())["report"]}, indent=1))
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, (statistic, lines) in zip(axes, {"mean": errors, "median": median_errors}.items()):
        for method, values in lines.items():
            axis.plot(range(1, args.horizon + 1), values, label=method)
        axis.set(xlabel="rollout step", ylabel=f"{statistic} L2 state error", title=name, yscale="log")
    axes[0].legend()
    figure.savefig(RESULTS / f"model_accuracy_{name}.png", dpi=100, bbox_inches="tight")
    for t in sorted({1, 5, 10, 25, 50, args.horizon}):
        if t <= args.horizon:
            print(f"step {t:>3} (mean / median): " + ", ".join(
                f"{m} {errors[m][t - 1]:.3g} / {median_errors[m][t - 1]:.3g}" for m in errors)
                  + f"; MOREC above threshold {above_threshold[t - 1]:.2f}")


if __name__ == "__main__":
    main()
