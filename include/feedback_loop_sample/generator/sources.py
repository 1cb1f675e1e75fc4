"""One day of each source as an Arrow table, from the simulation: agent events, CRM cases, surveys,
overrides, outcome checks and KB articles.

Over 500 lines on purpose: the six builders read the same simulation arrays in the same way, and the
agent-events builder alone is about 220 lines of vectorised column code; split further they would only
pass those arrays around.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
from feedback_loop.ingest.contract import EVENT_TYPES

from feedback_loop_sample.generator.common import (
    ACTIONS,
    CASE_LOOKBACK,
    CHANNELS,
    CHECK_LOOKBACK,
    ERRORS,
    ET,
    FOLLOW_BAD,
    FOLLOW_GOOD,
    FOLLOW_RESP_BAD,
    FOLLOW_RESP_GOOD,
    GENERIC_RESP,
    HANDOVER,
    MODELS,
    MS_DAY,
    OUTCOMES,
    OVERRIDE_LOOKBACK,
    POLICY_OUTCOMES,
    REASONS,
    S_EVENTS,
    STAGES,
    SURVEY_LOOKBACK,
    _day_ms,
    _dict,
    _num,
    _pyrng,
    _rng,
    _ts,
    _tz_cols,
)
from feedback_loop_sample.generator.world import _Gen, _lognormal, _wide, _World

# ----------------------------------------------------------------------------- building the sources


def _events(g: _Gen, day: date) -> tuple[pa.Table, list]:
    """The agent's trace for the day's conversations: ~10 events per conversation, in time order."""
    import pyarrow.compute as pc

    c, st, w = _wide(g.core(day)), g.st, g.w
    n, n_int = c.n, len(st.intents)
    rng = _rng(w.seed, day, S_EVENTS)
    live = ~c.shadow
    n_art = len(w.kb_ids)
    pred, utt, intent = c.pred.astype(np.int64), c.utt.astype(np.int64), c.intent.astype(np.int64)
    known = pred < n_int
    pred77 = np.minimum(pred, n_int - 1)

    # Conversation-level draws that nothing else depends on.
    thumbs = live & (rng.random(n) < 0.25)
    good = c.correct & ~c.gap & ~c.fallback & ~c.esc
    rating = np.where(rng.random(n) < np.where(good, 0.85, 0.25), 1, -1)
    # Retrieval: the right article scores high when it exists; a gap only gets low scores or nothing.
    true_art = w.article[intent]
    pred_art = np.where(known, w.article[pred77], -1)
    nb_art = w.article[st.neigh[intent]]  # (n, 4) neighbours' articles, -1 where a gap
    rand_art = rng.integers(0, max(n_art, 1), (n, 4))
    others = np.where(nb_art >= 0, nb_art, rand_art)[:, rng.permutation(4)]
    lo_scores = np.sort(rng.uniform(0.05, 0.29, (n, 3)), axis=1)[:, ::-1]
    hi = np.where(c.correct, rng.uniform(0.72, 0.97, n), rng.uniform(0.45, 0.8, n)) + 0.02 * c.rag
    mid = np.sort(rng.uniform(0.2, 0.6, (n, 2)), axis=1)[:, ::-1] * hi[:, None] / 0.97
    gap_len = np.where(rng.random(n) < 0.4, 0, rng.integers(1, 4, n))
    wrong_first = ~c.correct & (pred_art >= 0) & (pred_art != true_art) & (rng.random(n) < 0.5)
    arts = np.stack([np.where(c.gap, others[:, 0], np.where(wrong_first, pred_art, true_art)),
                     np.where(c.gap, others[:, 1], np.where(wrong_first, true_art, others[:, 0])),
                     np.where(c.gap, others[:, 2], others[:, 1])], axis=1)
    scores = np.round(np.stack([np.where(c.gap, lo_scores[:, 0], hi),
                                np.where(c.gap, lo_scores[:, 1], np.where(wrong_first, hi * 0.85, mid[:, 0])),
                                np.where(c.gap, lo_scores[:, 2], mid[:, 1])], axis=1), 3)
    kb_len = np.where(c.gap, gap_len, rng.integers(1, 4, n)) if n_art else np.zeros(n, np.int64)
    kb_len = np.where((kb_len == 3) & ((arts[:, 2] == arts[:, 0]) | (arts[:, 2] == arts[:, 1])), 2, kb_len)
    kb_len = np.where((kb_len >= 2) & (arts[:, 1] == arts[:, 0]), 1, kb_len)
    sugg = live & ~c.fallback & (kb_len > 0) & (rng.random(n) < 0.30)
    sugg_next = np.where(rng.random(n) < 0.45, ET["suggestion_dismissed"],
                         np.where(rng.random(n) < 0.73, ET["link_clicked"], -1))
    sugg_next = np.where(sugg, sugg_next, -1)

    # Event skeleton: (conversation, slot) pairs. Slots: 0 cm, 1 ic, 2 kq, 3 pc, 4 ap, 5 ae, 6 fb, 7 ar,
    # 8 ss, 9 sd/lc, then per follow-up turn cm, kq, ar (10-12 turn 1, 13-15 turn 2), 16 error, 17 thumbs,
    # 18 escalated. The agent retrieves again on every turn.
    cm, kq, ar = ET["customer_message"], ET["kb_query"], ET["agent_response"]
    slot_type = np.array([cm, ET["intent_classified"], kq, ET["policy_check"], ET["action_proposed"],
                          ET["action_executed"], ET["fallback"], ar, ET["suggestion_shown"], -1,
                          cm, kq, ar, cm, kq, ar, ET["error"], ET["thumbs"], ET["escalated"]])
    slot_turn = np.array([0] * 10 + [1, 1, 1, 2, 2, 2, -1, -1, -1])
    gap_w = np.array([0, 1, 1, 0.3, 1.5, 2, 0.5, 4, 0.5, 6, 25, 1, 4, 25, 1, 4, 1, 6, 2])
    every = np.ones(n, bool)
    t2, t3 = c.turns >= 2, c.turns >= 3
    masks = [every, every, every, every, c.proposed, c.exec, c.fallback, every, sugg, sugg_next >= 0,
             t2, t2, t2, t3, t3, t3, c.error >= 0, thumbs, c.esc]
    conv = np.concatenate([np.flatnonzero(m) for m in masks])
    slot = np.concatenate([np.full(int(m.sum()), s, dtype=np.int8) for s, m in enumerate(masks)])
    order = np.lexsort((slot, conv))
    conv, slot = conv[order], slot[order]
    e = len(conv)
    counts = np.bincount(conv, minlength=n)
    first = np.cumsum(counts) - counts
    seq = (np.arange(e) - first[conv]).astype(np.int16)

    # Each event sits after a random gap (weighted by slot: customers type slower than models answer);
    # the gaps are scaled so the conversation fits its duration. `+ seq` keeps ts strictly increasing.
    gaps = gap_w[slot] * rng.gamma(2.0, 0.5, e)
    cs = np.cumsum(gaps)
    cs -= (cs - gaps)[first][conv]
    del gaps
    total = np.zeros(n)
    has = counts > 0
    total[has] = cs[(first + counts - 1)[has]]
    total += 1.0
    ts = c.start[conv] + np.floor(c.dur[conv] * cs / total[conv]).astype(np.int64) + seq
    del cs

    # The export is a log: reorder once, by time (ties keep conversation order), before any column exists.
    order = np.lexsort((seq, conv, ts))
    conv, slot, seq, ts = conv[order], slot[order], seq[order], ts[order]
    del order
    draws = rng.random((3, e))  # per-event noise, drawn after ordering so columns line up

    etype = np.where(slot == 9, sugg_next[conv], slot_type[slot]).astype(np.int8)
    turn = np.where(slot_turn[slot] >= 0, slot_turn[slot], c.turns[conv] - 1).astype(np.int64)
    is_cm = etype == cm
    is_ic = slot == 1
    is_kq = etype == kq
    is_pc = slot == 3
    is_act = (slot == 4) | (slot == 5)
    is_ar = etype == ar
    is_llm = (slot == 4) | is_ar
    is_model = is_ic | is_kq | is_llm
    customer_side = is_cm | (etype == ET["thumbs"]) | (etype == ET["suggestion_dismissed"]) | \
        (etype == ET["link_clicked"])
    off = np.where(customer_side, c.off[conv], 0)

    # Texts: one dictionary for the whole day (static vocabulary + the day's openings with PII).
    v = w.v
    pii_strings, pii_open = g.openings(g.core(day))
    vocab = pa.array(w.vocab + pii_open, pa.string())
    open_idx = v["utt"] + utt
    open_idx[c.pii_rows] = len(w.vocab) + np.arange(len(c.pii_rows))
    bad = ~c.correct | c.gap | c.fallback
    other_utt = v["utt"] + st.utt_start[intent] + (rng.random((2, n)) * st.utt_count[intent]).astype(np.int64)
    fu_bad = np.where(rng.random((2, n)) < 0.4, other_utt, v["bad"] + rng.integers(0, len(FOLLOW_BAD), (2, n)))
    fu_good = np.where(rng.random((2, n)) < 0.15, other_utt, v["good"] + rng.integers(0, len(FOLLOW_GOOD), (2, n)))
    follow = np.where(bad, fu_bad, fu_good)
    answer = np.where(known, v["resp"] + pred77 * 3 + c.variant, v["generic"])
    answer = np.where(c.fallback, v["fallback"] + c.variant, answer)
    fresp = np.where(bad[None, :], v["fbad"] + rng.integers(0, len(FOLLOW_RESP_BAD), (2, n)),
                     v["fgood"] + rng.integers(0, len(FOLLOW_RESP_GOOD), (2, n)))
    handover = v["handover"] + rng.integers(0, len(HANDOVER), n)
    top_art = np.maximum(arts[:, 0], 0)
    text = np.full(e, -1, dtype=np.int64)
    query = np.full(e, -1, dtype=np.int64)
    for s, src, dst in ((0, open_idx, text), (10, follow[0], text), (13, follow[1], text), (7, answer, text),
                        (12, fresp[0], text), (15, fresp[1], text), (18, handover, text),
                        (8, v["sugg"] + top_art, text), (2, v["utt"] + utt, query), (11, follow[0], query),
                        (14, follow[1], query)):
        sel = slot == s
        dst[sel] = src[conv[sel]]
    sel = etype == ET["link_clicked"]
    text[sel] = v["url"] + top_art[conv[sel]]
    del follow, fu_bad, fu_good, other_utt

    # kb_results: the retrieved list on kb_query rows, the suggested article on suggestion_shown rows.
    has_kb = is_kq | (slot == 8)
    kb_rows = conv[has_kb]
    lens = np.zeros(e, np.int64)
    lens[has_kb] = np.where(slot[has_kb] == 8, 1, kb_len[kb_rows])
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    take = np.arange(3)[None, :] < lens[has_kb][:, None]
    kb_ids = pa.array(w.kb_ids or [""], pa.string())
    kb_values = pa.StructArray.from_arrays(
        [kb_ids.take(pa.array(np.maximum(arts[kb_rows][take], 0))), pa.array(scores[kb_rows][take])],
        names=["article_id", "score"])
    kb_results = pa.ListArray.from_arrays(pa.array(offsets), kb_values, mask=pa.array(~has_kb))
    del lens, offsets, take, kb_rows

    # Actions: arguments built once per conversation that has one (a few % of rows).
    act_rows = np.flatnonzero(c.proposed)
    pr = _pyrng(w.seed, day, S_EVENTS)
    args_text = []
    for i in act_rows:
        a = ACTIONS[c.act[i]][0]
        d = {"case_id": f"CASE-{c.ymd}-{i + 1:06d}" if c.has_case[i] else None,
             "customer_id": f"CUST-{c.cust[i]:07d}"}
        if a in ("issue_refund", "open_dispute"):
            d.update(amount=round(pr.uniform(5, 400), 2), currency=pr.choice(("EUR", "GBP", "USD")))
        elif a in ("cancel_transfer", "retry_transfer"):
            d["transfer_id"] = f"TR-{pr.getrandbits(40):010x}"
        elif a in ("freeze_card", "unblock_pin", "activate_card", "order_card"):
            d["card_last4"] = f"{pr.randint(0, 9999):04d}"
        elif a == "update_profile":
            d["field"] = pr.choice(("address", "phone", "name"))
        args_text.append(json.dumps(d, separators=(",", ":")))
    args_of = np.full(n, -1)
    args_of[act_rows] = np.arange(len(act_rows))

    # Tokens, latency and cost on model steps (and latency on tool steps).
    rag = c.rag[conv]
    lat_med = np.select([is_ic, is_kq, is_pc, slot == 4, slot == 5, is_ar],
                        [120.0, 250.0, 30.0, 900.0, 600.0, 2200.0], 0.0) * np.where(rag & is_llm, 1.25, 1.0)
    latency = np.round(lat_med * np.exp(0.4 * (draws[0] * 2 - 1) * 1.7), 1)
    u = draws[1]
    tin = np.select([is_ic, is_kq, slot == 4],
                    [180 + u * 240, 12 + u * 68, 600 + u * 900],
                    np.where(rag, 1600 + u * 2600, 900 + u * 1500) + 500 * turn).astype(np.int64)
    u = draws[2]
    tout = np.select([is_ic, is_kq, slot == 4], [4 + u * 8, u * 0, 30 + u * 60], 60 + u * 260).astype(np.int64)
    model = np.select([is_ic, is_kq], [0, 1], 2)
    keys = ("clf", "embed", "llm")
    cost = np.round((tin * np.array([MODELS[k][1] for k in keys])[model]
                     + tout * np.array([MODELS[k][2] for k in keys])[model]) / 1e6, 8)
    is_sd_lc = (etype == ET["suggestion_dismissed"]) | (etype == ET["link_clicked"])
    dwell = np.zeros(e, np.int64)
    dwell[is_sd_lc] = _lognormal(rng, 4_000, 0.9, int(is_sd_lc.sum()), 300, 120_000)
    err_idx = np.maximum(c.error[conv], 0)
    del draws, u

    conv_ids = pa.array([f"CONV-{c.ymd}-{i + 1:06d}" for i in range(n)], pa.string())
    case_ids = pa.array([f"CASE-{c.ymd}-{i + 1:06d}" for i in range(n)], pa.string())
    cust_ids = pa.array([f"CUST-{x:07d}" for x in c.cust], pa.string())
    seq_ids = pa.array([f"{s:02d}" for s in range(int(seq.max()) + 1 if e else 1)], pa.string())
    conv_idx = pa.array(conv.astype(np.int32))
    event_id = pc.binary_join_element_wise(conv_ids.take(conv_idx), seq_ids.take(pa.array(seq)), "-")
    cols = {
        "event_id": event_id,
        "ts": _ts(ts),
        "conversation_id": pa.DictionaryArray.from_arrays(conv_idx, conv_ids),
        "case_id": _dict(conv, case_ids, mask=~c.has_case[conv] | (slot == 0)),
        "customer_id": pa.DictionaryArray.from_arrays(conv_idx, cust_ids),
        "turn": _num(turn, None, pa.int64()),
        "event_type": _dict(etype, EVENT_TYPES),
        "text": _dict(np.maximum(text, 0), vocab, mask=text < 0),
        "intent": _dict(pred[conv], g.labels, mask=~is_ic),
        "confidence": _num(c.conf[conv], ~is_ic, pa.float64()),
        "kb_query": _dict(np.maximum(query, 0), vocab, mask=query < 0),
        "kb_results": kb_results,
        "policy_id": _dict(c.policy[conv], st.policy, mask=~is_pc),
        "policy_outcome": _dict(c.pol[conv], POLICY_OUTCOMES, mask=~is_pc),
        "action": _dict(np.maximum(c.act[conv], 0), [a[0] for a in ACTIONS], mask=~is_act),
        "action_args": _dict(np.maximum(args_of[conv], 0), args_text or [""], mask=~is_act),
        "action_status": _dict(np.where(slot == 4, np.where(c.shadow[conv], 4, 3), c.act_status[conv]),
                               ("ok", "failed", "timeout", "proposed", "awaiting_human"), mask=~is_act),
        "rating": _num(rating[conv], etype != ET["thumbs"], pa.int64()),
        "dwell_ms": _num(dwell, ~is_sd_lc, pa.int64()),
        "model": _dict(model, [MODELS[k][0] for k in keys], mask=~is_model),
        "strategy": _dict(rag.astype(np.int8), ("baseline", "rag-v2")),
        "mode": _dict(c.shadow[conv].astype(np.int8), ("live", "shadow")),
        "input_tokens": _num(tin, ~is_model, pa.int64()),
        "output_tokens": _num(tout, ~is_model, pa.int64()),
        "latency_ms": _num(latency, ~(lat_med > 0), pa.float64()),
        "cost_usd": _num(cost, ~is_model, pa.float64()),
        "error_type": _dict(err_idx, [x[0] for x in ERRORS], mask=etype != ET["error"]),
        "error_message": _dict(err_idx, [x[1] for x in ERRORS], mask=etype != ET["error"]),
        "true_intent": _dict(intent[conv], st.intents, mask=~is_cm),
        **_tz_cols(off, "+00:00"),
        "_clean": pa.array(~is_cm),  # rows planted copies may start from: no PII, not an opening
    }
    return pa.table(cols), list(pii_strings)


def _milestone_rows(c, dnum: int):
    """Each case's last milestone on day `dnum` (epoch days): its row in that day's CRM export."""
    m = c.case.m
    on = (m >= 0) & (m // MS_DAY == dnum)
    rows = np.flatnonzero(on.any(1))
    last = 5 - np.argmax(on[rows][:, ::-1], axis=1)
    return rows, last


def _cases(g: _Gen, day: date) -> pa.Table:
    """The CRM's 'updated since' export: every case whose state changed that day, as of its last change."""
    st, dnum = g.st, _day_ms(day) // MS_DAY
    parts = []
    for lag in range(CASE_LOOKBACK, -1, -1):
        c = g.core(day - timedelta(lag))
        rows, j = _milestone_rows(c, dnum)
        if not len(rows):
            continue
        cs = _wide(c.case)
        m = cs.m[rows]
        reopened = cs.reopened[rows]
        last_solve = np.where(reopened, m[:, 4], m[:, 2])
        resolved_at = np.select([j == 2, j == 4, j == 5], [m[:, 2], m[:, 4], last_solve], -1)
        human_solve = cs.human[rows] | (j >= 4) & reopened
        resolved_by = np.where(resolved_at >= 0, np.where(human_solve, 1, 0), -1)
        esc = cs.esc[rows] & (j >= 1)
        touched = cs.human[rows] & ((j >= 1) | cs.shadow[rows] | (cs.conv[rows] < 0)) | (reopened & (j >= 3))
        ht = np.where(j >= 2, cs.ht1[rows], np.nan) + np.where(j >= 4, cs.ht2[rows], 0)
        bits = (cs.shadow[rows] * 1 + esc * 2 + (reopened & (j >= 3)) * 4 + ((resolved_by == 0) * 8)
                + (cs.conv[rows] < 0) * 16)
        conv = cs.conv[rows]
        ids = [f"CASE-{c.ymd}-{i + 1:06d}" if i < c.n else f"CASE-{c.ymd}-X{i - c.n + 1:05d}" for i in rows]
        parts.append({
            "case_id": ids,
            "customer_id": [f"CUST-{x:07d}" for x in cs.cust[rows]],
            "conversation_id": [f"CONV-{c.ymd}-{i + 1:06d}" if i >= 0 else None for i in conv],
            "channel": cs.channel[rows], "created_at": m[:, 0], "updated_at": m[np.arange(len(rows)), j],
            "status": j, "resolved_at": resolved_at, "resolved_by": resolved_by, "escalated": esc,
            "reason": np.where(esc, cs.reason[rows], -1), "reopen_count": np.where(reopened & (j >= 3), 1, 0),
            "last_reopened_at": np.where(j >= 3, m[:, 3], -1), "handle_time_s": np.round(ht, 1),
            "category": np.where(touched, cs.intent[rows], -1),
            "tags": bits * 5 + np.where(esc, cs.reason[rows], -1) + 1,  # index into the tag combinations
        })
    names = ("case_id", "customer_id", "conversation_id", "channel", "created_at", "updated_at", "status",
             "resolved_at", "resolved_by", "escalated", "reason", "reopen_count", "last_reopened_at",
             "handle_time_s", "category", "tags")
    cat = {}
    for k in names:
        vals = [p[k] for p in parts]
        if k in ("case_id", "customer_id", "conversation_id"):
            cat[k] = [x for v in vals for x in v]
        else:
            cat[k] = np.concatenate(vals) if vals else np.zeros(0, bool if k == "escalated" else np.int64)
    cat["handle_time_s"] = cat["handle_time_s"].astype(np.float64)
    tag_combos = []
    for bits in range(32):
        for r in range(-1, len(REASONS)):
            t = ["ai_agent"] if not bits & 16 else ["phone_or_email"]
            t += ["shadow"] * bool(bits & 1) + ["escalated"] * bool(bits & 2) + ([REASONS[r]] if r >= 0 else [])
            t += ["reopened"] * bool(bits & 4) + ["auto_resolved"] * bool(bits & 8)
            tag_combos.append(t)
    tags = pa.array(tag_combos, pa.list_(pa.string())).take(pa.array(cat["tags"], pa.int64()))
    table = pa.table({
        "case_id": pa.array(cat["case_id"], pa.string()),
        "customer_id": pa.array(cat["customer_id"], pa.string()),
        "conversation_id": pa.array(cat["conversation_id"], pa.string()),
        "channel": _dict(cat["channel"], CHANNELS),
        "created_at": _ts(cat["created_at"]),
        "updated_at": _ts(cat["updated_at"]),
        "status": _dict(np.array([0, 1, 2, 0, 2, 3])[cat["status"]], ("open", "pending", "solved", "closed")),
        "resolved_at": _ts(np.maximum(cat["resolved_at"], 0), mask=cat["resolved_at"] < 0),
        "resolved_by": _dict(np.maximum(cat["resolved_by"], 0), ("ai", "human"), mask=cat["resolved_by"] < 0),
        "escalated": pa.array(cat["escalated"], pa.bool_()),
        "escalation_reason": _dict(np.maximum(cat["reason"], 0), REASONS, mask=cat["reason"] < 0),
        "reopen_count": _num(cat["reopen_count"], None, pa.int64()),
        "last_reopened_at": _ts(np.maximum(cat["last_reopened_at"], 0), mask=cat["last_reopened_at"] < 0),
        "handle_time_s": _num(np.nan_to_num(cat["handle_time_s"]), np.isnan(cat["handle_time_s"]), pa.float64()),
        "category": _dict(np.maximum(cat["category"], 0), st.intents, mask=cat["category"] < 0),
        "tags": tags,
        **_tz_cols(np.zeros(len(cat["case_id"]), np.int64), "Z"),
        "_clean": pa.array(np.ones(len(cat["case_id"]), bool)),
    })
    return table.take(pa.array(np.argsort(cat["updated_at"], kind="stable"), pa.int64()))


def _surveys(g: _Gen, day: date) -> tuple[pa.Table, list]:
    """Survey answers submitted that day, for cases solved up to a few days earlier."""
    dnum = _day_ms(day) // MS_DAY
    rows: dict = {k: [] for k in ("survey_id", "case_id", "conversation_id", "t", "kind", "score", "comment",
                                  "off", "clean")}
    pii = []
    for lag in range(SURVEY_LOOKBACK, -1, -1):
        c = g.core(day - timedelta(lag))
        sv = c.sv
        for j in np.flatnonzero(sv.t // MS_DAY == dnum):
            i = int(sv.case[j])
            case_id = f"CASE-{c.ymd}-{i + 1:06d}" if i < c.n else f"CASE-{c.ymd}-X{i - c.n + 1:05d}"
            conv_id = f"CONV-{c.ymd}-{i + 1:06d}" if i < c.n else None
            comment, p = sv.comments[j]
            if p:
                pii.append(p)
            for kind, score in (("csat", sv.csat[j]), ("ces", sv.ces[j])):
                if score == 0:
                    continue
                rows["survey_id"].append(f"SRV-{c.ymd}-{i + 1:06d}-{kind}")
                rows["case_id"].append(case_id)
                rows["conversation_id"].append(conv_id)
                rows["t"].append(int(sv.t[j]))  # one submission: both answers share its time
                rows["kind"].append(kind)
                rows["score"].append(int(score))
                rows["comment"].append(comment if kind == "csat" else None)
                rows["off"].append(int(c.case.off[i]))
                rows["clean"].append(p is None)
    return pa.table({
        "survey_id": pa.array(rows["survey_id"], pa.string()),
        "case_id": pa.array(rows["case_id"], pa.string()),
        "conversation_id": pa.array(rows["conversation_id"], pa.string()),
        "submitted_at": _ts(np.array(rows["t"], np.int64)),
        "kind": pa.array(rows["kind"], pa.string()),
        "score": pa.array(rows["score"], pa.int64()),
        "comment": pa.array(rows["comment"], pa.string()),
        **_tz_cols(np.array(rows["off"], np.int64), "+00:00"),
        "_clean": pa.array(rows["clean"], pa.bool_()),
    }), pii


def _override_text(g: _Gen, c, j: int) -> dict:
    """The human's side of one review, in words a reviewer would write."""
    st, ov = g.st, c.ov
    i, stage, outcome = int(ov.conv[j]), int(ov.stage[j]), int(ov.outcome[j])
    true, pred = int(c.intent[i]), int(c.pred[i])
    t_title = st.titles[true].lower()
    p_title = (st.titles[pred] if pred < len(st.intents) else g.labels[pred]).lower()
    snippet = st.utt_text[c.utt[i]][:80]
    v = (i + j) % 3
    if stage == 0:
        agent = g.labels[pred]
        human = st.intents[true]
        rationale = (
            (f"Customer asks about {t_title}, not {p_title}.",
             f"The message is about {t_title}; the agent picked {p_title}.",
             f"Misread the request: this is {t_title}.")[v] if outcome == 0 else
            f"Unclear between {p_title} and {t_title}; sent to the team lead." if outcome == 1 else
            ("Intent is correct.", "Checked, the agent got this right.", "Correct label.")[v])
        clause = st.policy[true]
    elif stage == 1:
        a = ACTIONS[c.act[i]][0]
        agent = a
        human = f"revert {a}" if not c.correct[i] else f"retry {a}"
        rationale = (f"{a} did not match the customer's request ({t_title})." if not c.correct[i]
                     else f"The back end returned an error; ran {a} again by hand.")
        clause = st.policy[true]
    elif stage == 2:
        agent = st.resp[pred * 3 + int(c.variant[i])] if pred < len(st.intents) else GENERIC_RESP
        human = (f"Sorry for the confusion. For {t_title}, our team has checked your account and will "
                 f"resolve it within 2 business days.")
        rationale = "The agent answered without a matching article and gave generic steps."
        clause = st.policy[true]
    else:
        agent, human = "fail", "waive"
        rationale = "Customer qualifies for an exception: long-standing account, first occurrence."
        clause = st.policy[int(c.policy[i])]
    evidence = f'Customer wrote: "{snippet}"' if stage != 2 else f"No published article covers {st.intents[true]}."
    kind, p = ov.pii[j]
    if kind == "evidence":
        evidence = f"Customer confirmed their contact details: {p}"
    if kind == "rationale":
        rationale += f" Called the customer back on {p}."
    has_r = bool(ov.has_rationale[j]) and ov.missing[j] != 1
    ground = 0 if ov.missing[j] == 2 else int(ov.ground[j])
    written = (kind == "evidence" and ground & 2) or (kind == "rationale" and has_r)
    return {"agent_decision": agent, "agent_confidence": float(c.conf[i]), "human_decision": human,
            "rationale": rationale if has_r else None, "policy_clause_id": clause if ground & 1 else None,
            "evidence": evidence if ground & 2 else None, "pii": p if written else None}


def _overrides(g: _Gen, day: date) -> tuple[pa.Table, list, list]:
    """Reviews logged that day. Natural incomplete triads are returned so the ground truth lists them."""
    dnum = _day_ms(day) // MS_DAY
    rows: dict = {k: [] for k in ("override_id", "t", "conversation_id", "case_id", "reviewer_id", "stage",
                                  "agent_decision", "agent_confidence", "human_decision", "rationale",
                                  "policy_clause_id", "evidence", "outcome", "clean")}
    pii, natural = [], []
    for lag in range(OVERRIDE_LOOKBACK, -1, -1):
        c = g.core(day - timedelta(lag))
        ov = c.ov
        for j in np.flatnonzero(ov.t // MS_DAY == dnum):
            i = int(ov.conv[j])
            txt = _override_text(g, c, int(j))
            oid = f"OVR-{c.ymd}-{j + 1:06d}"
            rows["override_id"].append(oid)
            rows["t"].append(int(ov.t[j]))
            rows["conversation_id"].append(f"CONV-{c.ymd}-{i + 1:06d}")
            rows["case_id"].append(f"CASE-{c.ymd}-{i + 1:06d}" if c.has_case[i] else None)
            rows["reviewer_id"].append(f"REV-{int(ov.reviewer[j]):03d}")
            rows["stage"].append(STAGES[ov.stage[j]])
            rows["outcome"].append(OUTCOMES[ov.outcome[j]])
            for k in ("agent_decision", "agent_confidence", "human_decision", "rationale", "policy_clause_id",
                      "evidence"):
                rows[k].append(txt[k])
            if txt["pii"]:
                pii.append(txt["pii"])
            incomplete = ov.missing[j] > 0
            if incomplete:
                natural.append(oid)
            rows["clean"].append(not incomplete and txt["pii"] is None and ov.outcome[j] == 0)
    order = np.argsort(np.array(rows["t"], np.int64), kind="stable")
    table = pa.table({
        "override_id": pa.array(rows["override_id"], pa.string()),
        "ts": _ts(np.array(rows["t"], np.int64)),
        "conversation_id": pa.array(rows["conversation_id"], pa.string()),
        "case_id": pa.array(rows["case_id"], pa.string()),
        "reviewer_id": pa.array(rows["reviewer_id"], pa.string()),
        "stage": pa.array(rows["stage"], pa.string()),
        "agent_decision": pa.array(rows["agent_decision"], pa.string()),
        "agent_confidence": pa.array(rows["agent_confidence"], pa.float64()),
        "human_decision": pa.array(rows["human_decision"], pa.string()),
        "rationale": pa.array(rows["rationale"], pa.string()),
        "policy_clause_id": pa.array(rows["policy_clause_id"], pa.string()),
        "evidence": pa.array(rows["evidence"], pa.string()),
        "outcome": pa.array(rows["outcome"], pa.string()),
        **_tz_cols(np.zeros(len(rows["t"]), np.int64), "Z"),
        "_clean": pa.array(rows["clean"], pa.bool_()),
    })
    return table.take(pa.array(order, pa.int64())), pii, natural


def _checks(g: _Gen, day: date) -> pa.Table:
    """Verifications of the agent's executed actions that ran that day."""
    dnum = _day_ms(day) // MS_DAY
    ids, case_ids, action, t, exp, obs, ver = [], [], [], [], [], [], []
    for lag in range(CHECK_LOOKBACK, -1, -1):
        c = g.core(day - timedelta(lag))
        rows = np.flatnonzero((c.chk_t >= 0) & (c.chk_t // MS_DAY == dnum))
        rows = rows[np.argsort(c.chk_t[rows], kind="stable")]
        for i in rows:
            a = ACTIONS[c.act[i]]
            ids.append(f"CHK-{c.ymd}-{i + 1:06d}")
            case_ids.append(f"CASE-{c.ymd}-{i + 1:06d}")
            action.append(a[0])
            t.append(int(c.chk_t[i]))
            exp.append(a[1])
            obs.append(a[1] if c.verified[i] else a[2])
            ver.append(bool(c.verified[i]))
    return pa.table({
        "check_id": pa.array(ids, pa.string()), "case_id": pa.array(case_ids, pa.string()),
        "action": pa.array(action, pa.string()), "checked_at": _ts(np.array(t, np.int64)),
        "expected_state": pa.array(exp, pa.string()), "observed_state": pa.array(obs, pa.string()),
        "verified": pa.array(ver, pa.bool_()),
        **_tz_cols(np.zeros(len(t), np.int64), "+00:00"),
        "_clean": pa.array(np.ones(len(t), bool)),
    })


def _kb_rows(w: _World, day: date) -> list[dict]:
    """The KB snapshot for a dt: same content every day; no article dated after the day it is exported."""
    limit = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    out = []
    for i, row in enumerate(w.kb):
        r = dict(row)
        if r["updated_at"] >= limit:  # a day before the reference date: keep the snapshot consistent
            r["updated_at"] = limit - timedelta(days=30 + i % 300, minutes=i * 7)
        out.append(r)
    return out


def _kb_table(rows: list[dict]) -> pa.Table:
    ms = np.array([int(r["updated_at"].timestamp() * 1000) for r in rows], np.int64)
    return pa.table({
        "article_id": pa.array([r["article_id"] for r in rows], pa.string()),
        "title": pa.array([r["title"] for r in rows], pa.string()),
        "body": pa.array([r["body"] for r in rows], pa.string()),
        "intents": pa.array([r["intents"] for r in rows], pa.list_(pa.string())),
        "status": pa.array([r["status"] for r in rows], pa.string()),
        "updated_at": _ts(ms),
        **_tz_cols(np.zeros(len(rows), np.int64), "Z"),
        "_clean": pa.array([r["status"] == "published" for r in rows]),
    })
