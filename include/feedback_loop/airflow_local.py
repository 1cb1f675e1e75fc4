"""Settings for the local Airflow of `make airflow` (scripts/airflow_standalone.sh), importable by Airflow's
configuration (`[database] sql_alchemy_connect_args` names an object by its import path)."""

from __future__ import annotations

import gc
import importlib
import logging

# SQLite makes a writer wait this many seconds for another's lock (Python's default is 5). Standalone runs
# four components and the task processes on one SQLite file; on a loaded machine 5 s was not enough and
# the scheduler died of "database is locked" (seen at a load of ~28 on 2 cores).
SQLITE_CONNECT_ARGS = {"timeout": 60}

# What the scheduler's forkserver (and the Celery worker) import once for every task process they fork: see
# feedback_loop.airflow_preload, which runs preload_task_libraries() when it is imported.
TASK_LIBRARIES = (
    # what a task process runs and parses: the task runner, the DAG files' imports, the plugin's imports
    "airflow.sdk.execution_time.supervisor",
    "airflow.sdk.execution_time.task_runner",
    "airflow.executors.local_executor",
    "airflow.dag_processing.dagbag",
    "airflow.serialization.serialized_objects",
    "airflow.providers.standard.operators.trigger_dagrun",
    "airflow.providers.standard.sensors.python",
    "airflow.plugins_manager",
    "airflow.api_fastapi.core_api.security",
    "fastapi",
    # what the stages use
    "great_expectations",
    "pandas",
    "pyarrow",
    "pyarrow.parquet",
    "duckdb",
    "sklearn.linear_model",
    "sklearn.feature_extraction.text",
    "mlflow",
)


def preload_task_libraries(modules: tuple[str, ...] = TASK_LIBRARIES) -> None:
    """Import `modules` (a missing one with a warning) and freeze what is loaded: feedback_loop.airflow_preload."""
    # GX logs ~150 INFO lines about its own registries while it imports: not for the scheduler's log.
    gx_log = logging.getLogger("great_expectations")
    level = gx_log.level
    gx_log.setLevel(logging.WARNING)
    try:
        for name in modules:
            try:
                importlib.import_module(name)
            except ImportError as exc:  # one missing library costs its own import per task, not the others'
                logging.getLogger(__name__).warning("not preloaded for the tasks: %s (%s)", name, exc)
    finally:
        gx_log.setLevel(level)
    # What is loaded now stays out of the collector's reach: a child's collections neither walk nor touch
    # (and so copy) the shared pages, as Airflow does itself before it forks workers.
    gc.collect()
    gc.freeze()
