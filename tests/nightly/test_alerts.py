"""Alerts: the webhook notifier against a real local HTTP receiver, the data-quality alert's facts, and
the callbacks every DAG must carry. (The scheduler-driven path is in tests/integration/test_alerts_live.py.)"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.parse
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from feedback_loop.alerts import WebhookNotifier, build_message


class Receiver:
    """A webhook receiver on 127.0.0.1 that keeps every JSON body it is sent."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(monkeypatch):
    r = Receiver()
    monkeypatch.setenv("ACSR_ALERT_WEBHOOK_URL", r.url)
    yield r
    r.close()


class _TI:
    task_id, map_index = "validate", 5


class _Run:
    dag_id, run_id = "acsr_nightly", "manual__2026-11-20"


def _dq_failure() -> Exception:
    from airflow.sdk.exceptions import AirflowFailException
    from feedback_loop.ingest.quality import DataQualityError

    try:
        try:
            raise DataQualityError("suite 'kb_articles' failed ... Failed expectations: bad_status (11). "
                                   "Data Docs: http://docs/validations/kb.html")
        except DataQualityError as exc:
            raise AirflowFailException(str(exc)) from exc
    except AirflowFailException as exc:
        return exc


def test_task_failure_on_a_data_quality_error_is_a_data_quality_alert(receiver):
    WebhookNotifier(kind="task_failed")({"dag_run": _Run(), "ti": _TI(), "exception": _dq_failure()})
    [doc] = receiver.received
    assert doc["kind"] == "data_quality_failed"
    assert "suite 'kb_articles'" in doc["text"] and "bad_status (11)" in doc["text"]
    assert "Data Docs: http://docs/validations/kb.html" in doc["text"]
    assert doc["link"].endswith("/dags/acsr_nightly/runs/manual__2026-11-20/tasks/validate/mapped/5")


def test_other_task_failures_stay_task_alerts(receiver):
    WebhookNotifier(kind="task_failed")({"dag_run": _Run(), "ti": _TI(), "exception": RuntimeError("disk full")})
    assert receiver.received[0]["kind"] == "task_failed"
    assert "disk full" in receiver.received[0]["text"]


def test_deadline_alert_runs_async_with_the_triggerers_context(receiver):
    """The triggerer calls the class with kwargs + context (a JSON dag_run), then awaits the instance."""
    context = {"dag_run": {"dag_id": "acsr_nightly", "dag_run_id": "scheduled__x"},
               "deadline": {"id": "1", "deadline_time": "2026-11-26T06:00:00+00:00"}}

    async def fire():
        await WebhookNotifier(kind="deadline_missed", context=context)

    asyncio.run(fire())
    [doc] = receiver.received
    assert doc["kind"] == "deadline_missed" and doc["run_id"] == "scheduled__x"
    assert "missed its deadline" in doc["text"] and "2026-11-26T06:00:00" in doc["text"]


def test_without_a_webhook_the_alert_is_only_logged(monkeypatch, caplog):
    monkeypatch.delenv("ACSR_ALERT_WEBHOOK_URL", raising=False)
    WebhookNotifier(kind="dag_failed")({"dag_run": _Run()})
    assert "DAG run acsr_nightly manual__2026-11-20 failed" in caplog.text


def test_message_without_run_context_links_the_ui():
    assert build_message("dag_failed", {})["link"].startswith("http")


def test_every_dag_alerts_on_failure_and_the_nightly_has_a_deadline():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags"))
    assert bag.import_errors == {}
    for dag_id, dag in bag.dags.items():
        assert dag.on_failure_callback, f"{dag_id} has no DAG failure callback"
        for t in dag.tasks:
            assert t.on_failure_callback, f"{dag_id}.{t.task_id} has no task failure callback"
    deadline = bag.dags["acsr_nightly"].deadline
    alerts = deadline if isinstance(deadline, list) else [deadline]
    assert any(a.callback.path == "feedback_loop.alerts.WebhookNotifier" for a in alerts)


def test_data_quality_error_names_suite_expectations_and_an_existing_data_docs_page(settings):
    """Real GX on a day with half its rows broken: the error carries what the alert needs."""
    from feedback_loop.ingest.land import land_source
    from feedback_loop.ingest.quality import DataQualityError, validate_source
    from feedback_loop_sample.generator import generate

    day = date(2026, 11, 20)
    generate(settings.landing, day, day, conversations_per_day=20, malformed_share=0.5, seed=3)
    land_source(settings, "kb_articles", day)
    with pytest.raises(DataQualityError) as err:
        validate_source(settings, "kb_articles", day)
    msg = str(err.value)
    assert "suite 'kb_articles' failed" in msg and "Failed expectations:" in msg
    page = msg.split("Data Docs: ", 1)[1].split()[0]
    assert page.startswith("file://") and "/validations/kb_articles/" in page
    assert Path(urllib.parse.unquote(urllib.parse.urlparse(page).path)).is_file()
