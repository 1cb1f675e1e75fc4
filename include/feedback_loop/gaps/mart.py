"""The gap mart (`marts/kb_gaps/dt=D`), its warehouse views and its links to the action queue."""

from __future__ import annotations

from datetime import date

from feedback_loop.lake.files import Lake
from feedback_loop.settings import Settings

ACTION_QUEUE = "action_queue"  # the signals stage's improvement-action queue (marts/action_queue)


def link_actions(con, lake: Lake, dt: str, rows: list[dict]) -> None:
    """Fill `action_ids`: the night's action-queue rows that point at each gap.

    A queue row points at a gap when its scope is one of the gap's intents, or when one of its example
    conversations is behind the gap. The same rule is the warehouse view `kb_gap_actions`, which also
    links queue rows written after this stage ran.
    """
    for r in rows:
        r["action_ids"] = []
    if not lake.has_partition("marts", ACTION_QUEUE, dt):
        return
    queue = con.execute("""
        SELECT action_id, scope_dimension, scope_value, coalesce(example_conversation_ids, []) AS examples
        FROM read_parquet($f) ORDER BY action_id""", {"f": lake.partition_file("marts", ACTION_QUEUE, dt)}).fetchall()
    for r in rows:
        if r["status"] != "open":
            continue
        intents, ids = set(r.get("intents") or []), set(r.get("conversation_ids") or [])
        r["action_ids"] = sorted({a for a, dim, val, ex in queue
                                  if (dim == "intent" and val in intents) or ids.intersection(ex or [])})


def register_gap_views(con, settings: Settings) -> list[str]:
    """`kb_gap_actions`: (dt, action_id, gap_id, link) for every action-queue row that points at a gap."""
    lake = Lake(settings.lake)
    if not (lake.days("marts", "kb_gaps") and lake.days("marts", ACTION_QUEUE)):
        return []
    from feedback_loop.lake.warehouse import view_sql

    con.execute(f"""CREATE OR REPLACE VIEW kb_gap_actions AS
        WITH q AS ({view_sql(lake, "marts", ACTION_QUEUE)}), g AS ({view_sql(lake, "marts", "kb_gaps")})
        SELECT q.dt, q.action_id, g.gap_id, g.kind AS gap_kind, g.label AS gap_label,
            CASE WHEN q.scope_dimension = 'intent' AND list_contains(g.intents, q.scope_value) THEN 'intent'
                 ELSE 'conversations' END AS link
        FROM q JOIN g ON g.dt = q.dt AND g.status = 'open'
        WHERE (q.scope_dimension = 'intent' AND list_contains(g.intents, q.scope_value))
           OR len(list_intersect(coalesce(q.example_conversation_ids, []), g.conversation_ids)) > 0""")
    return ["kb_gap_actions"]


ROW_FIELDS = {
    "gap_id": "string", "rank": "int64", "kind": "string", "status": "string", "first_seen": "date",
    "closed_on": "date", "closed_reason": "string", "label": "string", "anchor": "string",
    "top_terms": "list<string>", "intents": "list<string>", "intent_purity": "double", "article_id": "string",
    "misrouted_to": "string",
    "nearest_articles": "nearest", "impact": "double", "evidence_weight": "double", "n_conversations": "int64",
    "n_customers": "int64", "n_escalated": "int64", "escalation_hours": "double", "topic_traffic": "double",
    "failure_rate": "double", "base_failure_rate": "double", "prev_window_conversations": "int64",
    "trend": "double", "signal_counts": "string", "reason": "string",
    "representative_messages": "list<string>", "draft_replies": "list<string>", "conversation_ids": "list<string>",
    "action_ids": "list<string>",
}


def arrow_schema():
    import pyarrow as pa

    nearest = pa.list_(pa.struct([("article_id", pa.string()), ("title", pa.string()), ("score", pa.float64()),
                                  ("text_similarity", pa.float64()), ("intent_share", pa.float64())]))
    kinds = {"string": pa.string(), "int64": pa.int64(), "double": pa.float64(), "date": pa.date32(),
             "list<string>": pa.list_(pa.string()), "nearest": nearest}
    return pa.schema([("report_date", pa.date32())] + [(k, kinds[t]) for k, t in ROW_FIELDS.items()])


def write_gaps(con, lake: Lake, dt: str, rows: list[dict]) -> str:
    """Publish the night's gap rows as `marts/kb_gaps/dt=<dt>` (atomic; the same rows on a re-run)."""
    import pyarrow as pa

    schema = arrow_schema()
    day = date.fromisoformat(dt)
    records = []
    for r in rows:
        rec = {k: r.get(k) for k in ROW_FIELDS}
        for k in ("first_seen", "closed_on"):
            rec[k] = date.fromisoformat(rec[k]) if rec[k] else None
        records.append({"report_date": day, **rec})
    table = pa.Table.from_pylist(records, schema=schema)
    con.register("gap_rows", table)
    try:
        return lake.write_query(con, "SELECT * FROM gap_rows", "marts", "kb_gaps", dt)
    finally:
        con.unregister("gap_rows")
