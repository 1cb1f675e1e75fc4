-- Drill-down. A scope below 'all' that crossed like the 'all' scope is kept only when it stands out
-- from it (|difference| > $noise_z combined standard errors): a problem everywhere is one row. The 'all'
-- row of a change is dropped when a standing-out scope explains it: without that scope's units the
-- rest of the traffic is within noise. A problem somewhere is one row, at its scope.
CREATE TEMP TABLE scoped AS
SELECT r.*, a.metric IS NOT NULL AS parent_raised,
    a.metric IS NOT NULL AND (
        (r.trigger = 'change_vs_baseline'
         AND abs(r.change - a.change) > $noise_z * sqrt(r.noise_sd * r.noise_sd + a.noise_sd * a.noise_sd))
     OR (r.trigger <> 'change_vs_baseline' AND abs(r.level_value - a.level_value) >
         $noise_z * sqrt(power(coalesce(r.level_se, 0), 2) + power(coalesce(a.level_se, 0), 2)))) AS stands_out,
    CASE WHEN a.metric IS NOT NULL AND r.trigger = 'change_vs_baseline' AND a.denominator > r.denominator
         THEN abs((a.change * a.denominator - r.change * r.denominator) / (a.denominator - r.denominator))
              < $noise_z * a.noise_sd * sqrt(a.denominator / (a.denominator - r.denominator))
         ELSE false END AS explains_parent
FROM raised r LEFT JOIN raised a ON a.metric = r.metric AND a.trigger = r.trigger AND a.dimension = 'all'
WHERE r.dimension <> 'all'
