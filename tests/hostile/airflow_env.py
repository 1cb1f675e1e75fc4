"""A private Airflow home for a child process: a copy of the session's migrated metadata DB (no migration
to wait for), its own logs folder and, if wanted, its own DAGs folder, so what the child's DAG runs leave
(logs, XComs, rendered templates) is theirs alone and the session's DB is not touched."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path


def private_airflow_env(session_home: str, root: Path, dags_folder: str | None = None, **extra: str) -> dict:
    home = root / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(os.path.join(session_home, "airflow.db"))
    dst = sqlite3.connect(str(home / "airflow.db"))
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    env = {**os.environ, "AIRFLOW_HOME": str(home), **extra}
    env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", None)
    if dags_folder:
        env["AIRFLOW__CORE__DAGS_FOLDER"] = dags_folder
    return env
