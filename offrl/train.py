"""The shared offline training loop behind every algorithm script.

dataset id -> offrl.data (flat arrays) -> preprocessing -> device arrays -> compiled
chunks of `log_every` updates for all seeds -> logging, evaluation, checkpoints.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from flax import serialization

from offrl import checkpoint
from offrl.config import TrainConfig, dataset_config_name, parse_config, save_config
from offrl.data import DatasetError, OfflineDataset, Preprocessing, fit_preprocessing, load_dataset
from offrl.evaluate import evaluate_policy, make_policy
from offrl.learner import Algorithm, init_states, make_train_steps, sample_uniform, seed_slice
from offrl.logging import RunLogger

REPO_ROOT = Path(__file__).resolve().parents[1]
MakeAlgorithm = Callable[[Any, int, int], Algorithm]  # (config, obs_dim, act_dim) -> Algorithm


class TrainingDiverged(RuntimeError):
    """NaN/inf in the state, or a metric beyond the divergence threshold."""


@dataclass
class RunResult:
    run_dir: Path
    final_step: int
    final_eval: dict[str, np.ndarray]  # per-seed eval metrics of the last evaluation
    dataset: OfflineDataset


def default_run_dir(algo: str, target: str, seeds: str) -> Path:
    """runs/<algo>/<dataset or env>/<time>-s<seeds>"""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return REPO_ROOT / "runs" / algo / dataset_config_name(target) / f"{stamp}-s{seeds.replace(',', '_')}"


def _eval_env(config: TrainConfig, dataset: OfflineDataset):
    return config.eval_env or dataset.metadata.eval_env_spec


def evaluate_seeds(algorithm, states, seeds, preprocessing, env, episodes: int,
                   normalized_score=None) -> dict[str, np.ndarray]:
    """Mean return of each seed's deterministic policy (and its normalized score)."""
    returns = np.array([
        evaluate_policy(make_policy(algorithm.act, seed_slice(states, index), preprocessing),
                        env, episodes, seed=100_000 + seed).mean()
        for index, seed in enumerate(seeds)
    ])
    result = {"eval/return": returns}
    if normalized_score is not None:
        result["eval/normalized_score"] = normalized_score(returns)
    return result


def check_divergence(step: int, finite: np.ndarray, metrics: dict[str, np.ndarray],
                      seeds: list[int], threshold: float, run_dir: Path) -> None:
    problems = [f"seed {seed}: NaN/inf in the training state" for seed, ok in zip(seeds, finite) if not ok]
    for name, values in metrics.items():
        for seed, value in zip(seeds, values):
            if abs(value) > threshold:
                problems.append(f"seed {seed}: |{name}| = {abs(value):.3g} > {threshold:g}")
    if problems:
        good = checkpoint.latest(run_dir)
        raise TrainingDiverged(
            f"Training diverged by update {step}: " + "; ".join(problems) + ". Last good "
            f"checkpoint: {good or 'none yet'}. Lower the learning rates, check the data for "
            "outliers, or resume from that checkpoint with --resume " + str(run_dir) + "."
        )


@dataclass
class TrainProgram:
    """What the training loop advances: `carry`, a pytree with a leading seed axis (the
    algorithm states, rngs and anything else a method keeps, e.g. model-rollout buffers),
    checkpointed whole; `run(carry, data, first_update)` -> (carry, metrics, finite) does
    `log_every` updates in one compiled call; `states(carry)` are the algorithm states."""

    carry: Any
    run: Callable[[Any, Any, int], tuple[Any, dict, Any]]
    states: Callable[[Any], Any]


def offline_program(algorithm: Algorithm, config: TrainConfig, seeds: list[int], data, dataset: OfflineDataset,
                    run_dir: Path) -> TrainProgram:
    """Plain offline training: uniform batches from the dataset."""
    states, rngs = init_states(algorithm, seeds)
    train_steps = make_train_steps(algorithm.update, sample_uniform(config.batch_size), config.log_every)

    def run(carry, data, first_update):
        states, rngs, metrics, finite = train_steps(carry["states"], carry["rngs"], data, first_update)
        return {"states": states, "rngs": rngs}, metrics, finite

    return TrainProgram({"states": states, "rngs": rngs}, run, lambda carry: carry["states"])


def train(make_algorithm: MakeAlgorithm, config: TrainConfig, algo: str, show_progress: bool = True,
          make_program: Callable[..., TrainProgram] = offline_program) -> RunResult:
    dataset = load_dataset(config.dataset)
    if dataset.metadata.actions_missing:
        raise DatasetError(
            f"Dataset '{config.dataset}' is action-free (states and rewards only), so no algorithm can "
            "train on it. Give it proxy actions first: `offrl datasets proxy-label --labelled ID "
            f"--unlabelled {config.dataset} --out NEW_ID`, then train on NEW_ID.")
    run_dir = Path(config.resume or config.run_dir or default_run_dir(algo, config.dataset, config.seeds))
    run_dir.mkdir(parents=True, exist_ok=True)
    if config.resume:
        preprocessing = Preprocessing.load(run_dir / "preprocessing.json")
    else:
        preprocessing = fit_preprocessing(dataset, config.normalize_observations, config.reward_transform,
                                          config.reward_scale, config.reward_bias)
        preprocessing.save(run_dir / "preprocessing.json")
        save_config(config, run_dir / "config.yaml")
        (run_dir / "run.json").write_text(json.dumps({
            "algorithm": algo, "dataset": config.dataset,
            "observation_dim": dataset.observations.shape[1], "action_dim": dataset.actions.shape[1],
        }))
    data = jax.device_put(preprocessing.apply(dataset))

    algorithm = make_algorithm(config, dataset.observations.shape[1], dataset.actions.shape[1])
    seeds = config.seed_list()
    program = make_program(algorithm, config, seeds, data, dataset, run_dir)
    carry, start = program.carry, 0
    if config.resume:
        saved = checkpoint.latest(run_dir)
        if saved is None:
            raise FileNotFoundError(f"{run_dir} has no checkpoint to resume from; start a new run.")
        restored = checkpoint.restore(saved, {"carry": carry})
        carry, start = restored["carry"], int(restored["step"])

    can_evaluate = _eval_env(config, dataset) is not None
    logger = RunLogger(run_dir, dataclasses.asdict(config), algo, seeds, config.num_updates, start,
                       config.wandb, config.wandb_project, show_progress)
    final_eval: dict[str, np.ndarray] = {}
    try:
        for step in range(start, config.num_updates, config.log_every):
            began = time.perf_counter()
            carry, metrics, finite = jax.block_until_ready(program.run(carry, data, step))
            speed = config.log_every * len(seeds) / (time.perf_counter() - began)
            end = step + config.log_every
            metrics = {key: np.asarray(value) for key, value in metrics.items()}
            check_divergence(end, np.asarray(finite), metrics, seeds, config.divergence_threshold, run_dir)
            if can_evaluate and (end % config.eval_every == 0 or end == config.num_updates):
                final_eval = evaluate_seeds(
                    algorithm, program.states(carry), seeds, preprocessing, _eval_env(config, dataset),
                    config.eval_episodes, dataset.normalized_score if dataset.metadata.has_reference_scores else None)
                metrics.update(final_eval)
            logger.log(end, metrics, speed)
            if end % config.checkpoint_every == 0 or end == config.num_updates:
                checkpoint.save(run_dir, end, {"carry": carry}, config.keep_checkpoints)
    finally:
        logger.close()
    return RunResult(run_dir, config.num_updates, final_eval, dataset)


def main(make_algorithm: MakeAlgorithm, config_cls: type, algo: str, argv: list[str] | None = None,
         make_program: Callable[..., TrainProgram] = offline_program) -> RunResult:
    """Entry point of an algorithm script: parse the config, train, print a summary."""
    config = parse_config(config_cls, algo, argv)
    result = train(make_algorithm, config, algo, make_program=make_program)
    if result.final_eval:
        score = result.final_eval.get("eval/normalized_score", result.final_eval["eval/return"])
        print(f"{algo} on {config.dataset}: final score {np.mean(score):.1f} ± {np.std(score):.1f} "
              f"over seeds {config.seeds}")
    print(f"run directory: {result.run_dir}")
    return result


def restore_run(run_dir: str | Path, checkpoint_path: str | Path | None = None):
    """(algorithm, stacked states, preprocessing) of a run, from its latest checkpoint or
    the one given. The algorithm is rebuilt from the run's saved config."""
    run_dir = Path(run_dir)
    run = json.loads((run_dir / "run.json").read_text())
    module = algorithm_module(run["algorithm"])
    config = parse_config(module.Config, run["algorithm"], ["--resume", str(run_dir)])
    algorithm = module.make(config, run["observation_dim"], run["action_dim"])
    states, _ = init_states(algorithm, config.seed_list())
    saved = checkpoint_path or checkpoint.latest(run_dir)
    if saved is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint yet.")
    # Only the algorithm states are restored. Offline runs checkpoint their TrainProgram
    # carry (states, rngs and e.g. model buffers); online runs checkpoint states and rngs.
    saved_tree = serialization.msgpack_restore(Path(saved).read_bytes())
    saved_states = saved_tree["carry"]["states"] if "carry" in saved_tree else saved_tree["states"]
    states = serialization.from_state_dict(states, saved_states)
    return algorithm, states, Preprocessing.load(run_dir / "preprocessing.json")


def load_policy(run_dir: str | Path, seed_index: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """A trained policy as a plain function: raw env observations -> env actions.

    Restores the run's latest checkpoint and applies its recorded preprocessing."""
    algorithm, states, preprocessing = restore_run(run_dir)
    return make_policy(algorithm.act, seed_slice(states, seed_index), preprocessing)


def algorithm_module(algo: str):
    path = REPO_ROOT / "algorithms" / f"{algo}.py"
    name = f"offrl_algorithms_{algo}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module
