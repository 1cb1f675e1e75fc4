"""Draft articles for missing-article gaps: what human agents replied once the conversation was theirs.

A missing article is knowledge the agent lacks but the people behind it have: when a conversation of the
gap was escalated, the human's replies after the hand-over are the first draft of the article to write.
They are redacted like every other text of the stage before they reach the mart or the page.
"""

from __future__ import annotations

from collections import Counter

from feedback_loop.gaps.params import GapParams
from feedback_loop.lake.sql import load_sql


def attach_drafts(con, p: GapParams, rows: list[dict], redact) -> int:
    """Fill `draft_replies` of the missing-article rows (most repeated reply first); returns how many got one."""
    wanted = {c: r["gap_index"] for r in rows if r["kind"] == "missing_article" and r["status"] == "open"
              for c in r.get("escalated_ids", [])}
    if not wanted:
        return 0
    import pyarrow as pa

    con.register("draft_ids_in", pa.table({"conversation_id": pa.array(sorted(wanted), pa.string())}))
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE draft_ids AS SELECT * FROM draft_ids_in")
        replies = con.execute(load_sql("feedback_loop.gaps", "replies.sql")).fetchall()
    finally:
        con.unregister("draft_ids_in")
    per_gap: dict[int, Counter] = {}
    for conversation_id, texts in replies:
        for text in texts or []:
            per_gap.setdefault(wanted[conversation_id], Counter())[redact(text)] += 1
    done = 0
    for r in rows:
        counts = per_gap.get(r.get("gap_index"))
        if counts:
            r["draft_replies"] = [t for t, _n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][: p.draft_replies]
            done += 1
    return done
