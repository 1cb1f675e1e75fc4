"""The scheduler's forkserver preload (feedback_loop.airflow_preload): what `make airflow` and the suite's
LocalExecutor stack configure, that it imports what a task would, and only libraries (an edit to the
project's own code must reach the next task without a restart). Each check imports it in a fresh
interpreter, as the forkserver does: importing it here would freeze this test process's garbage collector."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import gc, json, sys
before = set(sys.modules)
import feedback_loop.airflow_preload
from feedback_loop.airflow_local import TASK_LIBRARIES
print(json.dumps({"modules": list(TASK_LIBRARIES), "frozen": gc.get_freeze_count(),
                  "own": sorted(m for m in set(sys.modules) - before if m.split(".")[0] == "feedback_loop"),
                  "loaded": sorted(set(sys.modules))}))
"""


def _probe() -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_preload_imports_the_task_libraries_and_none_of_the_projects_logic():
    got = _probe()
    assert {"great_expectations", "pandas", "duckdb", "airflow.sdk.execution_time.task_runner"} <= set(got["modules"])
    assert set(got["modules"]) <= set(got["loaded"])
    assert got["frozen"] > 10_000, "the loaded objects are left to the collector of every forked task"
    assert got["own"] == ["feedback_loop", "feedback_loop.airflow_local", "feedback_loop.airflow_preload"], (
        f"the preload imported the project's own modules {got['own']}: a long-running forkserver would keep "
        "serving their old code to every task")


def test_make_airflow_and_the_suites_stack_start_tasks_from_the_preloaded_forkserver(tmp_path):
    script = (ROOT / "scripts" / "airflow_standalone.sh").read_text()
    assert 'AIRFLOW__SCHEDULER__MP_START_METHOD="${AIRFLOW__SCHEDULER__MP_START_METHOD:-forkserver}"' in script
    assert ("AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD=\"${AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD:-"
            "feedback_loop.airflow_preload}\"") in script
    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    try:
        from airflow_stack import AirflowStack
    finally:
        sys.path.remove(str(ROOT / "tests" / "integration"))
    env = AirflowStack(tmp_path / "home", tmp_path / "data").env
    assert env["AIRFLOW__SCHEDULER__MP_START_METHOD"] == "forkserver"
    assert env["AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD"] == "feedback_loop.airflow_preload"


def test_the_celery_configuration_is_airflows_default_and_imports_the_preload_in_the_worker():
    """Celery imports `imports` in the worker's main process before it forks its pool (checked on a real
    worker by tests/integration/test_celery_deployment.py's week); everything else stays Airflow's."""
    from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
    from feedback_loop.airflow_celery import CELERY_CONFIG

    assert CELERY_CONFIG["imports"] == ("feedback_loop.airflow_preload",)
    assert {k: v for k, v in CELERY_CONFIG.items() if k != "imports"} == DEFAULT_CELERY_CONFIG


def test_a_library_that_is_not_installed_is_left_out_and_the_rest_still_preloaded():
    code = ("import gc, json, sys\n"
            "from feedback_loop.airflow_local import preload_task_libraries\n"
            "preload_task_libraries(('no_such_library_acsr', 'json', 'csv'))\n"
            "print(json.dumps({'csv': 'csv' in sys.modules, 'frozen': gc.get_freeze_count()}))\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=300)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["csv"] and got["frozen"] > 0
    assert "not preloaded for the tasks: no_such_library_acsr" in out.stdout + out.stderr
