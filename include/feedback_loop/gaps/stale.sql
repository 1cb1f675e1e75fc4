-- Per article: how often the current and the previous window retrieved it, and the conversations that
-- retrieved it and were overridden on a policy clause (stale-article evidence; docs/gaps.md). The counts
-- unnest two columns of every conversation; the overridden ones, a few, are unnested with what is listed.
WITH retrieved AS (
    SELECT article_id, count(*) FILTER (in_window) AS retrieved_now, count(*) FILTER (NOT in_window) AS retrieved_before
    FROM (SELECT in_window, unnest(kb_articles) AS article_id FROM conv)
    GROUP BY article_id
), overridden AS (
    SELECT article_id, count(*) AS overridden,
        list(conversation_id ORDER BY conversation_id) AS overridden_ids,
        count(DISTINCT customer_id) AS overridden_customers,
        flatten(list(override_clauses)) AS clauses,
        -- <evidence_sum>: lake.sql.exact_sum of the overridden conversations' weights (a sum of doubles
        -- changes its last bits with the order DuckDB's threads add the rows).
        {{evidence_sum}} AS evidence
    FROM (SELECT conversation_id, customer_id, in_window, override_clauses, weight, unnest(kb_articles) AS article_id
          FROM conv WHERE in_window AND len(override_clauses) > 0)
    GROUP BY article_id
)
SELECT r.article_id, retrieved_now, retrieved_before, coalesce(overridden, 0) AS overridden, overridden_ids,
    coalesce(overridden_customers, 0) AS overridden_customers, clauses, evidence
FROM retrieved r LEFT JOIN overridden o ON r.article_id IS NOT DISTINCT FROM o.article_id
