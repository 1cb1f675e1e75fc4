#!/usr/bin/env bash
# `make airflow`: Airflow standalone (scheduler, dag-processor, triggerer, api-server) on this project, with
# SQLite metadata and LocalExecutor, for local use. PORT (default 8080) moves the UI and the REST API.
# Ctrl-C: the terminal signals the whole process group; standalone terminates its components. The scheduler
# first lets running tasks finish (a second Ctrl-C does not wait). Seen under heavy load: LocalExecutor's
# idle worker processes outlived the scheduler after the second Ctrl-C (tests/integration/test_readme.py
# checks that nothing is left a minute after Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-8080}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$PWD/.data/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$PWD/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$PWD/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-admin:admin}"
export AIRFLOW__API__PORT="$PORT"
export AIRFLOW__API__HOST="${AIRFLOW__API__HOST:-127.0.0.1}"  # local use: not on the network with admin/admin
export AIRFLOW__API__BASE_URL="${AIRFLOW__API__BASE_URL:-http://localhost:$PORT}"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="${AIRFLOW__CORE__EXECUTION_API_SERVER_URL:-http://localhost:$PORT/execution/}"
if [[ "${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-sqlite}" == sqlite* ]]; then
  export AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS="${AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS:-feedback_loop.airflow_local.SQLITE_CONNECT_ARGS}"
fi
# standalone starts each component as an `airflow` found on PATH: the venv's, with nothing activated.
BIN="$(cd "${VENV:-.venv}/bin" && pwd)"
export PATH="$BIN:$PATH"
mkdir -p "$AIRFLOW_HOME"
# A fixed local password (admin/admin) instead of the generated one; delete the file to get a random one.
pwfile="$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
[ -f "$pwfile" ] || echo '{"admin": "admin"}' > "$pwfile"
login="$("$BIN/python" -c 'import json,sys; u,p=next(iter(json.load(open(sys.argv[1])).items())); print(f"{u} / {p}")' "$pwfile" 2>/dev/null || echo "see $pwfile")"
"$BIN/airflow" db migrate >/dev/null
"$BIN/airflow" pools set duckdb_warehouse 1 "single writer of the DuckDB warehouse file" >/dev/null
cat <<MSG
Airflow UI: http://localhost:$PORT   login: $login   (password file: $pwfile)
Flywheel page: http://localhost:$PORT/plugin/flywheel   Ctrl-C stops it (once: running tasks finish first; twice: now).
In another terminal, for the CLI: export AIRFLOW_HOME=$AIRFLOW_HOME
New DAGs start paused: a backfill or trigger of a paused DAG creates its runs, which wait (queued) until
you unpause it: .venv/bin/airflow dags unpause acsr_nightly
MSG
exec "$BIN/airflow" standalone
