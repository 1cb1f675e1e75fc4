-- Example conversations of each action: the scope's units worse than the threshold (level) or the
-- baseline (change), worst first. <scope>: the unit is in the action's scope; <only_raised>: the units
-- view restricted to the raised metrics' names (constants, so DuckDB reads only those branches).
CREATE TEMP TABLE examples AS
SELECT action_id, list(conversation_id ORDER BY badness DESC, conversation_id)[1:5] AS example_conversation_ids
FROM (SELECT k.action_id, u.conversation_id,
        max(CASE WHEN k.higher_is_better THEN k.threshold - u.num / u.den ELSE u.num / u.den - k.threshold END)
            AS badness
      FROM kept k JOIN units u ON u.metric = k.metric AND u.metric_date = k.metric_date AND ({{scope}})
      WHERE {{only_raised}} AND u.conversation_id IS NOT NULL AND u.den > 0
        AND CASE WHEN k.higher_is_better THEN u.num / u.den < k.threshold ELSE u.num / u.den > k.threshold END
      GROUP BY ALL)
GROUP BY action_id
