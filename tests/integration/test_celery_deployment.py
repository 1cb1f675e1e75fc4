"""The nightly DAG run the way docker-compose.yaml runs it: CeleryExecutor with a separate `airflow celery
worker` process, PostgreSQL as the metadata DB, Redis as the broker, the landing area and the lake on an
S3-compatible server (moto's server mode standing in for MinIO)."""

from __future__ import annotations

import json
from datetime import date

import pytest
from airflow_stack import AIRFLOW, AirflowStack, Processes
from conftest import CONVERSATIONS_PER_DAY, latest_scheduled_day
from s3_server import S3Server
from services import Postgres, Redis, postgres_bin, redis_bin

DAG = "acsr_nightly"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("moto-celery") / "moto.log")
    for bucket in ("acsr-lake", "acsr-landing"):
        server.create_bucket(bucket)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def celery_stack(request, tmp_path_factory, s3):
    if postgres_bin() is None or redis_bin() is None:
        pytest.skip("PostgreSQL or Redis is not installed: run scripts/ci_system_deps.sh postgresql redis-server")
    root = tmp_path_factory.mktemp("celery")
    infra = Processes()
    request.addfinalizer(infra.stop)
    pg = Postgres(infra, root / "logs")
    request.addfinalizer(pg.cleanup)
    redis = Redis(infra, root / "logs")
    stack = AirflowStack(
        root / "airflow", root / "data", executor="CeleryExecutor", sql_alchemy_conn=pg.url,
        services=("scheduler", "dag-processor", "api-server"),
        extra_env={
            **s3.env,
            "AIRFLOW__CELERY__BROKER_URL": redis.url,
            "AIRFLOW__CELERY__RESULT_BACKEND": pg.celery_result_backend,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            "ACSR_LAKE": "s3://acsr-lake/lake",
            "ACSR_LANDING": "s3://acsr-landing/landing",
        },
    )
    request.addfinalizer(stack.stop)
    stack.start(pools={"duckdb_warehouse": 1})
    stack.start_worker("celery-worker", [AIRFLOW, "celery", "worker", "--concurrency", "2", "--without-mingle",
                                         "--without-gossip", "--skip-serve-logs"])
    stack.wait_dag_parsed(DAG)
    return stack


def test_the_nightly_run_on_celery_postgres_redis_and_s3(celery_stack, s3, tmp_path, monkeypatch):
    from feedback_loop.lake.object_store import s3_filesystem
    from feedback_loop_sample.generator import generate

    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)

    day = latest_scheduled_day()
    generate(tmp_path / "landing", day, day, conversations_per_day=CONVERSATIONS_PER_DAY)
    fs = s3_filesystem()
    fs.put(str(tmp_path / "landing") + "/", "acsr-landing/landing/", recursive=True)

    celery_stack.cli("dags", "unpause", DAG)  # the scheduler creates the latest interval
    [run] = celery_stack.wait_runs(DAG, count=1, timeout=900)
    assert run["state"] == "success" and run["partition_key"] == day.isoformat()

    tis = celery_stack.task_instances(DAG, run["dag_run_id"])
    worker_log = (celery_stack.logs / "celery-worker.log").read_text(errors="replace")
    executed = [t for t in tis if t["state"] == "success"]
    assert worker_log.count("execute_workload") >= len(executed) > 10, "the Celery worker ran the tasks"

    lake = "acsr-lake/lake"
    for layer in ("raw", "staged"):
        assert fs.exists(f"{lake}/{layer}/agent_events/dt={day}/part.parquet")
    assert fs.exists(f"{lake}/marts/conversation_facts/dt={day}/part.parquet")
    summary = json.loads(fs.cat(f"{lake}/runs/dt={day}/summary.json"))
    assert summary["status"] == "ok" and summary["totals"]["rows_read"] > 0
    assert summary["outputs"]["lake"] == "s3://acsr-lake/lake"
    assert date.fromisoformat(summary["dt"]) == day
