"""Knowledge-base gaps: what customers ask that the knowledge base does not answer, ranked by impact.

Each night, over a trailing window of conversations (`Settings.gap_window_days`, default 28):

1. Signals (`window.py`, `window.sql`): every conversation gets an evidence weight from the ways it failed
   for want of knowledge (KB queries with no or low-score results, escalations and overrides that point
   at knowledge, reopens, re-engagement, low CSAT, thumbs-down).
2. Topics (`classify.py`, `topics.py`, `trust.py`): the first customer messages of the conversations above
   a minimum weight are clustered offline on what the customers wrote; intent labels join as features
   weighted by how far they can be trusted (a person's label > a confident agent label that agrees with
   the text > a low-confidence one), never as the anchor.
3. Knowledge base (`classify.py`, `rows.py`, `kb.py`): a topic close to an article's text *and* routed to
   or retrieved for it, still failing well above the base rate, is an **article to revise**; a topic no
   such article covers is a **missing article** (with `misrouted_to` when the agent routed it to an
   article's intent anyway, and a draft from the human replies of its escalations, `drafts.py`); a topic
   foreign to the whole KB is **out of scope**; articles nothing retrieves or that humans keep overriding
   are **stale**, and two articles that state different facts for one topic are **contradictory**.
4. Impact and ids (`ids.py`): ranked by affected conversations and customers, escalation cost and trend; a
   gap keeps its id from night to night and is closed when an article now covers it or it is gone.

Outputs (`mart.py`, `report.py`): `<lake>/marts/kb_gaps/dt=<dt>/part.parquet` (warehouse view `kb_gaps`),
`<lake>/reports/dt=<dt>/gaps.html`, and an `intent_classifier` row in the night's action queue for each
misrouted missing-article gap.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict
from datetime import date

from feedback_loop.gaps.classify import find_gaps
from feedback_loop.gaps.ids import _previous_gaps, assign_ids, gap_id_for
from feedback_loop.gaps.mart import ROW_FIELDS, arrow_schema, link_actions, register_gap_views, write_gaps
from feedback_loop.gaps.params import KINDS, KNOWLEDGE_PATTERN, SIGNALS, GapParams
from feedback_loop.gaps.window import load_window
from feedback_loop.lake.files import Lake
from feedback_loop.settings import Settings

__all__ = ["KINDS", "KNOWLEDGE_PATTERN", "ROW_FIELDS", "SIGNALS", "GapParams", "arrow_schema", "assign_ids",
           "detect_gaps", "find_gaps", "gap_id_for", "load_window", "register_gap_views", "write_gaps"]

log = logging.getLogger(__name__)
MISROUTED_SIGNAL = "kb_gap_misrouted"
GAPS_DUCKDB_SHARE = 0.3  # of `duckdb_memory_limit`, once the window is loaded


def detect_gaps(settings: Settings, dt: date | str, window_days: int | None = None) -> dict:
    """Find, classify and rank the KB gaps of the window ending on `dt`; write the mart and the page."""
    from feedback_loop.datasets.pii import redactor
    from feedback_loop.gaps.drafts import attach_drafts
    from feedback_loop.lake.duck import connect, lowered_memory_limit

    dt = date.fromisoformat(str(dt)[:10]).isoformat()
    p = GapParams.from_settings(settings, window_days)
    lake = Lake(settings.lake)
    con = connect()
    try:
        meta = load_window(con, settings, dt, p)
        # The window's joins filled DuckDB's buffer pool, which keeps freed blocks up to its limit (at 10 M
        # events a day: ~700 MiB beside a 200 MiB table). What follows holds the signals' rows and vectors in
        # Python: under a lower limit DuckDB hands those blocks back first (docs/benchmark.md).
        with lowered_memory_limit(con, GAPS_DUCKDB_SHARE):
            rows, stats = find_gaps(con, p, settings)
            for i, r in enumerate(rows):
                r["gap_index"] = i
            stats["drafts"] = attach_drafts(con, p, rows, functools.lru_cache(maxsize=None)(redactor(settings).redact))
            rows.sort(key=lambda r: (r["kind"] == "out_of_scope", -r["impact"], r["kind"], r["anchor"]))
            previous = _previous_gaps(con, lake, dt, p)
            rows = assign_ids(rows, previous, dt, p)
            stats["misrouted_actions"] = raise_misrouted_actions(con, lake, dt, rows)
            link_actions(con, lake, dt, rows)
            write_gaps(con, lake, dt, rows)
    finally:
        con.close()
    from feedback_loop.gaps.report import write_page

    page = write_page(lake, dt, rows, {**meta, **stats, "params": asdict(p)})
    open_rows = [r for r in rows if r["status"] == "open"]
    summary = {
        "dt": dt, **meta, **stats,
        "gaps_open": len(open_rows),
        "gaps_by_kind": {k: sum(r["kind"] == k for r in open_rows) for k in KINDS},
        "gaps_closed": sum(r["status"] == "closed" for r in rows),
        "top": [{"gap_id": r["gap_id"], "kind": r["kind"], "label": r["label"], "impact": r["impact"]}
                for r in open_rows[:5]],
        "mart": lake.partition_file("marts", "kb_gaps", dt),
        "page": page,
    }
    lake.write_json(summary, "runs", f"dt={dt}", "gaps.json")
    log.info("gaps %s: %s signals, %s topics, %s open gaps %s", dt, stats["n_signals"], stats["n_topics"],
             len(open_rows), summary["gaps_by_kind"])
    return summary


def raise_misrouted_actions(con, lake: Lake, dt: str, rows: list[dict]) -> int:
    """One `intent_classifier` action per open missing-article gap the agent routed to a wrong intent:
    the classifier needs a new class for the topic, not the article it chose a rewrite."""
    from feedback_loop.signals.external import add_actions

    actions = []
    for r in rows:
        if r["status"] != "open" or r["kind"] != "missing_article" or not r.get("misrouted_to"):
            continue
        routed = ", ".join(r.get("intents") or []) or "another intent"
        actions.append({
            "key": r["gap_id"], "scope_dimension": "gap", "scope_value": r["gap_id"],
            "value": r["n_conversations"], "example_conversation_ids": r["conversation_ids"][:5],
            "evidence": {"gap_id": r["gap_id"], "label": r["label"], "misrouted_to": r["misrouted_to"],
                         "routed_intents": r.get("intents"), "n_conversations": r["n_conversations"],
                         "reason": r["reason"]},
            "target_component": "intent_classifier",
            "improvement_action": (f"add an intent class for '{r['label']}' (gap {r['gap_id']}): the classifier "
                                   f"routes it to {routed} (article {r['misrouted_to']}), which does not answer it; "
                                   "retrain with these conversations relabelled"),
            "severity": r["impact"],
        })
    return add_actions(con, lake, dt, MISROUTED_SIGNAL, actions)
