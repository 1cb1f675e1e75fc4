"""Secrets: the fine-tuning backend's API key (an Airflow connection's password or a sensitive extra field)
never appears in a task log, a rendered template, an XCom or a file the DAG writes.

Airflow masks the secrets it knows (connection passwords, extra fields named like `api_key`/`token`, and
whatever is passed to `airflow.sdk.log.mask_secret`) in task logs and rendered templates. Tasks run by a
scheduler log through their supervisor, which applies the masker; dag.test() (the demo, these tests) runs
them in-process, where the masker is applied only once feedback_loop_sample.demo_runner.mask_secrets_in_logs()
has configured the Task SDK's logging. Both DAG runs here go through dag.test() in a child process, so
everything it prints is captured.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from .airflow_env import private_airflow_env

PASSWORD = "pw-acsr-7f3a9c2e5d1b"
API_KEY = "sk-acsr-probe-4b1d8e6f0a93"
TOKEN = "tok-acsr-9e8d7c6b5a41"
SECRETS = (PASSWORD, API_KEY, TOKEN)

PROBE = '''
import logging
from datetime import datetime, timezone
from airflow.sdk import DAG, BaseHook, task
from airflow.providers.standard.operators.bash import BashOperator

log = logging.getLogger("acsr.probe")
with DAG("acsr_secret_probe", schedule=None, start_date=datetime(2026, 11, 1, tzinfo=timezone.utc)) as dag:
    @task
    def use_the_connection():
        """What careless code would do: log every secret of the connection it uses."""
        from feedback_loop.retrain.finetune_backends import openai_from_connection
        conn = BaseHook.get_connection("acsr_ft_leak")
        backend = openai_from_connection(conn)
        log.info("password=%s api_key=%s token=%s extra=%s", conn.password, conn.extra_dejson["api_key"],
                 conn.extra_dejson["token"], conn.extra)
        log.warning("headers sent: %s", backend.headers())
        return {"used": conn.conn_id}

    rendered = BashOperator(task_id="rendered_template", do_xcom_push=False,
                            bash_command="echo {{ conn.acsr_ft_leak.password }} {{ conn.acsr_ft_leak.extra_dejson.api_key }}")
    use_the_connection() >> rendered
'''

RUNNER = '''
import os
from airflow.dag_processing.dagbag import DagBag
from feedback_loop_sample.demo_runner import mask_secrets_in_logs

mask_secrets_in_logs()
dags = DagBag(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).dags
print("STATE probe", dags["acsr_secret_probe"].test().state, flush=True)
finetune = dags["acsr_finetune_reasoning_model"]
finetune.deadline = None
run = finetune.test(run_conf={"backend": "openai", "base_model": "succeed", "connection_id": "acsr_ft_leak",
                              "poll_seconds": 1, "reason": "secrets test"})
print("STATE finetune", run.state, flush=True)
'''


def _connection(host: str) -> str:
    return json.dumps({"conn_type": "http", "host": host, "password": PASSWORD,
                       "extra": {"api_key": API_KEY, "token": TOKEN, "project": "acsr"}})


def _db_rows(airflow_home: str, dag_id: str) -> list[str]:
    """Every XCom value and rendered template field the runs of `dag_id` left in the metadata DB."""
    con = sqlite3.connect(os.path.join(airflow_home, "airflow.db"))
    try:
        rows = [str(r) for r in con.execute("SELECT task_id, key, value FROM xcom WHERE dag_id = ?", (dag_id,))]
        rows += [str(r) for r in con.execute(
            "SELECT task_id, rendered_fields FROM rendered_task_instance_fields WHERE dag_id = ?", (dag_id,))]
    finally:
        con.close()
    return rows


def _task_log_files(airflow_home: str) -> str:
    return "\n".join(p.read_text(errors="replace") for p in Path(airflow_home, "logs").rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def runs(airflow_db, tmp_path_factory):
    """A probe DAG and the real fine-tuning DAG (against a local OpenAI-compatible stub), both through
    dag.test() in one child process, with the key in the Airflow connection `acsr_ft_leak`."""
    from feedback_loop.settings import Settings
    from openai_stub import OpenAIStub
    from retrain_helpers import mlflow_db, write_chat_version

    root = tmp_path_factory.mktemp("secrets")
    data = root / "data"
    settings = Settings.load(landing=str(data / "landing"), lake=str(data / "lake"),
                             warehouse=str(data / "warehouse.duckdb"))
    write_chat_version(settings, "sft", "2026-11-25")
    mlflow_db(settings, tmp_path_factory.getbasetemp() / "mlflow-template")
    dags = root / "dags"
    dags.mkdir()
    (dags / "probe.py").write_text(PROBE)
    shutil.copy(Path(__file__).resolve().parents[2] / "dags" / "acsr_finetune_reasoning_model.py", dags)
    (root / "runner.py").write_text(RUNNER)
    stub = OpenAIStub(key=PASSWORD)
    try:
        env = private_airflow_env(airflow_db, root, dags_folder=str(dags), ACSR_DATA_DIR=str(data),
                                  AIRFLOW_CONN_ACSR_FT_LEAK=_connection(stub.base_url))
        for var in ("ACSR_LANDING", "ACSR_LAKE", "ACSR_WAREHOUSE"):
            env.pop(var, None)
        proc = subprocess.run([sys.executable, "runner.py"], env=env, cwd=root, capture_output=True, text=True,
                              timeout=900, check=False)
        requests = list(stub.requests)
    finally:
        stub.close()
    out = proc.stdout + proc.stderr
    assert "STATE probe success" in out and "STATE finetune success" in out, out[-4000:]
    return {"console": out, "home": env["AIRFLOW_HOME"], "data": data, "requests": requests}


def test_airflow_masks_a_connection_in_task_logs_and_rendered_templates(runs):
    out, home = runs["console"], runs["home"]
    assert "password=*** api_key=*** token=***" in out and "Bearer ***" in out  # logged, and masked
    assert "echo *** ***" in out  # the bash command as rendered and logged
    stored = _db_rows(home, "acsr_secret_probe")
    assert any("echo *** ***" in r for r in stored)  # the rendered template as the UI shows it
    leaked = [s for s in SECRETS if s in out or s in _task_log_files(home) or any(s in r for r in stored)]
    assert not leaked, f"secrets in logs or the metadata DB: {leaked}"


def test_the_fine_tuning_dag_never_shows_its_api_key(runs):
    assert runs["requests"] and all(r["auth"] == f"Bearer {PASSWORD}" for r in runs["requests"])  # it was used
    written = "\n".join(p.read_text(errors="replace") for p in runs["data"].rglob("*")
                        if p.is_file() and p.suffix in (".json", ".jsonl", ".md", ".txt", ".yaml", ".html"))
    home = runs["home"]
    places = {"console": runs["console"], "task log files": _task_log_files(home), "lake files": written,
              "XCom and rendered templates": "\n".join(_db_rows(home, "acsr_finetune_reasoning_model"))}
    leaks = {where: [s for s in SECRETS if s in text] for where, text in places.items()}
    assert not any(leaks.values()), leaks


@pytest.mark.parametrize("secret", SECRETS)
def test_the_backend_registers_its_key_with_the_masker(secret):
    """Outside a task too: the backend built from a connection makes Airflow's masker hide its key."""
    from airflow.sdk._shared.secrets_masker import redact
    from feedback_loop.retrain.finetune_backends import openai_from_connection

    class Conn:
        host, port, schema, password = "http://127.0.0.1:9/v1", None, None, None
        extra = json.dumps({"api_key": secret})

    openai_from_connection(Conn())
    assert secret not in str(redact(f"Authorization: Bearer {secret}"))
