"""
### Fine-tune the reasoning model

Validates a version of the `sft` (supervised) or `preference` (DPO) dataset for the chosen backend with
the datasets' own format validators, then submits a fine-tuning job through a pluggable backend:

- `openai`: an OpenAI-compatible fine-tuning API (upload the file, create the job, poll it); base URL and
  API key from the Airflow connection in the form (the key is masked, never logged or stored);
- `command`: the configured training command on this machine (`Settings.finetune_command`; by default a
  small bundled trainer), detached so that waiting holds no worker slot;
- `dry_run`: writes exactly what would be sent, submits nothing.

Before a job that costs money is submitted, `approve_spend` shows the dataset version, example and token
counts, the estimated cost and the base model, and waits for a person (auto-approved unless
`ACSR_APPROVAL_FINETUNE_MODE=required`; docs/review.md). While the job runs the task is deferred: a trigger polls it in the triggerer. The job record
(`<lake>/finetune_jobs/<job key>.json`: job id, status, trained tokens, cost where reported, resulting
model id, dataset version) is also logged to MLflow. Manual by default; set `ACSR_FINETUNE_ON_DATASETS`
(sft and/or preference) to also run on each new version of those datasets. docs/retraining.md.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task
from feedback_loop.alerts import WebhookNotifier
from feedback_loop.assets import DATASET_ASSETS
from feedback_loop.retrain.operators import FineTuneOperator
from feedback_loop.retrain.params import asset_event_version, finetune_params
from feedback_loop.review.operators import ApprovalGate
from feedback_loop.settings import parse_time

# Parse-time configuration from the environment only (no Variables, no I/O at parse time).
ON_DATASETS = parse_time().finetune_on


@dag(
    dag_id="acsr_finetune_reasoning_model",
    schedule=[DATASET_ASSETS[n] for n in ON_DATASETS] or None,
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "ml-platform", "retries": 1, "retry_delay": timedelta(minutes=2),
                  "on_failure_callback": WebhookNotifier(kind="task_failed")},
    on_failure_callback=WebhookNotifier(kind="dag_failed"),
    params=finetune_params(),
    tags=["acsr", "feedback-loop", "retraining"],
    doc_md=__doc__,
)
def acsr_finetune_reasoning_model():
    @task
    def resolve_request(params=None, triggering_asset_events=None) -> dict:
        from feedback_loop.retrain.finetune import resolve_request as resolve
        from feedback_loop.settings import Settings

        version, dataset = None, None
        for name in ON_DATASETS:
            found = asset_event_version(triggering_asset_events, DATASET_ASSETS[name])
            if found:
                version, dataset = found, name
        return resolve(Settings.load(), dict(params or {}), version, dataset)

    @task
    def validate_dataset(request: dict) -> dict:
        """Every file the backend reads, checked against its consumer's format rules and its manifest hash."""
        from feedback_loop.retrain.finetune import validate
        from feedback_loop.settings import Settings

        return validate(Settings.load(), request)

    @task(trigger_rule="all_done")
    def record_in_mlflow(plan: dict) -> str:
        """The job record (whatever its outcome) as an MLflow run linked to the dataset version."""
        from feedback_loop.retrain.finetune_jobs import read_record
        from feedback_loop.retrain.registry import log_finetune_job
        from feedback_loop.settings import Settings

        settings = Settings.load()
        record = read_record(settings, plan["job_key"])
        if record is None:
            return "no job record: nothing was submitted"
        return log_finetune_job(settings, record)

    request = resolve_request()
    plan = validate_dataset(request)
    # A person approves the spend before a job is submitted (Settings.approval_finetune_*; a dry run is
    # never gated; auto-approve by default). Reject skips the submission: nothing is sent, nothing billed.
    approval = ApprovalGate(task_id="approve_spend", gate="finetune", evidence={"request": request, "plan": plan},
                            skip_on_reject=True)
    fine_tune = FineTuneOperator(task_id="submit_and_wait", request=request, plan=plan)
    approval >> fine_tune >> record_in_mlflow(plan)


acsr_finetune_reasoning_model()
