"""Conversation facts count and sum each event once: a KB search that returned several articles is one
search, with its tokens, cost and latency once (the facts once unnested the results, one row per article)."""

from __future__ import annotations

import duckdb


def test_counts_and_sums_are_per_event_and_kb_articles_are_the_results(landed_day):
    from feedback_loop.model.conversations import build_model

    s, day = landed_day.settings, landed_day.day
    build_model(s, day)
    dt = day.isoformat()
    con = duckdb.connect()
    con.execute(f"CREATE VIEW ev AS SELECT * FROM read_parquet('{s.lake}/staged/agent_events/dt={dt}/part.parquet')")
    # The day has searches with more than one result: the case the old aggregate counted n times.
    assert con.execute("SELECT count(*) FROM ev WHERE event_type = 'kb_query' AND len(kb_results) > 1").fetchone()[0] > 0
    got = con.execute(f"""
        SELECT conversation_id, n_events, n_kb_queries, n_kb_empty, input_tokens, output_tokens,
               round(cost_usd, 9), round(latency_ms_total, 6), kb_articles, kb_max_score
        FROM read_parquet('{s.lake}/marts/conversation_facts/dt={dt}/part.parquet') ORDER BY 1""").fetchall()
    want = con.execute("""
        WITH arts AS (
            SELECT conversation_id, list(DISTINCT a ORDER BY a) AS kb_articles
            FROM (SELECT conversation_id, unnest(list_transform(kb_results, lambda x: x.article_id)) AS a FROM ev)
            WHERE a IS NOT NULL GROUP BY 1),
        per AS (
            SELECT conversation_id, count(*) AS n, count(*) FILTER (event_type = 'kb_query') AS q,
                   count(*) FILTER (event_type = 'kb_query' AND coalesce(len(kb_results), 0) = 0) AS empty,
                   coalesce(sum(input_tokens), 0) AS i, coalesce(sum(output_tokens), 0) AS o,
                   round(coalesce(sum(cost_usd), 0), 9) AS c, round(coalesce(sum(latency_ms), 0), 6) AS l,
                   max(list_max(list_transform(kb_results, lambda x: x.score))) AS top
            FROM ev GROUP BY 1)
        SELECT per.conversation_id, n, q, empty, i, o, c, l, arts.kb_articles, top
        FROM per LEFT JOIN arts USING (conversation_id) ORDER BY 1""").fetchall()
    assert len(got) == len(want) > 0
    assert got == want


def test_cost_and_latency_sums_do_not_depend_on_the_order_rows_are_added(landed_day):
    """0.1 + 0.2 + 0.3 is 0.6000000000000001 in doubles added left to right and 0.6 right to left: DuckDB's
    threads meet the rows in any order, so a sum of doubles changed its last bits from run to run."""
    from feedback_loop.model.conversations import build_model

    s, day = landed_day.settings, landed_day.day
    part = f"{s.lake}/staged/agent_events/dt={day.isoformat()}/part.parquet"
    con = duckdb.connect()
    (conv,) = con.execute(f"SELECT conversation_id FROM read_parquet('{part}') GROUP BY 1 HAVING count(*) >= 3 "
                          "ORDER BY 1 LIMIT 1").fetchone()
    con.execute(f"""CREATE TABLE ev AS SELECT * REPLACE (
            CASE WHEN conversation_id = '{conv}' THEN [0.1, 0.2, 0.3, 0.0][least(row_number() OVER (
                PARTITION BY conversation_id ORDER BY _row_id), 4)] ELSE cost_usd END AS cost_usd,
            CASE WHEN conversation_id = '{conv}' THEN [0.1, 0.2, 0.3, 0.0][least(row_number() OVER (
                PARTITION BY conversation_id ORDER BY _row_id), 4)] ELSE latency_ms END AS latency_ms)
        FROM read_parquet('{part}') ORDER BY _row_id""")
    con.execute(f"COPY ev TO '{part}' (FORMAT parquet)")
    assert 0.1 + 0.2 + 0.3 != 0.6
    build_model(s, day)
    got = con.execute(f"""SELECT cost_usd, latency_ms_total FROM read_parquet(
        '{s.lake}/marts/conversation_facts/dt={day.isoformat()}/part.parquet') WHERE conversation_id = $c""",
                      {"c": conv}).fetchone()
    assert got == (0.6, 0.6)
