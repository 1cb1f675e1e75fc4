"""What the scheduler's forkserver imports once, so that LocalExecutor task processes do not import it again.

`make airflow` and the suite's LocalExecutor stack set `[scheduler] mp_start_method = forkserver` and
`[scheduler] mp_forkserver_preload = feedback_loop.airflow_preload` (Airflow 3.3). The executor's workers are
forked from that forkserver, and each task process is forked from a worker, so they all start with these
modules in memory, shared copy-on-write. With Airflow's default (`fork` from the scheduler), every task
imported them itself: Great Expectations alone is ~3.7 s of CPU, in each of a night's seven GX tasks, and the
UI plugin's FastAPI imports (Airflow loads plugins in every task) ~0.7 s in each of its ~30 tasks.
`bench/scheduler_night.py` measures a night both ways; docs/operations.md has the figures.

Libraries only, never this project's logic: a task still imports `feedback_loop.*` itself, so an edit
under include/ is seen by the next task without restarting `make airflow`. A module missing here only costs
its import in the task (the forkserver skips a preload that fails to import)."""

from __future__ import annotations

import gc
import importlib
import logging

MODULES = (
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


def preload(modules: tuple[str, ...] = MODULES) -> None:
    # GX logs ~150 INFO lines about its own registries while it imports: not for the scheduler's log.
    gx_log = logging.getLogger("great_expectations")
    level = gx_log.level
    gx_log.setLevel(logging.WARNING)
    try:
        for name in modules:
            importlib.import_module(name)
    finally:
        gx_log.setLevel(level)
    # What is loaded now stays out of the collector's reach: a child's collections neither walk nor touch
    # (and so copy) the shared pages, as Airflow does itself before it forks workers.
    gc.collect()
    gc.freeze()


preload()
