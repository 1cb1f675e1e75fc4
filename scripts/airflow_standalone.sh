#!/usr/bin/env bash
# `make airflow`: Airflow standalone (scheduler, dag-processor, triggerer, api-server) on this project, with
# SQLite metadata and LocalExecutor, for local use. PORT (default 8080) moves the UI and the REST API.
# Ctrl-C (or SIGTERM): standalone is asked to stop its components; whatever of them is still there after
# STOP_GRACE seconds (LocalExecutor's idle workers outlived the scheduler under load) is terminated, then
# killed, so nothing is left running (tests/integration/test_readme.py checks it a minute after Ctrl-C).
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
# The LocalExecutor forks its workers, and they their tasks, from a forkserver that imported the task runner and
# the stages' libraries once (include/feedback_loop/airflow_preload.py): no task imports Great Expectations again.
export AIRFLOW__SCHEDULER__MP_START_METHOD="${AIRFLOW__SCHEDULER__MP_START_METHOD:-forkserver}"
export AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD="${AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD:-feedback_loop.airflow_preload}"
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
# A background job of a non-interactive shell starts with SIGINT ignored, and a Python started that way never
# raises KeyboardInterrupt: standalone would not hear Ctrl-C. Reset SIGINT to the default before the exec.
"$BIN/python" -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])' \
  "$BIN/airflow" standalone &
standalone=$!
descendants() { local p; for p in $(pgrep -P "$1" 2>/dev/null); do echo "$p"; descendants "$p"; done; }
stop() {
  trap '' INT TERM
  echo "Stopping Airflow (waiting up to ${STOP_GRACE:-45} s for running tasks)..." >&2
  local left; left="$(descendants $$)"  # before standalone exits: its orphans would lose their parent link
  # Ctrl-C reached the whole process group, standalone included; a second SIGINT would cut its shutdown short.
  [ "$1" = INT ] || kill -INT "$standalone" 2>/dev/null || true
  for _ in $(seq 1 "${STOP_GRACE:-45}"); do kill -0 "$standalone" 2>/dev/null || break; sleep 1; done
  left="$left $(descendants $$)"
  # shellcheck disable=SC2086
  kill -TERM $left 2>/dev/null || true; sleep 3
  # shellcheck disable=SC2086
  kill -KILL $left 2>/dev/null || true
  exit 130
}
trap 'stop INT' INT
trap 'stop TERM' TERM
wait "$standalone"
