"""The whole loop the way docker-compose.yaml runs it: CeleryExecutor with a separate `airflow celery worker`,
PostgreSQL as the metadata DB, Redis as the broker, a triggerer, the landing area and the lake on an
S3-compatible server (moto's server mode standing in for MinIO), and MLflow as a tracking server with its
artifacts on the same object store (`mlflow server`, as the compose service runs it). The services are
the compose file's commands (tests/deployment.py).

Three nights: the first (the scheduled run) finds no champion, and its decision starts the intent
classifier's retraining, which registers and promotes a champion on the MLflow server; the second sees
the champion; a fine-tuning job then runs through the OpenAI-compatible stand-in and is recorded on S3;
the third night's decision reads that record and no longer asks for the version it used."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest
from airflow_stack import AIRFLOW, AirflowStack, Processes, cmdline, wait_for
from conftest import CONVERSATIONS_PER_DAY, latest_scheduled_day
from deployment import BUCKETS, CELERY_CONFIG_OPTIONS, STACK_SERVICES, WORKER
from mlflow_server import MLflowServer
from openai_stub import KEY, OpenAIStub
from s3_server import S3Server
from services import Postgres, Redis, postgres_bin, redis_bin

DAG = "acsr_nightly"
INTENT = "acsr_retrain_intent_classifier"
FINETUNE = "acsr_finetune_reasoning_model"
LAKE = "s3://acsr-lake/lake"
# Upper bounds only (a passing run never waits for them): a night takes a few minutes on a quiet 2-core CI
# machine, much longer on a shared, overloaded one.
RUN_TIMEOUT = 2400


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with S3Server(tmp_path_factory.mktemp("moto-celery") / "moto.log", BUCKETS) as server:
        yield server


@pytest.fixture(scope="module")
def mlflow(s3, tmp_path_factory):
    with MLflowServer(tmp_path_factory.mktemp("mlflow-celery"), s3.env) as server:
        yield server


@pytest.fixture(scope="module")
def stub():
    s = OpenAIStub()
    yield s
    s.close()


@pytest.fixture(scope="module")
def celery_stack(request, tmp_path_factory, s3, mlflow, stub):
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
        services=STACK_SERVICES,
        extra_env={
            **s3.env,
            "AIRFLOW__CELERY__BROKER_URL": redis.url,
            "AIRFLOW__CELERY__RESULT_BACKEND": pg.celery_result_backend,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": CELERY_CONFIG_OPTIONS,
            "ACSR_LAKE": LAKE,
            "ACSR_LANDING": "s3://acsr-landing/landing",
            "ACSR_MLFLOW_TRACKING_URI": mlflow.uri,
            "ACSR_EARLIER_DAYS_POKE_SECONDS": "5",
            # Small and fast: a baseline of 10 Banking77 messages per intent.
            "ACSR_RETRAIN_BASE_PER_INTENT": "10",
            # The nightly decision counts jobs of this backend; the stand-in succeeds jobs of model "succeed".
            "ACSR_FINETUNE_BACKEND": "openai",
            "ACSR_FINETUNE_BASE_MODEL": "succeed",
            "AIRFLOW_CONN_ACSR_FINETUNE_API": json.dumps({"conn_type": "http", "host": stub.base_url,
                                                          "password": KEY}),
        },
    )
    request.addfinalizer(stack.stop)
    stack.start(pools={"duckdb_warehouse": 1})
    stack.start_worker("celery-worker", [AIRFLOW, *WORKER, "--concurrency", "2", "--without-mingle",
                                         "--without-gossip", "--skip-serve-logs"])
    stack.wait_dag_parsed(DAG)
    return stack


def _settle(stack: AirflowStack, dag_id: str, timeout: float = 0) -> list[dict]:
    """Wait until no run of `dag_id` is queued or running; every finished run must have succeeded."""
    def settled():
        runs = stack.dag_runs(dag_id)
        failed = [r for r in runs if r["state"] == "failed"]
        if failed:
            raise AssertionError(f"{dag_id} run failed:\n" + stack.failure_logs(dag_id, failed[0]["dag_run_id"]))
        return runs if runs and all(r["state"] == "success" for r in runs) else None

    return wait_for(settled, timeout or RUN_TIMEOUT, interval=3, what=f"the runs of {dag_id}")


def _night(stack: AirflowStack, day: date) -> dict:
    """A manual run of the nightly DAG for `day` (the trigger form's date), waited for."""
    run = stack.api("POST", f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": None, "conf": {"date": day.isoformat()}})
    [done] = stack.wait_runs(DAG, [run["dag_run_id"]], timeout=RUN_TIMEOUT)
    return done


def _pool_has_the_task_libraries(stack: AirflowStack) -> None:
    """The worker's pool processes, which fork the task processes, hold scikit-learn's and pyarrow's native
    libraries: the worker imported feedback_loop.airflow_preload before forking them (CELERY_CONFIG_OPTIONS).
    Without it they hold numpy's only: Airflow's celery worker imports neither."""
    family = stack.process("celery-worker").children()  # below the Celery MainProcess
    # the pool: named ForkPoolWorker-n, or "airflow supervisor: <ti>" while it runs a task
    pool = [p for p in family if "ForkPoolWorker" in cmdline(p) or cmdline(p).startswith("airflow supervisor")]
    assert pool, f"no Celery pool process among {[(p.pid, cmdline(p)) for p in family]}"
    for proc in pool:
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "site-packages/sklearn/" in maps and "site-packages/pyarrow/" in maps, cmdline(proc)


def test_a_week_of_the_loop_on_celery_postgres_redis_s3_and_an_mlflow_server(celery_stack, s3, mlflow, stub,
                                                                              tmp_path, monkeypatch):
    from feedback_loop.lake.object_store import s3_filesystem
    from feedback_loop.retrain import finetune_jobs, registry
    from feedback_loop.settings import Settings
    from feedback_loop_sample.generator import generate

    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ACSR_LAKE", LAKE)
    monkeypatch.setenv("ACSR_MLFLOW_TRACKING_URI", mlflow.uri)
    settings = Settings.load(finetune_backend="openai")
    stack, fs, lake = celery_stack, s3_filesystem(), LAKE.removeprefix("s3://")

    # Night 1 is the latest scheduled day; nights 2 and 3 follow it (manual runs). Night 3 is a quiet day:
    # too few new conversations for a new dataset version, so its decision is about the versions it has.
    day = latest_scheduled_day()
    nights = [day, day + timedelta(days=1), day + timedelta(days=2)]
    generate(tmp_path / "landing", nights[0], nights[1], conversations_per_day=CONVERSATIONS_PER_DAY)
    generate(tmp_path / "landing", nights[2], nights[2], conversations_per_day=3)
    fs.put(str(tmp_path / "landing") + "/", "acsr-landing/landing/", recursive=True)

    def decision(d: date) -> dict:
        return json.loads(fs.cat(f"{lake}/runs/dt={d}/retrain_decision.json"))

    for dag_id in (INTENT, FINETUNE):
        stack.wait_dag_parsed(dag_id)
        stack.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    # ---- night 1: the scheduler creates the latest interval's run; no champion yet.
    stack.cli("dags", "unpause", DAG)
    [run] = stack.wait_runs(DAG, count=1, timeout=RUN_TIMEOUT)
    assert run["state"] == "success" and run["partition_key"] == day.isoformat()
    tis = stack.task_instances(DAG, run["dag_run_id"])
    worker_log = (stack.logs / "celery-worker.log").read_text(errors="replace")
    executed = [t for t in tis if t["state"] == "success"]
    assert worker_log.count("execute_workload") >= len(executed) > 10, "the Celery worker ran the tasks"
    _pool_has_the_task_libraries(stack)
    for layer in ("raw", "staged"):
        assert fs.exists(f"{lake}/{layer}/agent_events/dt={day}/part.parquet")
    assert fs.exists(f"{lake}/marts/conversation_facts/dt={day}/part.parquet")
    summary = json.loads(fs.cat(f"{lake}/runs/dt={day}/summary.json"))
    assert summary["status"] == "ok" and summary["totals"]["rows_read"] > 0
    assert summary["outputs"]["lake"] == LAKE
    assert date.fromisoformat(summary["dt"]) == day

    first = decision(nights[0])
    assert first["intent_classifier"]["retrain"] and "no champion model yet" in first["intent_classifier"]["reasons"]

    # ---- the retraining the decision started: a champion on the MLflow server, its files on S3.
    intent_runs = _settle(stack, INTENT)
    assert f"nightly_decision__{nights[0]}" in {r["dag_run_id"] for r in intent_runs}
    pointer = registry.champion(settings)
    assert pointer and pointer["model_path"].startswith(LAKE + "/retrain/intent_classifier/")
    assert fs.exists(pointer["model_path"].removeprefix("s3://"))
    assert registry.alias_version(settings, "champion") == pointer["version"]
    with registry.mlflow_for(settings) as client_mlflow:
        mv = client_mlflow.MlflowClient().get_model_version(registry.INTENT_MODEL, pointer["version"])
        assert mv.tags["promotion_decision"] == "promoted" and mv.tags["airflow_run_id"] in {
            r["dag_run_id"] for r in intent_runs}
    assert fs.ls("acsr-mlflow/artifacts"), "the server keeps the model artifacts on the object store"
    assert not (stack.data_dir / "lake").exists(), "nothing fell back to a local lake"

    # ---- night 2: the champion is seen; the new SFT version has not been fine-tuned yet.
    assert _night(stack, nights[1])["state"] == "success"
    second = decision(nights[1])
    assert second["champion_version"] is not None
    [no_champion] = [c for c in second["checks"] if c["trigger"] == "no_champion"]
    assert no_champion["fired"] is False
    [data2] = [c for c in second["checks"] if c["trigger"] == "new_finetune_data"]
    version = data2["detail"]["dataset_version"]
    assert data2["fired"] is True and version

    # ---- the fine-tuning job, through the OpenAI-compatible stand-in, waiting in the triggerer.
    _settle(stack, INTENT)  # one promotion decision at a time; the job below runs beside nothing else
    ft = stack.api("POST", f"/api/v2/dags/{FINETUNE}/dagRuns", {"logical_date": None, "conf": {
        "dataset": "sft", "dataset_version": version, "backend": "openai", "base_model": "succeed",
        "poll_seconds": 2, "reason": "integration: the week's SFT version"}})
    [done] = stack.wait_runs(FINETUNE, [ft["dag_run_id"]], timeout=RUN_TIMEOUT)
    assert done["state"] == "success"
    states = {t["task_id"]: t["state"] for t in stack.task_instances(FINETUNE, ft["dag_run_id"])}
    assert states == {"resolve_request": "success", "validate_dataset": "success", "approve_spend": "success",
                      "submit_and_wait": "success", "record_in_mlflow": "success"}
    # The trigger's own lines ("job ... is running; next poll in ...") land in the task's log, written by the
    # triggerer (Airflow 3 names a trigger by its task instance in triggerer.log, not by its class).
    polled = [p for p in (stack.home / "logs" / f"dag_id={FINETUNE}").rglob("task_id=submit_and_wait/*")
              if p.is_file() and "next poll in" in p.read_text(errors="replace")]
    assert polled, "no fine-tuning job was polled by the trigger in the triggerer"
    [record] = [j for j in finetune_jobs.jobs_for_version(settings, "sft", version)
                if finetune_jobs.same_backend(j, "openai")]
    assert record["status"] == "succeeded" and record["result_model"].startswith("ft:succeed:acsr:")
    # This run submitted it, or found the job a run the nightly decision started had already finished.
    assert record["airflow_run_id"] in {r["dag_run_id"] for r in stack.dag_runs(FINETUNE)}
    assert record["dataset_version"] == version
    assert fs.exists(f"{lake}/finetune_jobs/{record['job_key']}.json")
    assert any(j["request"]["metadata"]["acsr_dataset_version"] == version for j in stub.jobs.values())

    # ---- night 3: the decision reads the job record back and no longer asks for that version.
    assert _night(stack, nights[2])["state"] == "success"
    third = decision(nights[2])
    [data3] = [c for c in third["checks"] if c["trigger"] == "new_finetune_data"]
    assert data3["detail"]["dataset_version"] == version, "a quiet day publishes no new SFT version"
    assert data3["fired"] is False and record["job_key"] in data3["detail"]["jobs"]
    assert third["reasoning_model"]["finetune"] is False
    assert third["champion_version"] == registry.champion(settings)["version"]
    [no_champion] = [c for c in third["checks"] if c["trigger"] == "no_champion"]
    assert no_champion["fired"] is False
    _settle(stack, INTENT)
