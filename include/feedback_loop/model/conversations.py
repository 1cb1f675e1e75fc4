"""Model: one fact row per conversation of the day, and the history of case states.

Both are DuckDB SQL over the staged lake, written as day partitions of `<lake>/marts/`. A day's facts use
only data exported on that day or before (cases, surveys and overrides up to the lookback window), so
re-running a day gives the same facts whatever has landed since.
"""

from __future__ import annotations

from datetime import date, timedelta

from feedback_loop.lake.duck import connect
from feedback_loop.lake.files import Lake
from feedback_loop.settings import Settings


def _files(lake: Lake, layer: str, name: str, first: str, last: str) -> str | None:
    days = [d for d in lake.days(layer, name) if first <= d <= last]
    if not days:
        return None
    return "[" + ", ".join(f"'{lake.partition_file(layer, name, d)}'" for d in days) + "]"


def _view(con, name: str, files: str | None, empty_sql: str) -> None:
    if files:
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM read_parquet({files}, hive_partitioning=true, union_by_name=true)")
    else:
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {empty_sql}")


def build_model(settings: Settings, day: date) -> dict:
    """Write `marts/conversation_facts` and `marts/case_history` for one day; return their row counts."""
    dt = day.isoformat()
    lake = Lake(settings.lake)
    first = str(day - timedelta(days=settings.reference_lookback_days))
    con = connect()
    events = _files(lake, "staged", "agent_events", dt, dt)
    if not events:
        raise RuntimeError(f"no staged agent_events for {dt}: run land and validate first")
    con.execute(f"CREATE TEMP VIEW ev AS SELECT * FROM read_parquet({events})")
    _view(con, "cases", _files(lake, "staged", "crm_cases", first, dt),
          "SELECT NULL::VARCHAR case_id, NULL::VARCHAR customer_id, NULL::VARCHAR conversation_id, NULL::VARCHAR channel, "
          "NULL::TIMESTAMPTZ created_at, NULL::TIMESTAMPTZ updated_at, NULL::VARCHAR status, NULL::TIMESTAMPTZ resolved_at, "
          "NULL::VARCHAR resolved_by, NULL::BOOLEAN escalated, NULL::VARCHAR escalation_reason, NULL::BIGINT reopen_count, "
          "NULL::TIMESTAMPTZ last_reopened_at, NULL::DOUBLE handle_time_s, NULL::VARCHAR category, NULL::VARCHAR[] tags, "
          "NULL::DATE dt, NULL::BIGINT _row_id WHERE false")
    _view(con, "surveys", _files(lake, "staged", "surveys", first, dt),
          "SELECT NULL::VARCHAR survey_id, NULL::VARCHAR case_id, NULL::VARCHAR kind, NULL::BIGINT score, NULL::TIMESTAMPTZ submitted_at WHERE false")
    _view(con, "overrides", _files(lake, "staged", "overrides", first, dt),
          "SELECT NULL::VARCHAR override_id, NULL::VARCHAR conversation_id, NULL::VARCHAR stage, NULL::VARCHAR outcome, NULL::VARCHAR human_decision, "
          "NULL::TIMESTAMPTZ ts, NULL::VARCHAR policy_clause_id WHERE false")
    _view(con, "checks", _files(lake, "staged", "outcome_checks", first, dt),
          "SELECT NULL::VARCHAR case_id, NULL::BOOLEAN verified WHERE false")

    # The per-conversation aggregate keeps ordered list and arg_min/arg_max states for every conversation
    # of the day, which DuckDB cannot spill: at 10 M events it ran out of the 1 GB limit. A day larger
    # than `model_bucket_events` is aggregated in buckets of conversations (hash of the id) into a
    # temporary table, which is exact (a conversation's events stay together) and bounds that state.
    n_events = con.execute("SELECT count(*) FROM ev").fetchone()[0]
    buckets = max(1, -(-n_events // max(1, settings.model_bucket_events)))
    conv = """
        SELECT conversation_id,
            max(customer_id) AS customer_id,
            max(case_id) AS case_id,
            min(ts) AS started_at, max(ts) AS ended_at,
            count(*) AS n_events,
            max(turn) + 1 AS n_turns,
            count(*) FILTER (event_type = 'customer_message') AS n_customer_messages,
            arg_min(text, (ts, _row_id)) FILTER (event_type = 'customer_message') AS first_customer_text,
            list(intent ORDER BY ts, _row_id) FILTER (event_type = 'intent_classified') AS intent_path,
            arg_min(intent, (ts, _row_id)) FILTER (event_type = 'intent_classified') AS first_intent,
            arg_max(intent, (ts, _row_id)) FILTER (event_type = 'intent_classified') AS final_intent,
            arg_max(confidence, (ts, _row_id)) FILTER (event_type = 'intent_classified') AS final_confidence,
            min(confidence) FILTER (event_type = 'intent_classified') AS min_confidence,
            count(*) FILTER (event_type = 'kb_query') AS n_kb_queries,
            count(*) FILTER (event_type = 'kb_query' AND coalesce(len(kb_results), 0) = 0) AS n_kb_empty,
            max(list_max(list_transform(kb_results, lambda r: r.score))) AS kb_max_score,
            list(DISTINCT r.article_id ORDER BY r.article_id) FILTER (r.article_id IS NOT NULL) AS kb_articles,
            count(*) FILTER (policy_outcome = 'pass') AS n_policy_pass,
            count(*) FILTER (policy_outcome = 'fail') AS n_policy_fail,
            count(*) FILTER (policy_outcome = 'waived') AS n_policy_waived,
            list(DISTINCT policy_id ORDER BY policy_id) FILTER (policy_id IS NOT NULL) AS policy_ids,
            list(action ORDER BY ts, _row_id) FILTER (event_type = 'action_executed') AS actions_executed,
            count(*) FILTER (event_type = 'action_proposed') AS n_actions_proposed,
            count(*) FILTER (event_type = 'agent_response') AS n_agent_responses,
            count(*) FILTER (event_type = 'suggestion_shown') AS n_suggestions_shown,
            count(*) FILTER (event_type = 'suggestion_dismissed') AS n_suggestions_dismissed,
            count(*) FILTER (event_type = 'link_clicked') AS n_links_clicked,
            count(*) FILTER (event_type = 'thumbs' AND rating = 1) AS n_thumbs_up,
            count(*) FILTER (event_type = 'thumbs' AND rating = -1) AS n_thumbs_down,
            count(*) FILTER (event_type = 'escalated') > 0 AS agent_escalated,
            count(*) FILTER (event_type = 'fallback') AS n_fallbacks,
            count(*) FILTER (event_type = 'error') AS n_errors,
            max(strategy) AS strategy,
            max(mode) AS mode,
            max(model) AS model,
            coalesce(sum(input_tokens), 0) AS input_tokens,
            coalesce(sum(output_tokens), 0) AS output_tokens,
            coalesce(sum(cost_usd), 0) AS cost_usd,
            coalesce(sum(latency_ms), 0) AS latency_ms_total
        -- One row per KB result of an event (one with r NULL when it has none), as a select-list unnest:
        -- the same rows as LEFT JOIN LATERAL (SELECT unnest(coalesce(kb_results, []))) ON true, which
        -- DuckDB plans as a dependent join costing 2.5x the whole aggregate (10 s vs 3.8 s CPU at 2 M events).
        FROM (SELECT *, unnest(CASE WHEN len(kb_results) > 0 THEN kb_results ELSE [NULL] END) AS r FROM ev
              {bucket}) ev
        GROUP BY conversation_id"""
    if buckets == 1:
        conv_cte = conv.replace("{bucket}", "")
    else:
        for b in range(buckets):
            where = f"WHERE hash(conversation_id) % {buckets} = {b}"
            verb = "CREATE TEMP TABLE conv_buckets AS" if b == 0 else "INSERT INTO conv_buckets"
            con.execute(f"{verb} {conv.replace('{bucket}', where)}")
        conv_cte = "SELECT * FROM conv_buckets"
    facts = f"""
    WITH conv AS ({conv_cte}),
    case_state AS (
        -- Each column's value on the latest state where it is not null (arg_max skips null values). The
        -- order (updated_at, dt, _row_id) is unique, so its rank is an exact scalar stand-in for that
        -- struct key: arg_max over a struct key costs ~20 us a row (9 s of CPU at 423,341 states).
        SELECT case_id, arg_max(COLUMNS(* EXCLUDE (case_id, _state_rank)), _state_rank)
        FROM (SELECT *, row_number() OVER (ORDER BY updated_at NULLS LAST, dt NULLS LAST, _row_id NULLS LAST)
                  AS _state_rank FROM cases)
        GROUP BY case_id
    ),
    case_states AS (SELECT case_id, count(*) AS n_case_states FROM cases GROUP BY case_id),
    srv AS (
        SELECT case_id,
            arg_max(score, (submitted_at, survey_id)) FILTER (kind = 'csat') AS csat,
            arg_max(score, (submitted_at, survey_id)) FILTER (kind = 'ces') AS ces,
            count(*) AS n_surveys
        FROM surveys GROUP BY case_id
    ),
    ovr AS (
        SELECT conversation_id,
            count(*) AS n_overrides,
            count(*) FILTER (outcome = 'corrected') AS n_corrections,
            list(DISTINCT stage ORDER BY stage) AS override_stages,
            arg_max(human_decision, (ts, override_id)) FILTER (stage = 'intent' AND outcome = 'corrected') AS human_intent,
            list(DISTINCT policy_clause_id ORDER BY policy_clause_id) FILTER (policy_clause_id IS NOT NULL) AS override_policy_clauses
        FROM overrides GROUP BY conversation_id
    ),
    chk AS (
        SELECT case_id, count(*) AS n_outcome_checks, count(*) FILTER (verified) AS n_outcome_verified
        FROM checks GROUP BY case_id
    )
    SELECT DATE '{dt}' AS fact_date, conv.*,
        cs.channel, cs.status AS case_status, cs.created_at AS case_created_at, cs.resolved_at, cs.resolved_by,
        coalesce(cs.escalated, false) OR conv.agent_escalated AS escalated, cs.escalation_reason,
        coalesce(cs.reopen_count, 0) AS reopen_count, cs.last_reopened_at, cs.handle_time_s,
        cs.category AS human_category, coalesce(n.n_case_states, 0) AS n_case_states,
        srv.csat, srv.ces, coalesce(srv.n_surveys, 0) AS n_surveys,
        coalesce(ovr.n_overrides, 0) AS n_overrides, coalesce(ovr.n_corrections, 0) AS n_corrections,
        ovr.override_stages, ovr.human_intent, ovr.override_policy_clauses,
        coalesce(chk.n_outcome_checks, 0) AS n_outcome_checks, coalesce(chk.n_outcome_verified, 0) AS n_outcome_verified,
        cs.status IN ('solved', 'closed') AS resolved
    FROM conv
    LEFT JOIN case_state cs ON cs.case_id = conv.case_id
    LEFT JOIN case_states n ON n.case_id = conv.case_id
    LEFT JOIN srv ON srv.case_id = conv.case_id
    LEFT JOIN ovr ON ovr.conversation_id = conv.conversation_id
    LEFT JOIN chk ON chk.case_id = conv.case_id
    ORDER BY conv.conversation_id"""
    lake.write_query(con, facts, "marts", "conversation_facts", dt)

    history = f"""
    SELECT c.* EXCLUDE (dt, _row_id, _source_file, _line),
        lag(status) OVER w AS previous_status,
        row_number() OVER w AS state_seq,
        DATE '{dt}' AS export_date
    FROM cases c
    WINDOW w AS (PARTITION BY case_id ORDER BY updated_at, dt, _row_id)
    QUALIFY export_date = c.dt
    ORDER BY case_id, updated_at"""
    has_cases = lake.has_partition("staged", "crm_cases", dt)
    if has_cases:
        lake.write_query(con, history, "marts", "case_history", dt)
    counts = {
        "conversation_facts": con.execute(f"SELECT count(*) FROM read_parquet('{lake.partition_file('marts', 'conversation_facts', dt)}')").fetchone()[0],
        "case_history": con.execute(f"SELECT count(*) FROM read_parquet('{lake.partition_file('marts', 'case_history', dt)}')").fetchone()[0] if has_cases else 0,
    }
    con.close()
    return counts
