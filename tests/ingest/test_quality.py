"""Validate: each kind of bad row lands in quarantine with the right reason; the accounting holds."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import duckdb
import pytest
from feedback_loop import nightly
from feedback_loop.ingest.quality import DataQualityError

DAY = "2026-11-20"
PREV = "2026-11-19"


def _jsonl(settings, source, rows, day=DAY, name="part.jsonl"):
    folder = f"{settings.landing}/{source}/dt={day}"
    os.makedirs(folder, exist_ok=True)
    with open(f"{folder}/{name}", "w") as fh:
        fh.writelines((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def _ev(i, conv="c1", etype="customer_message", **kw):
    row = {"event_id": f"e{i}", "ts": f"{DAY}T10:{i % 60:02d}:00Z", "conversation_id": conv, "customer_id": "u1",
           "turn": 0, "event_type": etype, "text": "my card has not arrived", "case_id": "k1"}
    row.update(kw)
    return row


def _case(cid="k1", **kw):
    row = {"case_id": cid, "customer_id": "u1", "conversation_id": "c1", "channel": "chat",
           "created_at": f"{DAY}T09:00:00Z", "updated_at": f"{DAY}T11:00:00Z", "status": "solved",
           "resolved_by": "ai", "category": "card_arrival", "tags": ["x"]}
    row.update(kw)
    return row


def _override(i, **kw):
    row = {"override_id": f"o{i}", "ts": f"{DAY}T12:00:00Z", "conversation_id": "c1", "case_id": "k1",
           "reviewer_id": "r1", "stage": "intent", "agent_decision": "card_delivery_estimate",
           "agent_confidence": 0.55, "human_decision": "card_arrival", "rationale": "customer asks where the card is",
           "policy_clause_id": "POL-1", "evidence": None, "outcome": "corrected"}
    row.update(kw)
    return row


@pytest.fixture
def day_with_every_problem(settings):
    good = [_ev(i) for i in range(1, 40)]
    events = good + [
        _ev(100, customer_id=None),                          # missing_customer_id
        _ev(101, event_type="teleport"),                     # bad_event_type
        _ev(102, confidence=1.7, etype="intent_classified"),  # out_of_range_confidence
        _ev(103, turn="three"),                              # type_error
        "{not json",                                         # parse_error
        _ev(104, ts="2026-11-20T10:00:00"),                  # type_error (no offset)
        _ev(105, ts="2026-11-10T10:00:00Z"),                 # timestamp_outside_interval
        _ev(106, ts="2026-11-23T10:00:00Z"),                 # timestamp_outside_interval (future)
        _ev(1),                                              # duplicate_id (second copy)
        _ev(107, conv="ghost", etype="agent_response"),     # unknown_conversation_id
        _ev(108, ts="2026-11-19T01:00:00Z"),                 # late but inside the allowance: staged
    ]
    _jsonl(settings, "agent_events", events)
    _jsonl(settings, "crm_cases", [_case(), _case("k2", updated_at=f"{DAY}T12:00:00Z"), _case("k2", updated_at=f"{DAY}T12:00:00Z")])
    _jsonl(settings, "surveys", [
        {"survey_id": "s1", "case_id": "k1", "submitted_at": f"{DAY}T13:00:00Z", "kind": "csat", "score": 5},
        {"survey_id": "s2", "case_id": "nope", "submitted_at": f"{DAY}T13:00:00Z", "kind": "csat", "score": 4},
        {"survey_id": "s3", "case_id": "k1", "submitted_at": f"{DAY}T13:00:00Z", "kind": "csat", "score": 6},
        {"survey_id": "s4", "case_id": "k1", "submitted_at": f"{DAY}T13:00:00Z", "kind": "ces", "score": 6},
    ])
    _jsonl(settings, "overrides", [
        _override(1), _override(2, rationale=None), _override(3, policy_clause_id=None, evidence=None),
        _override(4, outcome="approved", human_decision=None, rationale=None, policy_clause_id=None),
        _override(5, conversation_id="never-seen"),
    ])
    _jsonl(settings, "outcome_checks", [
        {"check_id": "x1", "case_id": "k1", "action": "refund", "checked_at": f"{DAY}T14:00:00Z", "verified": True},
        {"check_id": "x2", "case_id": "zzz", "action": "refund", "checked_at": f"{DAY}T14:00:00Z", "verified": False},
    ])
    _jsonl(settings, "kb_articles", [
        {"article_id": "KB-1", "title": "Card arrival", "body": "...", "intents": ["card_arrival"],
         "status": "published", "updated_at": "2026-10-01T00:00:00Z"},
    ])
    return settings


def _quarantine(settings, source):
    return dict(
        duckdb.sql(
            f"SELECT coalesce({'event_id' if source == 'agent_events' else _id(source)}, '#' || _line::VARCHAR), "
            f"quarantine_reason FROM '{settings.lake}/quarantine/{source}/dt={DAY}/part.parquet'"
        ).fetchall()
    )


def _id(source):
    from feedback_loop.ingest.contract import SOURCES

    return SOURCES[source].id_column


def test_each_kind_of_bad_row_is_quarantined_with_its_reason(day_with_every_problem):
    settings = replace(day_with_every_problem, max_bad_row_share=0.9, reference_lookback_days=0)
    summary = nightly.run_day(settings, DAY, data_docs=False)
    q = _quarantine(settings, "agent_events")
    assert q == {
        "e100": "missing_customer_id", "e101": "bad_event_type", "e102": "out_of_range_confidence",
        "e103": "type_error", "#44": "parse_error", "e104": "type_error", "e105": "timestamp_outside_interval",
        "e106": "timestamp_outside_interval", "e1": "duplicate_id", "e107": "unknown_conversation_id",
    }
    assert _quarantine(settings, "crm_cases") == {"k2": "duplicate_id"}
    assert _quarantine(settings, "surveys") == {"s2": "unknown_case_id", "s3": "score_outside_scale"}
    assert _quarantine(settings, "overrides") == {"o2": "incomplete_triad", "o3": "incomplete_triad",
                                                  "o5": "unknown_conversation_id"}
    assert _quarantine(settings, "outcome_checks") == {"x2": "unknown_case_id"}
    ev = summary["sources"]["agent_events"]
    assert ev["rows_read"] == 50 and ev["rows_staged"] == 40 and ev["rows_quarantined"] == 10
    assert ev["quarantined_by_reason"]["timestamp_outside_interval"] == 2
    for name, s in summary["sources"].items():
        assert s["rows_read"] == s["rows_staged"] + s["rows_quarantined"], name
    staged = duckdb.sql(f"SELECT count(*) FROM '{settings.lake}/staged/agent_events/dt={DAY}/part.parquet' "
                        "WHERE event_id = 'e1'").fetchall()[0][0]
    assert staged == 1  # the first copy of a duplicate is kept
    detail = duckdb.sql(f"SELECT quarantine_detail FROM '{settings.lake}/quarantine/overrides/dt={DAY}/part.parquet' "
                        "WHERE override_id = 'o3'").fetchall()[0][0]
    assert detail == "missing policy clause or evidence"
    assert summary["sources"]["agent_events"]["suite"]["success"] is False


def test_too_many_bad_rows_fail_the_task_and_withhold_staged(day_with_every_problem):
    settings = replace(day_with_every_problem, max_bad_row_share=0.1, reference_lookback_days=0)
    for source in ("agent_events", "crm_cases", "surveys", "overrides", "outcome_checks", "kb_articles"):
        nightly.land(settings, source, DAY)
    with pytest.raises(DataQualityError) as err:
        nightly.validate(settings, "surveys", DAY)
    msg = str(err.value)
    assert "suite 'surveys' failed" in msg and "unknown_case_id (1)" in msg and "score_outside_scale (1)" in msg
    assert not os.path.exists(f"{settings.lake}/staged/surveys/dt={DAY}/part.parquet")
    assert os.path.exists(f"{settings.lake}/quarantine/surveys/dt={DAY}/part.parquet")


def test_an_id_staged_on_an_earlier_day_is_a_duplicate(settings):
    settings = replace(settings, max_bad_row_share=0.9)
    for day in (PREV, DAY):
        _jsonl(settings, "agent_events", [_ev(1, ts=f"{day}T10:00:00Z"), _ev(2, ts=f"{day}T10:05:00Z") if day == DAY else _ev(3, ts=f"{day}T10:05:00Z")], day=day)
    for day in (PREV, DAY):
        nightly.land(settings, "agent_events", day)
        nightly.validate(settings, "agent_events", day)
    q = duckdb.sql(f"SELECT event_id, quarantine_reason, quarantine_detail FROM "
                   f"'{settings.lake}/quarantine/agent_events/dt={DAY}/part.parquet'").fetchall()
    assert q == [("e1", "duplicate_id_across_days", f"already staged on {PREV}")]


def test_references_resolve_through_earlier_days_and_only_their_own_ids_are_read(settings):
    """A conversation opened the day before and a case exported the day before resolve today's rows; one
    opened nowhere is unknown (the lookback holds the whole history). The earlier days are read for the
    day's own keys only: other ids there neither resolve nor duplicate anything."""
    settings = replace(settings, max_bad_row_share=0.9, reference_lookback_days=1)
    _jsonl(settings, "agent_events", [_ev(1, conv="c9", ts=f"{PREV}T10:00:00Z"),
                                      _ev(2, conv="other", ts=f"{PREV}T10:00:00Z")], day=PREV)
    _jsonl(settings, "agent_events", [_ev(3, conv="c9", etype="agent_response"),
                                      _ev(4, conv="c8", etype="agent_response"), _ev(5, conv="c7"),
                                      _ev(6, conv="c7", etype="agent_response")])
    _jsonl(settings, "crm_cases", [_case("k9", conversation_id="c9", updated_at=f"{PREV}T11:00:00Z",
                                         created_at=f"{PREV}T09:00:00Z")], day=PREV)
    _jsonl(settings, "crm_cases", [_case("k7", conversation_id="c7")])
    survey = {"survey_id": "s9", "case_id": "k9", "conversation_id": "c9", "submitted_at": f"{DAY}T12:00:00Z",
              "kind": "csat", "score": 5}
    _jsonl(settings, "surveys", [survey, {**survey, "survey_id": "s8", "case_id": "k8"}])
    for day in (PREV, DAY):
        for source in ("agent_events", "crm_cases"):
            nightly.land(settings, source, day)
            nightly.validate(settings, source, day)
    nightly.land(settings, "surveys", DAY)
    nightly.validate(settings, "surveys", DAY)
    assert _quarantine(settings, "agent_events") == {"e4": "unknown_conversation_id"}
    assert _quarantine(settings, "surveys") == {"s8": "unknown_case_id"}
    staged = duckdb.sql(f"SELECT event_id FROM '{settings.lake}/staged/agent_events/dt={DAY}/part.parquet' "
                        "ORDER BY 1").fetchall()
    assert staged == [("e3",), ("e5",), ("e6",)]


def test_rerunning_a_day_gives_identical_outputs(day_with_every_problem):
    settings = replace(day_with_every_problem, max_bad_row_share=0.9)
    nightly.run_day(settings, DAY, data_docs=False)

    def snapshot():
        out = {}
        for root, _, files in os.walk(settings.lake):
            for f in files:
                if f.endswith(".parquet") and "/gx/" not in root:
                    path = os.path.join(root, f)
                    out[path] = duckdb.sql(f"SELECT * FROM '{path}'").fetchall()
        return out

    first = snapshot()
    summary1 = json.loads(Path(f"{settings.lake}/runs/dt={DAY}/summary.json").read_text())
    nightly.run_day(settings, DAY, data_docs=False)
    assert snapshot() == first
    summary2 = json.loads(Path(f"{settings.lake}/runs/dt={DAY}/summary.json").read_text())
    for s in (summary1, summary2):
        for src in s["sources"].values():
            src["suite"].pop("result_json", None)
    assert summary1 == summary2


def test_staged_rows_are_the_same_in_row_order_whether_or_not_raw_is_in_row_order(day_with_every_problem,
                                                                                  monkeypatch):
    """Staged is written by a scan filtered on a bitstring of the quarantined row ids when the raw
    partition is in _row_id order (as land writes it), by an anti-join and a sort otherwise: same rows,
    same order, either way."""
    from feedback_loop.ingest import quality

    clauses = []
    real = quality._staged_where
    monkeypatch.setattr(quality, "_staged_where", lambda con, raw: clauses.append(real(con, raw)) or clauses[-1])
    settings = replace(day_with_every_problem, max_bad_row_share=0.9, reference_lookback_days=0)
    for source in ("agent_events", "crm_cases", "surveys", "overrides", "outcome_checks", "kb_articles"):
        nightly.land(settings, source, DAY)

    def outputs():
        nightly.validate(settings, "agent_events", DAY)
        return [duckdb.sql(f"SELECT * FROM '{settings.lake}/{layer}/agent_events/dt={DAY}/part.parquet'").fetchall()
                for layer in ("staged", "quarantine")]

    in_order = outputs()
    raw = f"{settings.lake}/raw/agent_events/dt={DAY}/part.parquet"
    con = duckdb.connect()
    con.execute(f"COPY (SELECT * EXCLUDE (dt) FROM '{raw}' ORDER BY _row_id DESC) TO '{raw}.tmp' (FORMAT parquet)")
    con.close()
    os.replace(f"{raw}.tmp", raw)
    assert outputs() == in_order
    staged_ids = [r[-1] for r in duckdb.sql(
        f"SELECT _row_id FROM '{settings.lake}/staged/agent_events/dt={DAY}/part.parquet'").fetchall()]
    assert len(staged_ids) == 40 and staged_ids == sorted(staged_ids)
    assert "get_bit" in clauses[0] and "NOT EXISTS" in clauses[1]  # both ways were taken
