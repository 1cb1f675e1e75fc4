"""The Celery app's configuration for `airflow celery worker` (`[celery] celery_config_options`, set in
docker-compose.yaml): Airflow's default, plus `imports`, which the worker's main process imports before it
forks its pool. A task process is forked by a pool process, so it starts with what
feedback_loop.airflow_preload imports already in memory, as LocalExecutor tasks do from the scheduler's
forkserver (docs/operations.md, "Task start-up")."""

from __future__ import annotations

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

CELERY_CONFIG = {**DEFAULT_CELERY_CONFIG, "imports": ("feedback_loop.airflow_preload",)}
