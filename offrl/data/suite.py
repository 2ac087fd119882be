"""The offrl dataset suite: D4RL-style MuJoCo datasets generated locally from shipped
SAC behavior policies (datasets/policies), so no download is ever needed.

    offrl datasets generate hopper-medium [--steps N] [--seed S]

Kinds follow the D4RL protocol (Fu et al. 2020):
- random: uniform random actions;
- medium / expert: actions sampled from the stochastic SAC policy (not its mean);
- medium-replay: the medium agent's replay buffer, approximated by rolling out its
  checkpoint ladder, each rung for the share of training steps it stands for;
- medium-expert: medium and expert data together.

A policy manifest (datasets/policies/manifest.json, or any directory given by
--policies) lists per environment the policy files, their training steps and their mean
returns over 100 episodes, plus the random policy's. ref_min_score / ref_max_score are
the random and expert mean returns.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from offrl.data.collect import BatchPolicy, collect_episodes
from offrl.data.envs import route_mujoco_warnings
from offrl.data.errors import DatasetError, DatasetExistsError
from offrl.data.store import SUITE_KINDS as KINDS
from offrl.data.store import SUITE_NAME, dataset_path, read_metadata, write_dataset, writing

# datasets/policies in the repository, installed as the package data offrl.policies
SHIPPED_POLICIES = Path(str(resources.files("offrl.policies")))
MANIFEST = "manifest.json"
# the log-std bounds of offrl.core.nets.TanhGaussianActor, the SAC actor that trained the policies
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
DEFAULT_STEPS = 1_000_000  # as in D4RL; medium-replay defaults to the medium agent's training steps
VERSIONED_PACKAGES = ("offrl", "jax", "flax", "gymnasium", "mujoco", "minari", "numpy")


def suite_id(env_name: str, kind: str) -> str:
    """('hopper', 'medium-replay') -> 'offrl/hopper/medium-replay-v0'"""
    return f"offrl/{env_name}/{kind}-v0"


def parse_name(name: str) -> tuple[str, str]:
    """'hopper-medium-replay' -> ('hopper', 'medium-replay'); also accepts a suite id."""
    if name.startswith("offrl/"):
        _, env_name, kind = name.split("/")
        return env_name, kind.rsplit("-v", 1)[0]
    if short := SUITE_NAME.fullmatch(name):
        return short["env"], short["kind"]
    raise DatasetError(f"'{name}' is not <env>-<kind>; kinds are {', '.join(KINDS)} "
                       "(e.g. hopper-medium-replay).")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def package_versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in VERSIONED_PACKAGES}


@dataclass(frozen=True)
class BehaviorPolicy:
    """One shipped policy: a tanh-Gaussian SAC actor's parameters and what is known about it."""

    env_id: str
    name: str  # expert | medium | ladder-NN
    path: Path
    training_steps: int
    mean_return: float
    hidden_dims: tuple[int, ...]
    observation_dim: int
    action_dim: int

    def layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The actor MLP's (kernel, bias) pairs in float64, read without building the network."""
        from flax import serialization  # imports jax: only where weights are read

        try:
            params = serialization.msgpack_restore(self.path.read_bytes())["params"]["MLP_0"]
        except (OSError, ValueError, KeyError, TypeError) as error:  # missing, cut short, or not an actor's weights
            raise DatasetError(f"{self.path} (the {self.name} policy of the manifest) cannot be read as actor weights "
                               f"({type(error).__name__}: {error}). Restore it (git checkout datasets/policies for "
                               "the shipped ones) or rebuild the policies with datasets/make_behavior_policies.py.") \
                from None
        if set(params) != {f"Dense_{index}" for index in range(len(params))}:
            raise DatasetError(f"{self.path} is not a tanh-Gaussian actor of Dense layers only (its layers: "
                               f"{', '.join(sorted(params))}); rebuild it with datasets/make_behavior_policies.py.")
        layers = [(np.asarray(params[f"Dense_{index}"]["kernel"], np.float64),
                   np.asarray(params[f"Dense_{index}"]["bias"], np.float64)) for index in range(len(params))]
        widths = [self.observation_dim, *self.hidden_dims, 2 * self.action_dim]  # the head gives mean and log-std
        expected = [((fan_in, fan_out), (fan_out,)) for fan_in, fan_out in zip(widths, widths[1:])]
        found = [(kernel.shape, bias.shape) for kernel, bias in layers]
        if found != expected:
            raise DatasetError(f"{self.path} holds layers of shapes {found}, where the manifest's observation_dim, "
                               f"hidden_dims and action_dim say {expected}; the weights and the manifest are from "
                               "different policies: rebuild them together with datasets/make_behavior_policies.py.")
        return layers

    def sampler(self, action_space: gym.spaces.Box) -> BatchPolicy:
        """Batched stochastic actions of the SAC actor (offrl.core.nets.TanhGaussianActor: ReLU MLP,
        log-std clipped, tanh-squashed), rescaled to the env's bounds.

        It runs in float64 NumPy, not in jax: XLA's float32 results change in the last bit
        with the jax version, its flags and the device, and MuJoCo turns one flipped bit into
        another trajectory, so jax-made datasets would differ from machine to machine. Rounded
        from float64 to the float32 that collect_episodes records and steps, the actions do
        not depend on jax at all, and a last-bit float64 difference between BLAS or NumPy
        builds changes them only where a value sits on a float32 rounding boundary."""
        layers = self.layers()
        low, high = action_space.low.astype(np.float64), action_space.high.astype(np.float64)

        def policy(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            hidden = np.asarray(obs, np.float64)
            for kernel, bias in layers[:-1]:
                hidden = np.maximum(hidden @ kernel + bias, 0.0)
            mean, log_std = np.split(hidden @ layers[-1][0] + layers[-1][1], 2, axis=-1)
            std = np.exp(np.clip(log_std, LOG_STD_MIN, LOG_STD_MAX))
            unit = np.tanh(mean + std * rng.standard_normal(mean.shape))
            return low + (unit + 1.0) * 0.5 * (high - low)

        return policy


@dataclass(frozen=True)
class SuiteEnv:
    """A manifest entry: an environment, its random-policy return and its behavior policies."""

    name: str
    env_id: str
    random_return: float
    warmup_steps: int  # uniform random actions SAC took before its policy acted
    policies: dict[str, BehaviorPolicy]

    @property
    def expert(self) -> BehaviorPolicy:
        return self.policies["expert"]

    @property
    def medium(self) -> BehaviorPolicy:
        return self.policies["medium"]

    @property
    def ladder(self) -> list[BehaviorPolicy]:
        rungs = [policy for name, policy in self.policies.items() if name.startswith("ladder-")]
        return sorted(rungs, key=lambda policy: policy.training_steps)


def read_manifest(policy_dir: Path = SHIPPED_POLICIES) -> dict[str, SuiteEnv]:
    path = Path(policy_dir) / MANIFEST
    if not path.is_file():
        raise DatasetError(f"No behavior-policy manifest at {path}. Use the shipped policies "
                           "(datasets/policies) or build your own with datasets/make_behavior_policies.py.")
    suite = {}
    try:
        for name, entry in json.loads(path.read_text()).items():
            policies = {
                policy["name"]: BehaviorPolicy(
                    env_id=entry["env_id"], name=policy["name"], path=Path(policy_dir) / policy["file"],
                    training_steps=int(policy["training_steps"]), mean_return=float(policy["mean_return"]),
                    hidden_dims=tuple(entry["hidden_dims"]), observation_dim=int(entry["observation_dim"]),
                    action_dim=int(entry["action_dim"]))
                for policy in entry["policies"]
            }
            suite[name] = SuiteEnv(name, entry["env_id"], float(entry["random"]["mean_return"]),
                                   int(entry["warmup_steps"]), policies)
    except (ValueError, KeyError, TypeError, AttributeError) as error:  # JSON that does not parse, or lacks a field
        raise DatasetError(f"{path} is not a behavior-policy manifest offrl can read ({type(error).__name__}: "
                           f"{error}). Restore it (git checkout datasets/policies for the shipped one) or write it "
                           "again with datasets/make_behavior_policies.py.") from None
    return suite


def uniform_policy(action_space: gym.spaces.Box) -> BatchPolicy:
    def policy(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(action_space.low, action_space.high, (len(obs), *action_space.shape))
    return policy


@dataclass
class Segment:
    """`steps` transitions collected with one policy (None: uniform random)."""

    policy: BehaviorPolicy | None
    steps: int


def generation_plan(env: SuiteEnv, kind: str, steps: int | None) -> list[Segment]:
    if kind == "random":
        return [Segment(None, steps or DEFAULT_STEPS)]
    if kind in ("medium", "expert"):
        return [Segment(env.policies[kind], steps or DEFAULT_STEPS)]
    if kind == "medium-expert":
        return [Segment(env.medium, steps or DEFAULT_STEPS), Segment(env.expert, steps or DEFAULT_STEPS)]
    if kind == "medium-replay":
        return replay_plan(env, steps)
    raise DatasetError(f"Unknown dataset kind '{kind}'; kinds are {', '.join(KINDS)}.")


def replay_plan(env: SuiteEnv, steps: int | None) -> list[Segment]:
    """The medium agent's replay buffer, approximated: SAC's uniform random warm-up, then
    each ladder rung (the medium policy last) rolls out for the env steps its agent trained
    for since the previous rung, so the mix follows training progress. The default size is
    the medium agent's training steps, its whole buffer; `steps` rescales every share."""
    rungs = [rung for rung in env.ladder if rung.training_steps < env.medium.training_steps] + [env.medium]
    bounds = np.array([0, env.warmup_steps] + [rung.training_steps for rung in rungs], dtype=np.float64)
    target = steps or env.medium.training_steps
    counts = np.diff(np.round(bounds / bounds[-1] * target).astype(np.int64))
    return [Segment(policy, int(count)) for policy, count in zip([None] + rungs, counts) if count > 0]


@dataclass
class GenerationReport:
    dataset_id: str
    steps: int
    episodes: int
    seconds: float

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds


@dataclass(frozen=True)
class Chunk:
    """One stream's share of a segment: its own environments and seed."""

    env_id: str
    policy: BehaviorPolicy | None
    steps: int
    num_envs: int
    seed: int


_progress_counter = None  # a shared step counter in worker processes
_parent_pid = None


def _init_worker(counter) -> None:
    global _progress_counter, _parent_pid
    _progress_counter, _parent_pid = counter, os.getppid()


def _count(steps: int) -> None:
    # A killed generate (SIGTERM, SIGKILL) cannot shut its pool down: its workers notice
    # that they were orphaned and stop, instead of stepping MuJoCo on for minutes.
    if os.getppid() != _parent_pid:
        os._exit(1)
    with _progress_counter.get_lock():
        _progress_counter.value += steps


def collect_chunk(chunk: Chunk, on_steps: Callable[[int], None] | None = None):
    route_mujoco_warnings()
    action_space = gym.make(chunk.env_id).action_space
    policy = uniform_policy(action_space) if chunk.policy is None else chunk.policy.sampler(action_space)
    return collect_episodes(chunk.env_id, policy, chunk.steps, num_envs=chunk.num_envs, seed=chunk.seed,
                            on_steps=on_steps or _count)


def split_plan(env_id: str, plan: list[Segment], seed: int, num_envs: int, streams: int) -> list[Chunk]:
    """Each segment split evenly over `streams` streams of num_envs // streams environments,
    every chunk seeded apart."""
    chunks = []
    for index, segment in enumerate(plan):
        shares = np.diff(np.round(np.linspace(0, segment.steps, streams + 1)).astype(np.int64))
        chunks += [Chunk(env_id, segment.policy, int(share), max(1, num_envs // streams),
                         seed * 1_000_000 + index * 1000 + stream)
                   for stream, share in enumerate(shares) if share > 0]
    return chunks


# The suite's datasets (datasets/README.md) were made as 14 streams of 2 environments:
# these defaults remake them on any machine, whatever its core count.
DEFAULT_NUM_ENVS = 32
DEFAULT_STREAMS = 14


def generate(name: str, steps: int | None = None, seed: int = 0, overwrite: bool = False,
             policy_dir: Path | None = None, num_envs: int = DEFAULT_NUM_ENVS, streams: int = DEFAULT_STREAMS,
             workers: int | None = None, show_progress: bool = True) -> GenerationReport:
    """Write the suite dataset `name` (e.g. 'hopper-medium') into the local Minari store.

    Each segment of the plan is split over `streams` independently seeded streams of
    `num_envs / streams` environments. MuJoCo stepping, not the policy, bounds the speed,
    so `workers` processes (default: one per core) step the streams' chunks side by side.
    The data depend on seed, num_envs and streams (all recorded), not on workers."""
    env_name, kind = parse_name(name)
    policy_dir = Path(policy_dir or SHIPPED_POLICIES)
    suite = read_manifest(policy_dir)
    if env_name not in suite:
        raise DatasetError(f"No behavior policies for '{env_name}' in {policy_dir / MANIFEST}; "
                           f"it has {', '.join(sorted(suite))}.")
    env = suite[env_name]
    plan = generation_plan(env, kind, steps)
    dataset_id = suite_id(env_name, kind)
    with writing(dataset_id):  # a second writer of this id is refused now, before minutes of collection
        if dataset_path(dataset_id).exists() and not overwrite:
            raise DatasetExistsError(f"Dataset '{dataset_id}' already exists. Pass --overwrite to replace it.")
        chunks = split_plan(env.env_id, plan, seed, num_envs, streams)
        workers = min(workers or os.cpu_count() or 1, len(chunks))
        total = sum(segment.steps for segment in plan)
        began = time.perf_counter()
        with Progress(TextColumn(f"generating {dataset_id}"), BarColumn(),
                      TextColumn("{task.completed:,}/{task.total:,} steps"), TimeRemainingColumn(),
                      disable=not show_progress) as progress:
            task = progress.add_task("collect", total=total)
            if workers == 1:
                results = [collect_chunk(chunk, lambda count: progress.advance(task, count)) for chunk in chunks]
            else:
                context = multiprocessing.get_context("spawn")  # jax does not survive fork
                counter = context.Value("q", 0)
                with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                         initargs=(counter,)) as pool:
                    pending = [pool.submit(collect_chunk, chunk) for chunk in chunks]
                    while not all(future.done() for future in pending):
                        progress.update(task, completed=counter.value)
                        time.sleep(0.25)
                    results = [future.result() for future in pending]
        seconds = time.perf_counter() - began
        episodes = [episode for collected, _, _ in results for episode in collected]
        _, obs_space, act_space = results[0]
        used = {segment.policy.name: segment.policy for segment in plan if segment.policy is not None}
        write_dataset(
            dataset_id, episodes, obs_space, act_space, eval_env=env.env_id,
            ref_min_score=env.random_return, ref_max_score=env.expert.mean_return,
            description=f"{env.env_id} {kind}, D4RL protocol, generated by offrl from SAC behavior policies.",
            offrl_metadata={
                "source": "offrl-suite", "kind": kind, "env_id": env.env_id, "seed": seed,
                "shipped_policies": policy_dir.resolve() == SHIPPED_POLICIES.resolve(),
                "num_envs": num_envs, "streams": streams, "workers": workers,
                "segments": [{"policy": "uniform-random" if s.policy is None else s.policy.name, "steps": s.steps}
                             for s in plan],
                "policies": {name: {"file": p.path.name, "sha256": file_sha256(p.path),
                                    "training_steps": p.training_steps, "mean_return": p.mean_return}
                             for name, p in used.items()},
                "versions": package_versions(),
                "generation_steps_per_s": total / seconds,
            },
            overwrite=overwrite,
        )
    return GenerationReport(dataset_id, total, len(episodes), seconds)


def outdated(name: str, policy_dir: Path | None = None) -> str | None:
    """Why the local suite dataset `name` no longer matches the behavior policies in
    policy_dir, or None when it does. A dataset made before a policy file or the manifest's
    reference returns changed holds other data and other normalized scores than a fresh
    one. Without policy_dir, a dataset made from the shipped policies is checked against
    them, and one made from a user's own policies is not checked."""
    env_name, kind = parse_name(name)
    metadata = read_metadata(suite_id(env_name, kind))
    if policy_dir is None:
        # sets made before the flag used the shipped ones; without the repo's policies, nothing to check against
        if not metadata.extra.get("shipped_policies", True) or not (SHIPPED_POLICIES / MANIFEST).is_file():
            return None
        policy_dir = SHIPPED_POLICIES
    manifest = read_manifest(Path(policy_dir))
    if env_name not in manifest:
        return None
    env = manifest[env_name]
    made_from = metadata.extra.get("policies", {})
    changed = sorted(policy for policy, recorded in made_from.items()
                     if policy not in env.policies or file_sha256(env.policies[policy].path) != recorded["sha256"])
    if changed:
        return f"the behavior policies it was made from have changed ({', '.join(changed)})"
    recorded_scores = (metadata.ref_min_score, metadata.ref_max_score)
    current_scores = (env.random_return, env.expert.mean_return)
    if not all(old is not None and math.isclose(old, new) for old, new in zip(recorded_scores, current_scores)):
        return (f"its reference returns {recorded_scores} are not the manifest's {current_scores}, "
                "so its normalized scores are out of date")
    return None


def ensure_dataset(name: str, steps: int | None = None, seed: int = 0) -> str:
    """The suite dataset's id, generating it first if it is not in the local store or was
    made from other behavior policies than the shipped ones."""
    env_name, kind = parse_name(name)
    dataset_id = suite_id(env_name, kind)
    if not dataset_path(dataset_id).exists():
        print(f"{dataset_id} is not in the local store; generating it from the shipped policies.")
        generate(name, steps=steps, seed=seed)
    elif reason := outdated(name):
        print(f"{dataset_id} in the local store is out of date: {reason}. Generating it again.")
        generate(name, steps=steps, seed=seed, overwrite=True)
    return dataset_id
