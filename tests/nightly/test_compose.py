"""docker-compose.yaml: valid against the Compose specification's JSON Schema (vendored: no Docker engine
here), and wired the way the scaled-out deployment needs (docs/operations.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-worker")


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
    assert commands == {"airflow-apiserver": "api-server", "airflow-scheduler": "scheduler",
                        "airflow-dag-processor": "dag-processor", "airflow-triggerer": "triggerer",
                        "airflow-worker": "celery worker"}
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
