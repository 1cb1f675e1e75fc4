-- `known`: this run's values and, for every other (metric, metric_date, scope), the latest earlier value
-- from the mart's partitions (<history>: a SELECT of them, or an empty one).
CREATE TEMP TABLE known AS
SELECT metric, metric_date, dimension, dimension_value, numerator, denominator, value, sample_size,
    std_error, is_final FROM cur
UNION ALL
SELECT h.* FROM ({{history}}) h ANTI JOIN cur c USING (metric, metric_date, dimension, dimension_value)
