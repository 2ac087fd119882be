"""Model-based machinery: masked buffer adds, rollouts, batch mixing, EDAC diversity, RAVL end to end."""

from __future__ import annotations

import fcntl
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_same_checkpoint, linear_system
from offrl.algorithms.sac import ensemble_diversity

from offrl.core.buffer import ReplayBuffer, mixed_sample
from offrl.core.nets import CriticEnsemble, critic_action_gradients
from offrl.data import fit_preprocessing, load_dataset
from offrl.data.scripted import make_pendulum_dataset
from offrl.model_based import dynamics, ensembles
from offrl.model_based.dynamics import DynamicsConfig, save_dynamics, train_dynamics
from offrl.model_based.dynamics_reward import (
    DynamicsRewardConfig,
    learn_dynamics_reward,
    load_dynamics_reward,
    save_dynamics_reward,
)
from offrl.model_based.ensembles import dynamics_cache, dynamics_for
from offrl.model_based.rollouts import rollout
from offrl.run import checkpoint
from offrl.run.algorithms import algorithm_module
from offrl.run.config import parse_config
from offrl.run.logging import read_metrics
from offrl.run.train import train

DATASET = "offrl/pendulum/model-v0"


def test_masked_add_appends_only_valid_rows_in_order_and_wraps():
    buffer = ReplayBuffer.create(capacity=5, obs_dim=1, act_dim=1)
    rows = lambda values: {key: jnp.asarray(values, jnp.float32).reshape(-1, 1) if key in ("observations",  # noqa: E731
                           "next_observations", "actions") else jnp.asarray(values, jnp.float32)
                           for key in ReplayBuffer.create(1, 1, 1).data}
    buffer = buffer.add(rows([1, 2, 3, 4]), jnp.array([True, False, True, False]))
    assert int(buffer.size) == 2 and int(buffer.pointer) == 2
    np.testing.assert_array_equal(buffer.data["rewards"][:2], [1, 3])
    buffer = buffer.add(rows([5, 6, 7, 8]), jnp.array([True, True, True, True]))
    assert int(buffer.size) == 5 and int(buffer.pointer) == 1
    np.testing.assert_array_equal(buffer.data["rewards"], [8, 3, 5, 6, 7])  # 8 overwrote the oldest row


def test_rollout_stops_at_terminations_and_filter_cuts_and_penalizes():
    def model_step(model, obs, action, rng):
        # next = obs + 1; reward 1; uncertainty 0.5; the filter rejects steps from obs[:, 0] >= 2
        return obs + 1.0, jnp.ones(obs.shape[0]), jnp.full(obs.shape[0], 0.5), obs[:, 0] < 2.0

    terminal = lambda next_obs: next_obs[:, 1] > 2.5  # noqa: E731
    act = lambda state, obs, rng, deterministic: jnp.zeros((obs.shape[0], 1))  # noqa: E731
    starts = jnp.array([[0.0, 0.0], [0.0, 2.0], [5.0, 0.0]])
    transitions, valid, _ = rollout(None, model_step, terminal, act, None, starts, jax.random.PRNGKey(0),
                                    length=3, penalty_coef=2.0)
    valid = np.asarray(valid).reshape(3, 3)  # (step, rollout)
    # rollout 0: obs 0, 1 valid, then obs[0] = 2 is filtered out; rollout 1: terminates
    # on its first step (next_obs[1] = 3), later steps invalid; rollout 2: filtered at once
    np.testing.assert_array_equal(valid, [[True, True, False], [True, False, False], [False, False, False]])
    terminals = np.asarray(transitions["terminals"]).reshape(3, 3)
    assert terminals[0, 1] == 1.0 and terminals[0, 0] == 0.0
    np.testing.assert_allclose(np.asarray(transitions["rewards"]), 1.0 - 2.0 * 0.5)
    assert np.all(np.asarray(transitions["timeouts"]) == 0)


def test_rollout_of_alive_chunks_gives_the_same_transitions():
    # deterministic model and policy, so only the rows' order may differ between chunks 1 and 4
    def model_step(model, obs, action, rng):
        return obs + 0.3 + action, obs[:, 0] + 1.0, jnp.abs(obs[:, 1]), obs[:, 0] < 3.5

    terminal = lambda next_obs: next_obs[:, 1] > 4.0  # noqa: E731
    act = lambda state, obs, rng, deterministic: obs[:, :1] * 0.1  # noqa: E731
    starts = jax.random.uniform(jax.random.PRNGKey(3), (8, 2), maxval=3.0)

    def valid_rows_per_step(chunks):
        transitions, valid, stats = rollout(None, model_step, terminal, act, None, starts, jax.random.PRNGKey(0),
                                            length=6, penalty_coef=0.5, chunks=chunks)
        rows = np.concatenate([np.asarray(transitions[key]).reshape(6, 8, -1) for key in sorted(transitions)], -1)
        valid = np.asarray(valid).reshape(6, 8)
        return [np.array(sorted(map(tuple, rows[t][valid[t]]))) for t in range(6)], stats

    plain, plain_stats = valid_rows_per_step(1)
    chunked, chunked_stats = valid_rows_per_step(4)
    assert [len(rows) for rows in plain] != [8] * 6 and len(plain[-1]) > 0  # rollouts end at different steps
    for expected, got in zip(plain, chunked):
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    for key in plain_stats:
        np.testing.assert_allclose(chunked_stats[key], plain_stats[key], rtol=1e-6)
    with pytest.raises(ValueError, match="equal chunks"):
        rollout(None, model_step, terminal, act, None, starts, jax.random.PRNGKey(0), length=2, penalty_coef=0.0,
                chunks=3)


def test_mixed_batches_hold_the_real_fraction():
    data = {key: jnp.ones((100,) + ((2,) if key in ("observations", "next_observations", "actions") else ()))
            for key in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")}
    buffer = ReplayBuffer.create(50, 2, 2)
    fake = {key: -jnp.ones_like(value[:50]) for key, value in buffer.data.items()}
    buffer = buffer.add(fake)
    batch = mixed_sample(200, 0.05)((data, buffer), jax.random.PRNGKey(0))
    assert batch["rewards"].shape == (200,)
    assert int((batch["rewards"] > 0).sum()) == 10  # 5% of 200 from the dataset


def test_critic_action_gradients_match_each_critics_own_gradient():
    ensemble = CriticEnsemble(4, (16, 16))
    obs, actions = jax.random.normal(jax.random.PRNGKey(0), (32, 5)), jax.random.uniform(jax.random.PRNGKey(1), (32, 2))
    params = ensemble.init(jax.random.PRNGKey(2), obs, actions)
    by_jacobian = jax.jacrev(lambda a: ensemble.apply(params, obs, a).sum(axis=1))(actions)  # N backward passes
    np.testing.assert_allclose(np.asarray(critic_action_gradients(ensemble, params, obs, actions)),
                               np.asarray(by_jacobian), rtol=1e-5, atol=1e-6)
    # and the diversity loss differentiates through them to the same parameter gradients
    loss_grads = [jax.grad(lambda p: ensemble_diversity(fn(p)))(params) for fn in (
        lambda p: critic_action_gradients(ensemble, p, obs, actions),
        lambda p: jax.jacrev(lambda a: ensemble.apply(p, obs, a).sum(axis=1))(actions))]
    # Second derivatives by two routes round differently in float32: up to ~5e-6 of the
    # largest gradient entry (Eigen's matmuls); a wrong route is off by its own size.
    for fast, slow in zip(jax.tree.leaves(loss_grads[0]), jax.tree.leaves(loss_grads[1])):
        scale = float(np.abs(slow).max())
        np.testing.assert_allclose(np.asarray(fast), np.asarray(slow), rtol=1e-4, atol=3e-5 * scale)


def test_edac_diversity_by_hand():
    # one state: critic gradients (1, 0) and (1, 1): cos = 1/sqrt(2), counted for (0,1) and (1,0), / (N-1)
    grads = jnp.array([[[1.0, 0.0]], [[1.0, 1.0]]])
    np.testing.assert_allclose(ensemble_diversity(grads), 2 / np.sqrt(2), rtol=1e-6)
    # three critics, two states: parallel gradients at state 0 (cos 1 for all 6 ordered
    # pairs: 6 / 2 = 3) and orthogonal ones at state 1 (0); the batch mean is 1.5
    grads = jnp.array([[[2.0, 0.0, 0.0], [1.0, 0.0, 0.0]],
                       [[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
                       [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    np.testing.assert_allclose(ensemble_diversity(grads), 1.5, rtol=1e-6)


@pytest.fixture
def pendulum_data(minari_store):
    make_pendulum_dataset(DATASET, num_steps=5000)
    return DATASET


def _ravl_config(tmp_path: Path, name: str, *extra: str):
    ravl = algorithm_module("ravl")
    return ravl, parse_config(ravl.Config, "ravl", [
        "--dataset", DATASET, "--num_updates", "400", "--log_every", "200", "--updates_per_epoch", "100",
        "--eval_every", "400", "--eval_episodes", "2", "--checkpoint_every", "200", "--rollout_batch", "256",
        "--num_critics", "4", "--hidden_dims", "32", "32", "--dynamics_max_epochs", "3", "--wandb", "disabled",
        "--run_dir", str(tmp_path / name), *extra])


def test_ravl_networks_start_from_edacs_init():
    """RAVL's code keeps EDAC's init: hidden biases 0.1, PyTorch-default hidden weights
    (|w| <= 1/sqrt(fan_in)), last layers within 3e-3 (critics) and 1e-3 (actor)."""
    ravl = algorithm_module("ravl")
    config = parse_config(ravl.Config, "ravl", ["--normalize_observations", "False"])
    state = ravl.make(config, obs_dim=5, act_dim=2).init(jax.random.key(0))
    critic_layers = state.critic.params["params"]["VmapCritic_0"]["MLP_0"]
    actor_layers = state.actor.params["params"]["MLP_0"]
    last = f"Dense_{len(config.hidden_dims)}"
    for layers, fan_in, last_bound in ((critic_layers, 5 + 2, 3e-3), (actor_layers, 5, 1e-3)):
        assert np.all(np.asarray(layers["Dense_0"]["bias"]) == np.float32(0.1))
        assert np.abs(layers["Dense_0"]["kernel"]).max() <= 1 / np.sqrt(fan_in)
        assert np.abs(layers["Dense_1"]["kernel"]).max() <= 1 / np.sqrt(256)
        assert np.abs(layers["Dense_1"]["kernel"]).max() > 0.9 / np.sqrt(256)  # uniform: reaches near its bound
        for leaf in (layers[last]["kernel"], layers[last]["bias"]):
            assert np.abs(leaf).max() <= last_bound and np.abs(leaf).max() > 0
    sac = algorithm_module("sac")  # the online SAC behind the dataset suite keeps flax's default init
    sac_state = sac.make(parse_config(sac.Config, "sac", []), obs_dim=5, act_dim=2).init(jax.random.key(0))
    assert np.all(np.asarray(sac_state.critic.params["params"]["VmapCritic_0"]["MLP_0"]["Dense_0"]["bias"]) == 0)


@pytest.mark.slow
def test_ravl_trains_on_model_rollouts_and_resumes_exactly(pendulum_data, tmp_path):
    ravl, config = _ravl_config(tmp_path, "full")
    full = train(ravl.make, config, "ravl", show_progress=False, make_program=ravl.program)
    rows = read_metrics(full.run_dir)
    assert (full.run_dir / "dynamics" / "dynamics.json").is_file()
    assert all(0.0 < row["model/valid_fraction"] <= 1.0 and "diversity_loss" in row for row in rows)
    assert np.isfinite(full.final_eval["eval/return"]).all()
    # interrupted at 200 updates and resumed: the same state as the uninterrupted run,
    # model buffers included; the saved ensemble is reused, not retrained
    _, cut = _ravl_config(tmp_path, "cut", "--num_updates", "200", "--dynamics", str(full.run_dir / "dynamics"))
    train(ravl.make, cut, "ravl", show_progress=False, make_program=ravl.program)
    resumed = parse_config(ravl.Config, "ravl", ["--resume", str(tmp_path / "cut"), "--num_updates", "400"])
    train(ravl.make, resumed, "ravl", show_progress=False, make_program=ravl.program)
    assert_same_checkpoint(checkpoint.latest(full.run_dir), checkpoint.latest(tmp_path / "cut"))


def test_ravl_fine_tunes_online_after_its_model_based_phase(pendulum_data, tmp_path):
    ravl, config = _ravl_config(tmp_path, "online", "--num_updates", "200", "--eval_every", "200",
                                "--online_steps", "200", "--online_eval_every", "200", "--online_update_every", "50")
    result = train(ravl.make, config, "ravl", show_progress=False, make_program=ravl.program)
    online_rows = [row for row in read_metrics(result.run_dir) if "env_steps" in row]
    assert [row["step"] for row in online_rows if "eval/return" in row] == [400]
    assert all(np.isfinite(row["critic_loss"]) and "diversity_loss" in row for row in online_rows)


class TrainedAgain(Exception):
    pass


def test_a_trained_ensemble_is_shared_by_runs_on_the_same_data_and_settings(pendulum_data, tmp_path, monkeypatch):
    _, config = _ravl_config(tmp_path, "first")
    dataset = load_dataset(DATASET)
    data = fit_preprocessing(dataset, config.normalize_observations, config.reward_transform, config.reward_scale,
                             config.reward_bias).apply(dataset)
    dynamics_for(config, dataset, data, tmp_path / "first")
    assert len(list(dynamics_cache().glob("*/*/dynamics.json"))) == 1
    assert not list(dynamics_cache().glob("*/*.progress.msgpack"))  # removed once the training ended
    progress_files = []

    def train_dynamics_refused(*args, progress, **kwargs):
        progress_files.append(progress)
        raise TrainedAgain

    monkeypatch.setattr(ensembles, "train_dynamics", train_dynamics_refused)
    _, other_seeds = _ravl_config(tmp_path, "second", "--seeds", "1,2")
    dynamics_for(other_seeds, dataset, data, tmp_path / "second")
    for name in ("dynamics.msgpack", "dynamics.json"):
        first, second = (tmp_path / run / "dynamics" / name for run in ("first", "second"))
        assert first.read_bytes() == second.read_bytes()
    # other ensemble settings, or sharing turned off, train their own
    for extra in (["--dynamics_seed", "1"], ["--share_dynamics", "False"]):
        _, changed = _ravl_config(tmp_path, "third", *extra)
        with pytest.raises(TrainedAgain):
            dynamics_for(changed, dataset, data, tmp_path / "third")
    # a killed training leaves its progress where the same training started again finds it
    shared_progress, own_progress = progress_files
    assert shared_progress.parent.parent == dynamics_cache() and shared_progress.name.endswith(".progress.msgpack")
    assert own_progress == tmp_path / "third" / "dynamics.progress.msgpack"


def test_a_given_ensemble_of_other_data_is_refused(pendulum_data, tmp_path):
    save_dynamics(*train_dynamics(linear_system(300), DynamicsConfig(max_epochs=1), log=None), tmp_path / "linear")
    _, config = _ravl_config(tmp_path, "run", "--dynamics", str(tmp_path / "linear"))
    dataset = load_dataset(DATASET)
    data = {key: getattr(dataset, key) for key in ("observations", "actions", "next_observations", "rewards")}
    # named before training, not a broadcasting error inside the first compiled rollout
    with pytest.raises(ValueError, match="models 3-dim observations and 2-dim actions, .* has 3 and 1"):
        dynamics_for(config, dataset, data, tmp_path / "run")


def test_a_run_waits_for_the_ensemble_another_process_is_training(minari_store, monkeypatch, capsys):
    arrays = linear_system(1000)
    config = DynamicsConfig(num_members=3, num_elites=2, hidden_dims=(16,), batch_size=64, max_epochs=2)
    dataset_id = "offrl/linear/system-v0"
    target = dynamics_cache() / "linear-system" / ensembles.dynamics_fingerprint(arrays, config)
    target.parent.mkdir(parents=True)
    other_process = open(target.with_name(target.name + ".lock"), "w")  # held open as the training process would
    fcntl.flock(other_process, fcntl.LOCK_EX)

    def train_dynamics_refused(*args, **kwargs):
        raise TrainedAgain

    monkeypatch.setattr(ensembles, "train_dynamics", train_dynamics_refused)
    found = []
    waiting = threading.Thread(target=lambda: found.append(ensembles.shared_dynamics(dataset_id, arrays, config)))
    waiting.start()
    waiting.join(1.0)
    assert waiting.is_alive()  # it waits rather than training a second copy
    ensembles.publish(target, lambda directory: save_dynamics(*train_dynamics(arrays, config, log=None), directory))
    other_process.close()  # the other process ends, and with it its lock
    waiting.join(60)
    assert found == [target]  # it took the published ensemble (training again would have raised)
    assert "waiting for another process" in capsys.readouterr().out


def test_publishing_clears_what_a_killed_publisher_left(tmp_path):
    target = tmp_path / "dynamics"

    def killed_while_writing(directory):
        (directory / "half.json").write_text("{")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ensembles.publish(target, killed_while_writing)
    assert not target.exists() and len(list(tmp_path.glob(".dynamics-*"))) == 1
    ensembles.publish(target, lambda directory: (directory / "whole.json").write_text("{}"))
    assert [path.name for path in tmp_path.iterdir()] == ["dynamics"]
    assert [path.name for path in target.iterdir()] == ["whole.json"]


def test_model_based_configs_refuse_normalized_observations():
    ravl = algorithm_module("ravl")
    with pytest.raises(ValueError, match="raw observations"):
        parse_config(ravl.Config, "ravl", ["--normalize_observations", "True"])
    with pytest.raises(ValueError, match="whole epochs"):
        parse_config(ravl.Config, "ravl", ["--updates_per_epoch", "300"])


class FakeEnsemble:
    """Three members with fixed predictions: state changes +1, +2, +3, no noise; elites 0 and 1."""

    elites = jnp.array([0, 1])

    def predict(self, obs, action):
        change = jnp.array([1.0, 2.0, 3.0])[:, None, None] * jnp.ones((3, obs.shape[0], obs.shape[1]))
        mean = jnp.concatenate([change, jnp.full((3, obs.shape[0], 1), 7.0)], axis=-1)
        return mean, jnp.zeros_like(mean) + 1e-8


def test_morec_filter_keeps_the_best_candidate_and_cuts_below_the_threshold():
    morec = algorithm_module("morec")
    config = morec.Config(samples_per_elite=2, reward_threshold=0.6)
    step = morec.filtered_step(config)
    # the dynamics reward prefers a state change near +2 in row 0, near +1 in row 1, and
    # rates everything low in row 2
    target = jnp.array([2.0, 1.0, 2.0])
    scale = jnp.array([0.9, 0.9, 0.3])
    reward_fn = lambda obs, action, candidates: scale * jnp.exp(-(candidates[..., 0] - obs[:, 0] - target) ** 2)  # noqa: E731
    obs = jnp.zeros((3, 2))
    next_obs, reward, uncertainty, keep = step((FakeEnsemble(), reward_fn), obs, jnp.zeros((3, 1)),
                                               jax.random.PRNGKey(0))
    np.testing.assert_allclose(np.asarray(next_obs[:, 0]), [2.0, 1.0, 2.0], atol=1e-5)  # argmax over elites only
    np.testing.assert_allclose(np.asarray(reward), 7.0, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(keep), [True, True, False])


def test_dynamics_reward_tells_dataset_transitions_from_a_wrong_model(tmp_path):
    data = linear_system(3000)
    wrong = dict(data, next_observations=data["next_observations"] + 0.3)  # the model learns s' off by 0.3
    model, _ = train_dynamics(wrong, DynamicsConfig(num_members=3, num_elites=2, hidden_dims=(32, 32),
                                                    batch_size=64, max_epochs=30, epochs_per_call=10), log=None)
    # the wrong model as a frozen generator: the discriminators learn real against it
    config = DynamicsRewardConfig(hidden_dims=(32, 32), iterations=600, keep_every=20, max_kept=10,
                                  generator_lr=0.0, nll_weight=0.0, generator_from_model=True)
    reward, report = learn_dynamics_reward(model, data, config)
    assert report.kept == 10
    assert report.real_reward_mean > 0.6 > report.model_reward_mean
    obs, actions = jnp.asarray(data["observations"][:50]), jnp.asarray(data["actions"][:50])
    candidates = jnp.stack([jnp.asarray(data["next_observations"][:50])] * 4)
    scores = reward(obs, actions, candidates)
    assert scores.shape == (4, 50) and bool(jnp.all((scores > 0) & (scores < 1)))
    save_dynamics_reward(reward, report, tmp_path)
    np.testing.assert_array_equal(np.asarray(load_dynamics_reward(tmp_path, model)(obs, actions, candidates)),
                                  np.asarray(scores))


def test_dynamics_reward_scores_dataset_transitions_above_the_threshold():
    """With an accurate model, dataset transitions must clear MOREC's 0.6, or every rollout
    ends at its first step: the historical discriminators must face an untrained generator
    first (started from the model instead, no transition clears 0.6 here)."""
    data = linear_system(3000)
    model, _ = train_dynamics(data, DynamicsConfig(num_members=3, num_elites=2, hidden_dims=(32, 32),
                                                   batch_size=64, max_epochs=30, epochs_per_call=10), log=None)
    config = DynamicsRewardConfig(hidden_dims=(32, 32), iterations=600, keep_every=20, max_kept=10)
    _, report = learn_dynamics_reward(model, data, config)
    assert report.real_above["0.6"] > 0.8 and report.model_above["0.6"] > 0.5


@pytest.mark.slow
def test_morec_trains_with_filtered_rollouts(pendulum_data, tmp_path):
    morec = algorithm_module("morec")
    config = parse_config(morec.Config, "morec", [
        "--dataset", DATASET, "--seeds", "0,1", "--num_updates", "200", "--log_every", "200",
        "--updates_per_epoch", "100", "--eval_every", "200", "--eval_episodes", "2", "--checkpoint_every", "200",
        "--rollout_batch", "64", "--rollout_length", "10", "--hidden_dims", "32", "32", "--dynamics_max_epochs", "3",
        "--reward_iterations", "100", "--reward_max_kept", "5", "--wandb", "disabled",
        "--run_dir", str(tmp_path / "morec")])
    result = train(morec.make, config, "morec", show_progress=False, make_program=morec.program)
    assert (result.run_dir / "dynamics" / "dynamics_reward.json").is_file()
    rows = read_metrics(result.run_dir)
    assert {row["seed"] for row in rows} == {0, 1}  # the live-rollout chunks run under vmap over seeds
    assert all(0.0 <= row["model/valid_fraction"] <= 1.0 for row in rows)
    assert np.isfinite(result.final_eval["eval/return"]).all()


def test_the_true_simulator_stands_in_for_the_model_inside_the_compiled_loop(tmp_path):
    from offrl.data import write_dataset
    from offrl.data.collect import collect_episodes
    from offrl.model_based.simulator import simulator_step

    episodes, obs_space, act_space = collect_episodes(
        "Hopper-v5", lambda obs, rng: rng.uniform(-1, 1, (len(obs), 3)), 2000, num_envs=4)
    write_dataset("offrl/hopper/tiny-v0", episodes, obs_space, act_space, eval_env="Hopper-v5",
                  ref_min_score=0.0, ref_max_score=1000.0)
    ravl = algorithm_module("ravl")
    config = parse_config(ravl.Config, "ravl", [
        "--dataset", "offrl/hopper/tiny-v0", "--seeds", "0,1", "--num_updates", "200", "--log_every", "200",
        "--updates_per_epoch", "100", "--eval_every", "200", "--eval_episodes", "1", "--checkpoint_every", "200",
        "--rollout_batch", "16", "--num_critics", "2", "--hidden_dims", "32", "32", "--wandb", "disabled",
        "--run_dir", str(tmp_path / "sim")])
    program = ravl.model_based_program(simulator_step("Hopper-v5"), prepare=lambda *args: None)
    result = train(ravl.make, config, "ravl", show_progress=False, make_program=program)
    rows = read_metrics(result.run_dir)
    assert {row["seed"] for row in rows} == {0, 1}
    # random-action starts: Hopper falls within few steps, so some rollouts end early
    assert all(0.0 < row["model/valid_fraction"] < 1.0 and row["model/uncertainty"] == 0.0 for row in rows)


def test_shared_ensembles_are_trained_again_only_when_their_training_code_changes(monkeypatch):
    arrays, config = linear_system(300), DynamicsConfig(max_epochs=1)
    fingerprint = ensembles.dynamics_fingerprint(arrays, config)
    code = dynamics.training_code()
    # what training runs is in it; helpers used only after training (rollouts, loading) are not
    for name in ("def train_dynamics", "class GaussianMLP", "def gaussian_nll", "class Dense", "def dense_backward"):
        assert name in code
    for name in ("def load_dynamics", "def observation_dim", "def mopo_uncertainty"):
        assert name not in code
    monkeypatch.setattr(ensembles, "training_code", lambda: code.replace("0.99 * best_mse", "0.98 * best_mse"))
    assert ensembles.dynamics_fingerprint(arrays, config) != fingerprint
    monkeypatch.undo()
    assert ensembles.dynamics_fingerprint(arrays, config) == fingerprint
    assert ensembles.dynamics_fingerprint(arrays, DynamicsConfig(max_epochs=2)) != fingerprint
