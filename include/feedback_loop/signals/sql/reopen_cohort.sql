-- Resolutions of cohort days [$first, $last] and whether each was reopened within 24 h: every
-- (case, resolved_at) any exported state shows, plus the resolutions a daily "last state" export hides (a
-- reopen with no resolution exported since the previous reopen was resolved and reopened within the same
-- export day, so less than 24 h before the reopen). <case_states>: the cases view, or its rows of the kept
-- cases (signal_keys.sql: every reopen cohort case is one), read once for both purposes.
CREATE OR REPLACE TEMP TABLE {{table}} AS
SELECT u.*, k.conversation_id, d.d_intent, coalesce(k.channel, d.d_channel) AS d_channel,
    d.d_strategy, d.d_mode
FROM (WITH -- A cohort row is one case's resolution or reopen dated in [$first, $last] and depends on that case's
           -- states only: the window's other cases (a month of them) are not read further.
           ours AS (SELECT DISTINCT case_id FROM {{case_states}}
                    WHERE resolved_at::DATE BETWEEN $first::DATE AND $last::DATE
                       OR last_reopened_at::DATE BETWEEN $first::DATE AND $last::DATE),
           res AS (SELECT DISTINCT case_id, resolved_at FROM {{case_states}}
                   WHERE resolved_at IS NOT NULL AND case_id IN (SELECT case_id FROM ours)),
           reo AS (SELECT case_id, t, lag(t) OVER (PARTITION BY case_id ORDER BY t) AS prev_t
                   FROM (SELECT DISTINCT case_id, last_reopened_at AS t FROM {{case_states}}
                         WHERE last_reopened_at IS NOT NULL AND case_id IN (SELECT case_id FROM ours)))
      SELECT case_id, resolved_at AS cohort_ts, case_id || '@' || strftime(resolved_at, '%Y-%m-%dT%H:%M:%S') AS unit,
          EXISTS (SELECT 1 FROM reo WHERE reo.case_id = res.case_id AND reo.t > res.resolved_at
                  AND reo.t <= res.resolved_at + INTERVAL 24 HOUR) AS reopened
      FROM res
      UNION ALL
      SELECT case_id, t, case_id || '@before:' || strftime(t, '%Y-%m-%dT%H:%M:%S'), true FROM reo
      WHERE NOT EXISTS (SELECT 1 FROM res WHERE res.case_id = reo.case_id AND res.resolved_at < reo.t
                        AND (reo.prev_t IS NULL OR res.resolved_at > reo.prev_t))) u
JOIN case_now k USING (case_id) JOIN conv_dims d ON d.conversation_id = k.conversation_id
WHERE u.cohort_ts::DATE BETWEEN $first::DATE AND $last::DATE
