"""The offrl dataset suite: D4RL-style MuJoCo datasets generated locally from shipped
SAC behavior policies (datasets/policies), so no download is ever needed.

    offrl datasets generate hopper-medium [--steps N] [--seed S]   (offrl.data.generate)

This module knows the suite: its ids, the behavior-policy manifest and whether a local
dataset still matches it. Kinds follow the D4RL protocol (Fu et al. 2020):
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
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from offrl.data.collect import BatchPolicy
from offrl.data.errors import DatasetError
from offrl.data.store import SUITE_KINDS as KINDS
from offrl.data.store import SUITE_NAME, read_metadata
from offrl.resources import installed_folder, require_installed

# datasets/policies in the repository, installed as the package data offrl.policies
SHIPPED_POLICIES = installed_folder("offrl.policies")
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
    if Path(policy_dir) == SHIPPED_POLICIES:
        require_installed(SHIPPED_POLICIES)
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
