"""Retraining and fine-tuning on an object-store lake (issue 21): the lake on a real S3 server (moto's server
mode), MLflow as a real tracking server (`mlflow server`, artifacts proxied to the same S3 server), exactly
as docker-compose.yaml deploys them. Nothing may fall back to a local folder: the test's local data dir
must stay without a lake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow_server import MLflowServer
from openai_stub import KEY, OpenAIStub
from retrain_helpers import banking_relabels, write_chat_version, write_relabel_version
from s3_server import S3Server

LAKE = "s3://acsr-lake/lake"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with S3Server(tmp_path_factory.mktemp("moto") / "moto.log", ("acsr-lake", "acsr-mlflow")) as server:
        yield server


@pytest.fixture(scope="module")
def mlflow_server(s3, tmp_path_factory):
    with MLflowServer(tmp_path_factory.mktemp("mlflow-server"), s3.env) as server:
        yield server


@pytest.fixture
def remote(s3, mlflow_server, tmp_path, monkeypatch):
    """Settings with the lake on S3 and MLflow on the server; a local scratch lake to publish fixtures from."""
    from feedback_loop.settings import Settings

    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("ACSR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ACSR_LAKE", LAKE)
    monkeypatch.setenv("ACSR_MLFLOW_TRACKING_URI", mlflow_server.uri)
    s = Settings.load()
    scratch = Settings.load(lake=str(tmp_path / "scratch-lake"))
    return s, scratch


def _publish(scratch, settings, *parts):
    """Copy a fixture folder built on the local scratch lake to the S3 lake (as the nightly would write it)."""
    from feedback_loop.lake.files import Lake, filesystem_for, join

    fs, root = filesystem_for(join(settings.lake, *parts))
    fs.put(str(Path(scratch.lake, *parts)) + "/", root + "/", recursive=True)
    latest = json.loads(Path(scratch.lake, *parts[:-1], "latest.json").read_text())
    latest["path"] = join(settings.lake, *parts)
    Lake(settings.lake).write_json(latest, *parts[:-1], "latest.json")


def test_intent_retraining_on_an_s3_lake_with_an_mlflow_server(remote, tmp_path):
    from feedback_loop.lake.files import filesystem_for
    from feedback_loop.retrain import decide, intent_model, registry
    from feedback_loop.retrain import intent_retrain as ir

    s, scratch = remote
    good = banking_relabels(8, skip=3)
    held = good[::8]
    version = write_relabel_version(scratch, "2026-11-18", {"train": [r for r in good if r not in held], "test": held})
    _publish(scratch, s, "datasets", "intent_relabels", version)

    # Night 1 of an S3 deployment: no champion yet, the decision asks for a retrain.
    assert decide.decide(s, "2026-11-18")["intent_classifier"]["retrain"] is True

    out = ir.run(s, ir.resolve_request(s, {"base_per_intent": 3, "reason": "s3 test"}))
    assert out["bootstrap"]["bootstrapped"] is True
    assert out["outcome"]["promoted"] is True, out["outcome"]["reasons"]

    ptr = registry.champion(s)
    assert ptr["version"] == "2" and ptr["dataset_version"] == version
    assert ptr["model_path"].startswith(LAKE + "/retrain/intent_classifier/")
    fs, _ = filesystem_for(LAKE)
    folder = ptr["model_path"].rsplit("/", 1)[0].removeprefix("s3://")
    names = {p.rsplit("/", 1)[-1] for p in fs.ls(folder)}
    assert {"assembly.json", "model.joblib", "model_card.md", "registration.json", "outcome-v2.json"} <= names
    assert not (tmp_path / "data" / "lake").exists(), "nothing may fall back to a local lake folder"

    # The alias moved on the server, and the model artifacts went through it to the S3 bucket.
    assert registry.alias_version(s, "champion") == "2"
    with registry.mlflow_for(s) as mlflow:
        mv = mlflow.MlflowClient().get_model_version_by_alias(registry.INTENT_MODEL, "champion")
        assert mv.tags["promotion_decision"] == "promoted"
        logged = {a.path for a in mlflow.MlflowClient().list_artifacts(mv.run_id)}
        assert {"assembly.json", "per_intent_f1.json", "model_card.md"} <= logged
        served = mlflow.pyfunc.load_model(f"models:/{registry.INTENT_MODEL}@champion")
    assert fs.ls("acsr-mlflow/artifacts"), "the server stores artifacts in the S3 bucket"

    # The agent's view: the champion from the S3 lake, and the registry's pyfunc, predict the same.
    texts = ["I lost my card yesterday", "my top up failed", "how do I change my PIN?"]
    in_lake = registry.load_champion_model(s)
    labels, _ = intent_model.predict(in_lake, texts)
    assert served.predict(texts)["intent"].tolist() == [str(x) for x in labels]

    # The next night's decision reads the champion from S3: no longer "no champion".
    nxt = decide.decide(s, "2026-11-19")
    [no_champion] = [c for c in nxt["checks"] if c["trigger"] == "no_champion"]
    assert no_champion["fired"] is False and nxt["champion_version"] == "2"


@pytest.fixture
def stub():
    s = OpenAIStub()
    yield s
    s.close()


def test_fine_tuning_records_on_an_s3_lake_are_read_back_by_the_decision(remote, stub):
    from feedback_loop.retrain import decide, finetune, finetune_backends, finetune_jobs

    s, scratch = remote
    version = write_chat_version(scratch, "sft", "2026-11-20")
    _publish(scratch, s, "datasets", "sft", version)
    s = type(s).load(finetune_backend="openai")
    assert decide.check_finetune_data(s)["fired"] is True  # a version no job has used yet

    request = finetune.resolve_request(s, {"backend": "openai", "base_model": "succeed", "poll_seconds": 0.05})
    record = finetune.run(s, request, backend=finetune_backends.OpenAIBackend(stub.base_url, KEY))
    assert record["status"] == "succeeded" and record["dataset_version"] == version
    assert all(f["path"].startswith(LAKE) for f in record["files"])
    # The uploads streamed the S3 objects: each multipart body holds the whole file (12 and 3 records).
    up = [stub.files[f"file-{i}"] for i in (1, 2)]
    assert [u["bytes"] > f["bytes"] for u, f in zip(up, record["files"])] == [True, True]
    assert up[0]["lines"] - up[1]["lines"] == 12 - 3

    [read_back] = finetune_jobs.jobs_for_version(s, "sft", version)
    assert read_back["job_key"] == record["job_key"] and read_back["status"] == "succeeded"
    check = decide.check_finetune_data(s)
    assert check["fired"] is False, check  # the next decision no longer asks for this version


def test_the_command_backend_runs_on_an_s3_lake_from_a_local_job_folder(remote, tmp_path):
    from feedback_loop.retrain import finetune, finetune_jobs

    s, scratch = remote
    version = write_chat_version(scratch, "sft", "2026-11-21", tag="cmd")
    _publish(scratch, s, "datasets", "sft", version)
    record = finetune.run(s, finetune.resolve_request(s, {"backend": "command", "base_model": "tiny-local",
                                                          "poll_seconds": 0.2}))
    assert record["status"] == "succeeded", record
    job_dir = Path(s.finetune_local_dir) / record["job_key"]
    assert (job_dir / "inputs" / "train.jsonl").read_bytes().count(b"\n") == 12
    assert json.loads((job_dir / "status.json").read_text())["status"] == "succeeded"
    assert finetune_jobs.read_record(s, record["job_key"])["status"] == "succeeded"  # the record is on S3
    assert [r["job_key"] for r in finetune_jobs.jobs_for_version(s, "sft", version)] == [record["job_key"]]


def test_a_remote_lake_without_a_tracking_server_is_refused_clearly(remote, monkeypatch):
    from feedback_loop.retrain import registry
    from feedback_loop.settings import Settings

    monkeypatch.delenv("ACSR_MLFLOW_TRACKING_URI")
    with pytest.raises(ValueError, match="ACSR_MLFLOW_TRACKING_URI"):
        registry.tracking_uri(Settings.load())
