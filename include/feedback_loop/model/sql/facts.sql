-- marts/conversation_facts: each conversation of the day (<conversations>: the aggregate of
-- conversations.sql, or its buckets' table) with its case's latest state, its surveys, overrides and
-- outcome checks exported up to the day. Parameter: day.
WITH conv AS ({{conversations}}),
-- The lookback window's rows are read for the day's own cases and conversations only (a superset of
-- conv's: its case is one of its events'): a month of case states is ~30x the day's, and ranking and
-- grouping all of it made a 2 M-event day's facts ~70x slower once 30 days were there. The rank is
-- only compared within a case, so ranking the day's cases alone keeps every case's order.
day_cases AS (SELECT DISTINCT case_id FROM ev WHERE case_id IS NOT NULL),
day_conversations AS (SELECT DISTINCT conversation_id FROM ev),
case_state AS (
    -- Each column's value on the latest state where it is not null (arg_max skips null values). The
    -- order (updated_at, dt, _row_id) is unique, so its rank is an exact scalar stand-in for that
    -- struct key: arg_max over a struct key costs ~20 us a row (9 s of CPU at 423,341 states).
    SELECT case_id, arg_max(COLUMNS(* EXCLUDE (case_id, _state_rank)), _state_rank)
    FROM (SELECT *, row_number() OVER (ORDER BY updated_at NULLS LAST, dt NULLS LAST, _row_id NULLS LAST)
              AS _state_rank FROM cases WHERE case_id IN (SELECT case_id FROM day_cases))
    GROUP BY case_id
),
case_states AS (SELECT case_id, count(*) AS n_case_states FROM cases
                WHERE case_id IN (SELECT case_id FROM day_cases) GROUP BY case_id),
srv AS (
    SELECT case_id,
        arg_max(score, (submitted_at, survey_id)) FILTER (kind = 'csat') AS csat,
        arg_max(score, (submitted_at, survey_id)) FILTER (kind = 'ces') AS ces,
        count(*) AS n_surveys
    FROM surveys WHERE case_id IN (SELECT case_id FROM day_cases) GROUP BY case_id
),
ovr AS (
    SELECT conversation_id,
        count(*) AS n_overrides,
        count(*) FILTER (outcome = 'corrected') AS n_corrections,
        list(DISTINCT stage ORDER BY stage) AS override_stages,
        arg_max(human_decision, (ts, override_id)) FILTER (stage = 'intent' AND outcome = 'corrected') AS human_intent,
        list(DISTINCT policy_clause_id ORDER BY policy_clause_id) FILTER (policy_clause_id IS NOT NULL) AS override_policy_clauses
    FROM overrides WHERE conversation_id IN (SELECT conversation_id FROM day_conversations) GROUP BY conversation_id
),
chk AS (
    SELECT case_id, count(*) AS n_outcome_checks, count(*) FILTER (verified) AS n_outcome_verified
    FROM checks WHERE case_id IN (SELECT case_id FROM day_cases) GROUP BY case_id
)
SELECT $day::DATE AS fact_date, conv.*,
    cs.channel, cs.status AS case_status, cs.created_at AS case_created_at, cs.resolved_at, cs.resolved_by,
    coalesce(cs.escalated, false) OR conv.agent_escalated AS escalated, cs.escalation_reason,
    coalesce(cs.reopen_count, 0) AS reopen_count, cs.last_reopened_at, cs.handle_time_s,
    cs.category AS human_category, coalesce(n.n_case_states, 0) AS n_case_states,
    srv.csat, srv.ces, coalesce(srv.n_surveys, 0) AS n_surveys,
    coalesce(ovr.n_overrides, 0) AS n_overrides, coalesce(ovr.n_corrections, 0) AS n_corrections,
    ovr.override_stages, ovr.human_intent, ovr.override_policy_clauses,
    coalesce(chk.n_outcome_checks, 0) AS n_outcome_checks, coalesce(chk.n_outcome_verified, 0) AS n_outcome_verified,
    cs.status IN ('solved', 'closed') AS resolved
FROM conv
LEFT JOIN case_state cs ON cs.case_id = conv.case_id
LEFT JOIN case_states n ON n.case_id = conv.case_id
LEFT JOIN srv ON srv.case_id = conv.case_id
LEFT JOIN ovr ON ovr.conversation_id = conv.conversation_id
LEFT JOIN chk ON chk.case_id = conv.case_id
ORDER BY conv.conversation_id
