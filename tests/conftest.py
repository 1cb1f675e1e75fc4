"""Shared fixtures: isolated data folders per test and an Airflow home per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Airflow reads its configuration at import: give the whole test session its own home, SQLite DB and
# this project's dags/plugins folders before anything imports airflow.
_SESSION_HOME = Path(os.environ.get("ACSR_TEST_TMP", "/tmp")) / f"acsr-tests-{os.getpid()}"
os.environ.setdefault("AIRFLOW_HOME", str(_SESSION_HOME / "airflow"))
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`make test` (pytest-xdist): each module's tests stay on one worker, so its module fixtures (whole
    generated nights through Airflow) are built once; tests/integration, one Airflow deployment per
    session, is one unit of its own, run in its order on one worker while the other takes the rest."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "tests/integration" if module.startswith("tests/integration/") else module

    return ModuleScheduling(config, log)


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """A fresh landing/lake/warehouse for one test, used by Settings.load() through ACSR_DATA_DIR."""
    monkeypatch.setenv("ACSR_DATA_DIR", str(tmp_path))
    for var in ("ACSR_LANDING", "ACSR_LAKE", "ACSR_WAREHOUSE"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.fixture
def settings(data_dir):
    from feedback_loop.settings import Settings

    return Settings.load()


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated SQLite metadata DB and the warehouse pool, once per session."""
    env = dict(os.environ)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "airflow", "pools", "set", "duckdb_warehouse", "1", "warehouse writer"],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return os.environ["AIRFLOW_HOME"]
