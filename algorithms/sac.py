"""SAC (Haarnoja et al. 2018, "Soft Actor-Critic"), online in a Gymnasium environment.

Maximum-entropy RL with N critics (min over them in the target), a tanh-Gaussian actor,
and automatic entropy tuning towards -action_dim; the losses live in offrl/sac.py, which
RAVL and MOREC share. offrl uses this script to train the behavior policies of the
dataset suite (datasets/README.md).

    python algorithms/sac.py --env Hopper-v5 --env_steps 1000000 --seeds 0
"""

from __future__ import annotations

from dataclasses import dataclass

from offrl.config import OnlineConfig, parse_config
from offrl.errors import user_errors_as_messages
from offrl.online import train_online
from offrl.sac import make_sac


@dataclass
class Config(OnlineConfig):
    """Defaults are the SAC paper's MuJoCo settings."""

    num_critics: int = 2
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    hidden_dims: tuple[int, ...] = (256, 256)
    gamma: float = 0.99
    tau: float = 0.005
    eta: float = 0.0  # EDAC ensemble-diversity weight (0: plain SAC)


make = make_sac


def main(argv: list[str] | None = None):
    with user_errors_as_messages(enabled=argv is None):
        config = parse_config(Config, "sac", argv)
        result = train_online(make, config, "sac")
    print(f"sac on {config.env}: final return {result.final_eval.get('eval/return')}; run: {result.run_dir}")
    return result


if __name__ == "__main__":
    main()
