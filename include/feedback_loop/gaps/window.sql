-- One row per conversation of the current and the previous gap window, with its evidence signals and
-- weight (docs/gaps.md, "Gap signals"). Reads the temp views facts, ovr, cases and surveys that
-- gaps/window.py creates over the lake; every value is a bound parameter. Unordered: every reader of
-- `conv` orders what it fetches (conversation_id is unique in it).
CREATE OR REPLACE TEMP TABLE conv AS
-- `kept` is read by the joined rows and by the narrow re-engagement rows: inlined, never materialised
-- (a copy of 11 M wide rows on a steady lake), so each reader scans only the columns it uses.
WITH kept AS NOT MATERIALIZED (
    SELECT * FROM facts
    WHERE conversation_id IS NOT NULL
      AND ($sample_cut >= 1000000 OR hash(conversation_id) % 1000000 < $sample_cut)
),
-- The latest fact row of each conversation. Only a conversation active on several days has more than one
-- (about one in a hundred): ranking every row of both windows by conversation was, with the fetch of the
-- winners' wide rows it took (DuckDB's late materialisation), the query's largest cost on a steady lake (30
-- of its 100 s of CPU at 2 M events a day). Now a narrow count finds those conversations and only their rows
-- are ranked.
dup AS (
    SELECT conversation_id FROM kept GROUP BY conversation_id HAVING count(*) > 1
),
f AS NOT MATERIALIZED (
    SELECT * FROM kept WHERE conversation_id NOT IN (SELECT conversation_id FROM dup)
    UNION ALL
    SELECT * FROM kept WHERE conversation_id IN (SELECT conversation_id FROM dup)
    QUALIFY row_number() OVER (PARTITION BY conversation_id ORDER BY fact_date DESC) = 1
),
o AS (
    SELECT conversation_id,
        bool_or(outcome <> 'approved' AND regexp_matches(
            lower(replace(concat_ws(' ', rationale, evidence, policy_clause_id), '_', ' ')), $knowledge)) AS override_knowledge,
        count(*) FILTER (outcome <> 'approved') AS n_overrides_failed,
        list(DISTINCT policy_clause_id ORDER BY policy_clause_id)
            FILTER (policy_clause_id IS NOT NULL AND outcome <> 'approved') AS override_clauses
    FROM ovr GROUP BY conversation_id
),
-- The latest state of the cases the window's conversations name (the lookback's other cases are not read:
-- grouping all of them was the query's largest operator on a steady lake).
c AS (
    SELECT case_id, arg_max(escalated, updated_at) AS escalated, arg_max(escalation_reason, updated_at) AS escalation_reason,
        max(reopen_count) AS reopen_count, arg_max(handle_time_s, updated_at) AS handle_time_s
    FROM cases WHERE case_id IN (SELECT case_id FROM facts WHERE conversation_id IS NOT NULL AND case_id IS NOT NULL)
    GROUP BY case_id
),
s AS (
    SELECT case_id, arg_max(score, submitted_at) FILTER (kind = 'csat') AS csat FROM surveys GROUP BY case_id
),
j AS (
    SELECT f.conversation_id, f.customer_id, f.fact_date, f.started_at,
        f.first_customer_text AS text, f.final_intent, coalesce(f.final_confidence, 0.0) AS final_confidence,
        f.human_intent, f.human_category, coalesce(f.kb_articles, []) AS kb_articles, f.kb_max_score,
        coalesce(f.n_kb_queries, 0) AS n_kb_queries, coalesce(f.n_kb_empty, 0) AS n_kb_empty,
        coalesce(c.escalated, f.escalated, false) OR coalesce(f.escalated, false) AS escalated,
        coalesce(c.escalation_reason, f.escalation_reason) AS escalation_reason,
        greatest(coalesce(c.reopen_count, 0), coalesce(f.reopen_count, 0)) AS reopen_count,
        coalesce(s.csat, f.csat) AS csat, coalesce(c.handle_time_s, f.handle_time_s, 0.0) AS handle_time_s,
        coalesce(f.n_thumbs_down, 0) AS n_thumbs_down,
        coalesce(o.override_knowledge, false) AS override_knowledge,
        coalesce(o.n_overrides_failed, 0) AS n_overrides_failed,
        coalesce(o.override_clauses, f.override_policy_clauses, []) AS override_clauses
    FROM f
    LEFT JOIN o ON o.conversation_id = f.conversation_id
    LEFT JOIN c ON c.case_id = f.case_id
    LEFT JOIN s ON s.case_id = f.case_id
),
-- Re-engagement: the next conversation of the same customer and intent starts within $reengage_days. The
-- window that finds it sorted every conversation of both windows with all its columns (the query's largest
-- operator, spilling); it now runs on narrow rows, and only for the (customer, intent) keys with more than
-- one fact row (a conversation alone in its key has no next one): `multi` counts keys over every fact row,
-- a superset of the latest rows' counts, by hash (a collision only adds a key to the window's input). The
-- latest rows (`f`) of the conversations with any row of such a key (the latest row's key is one of them).
multi AS (
    SELECT hash(customer_id, coalesce(human_intent, final_intent)) AS h FROM kept GROUP BY h HAVING count(*) > 1
),
multi_latest AS (
    SELECT conversation_id, customer_id, human_intent, final_intent, started_at FROM f
    WHERE conversation_id IN (SELECT conversation_id FROM kept
                              WHERE hash(customer_id, coalesce(human_intent, final_intent)) IN (SELECT h FROM multi))
),
back AS (
    SELECT conversation_id FROM (
        SELECT conversation_id, started_at, lead(started_at) OVER (
            PARTITION BY customer_id, coalesce(human_intent, final_intent) ORDER BY started_at, conversation_id) AS next_start
        FROM multi_latest WHERE hash(customer_id, coalesce(human_intent, final_intent)) IN (SELECT h FROM multi))
    WHERE next_start - started_at <= to_days(CAST($reengage_days AS INTEGER))
),
r AS (
    SELECT j.*, b.conversation_id IS NOT NULL AS reengaged FROM j LEFT JOIN back b ON b.conversation_id = j.conversation_id
),
g AS (
    SELECT *,
        n_kb_empty > 0 AS sig_kb_empty,
        n_kb_empty = 0 AND n_kb_queries > 0 AND coalesce(kb_max_score, 0) < $low_kb_score AS sig_kb_low,
        escalated AND regexp_matches(lower(replace(coalesce(escalation_reason, ''), '_', ' ')), $knowledge) AS sig_escalation_knowledge,
        escalated AND NOT regexp_matches(lower(replace(coalesce(escalation_reason, ''), '_', ' ')), $knowledge) AS sig_escalation_other,
        override_knowledge AS sig_override_knowledge,
        n_overrides_failed > 0 AND NOT override_knowledge AS sig_override_other,
        reopen_count > 0 AS sig_reopen,
        reengaged AS sig_reengaged,
        coalesce(csat <= 2, false) AS sig_low_csat,
        n_thumbs_down > 0 AS sig_thumbs_down
    FROM r
)
SELECT *,
    fact_date >= CAST($start AS DATE) AS in_window,
    sig_kb_empty::INT * $w_kb_empty + sig_kb_low::INT * $w_kb_low
    + sig_escalation_knowledge::INT * $w_escalation_knowledge + sig_escalation_other::INT * $w_escalation_other
    + sig_override_knowledge::INT * $w_override_knowledge + sig_override_other::INT * $w_override_other
    + sig_reopen::INT * $w_reopen + sig_reengaged::INT * $w_reengaged
    + sig_low_csat::INT * $w_low_csat + sig_thumbs_down::INT * $w_thumbs_down AS weight
FROM g
