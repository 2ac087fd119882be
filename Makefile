# offrl: `make train` and `make test` each set up the local virtualenv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install train test bench clean

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
	$(PY) -m offrl.main_job

bench: install
	$(PY) experiments/bench_data_load.py
	$(PY) experiments/bench_speed.py
	$(PY) experiments/bench_model_based.py
	$(PY) experiments/bench_simulator.py

clean:
	rm -rf $(VENV) .pytest_cache
