"""The shared offline training loop behind every algorithm script.

dataset id -> offrl.data (flat arrays) -> preprocessing -> device arrays -> compiled
chunks of `log_every` updates for all seeds -> logging, evaluation, checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from gymnasium.envs.registration import EnvSpec

from offrl.core.fqe import FQEConfig
from offrl.core.learner import (
    Algorithm,
    compile_members,
    init_states,
    make_train_steps,
    sample_uniform,
    scan_updates,
    seed_slice,
)
from offrl.data import (
    DatasetError,
    OfflineDataset,
    Preprocessing,
    fit_preprocessing,
    load_dataset,
    local_dataset_ids,
    normalized_score,
    read_metadata,
)
from offrl.data.suite import outdated
from offrl.run import checkpoint
from offrl.run.algorithms import algorithm_module
from offrl.run.config import OnlineConfig, TrainConfig, dataset_config_name, parse_config
from offrl.run.directory import (
    RunResult,
    check_divergence,
    closing_run,
    default_run_dir,
    read_run,
    record_run,
    recorded_fingerprint,
    resume_flag,
    resume_step,
    run_directory,
    run_status,
    stop_if_requested,
    stop_requested,
)
from offrl.run.errors import user_errors_as_messages
from offrl.run.evaluate import evaluate_seeds, make_env, make_policy, require_fit
from offrl.run.logging import RunLogger, resolve_wandb_mode
from offrl.run.online import OnlinePhase, new_buffers, online_carry, require_chunk_boundary, run_online
from offrl.run.ope import FQEvaluator, evaluation_data

MakeAlgorithm = Callable[[Any, int, int], Algorithm]  # (config, obs_dim, act_dim) -> Algorithm


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


def packed_program(make_algorithm: MakeAlgorithm, points: list[dict[str, float]]) -> Callable[..., TrainProgram]:
    """Offline training of several hyperparameter points at once (sweeps): each (point,
    seed) member is a slice of one vmapped program, its values passed as traced scalars
    into the algorithm's losses, so every member shares one compiled program."""

    def make_program(algorithm: Algorithm, config: TrainConfig, seeds: list[int], data, dataset: OfflineDataset,
                     run_dir: Path) -> TrainProgram:
        obs_dim, act_dim = data["observations"].shape[1], data["actions"].shape[1]
        values = {key: jnp.asarray([point[key] for point in points for _ in seeds], jnp.float32) for key in points[0]}
        states, rngs = init_states(algorithm, [seed for _ in points for seed in seeds])

        def one_member(state, rng, data, first_step, hyperparameters):
            member = make_algorithm(dataclasses.replace(config, **hyperparameters), obs_dim, act_dim)
            updates = scan_updates(member.update, sample_uniform(config.batch_size), config.log_every)
            return updates(state, rng, data, first_step)

        steps = compile_members(one_member, carried=2, other_axes=(None, None, 0))

        def run(carry, data, first_update):
            states, rngs, metrics, finite = steps(carry["states"], carry["rngs"], data, first_update, values)
            return {"states": states, "rngs": rngs}, metrics, finite

        return TrainProgram({"states": states, "rngs": rngs}, run, lambda carry: carry["states"])

    return make_program


def train(make_algorithm: MakeAlgorithm, config: TrainConfig, algo: str, show_progress: bool = True,
          make_program: Callable[..., TrainProgram] = offline_program) -> RunResult:
    """Offline training, then (with --online_steps) fine-tuning in the environment, in stages:
    1. `training_data`: the dataset, refused if it cannot serve this run;
    2. `checked_envs`: the evaluation and fine-tuning envs, made once so a bad one stops the
       run now, not at its first evaluation;
    3. the run directory, held for the whole run, and the update it resumes from;
    4. `prepared_data`: the preprocessing (fitted, or the resumed run's own) and device arrays;
    5. `offline_updates`: compiled chunks of updates, with evaluation, logging, checkpoints;
    6. `fine_tune`: the online phase, which the online-only runs of offrl.run.online share."""
    dataset = training_data(config)
    eval_env, online_env = checked_envs(config, dataset)
    resolve_wandb_mode(config.wandb)  # --wandb online without a key fails now, not after the run began
    run_path = Path(config.resume or config.run_dir or default_run_dir(config.root, algo, config.dataset, config.seeds))
    with run_directory(run_path, resume=bool(config.resume)) as run_dir:
        start = resume_step(run_dir) if config.resume else 0
        config = _on_the_run_grid(config, start)
        obs_dim, act_dim = dataset.observations.shape[1], dataset.actions.shape[1]
        # the data's own score, its reference scores and evaluation env travel with the run, so
        # reports and `offrl evaluate` work where the dataset is not (runs copied off a GPU machine)
        run_id = record_run(run_dir, config, {
            "algorithm": algo, "dataset": config.dataset, "observation_dim": obs_dim, "action_dim": act_dim,
            "data_normalized_return": dataset.summary().get("normalized_return_mean"),
            "ref_min_score": dataset.metadata.ref_min_score, "ref_max_score": dataset.metadata.ref_max_score,
            "dataset_fingerprint": dataset.fingerprint(),
            "eval_env": eval_env if isinstance(eval_env, str) or eval_env is None else json.loads(eval_env.to_json()),
        })
        algorithm = make_algorithm(config, obs_dim, act_dim)
        preprocessing, data = prepared_data(run_dir, config, dataset, algorithm)
        program, seeds, members = training_program(make_program, make_algorithm, algorithm, config, data, dataset,
                                                   run_dir)
        score_of = dataset.normalized_score if dataset.metadata.has_reference_scores else None
        evaluate = policy_evaluation(config, algorithm, preprocessing, seeds, eval_env, score_of, dataset)

        logger = RunLogger(run_dir, dataclasses.asdict(config), algo, seeds, config.num_updates + config.online_steps,
                           start, config.wandb, config.wandb_project, show_progress, members, run_id)
        with closing_run(logger, run_dir):
            carry, final_eval = program.carry, {}
            if 0 < start <= config.num_updates:
                carry = checkpoint.restore(checkpoint.latest(run_dir), {"carry": carry})["carry"]
            if start < config.num_updates:
                carry, final_eval = offline_updates(program, carry, data, start, config, run_dir, logger, evaluate)
            if config.online_steps:
                final_eval = fine_tune(algorithm, config, program.states(carry), carry["rngs"], data, start,
                                       online_env, preprocessing, run_dir, logger, seeds, score_of)
    return RunResult(run_dir, config.num_updates + config.online_steps, final_eval, dataset)


def training_data(config: TrainConfig) -> OfflineDataset:
    """The run's dataset from the local store, refused where it cannot serve the run: without
    actions, or no longer the data a resumed run trained on; a suite dataset made from other
    behavior policies than the shipped ones trains with a warning."""
    dataset = load_dataset(config.dataset)
    if dataset.metadata.actions_missing:
        raise DatasetError(
            f"Dataset '{config.dataset}' is action-free (states and rewards only), so no algorithm can "
            "train on it. Give it proxy actions first: `offrl datasets proxy-label --labelled ID "
            f"--unlabelled {config.dataset} --out NEW_ID`, then train on NEW_ID.")
    name = dataset_config_name(config.dataset)
    if dataset.metadata.extra.get("source") == "offrl-suite" and (reason := outdated(name)):
        warnings.warn(f"{config.dataset} in the local store is out of date: {reason}. "
                      f"`offrl datasets generate {name} --overwrite` (or `make datasets`) makes it again.", stacklevel=3)
    if config.resume and recorded_fingerprint(Path(config.resume)) not in (None, dataset.fingerprint()):
        raise DatasetError(
            f"{config.dataset} has changed since {config.resume} began (its data or reference scores are not those "
            "the run trained on, e.g. it was made again from new behavior policies): resuming would go on with "
            "other data. Start a new run instead (another --run_dir), or restore the dataset the run trained on.")
    return dataset


def checked_envs(config: TrainConfig, dataset: OfflineDataset) -> tuple[Any, Any]:
    """(eval env, fine-tuning env): ids or the dataset's recorded spec, or None where there is
    none (NeoRL-2 data trains without evaluation). Each is made once here and must fit the
    data's observation and action sizes."""
    eval_env = config.eval_env or dataset.metadata.eval_env_spec
    online_env = config.online_env or eval_env
    if config.online_steps and online_env is None:
        raise DatasetError(f"Dataset '{config.dataset}' names no Gymnasium env to fine-tune in; "
                           "pass --online_env ENV_ID.")
    data_dims = dataset.observations.shape[1], dataset.actions.shape[1]
    for env, source in ((eval_env, "--eval_env" if config.eval_env else f"The eval env of {config.dataset},"),
                        (config.online_env if config.online_steps else "", "--online_env")):
        if env:  # an id or a dataset's spec; "" or None: none given
            with make_env(env, source) as made:
                require_fit(made, source, data_dims, config.dataset)
    return eval_env, online_env


def policy_evaluation(config: TrainConfig, algorithm: Algorithm, preprocessing: Preprocessing, seeds: list[int],
                      eval_env, score_of, dataset: OfflineDataset) -> Callable | None:
    """What scores the policies every eval_every updates: episodes in the eval env, and with
    --ope fqe FQE estimates beside them (where the dataset has no env, in their place); said
    when the run starts where the dataset has no env."""
    evaluators = []
    if eval_env is not None:
        evaluators.append(lambda states: evaluate_seeds(algorithm, states, seeds, preprocessing, eval_env,
                                                        config.eval_episodes, score_of))
    if config.ope:
        record = {"dataset": config.dataset, "observation_dim": dataset.observations.shape[1],
                  "action_dim": dataset.actions.shape[1]}
        evaluator = FQEvaluator(algorithm.act, evaluation_data(record, config.ope_data or None), preprocessing,
                                FQEConfig(num_updates=config.ope_updates),
                                (dataset.metadata.ref_min_score, dataset.metadata.ref_max_score))
        evaluators.append(evaluator)
        if eval_env is None:
            print(f"{config.dataset} names no Gymnasium env: FQE estimates the policies from {evaluator.data_id} "
                  f"every {config.eval_every:,} updates ({config.ope_updates:,} critic updates each); they are "
                  "estimates, not measured returns.")
    elif eval_env is None:
        print(f"{config.dataset} names no Gymnasium env, so this run is not evaluated while it trains: pass --ope "
              "fqe to estimate its policies from data every --eval_every updates, or estimate them afterwards "
              "with `offrl evaluate RUN_DIR --ope fqe`.")
    if not evaluators:
        return None
    return lambda states: {key: value for evaluate in evaluators for key, value in evaluate(states).items()}


def _on_the_run_grid(config: TrainConfig, start: int) -> TrainConfig:
    """The config a run resumed at update `start` goes on with. Chunks of `log_every` updates
    must end on `start`, the evaluations, the checkpoints and the budget; a resumed run given
    another --log_every that does not divide `start` logs at their greatest common divisor.
    Fine-tuning's chunks of env steps are not changed: a run stopped during it resumes with
    an --online_update_every that divides its env steps, or is refused."""
    if start > config.num_updates and not config.online_steps:
        raise ValueError(f"--num_updates {config.num_updates}: the run has trained {start:,} updates already; "
                         "pass at least that many, or start a new run.")
    if start > config.num_updates:  # stopped while fine-tuning
        require_chunk_boundary(start - config.num_updates, config.online_update_every * config.online_num_envs)
    if start >= config.num_updates or start % config.log_every == 0:
        return config
    log_every = math.gcd(config.log_every, start)
    print(f"resuming at update {start:,}, which --log_every {config.log_every} does not divide: logging every "
          f"{log_every} updates, so that evaluations and checkpoints stay on the run's steps.")
    return dataclasses.replace(config, log_every=log_every)


def prepared_data(run_dir: Path, config: TrainConfig, dataset: OfflineDataset, algorithm: Algorithm):
    """(preprocessing, device arrays): a new run fits the preprocessing to the dataset and
    saves it; a resumed one goes on with its own. The algorithm may add columns computed
    from the preprocessed data (Cal-QL's Monte-Carlo returns)."""
    if config.resume:
        preprocessing = Preprocessing.load(run_dir / "preprocessing.json")
    else:
        preprocessing = fit_preprocessing(dataset, config.normalize_observations, config.reward_transform,
                                          config.reward_scale, config.reward_bias)
        preprocessing.save(run_dir / "preprocessing.json")
    arrays = preprocessing.apply(dataset)
    if algorithm.dataset_columns is not None:
        arrays.update(algorithm.dataset_columns(arrays, dataset.episode_starts))
    return preprocessing, jax.device_put(arrays)


def training_program(make_program: Callable[..., TrainProgram], make_algorithm: MakeAlgorithm, algorithm: Algorithm,
                     config: TrainConfig, data, dataset: OfflineDataset, run_dir: Path):
    """(program, the seed of each member, the hyperparameters of each member or None). With
    --pack, the members are every packed hyperparameter point with every seed."""
    seeds, members = config.seed_list(), None
    if config.pack:
        points = json.loads(config.pack)
        if make_program is not offline_program or config.online_steps:
            raise ValueError("--pack packs hyperparameters of plain offline training only.")
        make_program = packed_program(make_algorithm, points)
        members = [point for point in points for _ in seeds]
        seeds = [seed for _ in points for seed in seeds]
    return make_program(algorithm, config, config.seed_list(), data, dataset, run_dir), seeds, members


def offline_updates(program: TrainProgram, carry, data, start: int, config: TrainConfig, run_dir: Path,
                    logger: RunLogger, evaluate: Callable | None):
    """Chunks of `log_every` updates from update `start` to the budget; after each, the
    divergence check, evaluation where due, the log row and a checkpoint where due. Returns
    the carry and the last evaluation."""
    seeds, final_eval = logger.seeds, {}
    for step in range(start, config.num_updates, config.log_every):
        carry, metrics, finite = jax.block_until_ready(program.run(carry, data, step))
        end = step + config.log_every
        metrics = {key: np.asarray(value) for key, value in metrics.items()}
        check_divergence(end, np.asarray(finite), metrics, seeds, config.divergence_threshold, run_dir)
        if evaluate is not None and (end % config.eval_every == 0 or end == config.num_updates):
            final_eval = evaluate(program.states(carry))
            metrics.update(final_eval)
        logger.log(end, metrics, config.log_every)
        if end % config.checkpoint_every == 0 or end == config.num_updates or stop_requested():
            checkpoint.save(run_dir, end, {"carry": carry}, config.keep_checkpoints)
        stop_if_requested(end)
    return carry, final_eval


def fine_tune(algorithm: Algorithm, config: TrainConfig, states, rngs, data, start: int, env, preprocessing,
              run_dir: Path, logger: RunLogger, seeds: list[int], score_of) -> dict[str, np.ndarray]:
    """The online phase after the offline updates: it starts from the offline states (passed
    through the algorithm's on_online_start) with empty buffers, or, for a run stopped while
    fine-tuning (`start` past the offline budget), from its checkpoint."""
    if start > config.num_updates:
        carry = checkpoint.restore(checkpoint.latest(run_dir), {"carry": _online_start(config, states, rngs, data)})
        carry = carry["carry"]
    else:
        if algorithm.on_online_start is not None:
            states = jax.vmap(lambda state: algorithm.on_online_start(state, config))(states)
        carry = _online_start(config, states, rngs, data)
    _, final_eval = run_online(algorithm, algorithm.online_update or algorithm.update,
                               OnlinePhase.fine_tuning(config, env), seeds, carry, preprocessing, run_dir, logger,
                               data, score_of)
    return final_eval


def _online_start(config: TrainConfig, states, rngs, data) -> dict:
    """The online phase's carry: the offline states, and empty buffers with the dataset's columns."""
    obs_dim, act_dim = data["observations"].shape[1], data["actions"].shape[1]
    buffers = new_buffers(len(config.seed_list()), config.online_buffer_size, obs_dim, act_dim, tuple(data))
    return online_carry(states, rngs, config.seed_list(), buffers)


def main(make_algorithm: MakeAlgorithm, config_cls: type, algo: str, argv: list[str] | None = None,
         make_program: Callable[..., TrainProgram] = offline_program, show_summary: bool = True) -> RunResult:
    """Entry point of an algorithm script: parse the config, train, print a summary. Run from
    a shell (argv None), a user error prints as one line without a traceback (offrl.run.errors)."""
    with user_errors_as_messages(enabled=argv is None):
        config = parse_config(config_cls, algo, argv)
        result = train(make_algorithm, config, algo, make_program=make_program)
    final = result.final_eval
    for key, what in (("eval/normalized_score", "final score"), ("eval/return", "final return"),
                      ("ope/fqe_normalized_score", "final FQE estimate of the score"),
                      ("ope/fqe_return", "final FQE estimate of the return")):
        if show_summary and key in final:
            print(f"{algo} on {config.dataset}: {what} {np.mean(final[key]):.1f} ± {np.std(final[key]):.1f} "
                  f"over seeds {config.seeds}")
            break
    if show_summary:
        print(f"run directory: {result.run_dir}")
    return result


def train_by_name(algo: str, argv: list[str] | None = None, show_summary: bool = True) -> RunResult:
    """Train offrl.algorithms.<algo> with command-line options: offline algorithms through
    `main` with their own training program, if they have one; online ones (SAC) through
    their own main."""
    module = algorithm_module(algo)
    if issubclass(module.Config, OnlineConfig):
        return module.main(argv)
    return main(module.make, module.Config, algo, argv, make_program=getattr(module, "program", offline_program),
                show_summary=show_summary)


def finished_run(algo: str, run_dir: str | Path, total_steps: int, seeds: str, argv: list[str]) -> Path:
    """For experiments that reuse their runs: `run_dir` holding a finished run of `algo` over
    `total_steps` steps with `seeds`, trained with `argv` where there is none, resumed where one
    was cut off (see run_status)."""
    run_dir = Path(run_dir)
    status = run_status(run_dir, total_steps, seeds)
    if status != "finished":
        resume = resume_flag(run_dir, status)
        train_by_name(algo, resume or [*argv, "--run_dir", str(run_dir)], show_summary=False)
    return run_dir


def restore_run(run_dir: str | Path, checkpoint_path: str | Path | None = None):
    """(algorithm, stacked states, preprocessing, config) of a run, from its latest
    checkpoint or the one given. The algorithm is rebuilt from the run's saved config."""
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    module = algorithm_module(run["algorithm"])
    config = parse_config(module.Config, run["algorithm"], ["--resume", str(run_dir)])
    algorithm = module.make(config, run["observation_dim"], run["action_dim"])
    pack = getattr(config, "pack", "")  # packed hyperparameter points (offline sweeps)
    members = len(json.loads(pack)) if pack else 1
    states, _ = init_states(algorithm, config.seed_list() * members)
    saved = checkpoint_path or checkpoint.latest(run_dir)
    if saved is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint yet.")
    # Only the algorithm states are restored. Offline runs checkpoint their TrainProgram
    # carry (states, rngs and e.g. model buffers); online runs checkpoint states and rngs.
    saved_tree = checkpoint.read(saved)
    saved_states = saved_tree["carry"]["states"] if "carry" in saved_tree else saved_tree["states"]
    states = checkpoint.fill(states, saved_states, saved)
    return algorithm, states, Preprocessing.load(run_dir / "preprocessing.json"), config


def run_members(config) -> tuple[list[int], list[dict]]:
    """The seed and the packed hyperparameter point ({} unpacked) of each policy a run
    holds, in the order of its stacked states: every point with every seed."""
    points = json.loads(config.pack) if getattr(config, "pack", "") else [{}]
    return ([seed for _ in points for seed in config.seed_list()],
            [point for point in points for _ in config.seed_list()])


def load_policy(run_dir: str | Path, seed_index: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """A trained policy as a plain function: raw env observations -> env actions.

    Restores the run's latest checkpoint and applies its recorded preprocessing. An env with
    Dict or Tuple observations gives them flat: wrap it in `offrl.run.evaluate.flat_observations`."""
    algorithm, states, preprocessing, config = restore_run(run_dir)
    count = len(jax.tree.leaves(states)[0])  # seeds, times the hyperparameter points of a packed run
    if not 0 <= seed_index < count:
        raise ValueError(f"seed_index {seed_index}: {run_dir} holds {count} policies (seeds {config.seeds}"
                         f"{', for each packed point' if count > len(config.seed_list()) else ''}); pass an index "
                         f"from 0 to {count - 1}.")
    return make_policy(algorithm.act, seed_slice(states, seed_index), preprocessing)


def evaluate_run(run_dir: str | Path, episodes: int = 100, env: str | None = None,
                 checkpoint_path: str | Path | None = None) -> dict[str, Any]:
    """Each seed's mean return over `episodes` episodes of its deterministic policy, from the
    run's latest checkpoint or the one given, and the normalized score where its dataset has
    reference scores: final numbers over more episodes than training evaluated, with every
    episode's return and score ([seeds, episodes]) to judge their spread. The env and
    reference scores come from run.json, so the dataset need not be local. The environments
    are seeded as in training, so the same episode count repeats the run's last evaluation."""
    run_dir = Path(run_dir)
    algorithm, states, preprocessing, config = restore_run(run_dir, checkpoint_path)
    run = read_run(run_dir)
    if "eval_env" not in run and run.get("dataset") in local_dataset_ids():  # a run from before run.json had them
        metadata = read_metadata(run["dataset"])
        run.update(eval_env=metadata.eval_env_spec, ref_min_score=metadata.ref_min_score,
                   ref_max_score=metadata.ref_max_score)
    recorded = run.get("eval_env")  # an env id, or a whole spec (kwargs included) as a dict
    given = env
    env = env or (EnvSpec.from_json(json.dumps(recorded)) if isinstance(recorded, dict) else recorded) or run.get("env")
    if env is None:
        raise DatasetError(f"No Gymnasium env to evaluate {run_dir} in: its dataset '{run.get('dataset')}' names "
                           "none (or the run predates run.json's eval_env and the dataset is not local). Pass one "
                           "with --env ENV_ID.")
    source = "--env" if given else f"The eval env of {run_dir},"
    with make_env(env, source) as made:
        require_fit(made, source, (run["observation_dim"], run["action_dim"]), f"the run's data ({run.get('dataset')})")
    reference = (run.get("ref_min_score"), run.get("ref_max_score"))
    score_of = None if None in reference else (lambda returns: normalized_score(returns, *reference))
    seeds, points = run_members(config)
    return {"seeds": seeds, "points": points, "episodes": episodes, "env": getattr(env, "id", env),
            **evaluate_seeds(algorithm, states, seeds, preprocessing, env, episodes, score_of, keep_episodes=True)}
