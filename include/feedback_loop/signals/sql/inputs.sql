-- Per-conversation tables every metric family reads (no values: the views facts, cases, ovr_* are the
-- partitions of the run's window, created by inputs.load_inputs). {{facts}} and {{cases}}: those views, or
-- their rows of the keys signal_keys.sql found (every row of a kept key, so its aggregate is the same).

-- The latest state of every case in the window: the columns the metric families read of it (a month of
-- case states sorted with all their columns was most of a steady night's signals stage at 2 M events).
CREATE TEMP TABLE case_now AS
SELECT case_id, conversation_id, channel FROM {{cases}}
QUALIFY row_number() OVER (PARTITION BY case_id ORDER BY updated_at DESC, dt DESC, _row_id DESC) = 1;

-- One row per conversation over every fact day read: the dimensions of its first fact row (the
-- conversation as the agent first saw it), with the latest known channel.
-- A conversation has one fact row per day it was active, nearly always one: those rows are taken as they are
-- (what the aggregate gives for a single row, with its types), and only the conversations with several
-- rows are aggregated. Aggregating every conversation of the window (~11 M at 2 M events a day, a dozen
-- states each) was most of a steady night's signals stage, and counting rows per conversation is a fraction.
CREATE TEMP TABLE conv_dims AS
WITH kept AS (SELECT * FROM {{facts}}),
multi AS (SELECT conversation_id FROM kept WHERE conversation_id IS NOT NULL
               GROUP BY conversation_id HAVING count(*) > 1),
f AS (
    SELECT conversation_id,
        arg_min(customer_id, dt) AS customer_id, arg_min(case_id, dt) AS case_id,
        min(started_at) AS started_at, max(ended_at) AS ended_at, min(dt) AS first_fact_date,
        arg_min(final_intent, dt) AS intent, arg_max(channel, dt) AS channel,
        arg_min(strategy, dt) AS strategy, arg_min(mode, dt) AS mode,
        bool_or(agent_escalated) AS agent_escalated,
        sum(n_policy_pass + n_policy_fail + n_policy_waived) AS n_policy_checks,
        sum(n_policy_fail + n_policy_waived) AS n_policy_flags
    FROM kept WHERE conversation_id IN (SELECT conversation_id FROM multi) OR conversation_id IS NULL
    GROUP BY conversation_id
    UNION ALL
    SELECT conversation_id, customer_id, case_id, started_at, ended_at, dt AS first_fact_date,
        final_intent AS intent, channel, strategy, mode, agent_escalated,
        (n_policy_pass + n_policy_fail + n_policy_waived)::HUGEINT AS n_policy_checks,
        (n_policy_fail + n_policy_waived)::HUGEINT AS n_policy_flags
    FROM kept WHERE conversation_id NOT IN (SELECT conversation_id FROM multi)),
-- A conversation's case is linked through case_now only when its facts have none, and the case's channel
-- read only when its facts have no channel: the lookups are built for those conversations and cases, not
-- for every case of the window.
link AS (SELECT conversation_id, min(case_id) AS case_id FROM case_now
         WHERE conversation_id IS NOT NULL
           AND conversation_id IN (SELECT conversation_id FROM f WHERE case_id IS NULL) GROUP BY 1),
g AS (SELECT f.*, coalesce(f.case_id, link.case_id) AS linked FROM f LEFT JOIN link USING (conversation_id)),
k AS (SELECT case_id, channel FROM case_now WHERE case_id IN (SELECT linked FROM g WHERE channel IS NULL))
SELECT g.* EXCLUDE (case_id, intent, channel, strategy, mode, linked),
    g.linked AS case_id,
    coalesce(g.intent, 'unknown') AS d_intent, coalesce(g.channel, k.channel, 'none') AS d_channel,
    coalesce(g.strategy, 'none') AS d_strategy, coalesce(g.mode, 'unknown') AS d_mode
FROM g LEFT JOIN k ON k.case_id = g.linked;

-- Every review: staged rows, plus corrections quarantined only for an incomplete triad (they happened,
-- they just cannot serve as labels).
CREATE TEMP TABLE reviews AS
SELECT override_id, ts, conversation_id, stage, outcome, dt, true AS triad_complete FROM ovr_staged
UNION ALL
SELECT override_id, ts, conversation_id, stage, outcome, dt, false FROM ovr_quarantined
WHERE quarantine_reason = 'incomplete_triad';
