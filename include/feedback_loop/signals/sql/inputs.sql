-- Per-conversation tables every metric family reads (no values: the views facts, cases, ovr_* are the
-- partitions of the run's window, created by inputs.load_inputs).

-- The latest state of every case in the window.
CREATE TEMP TABLE case_now AS
SELECT * FROM cases
QUALIFY row_number() OVER (PARTITION BY case_id ORDER BY updated_at DESC, dt DESC, _row_id DESC) = 1;

-- One row per conversation over every fact day read: the dimensions of its first fact row (the
-- conversation as the agent first saw it), with the latest known channel.
CREATE TEMP TABLE conv_dims AS
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
link AS (SELECT conversation_id, min(case_id) AS case_id FROM case_now
         WHERE conversation_id IS NOT NULL GROUP BY 1)
SELECT f.* EXCLUDE (case_id, intent, channel, strategy, mode),
    coalesce(f.case_id, link.case_id) AS case_id,
    coalesce(f.intent, 'unknown') AS d_intent, coalesce(f.channel, k.channel, 'none') AS d_channel,
    coalesce(f.strategy, 'none') AS d_strategy, coalesce(f.mode, 'unknown') AS d_mode
FROM f LEFT JOIN link USING (conversation_id)
LEFT JOIN case_now k ON k.case_id = coalesce(f.case_id, link.case_id);

-- Every review: staged rows, plus corrections quarantined only for an incomplete triad (they happened,
-- they just cannot serve as labels).
CREATE TEMP TABLE reviews AS
SELECT override_id, ts, conversation_id, stage, outcome, dt, true AS triad_complete FROM ovr_staged
UNION ALL
SELECT override_id, ts, conversation_id, stage, outcome, dt, false FROM ovr_quarantined
WHERE quarantine_reason = 'incomplete_triad';
