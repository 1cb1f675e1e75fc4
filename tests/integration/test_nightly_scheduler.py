"""The nightly DAG through a real scheduler: the scheduled latest interval, backfills from the CLI and the
REST API (with reprocessing), a manual trigger, concurrent backfill days, and the alerts.

The tests run in order and build on each other (one deployment, one lake), like an operator's day.
"""

from __future__ import annotations

import itertools
import json
from datetime import date, datetime
from pathlib import Path

import pytest
from airflow_stack import cmdline, wait_for
from conftest import CONVERSATIONS_PER_DAY
from feedback_loop.ingest.contract import SOURCE_NAMES
from lake_snapshot import day_outputs, mtimes, state_dependent

DAG = "acsr_nightly"


@pytest.fixture(scope="module")
def lake(airflow_stack) -> Path:
    return Path(airflow_stack.env["ACSR_DATA_DIR"]) / "lake"


@pytest.fixture(scope="module")
def record() -> dict:
    """What earlier tests saw, for later ones (snapshots and modification times)."""
    return {}


def _assert_day_complete(lake: Path, day: str) -> dict:
    for source in SOURCE_NAMES:
        for layer in ("raw", "staged", "quarantine"):
            assert (lake / layer / source / f"dt={day}" / "part.parquet").is_file(), f"{layer}/{source} {day}"
    assert (lake / "marts" / "conversation_facts" / f"dt={day}" / "part.parquet").is_file()
    summary = json.loads((lake / "runs" / f"dt={day}" / "summary.json").read_text())
    assert summary["dt"] == day and summary["status"] == "ok"
    totals = summary["totals"]
    assert totals["rows_read"] > 0
    assert totals["rows_read"] == totals["rows_staged"] + totals["rows_quarantined"]
    return summary


def _resolved_day(stack, run_id: str) -> str:
    return stack.xcom(DAG, run_id, "resolve_day")


def _interval(ti: dict) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(ti["start_date"]), datetime.fromisoformat(ti["end_date"])


def _wait_backfill(stack, backfill_id: int, timeout: float = 900) -> list[dict]:
    wait_for(lambda: stack.api("GET", f"/api/v2/backfills/{backfill_id}")["completed_at"], timeout, interval=3,
             what=f"backfill {backfill_id} to complete")
    runs = [r for r in stack.dag_runs(DAG) if r["run_type"] == "backfill"]
    return runs


def test_unpausing_schedules_the_latest_interval_which_waits_for_earlier_days(airflow_stack, days, record):
    assert airflow_stack.api("GET", f"/api/v2/dags/{DAG}")["is_paused"]
    airflow_stack.cli("dags", "unpause", DAG)
    [run] = wait_for(lambda: airflow_stack.dag_runs(DAG), 120, interval=2, what="the scheduled run")
    assert run["run_type"] == "scheduled"
    assert run["partition_key"] == days["latest"]  # catchup=False: only the latest interval
    record["scheduled_run"] = run["dag_run_id"]

    def sensor_waiting():
        tis = {t["task_id"]: t for t in airflow_stack.task_instances(DAG, run["dag_run_id"])}
        return tis.get("wait_for_earlier_days", {}).get("state") == "up_for_reschedule"

    # The earlier days have landing data but no run yet: the latest day must not be validated first.
    wait_for(sensor_waiting, 300, interval=3, what="the latest day to wait for the earlier days")
    assert not (Path(airflow_stack.env["ACSR_DATA_DIR"]) / "lake" / "staged").exists()


def test_backfill_from_the_cli_runs_the_missing_days_and_unblocks_the_schedule(airflow_stack, lake, days, record):
    first, last = days["backfill"][0], days["backfill"][-1]
    # --to-date is compared with each partition's date at the schedule's time (02:00): end of the last day.
    airflow_stack.cli("backfill", "create", "--dag-id", DAG, "--from-date", first, "--to-date", f"{last}T23:59:59",
                      "--max-active-runs", "3")
    [backfill] = airflow_stack.api("GET", f"/api/v2/backfills?dag_id={DAG}")["backfills"]
    runs = _wait_backfill(airflow_stack, backfill["id"])
    # The latest day already had its scheduled run: reprocess_behavior "none" leaves it to that run.
    assert sorted(r["partition_key"] for r in runs) == days["backfill"][:-1]
    assert all(r["state"] == "success" for r in runs), [(r["dag_run_id"], r["state"]) for r in runs]
    [scheduled] = airflow_stack.wait_runs(DAG, [record["scheduled_run"]], timeout=600)
    assert scheduled["state"] == "success"
    for r in [*runs, scheduled]:
        assert _resolved_day(airflow_stack, r["dag_run_id"]) == r["partition_key"]
    for day in days["backfill"]:
        _assert_day_complete(lake, day)
    record["concurrent_runs"] = [r["dag_run_id"] for r in runs] + [scheduled["dag_run_id"]]
    record["after_scheduled"] = mtimes(lake, days["latest"])


def test_concurrent_days_ran_in_day_order_and_one_warehouse_writer_at_a_time(airflow_stack, lake, days, record):
    """The three days' runs were active together; validation went in day order; the warehouse writer
    (pool of one slot) never ran twice at once; the warehouse file is whole and sees every day."""
    tis = {rid: airflow_stack.task_instances(DAG, rid) for rid in record["concurrent_runs"]}
    day_of = {rid: _resolved_day(airflow_stack, rid) for rid in tis}
    spans = {rid: (min(_interval(t)[0] for t in ts if t["start_date"]),
                   max(_interval(t)[1] for t in ts if t["end_date"])) for rid, ts in tis.items()}
    ordered = sorted(spans, key=lambda rid: day_of[rid])
    for a, b in itertools.pairwise(ordered):
        assert spans[b][0] < spans[a][1], f"runs of {day_of[a]} and {day_of[b]} were not active together"
        first_validate_b = min(_interval(t)[0] for t in tis[b] if t["task_id"] == "validate")
        summarize_a = next(_interval(t)[1] for t in tis[a] if t["task_id"] == "summarize")
        assert summarize_a <= first_validate_b, f"{day_of[b]} validated before {day_of[a]} was summarized"
    writers = sorted(_interval(t) for ts in tis.values() for t in ts if t["task_id"] == "publish_warehouse")
    assert len(writers) == 3
    assert all(t["pool"] == "duckdb_warehouse" for ts in tis.values() for t in ts
               if t["task_id"] in ("publish_warehouse", "build_data_docs"))
    for (_, end), (start, _) in itertools.pairwise(writers):
        assert end <= start, f"two warehouse writers overlapped: {writers}"

    import duckdb

    con = duckdb.connect(str(Path(airflow_stack.env["ACSR_DATA_DIR"]) / "warehouse.duckdb"), read_only=True)
    views = [r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()]
    assert "conversation_facts" in views and "run_summaries" in views
    for view in views:
        con.execute(f"SELECT count(*) FROM {view}").fetchone()
    got = dict(con.execute("SELECT dt::VARCHAR, count(*) FROM conversation_facts GROUP BY 1").fetchall())
    con.close()
    con = duckdb.connect()
    for day in days["backfill"]:
        facts = con.execute(f"SELECT count(*) FROM '{lake}/marts/conversation_facts/dt={day}/part.parquet'")
        assert got[day] == facts.fetchone()[0] > 0
    con.close()


def test_tasks_run_in_workers_forked_from_the_preloaded_forkserver(airflow_stack):
    """LocalExecutor as `make airflow` sets it up: its workers are children of a forkserver that imported
    feedback_loop.airflow_preload, so no task imports Great Expectations or Airflow's task runner again."""
    family = airflow_stack.process("scheduler").children(recursive=True)
    servers = [p for p in family if "multiprocessing.forkserver" in cmdline(p)]
    assert len(servers) == 1, [cmdline(p) for p in family]
    assert "feedback_loop.airflow_preload" in cmdline(servers[0])
    children = [cmdline(p) for p in servers[0].children()]  # the workers, and the log server
    assert any("airflow worker -- LocalExecutor" in c for c in children), children


def test_reprocessing_backfill_from_the_rest_api_gives_identical_outputs(airflow_stack, lake, days, record):
    """Re-run a backfilled day and the scheduled day, concurrently: every output is reproduced."""
    again = days["backfill"][-2:]
    before = {day: day_outputs(lake, day) for day in again}
    times = {day: mtimes(lake, day) for day in again}
    backfill = airflow_stack.api("POST", "/api/v2/backfills", {
        "dag_id": DAG, "from_date": f"{again[0]}T00:00:00Z", "to_date": f"{again[-1]}T23:59:59Z",
        "reprocess_behavior": "completed", "max_active_runs": 3,
    })
    _wait_backfill(airflow_stack, backfill["id"])
    # Reprocessing gives each day a new backfill run, beside its earlier (backfilled or scheduled) run.
    runs = [r for r in airflow_stack.dag_runs(DAG)
            if r["partition_key"] in again and r["queued_at"]
            and datetime.fromisoformat(r["queued_at"]) >= datetime.fromisoformat(backfill["created_at"])]
    assert sorted(r["partition_key"] for r in runs) == again
    assert all(r["state"] == "success" for r in runs), [(r["dag_run_id"], r["state"]) for r in runs]
    for day in again:
        _assert_day_complete(lake, day)
        after = day_outputs(lake, day)
        assert after.keys() == before[day].keys(), f"{day}: different files"
        changed = [p for p, v in after.items() if v != before[day][p] and not state_dependent(p)]
        assert not changed, f"{day}: changed on reprocessing: {changed}"
        now = mtimes(lake, day)
        assert now.keys() == times[day].keys()
        assert all(now[p] != times[day][p] for p in now), f"{day}: some partitions were not rewritten"
    record["after_reprocess"] = mtimes(lake, days["latest"])
    record["outputs_latest"] = day_outputs(lake, days["latest"])


def test_manual_trigger_with_a_date_rewrites_the_same_partitions(airflow_stack, lake, days, record):
    """Scheduled, backfilled and manual runs of one day touch exactly the same partition files."""
    day = days["latest"]
    partitions_before = sorted(p.relative_to(lake).as_posix() for p in lake.rglob("dt=*") if p.is_dir())
    run = airflow_stack.api("POST", f"/api/v2/dags/{DAG}/dagRuns",
                            {"logical_date": None, "conf": {"date": day}, "note": "integration test"})
    [done] = airflow_stack.wait_runs(DAG, [run["dag_run_id"]], timeout=600)
    assert done["run_type"] == "manual" and done["partition_key"] is None and done["state"] == "success"
    assert _resolved_day(airflow_stack, run["dag_run_id"]) == day
    now = mtimes(lake, day)
    assert now.keys() == record["after_scheduled"].keys() == record["after_reprocess"].keys()
    assert all(now[p] != record["after_reprocess"][p] for p in now)
    now_outputs = day_outputs(lake, day)
    assert now_outputs.keys() == record["outputs_latest"].keys()
    assert not [p for p, v in now_outputs.items() if v != record["outputs_latest"][p] and not state_dependent(p)]
    partitions_after = sorted(p.relative_to(lake).as_posix() for p in lake.rglob("dt=*") if p.is_dir())
    assert partitions_after == partitions_before, "a manual run created partitions of another day"


def test_a_data_quality_failure_fails_without_retries_and_alerts(airflow_stack, days, webhook):
    from feedback_loop_sample.generator import generate

    broken = date.fromisoformat(days["broken"])
    generate(Path(airflow_stack.env["ACSR_DATA_DIR"]) / "landing", broken, broken,
             conversations_per_day=CONVERSATIONS_PER_DAY, malformed_share=0.5)
    run = airflow_stack.api("POST", f"/api/v2/dags/{DAG}/dagRuns",
                            {"logical_date": None, "conf": {"date": days["broken"]}})
    [done] = airflow_stack.wait_runs(DAG, [run["dag_run_id"]], timeout=600, allow_failed=True)
    assert done["state"] == "failed"
    failed = [t for t in airflow_stack.task_instances(DAG, run["dag_run_id"]) if t["state"] == "failed"]
    assert failed and {t["task_id"] for t in failed} == {"validate"}
    assert all(t["try_number"] == 1 for t in failed), "a data-quality failure must not be retried"

    def alerts():
        dq = [a for a in webhook.of_kind("data_quality_failed") if a["run_id"] == run["dag_run_id"]]
        dag = [a for a in webhook.of_kind("dag_failed") if a["run_id"] == run["dag_run_id"]]
        return (dq, dag) if len(dq) == len(failed) and dag else None

    dq, dag_alerts = wait_for(alerts, 120, interval=2, what="the data-quality and DAG failure alerts")
    assert all(f"DAG run {DAG} {run['dag_run_id']} failed" in a["text"] for a in dag_alerts)
    for alert in dq:
        assert alert["task_id"] == "validate" and f"/runs/{run['dag_run_id']}/tasks/validate" in alert["link"]
        assert "suite '" in alert["detail"] and "Failed expectations:" in alert["detail"]
        assert "Data Docs: " in alert["detail"] and "/validations/" in alert["detail"]
    assert {a["detail"].split("suite '")[1].split("'")[0] for a in dq} <= set(SOURCE_NAMES)


def test_runs_longer_than_the_deadline_raise_deadline_alerts(airflow_stack, webhook, record):
    """The suite sets the deadline to 3 s after queueing, which every nightly run misses."""
    def scheduled_run_alerted():
        alerts = [a for a in webhook.of_kind("deadline_missed") if a["dag_id"] == DAG]
        return alerts if any(a["run_id"] == record["scheduled_run"] for a in alerts) else None

    alerts = wait_for(scheduled_run_alerted, 120, interval=2, what="a deadline alert from the triggerer")
    for alert in alerts:
        assert "missed its deadline" in alert["text"] and "deadline 20" in alert["detail"]
        assert alert["link"].endswith(f"/dags/{DAG}/runs/{alert['run_id']}")
