-- Per conversation of the day: agent steps, distinct actions proposed and executed with a success status.
-- Parameters: day, agent_steps (list), success_statuses (list).
CREATE OR REPLACE TEMP TABLE {{table}} AS
SELECT conversation_id, any_value(d_intent) AS d_intent, any_value(d_channel) AS d_channel,
    any_value(d_strategy) AS d_strategy, any_value(d_mode) AS d_mode, any_value(resolved) AS resolved,
    $day::DATE AS dt,
    count(*) FILTER (list_contains($agent_steps, event_type)) AS n_steps,
    count(DISTINCT action) FILTER (event_type = 'action_proposed') AS n_proposed,
    count(DISTINCT action) FILTER (event_type = 'action_executed'
                                   AND list_contains($success_statuses, lower(action_status))) AS n_done
FROM {{events}} GROUP BY conversation_id
