"""Reports over finished runs: tables, rliable aggregates, and plots.

    offrl report RUNS_OR_SWEEP [RUNS_OR_SWEEP ...] [--out DIR] [--reference YAML]

Every directory under the given paths that holds a run (run.json and metrics.jsonl) is
read. Per algorithm x dataset: the final normalized score (the last evaluation) and the
best one (the best evaluation) of each seed. A run that stopped before its planned budget
(killed, or still running) is reported at its last evaluation with the step it reached
("at 60k of 100k") and left out of the aggregates, which compare scores at the budget; a
run that diverged is marked so, and listed with what diverged. A run whose data differs
from the local dataset of the same id (its recorded fingerprint, see
OfflineDataset.fingerprint, is not the local one's: the dataset was made again since) is
marked "on other data" and left out of the aggregates too.
Written to DIR (default: the first path):
- report.md: a table of final and best scores, mean ± std over seeds, beside the
  dataset's own normalized return (when the dataset is local) and, with --reference, a
  YAML of published scores (dataset name -> algorithm -> score); and the rliable
  aggregates (IQM, mean, optimality gap, with 95% stratified bootstrap confidence
  intervals, Agarwal et al. 2021) of each algorithm's final scores across datasets;
- learning_curves.png (mean over seeds, 95% bootstrap band), aggregates.png
  (interval estimates) and performance_profile.png;
- report.json with all the numbers.
Runs of the same algorithm and dataset (e.g. sweep points) are pooled unless `--by-run`
(which keeps run directories apart, a point's `--seed-per-run` runs together);
the points of a packed run (hp/<key> columns) are always kept apart.

Runs that logged offline estimates (`--ope fqe`, on data without an env) get a section of
their own, labelled as estimates: each group's final FQE estimate beside its measured score
where it has one, the step each run's estimates rank first (checkpoint selection), and per
dataset the group they rank first (hyperparameter or algorithm selection).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from offrl.run.config import dataset_config_name  # noqa: E402
from offrl.run.directory import DIVERGED, divergence, planned_steps  # noqa: E402
from offrl.run.logging import read_metrics  # noqa: E402

SCORE = "eval/normalized_score"
ESTIMATE = "ope/fqe_normalized_score"  # an estimate from data (offrl.run.ope), never pooled with SCORE


@dataclass
class RunScores:
    run_dir: Path
    algorithm: str
    dataset: str
    curves: dict[int, list[tuple[int, float]]]  # seed -> (step, normalized score)
    point: str = ""  # packed hyperparameter values, e.g. "actor_bc_coef=0.01"
    data_score: float | None = None  # the training data's mean normalized return, as recorded by the run
    planned: int | None = None  # the steps the run was configured for (None: not recorded)
    diverged: bool = False
    fingerprint: str | None = None  # of the data it trained on (None: a run from before run.json had it)
    other_data: bool = False  # trained on data that differs from the local dataset's (set by the report)

    @property
    def reached(self) -> int:
        return min(curve[-1][0] for curve in self.curves.values() if curve)

    @property
    def finished(self) -> bool:
        return self.planned is None or self.reached >= self.planned

    @property
    def comparable(self) -> bool:
        """At its budget and on the dataset as it is now: fit for the aggregates."""
        return self.finished and not self.other_data

    @property
    def final(self) -> list[float]:
        return [curve[-1][1] for curve in self.curves.values() if curve]

    @property
    def best(self) -> list[float]:
        return [max(score for _, score in curve) for curve in self.curves.values() if curve]


@dataclass
class RunEstimates:
    """The FQE estimates a run logged at its evaluations, per seed: (step, normalized estimate)."""

    run_dir: Path
    algorithm: str
    dataset: str
    point: str
    estimates: dict[int, list[tuple[int, float]]]

    @property
    def final(self) -> list[float]:
        return [curve[-1][1] for curve in self.estimates.values()]

    def selected_step(self) -> int:
        """The evaluation step whose estimate, averaged over seeds, is highest."""
        by_step = defaultdict(list)
        for curve in self.estimates.values():
            for step, value in curve:
                by_step[step].append(value)
        return max(by_step, key=lambda step: np.mean(by_step[step]))


def _point_label(row: dict) -> str:
    return ",".join(f"{key[3:]}={value:g}" for key, value in sorted(row.items()) if key.startswith("hp/"))


def find_estimates(paths: list[Path]) -> list[RunEstimates]:
    """The runs under `paths` that logged FQE estimates, one entry per packed point."""
    found = []
    for root in paths:
        for run_json in sorted(Path(root).rglob("run.json")):
            run_dir = run_json.parent
            if not (run_dir / "metrics.jsonl").is_file():
                continue
            points: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
            for row in read_metrics(run_dir):
                if ESTIMATE in row:
                    points[_point_label(row)][row["seed"]].append((row["step"], row[ESTIMATE]))
            meta = json.loads(run_json.read_text())
            found += [RunEstimates(run_dir, meta["algorithm"], meta.get("dataset", ""), label, dict(curves))
                      for label, curves in points.items()]
    return found


def estimate_lines(estimates: list[RunEstimates], runs: list[RunScores]) -> list[str]:
    """The report's section on offline estimates: never mixed into the measured tables."""
    measured = {(run.run_dir, run.point): run.final for run in runs}
    lines = ["## Offline estimates (FQE, not measured returns)", "",
             "Normalized FQE estimates at each run's last evaluation, mean ± std over seeds; measured scores beside "
             "them where the run was also evaluated in an env. 'Selected' is the evaluation step whose estimate is "
             "highest.", "", "| dataset | algorithm | estimate | measured | selected step |", "|---|---|---|---|---|"]
    best: dict[str, tuple[float, str]] = {}
    for entry in sorted(estimates, key=lambda e: (e.dataset, e.algorithm, e.point, str(e.run_dir))):
        name = f"{entry.algorithm} {entry.point}".strip()
        true = measured.get((entry.run_dir, entry.point))
        truth = f"{np.mean(true):.1f} ± {np.std(true):.1f}" if true else "–"
        lines.append(f"| {entry.dataset} | {name} | {np.mean(entry.final):.1f} ± {np.std(entry.final):.1f} | {truth} "
                     f"| {_steps(entry.selected_step())} |")
        if entry.dataset not in best or np.mean(entry.final) > best[entry.dataset][0]:
            best[entry.dataset] = (float(np.mean(entry.final)), f"{name} ({entry.run_dir})")
    lines += [""] + [f"Ranked first by FQE on {dataset}: {choice}." for dataset, (_, choice) in sorted(best.items())]
    return lines + [""]


def find_runs(paths: list[Path], required: bool = True) -> tuple[list[RunScores], list[Path]]:
    """The evaluated runs under `paths` (one entry per packed point), and the run directories
    that logged metrics but no evaluation scores."""
    runs, unscored = [], []
    run_dirs = [run_json.parent for root in paths for run_json in sorted(Path(root).rglob("run.json"))
                if (run_json.parent / "metrics.jsonl").is_file()]
    for run_dir in run_dirs:
        meta = json.loads((run_dir / "run.json").read_text())
        planned = planned_steps(run_dir) if (run_dir / "config.yaml").is_file() else None
        rows = [row for row in read_metrics(run_dir) if SCORE in row]
        if not rows:
            unscored.append(run_dir)
        # a packed run holds several hyperparameter points (hp/<key> columns): one entry each
        points: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
        for row in rows:
            points[_point_label(row)][row["seed"]].append((row["step"], row[SCORE]))
        for label, curves in points.items():
            runs.append(RunScores(run_dir, meta["algorithm"], meta.get("dataset") or meta.get("env", ""),
                                  dict(curves), label, meta.get("data_normalized_return"), planned,
                                  divergence(run_dir) is not None, meta.get("dataset_fingerprint")))
    if not runs and required:
        found = (f" {len(unscored)} runs there have no evaluation (e.g. {unscored[0]}): their datasets name no "
                 "eval env or no reference scores (NeoRL-2; train with --eval_env ENV_ID, or with --ope fqe for "
                 "estimates), or they stopped before their first evaluation." if unscored else "")
        raise FileNotFoundError(f"No runs with normalized evaluation scores under {', '.join(map(str, paths))}."
                                + found)
    return runs, unscored


# `offrl sweep --seed-per-run` names a point's runs <name>_s<seed>
SEED_SUFFIX = re.compile(r"_s\d+$")


def group(runs: list[RunScores], by_run: bool = False) -> dict[tuple[str, str], list[RunScores]]:
    """Runs pooled per algorithm (and packed point), or with `by_run` per run directory, the
    one-seed runs of a point counting as one directory."""
    groups: dict[tuple[str, str], list[RunScores]] = defaultdict(list)
    for run in runs:
        directory = SEED_SUFFIX.sub("", run.run_dir.name)
        name = (f"{run.algorithm} [{directory}{'|' + run.point if run.point else ''}]" if by_run
                else f"{run.algorithm} [{run.point}]" if run.point else run.algorithm)
        groups[(name, run.dataset)].append(run)
    return dict(groups)


def comparable_groups(groups):
    """The groups' comparable runs, keeping only groups with any."""
    comparable = {key: [run for run in runs if run.comparable] for key, runs in groups.items()}
    return {key: runs for key, runs in comparable.items() if runs}


def mark_other_data(runs: list[RunScores]) -> dict[str, int]:
    """Mark the runs that trained on other data than the local dataset of the same id holds
    now (made again since, from other behavior policies or another source file). Returns,
    per dataset that is not local, how many different copies its runs trained on."""
    from offrl.data import DatasetError, local_fingerprint

    copies = {}
    for dataset_id in sorted({run.dataset for run in runs if run.fingerprint}):
        try:
            current = local_fingerprint(dataset_id)
        except DatasetError:  # unreadable: as if not local
            current = None
        if current is None:
            copies[dataset_id] = len({run.fingerprint for run in runs if run.dataset == dataset_id and run.fingerprint})
            continue
        for run in runs:
            if run.dataset == dataset_id:
                run.other_data = run.fingerprint not in (None, current)
    return copies


@contextmanager
def global_numpy_seed(seed: int):
    """Seed NumPy's global generator for the block, then put its state back. rliable 1.2's
    stratified bootstrap draws its resamples from np.random, ignoring the random_state it is
    given, so this is what makes a report's intervals the same every time it is made."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


def aggregates(groups, reps: int = 2000, seed: int = 0):
    """rliable interval estimates of IQM, mean and optimality gap of final scores / 100.

    Each algorithm's score matrix is (runs x datasets); datasets an algorithm lacks, and
    seeds beyond the fewest any dataset has, are left out, so the matrix is complete."""
    from rliable import library as rly
    from rliable import metrics

    algorithms = sorted({name for name, _ in groups})
    datasets = sorted({dataset for _, dataset in groups})
    matrices = {}
    for name in algorithms:
        columns = [sum((run.final for run in groups[(name, d)]), []) for d in datasets if (name, d) in groups]
        depth = min(len(column) for column in columns)
        matrices[name] = np.array([column[:depth] for column in columns]).T / 100.0
    aggregate = lambda scores: np.array([metrics.aggregate_iqm(scores), metrics.aggregate_mean(scores),  # noqa: E731
                                         metrics.aggregate_optimality_gap(scores)])
    with global_numpy_seed(seed):
        point, interval = rly.get_interval_estimates(matrices, aggregate, reps=reps)
    return matrices, point, interval


def learning_curve_plot(groups, path: Path, seed: int = 0) -> None:
    datasets = sorted({dataset for _, dataset in groups})
    figure, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.8), squeeze=False)
    rng = np.random.default_rng(seed)
    for axis, dataset in zip(axes[0], datasets):
        for (name, d), runs in sorted(groups.items()):
            if d != dataset:
                continue
            curves = [curve for run in runs for curve in run.curves.values()]
            length = min(len(curve) for curve in curves)
            steps = np.array([step for step, _ in curves[0][:length]])
            scores = np.array([[score for _, score in curve[:length]] for curve in curves])
            means = scores.mean(0)
            boot = np.array([scores[rng.integers(0, len(scores), len(scores))].mean(0) for _ in range(1000)])
            low, high = np.percentile(boot, [2.5, 97.5], axis=0)
            axis.plot(steps, means, label=name)
            axis.fill_between(steps, low, high, alpha=0.2)
        axis.set(title=dataset, xlabel="step", ylabel="normalized score")
        axis.legend(fontsize=8)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def dataset_score(dataset_id: str, runs: list[RunScores]) -> str:
    """The dataset's own mean normalized return: as the runs recorded it, else from the local store."""
    from offrl.data import DatasetError, load_dataset

    recorded = [run.data_score for run in runs
                if run.dataset == dataset_id and run.data_score is not None and not run.other_data]
    if recorded:
        return f"{recorded[0]:.1f}"
    try:
        return f"{load_dataset(dataset_id).summary()['normalized_return_mean']:.1f}"
    except (DatasetError, KeyError):
        return "–"


def write_report(paths: list[Path], out: Path | None = None, by_run: bool = False,
                 reference: dict[str, dict[str, float]] | None = None) -> Path:
    from rliable import library as rly
    from rliable import plot_utils

    estimates = find_estimates(paths)
    runs, unscored = find_runs(paths, required=not estimates)
    unscored = [run_dir for run_dir in unscored if run_dir not in {entry.run_dir for entry in estimates}]
    copies = mark_other_data(runs)
    groups = group(runs, by_run)
    out = Path(out or paths[0])
    out.mkdir(parents=True, exist_ok=True)
    algorithms = sorted({name for name, _ in groups})
    datasets = sorted({dataset for _, dataset in groups})
    at_budget = comparable_groups(groups)
    aggregated = sorted({name for name, _ in at_budget})
    # aggregates compare algorithms on the same datasets: those every one of them finished
    common = set(datasets).intersection(*({d for n, d in at_budget if n == name} for name in aggregated))
    at_budget = {key: runs for key, runs in at_budget.items() if key[1] in common}

    lines = ["# Report", "", f"{len(runs)} runs under {', '.join(map(str, paths))}. Normalized scores "
             "(0 = random, 100 = expert), mean ± std over seeds.", ""]
    if unscored:  # said, so that a table without them is not read as all there is
        lines += [f"Left out, without evaluation scores (no eval env or reference scores, or stopped before the "
                  f"first evaluation): {', '.join(str(run_dir) for run_dir in unscored)}.", ""]
    reference = reference or {}
    data_scores = {dataset: dataset_score(dataset, runs) for dataset in datasets}
    bracketed = False
    for kind in ("final", "best"):
        lines += [f"## {kind} score", "", "| dataset | data | " + " | ".join(algorithms) + " |",
                  "|---|---|" + "---|" * len(algorithms)]
        for dataset in datasets:
            cells = []
            published = reference.get(dataset_config_name(dataset), {})
            for name in algorithms:
                group_runs = groups.get((name, dataset), [])
                values = sum((getattr(run, kind) for run in group_runs), [])
                cell = f"{np.mean(values):.1f} ± {np.std(values):.1f} (n={len(values)})" if values else "–"
                stopped = [run for run in group_runs if not run.finished]
                if stopped:
                    how = "diverged at" if any(run.diverged for run in stopped) else "at"
                    cell += (f" {how} {_steps(min(run.reached for run in stopped))}"
                             f" of {_steps(max(run.planned for run in stopped))}")
                if any(run.other_data for run in group_runs):
                    cell += " on other data"
                if name in published:
                    cell += f" [{published[name]}]"
                    bracketed = True
                cells.append(cell)
            lines.append(f"| {dataset} | {data_scores[dataset]} | " + " | ".join(cells) + " |")
        lines.append("")
    if bracketed:
        lines += ["Published scores in brackets (--reference): a check of ordering and magnitude only.", ""]
    elif reference:
        lines += ["--reference holds no published score for these algorithms and datasets.", ""]
    if any(not run.finished for run in runs):
        lines += ["Entries marked 'at N of M' stopped before their budget: their scores are at the "
                  "last evaluation, and the aggregates leave them out.", ""]
    other = sorted({str(run.run_dir) for run in runs if run.other_data})
    if other:
        lines += ["Entries marked 'on other data' trained on a copy of the dataset that differs from the local one "
                  "(it was made again since, or converted from another file): they are not comparable with runs "
                  "on the local data, and the aggregates leave them out. Rerun them:", ""]
        lines += [f"- {run_dir}" for run_dir in other] + [""]
    mixed = [f"{dataset_id} ({count} copies)" for dataset_id, count in copies.items() if count > 1]
    if mixed:
        lines += [f"Runs of one dataset trained on different copies of it, and the dataset is not local to tell "
                  f"which is current: {', '.join(mixed)}.", ""]
    diverged = sorted(record.parent for root in paths for record in Path(root).rglob(DIVERGED))
    if diverged:  # those that diverged before their first evaluation are in no table
        lines += ["## Diverged runs", ""] + [f"- {run_dir}: {divergence(run_dir)}" for run_dir in diverged] + [""]
    if estimates:
        lines += estimate_lines(estimates, runs)
    lines += ["## Aggregates of final scores (rliable, 95% stratified bootstrap CIs)", ""]
    if at_budget and len(common) < len(datasets):
        lines += [f"Over the datasets every aggregated algorithm finished: {', '.join(sorted(common))}.", ""]
    if groups:
        learning_curve_plot(groups, out / "learning_curves.png")
    report = {"runs": [str(run.run_dir) for run in runs],
              "scores": {f"{name}|{dataset}": {"final": sum((r.final for r in rs), []), "best": sum((r.best for r in rs), []),
                                               "finished": all(r.finished for r in rs),
                                               "other_data": any(r.other_data for r in rs)}
                         for (name, dataset), rs in groups.items()},
              "diverged": {str(run_dir): divergence(run_dir) for run_dir in diverged}, "aggregates": {},
              "estimates": {f"{entry.run_dir}|{entry.point}": {"final": entry.final,
                                                              "selected_step": entry.selected_step()}
                            for entry in estimates}}
    if not at_budget:
        lines += ["None: no dataset has runs at their budget from every algorithm that has any.", ""]
        (out / "report.md").write_text("\n".join(lines))
        (out / "report.json").write_text(json.dumps(report, indent=1))
        return out / "report.md"
    matrices, point, interval = aggregates(at_budget)
    lines += ["| algorithm | IQM | mean | optimality gap |", "|---|---|---|---|"]
    for name in aggregated:
        cells = [f"{100 * point[name][i]:.1f} [{100 * interval[name][0][i]:.1f}, {100 * interval[name][1][i]:.1f}]"
                 for i in range(3)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Plots: learning_curves.png, aggregates.png, performance_profile.png.", ""]
    (out / "report.md").write_text("\n".join(lines))

    figure, _ = plot_utils.plot_interval_estimates(point, interval, metric_names=["IQM", "Mean", "Optimality Gap"],
                                                   algorithms=aggregated, xlabel="normalized score / 100")
    figure.savefig(out / "aggregates.png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    thresholds = np.linspace(0.0, 1.2, 61)
    with global_numpy_seed(0):
        profiles, profile_cis = rly.create_performance_profile(matrices, thresholds)
    figure, axis = plt.subplots(figsize=(6, 4))
    plot_utils.plot_performance_profiles(profiles, thresholds, performance_profile_cis=profile_cis,
                                         colors=dict(zip(aggregated, plt.rcParams["axes.prop_cycle"].by_key()["color"])),
                                         xlabel=r"normalized score $\tau$ / 100", ax=axis)
    axis.legend(aggregated, fontsize=8)
    figure.savefig(out / "performance_profile.png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    report["aggregates"] = {name: {"point": point[name].tolist(), "low": interval[name][0].tolist(),
                                   "high": interval[name][1].tolist(), "metrics": ["iqm", "mean", "optimality_gap"]}
                            for name in aggregated}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return out / "report.md"


def _steps(count: int) -> str:
    return f"{count // 1000}k" if count >= 1000 and count % 1000 == 0 else str(count)
