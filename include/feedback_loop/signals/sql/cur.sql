-- `cur`: every metric of this run (cur0: by day and scope) with its definition, and whether the value is
-- final (its window and the lateness allowance have passed by $day) and current (the cohort that became
-- final today, or the day itself).
CREATE TEMP TABLE cur AS
SELECT c.*, d.kind, d.matrix_signal, d.window_name, d.window_days, d.higher_is_better,
    c.metric_date + d.final_lag <= $day::DATE AS is_final,
    c.metric_date = $day::DATE - d.final_lag AS is_current
FROM cur0 c JOIN defs d USING (metric)
WHERE c.value IS NOT NULL
