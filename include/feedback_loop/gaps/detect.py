"""Knowledge-base gaps: what customers ask that the knowledge base does not answer, ranked by impact.

Each night, over a trailing window of conversations (`Settings.gap_window_days`, default 28):

1. Signals (DuckDB SQL over the lake): every conversation gets an evidence weight from the ways it failed
   for want of knowledge: KB queries with no or only low-score results, an escalation whose reason is
   missing knowledge, an override whose rationale or policy clause points at knowledge, a reopen, a
   re-engagement (same customer, same intent, within 7 days), a low CSAT, a thumbs-down.
2. Topics (`gap_topics`): the first customer messages of the conversations above a minimum weight are
   clustered offline (TF-IDF/LSA + intent labels, agglomerative clustering with a distance threshold);
   a message that fits no topic stays noise.
3. Knowledge base: each topic is compared with the published articles of the day's KB snapshot (text
   similarity to title and body, overlap with the articles' intents): no covering article is a
   **missing article**; a covering article whose conversations still fail well above the base rate is an
   **article to revise**; an article that nothing retrieves any more, or whose conversations humans keep
   overriding on a policy clause, is **stale**.
4. Impact and ids: gaps are ranked by affected conversations and customers, escalation cost and trend
   against the previous window. A gap keeps its id from night to night (matched to the previous night's
   gaps by anchor and by shared conversations), and is closed (`closed_on`) when an article now covers it
   or it is no longer observed.

Outputs: `<lake>/marts/kb_gaps/dt=<dt>/part.parquet` (one row per gap; the warehouse view `kb_gaps`) and
`<lake>/reports/dt=<dt>/gaps.html`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, fields, replace
from datetime import date, timedelta

import numpy as np

from feedback_loop.lake.files import Lake
from feedback_loop.settings import Settings

log = logging.getLogger(__name__)

# Words in escalation reasons, override rationales and policy clause ids that point at missing knowledge.
KNOWLEDGE_PATTERN = (
    r"knowledge|\bkb\b|article|faq|documentation|\bdocs?\b|help ?cent|no (good |relevant )?answer|"
    r"not covered|no info|missing info|outdated|out of date|stale|wrong info|incorrect info|not documented|"
    r"no guidance|no content|unanswered"
)

KINDS = ("missing_article", "revise_article", "stale_article")


@dataclass(frozen=True)
class GapParams:
    """Tuning of the gap stage; override any field with `Settings.gap_params = {...}` (ACSR_GAP_PARAMS, JSON)."""

    window_days: int = 28
    low_kb_score: float = 0.35  # a KB result below this score does not answer the question
    reengage_days: int = 7
    # Evidence weight of each signal (a conversation's weight is their sum).
    w_kb_empty: float = 1.0
    w_kb_low: float = 0.6
    w_escalation_knowledge: float = 1.0
    w_escalation_other: float = 0.3
    w_override_knowledge: float = 0.8
    w_override_other: float = 0.3
    w_reopen: float = 0.5
    w_reengaged: float = 0.4
    w_low_csat: float = 0.5
    w_thumbs_down: float = 0.3
    min_weight: float = 0.6  # conversations below this weight are not gap signals
    # Topics.
    backend: str = "tfidf"  # "tfidf" (LSA, default, offline) or "sentence" (local sentence-transformers model)
    sentence_model: str = ""  # folder of a local model for backend "sentence"
    lsa_components: int = 100
    label_weight: float = 1.0  # weight of the intent labels against the text in a conversation's vector
    algorithm: str = "agglomerative"  # or "hdbscan"
    distance_threshold: float = 0.55  # cosine distance that joins clusters (agglomerative)
    min_topic_size: int = 0  # 0: max(4, 0.3 % of the signals)
    max_signals: int = 6000  # above this, the heaviest signals are clustered and the rest assigned
    max_texts: int = 60000  # conversations vectorised for topic traffic (a seeded sample beyond)
    # Knowledge-base comparison.
    intent_cover_share: float = 0.5  # share of a topic's labels that an article's intents must hold
    label_anchor_share: float = 0.5  # a topic whose main label has this share is anchored on it
    text_cover_cos: float = 0.45  # an unanchored topic is covered by an article at least this similar
    revise_rate_ratio: float = 2.0  # covered topic failing this many times the base rate: revise
    revise_keep_ratio: float = 1.5  # ... and an open one stays open until it falls below this ratio
    absorb_miss_share: float = 0.5  # a covered topic whose retrieval mostly failed, and ...
    absorb_cos: float = 0.6  # ... whose text is this close to a missing-article topic, hands it its misses
    stale_override_share: float = 0.3  # share of an article's conversations overridden on a policy clause
    stale_expected_retrievals: float = 30.0  # no previous window: zero retrievals when an average article got this many
    # Ranking and report.
    escalation_weight: float = 0.5
    escalation_hour_weight: float = 0.1
    top_terms: int = 8
    representatives: int = 3
    nearest_articles: int = 3
    closed_retention_days: int = 7  # a closed gap stays in the mart (and can reopen) this long
    seed: int = 0
    sample_share: float = 1.0  # evaluation only: keep this share of conversations (by a hash of the id)

    @classmethod
    def from_settings(cls, settings: Settings, window_days: int | None = None) -> GapParams:
        known = {f.name for f in fields(cls)}
        given = dict(settings.gap_params or {})
        unknown = set(given) - known
        if unknown:
            raise ValueError(f"unknown gap settings {sorted(unknown)}; known: {sorted(known)}")
        p = cls(**{"window_days": settings.gap_window_days, **given})
        return replace(p, window_days=window_days) if window_days else p


# --------------------------------------------------------------------------------------------- reading


def _files(lake: Lake, layer: str, name: str, first: str, last: str) -> str | None:
    days = [d for d in lake.days(layer, name) if first <= d <= last]
    return "[" + ", ".join(f"'{lake.partition_file(layer, name, d)}'" for d in days) + "]" if days else None


def _view(con, name: str, files: str | None, empty_sql: str) -> None:
    body = (f"SELECT * FROM read_parquet({files}, hive_partitioning=true, union_by_name=true)"
            if files else empty_sql)
    con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {body}")


FACT_COLUMNS = {
    "conversation_id": "VARCHAR", "customer_id": "VARCHAR", "case_id": "VARCHAR", "fact_date": "DATE",
    "started_at": "TIMESTAMPTZ", "first_customer_text": "VARCHAR", "final_intent": "VARCHAR",
    "final_confidence": "DOUBLE", "human_intent": "VARCHAR", "kb_articles": "VARCHAR[]",
    "kb_max_score": "DOUBLE", "n_kb_queries": "BIGINT", "n_kb_empty": "BIGINT", "escalated": "BOOLEAN",
    "escalation_reason": "VARCHAR", "reopen_count": "BIGINT", "csat": "BIGINT", "handle_time_s": "DOUBLE",
    "n_thumbs_down": "BIGINT", "override_policy_clauses": "VARCHAR[]",
}


def _empty(columns: dict) -> str:
    return "SELECT " + ", ".join(f"NULL::{t} AS {c}" for c, t in columns.items()) + " WHERE false"


def load_window(con, settings: Settings, dt: str, p: GapParams) -> dict:
    """Create the temp table `conv`: one row per conversation of the current and previous window.

    Cases and surveys are re-read up to `dt` (not taken from the day's facts), because reopens and CSAT
    arrive days after the conversation.
    """
    lake = Lake(settings.lake)
    end = date.fromisoformat(dt)
    start = end - timedelta(days=p.window_days - 1)
    prev_start = start - timedelta(days=p.window_days)
    lookback = prev_start - timedelta(days=settings.reference_lookback_days)
    first, last = prev_start.isoformat(), dt
    facts = _files(lake, "marts", "conversation_facts", first, last)
    if facts:
        # Only the columns used here, so that older partitions missing a column still read.
        con.execute(f"CREATE OR REPLACE TEMP VIEW facts_raw AS SELECT * FROM read_parquet({facts}, union_by_name=true)")
        have = {r[0] for r in con.execute("DESCRIBE facts_raw").fetchall()}
        cols = ", ".join(f"{c}" if c in have else f"NULL::{t} AS {c}" for c, t in FACT_COLUMNS.items())
        con.execute(f"CREATE OR REPLACE TEMP VIEW facts AS SELECT {cols} FROM facts_raw")
    else:
        con.execute(f"CREATE OR REPLACE TEMP VIEW facts AS {_empty(FACT_COLUMNS)}")
    _view(con, "ovr", _files(lake, "staged", "overrides", first, last), _empty(
        {"conversation_id": "VARCHAR", "outcome": "VARCHAR", "rationale": "VARCHAR", "evidence": "VARCHAR",
         "policy_clause_id": "VARCHAR", "stage": "VARCHAR"}))
    _view(con, "cases", _files(lake, "staged", "crm_cases", lookback.isoformat(), last), _empty(
        {"case_id": "VARCHAR", "updated_at": "TIMESTAMPTZ", "escalated": "BOOLEAN", "escalation_reason": "VARCHAR",
         "reopen_count": "BIGINT", "handle_time_s": "DOUBLE"}))
    _view(con, "surveys", _files(lake, "staged", "surveys", lookback.isoformat(), last), _empty(
        {"case_id": "VARCHAR", "kind": "VARCHAR", "score": "BIGINT", "submitted_at": "TIMESTAMPTZ"}))
    k = KNOWLEDGE_PATTERN.replace("'", "''")
    sample = f"AND hash(conversation_id) % 1000000 < {int(p.sample_share * 1000000)}" if p.sample_share < 1 else ""
    con.execute(f"""
    CREATE OR REPLACE TEMP TABLE conv AS
    WITH f AS (
        SELECT * FROM facts WHERE conversation_id IS NOT NULL {sample}
        QUALIFY row_number() OVER (PARTITION BY conversation_id ORDER BY fact_date DESC) = 1
    ),
    o AS (
        SELECT conversation_id,
            bool_or(outcome <> 'approved' AND regexp_matches(
                lower(replace(concat_ws(' ', rationale, evidence, policy_clause_id), '_', ' ')), '{k}')) AS override_knowledge,
            count(*) FILTER (outcome <> 'approved') AS n_overrides_failed,
            list(DISTINCT policy_clause_id ORDER BY policy_clause_id)
                FILTER (policy_clause_id IS NOT NULL AND outcome <> 'approved') AS override_clauses
        FROM ovr GROUP BY conversation_id
    ),
    c AS (
        SELECT case_id, arg_max(escalated, updated_at) AS escalated, arg_max(escalation_reason, updated_at) AS escalation_reason,
            max(reopen_count) AS reopen_count, arg_max(handle_time_s, updated_at) AS handle_time_s
        FROM cases GROUP BY case_id
    ),
    s AS (
        SELECT case_id, arg_max(score, submitted_at) FILTER (kind = 'csat') AS csat FROM surveys GROUP BY case_id
    ),
    j AS (
        SELECT f.conversation_id, f.customer_id, f.fact_date, f.started_at,
            f.first_customer_text AS text, f.final_intent, coalesce(f.final_confidence, 0.0) AS final_confidence,
            f.human_intent, coalesce(f.kb_articles, []) AS kb_articles, f.kb_max_score,
            coalesce(f.n_kb_queries, 0) AS n_kb_queries, coalesce(f.n_kb_empty, 0) AS n_kb_empty,
            coalesce(c.escalated, f.escalated, false) OR coalesce(f.escalated, false) AS escalated,
            coalesce(c.escalation_reason, f.escalation_reason) AS escalation_reason,
            greatest(coalesce(c.reopen_count, 0), coalesce(f.reopen_count, 0)) AS reopen_count,
            coalesce(s.csat, f.csat) AS csat, coalesce(c.handle_time_s, f.handle_time_s, 0.0) AS handle_time_s,
            coalesce(f.n_thumbs_down, 0) AS n_thumbs_down,
            coalesce(o.override_knowledge, false) AS override_knowledge,
            coalesce(o.n_overrides_failed, 0) AS n_overrides_failed,
            coalesce(o.override_clauses, f.override_policy_clauses, []) AS override_clauses
        FROM f
        LEFT JOIN o ON o.conversation_id = f.conversation_id
        LEFT JOIN c ON c.case_id = f.case_id
        LEFT JOIN s ON s.case_id = f.case_id
    ),
    r AS (
        SELECT *,
            coalesce(lead(started_at) OVER (PARTITION BY customer_id, coalesce(human_intent, final_intent)
                ORDER BY started_at, conversation_id) - started_at <= INTERVAL {int(p.reengage_days)} DAY, false) AS reengaged
        FROM j
    ),
    g AS (
        SELECT *,
            n_kb_empty > 0 AS sig_kb_empty,
            n_kb_empty = 0 AND n_kb_queries > 0 AND coalesce(kb_max_score, 0) < {p.low_kb_score} AS sig_kb_low,
            escalated AND regexp_matches(lower(replace(coalesce(escalation_reason, ''), '_', ' ')), '{k}') AS sig_escalation_knowledge,
            escalated AND NOT regexp_matches(lower(replace(coalesce(escalation_reason, ''), '_', ' ')), '{k}') AS sig_escalation_other,
            override_knowledge AS sig_override_knowledge,
            n_overrides_failed > 0 AND NOT override_knowledge AS sig_override_other,
            reopen_count > 0 AS sig_reopen,
            reengaged AS sig_reengaged,
            coalesce(csat <= 2, false) AS sig_low_csat,
            n_thumbs_down > 0 AS sig_thumbs_down
        FROM r
    )
    SELECT *,
        fact_date >= DATE '{start}' AS in_window,
        sig_kb_empty::INT * {p.w_kb_empty} + sig_kb_low::INT * {p.w_kb_low}
        + sig_escalation_knowledge::INT * {p.w_escalation_knowledge} + sig_escalation_other::INT * {p.w_escalation_other}
        + sig_override_knowledge::INT * {p.w_override_knowledge} + sig_override_other::INT * {p.w_override_other}
        + sig_reopen::INT * {p.w_reopen} + sig_reengaged::INT * {p.w_reengaged}
        + sig_low_csat::INT * {p.w_low_csat} + sig_thumbs_down::INT * {p.w_thumbs_down} AS weight
    FROM g
    ORDER BY conversation_id
    """)
    # The knowledge base as of dt: the latest snapshot on or before dt.
    kb_days = [d for d in lake.days("staged", "kb_articles") if d <= dt]
    kb_cols = {"article_id": "VARCHAR", "title": "VARCHAR", "body": "VARCHAR", "intents": "VARCHAR[]",
               "status": "VARCHAR", "updated_at": "TIMESTAMPTZ"}
    if kb_days:
        kb_file = lake.partition_file("staged", "kb_articles", kb_days[-1])
        con.execute(f"""CREATE OR REPLACE TEMP TABLE kb AS
            SELECT article_id, title, coalesce(body, '') AS body, coalesce(intents, []) AS intents, status, updated_at
            FROM read_parquet('{kb_file}')
            QUALIFY row_number() OVER (PARTITION BY article_id ORDER BY updated_at DESC) = 1
            ORDER BY article_id""")
    else:
        con.execute(f"CREATE OR REPLACE TEMP TABLE kb AS {_empty(kb_cols)}")
    return {"window_start": start.isoformat(), "window_end": dt, "prev_start": prev_start.isoformat(),
            "kb_snapshot": kb_days[-1] if kb_days else None}


SIGNALS = ("kb_empty", "kb_low", "escalation_knowledge", "escalation_other", "override_knowledge",
           "override_other", "reopen", "reengaged", "low_csat", "thumbs_down")


# --------------------------------------------------------------------------------------------- the stage


def detect_gaps(settings: Settings, dt: date | str, window_days: int | None = None) -> dict:
    """Find, classify and rank the KB gaps of the window ending on `dt`; write the mart and the page."""
    from feedback_loop.lake.duck import connect

    dt = date.fromisoformat(str(dt)[:10]).isoformat()
    p = GapParams.from_settings(settings, window_days)
    lake = Lake(settings.lake)
    con = connect()
    try:
        meta = load_window(con, settings, dt, p)
        rows, stats = find_gaps(con, p, settings)
        previous = _previous_gaps(con, lake, dt, p)
        rows = assign_ids(rows, previous, dt, p)
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


def find_gaps(con, p: GapParams, settings: Settings | None = None) -> tuple[list[dict], dict]:
    """The gap rows (without ids) of the window loaded in `conv` / `kb`, and counts for the summary."""
    from feedback_loop.datasets.pii import redactor
    from feedback_loop.gaps import topics as gt

    # Redaction is a pure function of the text, and first messages repeat a lot (a template, a greeting):
    # each distinct text is redacted once.
    redact = functools.lru_cache(maxsize=None)(redactor(settings).redact)
    select = f"""SELECT conversation_id, customer_id, text, final_intent, final_confidence, human_intent, started_at,
            escalated, handle_time_s, weight, weight >= {p.min_weight} AS is_signal,
            {", ".join("sig_" + s for s in SIGNALS)}
        FROM conv WHERE in_window AND text IS NOT NULL AND trim(text) <> ''"""
    cols = ["conversation_id", "customer_id", "text", "final_intent", "final_confidence", "human_intent",
            "started_at", "escalated", "handle_time_s", "weight", "is_signal"] + [f"sig_{s}" for s in SIGNALS]
    sig = [dict(zip(cols, r)) for r in con.execute(
        f"{select} AND weight >= {p.min_weight} ORDER BY weight DESC, conversation_id").fetchall()]
    # The rest of the traffic only gives each topic its size: a deterministic sample is enough at scale.
    n_other = con.execute(f"SELECT count(*) FROM ({select} AND weight < {p.min_weight})").fetchall()[0][0]
    budget = max(1, p.max_texts - len(sig))
    other = [dict(zip(cols, r)) for r in con.execute(
        f"{select} AND weight < {p.min_weight} ORDER BY hash(conversation_id), conversation_id LIMIT {budget}").fetchall()]
    other.sort(key=lambda r: r["conversation_id"])
    scale = n_other / len(other) if other else 1.0
    prev = con.execute(f"""
        SELECT conversation_id, text, final_intent, final_confidence, human_intent
        FROM conv WHERE NOT in_window AND weight >= {p.min_weight} AND text IS NOT NULL AND trim(text) <> ''
        ORDER BY conversation_id""").fetchall()
    n_total = con.execute("SELECT count(*) FROM conv WHERE in_window").fetchall()[0][0]
    has_prev_window = con.execute("SELECT count(*) > 0 FROM conv WHERE NOT in_window").fetchall()[0][0]
    kb = con.execute("SELECT article_id, title, body, intents, status, updated_at FROM kb ORDER BY article_id").fetchall()
    published = [a for a in kb if a[4] == "published"]
    stats = {"n_conversations": n_total, "n_signals": len(sig), "n_topics": 0, "n_noise": 0,
             "kb_published": len(published)}
    rows: list[dict] = []
    rows.extend(_stale_articles(con, p, published))
    if len(sig) < 2:
        return _rank(rows), stats

    # Texts are redacted before anything else sees them: terms, labels and examples cannot carry PII.
    clustered = sig[: p.max_signals]
    rest_sig = sig[p.max_signals:]
    for r in (*sig, *other):
        r["text"] = redact(r["text"])
    prev_rows = [dict(zip(["conversation_id", "text", "final_intent", "final_confidence", "human_intent"], r))
                 for r in prev]
    for r in prev_rows:
        r["text"] = redact(r["text"])
    article_texts = [_article_text(a) for a in published]
    all_rows = clustered + rest_sig + other + prev_rows
    space = gt.fit_text_space([r["text"] for r in all_rows] + article_texts, backend=p.backend,
                              lsa_components=p.lsa_components, sentence_model=p.sentence_model or None, seed=p.seed)
    n_conv = len(all_rows)
    labels_of = [_labels(r) for r in all_rows]
    label_x, _vocab = gt.label_features(labels_of)
    x = gt.combine(space.semantic[:n_conv], label_x, p.label_weight)
    nc = len(clustered)
    min_size = p.min_topic_size or max(4, round(0.003 * len(sig)))
    topic = gt.cluster(x[:nc], algorithm=p.algorithm, distance_threshold=p.distance_threshold, min_size=min_size)
    topic = _merge_same_anchor(topic, [labels_of[i] for i in range(nc)], p)
    cents = gt.centroids(x[:nc], topic)
    # Everything else (signals past the cap, non-signal traffic, the previous window) joins its nearest
    # topic when it is within the same distance that built the topics.
    assigned = gt.assign(x[nc:], cents, p.distance_threshold)
    sig_topic = np.concatenate([topic, assigned[: len(rest_sig)]])
    other_topic = assigned[len(rest_sig): len(rest_sig) + len(other)]
    prev_topic = assigned[len(rest_sig) + len(other):]
    n_topics = int(cents.shape[0])
    stats.update(n_topics=n_topics, n_noise=int((sig_topic == gt.NOISE).sum()), min_topic_size=min_size,
                 clustered=nc)
    if n_topics == 0:
        return _rank(rows), stats

    sig_tfidf = space.tfidf[: len(sig)]
    art_tfidf = space.tfidf[n_conv:]
    sem = space.semantic[: len(sig)]

    def describe(assignment: np.ndarray) -> list[tuple]:
        out = []
        for t in range(int(assignment.max()) + 1 if assignment.size else 0):
            idx = np.flatnonzero(assignment == t)
            if idx.size == 0:
                continue
            centroid_tfidf = np.asarray(sig_tfidf[idx].mean(axis=0)).ravel()
            norm = np.linalg.norm(centroid_tfidf)
            text_cos = (np.asarray(art_tfidf @ (centroid_tfidf / norm)).ravel() if (norm > 0 and art_tfidf.shape[0])
                        else np.zeros(len(published)))
            label_share = _label_shares([labels_of[i] for i in idx])
            covering = _covering_article(p, label_share, text_cos, published)
            text_centroid = sem[idx].mean(axis=0)
            text_centroid /= max(np.linalg.norm(text_centroid), 1e-9)
            miss = float(np.mean([bool(sig[i]["sig_kb_empty"] or sig[i]["sig_kb_low"]) for i in idx]))
            out.append((t, idx, text_cos, label_share, covering, text_centroid, miss))
        return out

    topics = describe(sig_topic)
    # Failing conversations that read like a missing-article topic, and that retrieval could not answer,
    # belong to that gap even when the agent labelled them as a covered intent (classifier confusion):
    # a covered topic whose text is close to a missing-article topic hands over its retrieval misses.
    open_topics = [(t, c) for t, _i, _tc, _l, cov, c, _m in topics if cov is None]
    moved = 0
    missed = np.array([bool(r["sig_kb_empty"] or r["sig_kb_low"]) for r in sig])
    for t, idx, _tc, ls, cov, cen, miss in topics:
        if cov is None or miss < p.absorb_miss_share or not open_topics:
            continue
        sims = [float(cen @ c) for _u, c in open_topics]
        best = int(np.argmax(sims))
        log.debug("topic %s (%s, %d signals, retrieval miss %.2f): nearest missing topic %s at cos %.2f",
                  t, next(iter(ls), None), len(idx), miss, open_topics[best][0], sims[best])
        if sims[best] >= p.absorb_cos:
            take = idx[missed[idx]]
            # Each conversation goes to the missing-article topic nearest to its own text.
            open_ids = np.array([u for u, _c in open_topics])
            open_cents = np.vstack([c for _u, c in open_topics])
            sig_topic[take] = open_ids[(sem[take] @ open_cents.T).argmax(axis=1)]
            moved += len(take)
    if moved:
        topics = describe(sig_topic)
        stats["moved_to_missing"] = moved
    terms = gt.characteristic_terms(sig_tfidf, sig_topic, space.terms, k=p.top_terms, background=space.tfidf[:n_conv])
    topics = [(t, idx, tc, ls, len(idx) + float((other_topic == t).sum()) * scale, cov)
              for t, idx, tc, ls, cov, _c, _m in topics]
    # The base failure rate: conversations outside the topics that no article covers.
    uncovered = [(len(idx), traffic) for _t, idx, _c, _l, traffic, cov in topics if cov is None]
    failing_elsewhere = len(sig) - sum(u[0] for u in uncovered)
    traffic_elsewhere = len(sig) + len(other) * scale - sum(u[1] for u in uncovered)
    base_rate = failing_elsewhere / max(1.0, traffic_elsewhere)
    stats["base_failure_rate"] = round(base_rate, 4)
    for t, idx, text_cos, label_share, traffic, covering in topics:
        if len(idx) < min_size:
            continue  # a topic that handed its conversations to a missing-article gap is too small now
        row = _topic_gap(p, [sig[i] for i in idx], label_share, terms[t], published, text_cos, covering,
                         traffic, base_rate, int((prev_topic == t).sum()), bool(has_prev_window),
                         x[idx], cents[t])
        if row:
            rows.append(row)
    return _rank(rows), stats


def _labels(r: dict) -> list[tuple[str, float]]:
    """The intent labels of a conversation with their weights: a reviewer's correction outranks the agent."""
    out = []
    if r.get("human_intent"):
        out.append((r["human_intent"], 1.0))
    if r.get("final_intent") and r.get("final_intent") != r.get("human_intent"):
        out.append((r["final_intent"], (0.3 if r.get("human_intent") else 1.0) * max(0.3, float(r.get("final_confidence") or 0))))
    return out


def _label_shares(labels: list[list[tuple[str, float]]]) -> dict[str, float]:
    """Share of the topic's conversations whose main label is each intent."""
    counts: dict[str, int] = {}
    for row in labels:
        if row:
            counts[row[0][0]] = counts.get(row[0][0], 0) + 1
    n = max(1, len(labels))
    return {k: v / n for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}


def _merge_same_anchor(topic: np.ndarray, labels: list, p: GapParams) -> np.ndarray:
    """Topics anchored on the same intent are one gap, not several (clustering can split an intent)."""
    from feedback_loop.gaps.topics import NOISE, _renumber

    anchors: dict[str, int] = {}
    out = topic.copy()
    for t in range(int(topic.max()) + 1 if topic.size else 0):
        idx = np.flatnonzero(topic == t)
        shares = _label_shares([labels[i] for i in idx])
        main = next(iter(shares.items()), (None, 0.0))
        if main[0] and main[1] >= p.label_anchor_share:
            if main[0] in anchors:
                out[idx] = anchors[main[0]]
            else:
                anchors[main[0]] = t
    out[topic == NOISE] = NOISE
    return _renumber(out, 1)


def _article_text(a) -> str:
    _article_id, title, body, intents = a[0], a[1] or "", a[2] or "", a[3] or []
    return " ".join([title, title, body, " ".join(i.replace("_", " ") for i in intents)])


def _covering_article(p: GapParams, label_share: dict, text_cos: np.ndarray, published: list):
    """The published article that covers a topic, or None.

    An article covers a topic when its intents hold most of the topic's labels; a topic without a main
    label (a subject outside the intent taxonomy) is covered by an article whose text is close enough.
    A topic anchored on an intent that no article lists is not covered by a merely similar text.
    """
    if not published:
        return None
    main_label, main_share = next(iter(label_share.items()), (None, 0.0))
    anchored = main_label is not None and main_share >= p.label_anchor_share
    intent_share = np.array([sum(label_share.get(i, 0.0) for i in (a[3] or [])) for a in published])
    best_intent, best_text = int(np.argmax(intent_share)), int(np.argmax(text_cos))
    if intent_share[best_intent] >= p.intent_cover_share:
        return published[best_intent]
    if not anchored and text_cos[best_text] >= p.text_cover_cos:
        return published[best_text]
    return None


def _topic_gap(p: GapParams, members: list[dict], label_share: dict, terms: list[str], published: list,
               text_cos: np.ndarray, covering, traffic: float, base_rate: float, prev_n: int, has_prev_window: bool,
               member_x: np.ndarray, centroid: np.ndarray) -> dict | None:
    """Classify one topic against the KB; None when it is covered and does not fail unusually."""
    main_label, main_share = next(iter(label_share.items()), (None, 0.0))
    anchored = main_label is not None and main_share >= p.label_anchor_share
    intent_share = np.array([sum(label_share.get(i, 0.0) for i in (a[3] or [])) for a in published])
    score = np.maximum(intent_share, text_cos) if len(published) else np.zeros(0)
    order = np.argsort(-score, kind="stable")[: p.nearest_articles]
    nearest = [{"article_id": published[i][0], "title": published[i][1], "score": round(float(score[i]), 3),
                "text_similarity": round(float(text_cos[i]), 3), "intent_share": round(float(intent_share[i]), 3)}
               for i in order]
    counts = {s: sum(bool(m[f"sig_{s}"]) for m in members) for s in SIGNALS}
    rate = len(members) / max(traffic, 1.0)
    status, kind, article_id, closed_reason = "open", "missing_article", None, None
    if covering is not None:
        article_id = covering[0]
        updated = covering[5]
        after = [m for m in members if updated is not None and m["started_at"] is not None and m["started_at"] > updated]
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
    n_customers = len({m["customer_id"] for m in members})
    escalated = [m for m in members if m["escalated"]]
    esc_hours = sum(float(m["handle_time_s"] or 0) for m in escalated) / 3600.0
    evidence = float(sum(m["weight"] for m in members))
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
    label = " / ".join(terms[:4]) if terms else (main_label or "unlabelled topic")
    if kind == "revise_article":
        label = f"{label} (article {article_id})"
    anchor = f"intent:{main_label}" if anchored else "terms:" + ",".join(sorted(terms[:3]))
    closest = nearest[0] if nearest else None
    if status == "addressed":
        reason = f"article {article_id} now covers it (intents {', '.join(covering[3] or [])})"
    elif kind == "revise_article":
        reason = (f"article {article_id} covers it (intents {', '.join(covering[3] or [])}) but its conversations "
                  f"fail at {rate:.0%} against {base_rate:.0%} overall")
    elif anchored:
        reason = (f"no published article lists intent {main_label}"
                  + (f"; closest article text: {closest['article_id']} ({closest['text_similarity']:.2f})" if closest else ""))
    else:
        reason = (f"no published article's text is within {p.text_cover_cos:.2f} of the topic"
                  + (f" (closest: {closest['article_id']}, {closest['text_similarity']:.2f})" if closest else ""))
    return {
        "reason": reason,
        "kind": kind, "status": status, "closed_reason": closed_reason, "label": label, "anchor": anchor,
        "top_terms": terms, "intents": [k for k, v in label_share.items() if v >= 0.1][:5],
        "intent_purity": round(float(main_share), 3),
        "article_id": article_id, "nearest_articles": nearest,
        "impact": round(float(impact), 3), "evidence_weight": round(evidence, 3),
        "n_conversations": len(members), "n_customers": n_customers, "n_escalated": len(escalated),
        "escalation_hours": round(esc_hours, 2), "topic_traffic": round(traffic, 1),
        "failure_rate": round(rate, 3), "base_failure_rate": round(base_rate, 3),
        "prev_window_conversations": prev_n if has_prev_window else None,
        "trend": None if trend is None else round(float(trend), 3),
        "signal_counts": json.dumps(counts, sort_keys=True),
        "representative_messages": reps,
        "conversation_ids": sorted(m["conversation_id"] for m in members),
    }


def _stale_articles(con, p: GapParams, published: list) -> list[dict]:
    """Articles nothing retrieves any more, or whose conversations humans keep overriding on a clause."""
    if not published:
        return []
    stats = con.execute("""
        WITH u AS (SELECT conversation_id, customer_id, in_window, override_clauses, n_overrides_failed, weight,
                          escalated, handle_time_s, unnest(kb_articles) AS article_id FROM conv)
        SELECT article_id,
            count(*) FILTER (in_window) AS retrieved_now,
            count(*) FILTER (NOT in_window) AS retrieved_before,
            count(*) FILTER (in_window AND len(override_clauses) > 0) AS overridden,
            list(conversation_id ORDER BY conversation_id) FILTER (in_window AND len(override_clauses) > 0) AS overridden_ids,
            count(DISTINCT customer_id) FILTER (in_window AND len(override_clauses) > 0) AS overridden_customers,
            flatten(list(override_clauses) FILTER (in_window AND len(override_clauses) > 0)) AS clauses,
            sum(weight) FILTER (in_window AND len(override_clauses) > 0) AS evidence
        FROM u GROUP BY article_id""").fetchall()
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
        rows.append({
            "kind": "stale_article", "status": "open", "closed_reason": None,
            "label": f"stale: {title}", "anchor": f"article:{article_id}", "top_terms": clauses[:5],
            "intents": list(a[3] or []), "intent_purity": None, "article_id": article_id,
            "nearest_articles": [{"article_id": article_id, "title": title, "score": 1.0, "text_similarity": None,
                                  "intent_share": None}],
            "impact": round(impact, 3), "evidence_weight": round(float(r[7] or 0) if r else 0.0, 3),
            "n_conversations": len(ids), "n_customers": n_cust, "n_escalated": 0, "escalation_hours": 0.0,
            "topic_traffic": float(now), "failure_rate": round(len(ids) / max(1, now), 3), "base_failure_rate": None,
            "prev_window_conversations": before if has_prev else None, "trend": None,
            "signal_counts": json.dumps({"retrieved_now": now, "retrieved_before": before, "overridden": len(ids)}),
            "representative_messages": [], "conversation_ids": ids, "reason": reason,
        })
    return rows


def _rank(rows: list[dict]) -> list[dict]:
    rows.sort(key=lambda r: (r["status"] != "open", -r["impact"], r["kind"], r["anchor"]))
    return rows


# --------------------------------------------------------------------------------------------- stable ids


def _previous_gaps(con, lake: Lake, dt: str, p: GapParams) -> list[dict]:
    """The gap rows of the latest earlier night (within the retention), to carry ids over."""
    earlier = [d for d in lake.days("marts", "kb_gaps") if d < dt]
    if not earlier or date.fromisoformat(earlier[-1]) < date.fromisoformat(dt) - timedelta(days=p.closed_retention_days):
        return []
    cur = con.execute(f"SELECT * FROM read_parquet('{lake.partition_file('marts', 'kb_gaps', earlier[-1])}')")
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
    out.sort(key=lambda r: (r["status"] != "open", -r["impact"] if r["status"] == "open" else 0,
                            r["kind"], r["gap_id"]))
    rank = 0
    for r in out:
        if r["status"] == "open":
            rank += 1
            r["rank"] = rank
        else:
            r["rank"] = None
    return out


def _carry(q: dict) -> dict:
    keep = {k: v for k, v in q.items() if k in ROW_FIELDS}
    for k in ("first_seen", "closed_on"):
        keep[k] = _day(keep.get(k))
    keep["nearest_articles"] = [dict(a) for a in (keep.get("nearest_articles") or [])]
    return keep


def _day(v) -> str | None:
    return None if v is None else str(v)[:10]


# --------------------------------------------------------------------------------------------- actions

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
    queue = con.execute(f"""
        SELECT action_id, scope_dimension, scope_value, coalesce(example_conversation_ids, []) AS examples
        FROM read_parquet('{lake.partition_file("marts", ACTION_QUEUE, dt)}') ORDER BY action_id""").fetchall()
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


# --------------------------------------------------------------------------------------------- writing

ROW_FIELDS = {
    "gap_id": "string", "rank": "int64", "kind": "string", "status": "string", "first_seen": "date",
    "closed_on": "date", "closed_reason": "string", "label": "string", "anchor": "string",
    "top_terms": "list<string>", "intents": "list<string>", "intent_purity": "double", "article_id": "string",
    "nearest_articles": "nearest", "impact": "double", "evidence_weight": "double", "n_conversations": "int64",
    "n_customers": "int64", "n_escalated": "int64", "escalation_hours": "double", "topic_traffic": "double",
    "failure_rate": "double", "base_failure_rate": "double", "prev_window_conversations": "int64",
    "trend": "double", "signal_counts": "string", "reason": "string",
    "representative_messages": "list<string>", "conversation_ids": "list<string>", "action_ids": "list<string>",
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
