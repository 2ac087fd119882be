"""Sweeps: spec expansion, packing, resume, local workers, W&B export, and reports (Ray: test_ray_sweep.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from offrl.data import load_dataset
from offrl.data.scripted import make_pendulum_dataset
from offrl.run.directory import stop_if_requested, stop_requested, stopping_on_signals
from offrl.run.errors import StopRequested
from offrl.run.logging import read_metrics
from offrl.tools import sweep
from offrl.tools.cli import main as cli_main
from offrl.tools.report import RunScores, aggregates, find_runs, group, write_report

DATASET = "offrl/pendulum/sweep-v0"
TINY = {"num_updates": 200, "log_every": 100, "eval_every": 100, "eval_episodes": 2, "checkpoint_every": 100,
        "batch_size": 64, "wandb": "disabled"}


@pytest.fixture
def pendulum(minari_store):
    make_pendulum_dataset(DATASET, num_steps=3000)
    return DATASET


def spec_file(tmp_path: Path, **fields) -> Path:
    spec = {"name": "tiny", "algorithms": ["bc"], "datasets": [DATASET], "seeds": [0, 1], "base": TINY, **fields}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_grid_and_random_axes_expand_into_the_right_runs(tmp_path):
    spec = sweep.load_spec(spec_file(
        tmp_path, algorithms=["td3_bc", "iql"], datasets=["a/b/c-v0", "a/d/e-v0"], seeds=[0, 1, 2],
        grid={"alpha": [1.0, 2.5], "tau": [0.005, 0.01]},
        random={"samples": 3, "seed": 7, "axes": {"actor_lr": {"log_uniform": [1e-4, 1e-3]},
                                                  "batch_size": {"choice": [128, 256]}}}))
    runs = sweep.expand(spec)
    assert len(runs) == 2 * 2 * (2 * 2) * 3
    assert all(run.seeds == (0, 1, 2) for run in runs)
    assert len({run.name for run in runs}) == len(runs)
    lrs = {run.overrides["actor_lr"] for run in runs}
    assert len(lrs) == 3 and all(1e-4 <= lr <= 1e-3 for lr in lrs)
    assert {run.overrides["batch_size"] for run in runs} <= {128, 256}
    assert [run.overrides for run in sweep.expand(spec)] == [run.overrides for run in runs]  # seeded
    first = runs[0]
    assert first.overrides["alpha"] == 1.0 and first.overrides["tau"] == 0.005 and first.overrides["num_updates"] == 200
    with pytest.raises(ValueError, match="needs seeds"):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({"name": "x", "algorithms": ["bc"], "datasets": ["d"]}))
        sweep.load_spec(path)
    with pytest.raises(ValueError, match=r"seeds \[0, 1, 0\]: a seed is repeated"):
        sweep.load_spec(spec_file(tmp_path, seeds=[0, 1, 0]))
    assert sweep.load_spec(spec_file(tmp_path, seeds=3)).seeds == [3]


def test_run_names_keep_the_dataset_namespace_and_a_sweep_refuses_shared_names(tmp_path):
    datasets = ["d4rl-hdf5/hopper/medium-v2", "offrl/hopper/medium-v0", "mujoco/hopper/medium-v0"]
    runs = sweep.expand(sweep.load_spec(spec_file(tmp_path, datasets=datasets)))
    assert [run.name for run in runs] == ["bc_d4rl-hdf5-hopper-medium-v2_s0-1", "bc_offrl-hopper-medium-v0_s0-1",
                                          "bc_mujoco-hopper-medium-v0_s0-1"]
    sweep.require_unique_names(runs)
    alike = sweep.expand(sweep.load_spec(spec_file(tmp_path, grid={"actor_lr": [1e-4, 1.00001e-4]})))
    with pytest.raises(ValueError, match="runs that share a name, and with it a run directory: "
                                         "bc_offrl-pendulum-sweep-v0_actor_lr=0.0001_s0-1"):
        sweep.require_unique_names(alike)


def test_a_sweeps_typos_and_missing_datasets_fail_before_any_run_trains(pendulum, tmp_path, capsys):
    root = ["--root", str(tmp_path / "runs")]
    for fields, message in [
        ({"algorithms": ["td3bc"]}, "Unknown algorithm 'td3bc': offrl has bc, cql, iql"),
        ({"base": {**TINY, "num_updatez": 100}}, "bc has no setting num_updatez"),
        ({"base": {**TINY, "eval_every": 150}}, "eval_every=150 must be a multiple of log_every=100"),
        ({"datasets": [DATASET, "offrl/hopper/nowhere-v0"]}, "Not in the local store: offrl/hopper/nowhere-v0"),
    ]:
        assert cli_main(["sweep", str(spec_file(tmp_path, **fields)), *root]) == 2
        assert message in " ".join(capsys.readouterr().err.split())
        assert not (tmp_path / "runs").exists()
    assert cli_main(["sweep", str(spec_file(tmp_path, datasets=["offrl/hopper/nowhere-v0"])), "--dry-run", *root]) == 0
    assert "to run (dataset missing)" in capsys.readouterr().out


def test_yaml_that_does_not_parse_and_missing_report_folders_are_named(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nalgorithms: [bc\n")
    assert cli_main(["sweep", str(broken), "--dry-run"]) == 2
    assert f"{broken} is not valid YAML at line 3, column 1" in " ".join(capsys.readouterr().err.split())
    assert cli_main(["report", str(tmp_path), "--reference", str(broken)]) == 2
    assert f"{broken} is not valid YAML" in capsys.readouterr().err
    assert cli_main(["report", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such run directory" in capsys.readouterr().err


def test_part_of_a_sweep_runs_by_algorithm_and_dataset(tmp_path, capsys):
    spec = sweep.load_spec(spec_file(tmp_path, algorithms=["cql", "iql", "bc"],
                                     datasets=["offrl/hopper/medium-v0", "offrl/walker2d/medium-v0"]))
    part = sweep.restrict(spec, ["bc", "cql"], ["walker2d-medium"])
    assert part.algorithms == ["cql", "bc"] and part.datasets == ["offrl/walker2d/medium-v0"]
    assert {run.run_dir(tmp_path) for run in sweep.expand(part)} < {run.run_dir(tmp_path) for run in sweep.expand(spec)}
    assert sweep.restrict(spec, None, ["offrl/hopper/medium-v0"]).datasets == ["offrl/hopper/medium-v0"]
    assert cli_main(["sweep", str(tmp_path / "spec.yaml"), "--dry-run", "--algorithms", "iql,td3_bc"]) == 2
    assert "td3_bc not among the sweep's algorithms: cql, iql, bc" in " ".join(capsys.readouterr().err.split())
    assert cli_main(["sweep", str(tmp_path / "spec.yaml"), "--dry-run", "--root", str(tmp_path / "runs"),
                     "--algorithms", "iql", "--datasets", "hopper-medium"]) == 0
    assert "1 runs, 1 to run" in capsys.readouterr().out


def test_packed_seeds_match_separate_runs(pendulum, tmp_path):
    packed = sweep.SweepRun("pack", "td3_bc", DATASET, (0, 1), TINY)
    alone = [sweep.SweepRun("alone", "td3_bc", DATASET, (seed,), TINY) for seed in (0, 1)]
    sweep.run_local([packed, *alone], tmp_path, workers=1)
    packed_rows = read_metrics(packed.run_dir(tmp_path))
    for run in alone:
        for row in read_metrics(run.run_dir(tmp_path)):
            twin = next(r for r in packed_rows if r["step"] == row["step"] and r["seed"] == row["seed"])
            for key in ("critic_loss", "q_mean", "eval/return"):
                np.testing.assert_allclose(twin[key], row[key], rtol=1e-4, atol=1e-5)


def test_seed_per_run_splits_runs_that_reports_pool_again(pendulum, tmp_path):
    spec = sweep.load_spec(spec_file(tmp_path, seeds=[0, 1], grid={"actor_lr": [1e-3, 3e-4]}))
    split = sweep.seed_per_run(sweep.expand(spec))
    assert [run.name for run in split] == [
        "bc_offrl-pendulum-sweep-v0_actor_lr=0.001_s0", "bc_offrl-pendulum-sweep-v0_actor_lr=0.001_s1",
        "bc_offrl-pendulum-sweep-v0_actor_lr=0.0003_s0", "bc_offrl-pendulum-sweep-v0_actor_lr=0.0003_s1"]
    root = tmp_path / "runs"
    assert cli_main(["sweep", str(spec_file(tmp_path, seeds=[0, 1])), "--root", str(root), "--seed-per-run",
                     "--workers", "2"]) == 0
    assert sorted(path.name for path in (root / "tiny").iterdir()) == ["bc_offrl-pendulum-sweep-v0_s0",
                                                                      "bc_offrl-pendulum-sweep-v0_s1"]
    groups = group(find_runs([root])[0], by_run=True)
    assert list(groups) == [("bc [bc_offrl-pendulum-sweep-v0]", DATASET)]
    assert sorted(seed for run in groups[("bc [bc_offrl-pendulum-sweep-v0]", DATASET)] for seed in run.curves) == [0, 1]


def test_a_rerun_sweep_skips_finished_runs(pendulum, tmp_path, capsys):
    path = spec_file(tmp_path, grid={"actor_lr": [1e-3, 3e-4]})
    root = tmp_path / "runs"
    assert cli_main(["sweep", str(path), "--root", str(root), "--dry-run"]) == 0
    assert "2 to run" in capsys.readouterr().out
    assert cli_main(["sweep", str(path), "--root", str(root)]) == 0
    results = sorted(root.glob("tiny/*/result.json"))
    assert len(results) == 2
    stamps = [p.stat().st_mtime_ns for p in results]
    assert cli_main(["sweep", str(path), "--root", str(root)]) == 0
    assert "0 to run" in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in results] == stamps
    # a run cut off after its checkpoint is shown as resuming, not as starting over
    cut = results[0].read_bytes()
    results[0].unlink()
    assert cli_main(["sweep", str(path), "--root", str(root), "--dry-run"]) == 0
    assert "to resume from step 200" in capsys.readouterr().out
    results[0].write_bytes(cut)
    os.utime(results[0], ns=(stamps[0], stamps[0]))  # as it was, for the check below
    # the dataset made again: the sweep names its runs on the old data and trains nothing
    make_pendulum_dataset(DATASET, num_steps=3000, seed=1, overwrite=True)
    assert cli_main(["sweep", str(path), "--root", str(root)]) == 1
    assert "2 runs began on other data" in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in results] == stamps


def test_a_run_cut_off_before_its_first_checkpoint_starts_over(pendulum, tmp_path):
    run, = sweep.expand(sweep.load_spec(spec_file(tmp_path, seeds=[0])))
    root = tmp_path / "runs"
    run.run_dir(root).mkdir(parents=True)
    (run.run_dir(root) / "metrics.jsonl").write_text('{"step": 100, "seed": 0, "left_by": "the cut-off run"}\n')
    sweep.run_one(run, root)  # nothing to resume: its metrics go, and it trains from update 0
    rows = read_metrics(run.run_dir(root))
    assert [row["step"] for row in rows] == [100, 200] and "left_by" not in rows[0]


def test_a_failing_run_is_reported_while_the_others_finish(pendulum, tmp_path, capsys):
    path = spec_file(tmp_path, seeds=[0], grid={"eval_env": ["Pendulum-v1", "CartPole-v1"]})  # CartPole cannot fit
    root = tmp_path / "runs"
    assert cli_main(["sweep", str(path), "--root", str(root), "--workers", "1"]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "failed bc_offrl-pendulum-sweep-v0_eval_env=CartPole-v1_s0:" in out and "1 of 2 runs done under" in out
    assert ", 1 failed; summarize" in out
    assert [p.parent.name for p in root.glob("tiny/*/result.json")] == ["bc_offrl-pendulum-sweep-v0_eval_env=Pendulum-v1_s0"]


def test_the_ray_options_reach_the_ray_runners(pendulum, tmp_path, monkeypatch):
    from offrl.tools import ray_sweep

    calls = {}
    monkeypatch.setattr(ray_sweep, "run_ray", lambda runs, root, address, cpus, gpus: calls.setdefault(
        "ray", (len(runs), address, cpus, gpus)) and [])
    monkeypatch.setattr(ray_sweep, "run_tune", lambda runs, root, address, scheduler, grace, budget, cpus, gpus:
                        calls.setdefault("tune", (address, scheduler, grace, budget, cpus, gpus)) and [])
    path = spec_file(tmp_path, grid={"actor_lr": [1e-3, 3e-4]})
    assert cli_main(["sweep", str(path), "--root", str(tmp_path), "--ray", "head:6379", "--gpus-per-run", "0.5"]) == 0
    assert calls["ray"] == (2, "head:6379", 1.0, 0.5)
    assert cli_main(["sweep", str(path), "--root", str(tmp_path), "--scheduler", "median", "--cpus-per-run", "2"]) == 0
    assert calls["tune"] == (None, "median", TINY["eval_every"], TINY["num_updates"], 2.0, 0.0)


def test_a_diverging_run_is_a_result_the_sweep_and_its_report_show(pendulum, tmp_path, capsys):
    path = spec_file(tmp_path, algorithms=["td3_bc"], seeds=[0], base={**TINY, "divergence_threshold": 1e6},
                     grid={"critic_lr": [3e-4, 1e30]})
    root = tmp_path / "runs"
    assert cli_main(["sweep", str(path), "--root", str(root), "--workers", "1"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # as rich wrapped it
    assert "diverged td3_bc_" in out and "critic_lr=1e+30" in out and "2 of 2 runs done" in out
    results = {json.loads(p.read_text())["overrides"]["critic_lr"]: json.loads(p.read_text())
               for p in root.glob("tiny/*/result.json")}
    assert results[3e-4]["diverged"] is None and len(results[3e-4]["final_eval"]["eval/return"]) == 1
    assert results[1e30]["diverged"].startswith("Training diverged by update")
    assert cli_main(["sweep", str(path), "--root", str(root), "--workers", "1"]) == 0
    assert "0 to run" in capsys.readouterr().out  # not resumed into the same divergence
    text = write_report([root]).read_text()
    assert "## Diverged runs" in text and "critic_lr=1e+30" in text.split("## Diverged runs")[1]


def cpus_of_worker(run, root):
    """Stands in for training: which process ran the run, and on which CPUs it may run."""
    time.sleep(1.0)  # holds the worker, so that the pool's other worker takes the next run
    return {"run": run.name, "pid": os.getpid(), "cpus": sorted(os.sched_getaffinity(0))}


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="pinning needs sched_setaffinity and 2 CPUs")
def test_local_workers_are_pinned_to_disjoint_shares_of_the_cpus(tmp_path):
    runs = [sweep.SweepRun("pin", "bc", DATASET, (seed,)) for seed in range(4)]
    results = sweep.run_local(runs, tmp_path, workers=2, run_fn=cpus_of_worker)
    assert [result["run"] for result in results] == [run.name for run in runs]
    shares = sweep.cpu_shares(2)
    assert sorted(cpu for share in shares for cpu in share) == sorted(os.sched_getaffinity(0))
    cpus_by_worker = {result["pid"]: result["cpus"] for result in results}
    assert all(cpus in shares for cpus in cpus_by_worker.values())
    assert len(set(map(tuple, cpus_by_worker.values()))) == len(cpus_by_worker)  # no two workers share a CPU
    assert sweep.cpu_shares(len(os.sched_getaffinity(0)) + 1) is None  # more workers than CPUs: left unpinned


def waits_for_sigterm(run, root):
    """Stands in for training: marks that it started, then stops as a run does on SIGTERM."""
    with stopping_on_signals():
        (Path(root) / f"{run.name}.started").write_text("")
        deadline = time.monotonic() + 120
        while not stop_requested() and time.monotonic() < deadline:
            time.sleep(0.05)
        (Path(root) / f"{run.name}.stopped").write_text("")
        stop_if_requested(0)
    return {"run": run.name}


def test_a_sigterm_to_the_sweep_reaches_its_workers(tmp_path):
    runs = [sweep.SweepRun("stop", "bc", DATASET, (seed,), label=f"s{seed}") for seed in range(2)]

    def terminate_the_driver_once_both_run():
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("*.started"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)  # SIG_DFL, or what an earlier test's ray.init set
    threading.Thread(target=terminate_the_driver_once_both_run, daemon=True).start()
    # the driver does not die alone, leaving its workers to train on to their runs' ends
    with pytest.raises(StopRequested):
        sweep.run_local(runs, tmp_path, workers=2, run_fn=waits_for_sigterm)
    assert sorted(path.name for path in tmp_path.glob("*.stopped")) == [f"{run.name}.stopped" for run in runs]
    assert signal.getsignal(signal.SIGTERM) == before


def test_wandb_export_and_groups(tmp_path):
    path = spec_file(tmp_path, algorithms=["td3_bc"], grid={"alpha": [1.0, 2.5]},
                     random={"samples": 2, "axes": {"tau": {"uniform": [0.001, 0.01]}}})
    assert cli_main(["sweep", str(path), "--export-wandb"]) == 0
    exported = yaml.safe_load(path.with_suffix(".td3_bc.wandb.yaml").read_text())
    assert exported["program"] == "algorithms/td3_bc.py" and exported["method"] == "random"
    parameters = exported["parameters"]
    assert parameters["alpha"] == {"values": [1.0, 2.5]}
    assert parameters["tau"] == {"distribution": "uniform", "min": 0.001, "max": 0.01}
    assert parameters["wandb_group"] == {"value": "tiny"} and parameters["dataset"] == {"values": [DATASET]}
    run = sweep.expand(sweep.load_spec(path))[0]
    assert run.argv(tmp_path)[run.argv(tmp_path).index("--wandb_group") + 1] == "tiny"


def test_report_tables_aggregates_and_plots(pendulum, tmp_path):
    runs = sweep.expand(sweep.load_spec(spec_file(tmp_path, algorithms=["bc", "td3_bc"])))
    sweep.run_local(runs, tmp_path / "runs", workers=1)
    report = write_report([tmp_path / "runs"], reference={"pendulum-sweep": {"td3_bc": 50.0}})
    text = report.read_text()
    assert "| bc |" in text and "| td3_bc |" in text and "IQM" in text
    assert "(n=2)" in text and "[50.0]" in text and "Published scores in brackets" in text
    unmatched = write_report([tmp_path / "runs"], out=tmp_path / "unmatched", reference={"other": {"td3_bc": 1.0}})
    assert "--reference holds no published score" in unmatched.read_text()
    assert "brackets" not in unmatched.read_text()
    data_score = load_dataset(DATASET).summary()["normalized_return_mean"]
    assert f"| {DATASET} | {data_score:.1f} |" in text
    for name in ("learning_curves.png", "aggregates.png", "performance_profile.png", "report.json"):
        assert (report.parent / name).stat().st_size > 0
    numbers = json.loads((report.parent / "report.json").read_text())
    final_bc = numbers["scores"][f"bc|{DATASET}"]["final"]
    assert "Left out" not in text

    # a run without evaluation scores (a NeoRL-2 dataset, say) is named, not silently dropped
    unscored = tmp_path / "runs" / "no-eval"
    shutil.copytree(next((tmp_path / "runs").rglob("bc*/run.json")).parent, unscored)
    (unscored / "metrics.jsonl").write_text(json.dumps({"step": 100, "seed": 0, "critic_loss": 1.0}) + "\n")
    assert f"without evaluation scores (no eval env or reference scores, or stopped before the first evaluation): " \
           f"{unscored}." in write_report([tmp_path / "runs"], out=tmp_path / "unscored").read_text()
    with pytest.raises(FileNotFoundError, match=r"1 runs there have no evaluation .*train with --eval_env"):
        find_runs([unscored])
    shutil.rmtree(unscored)
    assert len(final_bc) == 2 and numbers["aggregates"]["bc"]["point"][1] == pytest.approx(np.mean(final_bc) / 100)

    # a run stopped halfway is reported at the step it reached and left out of the aggregates
    metrics = next((tmp_path / "runs").rglob("td3_bc*/metrics.jsonl"))
    metrics.write_text("".join(line + "\n" for line in metrics.read_text().splitlines() if json.loads(line)["step"] <= 100))
    text = write_report([tmp_path / "runs"], out=tmp_path / "stopped").read_text()
    aggregates = text.split("## Aggregates")[1]
    assert "(n=2) at 100 of 200" in text and "| td3_bc |" not in aggregates and "| bc |" in aggregates
    numbers = json.loads((tmp_path / "stopped" / "report.json").read_text())
    assert list(numbers["aggregates"]) == ["bc"] and not numbers["scores"][f"td3_bc|{DATASET}"]["finished"]

    # made again with other data, the dataset no longer matches what the runs trained on;
    # a run on another dataset that did not change stays comparable
    other = "offrl/pendulum/unchanged-v0"
    make_pendulum_dataset(other, num_steps=1000)
    copied = tmp_path / "runs" / "unchanged"
    shutil.copytree(metrics.parent, copied)
    record = json.loads((copied / "run.json").read_text())
    (copied / "run.json").write_text(json.dumps({**record, "dataset": other,
                                                 "dataset_fingerprint": load_dataset(other).fingerprint()}))
    make_pendulum_dataset(DATASET, num_steps=3000, seed=1, overwrite=True)
    text = write_report([tmp_path / "runs"], out=tmp_path / "remade").read_text()
    assert text.count("on other data") == 2 * 2 + 1  # bc and td3_bc, final and best; the footnote
    assert str(copied) not in text and f"| {other} |" in text
    assert "None: no dataset has runs at their budget" in text
    fresh = load_dataset(DATASET).summary()["normalized_return_mean"]
    assert f"| {DATASET} | {fresh:.1f} |" in text  # the data column is the local data's, not the runs'


def test_report_intervals_repeat_whatever_numpys_global_state(tmp_path):
    rng = np.random.default_rng(0)
    groups = {(name, dataset): [RunScores(tmp_path, name, dataset,
                                          {seed: [(100, float(score))] for seed, score in enumerate(rng.uniform(0, 100, 5))})]
              for name in ("bc", "iql") for dataset in ("a", "b")}
    intervals = []
    for global_seed in (1, 2):  # rliable draws its bootstrap resamples from np.random
        np.random.seed(global_seed)
        intervals.append(aggregates(groups, reps=200)[2])
        assert np.random.random() == np.random.RandomState(global_seed).random_sample()  # its state put back
    for name in ("bc", "iql"):
        np.testing.assert_array_equal(intervals[0][name], intervals[1][name])


def test_packed_hyperparameters_match_separate_runs(pendulum, tmp_path):
    spec = sweep.load_spec(spec_file(tmp_path, algorithms=["td3_bc"], grid={"alpha": [1.0, 4.0], "tau": [0.005]}))
    separate = sweep.expand(spec)
    packed = sweep.pack(separate)
    assert len(separate) == 2 and len(packed) == 1 and "packed2" in packed[0].name
    assert json.loads(packed[0].overrides["pack"]) == [{"alpha": 1.0}, {"alpha": 4.0}]
    sweep.run_local(separate + packed, tmp_path / "runs", workers=1)
    packed_rows = read_metrics(packed[0].run_dir(tmp_path / "runs"))
    assert {row["hp/alpha"] for row in packed_rows} == {1.0, 4.0}
    for run in separate:
        alpha = run.overrides["alpha"]
        for row in read_metrics(run.run_dir(tmp_path / "runs")):
            twin = next(r for r in packed_rows if (r["step"], r["seed"], r["hp/alpha"]) == (row["step"], row["seed"], alpha))
            for key in ("critic_loss", "actor_loss", "q_mean", "eval/return"):
                np.testing.assert_allclose(twin[key], row[key], rtol=1e-4, atol=1e-5)
    text = write_report([packed[0].run_dir(tmp_path / "runs")]).read_text()
    assert "td3_bc [alpha=1]" in text and "td3_bc [alpha=4]" in text
    # offrl evaluate keeps the points apart too, and repeats each member's last evaluation
    out = tmp_path / "evaluation.json"
    assert cli_main(["evaluate", str(packed[0].run_dir(tmp_path / "runs")), "--episodes", "2", "--out", str(out)]) == 0
    evaluation = json.loads(out.read_text())
    assert evaluation["points"] == [{"alpha": 1.0}] * 2 + [{"alpha": 4.0}] * 2 and evaluation["seeds"] == [0, 1, 0, 1]
    last = {(row["hp/alpha"], row["seed"]): row["eval/return"]
            for row in packed_rows if row["step"] == TINY["num_updates"]}
    expected = [last[(point["alpha"], seed)] for point, seed in zip(evaluation["points"], evaluation["seeds"])]
    np.testing.assert_allclose(evaluation["eval/return"], expected, rtol=1e-5)
