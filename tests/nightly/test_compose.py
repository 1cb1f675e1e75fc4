"""docker-compose.yaml: valid against the Compose specification's JSON Schema (vendored: no Docker engine
here), and wired the way the scaled-out deployment needs (docs/operations.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from deployment import AIRFLOW_COMMANDS, BUCKETS, CELERY_CONFIG_OPTIONS
from mlflow_server import server_args

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_SERVICES = tuple(AIRFLOW_COMMANDS)


def interpolate(text: str, env: dict | None = None) -> str:
    """Compose's variable substitution with an empty environment: ${VAR:-default} / ${VAR-default} give the
    default, ${VAR} gives "", and $$ is a literal $ (as `docker compose config` does before validating)."""
    env = env or {}
    marker = "\0dollar\0"
    text = text.replace("$$", marker)

    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(3) or ""
        return env.get(name, default)

    text = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?-([^}]*))?\}", sub, text)
    return text.replace(marker, "$")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(interpolate((ROOT / "docker-compose.yaml").read_text()))


def test_compose_file_is_valid_against_the_compose_spec(compose):
    schema = json.loads((ROOT / "deploy" / "schema" / "compose_spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_a_broken_compose_file_is_rejected(compose):
    """The validator really checks: a misspelt key and a wrong type are errors."""
    schema = json.loads((ROOT / "deploy" / "schema" / "compose_spec.json").read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["redis"]["helthcheck"] = broken["services"]["redis"].pop("healthcheck")
    broken["services"]["postgres"]["ports"] = "5432"
    errors = list(jsonschema.Draft201909Validator(schema).iter_errors(broken))
    assert len(errors) >= 2


def test_every_service_of_the_official_layout_is_there(compose):
    services = compose["services"]
    for name in (*AIRFLOW_SERVICES, "airflow-init", "postgres", "redis", "minio", "minio-init", "mlflow"):
        assert name in services, name
    commands = {name: services[name]["command"] for name in AIRFLOW_SERVICES}
    # The commands the Celery integration test starts (tests/deployment.py).
    assert commands == AIRFLOW_COMMANDS
    for name, service in services.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"


def test_airflow_services_share_the_celery_postgres_and_s3_configuration(compose):
    services = compose["services"]
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
        assert env["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"] == CELERY_CONFIG_OPTIONS  # the integration test's
        # Tasks talk to the api-server's Task Execution API: without this they hang in queued.
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        assert env["ACSR_LAKE"].startswith("s3://") and env["AWS_ENDPOINT_URL"] == "http://minio:9000"
        assert "acsr-data:/opt/acsr/data" in services[name]["volumes"]  # warehouse + GX results, shared
    buckets = set(re.findall(r"lake/(acsr-[a-z-]+)", services["minio-init"]["command"][1]))
    env = services["airflow-worker"]["environment"]
    for var in ("ACSR_LAKE", "ACSR_LANDING"):
        assert env[var].removeprefix("s3://").split("/")[0] in buckets
    init = services["airflow-init"]["command"][1]
    assert "airflow db migrate" in init and "airflow pools set duckdb_warehouse 1" in init


def test_the_image_installs_the_pinned_requirements_and_the_package():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM apache/airflow:3\.3\.2", dockerfile, re.MULTILINE)
    pinned = re.search(r"^apache-airflow==(\S+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE).group(1)
    assert f"apache/airflow:{pinned}-" in dockerfile, "the image and requirements.txt pin the same Airflow"
    assert "pip install --no-cache-dir -r /opt/acsr/requirements.txt" in dockerfile
    assert "pip install --no-cache-dir --no-deps /opt/acsr" in dockerfile
    assert "COPY --chown=airflow:root dags /opt/airflow/dags" in dockerfile
    assert "COPY --chown=airflow:root plugins /opt/airflow/plugins" in dockerfile


def _options(args: list[str]) -> dict:
    return dict(a.split("=", 1) if "=" in a else (a, True) for a in args)


def test_the_mlflow_service_runs_what_the_integration_tests_run(compose):
    """`mlflow server` with the same options as tests/mlflow_server.py (only host, port, paths differ), its
    artifacts in a bucket minio-init creates, and the code pointed at it."""
    services = compose["services"]
    mlflow = services["mlflow"]
    assert mlflow["entrypoint"] == ["mlflow"]
    opts = _options(mlflow["command"])
    expected = _options(server_args(host="h", port=1, backend_store_uri="b", artifacts_destination="a",
                                    allowed_hosts="x"))
    assert opts.keys() == expected.keys() and mlflow["command"][0] == "server"
    assert opts["--port"] == "5000" and opts["--serve-artifacts"] is True
    bucket = opts["--artifacts-destination"].removeprefix("s3://").split("/")[0]
    created = set(re.findall(r"lake/(acsr-[a-z-]+)", services["minio-init"]["command"][1]))
    assert bucket in created and set(BUCKETS) == created
    assert "mlflow:5000" in opts["--allowed-hosts"].split(","), "the Airflow services reach it as mlflow:5000"
    env = mlflow["environment"]
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000" and env["AWS_ACCESS_KEY_ID"]
    volume = opts["--backend-store-uri"].removeprefix("sqlite:///").rsplit("/", 1)[0]
    assert any(v.endswith(f":{volume}") for v in mlflow["volumes"]), "the registry DB is on a volume"
    for name in AIRFLOW_SERVICES:
        assert services[name]["environment"]["ACSR_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert services["airflow-worker"]["depends_on"]["mlflow"]["condition"] == "service_healthy"


def _known_acsr_variables() -> set[str]:
    """Every ACSR_* name the code reads: the Settings fields and the names read from the environment."""
    import dataclasses

    from feedback_loop.settings import Settings

    names = {f"ACSR_{f.name.upper()}" for f in dataclasses.fields(Settings)}
    for folder in ("include", "dags", "plugins"):
        for path in (ROOT / folder).rglob("*.py"):
            names |= set(re.findall(r"\b(ACSR_[A-Z0-9_]+)", path.read_text()))
    return names


def test_every_acsr_variable_of_the_compose_file_is_one_the_code_reads_and_the_lake_needs_are_met(compose, monkeypatch):
    """A misspelt variable is silently ignored: each ACSR_* set in the compose file must be read somewhere,
    and the settings the workers get must work with a lake on S3 (a tracking server, a local job folder on
    the volume the triggerer shares)."""
    import dataclasses

    from feedback_loop.settings import Settings

    known = _known_acsr_variables()
    services = compose["services"]
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        unknown = sorted(k for k in env if k.startswith("ACSR_") and k not in known)
        assert not unknown, f"{name} sets variables no code reads: {unknown}"
    env = {k: str(v) for k, v in services["airflow-worker"]["environment"].items()}
    fields = {f.name for f in dataclasses.fields(Settings)}
    values = {k[5:].lower(): v for k, v in env.items() if k.startswith("ACSR_") and k[5:].lower() in fields}
    monkeypatch.setenv("ACSR_DATA_DIR", env["ACSR_DATA_DIR"])
    s = Settings.load(**values)
    assert s.lake.startswith("s3://") and s.landing.startswith("s3://")
    assert s.mlflow_tracking_uri.removeprefix("http://").split(":")[0] in services
    shared = env["ACSR_DATA_DIR"]
    assert s.finetune_local_dir.startswith(shared + "/")
    for name in ("airflow-worker", "airflow-triggerer"):  # the command backend's job folder, seen by both
        assert f"acsr-data:{shared}" in services[name]["volumes"]
