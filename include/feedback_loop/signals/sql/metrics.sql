-- `metrics`: `cur` with its baseline, the change, its noise and the pooled level. Noise: today's sampling
-- variance + the baseline's day-to-day variance beyond sampling + the variance of the baseline estimate
-- itself; for shares never below the binomial variance at the baseline rate. A change is beyond noise at
-- |z| >= $noise_z once the baseline has $min_baseline_days days.
CREATE TEMP TABLE metrics AS
    WITH j AS (
        SELECT c.*, b.baseline_value, b.baseline_days, b.baseline_sample_size, l.level_value, l.level_days,
            l.level_sample_size::BIGINT AS level_sample_size, d.share,
            CASE WHEN d.share AND l.level_sample_size > 0
                 THEN sqrt(l.level_value * (1 - l.level_value) / l.level_sample_size) ELSE l.level_se_days END
                AS level_se,
            greatest(coalesce(b.var_days, 0) - coalesce(b.mean_se2, 0), 0) AS between_var,
            coalesce(b.mean_se2, 0) AS mean_se2
        FROM cur c JOIN defs d USING (metric)
        LEFT JOIN base b USING (metric, metric_date, dimension, dimension_value)
        LEFT JOIN lvl l USING (metric, metric_date, dimension, dimension_value)),
    n AS (
        SELECT j.*, value - baseline_value AS change,
            (value - baseline_value) / nullif(abs(baseline_value), 0) AS change_rel,
            CASE WHEN baseline_days >= 1 THEN greatest(
                sqrt(coalesce(std_error * std_error, 0) + between_var + (mean_se2 + between_var) / baseline_days),
                CASE WHEN share THEN sqrt(
                    least(greatest(baseline_value, 0.5 / sample_size), 1 - 0.5 / sample_size)
                    * (1 - least(greatest(baseline_value, 0.5 / sample_size), 1 - 0.5 / sample_size))
                    / sample_size) ELSE 0 END) END AS noise_sd
        FROM j)
    SELECT metric, metric_date, kind, matrix_signal, dimension, dimension_value,
        round(numerator, 10) AS numerator, round(denominator, 10) AS denominator, round(value, 10) AS value,
        sample_size, round(std_error, 10) AS std_error, window_name, window_days, is_final, is_current,
        higher_is_better, round(baseline_value, 10) AS baseline_value, baseline_days, baseline_sample_size,
        round(change, 10) AS change, round(change_rel, 10) AS change_rel, round(noise_sd, 10) AS noise_sd,
        round(CASE WHEN baseline_days >= $min_baseline_days AND noise_sd > 0 THEN change / noise_sd END, 6) AS z_score,
        coalesce(baseline_days >= $min_baseline_days AND noise_sd > 0 AND abs(change / noise_sd) >= $noise_z, false)
            AS beyond_noise,
        CASE WHEN higher_is_better IS NULL OR change IS NULL THEN NULL WHEN change = 0 THEN 'flat'
             WHEN (change > 0) = higher_is_better THEN 'better' ELSE 'worse' END AS change_direction,
        round(level_value, 10) AS level_value, round(level_se, 10) AS level_se, level_days, level_sample_size
    FROM n
