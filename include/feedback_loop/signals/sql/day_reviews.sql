-- Reviews (override-log rows) exported on days [$first, $last] with the conversation's dimensions.
CREATE OR REPLACE TEMP TABLE {{table}} AS
SELECT r.*, coalesce(d.d_intent, 'unknown') AS d_intent, coalesce(d.d_channel, 'none') AS d_channel,
    coalesce(d.d_strategy, 'none') AS d_strategy, coalesce(d.d_mode, 'unknown') AS d_mode
FROM reviews r LEFT JOIN conv_dims d USING (conversation_id)
WHERE r.dt BETWEEN $first::DATE AND $last::DATE
