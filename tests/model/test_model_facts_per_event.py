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
