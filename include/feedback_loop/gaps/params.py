"""The gap stage's knobs (`GapParams`), its gap kinds and the evidence signals it weighs."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from feedback_loop.settings import Settings

# Words in escalation reasons, override rationales and policy clause ids that point at missing knowledge.
KNOWLEDGE_PATTERN = (
    r"knowledge|\bkb\b|article|faq|documentation|\bdocs?\b|help ?cent|no (good |relevant )?answer|"
    r"not covered|no info|missing info|outdated|out of date|stale|wrong info|incorrect info|not documented|"
    r"no guidance|no content|unanswered"
)

# Ranked in this order of kinds when impacts tie; out-of-scope topics always rank after every knowledge gap.
KINDS = ("missing_article", "revise_article", "stale_article", "contradictory_articles", "out_of_scope")

SIGNALS = ("kb_empty", "kb_low", "escalation_knowledge", "escalation_other", "override_knowledge",
           "override_other", "reopen", "reengaged", "low_csat", "thumbs_down")


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
    label_weight: float = 1.0  # weight of a fully trusted intent label against the text
    # Trust of an intent label (issue 15): a person's label counts 1; the agent's counts its confidence
    # (halved below `low_confidence`) times how well the message agrees with what that label's answered
    # conversations say (`label_agreement`), so a confident but wrong routing cannot glue a topic together.
    low_confidence: float = 0.5
    agreement_floor: float = 0.5  # message/label agreement (relative to the label's own) below this: no trust
    misroute_weight: float = 0.7  # weight of "routed to X but unlike X" (label ~X) for the part not trusted
    algorithm: str = "agglomerative"  # or "hdbscan"
    distance_threshold: float = 0.55  # cosine distance that joins clusters (agglomerative)
    min_topic_size: int = 0  # 0: max(4, 0.3 % of the signals); the clustered sample needs its share
    max_signals: int = 6000  # above this, the heaviest signals are clustered and the rest assigned
    max_texts: int = 60000  # conversations vectorised for topic traffic (a seeded sample beyond)
    # The text space (TF-IDF vocabulary, LSA) is fitted on at most this many messages: the clustered
    # signals, the traffic sample and a seeded sample of the rest; every message is then projected into it.
    max_fit_texts: int = 120000
    # Knowledge-base comparison.
    label_anchor_share: float = 0.5  # a topic whose trusted main label has this share is anchored on it
    answered_cover_rel: float = 0.9  # topic messages as typical of an article's answered questions as this
    text_cover_cos: float = 0.45  # ... or this close (TF-IDF) to the article's own title and body
    routed_share: float = 0.5  # the agent routed this share of the topic to the article's intents, or ...
    trusted_cover_share: float = 0.7  # ... (when retrieval mostly failed) with a label trusted this much and
    # the article returned, at any score, for `routed_share` of the topic, or ...
    retrieved_share: float = 0.3  # ... this share of its conversations retrieved the article
    missing_rate_ratio: float = 1.5  # an uncovered topic failing less than this many times the base rate: no gap
    revise_rate_ratio: float = 2.0  # covered topic failing this many times the base rate: revise
    revise_keep_ratio: float = 1.5  # ... and an open one stays open until it falls below this ratio
    absorb_miss_share: float = 0.5  # a covered topic whose retrieval mostly failed, and ...
    absorb_cos: float = 0.6  # ... whose text is this close to a missing-article topic, hands it its misses
    stale_override_share: float = 0.3  # share of an article's conversations overridden on a policy clause
    stale_expected_retrievals: float = 30.0  # no previous window: zero retrievals when an average article got this many
    # Out of scope: a topic whose words are mostly foreign to the business (share of its TF-IDF mass on
    # terms no article and no answered conversation uses), or whose messages name the configured terms.
    # A topic made of a few messages repeated word for word ("hi", "ok", a template) has no spread: below
    # this share of distinct messages it is chit-chat or noise, not a question the KB should answer.
    domain_min_share: float = 0.25
    min_distinct_share: float = 0.3
    # ... of its first `distinct_cap` conversations' worth: distinct phrasings grow slower than a topic, and a
    # real question asked 5,000 times in a big team's month has a few hundred wordings, not 1,500.
    distinct_cap: int = 200
    out_of_scope_terms: tuple = field(default_factory=tuple)
    # Missing-article topics that are one gap split by clustering: merged when their centroids are this
    # close, or this close and routed by the agent mostly to the same intent.
    merge_cos: float = 0.7
    merge_routed_cos: float = 0.35
    # ... or whose KB searches return the same near-miss articles (profile cosine, over the background of
    # all failing searches), when both have at least `merge_search_min` conversations with search results.
    merge_search_cos: float = 0.6
    merge_search_min: int = 6
    # Contradictions: two published articles on the same topic whose facts (numbers with units) differ.
    contradiction_topic_cos: float = 0.6
    # Ranking and report.
    escalation_weight: float = 0.5
    escalation_hour_weight: float = 0.1
    top_terms: int = 8
    representatives: int = 3
    draft_replies: int = 3
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
        if "out_of_scope_terms" in given:
            given["out_of_scope_terms"] = tuple(str(t).lower() for t in given["out_of_scope_terms"])
        p = cls(**{"window_days": settings.gap_window_days, **given})
        return replace(p, window_days=window_days) if window_days else p
