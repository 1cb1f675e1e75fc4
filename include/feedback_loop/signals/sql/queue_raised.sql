-- `raised`: the current, final values that crossed a level or moved beyond noise in the bad direction.
-- Level: a one-sided test of the pooled level against the threshold, z = (level - t) / se, with the
-- standard error at the threshold for shares (sqrt(t (1 - t) / n)) and the pooled delta-method one
-- otherwise (never below 1 % of the threshold); it must clear $level_z with $min_sample units.
CREATE TEMP TABLE raised AS
WITH m AS (SELECT m.*, d.share, d.min_level, d.max_level, d.min_change, d.min_change_rel
           FROM metrics m JOIN defs d USING (metric)
           WHERE m.is_final AND m.is_current AND m.higher_is_better IS NOT NULL),
z AS (SELECT m.*,
        (level_value - max_level) / greatest(
            CASE WHEN share THEN sqrt(max_level * (1 - max_level) / level_sample_size) ELSE coalesce(level_se, 0) END,
            abs(max_level) * 0.01, 1e-9) AS z_hi,
        (min_level - level_value) / greatest(
            CASE WHEN share THEN sqrt(min_level * (1 - min_level) / level_sample_size) ELSE coalesce(level_se, 0) END,
            abs(min_level) * 0.01, 1e-9) AS z_lo
      FROM m),
t AS (
    SELECT z.* EXCLUDE (z_hi, z_lo), 'level_above_max' AS trigger, max_level AS threshold, z_hi AS severity
    FROM z WHERE max_level IS NOT NULL AND level_sample_size >= $min_sample AND z_hi >= $level_z
    UNION ALL
    SELECT z.* EXCLUDE (z_hi, z_lo), 'level_below_min', min_level, z_lo
    FROM z WHERE min_level IS NOT NULL AND level_sample_size >= $min_sample AND z_lo >= $level_z
    UNION ALL
    SELECT z.* EXCLUDE (z_hi, z_lo), 'change_vs_baseline', baseline_value, abs(z_score)
    FROM z WHERE beyond_noise AND change_direction = 'worse' AND sample_size >= $min_sample
        AND (min_change IS NULL OR abs(change) >= min_change)
        AND (min_change_rel IS NULL OR abs(change_rel) >= min_change_rel))
SELECT * FROM t
