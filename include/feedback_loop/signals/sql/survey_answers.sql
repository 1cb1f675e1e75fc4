-- Survey answers exported on days [$first, $last]: the latest answer per case and kind within an export,
-- with the conversation's dimensions. <table>: <purpose>_srv.
CREATE OR REPLACE TEMP TABLE {{table}} AS
SELECT s.*, coalesce(s.conversation_id, k.conversation_id) AS conv_id,
    coalesce(d.d_intent, 'unknown') AS d_intent, coalesce(k.channel, d.d_channel, 'none') AS d_channel,
    coalesce(d.d_strategy, 'none') AS d_strategy, coalesce(d.d_mode, 'unknown') AS d_mode
FROM (SELECT * FROM surveys WHERE dt BETWEEN $first::DATE AND $last::DATE
      QUALIFY row_number() OVER (PARTITION BY dt, case_id, kind ORDER BY submitted_at DESC, _row_id DESC) = 1) s
LEFT JOIN case_now k USING (case_id)
LEFT JOIN conv_dims d ON d.conversation_id = coalesce(s.conversation_id, k.conversation_id)
