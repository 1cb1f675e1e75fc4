"""The model with a lookback window full of history: the earlier days are read for the day's own cases and
conversations only, and the facts and case history are those of a read of the whole window."""

from __future__ import annotations

import os
from datetime import timedelta

import duckdb


def _earlier(con, lake, source: str, day, when, sql: str) -> None:
    """Day `when`'s staged partition of `source`, made from the landed day's by `sql` (over the view `t`)."""
    today = f"{lake}/staged/{source}/dt={day.isoformat()}/part.parquet"
    con.execute(f"CREATE OR REPLACE TEMP VIEW t AS SELECT * FROM read_parquet('{today}', hive_partitioning=false)")
    folder = f"{lake}/staged/{source}/dt={when.isoformat()}"
    os.makedirs(folder)
    con.execute(f"COPY ({sql}) TO '{folder}/part.parquet' (FORMAT parquet)")


def test_facts_and_case_history_over_a_window_of_history_equal_a_read_of_the_whole_window(landed_day):
    from feedback_loop.model.conversations import build_model

    s, day = landed_day.settings, landed_day.day
    con = duckdb.connect()
    lake = s.lake
    # Three days before: an earlier state of every case of the day, and cases the day never mentions.
    _earlier(con, lake, "crm_cases", day, day - timedelta(days=3), """
        SELECT * REPLACE (updated_at - INTERVAL 3 DAY AS updated_at, 'pending' AS status) FROM t
        UNION ALL SELECT * REPLACE ('other-' || case_id AS case_id, 'closed' AS status) FROM t""")
    # The day before: a second earlier state of half of them, one of which is later than its state of the
    # day (a clock-skewed export: the latest state wins whatever day exported it).
    events = f"read_parquet('{lake}/staged/agent_events/dt={day.isoformat()}/part.parquet')"
    (skewed,) = con.execute(f"SELECT min(case_id) FROM {events} WHERE case_id IN (SELECT case_id FROM read_parquet("
                            f"'{lake}/staged/crm_cases/dt={day.isoformat()}/part.parquet'))").fetchone()
    _earlier(con, lake, "crm_cases", day, day - timedelta(days=1), f"""
        SELECT * REPLACE (CASE WHEN case_id = '{skewed}' THEN updated_at + INTERVAL 1 HOUR
                               ELSE updated_at - INTERVAL 1 DAY END AS updated_at, 'reopened' AS status)
        FROM t WHERE hash(case_id) % 2 = 0 OR case_id = '{skewed}'""")
    _earlier(con, lake, "surveys", day, day - timedelta(days=1), """
        SELECT * REPLACE (submitted_at - INTERVAL 1 DAY AS submitted_at, 1 AS score) FROM t
        UNION ALL SELECT * REPLACE ('other-' || case_id AS case_id, 'other-' || survey_id AS survey_id) FROM t""")

    build_model(s, day)
    dt = day.isoformat()
    first = (day - timedelta(days=s.reference_lookback_days)).isoformat()
    con.execute(f"""CREATE VIEW cases AS SELECT * FROM read_parquet('{lake}/staged/crm_cases/*/*.parquet',
                    hive_partitioning=true) WHERE dt BETWEEN '{first}' AND '{dt}'""")
    con.execute(f"""CREATE VIEW surveys AS SELECT * FROM read_parquet('{lake}/staged/surveys/*/*.parquet',
                    hive_partitioning=true) WHERE dt BETWEEN '{first}' AND '{dt}'""")
    facts = f"read_parquet('{lake}/marts/conversation_facts/dt={dt}/part.parquet')"
    got = con.execute(f"SELECT conversation_id, case_status, n_case_states, csat, n_surveys FROM {facts} "
                      "ORDER BY 1").fetchall()
    want = con.execute(f"""
        WITH st AS (SELECT case_id, arg_max(status, (updated_at, dt, _row_id)) AS status, count(*) AS n
                    FROM cases GROUP BY 1),
             sv AS (SELECT case_id, arg_max(score, (submitted_at, survey_id)) FILTER (kind = 'csat') AS csat,
                           count(*) AS n FROM surveys GROUP BY 1)
        SELECT f.conversation_id, st.status, coalesce(st.n, 0), sv.csat, coalesce(sv.n, 0)
        FROM {facts} f LEFT JOIN st USING (case_id) LEFT JOIN sv USING (case_id) ORDER BY 1""").fetchall()
    assert got == want
    by_case = dict(con.execute(f"SELECT case_id, case_status FROM {facts}").fetchall())
    assert by_case[skewed] == "reopened" and max(row[2] for row in got) == 3  # the history was read
    history = con.execute(f"""SELECT case_id, updated_at, state_seq, previous_status
        FROM read_parquet('{lake}/marts/case_history/dt={dt}/part.parquet') ORDER BY 1, 2""").fetchall()
    expected = con.execute(f"""SELECT case_id, updated_at, state_seq, previous_status FROM (
            SELECT *, row_number() OVER w AS state_seq, lag(status) OVER w AS previous_status FROM cases
            WINDOW w AS (PARTITION BY case_id ORDER BY updated_at, dt, _row_id))
        WHERE dt = '{dt}' ORDER BY 1, 2""").fetchall()
    assert history == expected and any(seq > 1 for _, _, seq, _ in history)
