"""Langfuse pull against the public-API stand-in: page/limit pagination with a 429, traces -> customer
messages, observations by type -> agent events, people's scores -> thumbs and overrides, quarantine,
idempotence, an incomplete day, the secret key kept out of logs."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import duckdb
import pytest
from pulled import assert_kept_out, assert_repull_identical, assert_timeout_leaves_day_incomplete, serving
from pulled import gz_lines as _lines

sys.path.insert(0, str(Path(__file__).parent))
import langfuse_fixture as lff
from feedback_loop_sample.standins.langfuse import PUBLIC_KEY, SECRET_KEY, LangfuseStandIn


@pytest.fixture
def langfuse(data_dir, monkeypatch):
    with serving(monkeypatch, "langfuse") as serve:
        def start(faults=None, secret=SECRET_KEY, **kw):
            return serve(LangfuseStandIn(lff.data(), page_size=2, faults=faults),
                         lambda s: {"conn_type": "http", "host": s.url, "login": PUBLIC_KEY, "password": secret},
                         **kw)

        yield start


def test_two_days_of_traces_observations_and_scores(langfuse, data_dir):
    from feedback_loop.nightly import land, validate
    from feedback_loop.sources.pull import read_stream
    from feedback_loop.sources.systems import pull_system

    stand_in, settings = langfuse(faults={3: ("429", 1)})
    out1 = pull_system(settings, "langfuse", lff.D1)
    out2 = pull_system(settings, "langfuse", lff.D2)
    assert out1["retries"] == 1
    assert sorted(o["id"] for o in read_stream(settings, "langfuse", lff.D1, "observations")) == [
        "o1", "o2", "o3", "o4", "o5", "o6", "o7", "o8"]
    assert [o["id"] for o in read_stream(settings, "langfuse", lff.D2, "observations")] == ["o9"]
    assert sum(1 for r in stand_in.requests if r["path"] == "/api/public/observations") >= 5  # 4 pages + 1 on D2
    outs = out1["mapped"]["outputs"]
    assert {k: (v["rows"], v["unmappable"], v["skipped"]) for k, v in outs.items()} == {
        "customer_messages": (3, 0, 0), "events": (6, 1, 1), "thumbs": (2, 0, 3), "overrides": (2, 0, 3)}
    assert out2["mapped"]["sources"]["agent_events"] == {"rows": 3, "unmappable": 0}

    events = {e["event_id"]: e for e in _lines(data_dir / f"landing/agent_events/dt={lff.D1}/langfuse.jsonl.gz")}
    assert {k: v for k, v in events["o3"].items() if "." not in k and v is not None} == {
        "event_id": "o3", "ts": "2026-11-02T08:02:00+00:00", "conversation_id": "sess-A", "customer_id": "CUST-1",
        "turn": 0, "event_type": "agent_response", "text": "Cards arrive within 5 days.", "model": "gpt-4.1-mini",
        "input_tokens": 412, "output_tokens": 38, "latency_ms": 1500.0, "cost_usd": 0.0012}
    assert events["o2"]["kb_results"] == [{"article_id": "KB-1", "score": 0.82}] and events["o2"]["kb_query"] == "card not arrived"
    assert events["o4"]["action"] == "reissue_card" and events["o4"]["action_args"] == {"card": "last4-1234"}
    assert events["o4"]["turn"] == 1 and events["o4"]["action_status"] == "ok"
    assert events["o5"]["event_type"] == "intent_classified" and events["o5"]["intent"] == "card_arrival"
    assert events["o6"]["event_type"] == "policy_check" and events["o6"]["policy_outcome"] == "pass"
    assert events["o7"]["error_type"] == "error" and events["o7"]["error_message"] == "upstream timeout"
    assert events["trace-t1"]["event_type"] == "customer_message" and events["trace-t1"]["text"] == "My card has not arrived"
    assert (events["score-s1"]["rating"], events["score-s2"]["rating"]) == (1, -1)
    assert events["o3"]["langfuse.environment"] == "production"  # unmapped fields kept
    overrides = {o["override_id"]: o for o in _lines(data_dir / f"landing/overrides/dt={lff.D1}/langfuse.jsonl.gz")}
    assert overrides["s4"]["outcome"] == "corrected" and overrides["s4"]["stage"] == "policy"
    assert overrides["s4"]["human_decision"] == "waive" and overrides["s4"]["policy_clause_id"] == "POL-9"
    assert overrides["s3"]["outcome"] == "approved" and overrides["s3"]["reviewer_id"] == "rev-7"

    land(settings, "agent_events", lff.D1)
    validate(settings, "agent_events", lff.D1)
    q = duckdb.sql(f"SELECT quarantine_detail FROM '{data_dir}/lake/quarantine/agent_events/dt={lff.D1}/part.parquet'").fetchall()
    detail = [d for (d,) in q if "record o8" in d]
    assert detail and "field `type`" in detail[0] and "MYSTERY" in detail[0]


def test_repull_identical_timeout_incomplete_and_no_secret_in_logs(langfuse, data_dir, caplog, capsys):
    from feedback_loop.sources.pull import PullError
    from feedback_loop.sources.systems import pull_system

    caplog.set_level(logging.DEBUG)
    assert_repull_identical(langfuse, "langfuse", lff.D1, data_dir / "landing", {2: ("500", 0), 5: ("429", 0)})
    assert_timeout_leaves_day_incomplete(langfuse, "langfuse", lff.D1, "overrides", {4: ("hang", 2)})
    _, settings = langfuse(secret="wrong-" + SECRET_KEY)
    with pytest.raises(PullError, match="HTTP 401") as err:
        pull_system(settings, "langfuse", lff.D2)
    out = capsys.readouterr()
    assert_kept_out((SECRET_KEY,), (caplog.text, out.out, out.err, str(err.value)), data_dir)
