"""Actions raised by later stages into the night's improvement-action queue (`marts/action_queue/dt=D`).

The signals stage builds the queue from metric thresholds; a later stage that finds a problem of its own
(the gap stage: a missing-article topic the intent classifier routes to the wrong intent) adds its rows
here. Each stage replaces only its own rows (by `signal`), so re-running it gives the same queue; the
rest of the partition is kept as the signals stage wrote it.
"""

from __future__ import annotations

import hashlib
import json

from feedback_loop.lake.files import Lake

QUEUE_MART = "action_queue"


def action_id(signal: str, key: str) -> str:
    return hashlib.md5(f"{signal}|{key}".encode()).hexdigest()[:16]


def add_actions(con, lake: Lake, dt: str, signal: str, actions: list[dict]) -> int:
    """Replace `signal`'s rows of the night's queue by `actions` (atomic rewrite of the partition).

    Each action: key (stable, for its id), scope_dimension, scope_value, value, example_conversation_ids,
    evidence (dict), target_component, improvement_action, severity. First-raised dates carry over from
    the previous night's queue."""
    from datetime import date, timedelta

    import pyarrow as pa

    day = date.fromisoformat(dt)
    prev_day = (day - timedelta(days=1)).isoformat()
    first = {}
    if lake.has_partition("marts", QUEUE_MART, prev_day):
        first = dict(con.execute("SELECT action_id, first_raised_date FROM read_parquet($f) WHERE signal = $s",
                                 {"f": lake.partition_file("marts", QUEUE_MART, prev_day), "s": signal}).fetchall())
    records = []
    for a in actions:
        aid = action_id(signal, a["key"])
        raised = first.get(aid) or day
        records.append({
            "action_id": aid, "metric_date": day, "signal": signal, "matrix_signal": signal, "kind": "stage",
            "scope_dimension": a["scope_dimension"], "scope_value": a["scope_value"], "trigger": signal,
            "value": float(a["value"]), "example_conversation_ids": list(a["example_conversation_ids"])[:5],
            "evidence": json.dumps(a["evidence"], sort_keys=True, default=str),
            "target_component": a["target_component"], "improvement_action": a["improvement_action"],
            "severity": round(float(a["severity"]), 6), "first_raised_date": raised,
            "days_open": (day - raised).days + 1, "status": "open",
        })
    has = lake.has_partition("marts", QUEUE_MART, dt)
    if not records and not has:
        return 0
    schema = pa.schema([("action_id", pa.string()), ("metric_date", pa.date32()), ("signal", pa.string()),
                        ("matrix_signal", pa.string()), ("kind", pa.string()), ("scope_dimension", pa.string()),
                        ("scope_value", pa.string()), ("trigger", pa.string()), ("value", pa.float64()),
                        ("example_conversation_ids", pa.list_(pa.string())), ("evidence", pa.string()),
                        ("target_component", pa.string()), ("improvement_action", pa.string()),
                        ("severity", pa.float64()), ("first_raised_date", pa.date32()), ("days_open", pa.int64()),
                        ("status", pa.string())])
    con.register("external_actions", pa.Table.from_pylist(records, schema=schema))
    try:
        if has:
            con.execute("CREATE OR REPLACE TEMP TABLE queue_kept AS SELECT * FROM read_parquet($f) WHERE signal <> $s",
                        {"f": lake.partition_file("marts", QUEUE_MART, dt), "s": signal})
            sql = "SELECT * FROM queue_kept UNION ALL BY NAME SELECT * FROM external_actions ORDER BY action_id"
        else:
            sql = "SELECT * FROM external_actions ORDER BY action_id"
        lake.write_query(con, sql, "marts", QUEUE_MART, dt)
    finally:
        con.unregister("external_actions")
    return len(records)
