-- The conversations and cases whose per-conversation rows (inputs.sql) tonight's metric families can read.
-- The facts and cases views hold ~50 days so that a conversation's first fact row and a case's latest state
-- are found however old; the families read few of them: fact rows of the day and of the A/B window,
-- cohorts of their last $cohort_first.. days, the same customer's conversations shortly before (repeat
-- contact), and conversations and cases named by tonight's surveys, reviews, checks and reopen cohorts.
-- Every key set below is a superset of what one family joins or filters on, and inputs.sql aggregates all
-- rows of every kept key: the rows the families see are the same, for far fewer keys (a month of history
-- at 2 M events a day: every case state and conversation of the window was grouped every night).
-- Parameters: days_first (the earliest day whose fact rows are read), cohort_first and reopen_first (the
-- earliest cohort day of any windowed family, of the reopen cohorts; run or A/B), reengagement_days.

-- One statement (DuckDB binds parameters to the last statement of a script only): kind 'case' or
-- 'conversation', and the key.
CREATE OR REPLACE TEMP TABLE signal_keys AS
WITH
-- Cases: tonight's surveys and checks, and every case with a resolution or a reopen dated in a reopen cohort
-- day (the reopen cohorts' `ours`).
key_cases AS MATERIALIZED (
    SELECT case_id FROM surveys WHERE case_id IS NOT NULL
    UNION SELECT case_id FROM checks WHERE case_id IS NOT NULL
    UNION SELECT case_id FROM cases
    WHERE case_id IS NOT NULL
      AND (resolved_at::DATE >= $reopen_first::DATE OR last_reopened_at::DATE >= $reopen_first::DATE)),
-- Conversations: with a fact row of the days read (day metrics, A/B pooling, A/B traffic; `since` covers
-- those that have a start, the day covers a row without one); with a fact row
-- started on or after the earliest start any family filters on (a conversation's start is the minimum of
-- its rows', so all of a cohort conversation's rows qualify): the cohorts' first day, or for repeat contact
-- $reengagement_days before the earliest start of the conversations of the days read; named by a review or
-- a survey; on a state of a key case (the case's latest state names one of them).
since AS (
    SELECT least($cohort_first::DATE,
                 coalesce((min(started_at) - to_days($reengagement_days::INTEGER))::DATE, $cohort_first::DATE)) AS d
    FROM facts WHERE conversation_id IN (SELECT conversation_id FROM facts WHERE dt >= $days_first::DATE)),
conversations AS MATERIALIZED (
    SELECT conversation_id FROM facts
    WHERE conversation_id IS NOT NULL
      AND (dt >= $days_first::DATE OR started_at::DATE >= (SELECT d FROM since))
    UNION SELECT conversation_id FROM ovr_staged WHERE conversation_id IS NOT NULL
    UNION SELECT conversation_id FROM ovr_quarantined WHERE conversation_id IS NOT NULL
    UNION SELECT conversation_id FROM surveys WHERE conversation_id IS NOT NULL
    UNION SELECT conversation_id FROM cases
    WHERE conversation_id IS NOT NULL AND case_id IN (SELECT case_id FROM key_cases)),
-- Cases whose latest state is read: the key cases; for the kept conversations whose facts lack a case or a
-- channel on some row (the aggregate's is NULL only then), the cases their facts name (a channel read) and
-- the cases with a state on them (a case linked); the cases named by fact rows without a conversation.
unlinked AS MATERIALIZED (
    SELECT DISTINCT conversation_id FROM facts
    WHERE (case_id IS NULL OR channel IS NULL) AND conversation_id IN (SELECT conversation_id FROM conversations)),
cases_read AS (
    SELECT case_id FROM key_cases
    UNION SELECT case_id FROM facts
    WHERE case_id IS NOT NULL
      AND (conversation_id IS NULL OR conversation_id IN (SELECT conversation_id FROM unlinked))
    UNION SELECT case_id FROM cases
    WHERE case_id IS NOT NULL AND conversation_id IN (SELECT conversation_id FROM unlinked))
SELECT 'conversation' AS kind, conversation_id AS key FROM conversations
UNION ALL
SELECT 'case', case_id FROM cases_read;
