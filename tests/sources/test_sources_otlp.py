"""OTLP JSON files (the OpenTelemetry file exporter's format): spans of two days in files that straddle
midnight, GenAI span names and acsr.* attributes mapped, a line cut short quarantined with its file and line,
a re-pull identical, a missing folder leaving the day incomplete."""

from __future__ import annotations

import gzip
import hashlib
import json

import duckdb
import pytest
from pulled import gz_lines as _lines

D1, D2 = "2026-11-02", "2026-11-03"


def _ns(day: str, hh: int, mm: int = 0) -> str:
    from datetime import datetime

    return str(int(datetime.fromisoformat(f"{day}T{hh:02d}:{mm:02d}:00+00:00").timestamp()) * 10**9)


def _a(key, **value):
    return {"key": key, "value": value}


def _span(sid, name, start, attrs, parent="", dur_ms=250, status=None):
    return {"traceId": "5b8aa5a2d2c872e8321cf37308d69df2", "spanId": sid, "parentSpanId": parent, "name": name,
            "kind": 1, "startTimeUnixNano": start, "endTimeUnixNano": str(int(start) + dur_ms * 10**6),
            "attributes": attrs, "status": status or {}}


def _conv(day, hh, conv):
    common = [_a("gen_ai.conversation.id", stringValue=conv), _a("acsr.customer.id", stringValue="CUST-1"),
              _a("acsr.turn", intValue="0")]
    return [
        _span(f"{conv[-2:]}00000000000001", "invoke_agent support", _ns(day, hh), common + [_a("gen_ai.operation.name", stringValue="invoke_agent")]),
        _span(f"{conv[-2:]}00000000000002", "acsr.customer_message", _ns(day, hh, 1),
              common + [_a("acsr.event.type", stringValue="customer_message"), _a("acsr.text", stringValue="Where is my card?")]),
        _span(f"{conv[-2:]}00000000000003", "retrieval kb", _ns(day, hh, 2),
              common + [_a("gen_ai.operation.name", stringValue="retrieval"),
                        _a("gen_ai.retrieval.query.text", stringValue="card delivery"),
                        _a("gen_ai.retrieval.documents", stringValue='[{"id": "KB-1", "score": 0.8}]')]),
        _span(f"{conv[-2:]}00000000000004", "execute_tool track_card", _ns(day, hh, 3),
              common + [_a("gen_ai.tool.name", stringValue="track_card"),
                        _a("gen_ai.tool.call.arguments", stringValue='{"card": "1234"}'),
                        _a("custom.team.flag", boolValue=True)], dur_ms=1200),
        _span(f"{conv[-2:]}00000000000005", "chat gpt-4.1-mini", _ns(day, hh, 4),
              common + [_a("gen_ai.operation.name", stringValue="chat"), _a("gen_ai.request.model", stringValue="gpt-4.1-mini"),
                        _a("gen_ai.usage.input_tokens", intValue="300"), _a("gen_ai.usage.output_tokens", intValue="40"),
                        _a("error.type", stringValue="timeout")], status={"code": 2, "message": "upstream timed out"}),
        _span(f"{conv[-2:]}00000000000006", "GET /orders", _ns(day, hh, 5), [_a("http.method", stringValue="GET")]),
        _span(f"{conv[-2:]}00000000000007", "acsr.human_override", _ns(day, hh, 30),
              [_a("gen_ai.conversation.id", stringValue=conv), _a("acsr.event.type", stringValue="human_override"),
               _a("acsr.override.reviewer_id", stringValue="REV-1"), _a("acsr.override.stage", stringValue="intent"),
               _a("acsr.override.outcome", stringValue="approved")]),
    ]


def _request(spans):
    return {"resourceSpans": [{"resource": {"attributes": [_a("service.name", stringValue="support-agent")]},
                               "scopeSpans": [{"scope": {"name": "acsr.instrumentation", "version": "0.1.0"},
                                               "spans": spans}]}]}


@pytest.fixture
def otlp(data_dir, monkeypatch):
    folder = data_dir / "otel"
    folder.mkdir()
    # one file per hour-ish batch, the second straddling midnight
    (folder / "traces-a.jsonl").write_text(json.dumps(_request(_conv(D1, 8, "CONV-01"))) + "\n")
    late = _conv(D1, 23, "CONV-02")
    early = _conv(D2, 0, "CONV-03")
    with gzip.open(folder / "traces-b.jsonl.gz", "wt") as fh:
        fh.write(json.dumps(_request(late + early)) + "\n")
        fh.write('{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "ab"\n')  # the process died mid-write
    monkeypatch.setenv("ACSR_SOURCES", "otlp")
    monkeypatch.setenv("ACSR_SOURCES_OTLP_PATH", str(folder))
    from feedback_loop.settings import Settings

    return folder, Settings.load()


def test_spans_of_each_day_are_mapped_and_a_cut_line_is_quarantined(otlp, data_dir):
    from feedback_loop.nightly import land, validate
    from feedback_loop.sources.systems import pull_system

    _, settings = otlp
    out1 = pull_system(settings, "otlp", D1)
    out2 = pull_system(settings, "otlp", D2)
    # per conversation: 4 events (invoke_agent and the HTTP span skipped), 1 override; the cut line belongs to
    # the day of its file's latest span (D2), so it is quarantined once
    assert out1["mapped"]["outputs"]["events"] == {"source": "agent_events", "rows": 8, "unmappable": 0, "skipped": 6}
    assert out1["mapped"]["outputs"]["overrides"]["rows"] == 2
    assert (out2["mapped"]["outputs"]["events"]["rows"], out2["mapped"]["outputs"]["events"]["unmappable"]) == (4, 1)
    events = _lines(data_dir / f"landing/agent_events/dt={D1}/otlp.jsonl.gz")
    by_type = {e["event_type"]: e for e in events if e["conversation_id"] == "CONV-01"}
    assert set(by_type) == {"customer_message", "kb_query", "action_executed", "agent_response"}
    tool = by_type["action_executed"]
    assert (tool["action"], tool["action_args"], tool["latency_ms"], tool["ts"]) == (
        "track_card", {"card": "1234"}, 1200.0, "2026-11-02T08:03:00+00:00")
    assert tool["otlp.attributes"] == {"custom.team.flag": True}  # attributes the mapping does not use
    chat = by_type["agent_response"]
    assert (chat["model"], chat["input_tokens"], chat["error_type"], chat["error_message"]) == (
        "gpt-4.1-mini", 300, "timeout", "upstream timed out")
    assert by_type["kb_query"]["kb_results"] == [{"article_id": "KB-1", "score": 0.8}]
    assert by_type["customer_message"]["event_id"] == "0100000000000002"  # the span id without acsr.event.id

    land(settings, "agent_events", D2)
    validate(settings, "agent_events", D2)
    q = duckdb.sql(f"SELECT quarantine_detail FROM '{data_dir}/lake/quarantine/agent_events/dt={D2}/part.parquet'").fetchall()
    assert any("line 2 of traces-b.jsonl.gz is not JSON" in d for (d,) in q)


def test_repull_is_identical_and_a_missing_folder_leaves_the_day_incomplete(otlp, data_dir, monkeypatch):
    from feedback_loop.nightly import land
    from feedback_loop.settings import Settings
    from feedback_loop.sources.pull import IncompleteDayError, PullError
    from feedback_loop.sources.systems import pull_system

    folder, settings = otlp
    pull_system(settings, "otlp", D1)
    digest = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (data_dir / "landing").rglob("*.gz")}
    pull_system(settings, "otlp", D1)
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (data_dir / "landing").rglob("*.gz")} == digest
    monkeypatch.setenv("ACSR_SOURCES_OTLP_PATH", str(folder) + "-gone")
    with pytest.raises(PullError, match="not a folder"):
        pull_system(Settings.load(), "otlp", D1)
    with pytest.raises(IncompleteDayError):
        land(Settings.load(), "overrides", D1)
