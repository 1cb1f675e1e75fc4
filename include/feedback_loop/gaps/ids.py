"""Stable gap ids: a gap keeps the id it had the night before; closed gaps stay a while and can reopen."""

from __future__ import annotations

import hashlib
from datetime import date, timedelta

from feedback_loop.gaps.params import GapParams
from feedback_loop.lake.files import Lake


def _previous_gaps(con, lake: Lake, dt: str, p: GapParams) -> list[dict]:
    """The gap rows of the latest earlier night (within the retention), to carry ids over."""
    earlier = [d for d in lake.days("marts", "kb_gaps") if d < dt]
    if not earlier or date.fromisoformat(earlier[-1]) < date.fromisoformat(dt) - timedelta(days=p.closed_retention_days):
        return []
    cur = con.execute("SELECT * FROM read_parquet($f)", {"f": lake.partition_file("marts", "kb_gaps", earlier[-1])})
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def gap_id_for(anchor: str) -> str:
    return "gap-" + hashlib.sha1(anchor.encode()).hexdigest()[:10]


def assign_ids(rows: list[dict], previous: list[dict], dt: str, p: GapParams) -> list[dict]:
    """Give each gap the id it had last night (same anchor, else most shared conversations); close the rest.

    A new gap's id is derived from its anchor (its main intent, its article, or its top terms), so a gap
    found again after it left the mart gets the same id back when its anchor is the same.
    """
    prev_by_anchor = {r["anchor"]: r for r in previous}
    used: set[str] = set()
    pairs: list[tuple[float, int, str]] = []
    for i, r in enumerate(rows):
        if r["anchor"] in prev_by_anchor:
            pairs.append((2.0, i, prev_by_anchor[r["anchor"]]["gap_id"]))
        cur = set(r["conversation_ids"])
        for q in previous:
            old = set(q["conversation_ids"] or [])
            if cur and old and r["kind"] != "stale_article" and q["kind"] != "stale_article":
                overlap = len(cur & old) / min(len(cur), len(old))
                if overlap >= 0.3:
                    pairs.append((overlap, i, q["gap_id"]))
    prev_by_id = {q["gap_id"]: q for q in previous}
    matched: dict[int, dict] = {}
    for _score, i, gid in sorted(pairs, key=lambda t: (-t[0], t[1], t[2])):
        if i in matched or gid in used:
            continue
        matched[i] = prev_by_id[gid]
        used.add(gid)
    out = []
    taken: set[str] = set()
    for i, r in enumerate(rows):
        q = matched.get(i)
        if r["status"] == "watch":
            if q is None or q["status"] != "open":
                continue
            r = {**r, "status": "open"}
        if r["status"] == "addressed":
            if q is None:
                continue  # covered now and never reported open: nothing to tell
            closed_on = _day(q.get("closed_on")) if q["status"] == "closed" and q.get("closed_on") else dt
            if date.fromisoformat(closed_on) < date.fromisoformat(dt) - timedelta(days=p.closed_retention_days):
                continue
            r = {**r, "status": "closed", "closed_on": closed_on}
        else:
            r = {**r, "closed_on": None, "closed_reason": None}
        gid = q["gap_id"] if q else gap_id_for(r["anchor"])
        if gid in taken:  # two topics with one anchor: keep both, apart
            tail = r["conversation_ids"][0] if r["conversation_ids"] else str(i)
            gid = gap_id_for(f"{r['anchor']}|{tail}")
        taken.add(gid)
        out.append({**r, "gap_id": gid, "first_seen": _day(q["first_seen"]) if q else dt})
    for q in previous:  # last night's gaps that nothing matched tonight
        if q["gap_id"] in used or q["gap_id"] in taken:
            continue
        if q["status"] == "open":
            out.append({**_carry(q), "status": "closed", "closed_on": dt, "closed_reason": "no longer observed"})
        elif q.get("closed_on") and date.fromisoformat(_day(q["closed_on"])) >= date.fromisoformat(dt) - timedelta(days=p.closed_retention_days):
            out.append(_carry(q))
    # Out-of-scope topics rank after every knowledge gap: they must not crowd real gaps out of the top K.
    out.sort(key=lambda r: (r["status"] != "open", r["kind"] == "out_of_scope",
                            -r["impact"] if r["status"] == "open" else 0, r["kind"], r["gap_id"]))
    rank = 0
    for r in out:
        if r["status"] == "open":
            rank += 1
            r["rank"] = rank
        else:
            r["rank"] = None
    return out


def _carry(q: dict) -> dict:
    from feedback_loop.gaps.mart import ROW_FIELDS

    keep = {k: v for k, v in q.items() if k in ROW_FIELDS}
    for k in ("first_seen", "closed_on"):
        keep[k] = _day(keep.get(k))
    keep["nearest_articles"] = [dict(a) for a in (keep.get("nearest_articles") or [])]
    return keep


def _day(v) -> str | None:
    return None if v is None else str(v)[:10]
