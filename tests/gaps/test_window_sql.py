"""The gap window's conversation table (gaps/window.sql) equals the query it replaced, whose re-engagement
window ran over every conversation with all its columns, which grouped the states of every case of the
lookback and ranked every fact row for each conversation's latest: the narrow window over the (customer,
intent) keys seen more than once, the states of the cases the facts name, and the ranking of the
conversations with more than one fact row only, give every row the same values."""

from __future__ import annotations

import random
import re
from datetime import UTC, date, datetime, timedelta

import duckdb
from feedback_loop.gaps.params import GapParams
from feedback_loop.gaps.window import FACT_COLUMNS
from feedback_loop.lake.sql import load_sql
from feedback_loop.settings import Settings

# The re-engagement of the replaced query: a window over the joined rows.
PLAIN_R = """r AS (
    SELECT *,
        coalesce(lead(started_at) OVER (PARTITION BY customer_id, coalesce(human_intent, final_intent)
            ORDER BY started_at, conversation_id) - started_at <= to_days(CAST($reengage_days AS INTEGER)), false) AS reengaged
    FROM j
),
"""


# The latest fact row of each conversation as the replaced query took it: every row of the window ranked.
PLAIN_F = """f AS NOT MATERIALIZED (
    SELECT * FROM kept QUALIFY row_number() OVER (PARTITION BY conversation_id ORDER BY fact_date DESC) = 1
),
"""


def _plain(sql: str) -> str:
    """window.sql with its re-engagement CTEs (from `multi` to `r`) replaced by the window over every row, its
    case states grouped for every case of the lookback, and the latest fact row of every conversation
    ranked among all the rows (not only among the rows of the conversations with more than one)."""
    out, n = re.subn(r"-- Re-engagement: .*?\nr AS \(.*?\n\),\n", PLAIN_R, sql, flags=re.DOTALL)
    assert n == 1
    out, n = re.subn(r"-- The latest fact row of each conversation\..*?\nf AS NOT MATERIALIZED \(.*?\n\),\n",
                     PLAIN_F, out, flags=re.DOTALL)
    assert n == 1
    out, n = re.subn(r"FROM cases WHERE case_id IN \(SELECT case_id FROM facts [^\n]*\n", "FROM cases\n", out)
    assert n == 1  # and the case states of every case, not only the window's conversations' cases
    return out.replace("CREATE OR REPLACE TEMP TABLE conv AS", "CREATE OR REPLACE TEMP TABLE plain AS")


def _window(con, seed: int) -> None:
    """Facts of a few days: customers back on the same intent (inside and beyond the re-engagement window,
    starts tied), conversations of two days whose intent changes, human intents, NULL customers, intents and
    starts; overrides, case states and surveys for the joins."""
    rnd = random.Random(seed)
    cols = ", ".join(f"{c} {t}" for c, t in FACT_COLUMNS.items())
    con.execute(f"CREATE TABLE facts ({cols})")
    rows = []
    base = datetime(2026, 11, 1, tzinfo=UTC)
    for c in range(400):
        conv = f"conv-{c:03d}"
        customer = rnd.choice([None] + [f"cust-{k}" for k in range(60)])
        started = None if rnd.random() < 0.03 else base + timedelta(hours=rnd.choice([rnd.randrange(20 * 24), 100]))
        for d in range(rnd.choice((1, 1, 1, 2))):  # a second fact day: the latest row wins, its intent may differ
            rows.append({
                "conversation_id": conv, "customer_id": customer, "case_id": f"case-{c % 300}",
                "fact_date": date(2026, 11, 1) + timedelta(days=(started.day if started else 3) + d),
                "started_at": started, "first_customer_text": f"text {c}",
                "final_intent": rnd.choice(["refund", "card", "login", None]),
                "final_confidence": rnd.random(), "human_intent": rnd.choice([None, None, "refund"]),
                "human_category": None, "kb_articles": ["a1"], "kb_max_score": rnd.random(),
                "n_kb_queries": 1, "n_kb_empty": rnd.randrange(2), "escalated": rnd.random() < 0.2,
                "escalation_reason": rnd.choice([None, "missing_info"]), "reopen_count": 0, "csat": rnd.randrange(1, 6),
                "handle_time_s": 60.0, "n_thumbs_down": 0, "override_policy_clauses": []})
    names = list(FACT_COLUMNS)
    con.executemany(f"INSERT INTO facts VALUES ({', '.join('?' for _ in names)})", [[r[n] for n in names] for r in rows])
    con.execute("""CREATE TABLE ovr AS SELECT 'conv-' || lpad((i * 7 % 400)::VARCHAR, 3, '0') AS conversation_id,
        CASE WHEN i % 3 = 0 THEN 'approved' ELSE 'corrected' END AS outcome, 'article missing' AS rationale,
        NULL::VARCHAR AS evidence, 'P-1' AS policy_clause_id, 'intent' AS stage FROM range(60) t(i)""")
    con.execute("""CREATE TABLE cases AS SELECT 'case-' || (i % 450)::VARCHAR AS case_id,
        TIMESTAMPTZ '2026-11-01' + to_hours(i) AS updated_at, i % 5 = 0 AS escalated,
        NULL::VARCHAR AS escalation_reason, (i % 4)::BIGINT AS reopen_count, 30.0 AS handle_time_s FROM range(500) t(i)""")
    con.execute("""CREATE TABLE surveys AS SELECT 'case-' || (i % 300)::VARCHAR AS case_id, 'csat' AS kind,
        (i % 5 + 1)::BIGINT AS score, TIMESTAMPTZ '2026-11-02' + to_hours(i) AS submitted_at FROM range(200) t(i)""")


def test_the_narrow_reengagement_window_gives_the_same_conversation_table():
    sql = load_sql("feedback_loop.gaps", "window.sql")
    p = GapParams.from_settings(Settings.load())
    weights = {f"w_{s}": getattr(p, f"w_{s}") for s in (
        "kb_empty", "kb_low", "escalation_knowledge", "escalation_other", "override_knowledge", "override_other",
        "reopen", "reengaged", "low_csat", "thumbs_down")}
    for seed in range(4):
        for sample_cut in (1_000_000, 600_000):
            con = duckdb.connect()
            con.execute("SET TimeZone = 'UTC'")
            _window(con, seed)
            params = {"start": "2026-11-10", "knowledge": r"\b(article|missing)\b", "low_kb_score": 0.5,
                      "reengage_days": 3, "sample_cut": sample_cut, **weights}
            con.execute(sql, params)
            con.execute(_plain(sql), params)
            got = con.execute("SELECT * FROM conv ORDER BY conversation_id").fetchall()
            assert got == con.execute("SELECT * FROM plain ORDER BY conversation_id").fetchall()
            n_back = sum(1 for r in con.execute("SELECT reengaged FROM conv").fetchall() if r[0])
            assert 0 < n_back < len(got) and len(got) > 100, (n_back, len(got))
