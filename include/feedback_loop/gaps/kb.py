"""The knowledge-base side of the gap stage: article texts, stale articles, contradictory articles."""

from __future__ import annotations

import json
import re

import numpy as np

from feedback_loop.gaps.params import GapParams
from feedback_loop.lake.sql import exact_sum, fill, load_sql


def article_text(a) -> str:
    """What an article says about its topic: title (twice: it names the topic), body, intent names."""
    _article_id, title, body, intents = a[0], a[1] or "", a[2] or "", a[3] or []
    return " ".join([title, title, body, " ".join(i.replace("_", " ") for i in intents)])


def stale_articles(con, p: GapParams, published: list) -> list[dict]:
    """Articles nothing retrieves any more, or whose conversations humans keep overriding on a clause."""
    if not published:
        return []
    evidence = exact_sum("CASE WHEN in_window AND len(override_clauses) > 0 THEN weight END", 10)
    stats = con.execute(fill(load_sql("feedback_loop.gaps", "stale.sql"), evidence_sum=evidence)).fetchall()
    by_article = {r[0]: r for r in stats}
    total_now = sum(r[1] for r in stats)
    has_prev = con.execute("SELECT count(*) > 0 FROM conv WHERE NOT in_window").fetchall()[0][0]
    expected = total_now / max(1, len(published))
    rows = []
    min_override = max(4, p.min_topic_size)
    for a in published:
        article_id, title = a[0], a[1]
        r = by_article.get(article_id)
        now, before = (r[1], r[2]) if r else (0, 0)
        reason, ids, impact, clauses, n_cust = None, [], 0.0, [], 0
        if now == 0 and (before >= 3 if has_prev else expected >= p.stale_expected_retrievals):
            reason = (f"not retrieved in the window (retrieved {before} times in the previous one)" if before
                      else f"never retrieved in the window ({expected:.0f} retrievals expected)")
            impact = 0.1 * before
        elif r and r[3] >= min_override and r[3] / max(1, now) >= p.stale_override_share:
            clauses = sorted({c for c in (r[6] or []) if c}, key=lambda c: (-(r[6] or []).count(c), c))
            reason = (f"{r[3]} of {now} conversations that retrieved it were overridden on policy clause "
                      f"{', '.join(clauses[:3])}")
            ids, n_cust, impact = list(r[4] or []), r[5], float(r[7] or 0)
        if reason is None:
            continue
        rows.append(_article_row(
            kind="stale_article", article=a, anchor=f"article:{article_id}", label=f"stale: {title}",
            reason=reason, terms=clauses[:5], impact=impact, ids=ids, n_customers=n_cust,
            evidence=float(r[7] or 0) if r else 0.0, traffic=float(now),
            prev=before if has_prev else None,
            counts={"retrieved_now": now, "retrieved_before": before, "overridden": len(ids)}))
    return rows


_FACT = re.compile(r"\b(\d+(?:[.,]\d+)?|a few|few|several|one|two|three|four|five|ten)\s+(?:working\s+|business\s+|"
                   r"calendar\s+)?(minute|hour|day|week|month|year|%|percent|eur|gbp|usd)s?\b", re.IGNORECASE)


def facts(text: str) -> set[tuple[str, str]]:
    """The quantities an article states ("5 working days", "a few minutes", "2 %"), normalised."""
    return {(m.group(1).lower(), m.group(2).lower()) for m in _FACT.finditer(text or "")}


def contradictory_articles(con, p: GapParams, published: list, art_tfidf) -> list[dict]:
    """Pairs of published articles on one topic (a shared intent, or titles and bodies this similar)
    that state different quantities for it: customers get a different answer depending on which one
    retrieval happens to rank first."""
    out = []
    if len(published) < 2:
        return out
    sims = (art_tfidf @ art_tfidf.T).toarray() if art_tfidf.shape[0] else np.zeros((0, 0))
    stated = [facts(a[2]) for a in published]
    retrieved = {r[0]: (r[1], r[2]) for r in con.execute("""
        SELECT article_id, count(*), count(*) FILTER (weight >= $w) FROM
            (SELECT unnest(kb_articles) AS article_id, weight FROM conv WHERE in_window) GROUP BY 1""",
        {"w": p.min_weight}).fetchall()}
    for i in range(len(published)):
        for j in range(i + 1, len(published)):
            a, b = published[i], published[j]
            shared = sorted(set(a[3] or []) & set(b[3] or []))
            if not shared and sims[i, j] < p.contradiction_topic_cos:
                continue
            if not stated[i] or not stated[j] or stated[i] & stated[j]:
                continue
            say_a = ", ".join(" ".join(f) for f in sorted(stated[i]))
            say_b = ", ".join(" ".join(f) for f in sorted(stated[j]))
            topic = f"intent {', '.join(shared)}" if shared else f"the same topic (text similarity {sims[i, j]:.2f})"
            n_a, n_b = retrieved.get(a[0], (0, 0)), retrieved.get(b[0], (0, 0))
            out.append(_article_row(
                kind="contradictory_articles", article=a, anchor=f"contradiction:{a[0]}|{b[0]}",
                label=f"contradictory: {a[1]} / {b[1]}",
                reason=(f"articles {a[0]} and {b[0]} both answer {topic} but say different things: "
                        f"{a[0]} states {say_a}; {b[0]} states {say_b}"),
                terms=[], impact=float(n_a[1] + n_b[1]) + 0.1 * float(n_a[0] + n_b[0]), ids=[], n_customers=0,
                evidence=0.0, traffic=float(n_a[0] + n_b[0]), prev=None,
                counts={"retrieved": n_a[0] + n_b[0], "retrieved_failing": n_a[1] + n_b[1]},
                also=b, similarity=float(sims[i, j])))
    return out


def _article_row(*, kind, article, anchor, label, reason, terms, impact, ids, n_customers, evidence, traffic,
                 prev, counts, also=None, similarity=None) -> dict:
    near = [{"article_id": article[0], "title": article[1], "score": 1.0, "text_similarity": None,
             "intent_share": None}]
    if also is not None:
        near.append({"article_id": also[0], "title": also[1], "score": round(similarity or 0.0, 3),
                     "text_similarity": round(similarity or 0.0, 3), "intent_share": None})
    return {
        "kind": kind, "status": "open", "closed_reason": None, "label": label, "anchor": anchor,
        "top_terms": terms, "intents": sorted(set(article[3] or []) | set((also[3] or []) if also else [])),
        "intent_purity": None, "article_id": article[0], "misrouted_to": None, "nearest_articles": near,
        "impact": round(impact, 3), "evidence_weight": round(evidence, 3), "n_conversations": len(ids),
        "n_customers": n_customers, "n_escalated": 0, "escalation_hours": 0.0, "topic_traffic": traffic,
        "failure_rate": round(len(ids) / max(1.0, traffic), 3), "base_failure_rate": None,
        "prev_window_conversations": prev, "trend": None, "signal_counts": json.dumps(counts),
        "representative_messages": [], "draft_replies": [], "conversation_ids": ids, "reason": reason,
    }
