# The project's commands. `make demo` and `make test` are the whole set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export ACSR_DATA_DIR ?= $(CURDIR)/.data
export AIRFLOW_HOME ?= $(CURDIR)/.data/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__EXECUTOR ?= LocalExecutor
DAYS ?= 7
CONVERSATIONS ?= 300
# SOURCE=zendesk+otlp: the demo's night pulls from vendor stand-ins instead of sample files (docs/sources.md)
SOURCE ?=

.PHONY: venv demo test test-fast test-integration airflow bench bench-steady lint clean

$(BIN)/activate: requirements.txt requirements-dev.txt pyproject.toml instrumentation/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 2> >(grep -v '^WARNING: Location' >&2)
	$(BIN)/pip install -q -r requirements-dev.txt 2> >(grep -v '^WARNING: Location' >&2)
	$(BIN)/pip install -q --no-deps -e . 2> >(grep -v '^WARNING: Location' >&2)
	$(BIN)/pip install -q --no-deps -e ./instrumentation 2> >(grep -v '^WARNING: Location' >&2)  # the agent-side package (docs/instrumentation.md)
	@# the import check: quiet (Great Expectations logs a page at import), its output shown only if it fails;
	@# its own AIRFLOW_HOME, since importing Airflow creates <home>/logs and .data/ is the user's demo
	@AIRFLOW_HOME=$(CURDIR)/$(VENV)/import-check-airflow $(BIN)/python -c "import airflow, great_expectations, duckdb, feedback_loop, acsr_instrumentation" \
	  > $(VENV)/import-check.log 2>&1 || { cat $(VENV)/import-check.log; exit 1; }
	touch $(BIN)/activate

venv: $(BIN)/activate

demo: venv
	$(BIN)/python scripts/demo.py --days $(DAYS) --conversations-per-day $(CONVERSATIONS) --source "$(SOURCE)"

TEST_WORKERS ?= 2
test: venv  # everything, the real-scheduler suite included (on one pytest-xdist worker, the unit tests on the other)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --no-loadscope-reorder --durations=25

test-fast: venv  # everything but the suite that starts real Airflow services (tests/integration)
	$(BIN)/python -m pytest -q -m "not integration" -n $(TEST_WORKERS)

test-integration: venv  # scheduler, backfills, Celery/Postgres/Redis/S3, the Flywheel page (docs/operations.md)
	$(BIN)/python -m pytest -q -m integration

PORT ?= 8080
airflow: venv  # standalone on localhost:$(PORT); Ctrl-C stops it all
	PORT=$(PORT) bash scripts/airflow_standalone.sh

bench: venv
	$(BIN)/python bench/run_bench.py

STEADY_CONVERSATIONS ?= 5000
bench-steady: venv  # the night after 28 nights (every window full) beside the same night on an empty lake (docs/benchmark.md)
	$(BIN)/python bench/run_bench.py --conversations-per-day $(STEADY_CONVERSATIONS) --steady-state --no-airflow

lint: venv
	$(BIN)/ruff check dags include tests instrumentation
	$(BIN)/ruff check --select AIR3 dags

clean:
	rm -rf .data
