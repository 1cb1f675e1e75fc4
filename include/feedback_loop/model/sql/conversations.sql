-- One row per conversation of the day's events (view `ev`). <bucket>: empty, or a WHERE clause that keeps
-- one bucket of conversations (hash of the id; the bucket's numbers are bound parameters).
SELECT conversation_id,
    max(customer_id) AS customer_id,
    max(case_id) AS case_id,
    min(ts) AS started_at, max(ts) AS ended_at,
    count(*) AS n_events,
    max(turn) + 1 AS n_turns,
    count(*) FILTER (event_type = 'customer_message') AS n_customer_messages,
    arg_min(text, (ts, _row_id)) FILTER (event_type = 'customer_message') AS first_customer_text,
    list(intent ORDER BY ts, _row_id) FILTER (event_type = 'intent_classified') AS intent_path,
    arg_min(intent, (ts, _row_id)) FILTER (event_type = 'intent_classified') AS first_intent,
    arg_max(intent, (ts, _row_id)) FILTER (event_type = 'intent_classified') AS final_intent,
    arg_max(confidence, (ts, _row_id)) FILTER (event_type = 'intent_classified') AS final_confidence,
    min(confidence) FILTER (event_type = 'intent_classified') AS min_confidence,
    count(*) FILTER (event_type = 'kb_query') AS n_kb_queries,
    count(*) FILTER (event_type = 'kb_query' AND coalesce(len(kb_results), 0) = 0) AS n_kb_empty,
    max(list_max(list_transform(kb_results, lambda r: r.score))) AS kb_max_score,
    -- Every article any KB search returned, sorted, NULL for none: from the result lists themselves.
    nullif(list_sort(list_distinct(flatten(list(list_transform(kb_results, lambda r: r.article_id))
        FILTER (len(kb_results) > 0)))), []) AS kb_articles,
    count(*) FILTER (policy_outcome = 'pass') AS n_policy_pass,
    count(*) FILTER (policy_outcome = 'fail') AS n_policy_fail,
    count(*) FILTER (policy_outcome = 'waived') AS n_policy_waived,
    list(DISTINCT policy_id ORDER BY policy_id) FILTER (policy_id IS NOT NULL) AS policy_ids,
    list(action ORDER BY ts, _row_id) FILTER (event_type = 'action_executed') AS actions_executed,
    count(*) FILTER (event_type = 'action_proposed') AS n_actions_proposed,
    count(*) FILTER (event_type = 'agent_response') AS n_agent_responses,
    count(*) FILTER (event_type = 'suggestion_shown') AS n_suggestions_shown,
    count(*) FILTER (event_type = 'suggestion_dismissed') AS n_suggestions_dismissed,
    count(*) FILTER (event_type = 'link_clicked') AS n_links_clicked,
    count(*) FILTER (event_type = 'thumbs' AND rating = 1) AS n_thumbs_up,
    count(*) FILTER (event_type = 'thumbs' AND rating = -1) AS n_thumbs_down,
    count(*) FILTER (event_type = 'escalated') > 0 AS agent_escalated,
    count(*) FILTER (event_type = 'fallback') AS n_fallbacks,
    count(*) FILTER (event_type = 'error') AS n_errors,
    max(strategy) AS strategy,
    max(mode) AS mode,
    max(model) AS model,
    coalesce(sum(input_tokens), 0) AS input_tokens,
    coalesce(sum(output_tokens), 0) AS output_tokens,
    -- <cost_sum>, <latency_sum>: lake.sql.exact_sum (pico-dollars, nanoseconds as decimals, which add
    -- exactly in any order: re-running a day gives the same bits).
    coalesce({{cost_sum}}, 0) AS cost_usd,
    coalesce({{latency_sum}}, 0) AS latency_ms_total
-- One row per event: every count and sum above is per event. (Until 2026-12-06 the KB results were
-- unnested here, one row per result, which counted a search with n results n times in n_events,
-- n_kb_queries and its tokens, cost and latency.)
FROM ev
{{bucket}}
GROUP BY conversation_id
