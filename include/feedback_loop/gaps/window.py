"""The gap window in DuckDB: temp table `conv` (one row per conversation of the current and previous
window, with its evidence signals and weight) and temp table `kb` (the day's knowledge-base snapshot).

Cases and surveys are re-read up to `dt` (not taken from the day's facts), because reopens and CSAT arrive
days after the conversation. The SQL is in `window.sql`; values are bound parameters, only lake paths are
written into the view definitions here.
"""

from __future__ import annotations

from datetime import date, timedelta

from feedback_loop.gaps.params import KNOWLEDGE_PATTERN, GapParams
from feedback_loop.lake.duck import parquet_view
from feedback_loop.lake.files import Lake
from feedback_loop.lake.sql import load_sql
from feedback_loop.settings import Settings

FACT_COLUMNS = {
    "conversation_id": "VARCHAR", "customer_id": "VARCHAR", "case_id": "VARCHAR", "fact_date": "DATE",
    "started_at": "TIMESTAMPTZ", "first_customer_text": "VARCHAR", "final_intent": "VARCHAR",
    "final_confidence": "DOUBLE", "human_intent": "VARCHAR", "human_category": "VARCHAR", "kb_articles": "VARCHAR[]",
    "kb_max_score": "DOUBLE", "n_kb_queries": "BIGINT", "n_kb_empty": "BIGINT", "escalated": "BOOLEAN",
    "escalation_reason": "VARCHAR", "reopen_count": "BIGINT", "csat": "BIGINT", "handle_time_s": "DOUBLE",
    "n_thumbs_down": "BIGINT", "override_policy_clauses": "VARCHAR[]",
}
KB_COLUMNS = {"article_id": "VARCHAR", "title": "VARCHAR", "body": "VARCHAR", "intents": "VARCHAR[]",
              "status": "VARCHAR", "updated_at": "TIMESTAMPTZ"}


def empty(columns: dict) -> str:
    return "SELECT " + ", ".join(f"NULL::{t} AS {c}" for c, t in columns.items()) + " WHERE false"


def load_window(con, settings: Settings, dt: str, p: GapParams) -> dict:
    """Create the temp tables `conv` and `kb` for the window ending on `dt`; return its dates."""
    lake = Lake(settings.lake)
    end = date.fromisoformat(dt)
    start = end - timedelta(days=p.window_days - 1)
    prev_start = start - timedelta(days=p.window_days)
    lookback = prev_start - timedelta(days=settings.reference_lookback_days)
    first, last = prev_start.isoformat(), dt
    # Only the columns used here, so that older partitions missing a column still read.
    parquet_view(con, "facts_raw", lake.files_between("marts", "conversation_facts", first, last), empty(FACT_COLUMNS))
    have = {r[0] for r in con.execute("DESCRIBE facts_raw").fetchall()}
    cols = ", ".join(f"{c}" if c in have else f"NULL::{t} AS {c}" for c, t in FACT_COLUMNS.items())
    con.execute(f"CREATE OR REPLACE TEMP VIEW facts AS SELECT {cols} FROM facts_raw")
    parquet_view(con, "ovr", lake.files_between("staged", "overrides", first, last), empty(
        {"conversation_id": "VARCHAR", "outcome": "VARCHAR", "rationale": "VARCHAR", "evidence": "VARCHAR",
         "policy_clause_id": "VARCHAR", "stage": "VARCHAR"}))
    parquet_view(con, "cases", lake.files_between("staged", "crm_cases", lookback.isoformat(), last), empty(
        {"case_id": "VARCHAR", "updated_at": "TIMESTAMPTZ", "escalated": "BOOLEAN", "escalation_reason": "VARCHAR",
         "reopen_count": "BIGINT", "handle_time_s": "DOUBLE"}))
    parquet_view(con, "surveys", lake.files_between("staged", "surveys", lookback.isoformat(), last), empty(
        {"case_id": "VARCHAR", "kind": "VARCHAR", "score": "BIGINT", "submitted_at": "TIMESTAMPTZ"}))
    parquet_view(con, "agent_events", lake.files_between("staged", "agent_events", start.isoformat(), last), empty(
        {"conversation_id": "VARCHAR", "ts": "TIMESTAMPTZ", "event_type": "VARCHAR", "text": "VARCHAR"}))
    con.execute(load_sql("feedback_loop.gaps", "window.sql"), {
        "start": start.isoformat(), "knowledge": KNOWLEDGE_PATTERN, "low_kb_score": p.low_kb_score,
        "reengage_days": p.reengage_days, "sample_cut": int(p.sample_share * 1_000_000),
        **{f"w_{s}": getattr(p, f"w_{s}") for s in (
            "kb_empty", "kb_low", "escalation_knowledge", "escalation_other", "override_knowledge",
            "override_other", "reopen", "reengaged", "low_csat", "thumbs_down")},
    })
    # The knowledge base as of dt: the latest snapshot on or before dt.
    kb_days = [d for d in lake.days("staged", "kb_articles") if d <= dt]
    if kb_days:
        con.execute("""CREATE OR REPLACE TEMP TABLE kb AS
            SELECT article_id, title, coalesce(body, '') AS body, coalesce(intents, []) AS intents, status, updated_at
            FROM read_parquet($file)
            QUALIFY row_number() OVER (PARTITION BY article_id ORDER BY updated_at DESC) = 1
            ORDER BY article_id""", {"file": lake.partition_file("staged", "kb_articles", kb_days[-1])})
    else:
        con.execute(f"CREATE OR REPLACE TEMP TABLE kb AS {empty(KB_COLUMNS)}")
    return {"window_start": start.isoformat(), "window_end": dt, "prev_start": prev_start.isoformat(),
            "kb_snapshot": kb_days[-1] if kb_days else None}
