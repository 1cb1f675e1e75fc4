"""Fine-tuning backends: an OpenAI-compatible API (a local stub of its endpoints), a real local training
command, the dry run, the trigger that waits in the triggerer, and the trigger forms' validation."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from openai_stub import KEY, OpenAIStub
from retrain_helpers import write_chat_version

DT = "2026-11-25"


@pytest.fixture
def stub():
    s = OpenAIStub()
    yield s
    s.close()


@pytest.fixture
def ft(data_dir):
    """Settings with a published sft and preference version."""
    from feedback_loop.settings import Settings

    s = Settings.load()
    versions = {name: write_chat_version(s, name, DT) for name in ("sft", "preference")}
    return s, versions


def _request(settings, **params):
    from feedback_loop.retrain.finetune import resolve_request

    return resolve_request(settings, {"poll_seconds": 0.05, **params})


def test_openai_backend_uploads_creates_polls_and_records(ft, stub):
    from feedback_loop.retrain import finetune, finetune_backends, finetune_jobs

    s, versions = ft
    backend = finetune_backends.OpenAIBackend(stub.base_url, KEY)
    record = finetune.run(s, _request(s, backend="openai", base_model="succeed", hyperparameters={"n_epochs": 2}),
                          backend=backend)
    assert record["status"] == "succeeded" and record["job_id"] == "ftjob-1"
    assert record["result_model"] == "ft:succeed:acsr:ftjob-1"
    assert record["trained_tokens"] == 12345 and record["cost_usd"] == 0.42
    assert record["dataset_version"] == versions["sft"] and record["training_examples"] == 12
    assert [h["status"] for h in record["history"]][-1] == "succeeded"
    assert {f["filename"] for f in stub.files.values()} == {f"acsr-sft-{versions['sft']}-train.jsonl",
                                                           f"acsr-sft-{versions['sft']}-validation.jsonl"}
    assert all(f["purpose"] == "fine-tune" for f in stub.files.values())
    body = stub.jobs["ftjob-1"]["request"]
    assert body["training_file"] == "file-1" and body["validation_file"] == "file-2"
    assert body["method"] == {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}}
    assert body["metadata"]["acsr_dataset_version"] == versions["sft"]
    saved = Path(finetune_jobs.record_path(s, record["job_key"])).read_text()
    assert KEY not in saved and json.loads(saved)["job_id"] == "ftjob-1"


def test_openai_preference_jobs_use_dpo_files(ft, stub):
    from feedback_loop.retrain import finetune, finetune_backends

    s, _ = ft
    record = finetune.run(s, _request(s, dataset="preference", backend="openai", base_model="succeed"),
                          backend=finetune_backends.OpenAIBackend(stub.base_url, KEY))
    assert record["status"] == "succeeded"
    assert stub.jobs["ftjob-1"]["request"]["method"]["type"] == "dpo"
    assert all("-preference-" in f["filename"] for f in stub.files.values())


def test_a_failed_job_is_recorded_and_raised(ft, stub):
    from feedback_loop.retrain import finetune, finetune_backends, finetune_jobs

    s, _ = ft
    with pytest.raises(finetune_backends.FineTuneError, match="failed"):
        finetune.run(s, _request(s, backend="openai", base_model="fail"),
                     backend=finetune_backends.OpenAIBackend(stub.base_url, KEY))
    rec = next(iter(finetune_jobs.jobs_for_version(s, "sft", ft[1]["sft"])))
    assert rec["status"] == "failed" and rec["error"]["code"] == "invalid_training_file"
    assert rec["result_model"] is None


def test_a_job_past_its_deadline_times_out_and_is_cancelled(ft, stub):
    from feedback_loop.retrain import finetune, finetune_backends, finetune_jobs

    s, _ = ft
    with pytest.raises(finetune_backends.FineTuneError, match="timed_out"):
        finetune.run(s, _request(s, backend="openai", base_model="slow", timeout_hours=0.0003),
                     backend=finetune_backends.OpenAIBackend(stub.base_url, KEY))
    assert stub.jobs["ftjob-1"]["status"] == "cancelled"
    assert any(r["path"] == "/v1/fine_tuning/jobs/ftjob-1/cancel" for r in stub.requests)
    rec = finetune_jobs.jobs_for_version(s, "sft", ft[1]["sft"])[0]
    assert rec["status"] == "timed_out"


def test_a_rejected_key_fails_the_submission_without_leaking_it(ft, stub):
    from feedback_loop.retrain import finetune, finetune_backends, finetune_jobs

    s, _ = ft
    with pytest.raises(finetune_backends.FineTuneError, match="HTTP 401"):
        finetune.run(s, _request(s, backend="openai", base_model="succeed"),
                     backend=finetune_backends.OpenAIBackend(stub.base_url, "sk-wrong"))
    rec = finetune_jobs.jobs_for_version(s, "sft", ft[1]["sft"])[0]
    assert rec["status"] == "submit_failed" and "sk-wrong" not in json.dumps(rec)


def test_a_retried_task_resumes_the_job_instead_of_paying_twice(ft, stub):
    from feedback_loop.retrain import finetune, finetune_backends

    s, _ = ft
    backend = finetune_backends.OpenAIBackend(stub.base_url, KEY)
    req = _request(s, backend="openai", base_model="slow")
    plan = finetune.validate(s, req)
    first = finetune.start(s, req, plan, backend)
    second = finetune.start(s, req, plan, backend)
    assert first["job_id"] == second["job_id"] == "ftjob-1" and len(stub.jobs) == 1


def test_dry_run_shows_exactly_what_would_be_sent_and_sends_nothing(ft, stub):
    from feedback_loop.retrain import finetune

    s, versions = ft
    record = finetune.run(s, _request(s, backend="dry_run", hyperparameters={"n_epochs": 3}))
    assert record["status"] == "dry_run" and record["job_id"] is None and stub.requests == []
    upload, _, create, poll = record["would_send"]
    assert upload["url"].endswith("/files") and upload["headers"]["Authorization"] == "Bearer ***"
    assert upload["multipart"]["purpose"] == "fine-tune"
    assert upload["multipart"]["file"]["sha256"] == record["files"][0]["sha256"]
    assert create["json"]["model"] == s.finetune_base_model
    assert create["json"]["method"]["supervised"]["hyperparameters"] == {"n_epochs": 3}
    assert create["json"]["metadata"]["acsr_dataset_version"] == versions["sft"]
    assert poll["method"] == "GET"


def test_validation_refuses_a_file_its_consumer_would_reject(ft):
    from feedback_loop.datasets.formats import FormatError
    from feedback_loop.retrain import finetune

    s, versions = ft
    path = Path(s.lake) / "datasets" / "sft" / versions["sft"] / "openai" / "train.jsonl"
    lines = path.read_text().splitlines()
    bad = json.loads(lines[0])
    bad["messages"] = bad["messages"][:-1]  # no assistant answer
    path.write_text("\n".join([json.dumps(bad)] + lines[1:]) + "\n")
    with pytest.raises(FormatError, match="openai_chat"):
        finetune.validate(s, _request(s, backend="openai"))


def test_command_backend_runs_a_real_local_training(ft):
    from feedback_loop.retrain import finetune

    s, _ = ft
    record = finetune.run(s, _request(s, backend="command", base_model="tiny-local", poll_seconds=0.2))
    assert record["status"] == "succeeded", record
    assert record["result_model"].startswith("local:tiny-local:acsr-")
    assert record["trained_tokens"] > 100
    assert record["metrics"]["train_examples"] == 12 and 0 < record["metrics"]["validation_response_cosine"] <= 1
    out = Path(s.lake) / "finetune_jobs" / record["job_key"] / "output"
    assert (out / "model.joblib").stat().st_size > 0
    import joblib

    model = joblib.load(out / "model.joblib")
    assert len(model["responses"]) == 12


def test_command_backend_reports_a_failing_command(ft):
    from feedback_loop.retrain import finetune, finetune_backends, finetune_jobs
    from feedback_loop.settings import Settings

    s = Settings.load(finetune_command="{python} -c 'import sys; sys.exit(3)'")
    with pytest.raises(finetune_backends.FineTuneError, match="failed"):
        finetune.run(s, _request(s, backend="command", poll_seconds=0.2))
    rec = finetune_jobs.jobs_for_version(s, "sft", ft[1]["sft"])[0]
    assert rec["status"] == "failed" and "code 3" in rec["error"]


def test_the_trigger_polls_a_command_job_until_it_ends(ft):
    from feedback_loop.retrain import finetune, finetune_backends
    from feedback_loop.retrain.triggers import FineTuneJobTrigger

    s, _ = ft
    req = _request(s, backend="command", poll_seconds=0.2)
    plan = finetune.validate(s, req)
    rec = finetune.start(s, req, plan, finetune_backends.CommandBackend(s))
    trigger = FineTuneJobTrigger(job_key=rec["job_key"], backend="command", job_id=rec["job_id"], lake=s.lake,
                                 poll_seconds=0.2, deadline=finetune.deadline_iso(0.05))
    _, kwargs = trigger.serialize()
    assert "lake" in kwargs and not any("key" in k.lower() and k != "job_key" for k in kwargs)

    async def first_event():
        async for event in trigger.run():
            return event

    event = asyncio.run(first_event())
    assert event.payload["status"] == "succeeded"
    assert finetune.finish(s, rec["job_key"], event.payload)["status"] == "succeeded"


# ------------------------------------------------------------------------------- trigger forms


@pytest.mark.parametrize("field,value", [
    ("backend", "sagemaker"), ("dataset", "kto"), ("dataset_version", "v1"), ("dataset_version", "latest; rm -rf /"),
    ("suffix", "Bad Suffix"), ("hyperparameters", {"n_epochs": 0}), ("hyperparameters", {"epochs": 3}),
    ("poll_seconds", 0), ("timeout_hours", 0), ("force", "yes"), ("base_model", "gpt 4"), ("reason", ""),
])
def test_finetune_form_rejects_bad_input(field, value):
    from airflow.sdk import ParamsDict
    from airflow.sdk.definitions.param import ParamValidationError
    from feedback_loop.retrain.params import finetune_params

    params = ParamsDict(finetune_params())
    params.validate()  # the defaults are valid
    with pytest.raises(ParamValidationError):
        params.get_param(field).resolve(value)
    with pytest.raises(ParamValidationError):
        bad = ParamsDict(finetune_params())
        bad[field] = value


@pytest.mark.parametrize("field,value", [
    ("promotion_policy", "sometimes"), ("margin", 2), ("margin", -0.1), ("alpha", 0), ("dataset_version", "yesterday"),
    ("base_per_intent", -1), ("base_per_intent", 1.5), ("dry_run", "no"), ("decision", "not an object"),
])
def test_intent_form_rejects_bad_input(field, value):
    from airflow.sdk import ParamsDict
    from airflow.sdk.definitions.param import ParamValidationError
    from feedback_loop.retrain.params import intent_classifier_params

    params = ParamsDict(intent_classifier_params())
    assert params.validate()["dataset_version"] == "latest"
    with pytest.raises(ParamValidationError):
        params.get_param(field).resolve(value)


def test_forms_accept_good_input():
    from airflow.sdk import ParamsDict
    from feedback_loop.retrain.params import finetune_params, intent_classifier_params

    p = ParamsDict(finetune_params())
    p.update({"backend": "openai", "dataset": "preference", "dataset_version": "v20261125-0123456789",
              "hyperparameters": {"n_epochs": 3, "beta": 0.1}, "suffix": "acsr-dpo"})
    assert p.validate()["hyperparameters"] == {"n_epochs": 3, "beta": 0.1}
    q = ParamsDict(intent_classifier_params())
    q.update({"promotion_policy": "never", "margin": 0.01, "dataset_version": "none", "decision": {"dt": DT}})
    assert q.validate()["margin"] == 0.01


# ------------------------------------------------------------------------------- through Airflow


def test_fine_tuning_dag_defers_to_the_trigger_and_records_the_job(ft, stub, airflow_db, monkeypatch,
                                                                   tmp_path_factory):
    """dag.test: validate, submit to the stub API with the key from an Airflow connection, wait in the trigger
    (run inline by dag.test), record the job in the lake and MLflow."""
    from airflow.dag_processing.dagbag import DagBag
    from feedback_loop.retrain import finetune_jobs, registry
    from retrain_helpers import mlflow_db

    s, versions = ft
    mlflow_db(s, tmp_path_factory.getbasetemp() / "mlflow-template")
    monkeypatch.setenv("AIRFLOW_CONN_ACSR_TEST_FT", json.dumps(
        {"conn_type": "http", "host": stub.base_url, "password": KEY, "extra": {"project": "acsr"}}))
    dag = DagBag(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).dags["acsr_finetune_reasoning_model"]
    run = dag.test(run_conf={"backend": "openai", "base_model": "succeed", "connection_id": "acsr_test_ft",
                             "poll_seconds": 1, "reason": "test"})
    assert run.state == "success"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {"resolve_request": "success", "validate_dataset": "success", "approve_spend": "success",
                      "submit_and_wait": "success", "record_in_mlflow": "success"}
    rec = finetune_jobs.jobs_for_version(s, "sft", versions["sft"])[0]
    assert rec["status"] == "succeeded" and rec["result_model"] == "ft:succeed:acsr:ftjob-1"
    assert rec["airflow_run_id"] == run.run_id
    assert all(r["auth"] == f"Bearer {KEY}" for r in stub.requests)
    assert stub.requests[-1]["method"] == "GET"  # the last call was a poll (from the trigger)
    with registry.mlflow_for(s) as mlflow:
        runs = mlflow.search_runs(experiment_names=[registry.FINETUNE_EXPERIMENT], output_format="list")
        assert runs[0].data.tags["job_id"] == "ftjob-1" and runs[0].data.tags["status"] == "succeeded"
        assert runs[0].data.params["dataset_version"] == versions["sft"]
