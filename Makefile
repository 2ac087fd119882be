# offrl: `make train` and `make test` each set up the local virtualenv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install train test bench datasets sweep report clean

install: $(STAMP)

# Re-installs only when the dependency pins change.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==26.3
	$(PY) -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $(STAMP)

# XLA compiles on one thread and many tests are mostly compilation: one pytest
# worker per core (worksteal balances the few minute-long learning tests).
TEST_WORKERS ?= 2

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal tests

train: install
	$(PY) -m offrl.tools.main_job

bench: install
	$(PY) experiments/bench_data_load.py
	$(PY) experiments/bench_speed.py
	$(PY) experiments/bench_model_based.py
	$(PY) experiments/bench_simulator.py

# The 15 suite datasets (datasets/README.md); those already in the Minari store are kept
# unless the shipped policies they were made from have changed.
SUITE := $(foreach env,hopper halfcheetah walker2d,$(foreach kind,random medium expert medium-replay medium-expert,$(env)-$(kind)))

datasets: install
	$(VENV)/bin/offrl datasets generate $(SUITE) --missing

# make sweep SPEC=experiments/sweeps/quality.yaml [WORKERS=3]; a rerun skips finished runs.
WORKERS ?= $(shell nproc)

sweep: install
	$(if $(SPEC),,$(error SPEC is unset: make sweep SPEC=experiments/sweeps/NAME.yaml))
	$(VENV)/bin/offrl sweep $(SPEC) --workers $(WORKERS)

# make report RUNS=runs/sweeps/quality [OUT=experiments/results/quality]
report: install
	$(if $(RUNS),,$(error RUNS is unset: make report RUNS=runs/sweeps/NAME))
	$(VENV)/bin/offrl report $(RUNS) $(if $(OUT),--out $(OUT)) --reference experiments/published_d4rl.yaml

clean:
	rm -rf $(VENV) .pytest_cache
