"""One topic -> one gap row: its kind, reason, impact, representative messages and nearest articles."""

from __future__ import annotations

import numpy as np

from feedback_loop.gaps.classify import column_of, signal_counts
from feedback_loop.gaps.params import GapParams
from feedback_loop.gaps.trust import MISROUTED


def _out_of_scope(p: GapParams, tp, terms: list[str], members: list[dict]) -> str | None:
    """Why an uncovered topic is out of scope (not a gap of this knowledge base), or None."""
    lowered = [(text or "").lower() for text in column_of(members, "text")]
    listed = [t for t in p.out_of_scope_terms if any(t in text for text in lowered)]
    if listed:
        hits = sum(any(t in text for t in listed) for text in lowered)
        if hits >= len(members) / 2:
            return f"{hits} of {len(members)} messages name configured out-of-scope terms ({', '.join(listed[:3])})"
    distinct = len({" ".join(text.split()) for text in lowered})
    if distinct < p.min_distinct_share * min(len(members), p.distinct_cap):
        return (f"{len(members)} conversations but only {distinct} distinct messages: chit-chat or a repeated "
                "template, not a question people ask in their own words")
    if tp.domain < p.domain_min_share:
        return (f"only {tp.domain:.0%} of its words appear in the knowledge base or in the conversations the "
                f"agent answered (below {p.domain_min_share:.0%}): a request the business does not handle, "
                "or chit-chat")
    return None


def topic_row(p: GapParams, tp, members: list[dict], terms: list[str], published: list, base_rate: float,
              prev_n: int, has_prev_window: bool, member_x: np.ndarray, centroid: np.ndarray) -> dict | None:
    """Classify one topic against the KB; None when it is covered and does not fail unusually."""
    main_label, main_share = next(iter(tp.anchors.items()), (None, 0.0))
    anchored = main_label is not None and main_share >= p.label_anchor_share
    misrouted_anchor = anchored and main_label.startswith(MISROUTED)  # "sent to X but unlike X": not an intent
    routed_label, routed_share = next(iter(tp.routed.items()), (None, 0.0))
    intent_share = np.array([sum(tp.routed.get(i, 0.0) for i in (a[3] or [])) for a in published])
    answered = np.nan_to_num(tp.answered_cos, nan=0.0)
    score = np.maximum.reduce([answered, tp.text_cos]) if len(published) else np.zeros(0)
    order = np.argsort(-score, kind="stable")[: p.nearest_articles]
    nearest = [{"article_id": published[i][0], "title": published[i][1], "score": round(float(score[i]), 3),
                "text_similarity": round(float(max(answered[i], tp.text_cos[i])), 3),
                "intent_share": round(float(intent_share[i]), 3)} for i in order]
    rate = len(members) / max(tp.traffic, 1.0)
    status, kind, article_id, closed_reason, misrouted, covering = "open", "missing_article", None, None, None, None
    if tp.covering is not None:
        covering = published[tp.covering]
        article_id = covering[0]
        updated, updated_us = covering[5], covering[6]  # starts are epoch microseconds (classify.SELECT_COLUMNS)
        after = [s for s in column_of(members, "started_at") if updated_us is not None and s is not None and s > updated_us]
        if updated is not None and len(after) < max(2, len(members) // 4) and len(after) < len(members) / 2:
            # The article came after most of these failures: the gap was addressed by adding it.
            status, closed_reason = "addressed", f"article {covering[0]} published {str(updated)[:10]}"
        elif rate >= p.revise_rate_ratio * base_rate:
            kind = "revise_article"
        elif rate >= p.revise_keep_ratio * base_rate:
            # Hysteresis: kept open only if it was open last night, so a gap near the line does not flicker.
            kind, status = "revise_article", "watch"
        else:
            return None
    if covering is None and rate < p.missing_rate_ratio * base_rate:
        return None  # answered most of the time all the same: its failures are the ordinary ones
    oos_reason = _out_of_scope(p, tp, terms, members) if covering is None else None
    if covering is None and len(published) and intent_share.max() >= p.routed_share:
        # Routed there, yet that article does not cover it (the text is far from it, or the customers' own
        # searches mostly did not return it): the classifier sends a question it has no class for.
        best = int(np.argmax(intent_share))
        if not tp.trusted_routing[best]:
            misrouted = published[best]
    if oos_reason:
        kind = "out_of_scope"
    # Each column read once, in C (`column_of`): a steady window's topics hold a million signals.
    n_customers = len(set(column_of(members, "customer_id")))
    escalated = [m for m, e in zip(members, column_of(members, "escalated")) if e]
    esc_hours = sum(float(h or 0) for h in column_of(escalated, "handle_time_s")) / 3600.0
    evidence = float(sum(column_of(members, "weight")))
    trend = (len(members) - prev_n) / max(prev_n, 1) if has_prev_window else None
    trend_factor = 1.0 if trend is None else float(np.clip(1.0 + 0.25 * trend, 0.75, 1.5))
    per_customer = n_customers / max(1, len(members))
    # A covered topic fails at the base rate anyway: only its excess failures are the article's doing.
    attributable = 1.0 if kind != "revise_article" else max(0.0, 1.0 - base_rate / max(rate, 1e-9))
    impact = attributable * trend_factor * (
        evidence * per_customer + p.escalation_weight * len(escalated) + p.escalation_hour_weight * esc_hours)
    sims = member_x @ centroid
    reps, seen = [], set()
    for i in np.argsort(-sims, kind="stable"):
        text = members[i]["text"]
        if text.lower() not in seen:
            seen.add(text.lower())
            reps.append(text)
        if len(reps) == p.representatives:
            break
    label = " / ".join(terms[:4]) if terms else (main_label or "unlabelled topic").lstrip(MISROUTED)
    if kind == "revise_article":
        label = f"{label} (article {article_id})"
    if misrouted_anchor:
        anchor = f"misrouted:{main_label[len(MISROUTED):]}"
    else:
        anchor = f"intent:{main_label}" if anchored else "terms:" + ",".join(sorted(terms[:3]))
    closest = nearest[0] if nearest else None
    if status == "addressed":
        reason = f"article {article_id} now covers it (intents {', '.join(covering[3] or [])})"
    elif kind == "revise_article":
        reason = (f"article {article_id} covers it (text similarity {max(answered[tp.covering], tp.text_cos[tp.covering]):.2f}, "
                  f"as typical of its answered questions as {np.nan_to_num(tp.answered_rel[tp.covering]):.2f}, "
                  f"routed {intent_share[tp.covering]:.0%}, retrieved {tp.retrieved[tp.covering]:.0%}) but its "
                  f"conversations fail at {rate:.0%} against {base_rate:.0%} overall")
    elif kind == "out_of_scope":
        reason = oos_reason
    else:
        reason = (f"no published article is close to what these customers wrote (closest: "
                  f"{closest['article_id']}, {closest['text_similarity']:.2f})" if closest else
                  "no published article")
        if misrouted is not None:
            reason += (f"; the agent routed {intent_share.max():.0%} of it to {', '.join(misrouted[3] or [])} "
                       f"(article {misrouted[0]}): the classifier needs a new class, not a rewrite of that article")
        elif anchored and not misrouted_anchor:
            reason += f"; labelled {main_label}, an intent no published article lists"
    return {
        "reason": reason,
        "kind": kind, "status": status, "closed_reason": closed_reason, "label": label, "anchor": anchor,
        "top_terms": terms, "intents": [k for k, v in tp.routed.items() if v >= 0.1][:5],
        "intent_purity": round(float(routed_share if routed_label else 0.0), 3),
        "article_id": article_id, "misrouted_to": misrouted[0] if misrouted is not None and kind == "missing_article" else None,
        "nearest_articles": nearest,
        "impact": round(float(impact), 3), "evidence_weight": round(evidence, 3),
        "n_conversations": len(members), "n_customers": n_customers, "n_escalated": len(escalated),
        "escalation_hours": round(esc_hours, 2), "topic_traffic": round(tp.traffic, 1),
        "failure_rate": round(rate, 3), "base_failure_rate": round(base_rate, 3),
        "prev_window_conversations": prev_n if has_prev_window else None,
        "trend": None if trend is None else round(float(trend), 3),
        "signal_counts": signal_counts(members),
        "representative_messages": reps, "draft_replies": [],
        "conversation_ids": sorted(column_of(members, "conversation_id")),
        "escalated_ids": sorted(column_of(escalated, "conversation_id")),  # for drafts; not in the mart
    }
