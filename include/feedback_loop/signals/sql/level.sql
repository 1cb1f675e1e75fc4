-- `lvl`: the pooled level of the last $level_days final days up to the metric_date (what the level
-- thresholds are tested against), with its standard error.
CREATE TEMP TABLE lvl AS
SELECT c.metric, c.metric_date, c.dimension, c.dimension_value,
    count(b.metric) AS level_days, sum(b.sample_size) AS level_sample_size,
    CASE WHEN any_value(d.agg) = 'ratio' THEN sum(b.numerator ORDER BY b.metric_date) / nullif(sum(b.denominator ORDER BY b.metric_date), 0)
         ELSE avg(b.value ORDER BY b.metric_date) END AS level_value,
    sqrt(sum(power(b.std_error * b.denominator, 2) ORDER BY b.metric_date))
        / nullif(sum(b.denominator ORDER BY b.metric_date), 0) AS level_se_days
FROM cur c JOIN defs d USING (metric)
LEFT JOIN known b ON b.metric = c.metric AND b.dimension = c.dimension AND b.dimension_value = c.dimension_value
    AND b.is_final AND b.metric_date BETWEEN c.metric_date - ($level_days::INTEGER - 1) AND c.metric_date
-- Sums of doubles in day order: the same figure on every run (DuckDB's parallel aggregation fixes no order).
GROUP BY ALL
