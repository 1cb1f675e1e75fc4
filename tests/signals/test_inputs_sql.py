"""The per-conversation inputs of the signals stage (sql/inputs.sql) equal the plain aggregate over the whole
window that they replace: single-day conversations taken as their row, several-day ones aggregated, the
case linked and its channel read only where the facts lack them."""

from __future__ import annotations

import random
import re
from datetime import UTC, date, datetime, timedelta

import duckdb
from feedback_loop.signals.units import sql

# What inputs.sql computed before it split single-day conversations from the others (the reference).
PLAIN_CASE_NOW = """
SELECT * FROM cases
QUALIFY row_number() OVER (PARTITION BY case_id ORDER BY updated_at DESC, dt DESC, _row_id DESC) = 1"""
PLAIN_CONV_DIMS = """
WITH f AS (
    SELECT conversation_id,
        arg_min(customer_id, dt) AS customer_id, arg_min(case_id, dt) AS case_id,
        min(started_at) AS started_at, max(ended_at) AS ended_at, min(dt) AS first_fact_date,
        arg_min(final_intent, dt) AS intent, arg_max(channel, dt) AS channel,
        arg_min(strategy, dt) AS strategy, arg_min(mode, dt) AS mode,
        bool_or(agent_escalated) AS agent_escalated,
        sum(n_policy_pass + n_policy_fail + n_policy_waived) AS n_policy_checks,
        sum(n_policy_fail + n_policy_waived) AS n_policy_flags
    FROM facts GROUP BY conversation_id),
link AS (SELECT conversation_id, min(case_id) AS case_id FROM plain_case_now
         WHERE conversation_id IS NOT NULL GROUP BY 1)
SELECT f.* EXCLUDE (case_id, intent, channel, strategy, mode),
    coalesce(f.case_id, link.case_id) AS case_id,
    coalesce(f.intent, 'unknown') AS d_intent, coalesce(f.channel, k.channel, 'none') AS d_channel,
    coalesce(f.strategy, 'none') AS d_strategy, coalesce(f.mode, 'unknown') AS d_mode
FROM f LEFT JOIN link USING (conversation_id)
LEFT JOIN plain_case_now k ON k.case_id = coalesce(f.case_id, link.case_id)"""


def _window(seed: int):
    """Fact rows and case states of a few days: conversations of one day and of several, without a case or
    a channel in their facts, a NULL conversation id; cases with several states, linked to conversations
    whose facts do not name them."""
    rnd = random.Random(seed)
    day0 = date(2026, 11, 1)
    facts, cases = [], []
    pick = lambda *xs: rnd.choice(xs)
    for c in range(300):
        conv = None if c % 97 == 0 else f"conv-{c}"
        case = None if c % 5 == 0 else f"case-{c % 240}"
        start = rnd.randrange(10)
        for d in range(pick(1, 1, 1, 2, 3)):
            day = day0 + timedelta(days=start + d)
            at = datetime(day.year, day.month, day.day, rnd.randrange(24), tzinfo=UTC)
            facts.append((conv, pick("cust-1", "cust-2", None), case if rnd.random() > 0.1 else None, at,
                          at + timedelta(minutes=5), day, pick("refund", None, "card"), pick("chat", "email", None),
                          pick("a", None), pick("auto", "shadow"), rnd.random() < 0.3, rnd.randrange(3),
                          rnd.randrange(2), rnd.randrange(2)))
    for k in range(260):
        for s in range(pick(1, 2, 3)):
            day = day0 + timedelta(days=rnd.randrange(12))
            at = datetime(day.year, day.month, day.day, pick(1, 1, 2), tzinfo=UTC) if rnd.random() > 0.05 else None
            cases.append((f"case-{k}", pick(f"conv-{k}", f"conv-{k + 250}", None), pick("chat", "voice", None),
                          at, day, k * 10 + s))
    return facts, cases


def test_conversation_dimensions_equal_the_plain_aggregate_over_the_window():
    for seed in range(5):
        facts, cases = _window(seed)
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        con.execute("""CREATE TABLE facts (conversation_id VARCHAR, customer_id VARCHAR, case_id VARCHAR,
            started_at TIMESTAMPTZ, ended_at TIMESTAMPTZ, dt DATE, final_intent VARCHAR, channel VARCHAR,
            strategy VARCHAR, mode VARCHAR, agent_escalated BOOLEAN, n_policy_pass BIGINT, n_policy_fail BIGINT,
            n_policy_waived BIGINT)""")
        con.executemany("INSERT INTO facts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", facts)
        con.execute("""CREATE TABLE cases (case_id VARCHAR, conversation_id VARCHAR, channel VARCHAR,
            updated_at TIMESTAMPTZ, dt DATE, _row_id BIGINT)""")
        con.executemany("INSERT INTO cases VALUES (?, ?, ?, ?, ?, ?)", cases)
        for view in ("ovr_staged", "ovr_quarantined"):
            con.execute(f"""CREATE VIEW {view} AS SELECT NULL::VARCHAR override_id, NULL::TIMESTAMPTZ ts,
                NULL::VARCHAR conversation_id, NULL::VARCHAR stage, NULL::VARCHAR outcome, NULL::DATE dt,
                NULL::VARCHAR quarantine_reason WHERE false""")
        con.execute(sql("inputs.sql", facts="facts", cases="cases"))
        con.execute(f"CREATE TABLE plain_case_now AS {PLAIN_CASE_NOW}")
        assert (con.execute("SELECT * FROM case_now ORDER BY ALL").fetchall()
                == con.execute("SELECT case_id, conversation_id, channel FROM plain_case_now ORDER BY ALL").fetchall())
        got = con.execute("SELECT * FROM conv_dims ORDER BY conversation_id NULLS FIRST")
        got_columns, rows = [d[:2] for d in got.description], got.fetchall()
        want = con.execute(f"SELECT * FROM ({PLAIN_CONV_DIMS}) ORDER BY conversation_id NULLS FIRST")
        assert got_columns == [d[:2] for d in want.description]
        assert rows == want.fetchall()
        assert sum(1 for r in rows if r[0] is None) == 1 and len(rows) > 250


def test_reopen_cohorts_equal_the_plain_query_over_every_case_of_the_window():
    """The reopen cohort of days [first, last] reads the states of the cases it can hold (a resolution or a
    reopen dated in those days) and equals the query over every case of the window."""
    plain, n = re.subn(r"ours AS \(.*?\),(\s*)res AS", r"ours AS (SELECT DISTINCT case_id FROM cases),\1res AS",
                       sql("reopen_cohort.sql", table="plain", case_states="cases"), flags=re.DOTALL)
    assert n == 1
    for seed in range(5):
        rnd = random.Random(seed)
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        con.execute("""CREATE TABLE cases (case_id VARCHAR, conversation_id VARCHAR, channel VARCHAR,
            resolved_at TIMESTAMPTZ, last_reopened_at TIMESTAMPTZ, updated_at TIMESTAMPTZ, dt DATE, _row_id BIGINT)""")
        rows = []
        for k in range(200):
            at = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(hours=rnd.randrange(14 * 24))
            for s in range(rnd.choice((1, 2, 3, 4))):  # states: resolved, reopened within a day or not, ...
                resolved = at + timedelta(hours=rnd.choice((2, 20, 30, 60))) if rnd.random() > 0.2 else None
                if resolved:
                    reopened = resolved + timedelta(hours=rnd.choice((3, 23, 25, 40))) if rnd.random() < 0.5 else None
                else:  # a reopen whose resolution no export shows
                    reopened = at + timedelta(hours=5) if rnd.random() < 0.5 else None
                rows.append((f"case-{k}", f"conv-{k}", "chat", resolved, reopened, at, at.date(), k * 10 + s))
                at = (reopened or resolved or at) + timedelta(hours=1)
        con.executemany("INSERT INTO cases VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        con.execute("CREATE TABLE case_now AS SELECT case_id, conversation_id, channel FROM cases "
                    "QUALIFY row_number() OVER (PARTITION BY case_id ORDER BY updated_at DESC) = 1")
        con.execute("CREATE TABLE conv_dims AS SELECT DISTINCT conversation_id, 'refund' AS d_intent, "
                    "'chat' AS d_channel, 'a' AS d_strategy, 'auto' AS d_mode FROM cases")
        days = {"first": "2026-11-05", "last": "2026-11-07"}
        con.execute(sql("reopen_cohort.sql", table="ours", case_states="cases"), days)
        con.execute(plain, days)
        got = con.execute("SELECT * FROM ours ORDER BY ALL").fetchall()
        assert got == con.execute("SELECT * FROM plain ORDER BY ALL").fetchall()
        assert any(r[3] for r in got) and not all(r[3] for r in got) and any("@before:" in r[2] for r in got)
