"""One night (three days) through the nightly DAG (dag.test()) from the Zendesk stand-in and OTLP files: pull
tasks, land, validate, model, signals, gaps, datasets. The sample generator's days are the vendors' contents,
so what the pulls land can be compared with what the generator wrote."""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import pytest

DAYS = ["2026-11-18", "2026-11-19", "2026-11-20"]


@pytest.fixture(scope="module")
def night(tmp_path_factory, airflow_db):
    from feedback_loop.settings import Settings
    from feedback_loop_sample.demo_runner import run_nightly_dag_for_days
    from feedback_loop_sample.vendor_payloads import vendor_night

    root = tmp_path_factory.mktemp("vendor-night")
    old = os.environ.get("ACSR_DATA_DIR")
    os.environ["ACSR_DATA_DIR"] = str(root)
    try:
        with vendor_night(str(root), DAYS, ["zendesk", "otlp"], conversations_per_day=80, seed=5) as info:
            states = run_nightly_dag_for_days(DAYS)
            settings = Settings.load()
            yield settings, info, states
    finally:
        if old is None:
            os.environ.pop("ACSR_DATA_DIR", None)
        else:
            os.environ["ACSR_DATA_DIR"] = old


def test_every_day_of_the_night_succeeds_from_the_pulls(night):
    settings, info, states = night
    assert states == {d: "success" for d in DAYS}
    for d in DAYS:
        for system in ("zendesk", "otlp"):
            pulled = json.loads(Path(f"{settings.lake}/runs/dt={d}/pull/{system}.json").read_text())
            assert pulled["status"] == "complete"
            manifest = json.loads(Path(f"{settings.landing}/_vendor/{system}/dt={d}/manifest.json").read_text())
            assert manifest["status"] == "complete" and manifest["folder"] == pulled["folder"]
        summary = json.loads(Path(f"{settings.lake}/runs/dt={d}/summary.json").read_text())
        assert summary["status"] == "ok"
        files = {s: [Path(f["file"]).name for f in summary["sources"][s]["files"]] for s in summary["sources"]}
        assert files["agent_events"] == ["otlp.jsonl.gz"] and files["overrides"] == ["otlp.jsonl.gz"]
        assert files["crm_cases"] == ["zendesk.jsonl.gz"] and files["kb_articles"] == ["zendesk.jsonl.gz"]
        assert summary["model"]["conversation_facts"] > 0
    assert all(r["authorised"] for r in info["stand_in"].requests)


def test_the_pulled_agent_events_are_the_generators_rows(night):
    """OTLP spans -> contract rows lose nothing the generator wrote (case ids become Zendesk ticket ids)."""
    settings, info, _ = night
    from feedback_loop_sample.vendor_payloads import read_contract_rows, ticket_id

    cols = ["event_id", "conversation_id", "customer_id", "turn", "event_type", "text", "intent", "confidence",
            "kb_query", "policy_id", "policy_outcome", "action", "action_status", "rating", "dwell_ms", "model",
            "strategy", "mode", "input_tokens", "output_tokens", "cost_usd", "error_type"]
    for d in DAYS:
        want = {tuple(r[c] for c in cols) + (r["ts"], None if r["case_id"] is None else str(ticket_id(r["case_id"])))
                for r in read_contract_rows(info["sample"], "agent_events", d)}
        rel = duckdb.sql(f"SELECT {', '.join(cols)}, ts, case_id FROM '{settings.lake}/staged/agent_events/dt={d}/part.parquet'")
        got = set(rel.fetchall())
        assert got == want, (d, len(got ^ want))
        # tool calls and answers carried no acsr.event.type: the GenAI span names decided their type
        kinds = dict(duckdb.sql(f"SELECT event_type, count(*) FROM '{settings.lake}/staged/agent_events/dt={d}/part.parquet' "
                                "WHERE event_type IN ('action_executed', 'agent_response', 'kb_query') GROUP BY 1").fetchall())
        assert set(kinds) == {"action_executed", "agent_response", "kb_query"}
        extra = duckdb.sql(f"SELECT json_extract_string(_extra, '$.\"otlp.traceId\"') FROM "
                           f"'{settings.lake}/staged/agent_events/dt={d}/part.parquet' LIMIT 1").fetchall()[0][0]
        assert extra and len(extra) == 32  # the span's unmapped fields are kept


def test_signals_gaps_and_datasets_run_on_the_pulled_data(night):
    settings, _, _ = night
    last = DAYS[-1]
    metrics = duckdb.sql(f"SELECT metric, count(*) FROM '{settings.lake}/marts/signal_metrics/dt={last}/part.parquet' "
                         "GROUP BY 1").fetchall()
    names = {m for m, _ in metrics}
    assert {"csat_mean", "autonomous_resolution_rate", "cost_per_resolution_usd"} <= names and len(names) > 10
    assert Path(f"{settings.lake}/reports/dt={last}/index.html").exists()
    assert Path(f"{settings.lake}/marts/kb_gaps/dt={last}/part.parquet").exists()
    assert Path(f"{settings.lake}/reports/dt={last}/gaps.html").exists()
    # the pulled Help Center articles are the KB the gap stage compared against
    kb = duckdb.sql(f"SELECT count(*) FROM '{settings.lake}/staged/kb_articles/dt={last}/part.parquet'").fetchall()[0][0]
    assert kb > 0
    built = [n for n in ("intent_relabels", "sft", "preference", "kto")
             if Path(f"{settings.lake}/datasets/{n}/latest.json").exists()]
    assert built, "no dataset version was built from the pulled days"
