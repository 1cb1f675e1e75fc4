"""The nightly review queue: which of the day's conversations people should label, and why.

Review time is scarce, so each night a budget (`Settings.review_budget`) of conversations is picked where
a label is worth most, each with the reasons it was picked:

| reason | rule (conversation facts of the day) | weight |
|---|---|---|
| `low_confidence` | the agent's final intent confidence < `review_low_confidence` | 2 + (threshold - confidence) |
| `miscalibrated` | confidence >= 0.9 but the outcome went badly (escalated, reopened, CSAT <= 2, thumbs down) | 2 |
| `reopened_after_resolved` | the case was resolved and then reopened | 1.5 |
| `positive_response_negative_csat` | a thumbs up in the conversation but CSAT <= 2 | 1.5 |
| `shadow_disagreement` | shadow-mode conversation whose intent differs from the human's case category | 2 |
| `policy_flag` | a policy check failed or was waived | 1 |
| `new_gap_topic` | a member of a knowledge-base gap first seen tonight | 1 |

Conversations a person already reviewed (any override) are left out. Candidates are taken by score
(ties broken by a hash of the conversation id, so a re-run picks the same ones) with caps: no intent takes
more than `review_max_intent_share` and no channel more than `review_max_channel_share` of the budget.

Outputs: `marts/review_queue/dt=<day>` (warehouse view `review_queue`), and for the annotation tool
`<lake>/review/dt=<day>/label_studio_tasks.json` (Label Studio's import format: `data` + the agent's
`predictions`) with the labelling config `<lake>/review/label_studio_config.xml`. The message shown to
reviewers is redacted (feedback_loop.datasets.pii). Completed reviews come back through
feedback_loop.review.label_studio.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter

from feedback_loop.lake.files import Lake, join
from feedback_loop.settings import Settings

log = logging.getLogger(__name__)

MART = "review_queue"
HIGH_CONFIDENCE = 0.9
WEIGHTS = {"low_confidence": 2.0, "miscalibrated": 2.0, "reopened_after_resolved": 1.5,
           "positive_response_negative_csat": 1.5, "shadow_disagreement": 2.0, "policy_flag": 1.0,
           "new_gap_topic": 1.0}
EXPLAIN = {
    "low_confidence": "agent unsure of the intent (confidence {confidence:.2f})",
    "miscalibrated": "agent confident ({confidence:.2f}) but the outcome went badly",
    "reopened_after_resolved": "resolved, then reopened",
    "positive_response_negative_csat": "thumbs up in the chat but CSAT {csat}",
    "shadow_disagreement": "shadow mode: agent said {intent}, the case was filed as {human_category}",
    "policy_flag": "policy check failed or waived ({policies})",
    "new_gap_topic": "member of a knowledge-base gap first seen tonight ({gaps})",
}
FACT_COLUMNS = ("conversation_id", "case_id", "channel", "final_intent", "final_confidence", "mode", "strategy",
                "first_customer_text", "resolved", "reopen_count", "csat", "n_thumbs_up", "n_thumbs_down",
                "escalated", "human_category", "n_policy_fail", "n_policy_waived", "policy_ids", "n_overrides",
                "actions_executed")


def _tiebreak(conversation_id: str) -> str:
    return hashlib.sha256(conversation_id.encode()).hexdigest()


def reasons_for(row: dict, low: float, new_gaps: dict[str, list[str]]) -> list[str]:
    """The reasons a conversation is worth a person's look (empty: it is not)."""
    out = []
    conf = row.get("final_confidence")
    csat = row.get("csat")
    bad = (bool(row.get("escalated")) or (row.get("reopen_count") or 0) > 0 or (csat is not None and csat <= 2)
           or (row.get("n_thumbs_down") or 0) > 0)
    if conf is not None and conf < low:
        out.append("low_confidence")
    elif conf is not None and conf >= HIGH_CONFIDENCE and bad:
        out.append("miscalibrated")
    if row.get("resolved") and (row.get("reopen_count") or 0) > 0:
        out.append("reopened_after_resolved")
    if (row.get("n_thumbs_up") or 0) > 0 and csat is not None and csat <= 2:
        out.append("positive_response_negative_csat")
    if (row.get("mode") == "shadow" and row.get("human_category")
            and row.get("human_category") != row.get("final_intent")):
        out.append("shadow_disagreement")
    if (row.get("n_policy_fail") or 0) + (row.get("n_policy_waived") or 0) > 0:
        out.append("policy_flag")
    if row["conversation_id"] in new_gaps:
        out.append("new_gap_topic")
    return out


def score(row: dict, reasons: list[str], low: float) -> float:
    s = sum(WEIGHTS[r] for r in reasons)
    if "low_confidence" in reasons:
        s += low - row["final_confidence"]
    return round(s, 6)


def explain(row: dict, reasons: list[str], new_gaps: dict[str, list[str]]) -> str:
    fill = {"confidence": row.get("final_confidence") or 0.0, "csat": row.get("csat"),
            "intent": row.get("final_intent"), "human_category": row.get("human_category"),
            "policies": ", ".join(row.get("policy_ids") or []) or "-",
            "gaps": ", ".join(new_gaps.get(row["conversation_id"], []))}
    return "; ".join(EXPLAIN[r].format(**fill) for r in reasons)


def select(rows: list[dict], budget: int, max_intent_share: float, max_channel_share: float, low: float,
           new_gaps: dict[str, list[str]] | None = None) -> tuple[list[dict], dict]:
    """Pick up to `budget` candidates by score within the per-intent and per-channel caps."""
    new_gaps = new_gaps or {}
    cap_intent = max(1, math.floor(budget * max_intent_share))
    cap_channel = max(1, math.floor(budget * max_channel_share))
    cands = []
    for r in rows:
        if (r.get("n_overrides") or 0) > 0:
            continue  # a person already reviewed it: its label exists
        why = reasons_for(r, low, new_gaps)
        if why:
            cands.append((-score(r, why, low), _tiebreak(r["conversation_id"]), r, why))
    cands.sort(key=lambda c: (c[0], c[1]))
    picked, by_intent, by_channel, capped = [], Counter(), Counter(), Counter()
    for neg, _, r, why in cands:
        if len(picked) >= budget:
            break
        intent, channel = r.get("final_intent") or "unknown", r.get("channel") or "unknown"
        if by_intent[intent] >= cap_intent:
            capped["intent"] += 1
            continue
        if by_channel[channel] >= cap_channel:
            capped["channel"] += 1
            continue
        by_intent[intent] += 1
        by_channel[channel] += 1
        picked.append({**r, "rank": len(picked) + 1, "score": -neg, "reasons": why,
                       "reason": explain(r, why, new_gaps), "gap_ids": new_gaps.get(r["conversation_id"], [])})
    stats = {"candidates": len(cands), "picked": len(picked), "budget": budget, "cap_per_intent": cap_intent,
             "cap_per_channel": cap_channel, "skipped_by_cap": dict(capped),
             "by_reason": dict(sorted(Counter(x for p in picked for x in p["reasons"]).items())),
             "by_intent": dict(sorted(by_intent.items())), "by_channel": dict(sorted(by_channel.items()))}
    return picked, stats


# ------------------------------------------------------------------------------------------------ inputs


def _facts(con, lake: Lake, dt: str) -> list[dict]:
    if not lake.has_partition("marts", "conversation_facts", dt):
        return []
    rel = f"read_parquet('{lake.partition_file('marts', 'conversation_facts', dt)}')"
    have = {d[0] for d in con.execute(f"SELECT * FROM {rel} LIMIT 0").description}
    cols = ", ".join(c if c in have else f"NULL AS {c}" for c in FACT_COLUMNS)
    cur = con.execute(f"SELECT {cols} FROM {rel} ORDER BY conversation_id")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def _new_gap_members(con, lake: Lake, dt: str) -> dict[str, list[str]]:
    """conversation id -> ids of the gaps first seen on `dt` it belongs to."""
    if not lake.has_partition("marts", "kb_gaps", dt):
        return {}
    rel = f"read_parquet('{lake.partition_file('marts', 'kb_gaps', dt)}')"
    have = {d[0] for d in con.execute(f"SELECT * FROM {rel} LIMIT 0").description}
    if not {"gap_id", "first_seen", "conversation_ids"} <= have:
        return {}
    out: dict[str, list[str]] = {}
    for gap_id, ids in con.execute(
            f"SELECT gap_id, conversation_ids FROM {rel} WHERE CAST(first_seen AS DATE) = DATE '{dt}' "
            "ORDER BY gap_id").fetchall():
        for cid in ids or []:
            out.setdefault(cid, []).append(gap_id)
    return out


def _first_responses(con, lake: Lake, dt: str, ids: list[str]) -> dict[str, str]:
    """The agent's first response of each picked conversation (staged events of the day): what a reviewer
    may rewrite, and what a response correction quotes so the datasets find the turn it replaces."""
    if not ids or not lake.has_partition("staged", "agent_events", dt):
        return {}
    rel = f"read_parquet('{lake.partition_file('staged', 'agent_events', dt)}')"
    rows = con.execute(f"""SELECT conversation_id, arg_min(text, ts) FROM {rel}
                           WHERE event_type = 'agent_response' AND text IS NOT NULL AND list_contains(?, conversation_id)
                           GROUP BY conversation_id""", [ids]).fetchall()
    return dict(rows)


# ------------------------------------------------------------------------------------------------ build


def build_queue(settings: Settings, dt: str) -> dict:
    """Select the day's review queue and write the mart, the Label Studio tasks and the config."""
    import pyarrow as pa

    from feedback_loop.datasets.pii import redactor
    from feedback_loop.lake.duck import connect
    from feedback_loop.review import label_studio

    lake = Lake(settings.lake)
    con = connect()
    try:
        facts = _facts(con, lake, dt)
        gaps = _new_gap_members(con, lake, dt)
        picked, stats = select(facts, settings.review_budget, settings.review_max_intent_share,
                               settings.review_max_channel_share, settings.review_low_confidence, gaps)
        red = redactor(settings)
        responses = _first_responses(con, lake, dt, [p["conversation_id"] for p in picked])
        for p in picked:
            p["message"] = red.redact(p.get("first_customer_text"))
            p["agent_response"] = red.redact(responses.get(p["conversation_id"]))
        table = pa.table({
            "rank": pa.array([p["rank"] for p in picked], pa.int32()),
            "conversation_id": pa.array([p["conversation_id"] for p in picked], pa.string()),
            "case_id": pa.array([p.get("case_id") for p in picked], pa.string()),
            "channel": pa.array([p.get("channel") for p in picked], pa.string()),
            "agent_intent": pa.array([p.get("final_intent") for p in picked], pa.string()),
            "agent_confidence": pa.array([p.get("final_confidence") for p in picked], pa.float64()),
            "mode": pa.array([p.get("mode") for p in picked], pa.string()),
            "score": pa.array([p["score"] for p in picked], pa.float64()),
            "reasons": pa.array([p["reasons"] for p in picked], pa.list_(pa.string())),
            "reason": pa.array([p["reason"] for p in picked], pa.string()),
            "gap_ids": pa.array([p["gap_ids"] for p in picked], pa.list_(pa.string())),
            "policy_ids": pa.array([list(p.get("policy_ids") or []) for p in picked], pa.list_(pa.string())),
            "message": pa.array([p["message"] for p in picked], pa.string()),
            "agent_response": pa.array([p["agent_response"] for p in picked], pa.string()),
        })
        con.register("queue_rows", table)
        path = lake.write_query(con, f"SELECT DATE '{dt}' AS queue_date, * FROM queue_rows ORDER BY rank",
                                "marts", MART, dt)
    finally:
        con.close()
    intents = label_studio.intent_labels(facts)
    from feedback_loop.lake.files import write_bytes_atomic

    config_path = join(lake.root, "review", "label_studio_config.xml")
    write_bytes_atomic(config_path, label_studio.labeling_config(intents).encode())
    tasks_path = join(lake.root, "review", f"dt={dt}", "label_studio_tasks.json")
    write_bytes_atomic(tasks_path, (json.dumps(label_studio.tasks(picked, dt), indent=2, default=str) + "\n").encode())
    log.info("review queue %s: %s of %s candidates (budget %s) %s", dt, len(picked), stats["candidates"],
             settings.review_budget, stats["by_reason"])
    return {"dt": dt, **stats, "mart": path, "tasks": tasks_path, "config": config_path}
