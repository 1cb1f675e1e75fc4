-- marts/case_history: every case state exported on the day, with the state before it and its sequence
-- number over every state read (the lookback window). Parameter: day.
SELECT c.* EXCLUDE (dt, _row_id, _source_file, _line),
    lag(status) OVER w AS previous_status,
    row_number() OVER w AS state_seq,
    $day::DATE AS export_date
FROM cases c
-- Only the cases exported on the day (every state of them: a window partition is one case), not the
-- whole lookback window's.
WHERE c.case_id IN (SELECT case_id FROM cases WHERE dt = $day::DATE)
WINDOW w AS (PARTITION BY case_id ORDER BY updated_at, dt, _row_id)
QUALIFY export_date = c.dt
ORDER BY case_id, updated_at
