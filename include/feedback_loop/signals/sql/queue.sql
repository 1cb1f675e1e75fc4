-- `queue`: one improvement action per kept row, routed to its component (the routes table overrides the
-- metric's own for some breakdowns), with its evidence; an action raised yesterday too keeps its first
-- day (<previous>: yesterday's queue, or an empty SELECT). Parameter: day.
CREATE TEMP TABLE queue AS
SELECT k.action_id, k.metric_date, k.metric AS signal, k.matrix_signal, k.kind,
    k.dimension AS scope_dimension, k.dimension_value AS scope_value, k.trigger,
    k.value, k.threshold, k.baseline_value, k.change, k.change_rel, k.z_score, k.level_value, k.level_days,
    k.sample_size, k.level_sample_size, k.baseline_days, k.numerator, k.denominator, k.window_name, k.is_final,
    coalesce(e.example_conversation_ids, []::VARCHAR[]) AS example_conversation_ids,
    to_json({'value': k.value, 'numerator': k.numerator, 'denominator': k.denominator,
              'sample_size': k.sample_size, 'baseline_value': k.baseline_value,
              'baseline_days': k.baseline_days, 'baseline_sample_size': k.baseline_sample_size,
              'change': k.change, 'z_score': k.z_score, 'level_value': k.level_value,
              'level_days': k.level_days, 'level_sample_size': k.level_sample_size,
              'threshold': k.threshold, 'window': k.window_name,
              'example_conversation_ids': coalesce(e.example_conversation_ids, []::VARCHAR[])})::VARCHAR
        AS evidence,
    coalesce(rt.component, d.component) AS target_component,
    coalesce(rt.improvement_action, d.improvement_action) AS improvement_action,
    round(k.severity, 6) AS severity,
    coalesce(pq.first_raised_date, $day::DATE) AS first_raised_date,
    ($day::DATE - coalesce(pq.first_raised_date, $day::DATE)) + 1 AS days_open,
    'open' AS status
FROM kept k JOIN defs d USING (metric)
LEFT JOIN routes rt ON rt.metric = k.metric AND rt.dimension = k.dimension AND rt.dimension_value = k.dimension_value
LEFT JOIN examples e USING (action_id)
LEFT JOIN ({{previous}}) pq USING (action_id)
