-- The day's events with the columns the event metrics read (the events' text, JSON and ids would fill
-- memory) and their conversation's dimensions. kb_weak: a KB query whose best score is below $kb_low_score.
CREATE OR REPLACE TEMP TABLE {{table}} AS
SELECT e.event_id, e.ts, e.conversation_id, e.event_type, e.text, e.action, e.action_status, e.dwell_ms,
    e.latency_ms, e.kb_results, e._row_id, e.dt, c.d_intent, c.d_channel, c.d_strategy, c.d_mode, c.resolved,
    coalesce(list_max(list_transform(e.kb_results, lambda r: r.score)), 0) < $kb_low_score AS kb_weak
FROM events e JOIN {{conv}} c USING (conversation_id)
