"""Every metric's *units* (a conversation, a survey answer, a review, a KB query, an event...), one SELECT
per metric named by the registry, for a run's day or for the A/B window.

A unit row is (metric, metric_date, unit_id, conversation_id, intent, channel, strategy, mode, extra_dim,
extra_value, base, num, den); metrics.py aggregates them. The sources the units are read from are
materialised as temp tables by the `.sql` files in sql/ with the dates and settings bound as parameters,
so the units themselves (a view: DuckDB views take no parameters) are plain SELECTs with no values in them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta

from feedback_loop.ingest import contract
from feedback_loop.lake.duck import parquet_view
from feedback_loop.lake.files import Lake
from feedback_loop.lake.sql import fill, load_sql
from feedback_loop.settings import Settings
from feedback_loop.signals.registry import AGENT_STEPS, METRIC_BY_NAME, SUCCESS_STATUSES

PACKAGE = "feedback_loop.signals"


def sql(name: str, **identifiers: str) -> str:
    """The statement in signals/sql/`name`, its `{{markers}}` filled with `identifiers`."""
    return fill(load_sql(PACKAGE, f"sql/{name}"), **identifiers)


@dataclass(frozen=True)
class Plan:
    """The dates one run reads and writes, derived from the day and the settings."""

    day: date
    late_days: int  # the lateness allowance in whole days: after it no row can change a value
    windows: dict  # window name -> days
    baseline_days: int
    ab_days: int

    @classmethod
    def of(cls, settings: Settings, day: date) -> Plan:
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


# ----------------------------------------------------------------------------------------------- inputs

def _empty(source: str, extra: str = "") -> str:
    """A typed, empty SELECT with the staged columns of a contract source (for days with no partition)."""
    cols = [f'NULL::{f.type} AS "{f.name}"' for f in contract.SOURCES[source].fields]
    cols += ["NULL::DATE AS dt", "NULL::BIGINT AS _row_id", "NULL::VARCHAR AS _extra"]
    return "SELECT " + ", ".join(cols) + extra + " WHERE false"


def _view(con, lake: Lake, name: str, layer: str, dataset: str, first: str, last: str, empty: str) -> list[str]:
    """Temp view `name` over the partitions of days [first, last]; returns those days."""
    days = lake.days_between(layer, dataset, first, last)
    parquet_view(con, name, [lake.partition_file(layer, dataset, d) for d in days], empty)
    return days


# True: case_now and conv_dims over every case and conversation of the window, as before signal_keys.sql (the
# reference the restricted tables are tested against: same outputs).
READ_EVERY_KEY = False


def load_inputs(con, lake: Lake, settings: Settings, p: Plan) -> None:
    """Views over the lake partitions this run needs, and per-conversation tables shared by all families."""
    d0 = p.d(0)
    ab_back = p.max_lag + p.ab_days
    facts_first = p.d(settings.reference_lookback_days + ab_back + p.windows["reengagement"])
    fact_days = _view(con, lake, "facts", "marts", "conversation_facts", facts_first, d0, "SELECT 1 WHERE false")
    _view(con, lake, "cases", "staged", "crm_cases", facts_first, d0, _empty("crm_cases"))
    _view(con, lake, "surveys", "staged", "surveys", p.d(p.ab_days), d0, _empty("surveys"))
    _view(con, lake, "ovr_staged", "staged", "overrides", p.d(ab_back), d0, _empty("overrides"))
    _view(con, lake, "ovr_quarantined", "quarantine", "overrides", p.d(ab_back), d0,
          _empty("overrides", ", NULL::VARCHAR AS quarantine_reason"))
    _view(con, lake, "checks", "staged", "outcome_checks", d0, d0, _empty("outcome_checks"))
    _view(con, lake, "events", "staged", "agent_events", d0, d0, _empty("agent_events"))
    # The keys are worth finding only when the window holds days older than any family reads (a steady
    # lake): on a young lake they cost a few scans and drop nothing.
    cohort_days = p.max_lag + p.ab_days - 1  # the earliest cohort day any family reads, run or A/B
    reengagement = int(p.windows["reengagement"])
    if READ_EVERY_KEY or not any(d < p.d(cohort_days + reengagement) for d in fact_days):
        con.execute(sql("inputs.sql", facts="facts", cases="cases"))  # case_now, conv_dims, reviews
        con.execute("CREATE OR REPLACE TEMP VIEW reopen_case_states AS SELECT * FROM cases")
        return
    con.execute(sql("signal_keys.sql"), {  # the conversations and cases tonight's families can read
        "days_first": p.d(p.ab_days - 1), "cohort_first": p.d(cohort_days),
        "reopen_first": p.d(p.final_lag("reopen") + p.ab_days - 1), "reengagement_days": reengagement})
    conversations, cases = ("(SELECT key FROM signal_keys WHERE kind = 'conversation')",
                            "(SELECT key FROM signal_keys WHERE kind = 'case')")
    con.execute(sql("inputs.sql",
                    facts=f"(SELECT * FROM facts WHERE conversation_id IN {conversations} OR conversation_id IS NULL)",
                    cases=f"(SELECT * FROM cases WHERE case_id IN {cases} OR case_id IS NULL)"))
    # The reopen cohorts' cases are key cases: their states read once, not from the whole window per purpose.
    con.execute("CREATE OR REPLACE TEMP TABLE reopen_case_states AS SELECT case_id, resolved_at, last_reopened_at "
                f"FROM cases WHERE case_id IN {cases} AND (resolved_at IS NOT NULL OR last_reopened_at IS NOT NULL)")
    con.execute("DROP TABLE signal_keys")  # millions of keys on a steady lake: their memory is the queries' now


# ----------------------------------------------------------------------------------------------- units

def _u(metric: str, src: str, num: str, den: str = "1", where: str = "true", *, unit: str = "conversation_id",
       conv: str = "conversation_id", on: str = "dt", extra: tuple[str, str] | None = None,
       base: bool = True) -> tuple[str, str]:
    """(metric, the SELECT of its units from `src`), `src` having d_intent, d_channel, d_strategy, d_mode.

    `metric` is a registry name and `extra[0]` a breakdown name: code, not data."""
    xd, xv = (f"'{extra[0]}'", extra[1]) if extra else ("NULL", "NULL")
    return metric, (
        f"SELECT '{metric}' AS metric, ({on})::DATE AS metric_date, ({unit})::VARCHAR AS unit_id, "
        f"({conv})::VARCHAR AS conversation_id, d_intent AS intent, d_channel AS channel, "
        f"d_strategy AS strategy, d_mode AS mode, {xd}::VARCHAR AS extra_dim, ({xv})::VARCHAR AS extra_value, "
        f"{str(base).lower()} AS base, ({num})::DOUBLE AS num, ({den})::DOUBLE AS den FROM {src} WHERE {where}")


REOPEN_COHORTS = "reopen_cohorts"
# True: the run's and the A/B window's reopen cohorts filtered from one build (`_reopen_cohorts`); False: each
# built from the case states for its own days (the reference it is tested against: same outputs).
SHARE_REOPEN_COHORTS = True


def _reopen_cohorts(con, p: Plan) -> str:
    """The reopen cohort rows of every cohort day the run and the A/B window read, built once per connection.
    A row depends only on its own case's states (reopen_cohort.sql), so each purpose's days are a filter of
    it: the second build read the same millions of case states again on a steady lake."""
    lag = p.final_lag("reopen")
    days = {"first": p.d(lag + max(p.ab_days, 1) - 1), "last": p.d(0)}  # the A/B window's and the run's days
    built = con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name = $t",
                        {"t": REOPEN_COHORTS}).fetchall()[0][0]
    if not built:
        con.execute(sql("reopen_cohort.sql", table=REOPEN_COHORTS, case_states="reopen_case_states"), days)
    return REOPEN_COHORTS


def units_sql(con, settings: Settings, p: Plan, first: str, last: str, purpose: str,
              only: tuple[str, ...] | None = None) -> str:
    """Every metric's units for day metrics of [first, last] and for the cohorts the windows need.

    purpose 'run': day metrics of [first, last] plus every cohort not final yet (and the one becoming
    final). purpose 'ab': day metrics of [first, last] and the final cohorts of the A/B window. The temp
    tables the units read are named `<purpose>_*`; each is built only when a wanted metric reads it.
    """
    want = (lambda name: only is None or name in only)
    need = (lambda *names: any(want(n) for n in names))
    parts: list[tuple[str, str]] = []
    days = {"first": first, "last": last}

    def table(name: str, file: str, params: dict, **identifiers: str) -> str:
        target = f"{purpose}_{name}"
        con.execute(sql(file, table=target, **identifiers), params)
        return target

    # Sources used by many metrics are materialised once (DuckDB would recompute an inlined subquery
    # for every metric that reads it).
    conv = table("conv", "conv_days.sql", {
        **days, "reengagement_days": int(p.windows["reengagement"]),
        "cost_input_per_1k": float(settings.cost_input_usd_per_1k_tokens),
        "cost_output_per_1k": float(settings.cost_output_usd_per_1k_tokens),
        "cost_human_per_hour": float(settings.cost_human_usd_per_hour),
        "cost_review": float(settings.cost_review_usd)})
    reason = "coalesce(escalation_reason, 'unspecified')"

    # -- conversations of the day (conversation_facts)
    parts += [
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

    # -- events of the day (staged agent_events): only for the run itself, never over a range
    if purpose == "run":
        ev = table("ev", "run_events.sql", {"kb_low_score": float(settings.signals_kb_low_score)}, conv=conv)
        # Each is read by two or three metrics: computed once (sentiment calls Python per message).
        sent = table("sent", "run_sentiment.sql", {"day": last}, events=ev)
        per_conv = table("per_conv", "run_per_conversation.sql",
                         {"day": last, "agent_steps": list(AGENT_STEPS), "success_statuses": list(SUCCESS_STATUSES)},
                         events=ev)
        dead = load_sql(PACKAGE, "sql/dead_ends.sql")
        parts += [
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
            _u("kb_weak_result_rate", ev, "kb_weak::INT", unit="event_id", where="event_type = 'kb_query'"),
            _u("action_completion_rate", per_conv, "(n_done >= n_proposed)::INT",
               where="n_proposed > 0 AND d_mode = 'live'"),
            _u("steps_per_resolution", per_conv, "n_steps", where="resolved"),
            _u("dead_end_rate", f"{conv} c LEFT JOIN {dead} x USING (conversation_id)",
               "coalesce(x.dead_end, false)::INT", conv="c.conversation_id", unit="c.conversation_id", on="c.dt"),
        ]

    # -- survey answers exported on the day: the latest answer per case and kind within the export
    if need("csat_top2_share", "csat_mean", "ces_mean", "ces_high_share"):
        srv = table("srv", "survey_answers.sql", days)
        parts += [
            _u("csat_top2_share", srv, "(score >= 4)::INT", where="kind = 'csat'", unit="survey_id", conv="conv_id"),
            _u("csat_mean", srv, "score", where="kind = 'csat'", unit="survey_id", conv="conv_id"),
            _u("ces_mean", srv, "score", where="kind = 'ces'", unit="survey_id", conv="conv_id"),
            _u("ces_high_share", srv, "(score >= 5)::INT", where="kind = 'ces'", unit="survey_id", conv="conv_id"),
        ]

    # -- reviews and outcome checks exported on the day
    if purpose == "run":
        rev = table("rev", "day_reviews.sql", days)
        chk = table("chk", "day_checks.sql", days)
        parts += [
            _u("review_correction_rate", rev, "(outcome = 'corrected')::INT", unit="override_id", extra=("stage", "stage")),
            _u("review_escalation_rate", rev, "(outcome = 'escalated')::INT", unit="override_id", extra=("stage", "stage")),
            _u("override_triad_completeness", rev, "triad_complete::INT", where="outcome = 'corrected'",
               unit="override_id", extra=("stage", "stage")),
            _u("shadow_review_agreement", rev, "(outcome = 'approved')::INT", where="d_mode = 'shadow'",
               unit="override_id", extra=("stage", "stage")),
            _u("outcome_verification_rate", chk, "verified::INT", unit="check_id", extra=("action", "action")),
        ]

    # -- windowed cohorts
    def cohort(window: str) -> dict:
        lag = p.final_lag(window)
        if purpose == "ab":  # the A/B window's final cohorts
            return {"first": p.d(lag + p.ab_days - 1), "last": p.d(lag)}
        return {"first": p.d(lag), "last": p.d(0)}  # every cohort not final yet, and the one that becomes final today

    if need("reopen_rate_24h"):
        if SHARE_REOPEN_COHORTS:
            reopen = f"{purpose}_reopen"
            con.execute(f"CREATE OR REPLACE TEMP TABLE {reopen} AS SELECT * FROM {_reopen_cohorts(con, p)} "
                        "WHERE cohort_ts::DATE BETWEEN $first::DATE AND $last::DATE", cohort("reopen"))
        else:
            reopen = table("reopen", "reopen_cohort.sql", cohort("reopen"), case_states="reopen_case_states")
        parts.append(_u("reopen_rate_24h", reopen, "reopened::INT", unit="unit", on="cohort_ts"))
    if need("reengagement_rate_7d"):
        reeng = table("reeng", "reengagement_cohort.sql",
                      {**cohort("reengagement"), "reengagement_days": int(p.windows["reengagement"])})
        parts.append(_u("reengagement_rate_7d", reeng, "came_back::INT", on="started_at"))

    if need("autonomous_resolution_rate", "override_rate", "policy_breach_rate"):
        coh = table("coh", "review_cohort.sql", {**cohort("review"), "review_days": int(p.windows["review"])})
        auto = table("auto", "autonomous_cohort.sql", {}, cohort=coh) if need("autonomous_resolution_rate") else ""
        corrected = ("EXISTS (SELECT 1 FROM reviews v WHERE v.conversation_id = c.conversation_id "
                     "AND v.outcome = 'corrected' AND v.ts < c.window_end {cond})")
        parts += [
            _u("autonomous_resolution_rate", auto,
               "(coalesce(status IN ('solved', 'closed'), false) AND resolved_by = 'ai' AND coalesce(reopen_count, 0) = 0 "
               "AND NOT coalesce(case_escalated, false) AND NOT coalesce(agent_escalated, false) AND NOT human_touch)::INT",
               on="started_at"),
            _u("override_rate", f"{coh} c", corrected.format(cond="") + "::INT", on="started_at",
               conv="c.conversation_id", unit="c.conversation_id"),
            _u("override_rate", f"{coh} c CROSS JOIN (SELECT DISTINCT stage FROM reviews WHERE stage IS NOT NULL) s",
               corrected.format(cond="AND v.stage = s.stage") + "::INT", on="started_at", conv="c.conversation_id",
               unit="c.conversation_id", extra=("stage", "s.stage"), base=False),
            _u("policy_breach_rate", f"{coh} c",
               "(c.n_policy_flags > 0 AND " + corrected.format(cond="AND v.stage = 'policy'") + ")::INT",
               where="c.n_policy_checks > 0", on="started_at", conv="c.conversation_id", unit="c.conversation_id"),
        ]
    named = {name for name, _ in parts}
    unknown = named - set(METRIC_BY_NAME)
    missing = set(METRIC_BY_NAME) - named if purpose == "run" else set()
    if unknown or missing:  # the registry names every metric; each has its units here, and only those
        raise ValueError(f"units and registry disagree: unknown {sorted(unknown)}, without units {sorted(missing)}")
    return "\nUNION ALL\n".join(select for name, select in parts if want(name))
