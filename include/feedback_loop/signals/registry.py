"""The metric registry: every feedback signal of the matrix, by name, with what it counts, how it is judged
and which component acts on it; the routing table and the thresholds. The one place that names the metrics:
the SQL of each metric's units (units.py) is keyed by these names, the docs' table is generated from them.
"""

from __future__ import annotations

from dataclasses import dataclass

from feedback_loop.settings import Settings

METRICS_MART = "signal_metrics"
QUEUE_MART = "action_queue"
AB_MART = "signal_ab_tests"
DIMENSIONS = ("intent", "channel", "strategy", "mode")
SUCCESS_STATUSES = ("ok", "success", "succeeded", "completed", "done")
AGENT_STEPS = ("intent_classified", "kb_query", "policy_check", "action_proposed", "action_executed",
               "agent_response", "fallback", "error")

# ----------------------------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Metric:
    """One metric: what it counts, how it is judged, and which component acts on it (the signal matrix)."""

    name: str
    kind: str  # explicit | implicit | outcome | reasoning | operational | comparative
    matrix_signal: str  # the row of the signal matrix it belongs to
    unit: str  # what one unit is (a conversation of the day, a survey answer, ...)
    numerator: str
    denominator: str
    scale: str
    higher_is_better: bool | None  # None: shown, never raises an action
    component: str  # the component to act on (docs/signals.md: routing table)
    action: str  # the improvement action the matrix names
    window: str = "day"  # day | reopen | reengagement | review
    agg: str = "ratio"  # ratio (sum num / sum den) | p50 | p95 (percentile of num)
    share: bool = False  # a proportion in [0, 1] (binomial noise floor, binomial level bound)
    extra_dimension: str | None = None  # a breakdown of its own (stage, reason, action, step, handled_by)
    min: float | None = None  # level threshold: raise when confidently below
    max: float | None = None  # level threshold: raise when confidently above
    min_change: float | None = None  # smallest absolute change vs baseline worth an action
    min_change_rel: float | None = None  # smallest relative change vs baseline worth an action


_FT = "fine-tune the reasoning model's responses"
_RETRAIN = "retrain the intent classifier"
_KB = "update the knowledge base and resolution scripts"
_FLOW = "optimise the multi-step workflow logic"
_TONE = "adjust tone and empathy triggers"
_POLICY = "correct the grounding in policy documents"
_AHT = "streamline API calls and reduce reasoning loops"
_GAPS = "find and patch resolution gaps"

METRICS: tuple[Metric, ...] = (
    # Explicit
    Metric("csat_top2_share", "explicit", "CSAT", "CSAT answer exported on the day (latest per case)",
           "answers scoring 4 or 5", "CSAT answers", "share 0-1 of a 1-5 scale", True, "reasoning_model", _FT,
           share=True, min=0.70, min_change=0.08),
    Metric("csat_mean", "explicit", "CSAT", "CSAT answer exported on the day (latest per case)",
           "sum of scores", "CSAT answers", "mean on 1-5", True, "reasoning_model", _FT, min=3.8, min_change=0.3),
    Metric("ces_mean", "explicit", "customer effort score", "CES answer exported on the day (latest per case)",
           "sum of scores", "CES answers", "mean on 1-7 (7 = very easy)", True, "workflow", _FLOW, min=4.5,
           min_change=0.4),
    Metric("ces_high_share", "explicit", "customer effort score", "CES answer exported on the day",
           "answers scoring 5, 6 or 7", "CES answers", "share 0-1", True, "workflow", _FLOW, share=True,
           min=0.55, min_change=0.1),
    Metric("thumbs_up_rate", "explicit", "CSAT", "conversation of the day with a thumbs rating",
           "thumbs up", "thumbs up + thumbs down", "share 0-1", True, "reasoning_model", _FT, share=True,
           min_change=0.12),
    Metric("thumbs_down_rate", "explicit", "CSAT", "conversation of the day with a thumbs rating",
           "thumbs down", "thumbs up + thumbs down", "share 0-1", False, "reasoning_model", _FT, share=True,
           max=0.45, min_change=0.12),
    Metric("override_rate", "explicit", "agent override / escalation", "conversation of cohort day X",
           "conversations with a decision a human corrected (override outcome 'corrected') before the end of "
           "the review window", "conversations", "share 0-1", False, "intent_classifier", _RETRAIN,
           window="review", share=True, extra_dimension="stage", min_change=0.05),
    Metric("review_correction_rate", "explicit", "agent override / escalation",
           "review (override-log row) exported on the day", "reviews with outcome 'corrected'", "reviews",
           "share 0-1", False, "intent_classifier", _RETRAIN, share=True, extra_dimension="stage",
           min_change=0.12),
    Metric("review_escalation_rate", "explicit", "agent override / escalation",
           "review (override-log row) exported on the day", "reviews with outcome 'escalated'", "reviews",
           "share 0-1", False, "intent_classifier", _RETRAIN, share=True, extra_dimension="stage",
           min_change=0.1),
    Metric("escalation_rate", "explicit", "agent override / escalation", "conversation of the day",
           "conversations escalated (agent 'escalated' event or case escalated)", "conversations",
           "share 0-1", False, "intent_classifier", _RETRAIN, share=True, extra_dimension="escalation_reason",
           max=0.35, min_change=0.05),
    Metric("override_triad_completeness", "explicit", "agent override / escalation",
           "corrected review exported on the day (staged or quarantined as incomplete_triad)",
           "corrections with the full triad (staged)", "corrections", "share 0-1", True, "review_process",
           "make reviewers log the agent's decision, their own decision and rationale, and the grounding",
           share=True, extra_dimension="stage", min=0.9, min_change=0.05),
    # Implicit
    Metric("fcr", "implicit", "first-contact resolution", "conversation of the day that has a case",
           "conversations whose case is solved or closed, never reopened, and that are not a repeat contact "
           "(same customer and intent within the re-engagement window before)", "conversations with a case",
           "share 0-1", True, "knowledge_base", _KB, share=True, min=0.6, min_change=0.08),
    Metric("reopen_rate_24h", "implicit", "post-resolution contact rate",
           "resolution (case, resolved_at) on cohort day X of a case linked to an agent conversation (a reopen "
           "with no resolution exported before it implies one on the reopen's day)",
           "resolutions reopened within 24 h", "resolutions", "share 0-1", False, "knowledge_base", _GAPS,
           window="reopen", share=True, max=0.15, min_change=0.05),
    Metric("reengagement_rate_7d", "implicit", "post-resolution contact rate",
           "conversation started on cohort day X",
           "conversations followed by another conversation of the same customer on the same intent within "
           "the re-engagement window", "conversations", "share 0-1", False, "knowledge_base", _GAPS,
           window="reengagement", share=True, max=0.2, min_change=0.05),
    Metric("suggestion_dismissal_rate", "implicit", "first-contact resolution",
           "conversation of the day with a suggestion shown", "suggestions dismissed", "suggestions shown",
           "share 0-1", False, "knowledge_base", _KB, share=True, max=0.6, min_change=0.15),
    Metric("suggestion_dwell_ms", "implicit", "first-contact resolution",
           "suggestion event of the day with a dwell time", "sum of dwell_ms", "events", "milliseconds",
           None, "knowledge_base", _KB),
    Metric("link_click_rate", "implicit", "first-contact resolution",
           "conversation of the day with a suggestion shown", "conversations with a link clicked",
           "conversations", "share 0-1", True, "knowledge_base", _KB, share=True, min_change=0.15),
    Metric("action_completion_rate", "implicit", "average handling time",
           "live conversation of the day in which the agent proposed a back-end action",
           "conversations where every proposed action was executed with a success status", "conversations",
           "share 0-1", True, "workflow", _FLOW, share=True, min=0.6, min_change=0.1),
    Metric("sentiment_mean", "implicit", "conversation sentiment trend",
           "conversation of the day with customer text", "sum of the conversation's mean VADER compound",
           "conversations", "mean on -1..1", True, "tone", _TONE, min_change=0.1),
    Metric("negative_sentiment_rate", "implicit", "conversation sentiment trend",
           "conversation of the day with customer text", "conversations whose mean compound <= -0.05",
           "conversations", "share 0-1", False, "tone", _TONE, share=True, max=0.35, min_change=0.08),
    Metric("sentiment_shift", "implicit", "conversation sentiment trend",
           "conversation of the day with two or more customer messages",
           "sum of (last message's compound - first message's compound)", "conversations",
           "mean on -2..2", True, "tone", _TONE, min_change=0.15),
    Metric("autonomous_resolution_rate", "implicit", "first-contact resolution",
           "live conversation started on cohort day X that has a case by the end of the review window",
           "conversations whose case the agent resolved (resolved_by 'ai') with no reopen, no escalation and "
           "no human correction or escalation before the end of the review window", "conversations",
           "share 0-1", True, "reasoning_model", _FT, window="review", share=True, min=0.4, min_change=0.08),
    Metric("aht_s", "implicit", "average handling time", "conversation of the day",
           "sum of (last event - first event) in seconds", "conversations", "seconds", False, "workflow", _AHT,
           min_change_rel=0.25),
    # Outcome-based
    Metric("outcome_verification_rate", "outcome", "policy compliance flag",
           "outcome check exported on the day", "checks with verified = true", "checks", "share 0-1", True,
           "workflow", "fix the back-end action or its arguments", share=True, extra_dimension="action",
           min=0.85, min_change=0.05),
    Metric("policy_flag_rate", "outcome", "policy compliance flag",
           "conversation of the day with a policy check", "conversations with a failed or waived check",
           "conversations with a policy check", "share 0-1", False, "policy_grounding", _POLICY, share=True,
           min_change=0.05),
    Metric("policy_breach_rate", "outcome", "policy compliance flag",
           "conversation started on cohort day X with a policy check",
           "conversations with a failed or waived check that a human corrected at the policy stage before the "
           "end of the review window", "conversations with a policy check", "share 0-1", False,
           "policy_grounding", _POLICY, window="review", share=True, max=0.05, min_change=0.03),
    # Reasoning trace
    Metric("dead_end_rate", "reasoning", "average handling time", "conversation of the day",
           "conversations in which the agent repeated a step (same KB query, same proposed action, an intent "
           "classified again) with no action executed in between", "conversations", "share 0-1", False,
           "workflow", _AHT, share=True, max=0.1, min_change=0.05),
    Metric("kb_no_result_rate", "reasoning", "first-contact resolution", "kb_query event of the day",
           "queries with no result", "queries", "share 0-1", False, "knowledge_base", _KB, share=True,
           max=0.25, min_change=0.05),
    Metric("kb_weak_result_rate", "reasoning", "first-contact resolution", "kb_query event of the day",
           "queries with no result or a best score below signals_kb_low_score", "queries", "share 0-1", False,
           "knowledge_base", _KB, share=True, max=0.35, min_change=0.08),
    Metric("steps_per_resolution", "reasoning", "average handling time",
           "conversation of the day whose case is solved or closed",
           "agent steps (intent, KB, policy, action, response, fallback and error events)",
           "resolved conversations", "steps", False, "workflow", _AHT, min_change_rel=0.25),
    # Operational
    Metric("latency_p50_ms", "operational", "average handling time", "event of the day with a latency",
           "-", "-", "milliseconds (median)", False, "workflow", _AHT, agg="p50", extra_dimension="step",
           min_change_rel=0.3),
    Metric("latency_p95_ms", "operational", "average handling time", "event of the day with a latency",
           "-", "-", "milliseconds (95th percentile)", False, "workflow", _AHT, agg="p95",
           extra_dimension="step", min_change_rel=0.3),
    Metric("error_rate", "operational", "average handling time", "conversation of the day",
           "conversations with an error event", "conversations", "share 0-1", False, "workflow", _AHT,
           share=True, max=0.05, min_change=0.03),
    Metric("fallback_rate", "operational", "first-contact resolution", "conversation of the day",
           "conversations with a fallback event", "conversations", "share 0-1", False, "knowledge_base", _KB,
           share=True, max=0.25, min_change=0.05),
    Metric("tokens_per_resolution", "operational", "average handling time",
           "conversation of the day whose case is solved or closed", "input + output tokens",
           "resolved conversations", "tokens", False, "workflow", _AHT, extra_dimension="handled_by",
           min_change_rel=0.3),
    Metric("cost_per_resolution_usd", "operational", "average handling time",
           "conversation of the day whose case is solved or closed",
           "model cost + human handle-time cost + review cost (cost model in Settings)",
           "resolved conversations", "US dollars", False, "workflow", _AHT, extra_dimension="handled_by",
           min_change_rel=0.3),
    # Comparative (shadow mode; the A/B tests have their own mart)
    Metric("shadow_intent_agreement", "comparative", "agent override / escalation",
           "shadow-mode conversation of the day whose case has a human label",
           "conversations where the agent's final intent equals the human's label", "conversations",
           "share 0-1", True, "intent_classifier", _RETRAIN, share=True, min=0.7, min_change=0.1),
    Metric("shadow_review_agreement", "comparative", "agent override / escalation",
           "review exported on the day of a shadow-mode conversation", "reviews with outcome 'approved'",
           "reviews", "share 0-1", True, "intent_classifier", _RETRAIN, share=True, extra_dimension="stage",
           min_change=0.15),
)
METRIC_BY_NAME = {m.name: m for m in METRICS}

# Breakdowns that route to another component than the metric's own (the rest of the routing table).
STAGE_COMPONENT = {"intent": ("intent_classifier", _RETRAIN), "action": ("workflow", _FLOW),
                   "response": ("reasoning_model", _FT), "policy": ("policy_grounding", _POLICY)}
REASON_COMPONENT = {"missing_knowledge": ("knowledge_base", _KB), "policy_exception": ("policy_grounding", _POLICY),
                    "low_confidence": ("intent_classifier", _RETRAIN), "customer_request": ("tone", _TONE)}
ROUTES = {
    **{(m, "stage", s): c for m in ("review_correction_rate", "review_escalation_rate", "override_rate")
       for s, c in STAGE_COMPONENT.items()},
    **{("escalation_rate", "escalation_reason", r): c for r, c in REASON_COMPONENT.items()},
}
AB_METRICS = ("fcr", "autonomous_resolution_rate", "reopen_rate_24h", "csat_top2_share", "csat_mean")


def thresholds(settings: Settings) -> dict[str, dict]:
    """Each metric's thresholds: the defaults above, overridden by `Settings.signals_thresholds`."""
    out = {}
    for m in METRICS:
        t = {"min": m.min, "max": m.max, "min_change": m.min_change, "min_change_rel": m.min_change_rel}
        t.update((settings.signals_thresholds or {}).get(m.name, {}))
        out[m.name] = t
    unknown = set(settings.signals_thresholds or {}) - set(out)
    if unknown:
        raise ValueError(f"signals_thresholds names unknown metrics: {sorted(unknown)}")
    return out


def metric_docs() -> str:
    """The metric table of docs/signals.md, generated from the registry (so the two cannot drift)."""
    lines = ["| metric | kind | unit | numerator | denominator | scale | window | better | component |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m in METRICS:
        better = {True: "higher", False: "lower", None: "-"}[m.higher_is_better]
        extra = f" (also by `{m.extra_dimension}`)" if m.extra_dimension else ""
        lines.append(f"| `{m.name}`{extra} | {m.kind} | {m.unit} | {m.numerator} | {m.denominator} | {m.scale} "
                     f"| {m.window} | {better} | `{m.component}` |")
    return "\n".join(lines)
