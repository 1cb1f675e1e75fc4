"""The instrumentation package (instrumentation/, acsr_instrumentation): spans, OTLP JSON files, failures
swallowed and counted, redaction before export, and the pull's converter reading what it writes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import acsr_instrumentation
import pytest
from acsr_instrumentation import Instrumentation, OtlpJsonFileExporter
from acsr_instrumentation import semconv as agent_semconv
from feedback_loop.sources import otlp_acsr
from feedback_loop.sources import semconv as pipeline_semconv
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def _table(module) -> dict:
    return {k: v for k, v in vars(module).items() if k.isupper()}


def test_the_packages_attribute_table_is_the_pipelines():
    agent, pipeline = _table(agent_semconv), _table(pipeline_semconv)
    assert len(agent) >= 40
    assert agent == pipeline


def test_the_package_stands_alone():
    """Installable on its own: imports neither the product nor the sample package, depends on OTel only."""
    src = ROOT / "instrumentation" / "src"
    code = ("import sys, acsr_instrumentation; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('feedback_loop', 'feedback_loop_sample')]; "
            "sys.exit(f'imports {bad}' if bad else 0)")
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"})
    deps = tomllib.loads((ROOT / "instrumentation" / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(re.split(r"[<>=~!;\[ ]", d, maxsplit=1)[0] for d in deps) == ["opentelemetry-api", "opentelemetry-sdk"]


class Capture(SpanExporter):
    def __init__(self):
        self.spans = []

    def export(self, spans):
        self.spans += list(spans)
        return SpanExportResult.SUCCESS


class Broken(SpanExporter):
    def __init__(self):
        self.calls = 0

    def export(self, spans):
        self.calls += 1
        raise ConnectionError("collector unreachable")

    def shutdown(self):
        raise OSError("disk full")


def tiny_agent(inst: Instrumentation, messages: list[str]) -> list[str]:
    """A toy agent: classifies by keyword, acts, answers; instrumented at every decision point."""
    answers = []
    for i, text in enumerate(messages):
        with inst.conversation(f"C{i}", customer_id=f"U{i}") as conv, conv.turn(0) as turn:
            turn.customer_message(text)
            intent = "lost_or_stolen_card" if "card" in text else "other"
            turn.intent(intent, confidence=0.9 if intent != "other" else 0.4)
            turn.knowledge_query(text, [("KB-1", 0.8)])
            turn.policy_check("POL-cards-1", "pass")
            if intent != "other":
                turn.action_executed("freeze_card", {"card_last4": "1234"}, status="ok")
            answer = f"About {intent}: done." if intent != "other" else "Could you tell me more?"
            turn.response(answer, model="m", input_tokens=10, output_tokens=5)
            answers.append(answer)
    return answers


MESSAGES = ["I lost my card", "what is my balance", "card stolen, call me on +44 20 7946 0321"]


@pytest.mark.parametrize("batch", [False, True])
def test_a_failing_exporter_leaves_the_answers_unchanged(batch):
    good = tiny_agent(Instrumentation.with_exporter(Capture(), batch=False), MESSAGES)
    broken = Broken()
    inst = Instrumentation.with_exporter(broken, batch=batch)
    assert tiny_agent(inst, MESSAGES) == good
    inst.flush()
    inst.shutdown()
    stats = inst.stats()
    assert broken.calls >= 1
    assert stats["export_failures"] >= broken.calls  # every failed export counted, plus the shutdown's
    assert stats["spans_dropped"] == 3 * 7 - 1  # 7 spans per conversation with an action, 6 without
    assert "collector unreachable" in stats["last_export_error"] or "disk full" in stats["last_export_error"]
    assert stats["spans_exported"] == 0
    assert stats["spans_ended"] == 3 * 7 - 1 and stats["spans_not_exported"] == 3 * 7 - 1


def test_bad_calls_are_counted_not_raised():
    cap = Capture()
    inst = Instrumentation.with_exporter(cap, batch=False)
    with inst.conversation("C1") as conv, conv.turn(0) as turn:
        turn.intent("x", confidence=7.0)  # out of range
        turn.policy_check("P", "maybe")  # not an outcome
        turn.thumbs(5)
        turn.customer_message("ok", ts=datetime(2026, 11, 20, 9, 0))  # naive timestamp
        turn.response("still answered")
    conv.human_override(stage="routing", outcome="corrected", reviewer_id="R")
    assert inst.stats()["instrumentation_errors"] == 5
    assert [s.name for s in cap.spans] == ["chat", "invoke_agent support-agent"]


def test_redaction_happens_before_export(tmp_path):
    seen = []

    def redact(text):
        seen.append(text)
        return text.replace("+44 20 7946 0321", "<PHONE>").replace("j.doe@example.com", "<EMAIL>")

    cap = Capture()
    inst = Instrumentation.with_exporter(cap, batch=False, redact=redact)
    tiny_agent(inst, MESSAGES)
    inst.human_override("C2", stage="response", outcome="corrected", reviewer_id="R1",
                        agent_decision="Could you tell me more?", human_decision="Mail j.doe@example.com",
                        rationale="customer gave +44 20 7946 0321", evidence="call", policy_clause_id="POL-1")
    texts = [v for s in cap.spans for v in s.attributes.values() if isinstance(v, str)]
    assert not any("7946 0321" in t or "j.doe@" in t for t in texts)
    assert "card stolen, call me on <PHONE>" in texts and "Mail <EMAIL>" in texts
    assert any("+44 20 7946 0321" in t for t in seen)

    files = Instrumentation.to_directory(tmp_path, batch=False, redact=redact)
    tiny_agent(files, MESSAGES)
    files.shutdown()
    raw = "".join(p.read_text() for p in tmp_path.glob("*.jsonl"))
    assert "<PHONE>" in raw and "7946 0321" not in raw and "j.doe@" not in raw


def test_otlp_json_file_format_and_atomic_visibility(tmp_path):
    inst = Instrumentation.to_directory(tmp_path, batch=False)
    with inst.conversation("C1", customer_id="U1", mode="live") as conv, conv.turn(2, start=T0) as turn:
        turn.intent("card_arrival", 0.75, ts=T0 + timedelta(seconds=1), latency_ms=120.0, model="clf",
                    input_tokens=30, output_tokens=2)
        turn.action_executed("order_card", {"card_last4": "0042"}, status="ok", ts=T0 + timedelta(seconds=2))
    assert list(tmp_path.glob("*.jsonl")) == [] and len(list(tmp_path.glob("*.partial"))) == 1
    inst.shutdown()
    [path] = tmp_path.glob("*.jsonl")
    docs = [json.loads(line) for line in path.read_text().splitlines()]
    spans = [s for d in docs for rs in d["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    scope = docs[0]["resourceSpans"][0]["scopeSpans"][0]["scope"]
    assert scope == {"name": "acsr_instrumentation", "version": acsr_instrumentation.__version__}
    by_name = {s["name"]: s for s in spans}
    turn_span, intent, tool = by_name["invoke_agent support-agent"], by_name["acsr.intent_classified"], \
        by_name["execute_tool order_card"]
    assert len(turn_span["spanId"]) == 16 and len(turn_span["traceId"]) == 32
    assert intent["parentSpanId"] == turn_span["spanId"] == tool["parentSpanId"]
    assert intent["endTimeUnixNano"] == str(int((T0 + timedelta(seconds=1)).timestamp()) * 10**9)
    assert int(intent["endTimeUnixNano"]) - int(intent["startTimeUnixNano"]) == 120_000_000
    attrs = {a["key"]: a["value"] for a in intent["attributes"]}
    assert attrs["acsr.turn"] == {"intValue": "2"}
    assert attrs["acsr.intent.confidence"] == {"doubleValue": 0.75}
    assert attrs["gen_ai.conversation.id"] == {"stringValue": "C1"}
    assert attrs["gen_ai.usage.input_tokens"] == {"intValue": "30"}
    tool_attrs = {a["key"]: a["value"] for a in tool["attributes"]}
    assert tool_attrs["gen_ai.operation.name"] == {"stringValue": "execute_tool"}
    assert tool_attrs["gen_ai.tool.name"] == {"stringValue": "order_card"}

    out = otlp_acsr.convert([path], tmp_path / "landing")
    assert out["rows"] == {"agent_events": {"2026-11-20": 2}}
    assert out["skipped"] == {"turn span (invoke_agent)": 1}
    rows = [json.loads(x) for x in (tmp_path / "landing/agent_events/dt=2026-11-20/otlp-acsr.jsonl").read_text()
            .splitlines()]
    assert rows[0]["event_id"] == intent["spanId"]  # no acsr.event.id: the span id
    assert rows[0]["latency_ms"] == 120.0 and rows[0]["turn"] == 2 and rows[0]["model"] == "clf"
    assert rows[1]["action_args"] == {"card_last4": "0042"} and rows[1]["ts"] == "2026-11-20T09:00:02.000000+00:00"


def test_converter_reads_foreign_spans_by_their_genai_operation_and_rejects_non_otlp(tmp_path):
    span = {"traceId": "a" * 32, "spanId": "b" * 16, "name": "chat gpt-4.1", "startTimeUnixNano": "1795165200000000000",
            "endTimeUnixNano": "1795165201500000000",
            "attributes": [{"key": "gen_ai.conversation.id", "value": {"stringValue": "C9"}},
                           {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                           {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4.1"}},
                           {"key": "http.method", "value": {"stringValue": "POST"}}]}
    other = {**span, "spanId": "c" * 16, "name": "GET /health", "attributes": []}
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [span, other]}]}]}
    f = tmp_path / "pretty.json"
    f.write_text(json.dumps(doc, indent=2))
    out = otlp_acsr.convert([f], tmp_path / "landing")
    assert out["skipped"] == {"no acsr.event.type and no GenAI operation that maps to an event": 1}
    [row] = [json.loads(x) for x in next((tmp_path / "landing/agent_events").rglob("*.jsonl")).read_text().splitlines()]
    assert row["event_type"] == "agent_response" and row["model"] == "gpt-4.1" and row["latency_ms"] == 1500.0

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(doc) + "\n{not json\n")
    with pytest.raises(otlp_acsr.OtlpError, match=r"bad.jsonl:2: not JSON"):
        otlp_acsr.convert([bad], tmp_path / "landing2")
    bad.write_text('{"spans": []}\n')
    with pytest.raises(otlp_acsr.OtlpError, match="no resourceSpans"):
        otlp_acsr.convert([bad], tmp_path / "landing2")
    assert not (tmp_path / "landing2").exists()


def test_exporter_is_the_collectors_file_format_for_otlp_tools():
    """The field names, enums and value types parse into the OTLP protobuf message (ids are hex, as OTLP/JSON
    wants: protobuf's own mapping would read them as base64, so they are not compared here)."""
    json_format = pytest.importorskip("google.protobuf.json_format")
    trace_service = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
    exp = Capture()
    inst = Instrumentation.with_exporter(exp, batch=False)
    tiny_agent(inst, MESSAGES[:1])
    doc = acsr_instrumentation.encode_spans(exp.spans)
    msg = json_format.ParseDict(doc, trace_service.ExportTraceServiceRequest())
    spans = msg.resource_spans[0].scope_spans[0].spans
    assert len(spans) == 7 and {s.name for s in spans} >= {"chat m", "execute_tool freeze_card", "retrieval kb"}
    assert isinstance(OtlpJsonFileExporter, type)
