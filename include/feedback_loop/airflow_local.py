"""Settings for the local Airflow of `make airflow` (scripts/airflow_standalone.sh), importable by Airflow's
configuration (`[database] sql_alchemy_connect_args` names an object by its import path)."""

# SQLite makes a writer wait this many seconds for another's lock (Python's default is 5). Standalone runs
# four components and the task processes on one SQLite file; on a loaded machine 5 s was not enough and
# the scheduler died of "database is locked" (seen at a load of ~28 on 2 cores).
SQLITE_CONNECT_ARGS = {"timeout": 60}
