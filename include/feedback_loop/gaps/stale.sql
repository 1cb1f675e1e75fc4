-- Per article: how often the current and the previous window retrieved it, and the conversations that
-- retrieved it and were overridden on a policy clause (stale-article evidence; docs/gaps.md).
WITH u AS (SELECT conversation_id, customer_id, in_window, override_clauses, n_overrides_failed, weight,
                  escalated, handle_time_s, unnest(kb_articles) AS article_id FROM conv)
SELECT article_id,
    count(*) FILTER (in_window) AS retrieved_now,
    count(*) FILTER (NOT in_window) AS retrieved_before,
    count(*) FILTER (in_window AND len(override_clauses) > 0) AS overridden,
    list(conversation_id ORDER BY conversation_id) FILTER (in_window AND len(override_clauses) > 0) AS overridden_ids,
    count(DISTINCT customer_id) FILTER (in_window AND len(override_clauses) > 0) AS overridden_customers,
    flatten(list(override_clauses) FILTER (in_window AND len(override_clauses) > 0)) AS clauses,
    -- <evidence_sum>: lake.sql.exact_sum of the overridden conversations' weights (a sum of doubles changes
    -- its last bits with the order DuckDB's threads add the rows).
    {{evidence_sum}} AS evidence
FROM u GROUP BY article_id
