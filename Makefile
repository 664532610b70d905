# The two commands of the README:
#   make demo   set up, then run the main job on the embedded SQLite database
#   make test   set up, then run every check and test (what CI runs)
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-packages demo test quick-test lint check-migrations bench clean

setup: system-packages $(STAMP)

# Debian packages the Python packages do not bring (wsclean); apt-get when missing.
system-packages:
	scripts/system-packages.sh

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/reconciler demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

check-migrations: $(STAMP)
	rm -f build/alembic-check.sqlite
	RECONCILER_DATABASE_URL=sqlite:///build/alembic-check.sqlite $(BIN)/alembic upgrade head
	RECONCILER_DATABASE_URL=sqlite:///build/alembic-check.sqlite $(BIN)/alembic check

# Tests keep their files under build/pytest, apart from any other pytest run's /tmp/pytest-of-*.
# Two workers, one per core; a test module stays on one worker, so its module-scoped
# fixtures (a simulated observation, a calibrated scene) are made once.
PYTEST := $(BIN)/python -m pytest --basetemp=build/pytest -n 2 --dist loadscope

test: setup lint check-migrations
	scripts/ensure-postgres.sh
	mkdir -p build/pytest
	$(PYTEST)

quick-test: setup
	scripts/ensure-postgres.sh
	mkdir -p build/pytest
	$(PYTEST) -m "not e2e" -x -q

bench: setup
	scripts/ensure-postgres.sh
	$(BIN)/python benchmarks/plan_scale.py

clean:
	rm -rf $(VENV) build var .pytest_cache .hypothesis
