"""Langfuse pull against the public-API stand-in: page/limit pagination with a 429, traces -> customer
messages, observations by type -> agent events, people's scores -> thumbs and overrides, quarantine,
idempotence, an incomplete day, the secret key kept out of logs."""

from __future__ import annotations

import gzip
import logging
import sys
from pathlib import Path

import duckdb
import pytest
from pulled import gz_lines as _lines
from pulled import serve
from pulled import tree_digest as _digest

sys.path.insert(0, str(Path(__file__).parent))
import langfuse_fixture as lff
from feedback_loop_sample.standins.langfuse import PUBLIC_KEY, SECRET_KEY, LangfuseStandIn


@pytest.fixture
def langfuse(data_dir, monkeypatch):
    started = []

    def start(faults=None, secret=SECRET_KEY, **kw):
        return serve(monkeypatch, started, "langfuse", LangfuseStandIn(lff.data(), page_size=2, faults=faults),
                     lambda s: {"conn_type": "http", "host": s.url, "login": PUBLIC_KEY, "password": secret}, **kw)

    yield start
    for s in started:
        s.stop()


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
    from feedback_loop.nightly import land
    from feedback_loop.sources.pull import IncompleteDayError, PullError
    from feedback_loop.sources.systems import pull_system

    caplog.set_level(logging.DEBUG)
    _, settings = langfuse()
    pull_system(settings, "langfuse", lff.D1)
    first = _digest(data_dir / "landing")
    _, settings = langfuse(faults={2: ("500", 0), 5: ("429", 0)})
    pull_system(settings, "langfuse", lff.D1)
    assert _digest(data_dir / "landing") == first
    _, settings = langfuse(faults={4: ("hang", 2)}, sources_timeout_seconds=0.3, sources_max_retries=0)
    with pytest.raises(PullError, match="timed out"):
        pull_system(settings, "langfuse", lff.D1)
    with pytest.raises(IncompleteDayError):
        land(settings, "overrides", lff.D1)
    _, settings = langfuse(secret="wrong-" + SECRET_KEY)
    with pytest.raises(PullError, match="HTTP 401") as err:
        pull_system(settings, "langfuse", lff.D2)
    out = capsys.readouterr()
    for text in (caplog.text, out.out, out.err, str(err.value)):
        assert SECRET_KEY not in text
    for p in data_dir.rglob("*"):
        if p.is_file():
            raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
            assert SECRET_KEY.encode() not in raw
