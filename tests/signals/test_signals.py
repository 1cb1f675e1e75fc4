"""Signals stage: every metric against a hand-computed value, finality of windowed metrics, the
significance tests on known cases, and the action queue on a generated fixture with and without planted
anomalies.

Fixtures are staged partitions written directly with DuckDB (contract types + _extra/_row_id), then the
real model stage builds the conversation facts and the real signals stage runs on them.
"""

from __future__ import annotations

import json
import math
import shutil
from datetime import UTC, date, datetime, timedelta

import duckdb
import numpy as np
import pytest
from feedback_loop.ingest import contract
from feedback_loop.lake.files import Lake
from feedback_loop.model.conversations import build_model
from feedback_loop.settings import Settings
from feedback_loop.signals.metrics import METRICS, run_signals
from feedback_loop.signals.sentiment import compound


def ts(day: str, hh: int, mm: int = 0) -> datetime:
    return datetime.fromisoformat(f"{day}T{hh:02d}:{mm:02d}:00").replace(tzinfo=UTC)


def write_staged(lake: Lake, source: str, dt: str, rows: list[dict], layer: str = "staged", extra_cols=()):
    """One staged (or quarantine) partition of `source` from dict rows, cast to the contract's types."""
    import pyarrow as pa

    src = contract.SOURCES[source]
    cols = [(f.name, f.type) for f in src.fields] + [("_extra", "VARCHAR"), ("_source_file", "VARCHAR"),
                                                      ("_line", "BIGINT"), ("_row_id", "BIGINT")] + list(extra_cols)
    data = {n: [] for n, _ in cols}
    for i, r in enumerate(rows):
        r = {**r, "_source_file": "fixture", "_line": i + 1, "_row_id": i + 1}
        for n, t in cols:
            v = r.get(n)
            data[n].append(json.dumps(v) if t == "JSON" and v is not None else v)
    frame = pa.table({n: pa.array(v) if any(x is not None for x in v) else pa.nulls(len(v)) for n, v in data.items()})
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("frame", frame)
    lake.write_query(con, "SELECT " + ", ".join(f'CAST("{n}" AS {t}) AS "{n}"' for n, t in cols) + " FROM frame",
                     layer, source, dt)
    con.close()


def event_rows(conv: str, day: str, hour: int, customer: str, steps: list[dict], case: str | None = None,
               strategy: str = "A", mode: str = "live") -> list[dict]:
    out = []
    for i, s in enumerate(steps):
        out.append({"event_id": f"{conv}-{i:02d}", "ts": ts(day, hour, i), "conversation_id": conv,
                    "case_id": case if i > 0 else None, "customer_id": customer, "turn": s.pop("turn", 0),
                    "strategy": strategy, "mode": mode, **s})
    return out


# ----------------------------------------------------------------------------------------------- hand-built

D1, D2, D3, D4, D5, D6 = (str(date(2026, 3, 2) + timedelta(days=i)) for i in range(6))
TEXT = {"C1": "My card has not arrived and this is terrible", "C1b": "thanks, great help",
        "C2": "where is my card?", "C3": "I lost my card, please help", "C4": "lost card",
        "C6": "card still not here", "C5": "my card never arrived, I am angry"}


PII_LABEL = "exp-anna.smith@example.com"


def build_hand_fixture(settings: Settings) -> Lake:
    """Six days; D1 holds every edge case. Comments give the values the tests expect."""
    lake = Lake(settings.lake)
    ci = {"event_type": "intent_classified", "confidence": 0.9, "latency_ms": 100.0, "input_tokens": 100,
          "output_tokens": 5, "cost_usd": 0.001}
    resp = {"event_type": "agent_response", "text": "ok", "latency_ms": 1000.0, "input_tokens": 1000,
            "output_tokens": 100, "cost_usd": 0.01}

    def cm(text, turn=0):
        return {"event_type": "customer_message", "text": text, "turn": turn}

    def kb(query, results, latency=200.0):
        return {"event_type": "kb_query", "kb_query": query, "kb_results": results, "latency_ms": latency}

    ev = []
    # C1: live, A, chat; case K1 solved by the agent 10:00, reopened 23 h later; thumbs up; policy fail;
    #     an action proposed and executed ok; two customer messages.
    ev += event_rows("C1", D1, 9, "U1", [
        cm(TEXT["C1"]), {**ci, "intent": "card_arrival"}, kb("card arrival", [{"article_id": "KB1", "score": 0.9}]),
        {"event_type": "policy_check", "policy_id": "P1", "policy_outcome": "fail"},
        {"event_type": "action_proposed", "action": "freeze_card", "action_status": "proposed"},
        {"event_type": "action_executed", "action": "freeze_card", "action_status": "ok"},
        dict(resp), cm(TEXT["C1b"], turn=1), {"event_type": "thumbs", "rating": 1}], case="K1")
    # C2: live, B; case K2 solved 11:00 and escalated (missing_knowledge), reopened 25 h later; the same KB
    #     query twice with no action in between (a dead end), both empty; an action that failed; thumbs down;
    #     an error.
    ev += event_rows("C2", D1, 10, "U2", [
        cm(TEXT["C2"]), {**ci, "intent": "card_arrival"}, kb("card arrival", []), kb("Card arrival ", []),
        {"event_type": "action_proposed", "action": "issue_refund", "action_status": "proposed"},
        {"event_type": "action_executed", "action": "issue_refund", "action_status": "failed"},
        dict(resp), {"event_type": "thumbs", "rating": -1},
        {"event_type": "error", "error_type": "timeout"}], case="K2", strategy="B")
    # C3: live, A, no case; a weak KB result; a suggestion shown then a link clicked (dwell 4000 ms);
    #     a fallback.
    ev += event_rows("C3", D1, 11, "U3", [
        cm(TEXT["C3"]), {**ci, "intent": "lost_card"}, kb("lost card", [{"article_id": "KB2", "score": 0.3}]),
        {"event_type": "suggestion_shown", "kb_results": [{"article_id": "KB2", "score": 0.3}]},
        {"event_type": "link_clicked", "dwell_ms": 4000}, {"event_type": "fallback"}, dict(resp)])
    # C4: shadow, A; case K4 pending with the human label lost_card (agrees); a suggestion dismissed
    #     (dwell 1000 ms); a proposal awaiting the human.
    ev += event_rows("C4", D1, 12, "U4", [
        cm(TEXT["C4"]), {**ci, "intent": "lost_card"}, kb("lost card", [{"article_id": "KB2", "score": 0.8}]),
        {"event_type": "suggestion_shown", "kb_results": [{"article_id": "KB2", "score": 0.8}]},
        {"event_type": "suggestion_dismissed", "dwell_ms": 1000},
        {"event_type": "action_proposed", "action": "freeze_card", "action_status": "awaiting_human"},
        dict(resp)], case="K4", mode="shadow")
    # C6: live, B; case K6 solved by the agent 16:00, never reopened; policy pass.
    ev += event_rows("C6", D1, 15, "U6", [
        cm(TEXT["C6"]), {**ci, "intent": "card_arrival"}, kb("card arrival", [{"article_id": "KB1", "score": 0.95}]),
        {"event_type": "policy_check", "policy_id": "P1", "policy_outcome": "pass"}, dict(resp)],
        case="K6", strategy="B")
    write_staged(lake, "agent_events", D1, ev)
    # D2: C5, the same customer as C1 on the same intent (re-engagement of C1, within 7 days).
    write_staged(lake, "agent_events", D2, event_rows("C5", D2, 8, "U1", [
        cm(TEXT["C5"]), {**ci, "intent": "card_arrival"}, dict(resp)]))
    for i, d in enumerate((D3, D4, D5, D6)):  # one filler conversation a day, no case; D3's label carries PII
        write_staged(lake, "agent_events", d, event_rows(f"F{i}", d, 8, f"UF{i}", [cm("hello"), dict(resp)],
                                                         strategy=PII_LABEL if d == D3 else "A"))

    def case(cid, conv, cust, upd, status, **kw):
        base = {"case_id": cid, "customer_id": cust, "conversation_id": conv, "channel": kw.pop("channel", "chat"),
                "created_at": ts(D1, 9), "updated_at": upd, "status": status, "reopen_count": 0,
                "escalated": False, "handle_time_s": 100.0}
        return {**base, **kw}

    write_staged(lake, "crm_cases", D1, [
        case("K1", "C1", "U1", ts(D1, 10), "solved", resolved_at=ts(D1, 10), resolved_by="ai"),
        case("K2", "C2", "U2", ts(D1, 11), "solved", resolved_at=ts(D1, 11), resolved_by="ai", escalated=True,
             escalation_reason="missing_knowledge", channel="email", handle_time_s=3600.0),
        case("K4", "C4", "U4", ts(D1, 12), "pending", category="lost_card"),
        case("K6", "C6", "U6", ts(D1, 16), "solved", resolved_at=ts(D1, 16), resolved_by="ai"),
    ])
    write_staged(lake, "crm_cases", D2, [
        case("K1", "C1", "U1", ts(D2, 9), "open", reopen_count=1, last_reopened_at=ts(D2, 9)),  # 23 h
        case("K2", "C2", "U2", ts(D2, 12), "open", reopen_count=1, last_reopened_at=ts(D2, 12), escalated=True,
             escalation_reason="missing_knowledge", channel="email"),  # 25 h
        case("K4", "C4", "U4", ts(D2, 10), "solved", resolved_at=ts(D2, 10), resolved_by="human", category="lost_card"),
    ])
    # Surveys: K1 answered CSAT twice in the same export (2 then 5: the latest counts) and CES 6; K2's CSAT
    # was submitted on D1 but exported late, on D2.
    write_staged(lake, "surveys", D1, [
        {"survey_id": "S1", "case_id": "K1", "conversation_id": "C1", "submitted_at": ts(D1, 12), "kind": "csat", "score": 2},
        {"survey_id": "S2", "case_id": "K1", "conversation_id": "C1", "submitted_at": ts(D1, 13), "kind": "csat", "score": 5},
        {"survey_id": "S3", "case_id": "K1", "conversation_id": "C1", "submitted_at": ts(D1, 13), "kind": "ces", "score": 6},
    ])
    write_staged(lake, "surveys", D2, [
        {"survey_id": "S4", "case_id": "K2", "conversation_id": "C2", "submitted_at": ts(D1, 23), "kind": "csat", "score": 3},
    ])
    triad = {"agent_decision": "x", "agent_confidence": 0.5, "human_decision": "y", "rationale": "r", "evidence": "e"}
    write_staged(lake, "overrides", D1, [
        {"override_id": "O1", "ts": ts(D1, 14), "conversation_id": "C2", "case_id": "K2", "reviewer_id": "R1",
         "stage": "intent", "outcome": "corrected", **triad},
        {"override_id": "O2", "ts": ts(D1, 14), "conversation_id": "C1", "case_id": "K1", "reviewer_id": "R1",
         "stage": "response", "outcome": "approved"},
        {"override_id": "O4", "ts": ts(D1, 15), "conversation_id": "C4", "case_id": "K4", "reviewer_id": "R1",
         "stage": "intent", "outcome": "approved"},
    ])
    # O3: a correction of C3 quarantined only for its incomplete triad (it happened; it is no label).
    write_staged(lake, "overrides", D1, [
        {"override_id": "O3", "ts": ts(D1, 16), "conversation_id": "C3", "reviewer_id": "R2", "stage": "intent",
         "outcome": "corrected", "human_decision": "lost_card", "quarantine_reason": "incomplete_triad"},
    ], layer="quarantine", extra_cols=[("quarantine_reason", "VARCHAR")])
    # O5 (D2): a human corrected C1's failed policy check.
    write_staged(lake, "overrides", D2, [
        {"override_id": "O5", "ts": ts(D2, 10), "conversation_id": "C1", "case_id": "K1", "reviewer_id": "R1",
         "stage": "policy", "outcome": "corrected", **triad, "policy_clause_id": "P1"},
    ])
    write_staged(lake, "outcome_checks", D1, [
        {"check_id": "H1", "case_id": "K1", "action": "freeze_card", "checked_at": ts(D1, 11), "verified": True},
        {"check_id": "H2", "case_id": "K2", "action": "issue_refund", "checked_at": ts(D1, 12), "verified": False},
    ])
    for d in (D1, D2, D3, D4, D5, D6):
        build_model(settings, d)
    return lake


def metric_rows(lake: Lake, dt: str) -> dict:
    con = duckdb.connect()
    rows = con.execute(f"SELECT * FROM read_parquet('{lake.partition_file('marts', 'signal_metrics', dt)}')").fetchall()
    cols = [d[0] for d in con.description]
    con.close()
    return {(r["metric"], str(r["metric_date"]), r["dimension"], r["dimension_value"]): r
            for r in (dict(zip(cols, x)) for x in rows)}


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    """The hand-built lake with the signals stage run for each of the six days, in order."""
    root = tmp_path_factory.mktemp("signals-hand")
    settings = Settings.load(landing=str(root / "landing"), lake=str(root / "lake"),
                             warehouse=str(root / "w.duckdb"))
    lake = build_hand_fixture(settings)
    outs = {d: run_signals(settings, d) for d in (D1, D2, D3, D4, D5, D6)}
    return settings, lake, outs


def approx(v, want):
    return v == pytest.approx(want, abs=1e-9)


def test_day_metrics_match_hand_computed_values(hand):
    settings, lake, _ = hand
    m = metric_rows(lake, D1)

    def val(metric, dim="all", value="all", day=D1):
        return m[(metric, day, dim, value)]

    def check(metric, num, den, dim="all", value="all"):
        r = val(metric, dim, value)
        assert (r["numerator"], r["denominator"]) == (num, den), metric
        assert approx(r["value"], num / den) and r["is_final"], metric

    # Explicit: K1's two CSAT answers of the same export count once (the latest, 5); K2's late answer is
    # not on D1; CES 6.
    check("csat_top2_share", 1, 1)
    check("csat_mean", 5, 1)
    check("ces_mean", 6, 1)
    check("ces_high_share", 1, 1)
    check("thumbs_up_rate", 1, 2)
    check("thumbs_down_rate", 1, 2)
    check("escalation_rate", 1, 5)
    check("escalation_rate", 1, 5, "escalation_reason", "missing_knowledge")
    # Reviews of D1: O1 corrected, O2 approved, O3 corrected (quarantined: incomplete triad), O4 approved.
    check("review_correction_rate", 2, 4)
    check("review_correction_rate", 2, 3, "stage", "intent")
    check("review_escalation_rate", 0, 4)
    check("override_triad_completeness", 1, 2)
    check("shadow_review_agreement", 1, 1)
    # Implicit: conversations with a case are C1, C2, C4, C6 (C3 has none); C4 is still pending on D1.
    check("fcr", 3, 4)
    check("suggestion_dismissal_rate", 1, 2)
    check("link_click_rate", 1, 2)
    check("suggestion_dwell_ms", 5000, 2)
    check("action_completion_rate", 1, 2)  # C1 executed ok, C2 failed; C4's shadow proposal is not counted
    check("error_rate", 1, 5)
    check("fallback_rate", 1, 5)
    check("policy_flag_rate", 1, 2)
    check("dead_end_rate", 1, 5)  # C2 repeated its KB query ('card arrival' and 'Card arrival ')
    check("kb_no_result_rate", 2, 6)
    check("kb_weak_result_rate", 3, 6)  # two empty + one best score 0.3 < 0.5
    check("shadow_intent_agreement", 1, 1)
    # Sentiment: mean of each conversation's mean VADER compound; shift = last - first (C1 only has two).
    per_conv = {"C1": [compound(TEXT["C1"]), compound(TEXT["C1b"])], "C2": [compound(TEXT["C2"])],
                "C3": [compound(TEXT["C3"])], "C4": [compound(TEXT["C4"])], "C6": [compound(TEXT["C6"])]}
    means = [sum(v) / len(v) for v in per_conv.values()]
    assert approx(val("sentiment_mean")["value"], sum(means) / 5)
    assert val("negative_sentiment_rate")["numerator"] == sum(x <= -0.05 for x in means)
    assert approx(val("sentiment_shift")["value"], per_conv["C1"][1] - per_conv["C1"][0])
    # Agent steps (intent, KB, policy, action, response, fallback, error events) of the conversations
    # resolved on D1: C1 6, C2 7 (two KB queries and the error), C6 4.
    steps = {"C1": 6, "C2": 7, "C6": 4}
    check("steps_per_resolution", sum(steps.values()), 3)
    # Handling time: each event is a minute apart; C1 has 9 events (8 min), C2 9, C3 7, C4 7, C6 5.
    check("aht_s", (8 + 8 + 6 + 6 + 4) * 60, 5)
    # Latency: intent 100 x5, kb 200 x6, response 1000 x5 -> median 200, p95 (interpolated) 1000.
    assert approx(val("latency_p50_ms")["value"], 200) and val("latency_p50_ms")["sample_size"] == 16
    assert approx(val("latency_p95_ms")["value"], 1000)
    assert approx(val("latency_p50_ms", "step", "agent_response")["value"], 1000)
    # Outcome checks: K1 verified, K2 not.
    check("outcome_verification_rate", 1, 2)
    check("outcome_verification_rate", 0, 1, "action", "issue_refund")
    # Tokens and cost of the resolved conversations C1 (autonomous), C2 (human: escalated) and C6.
    tokens = {"C1": 100 + 5 + 1000 + 100, "C2": 1205, "C6": 1205}
    check("tokens_per_resolution", sum(tokens.values()), 3)
    llm = 0.011
    c2 = llm + 3600 / 3600 * settings.cost_human_usd_per_hour + 1 * settings.cost_review_usd  # O1 reviewed C2
    assert approx(val("cost_per_resolution_usd", "handled_by", "human")["value"], c2)
    c1 = llm + 1 * settings.cost_review_usd  # O2 (approved) reviewed C1: a review costs whatever its outcome
    assert approx(val("cost_per_resolution_usd", "handled_by", "autonomous")["value"], (c1 + llm) / 2)
    assert approx(val("cost_per_resolution_usd")["value"], (c1 + c2 + llm) / 3)
    # Scopes: intent, strategy, channel, mode.
    check("thumbs_up_rate", 1, 1, "strategy", "A")
    check("escalation_rate", 1, 1, "channel", "email")
    check("fcr", 0, 1, "mode", "shadow")
    check("fcr", 3, 3, "intent", "card_arrival")
    # Every metric of the registry was computed on D1 (the windowed ones as provisional cohorts).
    assert {k[0] for k in m} == {x.name for x in METRICS}


def test_late_survey_counts_on_its_export_day_with_its_conversation_scope(hand):
    _, lake, _ = hand
    m = metric_rows(lake, D2)
    r = m[("csat_top2_share", D2, "all", "all")]
    assert (r["numerator"], r["denominator"]) == (0, 1)
    assert m[("csat_mean", D2, "strategy", "B")]["value"] == 3
    assert m[("csat_mean", D2, "intent", "card_arrival")]["sample_size"] == 1


def test_windowed_metrics_are_recomputed_until_final_then_frozen(hand):
    _, lake, outs = hand
    # Reopen within 24 h: K1 at 10:00 reopened after 23 h counts, K2 at 11:00 reopened after 25 h does not,
    # K6 never: 1 of 3. Window 1 day + lateness 2 days: final in the run of D1 + 3 = D4.
    for run_day, final in ((D1, False), (D2, False), (D3, False), (D4, True)):
        r = metric_rows(lake, run_day)[("reopen_rate_24h", D1, "all", "all")]
        assert r["is_final"] is final
    seen = [metric_rows(lake, d)[("reopen_rate_24h", D1, "all", "all")] for d in (D2, D3, D4)]
    assert all((r["numerator"], r["denominator"]) == (1, 3) for r in seen)
    assert metric_rows(lake, D1)[("reopen_rate_24h", D1, "all", "all")]["numerator"] == 0  # not seen yet
    assert ("reopen_rate_24h", D1, "all", "all") not in metric_rows(lake, D5)  # final rows are not recomputed
    # Review window 2 days + lateness 2: final on D1 + 4 = D5.
    m5 = metric_rows(lake, D5)
    auto = m5[("autonomous_resolution_rate", D1, "all", "all")]
    assert auto["is_final"] and (auto["numerator"], auto["denominator"]) == (1, 3)  # C6 only; C1 reopened, C2 escalated
    ovr = m5[("override_rate", D1, "all", "all")]
    # C1 (policy correction O5 on D2), C2 (O1), C3 (O3, quarantined for its triad but a correction all the same)
    assert ovr["is_final"] and (ovr["numerator"], ovr["denominator"]) == (3, 5)
    assert m5[("override_rate", D1, "stage", "intent")]["numerator"] == 2
    assert m5[("override_rate", D1, "stage", "policy")]["numerator"] == 1
    breach = m5[("policy_breach_rate", D1, "all", "all")]
    assert breach["is_final"] and (breach["numerator"], breach["denominator"]) == (1, 2)
    # The policy correction (O5) arrived on D2: the D1 run did not know it yet.
    assert metric_rows(lake, D1)[("policy_breach_rate", D1, "all", "all")]["numerator"] == 0
    # Re-engagement: C1's customer came back on the same intent (C5, D2): 1 of 5; not final before D1 + 9.
    reeng = metric_rows(lake, D6)[("reengagement_rate_7d", D1, "all", "all")]
    assert (reeng["numerator"], reeng["denominator"]) == (1, 5) and not reeng["is_final"]
    assert metric_rows(lake, D1)[("reengagement_rate_7d", D1, "all", "all")]["numerator"] == 0
    assert outs[D4]["provisional_rows"] > 0


def test_rerun_of_a_day_is_identical(hand):
    settings, lake, _ = hand
    path = lake.partition_file("marts", "signal_metrics", D3)
    from pathlib import Path

    before = Path(path).read_bytes()
    run_signals(settings, D3)
    assert Path(path).read_bytes() == before


def test_report_is_written_with_its_sections_and_no_personal_data(hand):
    from pathlib import Path

    from feedback_loop.signals.report import write_report

    settings, lake, _ = hand
    marts = {n: Path(lake.partition_file("marts", n, D3)).read_bytes() for n in ("signal_metrics", "action_queue")}
    assert all(b"anna.smith" not in b for b in marts.values())
    m = metric_rows(lake, D3)
    assert ("aht_s", D3, "strategy", "[EMAIL]") in m  # the label is kept, its personal data redacted
    html = Path(write_report(settings, D4)).read_text()
    for part in ("Headline signals", "Improvement-action queue", "Top movers", "<svg", "A/B", "Shadow mode",
                 "Windowed metrics by cohort day", "gaps.html", f"runs/dt={D4}/summary.json",
                 f"../dt={D3}/index.html", f"../dt={D5}/index.html"):
        assert part in html, part
    assert "anna.smith" not in html and "C5" not in html.split("Improvement-action queue")[0]


def test_warehouse_exposes_the_marts_and_the_latest_view(hand):
    settings, _, _ = hand
    from feedback_loop.lake.warehouse import register_views

    con = duckdb.connect()
    names = register_views(con, settings)
    assert {"signal_metrics", "action_queue", "signal_ab_tests", "signal_metrics_latest"} <= set(names)
    # The latest view holds the final reopen value of D1's cohort (from the run of D4).
    r = con.execute("SELECT numerator, denominator, is_final, dt FROM signal_metrics_latest "
                    f"WHERE metric = 'reopen_rate_24h' AND metric_date = DATE '{D1}' AND dimension = 'all'").fetchall()
    assert r == [(1.0, 3.0, True, date.fromisoformat(D4))]


# ----------------------------------------------------------------------------------------------- tests

def test_two_proportion_z_and_chi_square_agree_on_a_known_case():
    from feedback_loop.signals.abtest import mann_whitney, n_per_arm, two_proportion_z
    from scipy.stats import chi2_contingency

    # 45/100 against 60/100: pooled p = 0.525, se = sqrt(.525 * .475 * 2 / 100) = 0.0706225,
    # z = -0.15 / 0.0706225 = -2.12398, two-sided p = 0.033672.
    z, p = two_proportion_z(45, 100, 60, 100)
    assert z == pytest.approx(-2.12398, abs=1e-5) and p == pytest.approx(0.033672, abs=1e-6)
    chi2, p_chi = chi2_contingency([[45, 55], [60, 40]], correction=False)[:2]
    assert z * z == pytest.approx(chi2) and p == pytest.approx(p_chi)
    # Mann-Whitney: every score of a above every score of b -> U = n_a * n_b = 9, mean 4.5; the tie (5, 5)
    # corrects the variance: 3*3/12 * (7 - (2^3 - 2) / (6*5)) = 5.1; with continuity correction
    # z = (9 - 4.5 - 0.5) / sqrt(5.1) = 1.77123, p = 2 sf(z) = 0.076523.
    u, p = mann_whitney([4, 5, 5], [1, 2, 3])
    z_mw = 4 / math.sqrt(5.1)
    assert u == 9 and p == pytest.approx(math.erfc(z_mw / math.sqrt(2)), rel=1e-9)
    assert p == pytest.approx(0.076523, abs=1e-6)
    assert mann_whitney([3, 3], [3, 3]) == (2.0, 1.0)
    assert n_per_arm(0.45, 0.60) == 173  # the textbook formula, alpha 0.05 two-sided, power 0.8


# ----------------------------------------------------------------------------------------------- action queue

INTENTS = [f"intent_{i}" for i in range(6)]
GEN_DAYS = [str(date(2026, 4, 1) + timedelta(days=i)) for i in range(10)]


def generate_day(lake: Lake, day: str, rng: np.random.Generator, n: int = 300, plant: bool = False):
    """A steady support desk: n conversations, 6 intents, strategies A (70 %) and B, chat and email.

    Planted on request: CSAT of strategy B collapses, reviews of intent_3 are nearly all corrections,
    and intent_5's KB queries return nothing.
    """
    ev, cases, surveys, reviews = [], [], [], []
    ymd = day.replace("-", "")
    for i in range(n):
        conv, case, cust = f"C{ymd}-{i:04d}", f"K{ymd}-{i:04d}", f"U{ymd}-{i:04d}"
        intent = INTENTS[i % len(INTENTS)]
        strategy = "B" if rng.random() < 0.3 else "A"
        channel = "email" if rng.random() < 0.3 else "chat"
        empty = plant and intent == "intent_5"
        results = [] if (empty or rng.random() < 0.03) else [{"article_id": "KB", "score": 0.9}]
        start = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(minutes=int(rng.integers(0, 1200)))
        for j, e in enumerate([
            {"event_type": "customer_message", "text": "I have a question about my account"},
            {"event_type": "intent_classified", "intent": intent, "confidence": 0.9},
            {"event_type": "kb_query", "kb_query": f"q {intent}", "kb_results": results},
            {"event_type": "agent_response", "text": "Here is how"},
        ]):
            ev.append({"event_id": f"{conv}-{j}", "ts": start + timedelta(seconds=j), "conversation_id": conv,
                       "case_id": case if j else None, "customer_id": cust, "turn": 0, "strategy": strategy,
                       "mode": "live", **e})
        cases.append({"case_id": case, "customer_id": cust, "conversation_id": conv, "channel": channel,
                      "created_at": start, "updated_at": start + timedelta(minutes=5), "status": "solved",
                      "resolved_at": start + timedelta(minutes=5), "resolved_by": "ai", "reopen_count": 0,
                      "escalated": False, "handle_time_s": 60.0})
        if rng.random() < 0.5:
            good = 0.15 if (plant and strategy == "B") else 0.9
            score = int(rng.choice([4, 5])) if rng.random() < good else int(rng.choice([1, 2, 3]))
            surveys.append({"survey_id": f"S{conv}", "case_id": case, "conversation_id": conv,
                            "submitted_at": start + timedelta(minutes=30), "kind": "csat", "score": score})
        if rng.random() < 0.8:
            p_corr = 0.9 if (plant and intent == "intent_3") else 0.2
            outcome = "corrected" if rng.random() < p_corr else "approved"
            reviews.append({"override_id": f"O{conv}", "ts": start + timedelta(minutes=10), "conversation_id": conv,
                            "case_id": case, "reviewer_id": "R", "stage": "intent", "outcome": outcome,
                            "agent_decision": intent, "agent_confidence": 0.9, "human_decision": intent,
                            "rationale": "r", "evidence": "e"})
    write_staged(lake, "agent_events", day, ev)
    write_staged(lake, "crm_cases", day, cases)
    write_staged(lake, "surveys", day, surveys)
    write_staged(lake, "overrides", day, reviews)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Nine steady days run through model and signals, then the tenth day twice: quiet and planted."""
    base = tmp_path_factory.mktemp("signals-gen")
    settings = Settings.load(landing=str(base / "landing"), lake=str(base / "lake"), warehouse=str(base / "w.duckdb"))
    lake = Lake(settings.lake)
    for k, day in enumerate(GEN_DAYS[:-1]):
        generate_day(lake, day, np.random.default_rng([11, k]))
        build_model(settings, day)
        run_signals(settings, day)
    out = {}
    for variant in ("quiet", "planted"):
        root = base / variant
        shutil.copytree(base / "lake", root / "lake")
        s = Settings.load(landing=str(root / "landing"), lake=str(root / "lake"), warehouse=str(root / "w.duckdb"))
        generate_day(Lake(s.lake), GEN_DAYS[-1], np.random.default_rng([11, 99]), plant=variant == "planted")
        build_model(s, GEN_DAYS[-1])
        run_signals(s, GEN_DAYS[-1])
        con = duckdb.connect()
        rows = con.execute(f"SELECT * FROM read_parquet('{Lake(s.lake).partition_file('marts', 'action_queue', GEN_DAYS[-1])}')").fetchall()
        cols = [d[0] for d in con.description]
        con.close()
        out[variant] = [dict(zip(cols, r)) for r in rows]
    return out


def test_action_queue_is_empty_on_a_quiet_day(generated):
    assert generated["quiet"] == []


def test_action_queue_raises_exactly_the_planted_anomalies(generated):
    raised = {(q["signal"], q["scope_dimension"], q["scope_value"], q["trigger"]) for q in generated["planted"]}
    assert raised == {
        ("csat_top2_share", "strategy", "B", "change_vs_baseline"),
        ("csat_mean", "strategy", "B", "change_vs_baseline"),
        ("review_correction_rate", "intent", "intent_3", "change_vs_baseline"),
        ("kb_no_result_rate", "intent", "intent_5", "change_vs_baseline"),
        ("kb_weak_result_rate", "intent", "intent_5", "change_vs_baseline"),
    }
    by = {(q["signal"], q["scope_value"]): q for q in generated["planted"]}
    assert by[("csat_top2_share", "B")]["target_component"] == "reasoning_model"
    assert by[("review_correction_rate", "intent_3")]["target_component"] == "intent_classifier"
    assert by[("kb_no_result_rate", "intent_5")]["target_component"] == "knowledge_base"
    for q in generated["planted"]:
        assert len(q["action_id"]) == 16 and q["status"] == "open" and q["is_final"]
        assert q["baseline_days"] >= 7 and q["sample_size"] >= 30 and q["z_score"] != 0
        assert q["example_conversation_ids"], q
        ev = json.loads(q["evidence"])
        assert ev["sample_size"] == q["sample_size"] and ev["baseline_value"] == q["baseline_value"]
    # Examples are conversations that show the problem: intent_5's queries with no result.
    assert all(c.startswith("C20260410") for c in by[("kb_no_result_rate", "intent_5")]["example_conversation_ids"])


def test_docs_define_every_metric():
    """docs/signals.md carries the registry's definitions verbatim (regenerate with signals.metric_docs())."""
    from pathlib import Path

    from feedback_loop.signals.metrics import metric_docs

    doc = (Path(__file__).resolve().parents[2] / "docs" / "signals.md").read_text()
    assert metric_docs() in doc
