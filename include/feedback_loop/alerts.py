"""Alerts: one Airflow notifier that posts a short JSON message to a webhook (Slack-compatible `text`).

Why a webhook of our own instead of a chat provider: every chat tool and incident system accepts an
incoming webhook with a JSON body, and this keeps the DAGs free of provider dependencies. The notifier is
used three ways (see docs/operations.md):

- `on_failure_callback` of every DAG (runs in the dag-processor) and of every task (runs in the worker);
  a task that failed on a `DataQualityError` gets a data-quality alert that names the suite, the failed
  expectations and the Data Docs page, all taken from the exception's message;
- the nightly DAG's `DeadlineAlert` (runs in the triggerer, through `async_notify`), when a run has not
  finished in time.

The URL comes from `ACSR_ALERT_WEBHOOK_URL` in the environment of the Airflow services, through
`settings.parse_time()` (callbacks run in the dag-processor, the workers and the triggerer, none of which may
read Variables at every call).
Without one the alert is only logged: a local `make airflow` needs no receiver.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any

from airflow.sdk import BaseNotifier

from feedback_loop.settings import parse_time

log = logging.getLogger(__name__)

TIMEOUT_S = 10


def webhook_url() -> str:
    return parse_time().alert_webhook_url


def post_json(url: str, doc: dict) -> None:
    """POST `doc` as JSON; raises on a non-2xx answer so the caller's log shows the failure."""
    req = urllib.request.Request(url, data=json.dumps(doc, default=str).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
        resp.read()


def _ui_base() -> str:
    return parse_time().api_base_url


def _exception_of(context: dict) -> BaseException | None:
    exc = context.get("exception")
    if isinstance(exc, BaseException):
        return exc
    return None


def is_data_quality_failure(exc: BaseException | None) -> bool:
    """True for a DataQualityError, also when a task re-raised it as AirflowFailException."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__name__ == "DataQualityError":
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def build_message(kind: str, context: dict, extra_text: str = "") -> dict:
    """The alert document: a one-line `text` for chat tools plus structured fields for machines."""
    dag = context.get("dag")
    run = context.get("dag_run")
    if isinstance(run, dict):  # deadline callbacks get the run as the REST API's JSON
        dag_id, run_id = run.get("dag_id", ""), run.get("dag_run_id", "")
    else:
        dag_id = getattr(dag, "dag_id", None) or getattr(run, "dag_id", None) or context.get("dag_id") or ""
        run_id = getattr(run, "run_id", None) or context.get("run_id") or ""
    ti = context.get("ti") or context.get("task_instance")
    task_id = getattr(ti, "task_id", None) or ""
    map_index = getattr(ti, "map_index", -1)
    exc = _exception_of(context)
    if kind == "task_failed" and is_data_quality_failure(exc):
        kind = "data_quality_failed"
    link = f"{_ui_base()}/dags/{dag_id}/runs/{run_id}" if dag_id and run_id else _ui_base()
    if task_id:
        link += f"/tasks/{task_id}" + (f"/mapped/{map_index}" if map_index not in (None, -1) else "")
    headline = {
        "task_failed": f"Task {dag_id}.{task_id} failed",
        "data_quality_failed": f"Data quality failed in {dag_id}.{task_id}",
        "dag_failed": f"DAG run {dag_id} {run_id} failed",
        "deadline_missed": f"DAG run {dag_id} {run_id} missed its deadline",
    }.get(kind, kind)
    detail = extra_text or (str(exc) if exc else "") or str(context.get("reason") or "")
    if kind == "deadline_missed" and isinstance(context.get("deadline"), dict):
        detail = f"{detail} (deadline {context['deadline'].get('deadline_time')})".strip()
    text = f"{headline}: {detail}" if detail else headline
    return {
        "text": f"{text}\n{link}",
        "kind": kind,
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": task_id,
        "map_index": map_index,
        "detail": detail,
        "link": link,
    }


class WebhookNotifier(BaseNotifier):
    """Posts an alert to the configured webhook; `kind` says what happened (task_failed, dag_failed, ...)."""

    template_fields = ("text",)

    def __init__(self, kind: str = "task_failed", text: str = "", url: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.kind = kind
        self.text = text
        self.url = url

    def _send(self, context: dict) -> dict:
        doc = build_message(self.kind, dict(context or {}), self.text)
        url = self.url or webhook_url()
        if not url:
            log.warning("alert (no ACSR_ALERT_WEBHOOK_URL set): %s", doc["text"])
            return doc
        post_json(url, doc)
        log.info("alert sent to webhook: %s", doc["text"].splitlines()[0])
        return doc

    def notify(self, context) -> None:
        self._send(context)

    async def async_notify(self, context) -> None:
        """Deadline alerts run in the triggerer's event loop: send from a thread, never block the loop."""
        import asyncio

        await asyncio.to_thread(self._send, context)


def nightly_deadline():
    """The nightly run must finish within `ACSR_NIGHTLY_DEADLINE_MINUTES` (default 240) of being queued.

    With the 02:00 UTC schedule the default means "by 06:00 UTC". Read from the environment at parse time
    (cheap, no metadata-DB access); the alert runs in the triggerer through `WebhookNotifier.async_notify`.
    """
    from datetime import timedelta

    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

    minutes = parse_time().nightly_deadline_minutes
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(minutes=minutes),
        callback=AsyncCallback(WebhookNotifier, kwargs={"kind": "deadline_missed"}),
        name="nightly_finished_in_time",
    )
