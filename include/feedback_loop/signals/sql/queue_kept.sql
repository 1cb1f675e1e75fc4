-- `kept`: the rows of the drill-down that stay, each with a stable action id.
CREATE TEMP TABLE kept AS
SELECT r.* EXCLUDE (parent_raised, stands_out, explains_parent) FROM scoped r
WHERE NOT r.parent_raised OR r.stands_out
UNION ALL
SELECT a.* FROM raised a WHERE a.dimension = 'all' AND NOT EXISTS (
    SELECT 1 FROM scoped r WHERE r.metric = a.metric AND r.trigger = a.trigger AND r.stands_out
        AND r.explains_parent);

CREATE OR REPLACE TEMP TABLE kept AS
SELECT *, substr(md5(metric || '|' || dimension || '|' || dimension_value || '|' || trigger), 1, 16)
    AS action_id FROM kept;
