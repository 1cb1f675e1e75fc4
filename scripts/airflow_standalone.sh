#!/usr/bin/env bash
# `make airflow`: Airflow standalone (scheduler, dag-processor, triggerer, api-server on :8080) on this
# project, with SQLite metadata and LocalExecutor, for local use. Log in as admin / admin.
set -euo pipefail
cd "$(dirname "$0")/.."
export AIRFLOW_HOME="${AIRFLOW_HOME:-$PWD/.data/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$PWD/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$PWD/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-admin:admin}"
mkdir -p "$AIRFLOW_HOME"
# A fixed local password (admin/admin) instead of the generated one; delete the file to get a random one.
pwfile="$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
[ -f "$pwfile" ] || echo '{"admin": "admin"}' > "$pwfile"
BIN="${VENV:-.venv}/bin"
"$BIN/airflow" db migrate >/dev/null
"$BIN/airflow" pools set duckdb_warehouse 1 "single writer of the DuckDB warehouse file" >/dev/null
echo "Airflow UI: http://localhost:8080  (user admin, password in $pwfile)"
exec "$BIN/airflow" standalone
