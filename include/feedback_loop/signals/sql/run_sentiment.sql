-- Per conversation of the day: VADER compound of its customer messages (mean, first, last; sentiment
-- calls Python per message, so it is computed once for the three sentiment metrics). Parameter: day.
CREATE OR REPLACE TEMP TABLE {{table}} AS
SELECT conversation_id, any_value(d_intent) AS d_intent, any_value(d_channel) AS d_channel,
    any_value(d_strategy) AS d_strategy, any_value(d_mode) AS d_mode, $day::DATE AS dt,
    count(*) AS n_msgs, avg(s) AS s_mean, first(s ORDER BY ts, _row_id) AS s_first,
    last(s ORDER BY ts, _row_id) AS s_last
FROM (SELECT *, sentiment_compound(text) AS s FROM {{events}} WHERE event_type = 'customer_message')
WHERE s IS NOT NULL GROUP BY conversation_id
