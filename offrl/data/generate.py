"""Generating the suite's datasets (offrl.data.suite) from the behavior policies of a
manifest: each kind's plan of policies and steps, collected in parallel streams of
environments and written to the local Minari store.

    offrl datasets generate hopper-medium [--steps N] [--seed S]
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from offrl.data import suite
from offrl.data.collect import collect_episodes
from offrl.data.envs import route_mujoco_warnings
from offrl.data.errors import DatasetError, DatasetExistsError
from offrl.data.store import dataset_path, write_dataset, writing
from offrl.data.suite import (
    DEFAULT_STEPS,
    KINDS,
    MANIFEST,
    BehaviorPolicy,
    SuiteEnv,
    file_sha256,
    outdated,
    package_versions,
    parse_name,
    read_manifest,
    suite_id,
    uniform_policy,
)


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
    policy_dir = Path(policy_dir or suite.SHIPPED_POLICIES)
    manifest = read_manifest(policy_dir)
    if env_name not in manifest:
        raise DatasetError(f"No behavior policies for '{env_name}' in {policy_dir / MANIFEST}; "
                           f"it has {', '.join(sorted(manifest))}.")
    env = manifest[env_name]
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
                "shipped_policies": policy_dir.resolve() == suite.SHIPPED_POLICIES.resolve(),
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
