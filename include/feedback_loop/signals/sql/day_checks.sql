-- Outcome checks exported on days [$first, $last] with their case's conversation and its dimensions.
CREATE OR REPLACE TEMP TABLE {{table}} AS
SELECT c.*, k.conversation_id, coalesce(d.d_intent, 'unknown') AS d_intent,
    coalesce(k.channel, d.d_channel, 'none') AS d_channel, coalesce(d.d_strategy, 'none') AS d_strategy,
    coalesce(d.d_mode, 'unknown') AS d_mode
FROM checks c LEFT JOIN case_now k USING (case_id) LEFT JOIN conv_dims d ON d.conversation_id = k.conversation_id
WHERE c.dt BETWEEN $first::DATE AND $last::DATE
