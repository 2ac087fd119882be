"""offrl as a library: the wheel, the Python API, the import layers, and start-up without jax."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import run_in_fresh_python

import offrl
from offrl.data.scripted import make_pendulum_dataset

REPO = Path(__file__).resolve().parents[1]
DATASET = "offrl/pendulum/test-v0"

# Layers from the bottom up: a module may import its own layer and those below it.
LAYERS = [("offrl.locks", "offrl.resources", "offrl.envs"), ("offrl.data",), ("offrl.core",), ("offrl.run",), ("offrl.model_based",),
          ("offrl.algorithms",), ("offrl.tools",)]


@pytest.fixture
def pendulum(minari_store):
    make_pendulum_dataset(DATASET, num_steps=3_000)
    return DATASET


def _layer(module: str) -> int:
    matches = [index for index, layer in enumerate(LAYERS)
               if any(module == prefix or module.startswith(prefix + ".") for prefix in layer)]
    assert matches, f"{module} belongs to no layer of {LAYERS}"
    return matches[0]


def _modules() -> dict[str, Path]:
    """Every module of the package by name; the algorithms install as offrl.algorithms."""
    found = {}
    for root, package in ((REPO / "offrl", "offrl"), (REPO / "algorithms", "offrl.algorithms")):
        for path in root.rglob("*.py"):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imported(path: Path, name: str) -> set[str]:
    """The offrl modules a file imports, at the top or inside functions."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {module for module in imported if module.startswith("offrl.")}


def test_imports_run_one_way_from_data_to_tools():
    modules = _modules()
    assert "offrl.algorithms.td3_bc" in modules and "offrl.run.train" in modules
    wrong = []
    for name, path in modules.items():
        if name == "offrl":  # the package's face: it forwards offrl.train & co. to offrl.run.api on first use
            continue
        for target in _imported(path, name):
            # `from offrl.run import checkpoint` names a module; `from offrl.run.train import main` a function
            module = target if target in modules else target.rsplit(".", 1)[0]
            if _layer(module) > _layer(name):
                wrong.append(f"{name} imports {module}")
    assert not wrong, wrong


def test_a_misplaced_import_is_caught(tmp_path):
    # the check above can fail: a data module that imports the run layer is reported
    path = tmp_path / "bad.py"
    path.write_text("def f():\n    from offrl.run.train import train\n")
    assert _imported(path, "offrl.data.bad") == {"offrl.run.train.train"}
    assert _layer("offrl.run.train") > _layer("offrl.data.bad")


def test_commands_that_need_no_jax_start_without_it():
    # `offrl --help`, the dataset commands and mistaken names answer without importing jax
    script = ("import sys\n"
              "from offrl.tools.cli import main\n"
              "for argv in (['--help'], ['train', 'nope'], ['train', 'td3_bc', '--dataset', 'x/y/z-v0'],\n"
              "             ['evaluate', '/no/run/here'], ['datasets', 'list'], ['datasets', 'info', 'x/y/z-v0']):\n"
              "    try:\n"
              "        main(argv)\n"
              "    except SystemExit:\n"
              "        pass\n"
              "print(sorted(name for name in ('jax', 'flax', 'wandb', 'ray', 'tyro', 'h5py') if name in sys.modules))")
    assert run_in_fresh_python(script).splitlines()[-1] == "[]"


def test_the_python_api_trains_scores_and_loads_a_run(pendulum, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs go under the working directory
    run = offrl.train("td3_bc", pendulum, seeds=[3, 5], num_updates=200, log_every=100, eval_every=200,
                      eval_episodes=2, checkpoint_every=200, wandb="disabled", hidden_dims=(32, 32))
    assert run.run_dir.parent == tmp_path / "runs" / "td3_bc" / pendulum
    assert sorted(run.scores) == [3, 5] and all(isinstance(score, float) for score in run.scores.values())
    assert run.seeds == [3, 5] and run.algorithm == "td3_bc"
    assert run.policy(5)(np.array([[1.0, 0.0, 0.0]])).shape == (1, 1)
    assert offrl.load_run(run.run_dir).scores == run.scores
    with pytest.raises(ValueError, match="trained seeds"):
        run.policy(4)
    # the command line's checks and config resolution: an unknown option is refused by name
    with pytest.raises(ValueError, match="unknown option --nmu_updates"):
        offrl.train("td3_bc", pendulum, nmu_updates=10)
    with pytest.raises(FileNotFoundError, match="holds no run"):
        offrl.load_run(tmp_path)
    resumed = offrl.train("td3_bc", resume=run.run_dir, num_updates=400)
    assert resumed.run_dir == run.run_dir and max(row["step"] for row in resumed.metrics()) == 400


def test_the_documented_python_example_runs(pendulum, tmp_path):
    example = REPO / "docs" / "examples" / "train_from_python.py"
    done = subprocess.run([sys.executable, str(example), pendulum, "1000"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "score of each seed at the last evaluation: {0:" in done.stdout
    assert "seed 1, one episode: return" in done.stdout and list((tmp_path / "runs" / "td3_bc").rglob("run.json"))


@pytest.mark.slow
def test_the_wheel_installs_and_trains_outside_the_checkout(pendulum, tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(REPO)], check=True, capture_output=True, cwd=tmp_path)
    wheel = next(wheels.glob("offrl-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    # every algorithm, config and behavior policy of the checkout, at its place in the package
    shipped = {f"offrl/algorithms/{path.relative_to(REPO / 'algorithms')}" for path in (REPO / "algorithms").rglob("*")
               if path.suffix in (".py", ".yaml")}
    shipped |= {f"offrl/policies/{path.relative_to(REPO / 'datasets' / 'policies')}"
                for path in (REPO / "datasets" / "policies").rglob("*") if path.suffix in (".py", ".json", ".msgpack")}
    assert "offrl/algorithms/configs/rebrac/hopper-medium.yaml" in shipped and len(shipped) > 40
    assert shipped <= names, sorted(shipped - names)

    # a fresh virtualenv: offrl from the wheel alone, its dependencies from this environment
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    dependencies = [path for path in sys.path if path.endswith("site-packages")]
    (site / "dependencies.pth").write_text("\n".join(dependencies) + "\n")  # read without their .pth files
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    str(wheel)], check=True, capture_output=True)

    work = tmp_path / "elsewhere"
    work.mkdir()
    check = ("import offrl, offrl.algorithms.td3_bc\n"
             "from offrl.run.config import yaml_overrides\n"
             "from offrl.data.suite import read_manifest\n"
             "print(offrl.__file__)\n"
             "print(yaml_overrides('rebrac', 'mujoco/hopper/medium-v0'))\n"
             "print(sorted(read_manifest()))")
    printed = subprocess.run([str(python), "-c", check], check=True, capture_output=True, text=True, cwd=work)
    location, configs, manifest = printed.stdout.strip().splitlines()
    assert Path(location).is_relative_to(venv) and not Path(location).is_relative_to(REPO)
    assert "actor_bc_coef" in configs and manifest == "['halfcheetah', 'hopper', 'walker2d']"

    done = subprocess.run([str(venv / "bin" / "offrl"), "train", "td3_bc", "--dataset", pendulum, "--num_updates",
                           "200", "--log_every", "100", "--eval_every", "200", "--eval_episodes", "2",
                           "--wandb", "disabled", "--hidden_dims", "32", "32"],
                          capture_output=True, text=True, cwd=work, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = next((work / "runs" / "td3_bc").rglob("run.json")).parent
    assert json.loads((run_dir / "run.json").read_text())["algorithm"] == "td3_bc"
    assert (run_dir / "checkpoints" / "latest.json").is_file()


def test_the_readme_algorithm_is_the_example_file_and_trains(pendulum, tmp_path):
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Add an algorithm"):]
    block = section[section.index("```python") + len("```python"):section.index("```\n", section.index("```python") + 9)]
    example = REPO / "docs" / "examples" / "percent_bc.py"
    lines = {line.strip() for line in example.read_text().splitlines()}
    missing = [line for line in block.splitlines() if line.strip() and line.strip() not in lines]
    assert not missing, f"README's excerpt differs from {example.name}: {missing}"
    done = subprocess.run([sys.executable, str(example), "--dataset", pendulum, "--fraction", "0.2", "--num_updates",
                           "200", "--log_every", "100", "--eval_every", "200", "--eval_episodes", "2",
                           "--wandb", "disabled", "--hidden_dims", "32", "32"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in next((tmp_path / "runs").rglob("metrics.jsonl")).read_text().splitlines()]
    assert all(0.1 < row["kept_share"] < 0.4 for row in rows)  # about the best fifth of the episodes
    bad = subprocess.run([sys.executable, str(example), "--dataset", pendulum, "--fraction", "1.5"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --fraction 1.5: it must be in (0, 1]."


def test_a_checkout_imported_without_an_install_is_named(tmp_path):
    # a checkout's offrl/ on sys.path without an install lacks offrl.algorithms and offrl.policies
    from offrl.resources import installed_folder, require_installed

    missing = installed_folder("offrl.not_installed_here")
    assert missing == Path(offrl.__file__).resolve().parent / "not_installed_here" and not missing.exists()
    with pytest.raises(FileNotFoundError, match=r"Install the checkout \(`pip install -e \.`"):
        require_installed(missing)
    assert (require_installed(installed_folder("offrl.algorithms")) / "td3_bc.py").is_file()
