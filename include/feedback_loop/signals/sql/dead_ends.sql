-- A subquery (no statement): per conversation, whether a step's key was already seen in the same progress
-- segment (segments are cut by every executed action): the same KB query, the same proposed action, an
-- intent classified again.
(SELECT conversation_id, bool_or(repeat) AS dead_end FROM (
    SELECT conversation_id, row_number() OVER (PARTITION BY conversation_id, seg, step_key
                                               ORDER BY ts, _row_id) > 1 AS repeat
    FROM (SELECT conversation_id, ts, _row_id, event_type,
            sum((event_type = 'action_executed')::INT) OVER (PARTITION BY conversation_id
                ORDER BY ts, _row_id ROWS UNBOUNDED PRECEDING) AS seg,
            CASE event_type WHEN 'kb_query' THEN 'kb:' || lower(trim(kb_query))
                            WHEN 'action_proposed' THEN 'action:' || action
                            WHEN 'intent_classified' THEN 'intent' END AS step_key
          FROM events WHERE event_type IN ('kb_query', 'action_proposed', 'intent_classified',
                                           'action_executed'))
    WHERE step_key IS NOT NULL) GROUP BY conversation_id)
