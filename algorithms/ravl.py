"""RAVL (Sims et al. 2024, "The Edge-of-Reach Problem in Offline Model-Based Reinforcement
Learning").

Model-based offline RL fails less from model error than from "edge-of-reach" states:
states that k-step rollouts reach only at their last step, whose Q-values are bootstrapped
but never corrected. RAVL keeps MOPO's recipe (short rollouts from dataset states, mixed
with a little real data) but drops the uncertainty penalty on rewards and instead trains
SAC with an EDAC ensemble: N critics whose minimum is pessimistic exactly where they
disagree, with a diversity loss that makes them disagree away from the data.

    1. fit a probabilistic dynamics ensemble to the dataset (offrl/model_based/dynamics.py);
    2. each epoch, roll the policy out for 5 steps from 50k dataset states through random
       elites, keeping the last 5 epochs of rollouts (offrl/model_based/rollouts.py);
    3. 1000 SAC-N updates (algorithms/sac.py, eta > 0) on batches of 5% real, 95% model data.

    python algorithms/ravl.py --dataset offrl/hopper/medium-v0 --seeds 0,1,2
"""

from __future__ import annotations

from dataclasses import dataclass

from offrl.algorithms.sac import make as make_sac

from offrl.model_based.rollouts import ModelBasedConfig, model_based_program
from offrl.run.train import main as train_main


@dataclass
class Config(ModelBasedConfig):
    """Defaults are the paper's D4RL settings (Sims et al. 2024)."""

    num_critics: int = 10
    eta: float = 1.0  # weight of EDAC's ensemble-diversity loss
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    hidden_dims: tuple[int, ...] = (256, 256, 256)  # EDAC's critics and actor
    edac_init: bool = True  # EDAC's init, kept by RAVL's code: biases 0.1, near-zero last layers (offrl.core.nets)
    gamma: float = 0.99
    tau: float = 0.005
    num_updates: int = 3_000_000  # 3000 epochs x 1000 updates
    eval_every: int = 10_000
    rollout_length: int = 5
    real_ratio: float = 0.05
    penalty_coef: float = 0.0  # no MOPO penalty: the critic ensemble is the pessimism


make = make_sac
program = model_based_program()  # rollouts of the plain ensemble


def main(argv: list[str] | None = None):
    return train_main(make, Config, "ravl", argv, make_program=program)


if __name__ == "__main__":
    main()
