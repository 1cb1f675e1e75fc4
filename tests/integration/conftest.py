"""Fixtures of the integration suite: one real Airflow deployment per session, on generated sample data.

The services run this project's DAGs with LocalExecutor and a SQLite metadata DB in a temporary
AIRFLOW_HOME, on free ports of 127.0.0.1; ACSR_DATA_DIR points at a temporary lake. A webhook receiver
collects the alerts. Everything started here is stopped by process-group id (finalizer and atexit).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/s3_server.py

from airflow_stack import SCHEDULE_UTC_HOUR, AirflowStack, latest_scheduled_day

CONVERSATIONS_PER_DAY = 60


# Module order: the Celery deployment and the README's `make airflow` first (their own services, before the
# shared stack starts), then the operator's story on the shared stack: nightly runs, retraining on their
# outputs, approvals, the page that shows them.
MODULE_ORDER = ("test_celery_deployment", "test_readme", "test_nightly_scheduler", "test_retrain_through_scheduler",
                "test_approvals_through_scheduler", "test_flywheel_ui")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = Path(str(item.fspath)).stem
        return MODULE_ORDER.index(name) if name in MODULE_ORDER else len(MODULE_ORDER)

    mine = [i for i in items if HERE in Path(str(i.fspath)).resolve().parents]
    for item in mine:
        item.add_marker(pytest.mark.integration)
    if mine:  # first: under pytest-xdist the longest unit of work starts at once, on its own worker
        rest = [i for i in items if i not in mine]
        items[:] = sorted(mine, key=rank) + rest


class WebhookReceiver:
    """Collects the JSON bodies POSTed to it (the alerts), on 127.0.0.1."""

    def __init__(self):
        received = self.received = []
        lock = self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of_kind(self, kind: str) -> list[dict]:
        with self.lock:
            return [d for d in self.received if d.get("kind") == kind]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# How long the integration tests of one session run, and so how close to the nightly schedule they may start.
SESSION_SPAN = timedelta(minutes=25)


def seconds_before_the_schedule(now: datetime, span: timedelta = SESSION_SPAN) -> float:
    """How long a session starting at `now` waits so that the nightly schedule does not fall inside it: the
    time to 02:00 UTC and half a minute (for the scheduler to create that run) when 02:00 comes within `span`,
    else 0."""
    boundary = now.astimezone(UTC).replace(hour=SCHEDULE_UTC_HOUR, minute=0, second=0, microsecond=0)
    if boundary <= now:
        boundary += timedelta(days=1)
    to_boundary = (boundary - now).total_seconds()
    return to_boundary + 30 if to_boundary < span.total_seconds() else 0.0


@pytest.fixture(scope="session", autouse=True)
def _not_across_the_nightly_schedule():
    """The scheduler creates a new interval's run at 02:00 UTC: a session running across it would see a
    second scheduled run, and a latest day that is no longer the one its data was generated for (a Celery
    week that unpaused its DAG at 02:00 found two runs where it expects one). Such a session starts after 02:00 instead."""
    wait = seconds_before_the_schedule(datetime.now(UTC))
    if wait:
        print(f"\nthe nightly schedule (02:00 UTC) is {wait - 30:.0f} s away: the integration tests start after it",
              file=sys.stderr, flush=True)
        time.sleep(wait)


@pytest.fixture(scope="session")
def days() -> dict:
    """The days the suite works on: the latest scheduled interval's day and the backfill range."""
    latest = latest_scheduled_day()
    return {
        "latest": latest.isoformat(),
        "backfill": [(latest - timedelta(days=i)).isoformat() for i in (2, 1, 0)],
        # Half its rows malformed (a data-quality failure); landed by its test, before the others' window.
        "broken": (latest - timedelta(days=40)).isoformat(),
    }


@pytest.fixture(scope="session")
def integration_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("integration")


@pytest.fixture(scope="session")
def sample_data(integration_dir, days) -> Path:
    """Generated landing data for the suite's days (small: the suite must stay fast)."""
    from feedback_loop_sample.generator import generate

    data = integration_dir / "data"
    landing = data / "landing"
    generate(landing, date.fromisoformat(days["backfill"][0]), date.fromisoformat(days["latest"]),
             conversations_per_day=CONVERSATIONS_PER_DAY)
    return data


@pytest.fixture(scope="session")
def webhook():
    r = WebhookReceiver()
    yield r
    r.close()


@pytest.fixture(scope="session")
def airflow_stack(request, integration_dir, sample_data, webhook) -> AirflowStack:
    stack = AirflowStack(
        integration_dir / "airflow",
        sample_data,
        extra_env={
            "ACSR_ALERT_WEBHOOK_URL": webhook.url,
            # Every nightly run of the suite takes longer than this: each one must raise a deadline alert.
            "ACSR_NIGHTLY_DEADLINE_MINUTES": "0.05",
            "ACSR_EARLIER_DAYS_POKE_SECONDS": "5",
        },
    )
    request.addfinalizer(stack.stop)
    stack.start(pools={"duckdb_warehouse": 1})
    stack.wait_dag_parsed("acsr_nightly")
    return stack


@pytest.fixture(scope="session")
def nightly_outputs(airflow_stack, days) -> Path:
    """Every suite day processed by the nightly DAG, whichever module runs first (each module can run
    alone): after test_nightly_scheduler this finds them done; otherwise it unpauses the DAG (its scheduled
    run takes the latest day) and backfills the days before, as an operator would, and waits for both."""
    from airflow_stack import wait_for

    stack, dag = airflow_stack, "acsr_nightly"
    lake = Path(stack.env["ACSR_DATA_DIR"]) / "lake"

    def missing() -> list[str]:
        return [d for d in days["backfill"] if not (lake / "runs" / f"dt={d}" / "summary.json").is_file()]

    if missing():
        stack.api("PATCH", f"/api/v2/dags/{dag}", {"is_paused": False})
        todo = missing()
        backfill = stack.api("POST", "/api/v2/backfills", {
            "dag_id": dag, "from_date": f"{todo[0]}T00:00:00Z", "to_date": f"{todo[-1]}T23:59:59Z",
            "reprocess_behavior": "failed", "max_active_runs": 3})

        def settled():  # every day summarized and nothing running any more (the lake is not being written)
            stack.processes.check_alive(stack.logs)
            if missing():
                return False
            active = [r["dag_run_id"] for r in stack.dag_runs(dag) if r["state"] in ("queued", "running")]
            return not active and stack.api("GET", f"/api/v2/backfills/{backfill['id']}")["completed_at"] is not None

        wait_for(settled, 1800, interval=10, what="the suite's days to be backfilled and every nightly run to end")
        failed = [r["dag_run_id"] for r in stack.dag_runs(dag) if r["state"] == "failed"]
        assert not failed, f"nightly runs failed: {failed}\n" + stack.failure_logs(dag, failed[0])
    return lake
