"""Signals: every feedback signal of the matrix, per day and scope, and the improvement-action queue.

One run for day D (an in-memory DuckDB over the lake, nothing loaded into pandas) writes three marts:

- `marts/signal_metrics/dt=D`: long format, one row per (metric_date, metric, dimension, dimension_value)
  with numerator, denominator, value, sample size, standard error, whether the value is final, and the
  comparison with the trailing baseline (change, z-score, beyond noise).
- `marts/action_queue/dt=D`: the signals that crossed a threshold (a level, or a change beyond noise),
  routed to the component the signal matrix says to act on, with their evidence.
- `marts/signal_ab_tests/dt=D`: strategies compared on resolution, reopens and CSAT, with a significance
  test and the sample size it rests on.

How it works: every metric is first computed per *unit* (a conversation, a survey answer, a review, a KB
query, a step...) into one table `units(metric, metric_date, unit_id, conversation_id, intent, channel,
strategy, mode, extra_dim, extra_value, base, num, den)`. Every value is then a ratio of sums
(sum(num) / sum(den)) or a percentile of `num`, grouped by each dimension; the same table gives the
example conversations of an action. Day metrics describe the rows exported on D and are final at once.
Windowed metrics (reopen within 24 h, re-engagement within 7 days, what humans did within the review
window) describe a cohort day X and are final once X + window + lateness allowance <= D: after that the
data-quality stage rejects any row that could still change them. The run for D recomputes every cohort
whose value is not final yet, so late data lands in the day it belongs to. docs/signals.md defines each
metric precisely.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from datetime import date, timedelta

from feedback_loop.ingest import contract
from feedback_loop.lake.files import Lake
from feedback_loop.settings import Settings

log = logging.getLogger(__name__)

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


# ----------------------------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class _Plan:
    """The dates one run reads and writes, derived from the day and the settings."""

    day: date
    late_days: int  # the lateness allowance in whole days: after it no row can change a value
    windows: dict  # window name -> days
    baseline_days: int
    ab_days: int

    @classmethod
    def of(cls, settings: Settings, day: date) -> _Plan:
        windows = {"day": 0, "reopen": 1, "reengagement": int(settings.signals_reengagement_days),
                   "review": int(settings.signals_review_window_days)}
        return cls(day, math.ceil(settings.lateness_hours / 24), windows,
                   int(settings.signals_baseline_days), int(settings.signals_ab_window_days))

    def final_lag(self, window: str) -> int:
        """Days after a cohort day until its value is final (0 for day metrics)."""
        w = self.windows[window]
        return 0 if window == "day" else w + self.late_days

    @property
    def max_lag(self) -> int:
        return max(self.final_lag(w) for w in self.windows)

    def d(self, days_before: int) -> str:
        return str(self.day - timedelta(days=days_before))


def run_signals(settings: Settings, day: date) -> dict:
    """Compute the signal metrics, the A/B tests and the action queue of `day`; return a small summary."""
    from feedback_loop.datasets import pii
    from feedback_loop.lake.duck import connect
    from feedback_loop.signals import sentiment

    dt = day.isoformat()
    lake = Lake(settings.lake)
    if not lake.has_partition("marts", "conversation_facts", dt):
        raise RuntimeError(f"no marts/conversation_facts for {dt}: run the model stage first")
    plan = _Plan.of(settings, day)
    con = connect()
    try:
        sentiment.register(con)
        pii.register_duckdb(con, settings)  # labels come from data: redact them like free text
        _defs_table(con, settings, plan)
        _load_inputs(con, lake, settings, plan)
        units_sql = _units_sql(con, settings, plan, plan.d(0), plan.d(0), "run")
        # units is a view, not a table: materialising its millions of rows cost more than computing them, and
        # each reader needs only some metrics' branches of the UNION ALL (DuckDB prunes the others on the
        # constant metric name): the aggregates read every branch once, the examples only the raised metrics'.
        con.execute(f"CREATE TEMP VIEW units AS {units_sql}")
        n_units = _aggregate(con, plan)
        _baseline(con, lake, settings, plan)
        lake.write_query(con, f"SELECT DATE '{dt}' AS dt, * REPLACE (redact_pii(dimension_value) AS dimension_value) "
                              f"FROM metrics ORDER BY {_KEY}", "marts", METRICS_MART, dt)
        _action_queue(con, lake, settings, plan)  # the last reader of units
        # Temp tables live in memory under the connection's memory limit: dropped once nothing reads them.
        con.execute("DROP VIEW units; DROP TABLE run_ev; DROP TABLE run_conv; DROP TABLE run_sent; "
                    "DROP TABLE run_per_conv")
        ab_rows = _ab_tests(con, settings, plan)
        lake.write_query(con, f"SELECT DATE '{dt}' AS dt, * REPLACE (redact_pii(control) AS control, "
                              "redact_pii(treatment) AS treatment) FROM ab ORDER BY metric, treatment", "marts", AB_MART, dt)
        lake.write_query(con, f"SELECT DATE '{dt}' AS dt, * REPLACE (redact_pii(scope_value) AS scope_value) "
                              "FROM queue ORDER BY severity DESC, action_id",
                         "marts", QUEUE_MART, dt)
        counts = con.execute(
            "SELECT (SELECT count(*) FROM metrics), (SELECT count(*) FROM queue), "
            f"{n_units}, (SELECT count(*) FROM metrics WHERE NOT is_final)"
        ).fetchall()[0]
        by_component = dict(con.execute(
            "SELECT target_component, count(*) FROM queue GROUP BY 1 ORDER BY 1").fetchall())
    finally:
        con.close()
    out = {"dt": dt, "metric_rows": counts[0], "provisional_rows": counts[3], "units": counts[2],
           "actions": counts[1], "actions_by_component": by_component, "ab_tests": ab_rows,
           "metrics": lake.partition_file("marts", METRICS_MART, dt),
           "action_queue": lake.partition_file("marts", QUEUE_MART, dt)}
    log.info("signals %s: %s metric rows (%s provisional), %s actions %s", dt, out["metric_rows"],
             out["provisional_rows"], out["actions"], by_component)
    return out


_KEY = "metric, metric_date, dimension, dimension_value"


def _files(lake: Lake, layer: str, name: str, first: str, last: str) -> str | None:
    days = [d for d in lake.days(layer, name) if first <= d <= last]
    if not days:
        return None
    return "[" + ", ".join(f"'{lake.partition_file(layer, name, d)}'" for d in days) + "]"


def _empty(source: str, extra: str = "") -> str:
    """A typed, empty SELECT with the staged columns of a contract source (for days with no partition)."""
    cols = [f'NULL::{f.type} AS "{f.name}"' for f in contract.SOURCES[source].fields]
    cols += ["NULL::DATE AS dt", "NULL::BIGINT AS _row_id", "NULL::VARCHAR AS _extra"]
    return "SELECT " + ", ".join(cols) + extra + " WHERE false"


def _view(con, lake: Lake, name: str, layer: str, dataset: str, first: str, last: str, empty: str) -> None:
    files = _files(lake, layer, dataset, first, last)
    body = (f"SELECT * FROM read_parquet({files}, hive_partitioning=true, union_by_name=true)" if files else empty)
    con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {body}")


def _load_inputs(con, lake: Lake, settings: Settings, p: _Plan) -> None:
    """Views over the lake partitions this run needs, and per-conversation tables shared by all families."""
    d0 = p.d(0)
    ab_back = p.max_lag + p.ab_days
    facts_first = p.d(settings.reference_lookback_days + ab_back + p.windows["reengagement"])
    _view(con, lake, "facts", "marts", "conversation_facts", facts_first, d0, "SELECT 1 WHERE false")
    _view(con, lake, "cases", "staged", "crm_cases", facts_first, d0, _empty("crm_cases"))
    _view(con, lake, "surveys", "staged", "surveys", p.d(p.ab_days), d0, _empty("surveys"))
    _view(con, lake, "ovr_staged", "staged", "overrides", p.d(ab_back), d0, _empty("overrides"))
    _view(con, lake, "ovr_quarantined", "quarantine", "overrides", p.d(ab_back), d0,
          _empty("overrides", ", NULL::VARCHAR AS quarantine_reason"))
    _view(con, lake, "checks", "staged", "outcome_checks", d0, d0, _empty("outcome_checks"))
    _view(con, lake, "events", "staged", "agent_events", d0, d0, _empty("agent_events"))

    con.execute("""CREATE TEMP TABLE case_now AS
        SELECT * FROM cases
        QUALIFY row_number() OVER (PARTITION BY case_id ORDER BY updated_at DESC, dt DESC, _row_id DESC) = 1""")
    # One row per conversation over every fact day read: the dimensions of its first fact row (the
    # conversation as the agent first saw it), with the latest known channel.
    con.execute("""CREATE TEMP TABLE conv_dims AS
        WITH f AS (
            SELECT conversation_id,
                arg_min(customer_id, dt) AS customer_id, arg_min(case_id, dt) AS case_id,
                min(started_at) AS started_at, max(ended_at) AS ended_at, min(dt) AS first_fact_date,
                arg_min(final_intent, dt) AS intent, arg_max(channel, dt) AS channel,
                arg_min(strategy, dt) AS strategy, arg_min(mode, dt) AS mode,
                bool_or(agent_escalated) AS agent_escalated,
                sum(n_policy_pass + n_policy_fail + n_policy_waived) AS n_policy_checks,
                sum(n_policy_fail + n_policy_waived) AS n_policy_flags
            FROM facts GROUP BY conversation_id),
        link AS (SELECT conversation_id, min(case_id) AS case_id FROM case_now
                 WHERE conversation_id IS NOT NULL GROUP BY 1)
        SELECT f.* EXCLUDE (case_id, intent, channel, strategy, mode),
            coalesce(f.case_id, link.case_id) AS case_id,
            coalesce(f.intent, 'unknown') AS d_intent, coalesce(f.channel, k.channel, 'none') AS d_channel,
            coalesce(f.strategy, 'none') AS d_strategy, coalesce(f.mode, 'unknown') AS d_mode
        FROM f LEFT JOIN link USING (conversation_id)
        LEFT JOIN case_now k ON k.case_id = coalesce(f.case_id, link.case_id)""")
    # Every review: staged rows, plus corrections quarantined only for an incomplete triad (they happened,
    # they just cannot serve as labels).
    con.execute("""CREATE TEMP TABLE reviews AS
        SELECT override_id, ts, conversation_id, stage, outcome, dt, true AS triad_complete FROM ovr_staged
        UNION ALL
        SELECT override_id, ts, conversation_id, stage, outcome, dt, false FROM ovr_quarantined
        WHERE quarantine_reason = 'incomplete_triad'""")


def _conv_days_sql(settings: Settings, p: _Plan, first: str, last: str) -> str:
    """The fact rows of days [first, last] with dimensions, repeat-contact flag and the cost model."""
    r = int(p.windows["reengagement"])
    handled = ("CASE WHEN f.resolved_by = 'ai' AND NOT coalesce(f.escalated, false) AND f.n_corrections = 0 "
               "THEN 'autonomous' ELSE 'human' END")
    llm = (f"CASE WHEN f.cost_usd > 0 THEN f.cost_usd ELSE f.input_tokens / 1000.0 * {settings.cost_input_usd_per_1k_tokens} "
           f"+ f.output_tokens / 1000.0 * {settings.cost_output_usd_per_1k_tokens} END")
    return f"""
        SELECT f.*, d.d_intent, coalesce(f.channel, d.d_channel) AS d_channel, d.d_strategy, d.d_mode,
            {handled} AS handled_by,
            {llm} + CASE WHEN {handled} = 'human'
                         THEN coalesce(f.handle_time_s, 0) / 3600.0 * {settings.cost_human_usd_per_hour} ELSE 0 END
                  + f.n_overrides * {settings.cost_review_usd} AS total_cost_usd,
            EXISTS (SELECT 1 FROM conv_dims o WHERE o.customer_id = d.customer_id AND o.d_intent = d.d_intent
                    AND d.d_intent <> 'unknown' AND o.conversation_id <> d.conversation_id
                    AND o.started_at < d.started_at
                    AND o.started_at >= d.started_at - INTERVAL {r} DAY) AS repeat_contact
        FROM facts f JOIN conv_dims d USING (conversation_id)
        WHERE f.dt BETWEEN DATE '{first}' AND DATE '{last}'"""


def _u(metric: str, src: str, num: str, den: str = "1", where: str = "true", *, unit: str = "conversation_id",
       conv: str = "conversation_id", on: str = "dt", extra: tuple[str, str] | None = None,
       base: bool = True) -> str:
    """The SELECT of one metric's units from `src` (which has d_intent, d_channel, d_strategy, d_mode)."""
    xd, xv = (f"'{extra[0]}'", extra[1]) if extra else ("NULL", "NULL")
    return (f"SELECT '{metric}' AS metric, ({on})::DATE AS metric_date, ({unit})::VARCHAR AS unit_id, "
            f"({conv})::VARCHAR AS conversation_id, d_intent AS intent, d_channel AS channel, "
            f"d_strategy AS strategy, d_mode AS mode, {xd}::VARCHAR AS extra_dim, ({xv})::VARCHAR AS extra_value, "
            f"{str(base).lower()} AS base, ({num})::DOUBLE AS num, ({den})::DOUBLE AS den FROM {src} WHERE {where}")


def _units_sql(con, settings: Settings, p: _Plan, first: str, last: str, purpose: str,
               only: tuple[str, ...] | None = None) -> str:
    """Every metric's units for day metrics of [first, last] and for the cohorts the windows need.

    purpose 'run': day metrics of [first, last] plus every cohort not final yet (and the one becoming
    final). purpose 'ab': day metrics of [first, last] and the final cohorts of the A/B window.
    """
    want = (lambda name: only is None or name in only)
    parts: list[str] = []
    # Sources used by many metrics are materialised once (DuckDB would recompute an inlined subquery
    # for every metric that reads it).
    con.execute(f"CREATE OR REPLACE TEMP TABLE {purpose}_conv AS {_conv_days_sql(settings, p, first, last)}")
    conv = f"{purpose}_conv"
    reason = "coalesce(escalation_reason, 'unspecified')"
    steps = ", ".join(f"'{s}'" for s in AGENT_STEPS)
    ok = ", ".join(f"'{s}'" for s in SUCCESS_STATUSES)
    low = float(settings.signals_kb_low_score)

    # -- conversations of the day (conversation_facts)
    day_conv = [
        _u("thumbs_up_rate", conv, "n_thumbs_up", "n_thumbs_up + n_thumbs_down", "n_thumbs_up + n_thumbs_down > 0"),
        _u("thumbs_down_rate", conv, "n_thumbs_down", "n_thumbs_up + n_thumbs_down",
           "n_thumbs_up + n_thumbs_down > 0"),
        _u("escalation_rate", conv, "escalated::INT"),
        _u("escalation_rate",
           f"(SELECT c.*, r.reason FROM {conv} c, (SELECT DISTINCT {reason} AS reason FROM {conv} WHERE escalated) r)",
           f"(escalated AND {reason} = reason)::INT", extra=("escalation_reason", "reason"), base=False),
        _u("fcr", conv, "(resolved AND reopen_count = 0 AND NOT repeat_contact)::INT", where="case_status IS NOT NULL"),
        _u("suggestion_dismissal_rate", conv, "least(n_suggestions_dismissed, n_suggestions_shown)",
           "n_suggestions_shown", "n_suggestions_shown > 0"),
        _u("link_click_rate", conv, "(n_links_clicked > 0)::INT", where="n_suggestions_shown > 0"),
        _u("error_rate", conv, "(n_errors > 0)::INT"),
        _u("fallback_rate", conv, "(n_fallbacks > 0)::INT"),
        _u("aht_s", conv, "date_diff('millisecond', started_at, ended_at) / 1000.0"),
        _u("policy_flag_rate", conv, "(n_policy_fail + n_policy_waived > 0)::INT",
           where="n_policy_pass + n_policy_fail + n_policy_waived > 0"),
        _u("tokens_per_resolution", conv, "input_tokens + output_tokens", where="resolved",
           extra=("handled_by", "handled_by")),
        _u("cost_per_resolution_usd", conv, "total_cost_usd", where="resolved", extra=("handled_by", "handled_by")),
        _u("shadow_intent_agreement", conv, "(final_intent IS NOT DISTINCT FROM coalesce(human_category, human_intent))::INT",
           where="d_mode = 'shadow' AND coalesce(human_category, human_intent) IS NOT NULL"),
    ]
    parts += [s for s in day_conv if want(s.split("'")[1])]

    # -- events of the day (staged agent_events): only for the run itself, never over a range
    if purpose == "run":
        # Only the event columns the metrics below read (the events' text, JSON and ids would fill memory).
        con.execute("CREATE OR REPLACE TEMP TABLE run_ev AS SELECT e.event_id, e.ts, e.conversation_id, e.event_type, "
                    "e.text, e.action, e.action_status, e.dwell_ms, e.latency_ms, e.kb_results, e._row_id, e.dt, "
                    f"c.d_intent, c.d_channel, c.d_strategy, c.d_mode, c.resolved FROM events e JOIN {conv} c USING (conversation_id)")
        ev = "run_ev"
        sent = f"""(SELECT conversation_id, any_value(d_intent) AS d_intent, any_value(d_channel) AS d_channel,
                any_value(d_strategy) AS d_strategy, any_value(d_mode) AS d_mode, DATE '{last}' AS dt,
                count(*) AS n_msgs, avg(s) AS s_mean, first(s ORDER BY ts, _row_id) AS s_first,
                last(s ORDER BY ts, _row_id) AS s_last
            FROM (SELECT *, sentiment_compound(text) AS s FROM {ev} WHERE event_type = 'customer_message')
            WHERE s IS NOT NULL GROUP BY conversation_id)"""
        per_conv = f"""(SELECT conversation_id, any_value(d_intent) AS d_intent, any_value(d_channel) AS d_channel,
                any_value(d_strategy) AS d_strategy, any_value(d_mode) AS d_mode, any_value(resolved) AS resolved,
                DATE '{last}' AS dt,
                count(*) FILTER (event_type IN ({steps})) AS n_steps,
                count(DISTINCT action) FILTER (event_type = 'action_proposed') AS n_proposed,
                count(DISTINCT action) FILTER (event_type = 'action_executed' AND lower(action_status) IN ({ok})) AS n_done
            FROM {ev} GROUP BY conversation_id)"""
        # Each is read by two or three metrics: computed once (sentiment calls Python per message).
        con.execute(f"CREATE OR REPLACE TEMP TABLE run_sent AS SELECT * FROM {sent}")
        con.execute(f"CREATE OR REPLACE TEMP TABLE run_per_conv AS SELECT * FROM {per_conv}")
        sent, per_conv = "run_sent", "run_per_conv"
        # A dead end: a step whose key was already seen in the same progress segment (segments are cut by
        # every executed action): the same KB query, the same proposed action, an intent classified again.
        dead = """(SELECT conversation_id, bool_or(repeat) AS dead_end FROM (
                SELECT conversation_id, row_number() OVER (PARTITION BY conversation_id, seg, step_key
                                                           ORDER BY ts, _row_id) > 1 AS repeat
                FROM (SELECT conversation_id, ts, _row_id, event_type,
                        sum((event_type = 'action_executed')::INT) OVER (PARTITION BY conversation_id
                            ORDER BY ts, _row_id ROWS UNBOUNDED PRECEDING) AS seg,
                        CASE event_type WHEN 'kb_query' THEN 'kb:' || lower(trim(kb_query))
                                        WHEN 'action_proposed' THEN 'action:' || action
                                        WHEN 'intent_classified' THEN 'intent' END AS step_key
                      FROM events WHERE event_type IN ('kb_query', 'action_proposed', 'intent_classified',
                                                       'action_executed'))
                WHERE step_key IS NOT NULL) GROUP BY conversation_id)"""
        best = "coalesce(list_max(list_transform(kb_results, lambda r: r.score)), 0)"
        day_ev = [
            _u("sentiment_mean", sent, "s_mean"),
            _u("negative_sentiment_rate", sent, f"(s_mean <= {-0.05})::INT"),
            _u("sentiment_shift", sent, "s_last - s_first", where="n_msgs >= 2"),
            _u("suggestion_dwell_ms", ev, "dwell_ms", unit="event_id",
               where="dwell_ms IS NOT NULL AND event_type IN ('suggestion_shown', 'suggestion_dismissed', 'link_clicked')"),
            _u("latency_p50_ms", ev, "latency_ms", unit="event_id", where="latency_ms IS NOT NULL",
               extra=("step", "event_type")),
            _u("latency_p95_ms", ev, "latency_ms", unit="event_id", where="latency_ms IS NOT NULL",
               extra=("step", "event_type")),
            _u("kb_no_result_rate", ev, "(coalesce(len(kb_results), 0) = 0)::INT", unit="event_id",
               where="event_type = 'kb_query'"),
            _u("kb_weak_result_rate", ev, f"({best} < {low})::INT", unit="event_id", where="event_type = 'kb_query'"),
            _u("action_completion_rate", per_conv, "(n_done >= n_proposed)::INT",
               where="n_proposed > 0 AND d_mode = 'live'"),
            _u("steps_per_resolution", per_conv, "n_steps", where="resolved"),
            _u("dead_end_rate", f"{conv} c LEFT JOIN {dead} x USING (conversation_id)",
               "coalesce(x.dead_end, false)::INT", conv="c.conversation_id", unit="c.conversation_id", on="c.dt"),
        ]
        parts += [s for s in day_ev if want(s.split("'")[1])]

    # -- survey answers exported on the day: the latest answer per case and kind within the export
    srv = f"""(SELECT s.*, coalesce(s.conversation_id, k.conversation_id) AS conv_id,
            coalesce(d.d_intent, 'unknown') AS d_intent, coalesce(k.channel, d.d_channel, 'none') AS d_channel,
            coalesce(d.d_strategy, 'none') AS d_strategy, coalesce(d.d_mode, 'unknown') AS d_mode
        FROM (SELECT * FROM surveys WHERE dt BETWEEN DATE '{first}' AND DATE '{last}'
              QUALIFY row_number() OVER (PARTITION BY dt, case_id, kind ORDER BY submitted_at DESC, _row_id DESC) = 1) s
        LEFT JOIN case_now k USING (case_id)
        LEFT JOIN conv_dims d ON d.conversation_id = coalesce(s.conversation_id, k.conversation_id))"""
    day_srv = [
        _u("csat_top2_share", srv, "(score >= 4)::INT", where="kind = 'csat'", unit="survey_id", conv="conv_id"),
        _u("csat_mean", srv, "score", where="kind = 'csat'", unit="survey_id", conv="conv_id"),
        _u("ces_mean", srv, "score", where="kind = 'ces'", unit="survey_id", conv="conv_id"),
        _u("ces_high_share", srv, "(score >= 5)::INT", where="kind = 'ces'", unit="survey_id", conv="conv_id"),
    ]
    parts += [s for s in day_srv if want(s.split("'")[1])]

    # -- reviews and outcome checks exported on the day
    rev = f"""(SELECT r.*, coalesce(d.d_intent, 'unknown') AS d_intent, coalesce(d.d_channel, 'none') AS d_channel,
            coalesce(d.d_strategy, 'none') AS d_strategy, coalesce(d.d_mode, 'unknown') AS d_mode
        FROM reviews r LEFT JOIN conv_dims d USING (conversation_id)
        WHERE r.dt BETWEEN DATE '{first}' AND DATE '{last}')"""
    chk = f"""(SELECT c.*, k.conversation_id, coalesce(d.d_intent, 'unknown') AS d_intent,
            coalesce(k.channel, d.d_channel, 'none') AS d_channel, coalesce(d.d_strategy, 'none') AS d_strategy,
            coalesce(d.d_mode, 'unknown') AS d_mode
        FROM checks c LEFT JOIN case_now k USING (case_id) LEFT JOIN conv_dims d ON d.conversation_id = k.conversation_id
        WHERE c.dt BETWEEN DATE '{first}' AND DATE '{last}')"""
    day_rev = [
        _u("review_correction_rate", rev, "(outcome = 'corrected')::INT", unit="override_id", extra=("stage", "stage")),
        _u("review_escalation_rate", rev, "(outcome = 'escalated')::INT", unit="override_id", extra=("stage", "stage")),
        _u("override_triad_completeness", rev, "triad_complete::INT", where="outcome = 'corrected'",
           unit="override_id", extra=("stage", "stage")),
        _u("shadow_review_agreement", rev, "(outcome = 'approved')::INT", where="d_mode = 'shadow'",
           unit="override_id", extra=("stage", "stage")),
        _u("outcome_verification_rate", chk, "verified::INT", unit="check_id", extra=("action", "action")),
    ]
    if purpose == "run":
        parts += [s for s in day_rev if want(s.split("'")[1])]

    # -- windowed cohorts
    def cohort(window: str) -> tuple[str, str]:
        lag = p.final_lag(window)
        if purpose == "ab":  # the A/B window's final cohorts
            return p.d(lag + p.ab_days - 1), p.d(lag)
        return p.d(lag), p.d(0)  # every cohort not final yet, and the one that becomes final today

    a, b = cohort("reopen")
    # Resolutions: every (case, resolved_at) any exported state shows, plus the resolutions a daily "last
    # state" export hides: a reopen with no resolution exported since the previous reopen was resolved
    # (and reopened) within the same export day, so less than 24 h before the reopen.
    reopen = f"""(SELECT u.*, k.conversation_id, d.d_intent, coalesce(k.channel, d.d_channel) AS d_channel,
            d.d_strategy, d.d_mode
        FROM (WITH res AS (SELECT DISTINCT case_id, resolved_at FROM cases WHERE resolved_at IS NOT NULL),
                   reo AS (SELECT case_id, t, lag(t) OVER (PARTITION BY case_id ORDER BY t) AS prev_t
                           FROM (SELECT DISTINCT case_id, last_reopened_at AS t FROM cases
                                 WHERE last_reopened_at IS NOT NULL))
              SELECT case_id, resolved_at AS cohort_ts, case_id || '@' || strftime(resolved_at, '%Y-%m-%dT%H:%M:%S') AS unit,
                  EXISTS (SELECT 1 FROM reo WHERE reo.case_id = res.case_id AND reo.t > res.resolved_at
                          AND reo.t <= res.resolved_at + INTERVAL 24 HOUR) AS reopened
              FROM res
              UNION ALL
              SELECT case_id, t, case_id || '@before:' || strftime(t, '%Y-%m-%dT%H:%M:%S'), true FROM reo
              WHERE NOT EXISTS (SELECT 1 FROM res WHERE res.case_id = reo.case_id AND res.resolved_at < reo.t
                                AND (reo.prev_t IS NULL OR res.resolved_at > reo.prev_t))) u
        JOIN case_now k USING (case_id) JOIN conv_dims d ON d.conversation_id = k.conversation_id
        WHERE u.cohort_ts::DATE BETWEEN DATE '{a}' AND DATE '{b}')"""
    windowed = [_u("reopen_rate_24h", reopen, "reopened::INT", unit="unit", on="cohort_ts")]
    a, b = cohort("reengagement")
    r = p.windows["reengagement"]
    reeng = f"""(SELECT c.*, EXISTS (SELECT 1 FROM conv_dims n WHERE n.customer_id = c.customer_id
                    AND n.d_intent = c.d_intent AND c.d_intent <> 'unknown' AND n.conversation_id <> c.conversation_id
                    AND n.started_at > c.started_at AND n.started_at <= c.started_at + INTERVAL {r} DAY) AS came_back
        FROM conv_dims c WHERE c.started_at::DATE BETWEEN DATE '{a}' AND DATE '{b}')"""
    windowed.append(_u("reengagement_rate_7d", reeng, "came_back::INT", on="started_at"))

    a, b = cohort("review")
    rw = p.windows["review"]
    # The review window ends rw days after the end of the conversation's day (UTC).
    coh = f"""(SELECT c.*, (c.started_at::DATE + {rw + 1})::TIMESTAMPTZ AS window_end FROM conv_dims c
        WHERE c.started_at::DATE BETWEEN DATE '{a}' AND DATE '{b}')"""
    auto = f"""(SELECT c.*, st.status, st.resolved_by, st.reopen_count, st.escalated AS case_escalated,
            EXISTS (SELECT 1 FROM reviews v WHERE v.conversation_id = c.conversation_id
                    AND v.outcome IN ('corrected', 'escalated') AND v.ts < c.window_end) AS human_touch
        FROM {coh} c LEFT JOIN (
            SELECT c2.conversation_id, k.* EXCLUDE (conversation_id) FROM {coh} c2
            JOIN cases k ON k.case_id = c2.case_id AND k.updated_at < c2.window_end
            QUALIFY row_number() OVER (PARTITION BY c2.conversation_id ORDER BY k.updated_at DESC, k.dt DESC, k._row_id DESC) = 1
        ) st USING (conversation_id) WHERE c.d_mode = 'live' AND st.case_id IS NOT NULL)"""
    windowed.append(_u(
        "autonomous_resolution_rate", auto,
        "(coalesce(status IN ('solved', 'closed'), false) AND resolved_by = 'ai' AND coalesce(reopen_count, 0) = 0 "
        "AND NOT coalesce(case_escalated, false) AND NOT coalesce(agent_escalated, false) AND NOT human_touch)::INT",
        on="started_at"))
    corrected = ("EXISTS (SELECT 1 FROM reviews v WHERE v.conversation_id = c.conversation_id "
                 "AND v.outcome = 'corrected' AND v.ts < c.window_end {cond})")
    windowed.append(_u("override_rate", f"{coh} c", corrected.format(cond="") + "::INT", on="started_at",
                       conv="c.conversation_id", unit="c.conversation_id"))
    windowed.append(_u(
        "override_rate", f"{coh} c CROSS JOIN (SELECT DISTINCT stage FROM reviews WHERE stage IS NOT NULL) s",
        corrected.format(cond="AND v.stage = s.stage") + "::INT", on="started_at", conv="c.conversation_id",
        unit="c.conversation_id", extra=("stage", "s.stage"), base=False))
    windowed.append(_u(
        "policy_breach_rate", f"{coh} c",
        "(c.n_policy_flags > 0 AND " + corrected.format(cond="AND v.stage = 'policy'") + ")::INT",
        where="c.n_policy_checks > 0", on="started_at", conv="c.conversation_id", unit="c.conversation_id"))
    parts += [s for s in windowed if want(s.split("'")[1])]
    return "\nUNION ALL\n".join(parts)


def _defs_table(con, settings: Settings, p: _Plan) -> None:
    """The metric registry, thresholds and windows as a DuckDB table (joined by the SQL below)."""
    th = thresholds(settings)
    con.execute("""CREATE OR REPLACE TEMP TABLE defs (metric VARCHAR, kind VARCHAR, matrix_signal VARCHAR,
        agg VARCHAR, share BOOLEAN, higher_is_better BOOLEAN, window_name VARCHAR, window_days INTEGER,
        final_lag INTEGER, component VARCHAR, improvement_action VARCHAR, min_level DOUBLE, max_level DOUBLE,
        min_change DOUBLE, min_change_rel DOUBLE)""")
    con.executemany("INSERT INTO defs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
        (m.name, m.kind, m.matrix_signal, m.agg, m.share, m.higher_is_better, m.window, p.windows[m.window],
         p.final_lag(m.window), m.component, m.action, th[m.name]["min"], th[m.name]["max"],
         th[m.name]["min_change"], th[m.name]["min_change_rel"]) for m in METRICS])
    con.execute("CREATE OR REPLACE TEMP TABLE routes (metric VARCHAR, dimension VARCHAR, dimension_value VARCHAR, "
                "component VARCHAR, improvement_action VARCHAR)")
    con.executemany("INSERT INTO routes VALUES (?, ?, ?, ?, ?)",
                    [(m, d, v, c[0], c[1]) for (m, d, v), c in ROUTES.items()])


def _by_scope_sql(aggregates: str, metrics: list[str]) -> str:
    """`aggregates` of the units of `metrics` per (metric, metric_date, dimension, dimension_value): the
    'all' scope and each of DIMENSIONS over the base units, and each extra breakdown over its own units."""
    names = ", ".join(f"'{m}'" for m in metrics)
    dimension = " ".join(f"WHEN grouping({d}) = 0 THEN '{d}'" for d in DIMENSIONS)
    value = " ".join(f"WHEN grouping({d}) = 0 THEN {d}" for d in DIMENSIONS)
    sets = ", ".join(["(metric, metric_date)"] + [f"(metric, metric_date, {d})" for d in DIMENSIONS])
    return f"""
        SELECT metric, metric_date, CASE {dimension} ELSE 'all' END AS dimension,
            CASE {value} ELSE 'all' END AS dimension_value, {aggregates}
        FROM units WHERE base AND metric IN ({names}) GROUP BY GROUPING SETS ({sets})
        UNION ALL
        SELECT metric, metric_date, extra_dim, extra_value, {aggregates}
        FROM units WHERE extra_dim IS NOT NULL AND metric IN ({names})
        GROUP BY metric, metric_date, extra_dim, extra_value"""


def _aggregate(con, p: _Plan) -> int:
    """`cur`: every metric of this run, by day and by each dimension, with its delta-method standard error.

    Returns the number of units: the base units (each is in its metric's 'all' scope once) plus the
    others (the extra breakdowns' own units, each in one extra scope)."""
    # Every scope in one pass per aggregate: GROUPING SETS over the base units (all + each dimension) and
    # one GROUP BY over the units of the extra breakdowns, instead of a table with a copy of every unit per
    # scope (six copies of millions of rows, which no longer fit the memory limit and spilled).
    # Ratio of sums R = sum(num) / sum(den); its standard error by the delta method:
    # se = sqrt(var(num - R den) / n) / mean(den), var(num - R den) = var(num) + R^2 var(den) - 2 R cov.
    ratio = [m.name for m in METRICS if m.agg == "ratio"]
    con.execute(f"""CREATE TEMP TABLE ratio AS {_by_scope_sql(
        "count(*) AS sample_size, sum(num) AS numerator, sum(den) AS denominator, "
        "sum(num) / nullif(sum(den), 0) AS value, var_samp(num) AS v_num, var_samp(den) AS v_den, "
        "covar_samp(num, den) AS c_nd, avg(den) AS m_den, count(*) FILTER (NOT base) AS n_not_base", ratio)}""")
    # Quantiles are holistic (a group's every value is held until the end, and cannot spill): one metric at
    # a time, so a 10 M-event day stays within the memory limit (all at once ran out of 1 GB).
    parts = [(q, m.name) for q, agg in ((0.5, "p50"), (0.95, "p95")) for m in METRICS if m.agg == agg]
    for i, (q, name) in enumerate(parts):
        sql = _by_scope_sql(f"NULL::DOUBLE AS numerator, NULL::DOUBLE AS denominator, quantile_cont(num, {q}) AS value, "
                            "count(*) AS sample_size, NULL::DOUBLE AS std_error", [name])
        con.execute(f"{'CREATE TEMP TABLE quant AS' if i == 0 else 'INSERT INTO quant'} {sql}")
    quantiles = "SELECT * FROM quant"
    con.execute(f"""CREATE TEMP TABLE cur0 AS
        SELECT r.metric, metric_date, dimension, dimension_value, numerator, denominator, value, sample_size,
            CASE WHEN sample_size > 1 AND m_den > 0 THEN
                sqrt(greatest(v_num + value * value * v_den - 2 * value * c_nd, 0) / sample_size) / m_den END
                AS std_error
        FROM ratio r
        UNION ALL
        {quantiles}""")
    con.execute(f"""CREATE TEMP TABLE cur AS
        SELECT c.*, d.kind, d.matrix_signal, d.window_name, d.window_days, d.higher_is_better,
            c.metric_date + d.final_lag <= DATE '{p.day}' AS is_final,
            c.metric_date = DATE '{p.day}' - d.final_lag AS is_current
        FROM cur0 c JOIN defs d USING (metric)
        WHERE c.value IS NOT NULL""")
    n_units = con.execute("SELECT (SELECT sum(sample_size) FROM cur0 WHERE dimension = 'all') "
                          "+ (SELECT sum(n_not_base) FROM ratio)").fetchall()[0][0]
    con.execute("DROP TABLE ratio; DROP TABLE cur0; DROP TABLE quant")
    return int(n_units or 0)


_PREV_COLS = ("metric, metric_date, dimension, dimension_value, numerator, denominator, value, sample_size, "
              "std_error, is_final")


def _baseline(con, lake: Lake, settings: Settings, p: _Plan) -> None:
    """`metrics`: `cur` with its trailing baseline, the change, its noise and the pooled level window.

    History comes from the earlier partitions of this mart (the latest value of each metric_date) and
    only final values enter a baseline. Noise: today's sampling variance + the baseline's day-to-day
    variance beyond sampling + the variance of the baseline estimate itself; for shares never below the
    binomial variance at the baseline rate.
    """
    first = p.d(p.baseline_days + p.max_lag + settings.signals_level_window_days + 1)
    files = _files(lake, "marts", METRICS_MART, first, p.d(1))
    hist = (f"SELECT {_PREV_COLS} FROM read_parquet({files}, hive_partitioning=true, union_by_name=true) "
            f"QUALIFY row_number() OVER (PARTITION BY {_KEY} ORDER BY dt DESC) = 1") if files else \
        f"SELECT {_PREV_COLS} FROM cur WHERE false"
    con.execute(f"""CREATE TEMP TABLE known AS
        SELECT {_PREV_COLS} FROM cur
        UNION ALL
        SELECT h.* FROM ({hist}) h ANTI JOIN cur c USING (metric, metric_date, dimension, dimension_value)""")
    bd, lw = p.baseline_days, int(settings.signals_level_window_days)
    con.execute(f"""CREATE TEMP TABLE base AS
        SELECT c.metric, c.metric_date, c.dimension, c.dimension_value,
            count(b.metric) AS baseline_days, sum(b.sample_size)::BIGINT AS baseline_sample_size,
            CASE WHEN any_value(d.agg) = 'ratio' THEN sum(b.numerator) / nullif(sum(b.denominator), 0)
                 ELSE median(b.value) END AS baseline_value,
            var_samp(b.value) AS var_days, avg(b.std_error * b.std_error) AS mean_se2
        FROM cur c JOIN defs d USING (metric)
        LEFT JOIN known b ON b.metric = c.metric AND b.dimension = c.dimension AND b.dimension_value = c.dimension_value
            AND b.is_final AND b.metric_date BETWEEN c.metric_date - {bd} AND c.metric_date - 1
        GROUP BY ALL""")
    con.execute(f"""CREATE TEMP TABLE lvl AS
        SELECT c.metric, c.metric_date, c.dimension, c.dimension_value,
            count(b.metric) AS level_days, sum(b.sample_size) AS level_sample_size,
            CASE WHEN any_value(d.agg) = 'ratio' THEN sum(b.numerator) / nullif(sum(b.denominator), 0)
                 ELSE avg(b.value) END AS level_value,
            sqrt(sum(power(b.std_error * b.denominator, 2))) / nullif(sum(b.denominator), 0) AS level_se_days
        FROM cur c JOIN defs d USING (metric)
        LEFT JOIN known b ON b.metric = c.metric AND b.dimension = c.dimension AND b.dimension_value = c.dimension_value
            AND b.is_final AND b.metric_date BETWEEN c.metric_date - {lw - 1} AND c.metric_date
        GROUP BY ALL""")
    z, min_days = float(settings.signals_noise_z), int(settings.signals_min_baseline_days)
    con.execute(f"""CREATE TEMP TABLE metrics AS
        WITH j AS (
            SELECT c.*, b.baseline_value, b.baseline_days, b.baseline_sample_size, l.level_value, l.level_days,
                l.level_sample_size::BIGINT AS level_sample_size, d.share,
                CASE WHEN d.share AND l.level_sample_size > 0
                     THEN sqrt(l.level_value * (1 - l.level_value) / l.level_sample_size) ELSE l.level_se_days END
                    AS level_se,
                greatest(coalesce(b.var_days, 0) - coalesce(b.mean_se2, 0), 0) AS between_var,
                coalesce(b.mean_se2, 0) AS mean_se2
            FROM cur c JOIN defs d USING (metric)
            LEFT JOIN base b USING (metric, metric_date, dimension, dimension_value)
            LEFT JOIN lvl l USING (metric, metric_date, dimension, dimension_value)),
        n AS (
            SELECT j.*, value - baseline_value AS change,
                (value - baseline_value) / nullif(abs(baseline_value), 0) AS change_rel,
                CASE WHEN baseline_days >= 1 THEN greatest(
                    sqrt(coalesce(std_error * std_error, 0) + between_var + (mean_se2 + between_var) / baseline_days),
                    CASE WHEN share THEN sqrt(
                        least(greatest(baseline_value, 0.5 / sample_size), 1 - 0.5 / sample_size)
                        * (1 - least(greatest(baseline_value, 0.5 / sample_size), 1 - 0.5 / sample_size))
                        / sample_size) ELSE 0 END) END AS noise_sd
            FROM j)
        SELECT metric, metric_date, kind, matrix_signal, dimension, dimension_value,
            round(numerator, 10) AS numerator, round(denominator, 10) AS denominator, round(value, 10) AS value,
            sample_size, round(std_error, 10) AS std_error, window_name, window_days, is_final, is_current,
            higher_is_better, round(baseline_value, 10) AS baseline_value, baseline_days, baseline_sample_size,
            round(change, 10) AS change, round(change_rel, 10) AS change_rel, round(noise_sd, 10) AS noise_sd,
            round(CASE WHEN baseline_days >= {min_days} AND noise_sd > 0 THEN change / noise_sd END, 6) AS z_score,
            coalesce(baseline_days >= {min_days} AND noise_sd > 0 AND abs(change / noise_sd) >= {z}, false)
                AS beyond_noise,
            CASE WHEN higher_is_better IS NULL OR change IS NULL THEN NULL WHEN change = 0 THEN 'flat'
                 WHEN (change > 0) = higher_is_better THEN 'better' ELSE 'worse' END AS change_direction,
            round(level_value, 10) AS level_value, round(level_se, 10) AS level_se, level_days, level_sample_size
        FROM n""")


def _action_queue(con, lake: Lake, settings: Settings, p: _Plan) -> None:
    """`queue`: the current, final values that crossed a level or moved beyond noise in the bad direction,
    one row per problem at the scope that explains it (see the drill-down below)."""
    lz, z = float(settings.signals_level_z), float(settings.signals_noise_z)
    n_min = int(settings.signals_min_sample)
    d0 = p.d(0)
    # Level: a one-sided test of the pooled level against the threshold, z = (level - t) / se, with the
    # standard error at the threshold for shares (sqrt(t (1 - t) / n)) and the pooled delta-method one
    # otherwise; it must clear signals_level_z.
    se_at = ("CASE WHEN share THEN sqrt({t} * (1 - {t}) / level_sample_size) ELSE coalesce(level_se, 0) END")
    floor = "greatest({se}, abs({t}) * 0.01, 1e-9)"
    z_hi = f"(level_value - max_level) / {floor.format(se=se_at.format(t='max_level'), t='max_level')}"
    z_lo = f"(min_level - level_value) / {floor.format(se=se_at.format(t='min_level'), t='min_level')}"
    con.execute(f"""CREATE TEMP TABLE raised AS
        WITH m AS (SELECT m.*, d.share, d.min_level, d.max_level, d.min_change, d.min_change_rel
                   FROM metrics m JOIN defs d USING (metric)
                   WHERE m.is_final AND m.is_current AND m.higher_is_better IS NOT NULL),
        t AS (
            SELECT m.*, 'level_above_max' AS trigger, max_level AS threshold, {z_hi} AS severity
            FROM m WHERE max_level IS NOT NULL AND level_sample_size >= {n_min} AND {z_hi} >= {lz}
            UNION ALL
            SELECT m.*, 'level_below_min', min_level, {z_lo}
            FROM m WHERE min_level IS NOT NULL AND level_sample_size >= {n_min} AND {z_lo} >= {lz}
            UNION ALL
            SELECT m.*, 'change_vs_baseline', baseline_value, abs(z_score)
            FROM m WHERE beyond_noise AND change_direction = 'worse' AND sample_size >= {n_min}
                AND (min_change IS NULL OR abs(change) >= min_change)
                AND (min_change_rel IS NULL OR abs(change_rel) >= min_change_rel))
        SELECT * FROM t""")
    # Drill-down. A scope below 'all' that crossed like the 'all' scope is kept only when it stands out
    # from it (|difference| > noise_z combined standard errors): a problem everywhere is one row. The 'all'
    # row of a change is dropped when a standing-out scope explains it: without that scope's units the
    # rest of the traffic is within noise. A problem somewhere is one row, at its scope.
    con.execute(f"""CREATE TEMP TABLE scoped AS
        SELECT r.*, a.metric IS NOT NULL AS parent_raised,
            a.metric IS NOT NULL AND (
                (r.trigger = 'change_vs_baseline'
                 AND abs(r.change - a.change) > {z} * sqrt(r.noise_sd * r.noise_sd + a.noise_sd * a.noise_sd))
             OR (r.trigger <> 'change_vs_baseline' AND abs(r.level_value - a.level_value) >
                 {z} * sqrt(power(coalesce(r.level_se, 0), 2) + power(coalesce(a.level_se, 0), 2)))) AS stands_out,
            CASE WHEN a.metric IS NOT NULL AND r.trigger = 'change_vs_baseline' AND a.denominator > r.denominator
                 THEN abs((a.change * a.denominator - r.change * r.denominator) / (a.denominator - r.denominator))
                      < {z} * a.noise_sd * sqrt(a.denominator / (a.denominator - r.denominator))
                 ELSE false END AS explains_parent
        FROM raised r LEFT JOIN raised a ON a.metric = r.metric AND a.trigger = r.trigger AND a.dimension = 'all'
        WHERE r.dimension <> 'all'""")
    con.execute("""CREATE TEMP TABLE kept AS
        SELECT r.* EXCLUDE (parent_raised, stands_out, explains_parent) FROM scoped r
        WHERE NOT r.parent_raised OR r.stands_out
        UNION ALL
        SELECT a.* FROM raised a WHERE a.dimension = 'all' AND NOT EXISTS (
            SELECT 1 FROM scoped r WHERE r.metric = a.metric AND r.trigger = a.trigger AND r.stands_out
                AND r.explains_parent)""")
    con.execute("""CREATE OR REPLACE TEMP TABLE kept AS
        SELECT *, substr(md5(metric || '|' || dimension || '|' || dimension_value || '|' || trigger), 1, 16)
            AS action_id FROM kept""")
    # Example conversations: the scope's units worse than the threshold (level) or the baseline (change),
    # worst first.
    scope = " OR ".join(
        [f"(k.dimension = '{d}' AND u.base AND u.{d} = k.dimension_value)" for d in DIMENSIONS]
        + ["(k.dimension = 'all' AND u.base)", "(u.extra_dim = k.dimension AND u.extra_value = k.dimension_value)"])
    raised_metrics = [r[0] for r in con.execute("SELECT DISTINCT metric FROM kept ORDER BY 1").fetchall()]
    only_raised = "u.metric IN ({})".format(", ".join(f"'{m}'" for m in raised_metrics)) if raised_metrics else "false"
    con.execute(f"""CREATE TEMP TABLE examples AS
        SELECT action_id, list(conversation_id ORDER BY badness DESC, conversation_id)[1:5] AS example_conversation_ids
        FROM (SELECT k.action_id, u.conversation_id,
                max(CASE WHEN k.higher_is_better THEN k.threshold - u.num / u.den ELSE u.num / u.den - k.threshold END)
                    AS badness
              FROM kept k JOIN units u ON u.metric = k.metric AND u.metric_date = k.metric_date AND ({scope})
              WHERE {only_raised} AND u.conversation_id IS NOT NULL AND u.den > 0
                AND CASE WHEN k.higher_is_better THEN u.num / u.den < k.threshold ELSE u.num / u.den > k.threshold END
              GROUP BY ALL)
        GROUP BY action_id""")
    prev = lake.partition_file("marts", QUEUE_MART, p.d(1))
    prev_sql = (f"SELECT action_id, first_raised_date FROM read_parquet('{prev}')"
                if lake.has_partition("marts", QUEUE_MART, p.d(1))
                else "SELECT NULL::VARCHAR AS action_id, NULL::DATE AS first_raised_date WHERE false")
    con.execute(f"""CREATE TEMP TABLE queue AS
        SELECT k.action_id, k.metric_date, k.metric AS signal, k.matrix_signal, k.kind,
            k.dimension AS scope_dimension, k.dimension_value AS scope_value, k.trigger,
            k.value, k.threshold, k.baseline_value, k.change, k.change_rel, k.z_score, k.level_value, k.level_days,
            k.sample_size, k.level_sample_size, k.baseline_days, k.numerator, k.denominator, k.window_name, k.is_final,
            coalesce(e.example_conversation_ids, []::VARCHAR[]) AS example_conversation_ids,
            to_json({{'value': k.value, 'numerator': k.numerator, 'denominator': k.denominator,
                      'sample_size': k.sample_size, 'baseline_value': k.baseline_value,
                      'baseline_days': k.baseline_days, 'baseline_sample_size': k.baseline_sample_size,
                      'change': k.change, 'z_score': k.z_score, 'level_value': k.level_value,
                      'level_days': k.level_days, 'level_sample_size': k.level_sample_size,
                      'threshold': k.threshold, 'window': k.window_name,
                      'example_conversation_ids': coalesce(e.example_conversation_ids, []::VARCHAR[])}})::VARCHAR
                AS evidence,
            coalesce(rt.component, d.component) AS target_component,
            coalesce(rt.improvement_action, d.improvement_action) AS improvement_action,
            round(k.severity, 6) AS severity,
            coalesce(pq.first_raised_date, DATE '{d0}') AS first_raised_date,
            (DATE '{d0}' - coalesce(pq.first_raised_date, DATE '{d0}')) + 1 AS days_open,
            'open' AS status
        FROM kept k JOIN defs d USING (metric)
        LEFT JOIN routes rt ON rt.metric = k.metric AND rt.dimension = k.dimension AND rt.dimension_value = k.dimension_value
        LEFT JOIN examples e USING (action_id)
        LEFT JOIN ({prev_sql}) pq USING (action_id)""")


def _ab_tests(con, settings: Settings, p: _Plan) -> int:
    """`ab`: each strategy against the control on resolution, reopens and CSAT, live traffic only.

    Day metrics pool the last signals_ab_window_days days; windowed metrics pool the same number of
    cohorts that are final. Proportions: pooled two-proportion z-test; CSAT mean: Mann-Whitney U.
    """
    from feedback_loop.signals.abtest import mann_whitney, n_per_arm, two_proportion_z

    first = p.d(p.ab_days - 1)
    con.execute(f"CREATE TEMP TABLE units_ab AS SELECT * FROM ({_units_sql(con, settings, p, first, p.d(0), 'ab', AB_METRICS)}) "
                "WHERE base AND mode = 'live'")
    rows = con.execute("""SELECT metric, strategy, count(*), sum(num), sum(den), min(metric_date), max(metric_date),
            CASE WHEN metric = 'csat_mean' THEN list(num ORDER BY num) END
        FROM units_ab GROUP BY metric, strategy ORDER BY metric, strategy""").fetchall()
    traffic = con.execute(f"""SELECT d_strategy, count(*) FROM conv_dims
        WHERE first_fact_date BETWEEN DATE '{first}' AND DATE '{p.d(0)}' AND d_mode = 'live'
        GROUP BY 1 ORDER BY 2 DESC, 1""").fetchall()
    control = settings.signals_ab_control or (traffic[0][0] if traffic else None)
    alpha = float(settings.signals_ab_alpha)
    con.execute("""CREATE TEMP TABLE ab (metric VARCHAR, test VARCHAR, control VARCHAR, treatment VARCHAR,
        cohort_first DATE, cohort_last DATE, n_control BIGINT, n_treatment BIGINT, value_control DOUBLE,
        value_treatment DOUBLE, diff DOUBLE, diff_rel DOUBLE, statistic DOUBLE, p_value DOUBLE, alpha DOUBLE,
        significant BOOLEAN, better VARCHAR, n_required_per_arm BIGINT, higher_is_better BOOLEAN)""")
    by = {}
    for metric, strategy, n, s_num, s_den, lo, hi, scores in rows:
        by.setdefault(metric, {})[strategy] = (n, s_num, s_den, lo, hi, scores)
    out = []
    for metric in AB_METRICS:
        arms = by.get(metric, {})
        if control not in arms:
            continue
        hib = METRIC_BY_NAME[metric].higher_is_better
        nc, xc, dc, loc, hic, sc = arms[control]
        for strategy in sorted(s for s in arms if s != control):
            nt, xt, dt_, lot, hit, st = arms[strategy]
            vc, vt = xc / dc, xt / dt_
            if metric == "csat_mean":
                test, (stat, pval), need = "mann_whitney_u", mann_whitney(st, sc), None
            else:
                test, (stat, pval) = "two_proportion_z", two_proportion_z(xt, dt_, xc, dc)
                need = n_per_arm(vt, vc, alpha)
            sig = pval is not None and pval < alpha
            better = None
            if sig and vt != vc:
                better = strategy if (vt > vc) == hib else control
            out.append((metric, test, control, strategy, min(loc, lot), max(hic, hit), nc, nt, round(vc, 10),
                        round(vt, 10), round(vt - vc, 10), round((vt - vc) / vc, 10) if vc else None,
                        None if stat is None else round(stat, 8), None if pval is None else round(pval, 10),
                        alpha, sig, better, need, hib))
    if out:
        con.executemany("INSERT INTO ab VALUES (" + ", ".join(["?"] * 19) + ")", out)
    return len(out)


# ----------------------------------------------------------------------------------------------- views

def _latest_view_sql(lake: Lake) -> str:
    return (f"SELECT * FROM read_parquet('{lake.glob('marts', METRICS_MART)}', hive_partitioning=true, "
            f"union_by_name=true) QUALIFY row_number() OVER (PARTITION BY {_KEY} ORDER BY dt DESC) = 1")


def register_signal_views(con, settings: Settings) -> list[str]:
    """`signal_metrics_latest`: the latest value of every (metric_date, metric, scope), final or not."""
    lake = Lake(settings.lake)
    if not lake.days("marts", METRICS_MART):
        return []
    con.execute(f"CREATE OR REPLACE VIEW signal_metrics_latest AS {_latest_view_sql(lake)}")
    return ["signal_metrics_latest"]


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


def dumps(doc: dict) -> str:
    return json.dumps(doc, indent=2, default=str)
