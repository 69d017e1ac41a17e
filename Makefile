# The two commands a new user types (see README.md): `make demo` and `make test`.
# Each sets itself up: a virtual environment in .venv with every pinned package.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint typecheck setup clean

setup: $(STAMP)

# torch goes in first and exactly at its pin: the CPU build lies on this machine's disk, while a
# resolver left to itself would download a multi-GB CUDA build.
$(STAMP): pyproject.toml requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0"
	# compat: the repository on sys.path by a plain .pth line. The default editable mode installs
	# an import finder that every Python start loads (about 25 ms of pathlib and re before the
	# first line of `orch`); a setuptools without compat mode falls back to it.
	$(PY) -m pip install --quiet -e ".[train,clusters,dev]" --config-settings editable_mode=compat \
		|| $(PY) -m pip install --quiet -e ".[train,clusters,dev]"
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	# Bytecode now: where PYTHONDONTWRITEBYTECODE is set, every `orch` would otherwise compile our
	# modules from source (about 9 ms a command); a .pyc older than its source is just ignored.
	$(PY) -m compileall -q orchestrator launchers sweeps hydra_plugins > /dev/null
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/orch demo

test: $(STAMP)
	bash scripts/install-system-deps.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q --durations=20

# The fast lane (under 2 minutes on 2 cores): every test that starts no external service (Slurm,
# Ray, an MLflow server, PostgreSQL, the PJM emulator, a daemon process) and is not among the
# slowest; tests/conftest.py puts the `service` and `slow` markers on them.
test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -m "not service and not slow" --durations=10

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
