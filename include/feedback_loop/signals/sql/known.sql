-- `known`: this run's values and, for every other (metric, metric_date, scope), the latest earlier value
-- from the mart's partitions (<history>: a SELECT of them, or an empty one).
-- This run's values are rounded as the mart stores them (metrics.sql), so the pooled baselines and levels
-- see the same values tonight as a later night reading them back, and the last bit of a parallel sum of
-- doubles (whose order DuckDB does not fix) cannot change a pooled figure.
CREATE TEMP TABLE known AS
SELECT metric, metric_date, dimension, dimension_value, round(numerator, 10) AS numerator,
    round(denominator, 10) AS denominator, round(value, 10) AS value, sample_size,
    round(std_error, 10) AS std_error, is_final FROM cur
UNION ALL
SELECT h.* FROM ({{history}}) h ANTI JOIN cur c USING (metric, metric_date, dimension, dimension_value)
