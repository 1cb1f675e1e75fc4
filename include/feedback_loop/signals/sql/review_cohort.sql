-- Conversations started on cohort days [$first, $last] with the end of their review window: $review_days
-- after the end of the conversation's day (UTC).
CREATE OR REPLACE TEMP TABLE {{table}} AS
SELECT c.*, (c.started_at::DATE + ($review_days + 1)::INTEGER)::TIMESTAMPTZ AS window_end FROM conv_dims c
WHERE c.started_at::DATE BETWEEN $first::DATE AND $last::DATE
