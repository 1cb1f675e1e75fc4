"""Shared fixtures: isolated data folders per test and an Airflow home per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Airflow reads its configuration at import: give the whole test session its own home, SQLite DB, lake and
# this project's dags/plugins folders before anything imports airflow, whatever the environment says
# (`make` exports AIRFLOW_HOME=.data/airflow and ACSR_DATA_DIR=.data: the user's own demo). Every AIRFLOW_*
# and ACSR_* variable of the caller is dropped (a user's webhook URL or metadata DB must not be used either);
# only the suite's own knobs (ACSR_TEST_*, ACSR_SCREENSHOT_DIR) are kept.
KEEP_ENV = ("ACSR_TEST_", "ACSR_SCREENSHOT_DIR")
for _name in [n for n in os.environ if n.startswith(("AIRFLOW", "ACSR_")) and not n.startswith(KEEP_ENV)]:
    del os.environ[_name]
_SESSION_HOME = Path(os.environ.get("ACSR_TEST_TMP", "/tmp")) / f"acsr-tests-{os.getpid()}"
os.environ["AIRFLOW_HOME"] = str(_SESSION_HOME / "airflow")
os.environ["ACSR_DATA_DIR"] = str(_SESSION_HOME / "data")  # tests that write use the data_dir fixture
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"

USER_DATA = ROOT / ".data"  # the user's demo: `make demo`, `make airflow`; the suite must never touch it


def tree_state(folder: Path) -> dict[str, tuple]:
    """Every path under `folder` with its kind, size and modification time (empty when it does not exist)."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            state[path.relative_to(folder).as_posix()] = (st.st_mode >> 12, st.st_size, st.st_mtime_ns)
    return state


def tree_changes(before: dict, after: dict) -> list[str]:
    changed = [f"changed {p}" for p in sorted(before.keys() & after.keys()) if before[p] != after[p]]
    return ([f"added {p}" for p in sorted(after.keys() - before.keys())]
            + [f"removed {p}" for p in sorted(before.keys() - after.keys())] + changed)


@pytest.fixture(scope="session", autouse=True)
def user_data_untouched():
    """The user's `.data/` is the same after the session as before it (paths, sizes, modification times).
    A `make demo` or `make airflow` running beside the suite changes it too: run them apart."""
    before = tree_state(USER_DATA)
    yield
    changes = tree_changes(before, tree_state(USER_DATA))
    assert not changes, f"the test session changed {USER_DATA}: " + "; ".join(changes[:20])


STANDALONE_INTEGRATION = ("tests/integration/test_readme.py",)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`make test` (pytest-xdist): each module's tests stay on one worker, so its module fixtures (whole
    generated nights through Airflow) are built once; tests/integration, one Airflow deployment per
    session, is one unit of its own, run in its order on one worker while the other takes the rest. The README
    test (its own `make airflow`, no shared fixture) is a unit apart, the second in line: the other worker
    starts with it, so its waiting on a scheduler overlaps with the suite's."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            if module in STANDALONE_INTEGRATION:
                return module
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
