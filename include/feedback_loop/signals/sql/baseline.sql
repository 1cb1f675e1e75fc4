-- `base`: the trailing baseline of every current value: the final values of the $baseline_days days before
-- its metric_date (pooled ratio, or the median for percentiles), and their day-to-day variance.
CREATE TEMP TABLE base AS
SELECT c.metric, c.metric_date, c.dimension, c.dimension_value,
    count(b.metric) AS baseline_days, sum(b.sample_size)::BIGINT AS baseline_sample_size,
    CASE WHEN any_value(d.agg) = 'ratio' THEN sum(b.numerator ORDER BY b.metric_date) / nullif(sum(b.denominator ORDER BY b.metric_date), 0)
         ELSE median(b.value) END AS baseline_value,
    var_samp(b.value ORDER BY b.metric_date) AS var_days,
    avg(b.std_error * b.std_error ORDER BY b.metric_date) AS mean_se2
FROM cur c JOIN defs d USING (metric)
LEFT JOIN known b ON b.metric = c.metric AND b.dimension = c.dimension AND b.dimension_value = c.dimension_value
    AND b.is_final AND b.metric_date BETWEEN c.metric_date - $baseline_days::INTEGER AND c.metric_date - 1
-- Sums of doubles in day order: the same figure on every run (DuckDB's parallel aggregation fixes no order).
GROUP BY ALL
