"""Run the nightly DAG through Airflow for given days, in this process (`dag.test()`), as the demo does."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime


def load_dag(dag_id: str = "acsr_nightly"):
    from airflow.dag_processing.dagbag import DagBag
    from feedback_loop.settings import PROJECT_ROOT

    folder = os.environ.get("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT_ROOT / "dags"))
    bag = DagBag(dag_folder=folder)
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    return bag.get_dag(dag_id)


def mask_secrets_in_logs() -> None:
    """Log through the Task SDK's logging, whose processors redact every secret the masker knows.

    Tasks run by a scheduler log through their supervisor, which masks connection passwords, sensitive
    extra fields and whatever was passed to `mask_secret`. dag.test() runs them in this process with the
    logging the `airflow` import set up, which does not mask (a fine-tuning API key was printed in clear):
    configure the SDK's logging (cached: calling it again is free). docs/reliability.md."""
    from airflow.sdk.log import configure_logging

    configure_logging()


def run_nightly_dag_for_days(days: list[str], dag_id: str = "acsr_nightly") -> dict[str, str]:
    """dag.test() once per day with the day in the run's conf; returns {day: final state}."""
    mask_secrets_in_logs()
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    dag = load_dag(dag_id)
    # Airflow 3.3.2's dag.test() passes DeadlineAlert objects where the scheduler passes their ids
    # (DagRun.update_state -> DeadlineAlertModel.get_by_id) and crashes on success. Deadlines only mean
    # something to a running scheduler, so the in-process test run goes without them.
    dag.deadline = None
    states = {}
    for d in days:
        logical = datetime.fromisoformat(d).replace(tzinfo=UTC)
        run = dag.test(logical_date=logical, run_conf={"date": d})
        states[d] = str(getattr(run, "state", run))
        print(f"[demo] {dag_id} {d}: {states[d]}", flush=True)
    return states
