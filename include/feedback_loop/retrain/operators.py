"""FineTuneOperator: submit a fine-tuning job, then wait for it in the triggerer (deferrable).

Light at import (DAG files import it): the backends, HTTP and the lake are imported inside execute.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import BaseOperator


class FineTuneOperator(BaseOperator):
    """Submit (or resume, or dry-run) the job the `request` and validated `plan` describe; defer until it ends.

    `request` and `plan` are the dicts of feedback_loop.retrain.finetune.resolve_request / validate (XCom
    from the upstream tasks). Returns the job record (status, job id, resulting model, cost)."""

    template_fields = ("request", "plan")
    ui_color = "#e8f0fe"

    def __init__(self, *, request, plan, **kwargs):
        super().__init__(**kwargs)
        self.request, self.plan = request, plan

    def _settings(self):
        from feedback_loop.settings import Settings

        return Settings.load()

    def _backend(self, settings):
        from feedback_loop.retrain import finetune_backends

        if self.request["backend"] == "command" or self.request["dry_run"]:
            if self.request["backend"] == "command":
                return finetune_backends.backend_for(settings, self.request)
            return None
        from airflow.sdk import BaseHook

        connection = BaseHook.get_connection(self.request["connection_id"])
        return finetune_backends.openai_from_connection(connection)

    def execute(self, context):
        from feedback_loop.retrain import finetune
        from feedback_loop.retrain.finetune_jobs import TERMINAL
        from feedback_loop.retrain.triggers import FineTuneJobTrigger

        settings = self._settings()
        run_id = context["run_id"]
        if self.request["dry_run"]:
            return _summary(finetune.dry_run(settings, self.request, self.plan, run_id))
        record = finetune.start(settings, self.request, self.plan, self._backend(settings), run_id)
        if record["status"] in TERMINAL:
            return _summary(finetune.finish(settings, record["job_key"], {"status": record["status"]}))
        self.defer(
            trigger=FineTuneJobTrigger(job_key=record["job_key"], backend=self.request["backend"],
                                       job_id=record["job_id"], lake=settings.lake,
                                       connection_id=self.request["connection_id"],
                                       poll_seconds=self.request["poll_seconds"],
                                       deadline=finetune.deadline_iso(self.request["timeout_hours"])),
            method_name="execute_complete",
            timeout=timedelta(hours=self.request["timeout_hours"], minutes=30),
        )

    def execute_complete(self, context, event=None):
        from airflow.sdk.exceptions import AirflowFailException

        from feedback_loop.retrain import finetune
        from feedback_loop.retrain.finetune_backends import FineTuneError

        settings = self._settings()
        backend = self._backend(settings) if event and event.get("status") == "timed_out" else None
        try:
            return _summary(finetune.finish(settings, self.plan["job_key"], event or {"status": "failed"}, backend))
        except FineTuneError as exc:
            raise AirflowFailException(str(exc)) from exc  # a failed job is not retried: trigger again


def _summary(record: dict) -> dict:
    keep = ("job_key", "job_id", "status", "dataset", "dataset_version", "backend", "dry_run", "base_model",
            "result_model", "trained_tokens", "cost_usd", "reused")
    return {k: record.get(k) for k in keep}
