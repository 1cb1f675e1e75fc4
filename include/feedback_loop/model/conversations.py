"""Model: one fact row per conversation of the day, and the history of case states.

Both are DuckDB SQL over the staged lake (model/sql/*.sql), written as day partitions of `<lake>/marts/`. A day's facts use
only data exported on that day or before (cases, surveys and overrides up to the lookback window), so
re-running a day gives the same facts whatever has landed since.
"""

from __future__ import annotations

from datetime import date, timedelta

from feedback_loop.lake.duck import connect, parquet_view
from feedback_loop.lake.files import Lake
from feedback_loop.lake.sql import exact_sum, fill, literal, literal_list, load_sql
from feedback_loop.settings import Settings


def _sql(name: str, **identifiers: str) -> str:
    """model/sql/`name` with its `{{markers}}` filled (values are bound parameters, never markers)."""
    return fill(load_sql("feedback_loop.model", f"sql/{name}"), **identifiers)


def _per_conversation_sql(bucket: str) -> str:
    """conversations.sql for the conversations `bucket` keeps (a WHERE clause, or empty for all); its cost
    and latency added exactly (pico-dollars, nanoseconds: lake.sql.exact_sum)."""
    return _sql("conversations.sql", bucket=bucket, cost_sum=exact_sum("cost_usd", 12),
                latency_sum=exact_sum("latency_ms", 6))


def _day_views(settings: Settings, day: date):
    """(connection, lake) with the views the model's SQL reads: `ev` (the day's staged agent events) and
    `cases`, `surveys`, `overrides`, `checks` (staged from `reference_lookback_days` before the day up to it).
    The one-process build, each shard and the combine (model.shards) open a day this same way."""
    dt = day.isoformat()
    lake = Lake(settings.lake)
    first = str(day - timedelta(days=settings.reference_lookback_days))
    events = lake.files_between("staged", "agent_events", dt, dt)
    if not events:
        raise RuntimeError(f"no staged agent_events for {dt}: run land and validate first")
    con = connect()
    con.execute(f"CREATE TEMP VIEW ev AS SELECT * FROM read_parquet({literal_list(events)})")
    parquet_view(con, "cases", lake.files_between("staged", "crm_cases", first, dt),
                 "SELECT NULL::VARCHAR case_id, NULL::VARCHAR customer_id, NULL::VARCHAR conversation_id, NULL::VARCHAR channel, "
                 "NULL::TIMESTAMPTZ created_at, NULL::TIMESTAMPTZ updated_at, NULL::VARCHAR status, NULL::TIMESTAMPTZ resolved_at, "
                 "NULL::VARCHAR resolved_by, NULL::BOOLEAN escalated, NULL::VARCHAR escalation_reason, NULL::BIGINT reopen_count, "
                 "NULL::TIMESTAMPTZ last_reopened_at, NULL::DOUBLE handle_time_s, NULL::VARCHAR category, NULL::VARCHAR[] tags, "
                 "NULL::DATE dt, NULL::BIGINT _row_id WHERE false")
    parquet_view(con, "surveys", lake.files_between("staged", "surveys", first, dt),
                 "SELECT NULL::VARCHAR survey_id, NULL::VARCHAR case_id, NULL::VARCHAR kind, NULL::BIGINT score, NULL::TIMESTAMPTZ submitted_at WHERE false")
    parquet_view(con, "overrides", lake.files_between("staged", "overrides", first, dt),
                 "SELECT NULL::VARCHAR override_id, NULL::VARCHAR conversation_id, NULL::VARCHAR stage, NULL::VARCHAR outcome, NULL::VARCHAR human_decision, "
                 "NULL::TIMESTAMPTZ ts, NULL::VARCHAR policy_clause_id WHERE false")
    parquet_view(con, "checks", lake.files_between("staged", "outcome_checks", first, dt),
                 "SELECT NULL::VARCHAR case_id, NULL::BOOLEAN verified WHERE false")
    return con, lake


def _conversations(con, settings: Settings, shard: int = 0, shards: int = 1) -> tuple[str, dict]:
    """The `<conversations>` query of facts.sql for the day's conversations with `hash(conversation_id) %
    shards = shard` (all of them with one shard), and the parameters it binds."""
    # The per-conversation aggregate keeps ordered list and arg_min/arg_max states for every conversation
    # of the day, which DuckDB cannot spill: at 10 M events it ran out of the 1 GB limit. A day larger
    # than `model_bucket_events` is aggregated in buckets of conversations (hash of the id) into a
    # temporary table, which is exact (a conversation's events stay together) and bounds that state.
    # A shard holds about 1/shards of the day's events (the hash is uniform): its buckets are counted from
    # that estimate (no scan), and taken from hash // shards, which does not depend on the shard's
    # hash % shards (hash % buckets would: with 4 shards and 2 buckets one bucket would be empty).
    n_events = con.execute("SELECT count(*) FROM ev").fetchone()[0]
    buckets = max(1, -(-n_events // (shards * max(1, settings.model_bucket_events))))
    if shards == 1:
        in_shard, params = "", {}
        in_bucket = "WHERE hash(conversation_id) % $buckets = $bucket"
    else:
        in_shard, params = "WHERE hash(conversation_id) % $shards = $shard", {"shards": shards, "shard": shard}
        in_bucket = in_shard + " AND hash(conversation_id) // $shards % $buckets = $bucket"
    if buckets == 1:
        return _per_conversation_sql(in_shard), params
    by_bucket = _per_conversation_sql(in_bucket)
    for b in range(buckets):
        verb = "CREATE TEMP TABLE conv_buckets AS" if b == 0 else "INSERT INTO conv_buckets"
        con.execute(f"{verb} {by_bucket}", {**params, "buckets": buckets, "bucket": b})
    return "SELECT * FROM conv_buckets", {}


def _write_case_history(con, lake: Lake, dt: str) -> int:
    """Publish `marts/case_history` for the day (when the day has staged cases); its row count."""
    if not lake.has_partition("staged", "crm_cases", dt):
        return 0
    lake.write_query(con, _sql("case_history.sql"), "marts", "case_history", dt, params={"day": dt})
    return _count(con, lake, "case_history", dt)


def _count(con, lake: Lake, name: str, dt: str) -> int:
    return con.execute(f"SELECT count(*) FROM read_parquet({literal(lake.partition_file('marts', name, dt))})").fetchone()[0]


def build_model(settings: Settings, day: date) -> dict:
    """Write `marts/conversation_facts` and `marts/case_history` for one day; return their row counts."""
    dt = day.isoformat()
    con, lake = _day_views(settings, day)
    conversations, params = _conversations(con, settings)
    lake.write_query(con, _sql("facts.sql", conversations=conversations), "marts", "conversation_facts", dt,
                     params={"day": dt, **params})
    counts = {"conversation_facts": _count(con, lake, "conversation_facts", dt),
              "case_history": _write_case_history(con, lake, dt)}
    con.close()
    return counts
