"""The suite's own Airflow home and lake whatever the caller's environment says, and the guard that fails a
session which changed the user's `.data/` (issue 14: a test run once queued runs in the user's demo).

Each case runs pytest in a subprocess on a scratch project holding a copy of tests/conftest.py, with the
environment `make` exports (AIRFLOW_HOME=.data/airflow, ACSR_DATA_DIR=.data) plus a user's webhook URL."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

INNER = '''
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_env_is_the_suites_own():
    assert not os.environ["AIRFLOW_HOME"].startswith(str(ROOT / ".data")), os.environ["AIRFLOW_HOME"]
    assert not os.environ["ACSR_DATA_DIR"].startswith(str(ROOT / ".data")), os.environ["ACSR_DATA_DIR"]
    assert "ACSR_ALERT_WEBHOOK_URL" not in os.environ
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in os.environ
    assert os.environ["ACSR_TEST_KNOB"] == "kept"


def test_settings_and_airflow_use_them():
    from feedback_loop.settings import Settings
    from airflow.configuration import conf

    assert not Settings.load().lake.startswith(str(ROOT / ".data"))
    assert str(ROOT / ".data") not in conf.get("database", "sql_alchemy_conn")
'''


def _scratch(tmp_path: Path, extra_test: str = "") -> Path:
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "conftest.py", project / "tests" / "conftest.py")
    (project / "tests" / "test_inner.py").write_text(INNER + extra_test)
    (project / ".data" / "airflow").mkdir(parents=True)
    (project / ".data" / "lake").mkdir()
    (project / ".data" / "lake" / "marker.json").write_text("{}")
    return project


def _run(project: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ACSR_"))}
    env.update({
        "AIRFLOW_HOME": str(project / ".data" / "airflow"),
        "ACSR_DATA_DIR": str(project / ".data"),
        "ACSR_ALERT_WEBHOOK_URL": "http://127.0.0.1:9/user-slack",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{project}/.data/airflow/airflow.db",
        "ACSR_TEST_KNOB": "kept",
        "ACSR_TEST_TMP": str(project.parent),
    })
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "tests"], check=False, cwd=project, env=env, capture_output=True, text=True, timeout=300)


def test_the_suite_ignores_the_callers_airflow_home_lake_and_alerts(tmp_path):
    project = _scratch(tmp_path)
    before = sorted(p.relative_to(project).as_posix() for p in (project / ".data").rglob("*"))
    out = _run(project)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 passed" in out.stdout
    assert sorted(p.relative_to(project).as_posix() for p in (project / ".data").rglob("*")) == before


def test_a_session_that_writes_into_data_fails(tmp_path):
    project = _scratch(tmp_path, extra_test='''

def test_a_careless_test():
    (ROOT / ".data" / "lake" / "marker.json").write_text('{"touched": true}')
    (ROOT / ".data" / "lake" / "new.parquet").write_bytes(b"x")
''')
    out = _run(project)
    assert out.returncode != 0
    assert "the test session changed" in out.stdout
    assert "added new.parquet" not in out.stdout and "added lake/new.parquet" in out.stdout
    assert "changed lake/marker.json" in out.stdout
