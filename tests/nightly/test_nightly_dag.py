"""End to end through Airflow: the nightly DAG (dag.test(), SQLite metadata) on generated data."""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path

import duckdb
import pytest
from feedback_loop.settings import Settings

DAYS = ["2026-11-18", "2026-11-19", "2026-11-20"]

# What each kind of planted malformed row must be quarantined as.
EXPECTED = {
    "null_required": ("missing_",),
    "bad_value": ("bad_",),
    "out_of_range": ("out_of_range_", "score_outside_scale"),
    "bad_type": ("type_error",),
    "invalid_json": ("parse_error",),
    "ts_no_offset": ("type_error",),
    "ts_out_of_interval": ("timestamp_outside_interval",),
    "duplicate_id": ("duplicate_id",),
    "unknown_conversation": ("unknown_conversation_id", "reference_before_history"),
    "unknown_case": ("unknown_case_id", "reference_before_history"),
    "incomplete_triad": ("incomplete_triad",),
}


@pytest.fixture(scope="module")
def nightly_runs(tmp_path_factory, airflow_db):
    """Three generated days, each run through the nightly DAG; returns settings, ground truth, states."""
    from feedback_loop_sample.demo_runner import run_nightly_dag_for_days
    from feedback_loop_sample.generator import generate

    root = tmp_path_factory.mktemp("e2e")
    old = os.environ.get("ACSR_DATA_DIR")
    os.environ["ACSR_DATA_DIR"] = str(root)
    # The generator plants at least one row of every malformed kind per source and day, which is a large
    # share of the small sources at this scale.
    os.environ["ACSR_MAX_BAD_ROW_SHARE"] = "0.6"
    try:
        settings = Settings.load()
        truth = generate(settings.landing, date.fromisoformat(DAYS[0]), date.fromisoformat(DAYS[-1]),
                         conversations_per_day=80, seed=11, malformed_share=0.02)
        states = run_nightly_dag_for_days(DAYS)
        yield settings, truth, states
    finally:
        os.environ.pop("ACSR_MAX_BAD_ROW_SHARE", None)
        if old is None:
            os.environ.pop("ACSR_DATA_DIR", None)
        else:
            os.environ["ACSR_DATA_DIR"] = old


def _q(settings, source, day):
    return f"{settings.lake}/quarantine/{source}/dt={day}/part.parquet"


def test_every_day_succeeds_and_accounts_for_every_row(nightly_runs):
    settings, truth, states = nightly_runs
    assert states == {d: "success" for d in DAYS}
    for d in DAYS:
        summary = json.loads(Path(f"{settings.lake}/runs/dt={d}/summary.json").read_text())
        assert summary["status"] == "ok"
        for name, s in summary["sources"].items():
            assert s["rows_read"] == s["rows_staged"] + s["rows_quarantined"], (d, name)
            assert s["rows_read"] == truth["counts"][name][d], (d, name)  # every line written was read
            staged = duckdb.sql(f"SELECT count(*) FROM '{settings.lake}/staged/{name}/dt={d}/part.parquet'").fetchall()[0][0]
            quarantined = duckdb.sql(f"SELECT count(*) FROM '{_q(settings, name, d)}'").fetchall()[0][0]
            assert (staged, quarantined) == (s["rows_staged"], s["rows_quarantined"])
        assert summary["model"]["conversation_facts"] > 0


def test_planted_malformed_rows_are_quarantined_with_their_reason(nightly_runs):
    settings, truth, _ = nightly_runs
    from feedback_loop.ingest.contract import SOURCES

    planted = [m for m in truth["malformed"] if m["dt"] in DAYS]
    assert {m["kind"] for m in planted} >= set(EXPECTED) - {"incomplete_triad"}
    for m in planted:
        src = SOURCES[m["source"]]
        q = _q(settings, m["source"], m["dt"])
        if str(m["id"]).startswith("line:"):
            where = f"_line = {int(m['id'].split(':')[1])} AND _source_file LIKE '%{m.get('file', '')}'"
        else:
            where = f"{src.id_column} = '{m['id']}'"
        reasons = [r[0] for r in duckdb.sql(f"SELECT quarantine_reason FROM '{q}' WHERE {where}").fetchall()]
        assert reasons, f"planted {m} not in quarantine"
        assert any(r.startswith(EXPECTED[m["kind"]]) for r in reasons), (m, reasons)


def test_only_planted_rows_or_pre_history_references_are_quarantined(nightly_runs):
    settings, truth, _ = nightly_runs
    planted = {(m["source"], m["dt"]) for m in truth["malformed"]}
    n_planted = len([m for m in truth["malformed"] if m["dt"] in DAYS])
    total = 0
    for d in DAYS:
        for name in ("agent_events", "crm_cases", "surveys", "overrides", "outcome_checks", "kb_articles"):
            rows = duckdb.sql(f"SELECT quarantine_reason FROM '{_q(settings, name, d)}' "
                              "WHERE quarantine_reason <> 'reference_before_history'").fetchall()
            if rows:
                assert (name, d) in planted
            total += len(rows)
    # a duplicated row plants one extra quarantined copy; nothing else may be quarantined
    assert total <= n_planted


def test_warehouse_views_read_the_lake(nightly_runs):
    settings, _, _ = nightly_runs
    con = duckdb.connect(settings.warehouse, read_only=True)
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert {"staged_agent_events", "quarantine_surveys", "conversation_facts", "case_history", "run_summaries"} <= views
    n = con.execute("SELECT count(*) FROM conversation_facts").fetchall()[0][0]
    lake_n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{settings.lake}/marts/conversation_facts/*/part.parquet')").fetchall()[0][0]
    assert n == lake_n > 0
    assert con.execute("SELECT count(DISTINCT dt) FROM run_summaries").fetchall()[0][0] == len(DAYS)


def test_data_docs_are_built(nightly_runs):
    settings, _, _ = nightly_runs
    from feedback_loop.ingest.quality import gx_root

    index = [os.path.join(r, f) for r, _, fs in os.walk(gx_root(settings)) for f in fs if f == "index.html"]
    assert index and "agent_events" in Path(index[0]).read_text()
