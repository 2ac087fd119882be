"""Configs: dataclass defaults (published hyperparameters) < per-dataset YAML < command line.

Per-environment values live in algorithms/configs/<algo>/<env>.yaml (e.g.
algorithms/configs/morec/hopper.yaml), per-dataset ones in <algo>/<env>-<name>.yaml (e.g.
algorithms/configs/rebrac/hopper-medium.yaml for d4rl-hdf5/hopper/medium-v2 and for the
suite's offrl/hopper/medium-v0 alike), the second over the first. Overrides use `--key value`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from offrl.data.preprocess import REWARD_TRANSFORMS
from offrl.resources import installed_folder, require_installed
from offrl.run.arguments import is_seed

# the per-environment and per-dataset settings ship inside offrl.algorithms (algorithms/configs)
CONFIG_ROOT = installed_folder("offrl.algorithms") / "configs"
C = TypeVar("C")


@dataclass
class RunConfig:
    """What every run shares: seeds, batches, evaluation, logging, checkpoints."""

    seeds: str = "0"  # comma-separated; all seeds train side by side in one program
    batch_size: int = 256
    eval_every: int = 5000
    eval_episodes: int = 10
    checkpoint_every: int = 50_000
    keep_checkpoints: int = 2  # newest checkpoints kept on disk; 0 keeps every one
    root: str = "runs"  # where new runs go: ROOT/<algo>/<dataset or env>/<time>-s<seeds>
    run_dir: str = ""  # a run directory of your own instead
    resume: str = ""  # a run directory to continue from its last checkpoint
    wandb: str = "auto"  # online | offline | disabled | auto (online when an API key is set)
    wandb_project: str = "offrl"
    wandb_group: str = ""  # empty: <algorithm>/<dataset>; sweeps use the sweep's name
    divergence_threshold: float = 1e8  # |metric| above this stops the run
    # what a resumed run cannot change: its checkpoint holds these seeds' states
    FIXED_ON_RESUME: ClassVar[tuple[str, ...]] = ("seeds",)

    def seed_list(self) -> list[int]:
        try:
            seeds = [int(seed) for seed in str(self.seeds).split(",") if seed.strip()]
        except ValueError:
            raise ValueError(f"--seeds {self.seeds}: seeds are integers separated by commas, e.g. --seeds 0,1,2") \
                from None
        if not all(map(is_seed, seeds)):
            raise ValueError(f"--seeds {self.seeds}: each seed must be in [0, 2^32).")
        if len(set(seeds)) < len(seeds):  # two copies of one seed train the same numbers twice
            raise ValueError(f"--seeds {self.seeds}: a seed is repeated; list each seed once.")
        return seeds

    def validate(self) -> None:
        if not self.seed_list():
            raise ValueError("--seeds needs at least one seed, e.g. --seeds 0,1,2")
        if self.wandb not in ("online", "offline", "disabled", "auto"):
            raise ValueError("--wandb must be one of online, offline, disabled, auto")
        require_at_least(self, 1, "batch_size", "eval_every", "eval_episodes", "checkpoint_every")
        require_at_least(self, 0, "keep_checkpoints")
        require_in_range(self)


@dataclass
class TrainConfig(RunConfig):
    """Offline training: the dataset, the update budget and its preprocessing."""

    dataset: str = "offrl/hopper/medium-replay-v0"  # `make train`'s; `offrl datasets generate hopper-medium-replay`
    num_updates: int = 1_000_000
    log_every: int = 1000  # updates per compiled call; eval/checkpoint periods are multiples
    eval_env: str = ""  # Gymnasium id; empty: the dataset's eval env
    normalize_observations: bool = False
    reward_transform: str = "none"  # none | locomotion | antmaze | scale_bias
    reward_scale: float = 1.0
    reward_bias: float = 0.0
    # JSON list of hyperparameter points trained side by side with the seeds (sweeps set it),
    # e.g. '[{"actor_bc_coef": 0.01}, {"actor_bc_coef": 0.1}]'; only an algorithm's PACKABLE keys
    pack: str = ""
    # datasets without an env (NeoRL-2, your own logs): Fitted Q Evaluation at every evaluation instead
    ope: str = ""  # fqe: estimate the policies from data every eval_every updates; empty: none
    ope_data: str = ""  # the dataset FQE learns from; empty: the held-out split where local, else the training data
    ope_updates: int = 10_000  # FQE critic updates per estimate, a multiple of 1,000
    # offline-to-online fine-tuning after the offline updates (docs/online.md)
    online_steps: int = 0  # env steps per seed; 0: offline only
    online_env: str = ""  # Gymnasium id; empty: the eval env
    online_num_envs: int = 1  # environments per seed
    online_ratio: float = 0.5  # share of each batch from the online buffer (RLPD: 0.5)
    online_updates_per_step: int = 1  # update-to-data ratio
    online_update_every: int = 50  # vector steps between compiled update chunks
    online_eval_every: int = 10_000  # env steps; the online phase checkpoints at each evaluation
    online_buffer_size: int = 1_000_000
    # the data and its preprocessing, saved with the run and reapplied on resume
    FIXED_ON_RESUME: ClassVar[tuple[str, ...]] = RunConfig.FIXED_ON_RESUME + (
        "dataset", "pack", "normalize_observations", "reward_transform", "reward_scale", "reward_bias")

    def validate(self) -> None:
        super().validate()
        require_at_least(self, 1, "log_every", "online_num_envs", "online_updates_per_step", "online_update_every",
                         "online_eval_every", "online_buffer_size")
        require_at_least(self, 0, "num_updates", "online_steps")
        if not self.num_updates and not self.online_steps:
            raise ValueError("--num_updates 0 with no --online_steps leaves nothing to train: set either.")
        if self.reward_transform not in REWARD_TRANSFORMS:
            raise ValueError(f"--reward_transform {self.reward_transform}: choose one of {', '.join(REWARD_TRANSFORMS)}.")
        for name in ("eval_every", "checkpoint_every", "num_updates"):
            if getattr(self, name) % self.log_every:
                raise ValueError(f"{name}={getattr(self, name)} must be a multiple of log_every={self.log_every} "
                                 "(updates per compiled call): change it, or set --log_every to a divisor of it.")
        chunk = self.online_update_every * self.online_num_envs
        for name in ("online_steps", "online_eval_every"):
            if self.online_steps and getattr(self, name) % chunk:
                raise ValueError(f"{name}={getattr(self, name)} must be a multiple of online_update_every x "
                                 f"online_num_envs = {chunk} (env steps between compiled update chunks): change "
                                 "it, or --online_update_every.")
        if self.ope not in ("", "fqe"):
            raise ValueError(f"--ope {self.ope}: the estimator is fqe (or leave it empty for none).")
        if self.ope and (self.ope_updates < 1000 or self.ope_updates % 1000):
            raise ValueError(f"--ope_updates {self.ope_updates}: it must be a positive multiple of 1,000.")
        if not 0.0 < self.online_ratio <= 1.0:
            raise ValueError("--online_ratio must be in (0, 1]: the share of each batch from online data.")
        for point in json.loads(self.pack) if self.pack else []:  # a sweep's points, each checked as if set alone
            unknown = sorted(set(point) - config_keys(self))
            if unknown:
                raise ValueError(f"--pack sets {', '.join(unknown)}, which this algorithm has no setting of.")
            require_in_range(dataclasses.replace(self, pack="", **point))


@dataclass
class OnlineConfig(RunConfig):
    """Online training in a Gymnasium env. Periods count env steps (transitions) of one seed."""

    env: str = "Pendulum-v1"
    env_steps: int = 100_000
    num_envs: int = 1  # parallel envs per seed
    start_steps: int = 5000  # uniform random actions before the policy acts
    updates_per_step: int = 1  # update-to-data ratio
    update_every: int = 50  # vector steps between compiled chunks of updates
    buffer_size: int = 1_000_000
    eval_every: int = 10_000
    # Env steps between snapshots: the states alone, without the replay buffer a checkpoint
    # carries, to keep a policy's history cheaply (the suite's behavior policies). 0: none.
    snapshot_every: int = 0
    FIXED_ON_RESUME: ClassVar[tuple[str, ...]] = RunConfig.FIXED_ON_RESUME + ("env", "num_envs")

    def validate(self) -> None:
        super().validate()
        require_at_least(self, 1, "env_steps", "num_envs", "updates_per_step", "update_every", "buffer_size")
        require_at_least(self, 0, "start_steps", "snapshot_every")
        chunk = self.update_every * self.num_envs
        for name in ("eval_every", "checkpoint_every", "env_steps", "start_steps", "snapshot_every"):
            if getattr(self, name) % chunk:
                raise ValueError(f"{name}={getattr(self, name)} must be a multiple of update_every x num_envs "
                                 f"= {chunk} (env steps between compiled update chunks): change it, or --update_every.")


POSITIVE = ("positive", lambda value: value > 0.0)

# The ranges the math needs, for settings that algorithms share by name; a config checks
# those it has (and every learning rate, *_lr, must be positive).
SETTING_RANGES = {
    "gamma": ("in [0, 1]", lambda value: 0.0 <= value <= 1.0),
    "tau": ("in (0, 1]", lambda value: 0.0 < value <= 1.0),
    "expectile": ("in (0, 1)", lambda value: 0.0 < value < 1.0),
    "online_bc_floor": ("in [0, 1]", lambda value: 0.0 <= value <= 1.0),
    "temperature": POSITIVE,
    "divergence_threshold": POSITIVE,
    "reward_threshold": ("in [0, 1], a discriminator's probability", lambda value: 0.0 <= value <= 1.0),
    "dynamics_seed": ("in [0, 2^32)", is_seed),
    **{name: ("at least 0", lambda value: value >= 0.0) for name in (
        "alpha", "beta", "max_weight", "cql_alpha", "actor_bc_coef", "critic_bc_coef", "eta", "penalty_coef",
        "policy_noise", "noise_clip", "exploration_noise", "softmax_temperature", "online_alpha_end", "bc_steps")},
    # counts: zero critics or sampled actions make an empty min or logsumexp, a NaN loss
    **{name: ("at least 1", lambda value: value >= 1) for name in (
        "policy_freq", "num_critics", "num_sampled_actions", "samples_per_elite", "reward_iterations",
        "reward_keep_every", "reward_max_kept")},
}


def require_in_range(config) -> None:
    """Refuse a setting outside the range its math needs (an expectile of 1.5, a negative
    BC weight), which would otherwise train quietly on a different objective."""
    for name in sorted(config_keys(config)):
        value = getattr(config, name)
        if name == "hidden_dims" and (not value or min(value) < 1):
            raise ValueError(f"--hidden_dims {' '.join(map(str, value)) or '(none)'}: a network needs at least one "
                             "hidden layer, each at least 1 wide, e.g. --hidden_dims 256 256.")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        rule = SETTING_RANGES.get(name) or (POSITIVE if name.endswith("_lr") else None)
        if rule is not None and not rule[1](value):
            raise ValueError(f"--{name} {value}: it must be {rule[0]}.")


def require_at_least(config, minimum: int, *names: str) -> None:
    """Counts and periods below `minimum` fail here, not as a division by zero or an empty
    batch deep in training."""
    for name in names:
        if getattr(config, name) < minimum:
            raise ValueError(f"--{name} {getattr(config, name)}: it must be at least {minimum}.")


def dataset_config_name(dataset_id: str) -> str:
    """'d4rl-hdf5/hopper/medium-v2' -> 'hopper-medium'; an env id 'Hopper-v5' -> 'Hopper'."""
    parts = re.sub(r"-v\d+$", "", dataset_id).split("/")
    return "-".join(parts[-2:]) if len(parts) >= 2 else parts[-1]


def read_yaml(path: str | Path) -> Any:
    """A YAML file's content; one that is not valid YAML raises a ValueError naming the file and
    the place (yaml's own error is a traceback from the parser's depths)."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        place = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or error
        raise ValueError(f"{path} is not valid YAML{place}: {problem}. Fix the file.") from None


def yaml_overrides(algo: str, dataset_id: str) -> dict[str, Any]:
    """algorithms/configs/<algo>/<env>.yaml (per environment, e.g. MOREC's penalty), then
    <algo>/<env>-<name>.yaml (per dataset, e.g. ReBRAC's coefficients) over it."""
    name = dataset_config_name(dataset_id)
    values: dict[str, Any] = {}
    for stem in dict.fromkeys([name.split("-")[0], name]):
        path = require_installed(CONFIG_ROOT) / algo / f"{stem}.yaml"
        if path.is_file():
            values.update(read_yaml(path) or {})
    return values


def config_keys(config) -> set[str]:
    """The settings a config (class or instance) has: what YAML files and sweeps may set."""
    return {field.name for field in dataclasses.fields(config)}


def apply(config: C, values: dict[str, Any], source: str) -> C:
    names = config_keys(config)
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{source}: unknown config keys {unknown}; known keys: {sorted(names)}")
    # YAML has no tuples: tuple-typed fields (layer widths) come back as lists.
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}
    return dataclasses.replace(config, **values)


def require_known_options(config_cls: type, argv: list[str]) -> None:
    """An unknown option is refused in one line naming the closest known one (tyro's own
    message is a boxed panel)."""
    known = {f"--{name}" for name in config_keys(config_cls)} | {"--help", "-h"}
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if flag.startswith("-") and flag not in known and not _is_number(flag):
            close = difflib.get_close_matches(flag, sorted(known), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ValueError(f"unknown option {flag}: {hint}`--help` lists the options.")


def _is_number(text: str) -> bool:  # a negative value, e.g. --reward_bias -1
    try:
        float(text)
        return True
    except ValueError:
        return False


def _cli(config_cls: type[C], default: C, argv: list[str] | None) -> C:
    require_known_options(config_cls, sys.argv[1:] if argv is None else argv)
    import tyro  # only where options are parsed: reading a run's config needs none of it

    return tyro.cli(config_cls, default=default, args=argv, use_underscores=True,
                    config=(tyro.conf.FlagConversionOff,))


def parse_config(config_cls: type[C], algo: str, argv: list[str] | None = None) -> C:
    """Resolve a config: defaults, then the dataset's YAML, then the command line.

    With --resume RUN_DIR the saved config of that run replaces the first two layers."""
    first = _cli(config_cls, config_cls(), argv)
    if first.resume:
        saved_config = Path(first.resume) / "config.yaml"
        if not saved_config.is_file():
            raise FileNotFoundError(f"--resume {first.resume}: no run there ({saved_config} is missing). Pass the "
                                    "`run directory:` a run printed, e.g. runs/<algo>/<dataset id>/<time>.")
        record = Path(first.resume) / "run.json"
        trained_by = json.loads(record.read_text()).get("algorithm") if record.is_file() else None
        if trained_by not in (None, algo):
            raise ValueError(f"--resume {first.resume}: a {trained_by} run, which {algo} cannot continue; "
                             f"use algorithms/{trained_by}.py --resume {first.resume}.")
        saved = read_yaml(saved_config)
        base = apply(config_cls(), saved, f"{first.resume}/config.yaml")
    else:
        target = getattr(first, "dataset", None) or getattr(first, "env", "")
        base = apply(config_cls(), yaml_overrides(algo, target), f"configs/{algo}")
    config = _cli(config_cls, base, argv)
    if first.resume:
        if first.run_dir and Path(first.run_dir).resolve() != Path(first.resume).resolve():
            raise ValueError(f"--run_dir {first.run_dir} with --resume {first.resume}: a resumed run goes on in its "
                             "own directory. Drop --run_dir, or copy the run there and resume the copy to branch it.")
        for key in config.FIXED_ON_RESUME:
            if _meaning(config, key) != _meaning(base, key):
                raise ValueError(f"--resume {first.resume}: --{key} {getattr(config, key)} differs from the run's "
                                 f"{getattr(base, key)!r}, which its checkpoint was trained with. Drop --{key}, or "
                                 "start a new run.")
    config.validate()
    # one spelling of the seeds for run directories, saved configs and the checks that compare them
    return dataclasses.replace(config, seeds=",".join(map(str, config.seed_list())))


def _meaning(config, key: str):
    """A setting as the run reads it: `--seeds 0,1` and `--seeds "0, 1"` are the same seeds."""
    value = getattr(config, key)
    if key == "seeds":
        return config.seed_list()
    return json.loads(value) if key == "pack" and value else value


def save_config(config, path: Path) -> None:
    values = dataclasses.asdict(config)
    values.pop("resume", None)
    path.write_text(yaml.safe_dump(values, sort_keys=False))
