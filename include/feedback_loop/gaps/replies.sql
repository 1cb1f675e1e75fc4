-- The replies human agents gave after each escalation: agent_response events later than the
-- conversation's `escalated` event, for the conversations in the temp table draft_ids.
WITH e AS (
    SELECT conversation_id, ts, event_type, text
    FROM agent_events
    WHERE event_type IN ('escalated', 'agent_response') AND conversation_id IN (SELECT conversation_id FROM draft_ids)
),
h AS (SELECT conversation_id, min(ts) AS handed_over FROM e WHERE event_type = 'escalated' GROUP BY conversation_id)
SELECT e.conversation_id, list(e.text ORDER BY e.ts) AS replies
FROM e JOIN h ON h.conversation_id = e.conversation_id
WHERE e.event_type = 'agent_response' AND e.ts > h.handed_over AND e.text IS NOT NULL AND trim(e.text) <> ''
GROUP BY e.conversation_id
ORDER BY e.conversation_id
