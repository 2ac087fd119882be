"""MOREC (Luo et al. 2024, "Reward-Consistent Dynamics Models are Strongly Generalizable
for Offline Reinforcement Learning").

A learned dynamics model drifts off the data in long rollouts. MOREC learns a *dynamics
reward*, how real a transition looks, and uses it to keep rollouts on track:

    1. fit a probabilistic dynamics ensemble to the dataset (offrl/model_based/dynamics.py);
    2. learn the dynamics reward adversarially, a discriminator between dataset and model
       transitions with the model as the generator, averaging historical discriminators
       (offrl/model_based/dynamics_reward.py, where every choice the paper leaves open is documented);
    3. roll the policy out for up to 100 steps; at each step draw 2 samples from each of
       the 5 elites, keep the candidate with the highest dynamics reward (or sample one by
       a softmax over rewards), and end the rollout when that reward falls below 0.6;
    4. subtract MOPO's uncertainty penalty from the model's rewards and train SAC on 5%
       real and 95% model data (offrl/model_based/rollouts.py, algorithms/sac.py).

    python algorithms/morec.py --dataset offrl/hopper/medium-v0 --seeds 0,1,2
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
from offrl.algorithms.sac import make as make_sac

from offrl.model_based.dynamics import mopo_uncertainty
from offrl.model_based.dynamics_reward import (
    DynamicsRewardConfig,
    learn_dynamics_reward,
    load_dynamics_reward,
    save_dynamics_reward,
)
from offrl.model_based.ensembles import dynamics_for
from offrl.model_based.rollouts import ModelBasedConfig, model_based_program
from offrl.run.train import main as train_main


@dataclass
class Config(ModelBasedConfig):
    """Defaults are the paper's D4RL settings (Luo et al. 2024); the MOPO penalty
    per environment is in algorithms/configs/morec/<env>.yaml."""

    num_critics: int = 2
    actor_lr: float = 1e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 1e-4
    hidden_dims: tuple[int, ...] = (256, 256)
    gamma: float = 0.99
    tau: float = 0.005
    num_updates: int = 3_000_000  # as MOPO: 3000 epochs x 1000 updates
    eval_every: int = 10_000
    rollout_length: int = 100
    rollout_batch: int = 2000
    rollout_chunks: int = 8  # step only the rollouts the filter has not ended, 250 rows at a time
    real_ratio: float = 0.05
    penalty_coef: float = 1.0
    samples_per_elite: int = 2  # candidates = elites x samples_per_elite
    reward_threshold: float = 0.6  # a rollout ends when the chosen dynamics reward is below it
    softmax_temperature: float = 0.0  # 0: keep the best candidate; > 0: sample by softmax(reward / T)
    reward_iterations: int = 2000
    reward_keep_every: int = 10
    reward_max_kept: int = 200


make = make_sac


def filtered_step(config: Config):
    """MOREC's transition filter as a model step over (dynamics model, dynamics reward)."""

    def step(model_and_reward, obs, action, rng):
        model, dynamics_reward = model_and_reward
        mean, std = model.predict(obs, action)
        noise_rng, choice_rng = jax.random.split(rng)
        elite_mean, elite_std = mean[model.elites], std[model.elites]
        noise = jax.random.normal(noise_rng, (config.samples_per_elite, *elite_mean.shape))
        samples = (elite_mean + elite_std * noise).reshape(-1, *elite_mean.shape[1:])  # (candidates, batch, out)
        candidates = obs + samples[..., :-1]
        scores = dynamics_reward(obs, action, candidates)  # (candidates, batch)
        if config.softmax_temperature > 0:
            choice = jax.random.categorical(choice_rng, scores / config.softmax_temperature, axis=0)
        else:
            choice = jnp.argmax(scores, axis=0)
        rows = jnp.arange(obs.shape[0])
        chosen = samples[choice, rows]
        return (obs + chosen[:, :-1], chosen[:, -1], mopo_uncertainty(std),
                scores[choice, rows] >= config.reward_threshold)

    return step


def with_dynamics_reward(config: Config, dataset, data, run_dir: Path):
    """The run's dynamics ensemble paired with its dynamics reward, learned once per run and
    saved beside the ensemble."""
    model = dynamics_for(config, dataset, data, run_dir)
    directory = run_dir / "dynamics"
    if (directory / "dynamics_reward.json").is_file():
        return model, load_dynamics_reward(directory, model)
    arrays = {key: jax.device_get(data[key]) for key in ("observations", "actions", "next_observations", "rewards")}
    reward, report = learn_dynamics_reward(model, arrays, DynamicsRewardConfig(
        iterations=config.reward_iterations, keep_every=config.reward_keep_every,
        max_kept=config.reward_max_kept, seed=config.dynamics_seed))
    print(f"dynamics reward: {report.kept} discriminators in {report.seconds:.0f} s; mean on data "
          f"{report.real_reward_mean:.3f}, on model samples {report.model_reward_mean:.3f}; above "
          f"{config.reward_threshold}: data {report.real_above.get(str(config.reward_threshold), float('nan')):.2f}")
    save_dynamics_reward(reward, report, directory)
    return model, reward


def program(algorithm, config: Config, seeds, data, dataset, run_dir):
    """MOREC's filtered rollouts as the training program of offrl.run.train.train."""
    make_program = model_based_program(filtered_step(config), with_dynamics_reward)
    return make_program(algorithm, config, seeds, data, dataset, run_dir)


def main(argv: list[str] | None = None):
    return train_main(make, Config, "morec", argv, make_program=program)


if __name__ == "__main__":
    main()
