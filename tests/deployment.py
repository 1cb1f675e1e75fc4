"""The commands of docker-compose.yaml's services, in one place: tests/test_compose.py checks the compose file
against them and tests/integration/test_celery_deployment.py starts the same commands on loopback, so what
the integration test proves is what the compose file runs."""

from __future__ import annotations

# Compose service -> `airflow ...` arguments (the image's entrypoint runs `airflow`).
AIRFLOW_COMMANDS = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}
# The services AirflowStack starts itself (the worker is started with start_worker).
STACK_SERVICES = tuple(cmd for cmd in AIRFLOW_COMMANDS.values() if not cmd.startswith("celery"))
WORKER = AIRFLOW_COMMANDS["airflow-worker"].split()
# Buckets minio-init creates: the lake, the landing area, MLflow's artifacts.
BUCKETS = ("acsr-lake", "acsr-landing", "acsr-mlflow")
# The Celery app's configuration (every Airflow service): Airflow's default, plus the worker preloading the
# task libraries before it forks its pool (include/feedback_loop/airflow_celery.py).
CELERY_CONFIG_OPTIONS = "feedback_loop.airflow_celery.CELERY_CONFIG"
