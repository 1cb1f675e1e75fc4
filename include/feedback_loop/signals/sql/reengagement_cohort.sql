-- Conversations started on cohort days [$first, $last] and whether the same customer came back on the same
-- intent within $reengagement_days.
CREATE OR REPLACE TEMP TABLE {{table}} AS
SELECT c.*, EXISTS (SELECT 1 FROM conv_dims n WHERE n.customer_id = c.customer_id
            AND n.d_intent = c.d_intent AND c.d_intent <> 'unknown' AND n.conversation_id <> c.conversation_id
            AND n.started_at > c.started_at AND n.started_at <= c.started_at + to_days($reengagement_days)) AS came_back
FROM conv_dims c WHERE c.started_at::DATE BETWEEN $first::DATE AND $last::DATE
