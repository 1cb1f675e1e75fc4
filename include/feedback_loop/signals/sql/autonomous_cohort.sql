-- Live conversations of the review cohort <cohort> with a case by the end of the window: the case's last
-- state before the window ended, and whether a human corrected or escalated the conversation before it.
CREATE OR REPLACE TEMP TABLE {{table}} AS
SELECT c.*, st.status, st.resolved_by, st.reopen_count, st.escalated AS case_escalated,
    EXISTS (SELECT 1 FROM reviews v WHERE v.conversation_id = c.conversation_id
            AND v.outcome IN ('corrected', 'escalated') AND v.ts < c.window_end) AS human_touch
FROM {{cohort}} c LEFT JOIN (
    SELECT c2.conversation_id, k.* EXCLUDE (conversation_id) FROM {{cohort}} c2
    JOIN cases k ON k.case_id = c2.case_id AND k.updated_at < c2.window_end
    QUALIFY row_number() OVER (PARTITION BY c2.conversation_id ORDER BY k.updated_at DESC, k.dt DESC, k._row_id DESC) = 1
) st USING (conversation_id) WHERE c.d_mode = 'live' AND st.case_id IS NOT NULL
