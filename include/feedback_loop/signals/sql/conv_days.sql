-- The fact rows of days [$first, $last] with dimensions, the repeat-contact flag and the cost model.
-- <table>: <purpose>_conv. Parameters: first, last, reengagement_days, cost_input_per_1k,
-- cost_output_per_1k, cost_human_per_hour, cost_review.
CREATE OR REPLACE TEMP TABLE {{table}} AS
SELECT f.*, d.d_intent, coalesce(f.channel, d.d_channel) AS d_channel, d.d_strategy, d.d_mode,
    CASE WHEN f.resolved_by = 'ai' AND NOT coalesce(f.escalated, false) AND f.n_corrections = 0
         THEN 'autonomous' ELSE 'human' END AS handled_by,
    CASE WHEN f.cost_usd > 0 THEN f.cost_usd
         ELSE f.input_tokens / 1000.0 * $cost_input_per_1k + f.output_tokens / 1000.0 * $cost_output_per_1k END
    + CASE WHEN (CASE WHEN f.resolved_by = 'ai' AND NOT coalesce(f.escalated, false) AND f.n_corrections = 0
                      THEN 'autonomous' ELSE 'human' END) = 'human'
           THEN coalesce(f.handle_time_s, 0) / 3600.0 * $cost_human_per_hour ELSE 0 END
    + f.n_overrides * $cost_review AS total_cost_usd,
    EXISTS (SELECT 1 FROM conv_dims o WHERE o.customer_id = d.customer_id AND o.d_intent = d.d_intent
            AND d.d_intent <> 'unknown' AND o.conversation_id <> d.conversation_id
            AND o.started_at < d.started_at
            AND o.started_at >= d.started_at - to_days($reengagement_days)) AS repeat_contact
FROM facts f JOIN conv_dims d USING (conversation_id)
WHERE f.dt BETWEEN $first::DATE AND $last::DATE
