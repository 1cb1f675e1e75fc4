"""The sample generator's rows as vendor payloads: what a Zendesk account and an OpenTelemetry-instrumented agent
would hold for the same days, so the demo (`make demo SOURCE=zendesk+otlp`) and the end-to-end test run the
night from the vendors' shapes (docs/sources.md).

- crm_cases -> Zendesk tickets (one snapshot per day, as a nightly pull sees them), metric sets, status events
  (the reopens), satisfaction ratings (CSAT 4-5 good, 1-2 bad, 3 offered and not answered), Help Center
  articles (the KB snapshot of the last day). The team's own data rides in custom fields (CUSTOM_FIELDS), read
  by the demo mapping `zendesk_demo.yaml`, which `extends: zendesk`.
- agent_events and overrides -> OTLP JSON lines (the file exporter's format), one trace per conversation with an
  `invoke_agent` parent span; tool calls, answers and retrievals are named by the GenAI conventions only
  (`execute_tool <tool>`, `chat <model>`, `retrieval`) so the mapping's defaults are exercised; the rest carry
  `acsr.event.type`.
- outcome_checks (and any source no chosen system feeds) are copied as contract files, with their case ids as
  ticket ids when Zendesk holds the cases.

Zendesk ticket ids are integers: a case id becomes `ticket_id(case_id)` everywhere (a stable hash).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

CUSTOM_FIELDS = {"category": 360000000001, "ces": 360000000002, "handle_time_s": 360000000003,
                 "customer_ref": 360000000004, "escalation_reason": 360000000005}
DEMO_MAPPING = Path(__file__).parent / "standins" / "zendesk_demo.yaml"


def ticket_id(case_id: str) -> int:
    return int(hashlib.sha1(case_id.encode()).hexdigest()[:10], 16)


def _hex(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _z(ts: datetime | None) -> str | None:
    return None if ts is None else ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _nanos(ts: datetime) -> int:
    return int(ts.timestamp()) * 10**9 + ts.microsecond * 1000


def read_contract_rows(landing: str, source: str, day: str) -> list[dict]:
    """The readable rows of a generated day, through the land stage's own readers (a temporary lake)."""
    import duckdb
    from feedback_loop.ingest.land import land_source
    from feedback_loop.settings import Settings

    tmp = tempfile.mkdtemp(prefix="acsr-vendor-")
    try:
        s = Settings.load(landing=landing, lake=tmp, warehouse=os.path.join(tmp, "w.duckdb"), missing_source="empty")
        res = land_source(s, source, day)
        if not res.rows_read:
            return []
        rel = duckdb.sql(f"SELECT * EXCLUDE (_row_id, _extra, _parse_error, _type_errors, _raw_text, _source_file, "
                         f"_line) FROM '{res.path}' WHERE _parse_error IS NULL AND _type_errors IS NULL ORDER BY _row_id")
        cols = rel.columns
        return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------------- Zendesk
def zendesk_payloads(landing: str, days: list[str]) -> dict:
    data = {"tickets": [], "metric_sets": [], "ticket_events": [], "satisfaction_ratings": [], "articles": []}
    event_id = 0
    for day in days:
        for c in read_contract_rows(landing, "crm_cases", day):
            tid = ticket_id(c["case_id"])
            tags = list(c.get("tags") or [])
            if c.get("resolved_by") == "ai":
                tags.append("ai_resolved")
            if c.get("escalated"):
                tags.append("escalated")
            custom = {"category": c.get("category"), "handle_time_s": c.get("handle_time_s"),
                      "customer_ref": c["customer_id"], "escalation_reason": c.get("escalation_reason"), "ces": None}
            data["tickets"].append({
                "url": f"https://acme.zendesk.com/api/v2/tickets/{tid}.json", "id": tid,
                "external_id": c.get("conversation_id"),
                "via": {"channel": {"chat": "native_messaging"}.get(c["channel"], c["channel"]),
                        "source": {"from": {}, "to": {}, "rel": None}},
                "created_at": _z(c["created_at"]), "updated_at": _z(c["updated_at"]), "type": "question",
                "subject": f"Case {c['case_id']}", "description": "", "priority": "normal",
                "status": c["status"], "requester_id": int("".join(ch for ch in c["customer_id"] if ch.isdigit()) or 0),
                "assignee_id": None, "group_id": None, "tags": sorted(set(tags)),
                "custom_fields": [{"id": CUSTOM_FIELDS[k], "value": v} for k, v in custom.items()],
                "satisfaction_rating": None,
            })
            data["metric_sets"].append({
                "id": tid + 1, "ticket_id": tid, "reopens": c.get("reopen_count") or 0,
                "solved_at": _z(c.get("resolved_at")), "created_at": _z(c["created_at"]), "updated_at": _z(c["updated_at"]),
                "full_resolution_time_in_minutes": {"calendar": None, "business": None},
            })
            reopened = c.get("last_reopened_at")
            if reopened is not None and reopened.astimezone(UTC).date().isoformat() == day:
                event_id += 1
                data["ticket_events"].append({
                    "id": event_id, "ticket_id": tid, "timestamp": int(reopened.timestamp()), "created_at": _z(reopened),
                    "updater_id": None, "via": "Web form", "event_type": "Audit",
                    "child_events": [{"id": event_id * 10, "field_name": "status", "value": "open",
                                      "previous_value": "solved", "event_type": "Change"}]})
        for s in read_contract_rows(landing, "surveys", day):
            if s["kind"] != "csat":
                continue  # CES: the demo account has no CES survey field filled
            score = "good" if s["score"] >= 4 else "bad" if s["score"] <= 2 else "offered"
            data["satisfaction_ratings"].append({
                "url": "", "id": ticket_id(s["survey_id"]), "assignee_id": None, "group_id": None,
                "requester_id": None, "ticket_id": ticket_id(s["case_id"]), "score": score,
                "created_at": _z(s["submitted_at"]), "updated_at": _z(s["submitted_at"]),
                "comment": s.get("comment"), "reason": None})
    for a in read_contract_rows(landing, "kb_articles", days[-1]):
        if a["status"] == "archived":
            continue
        data["articles"].append({
            "id": int("".join(ch for ch in a["article_id"] if ch.isdigit())), "title": a["title"],
            "name": a["title"], "body": a.get("body"), "label_names": list(a.get("intents") or []),
            "draft": a["status"] == "draft", "updated_at": _z(a["updated_at"]), "locale": "en-us",
            "section_id": 1, "html_url": f"https://acme.zendesk.com/hc/en-us/articles/{a['article_id']}"})
    return data


# ------------------------------------------------------------------------------------------------------ OTLP
def _attr(key: str, value) -> dict | None:
    if value is None:
        return None
    if isinstance(value, bool):
        v = {"boolValue": value}
    elif isinstance(value, int):
        v = {"intValue": str(value)}
    elif isinstance(value, float):
        v = {"doubleValue": value}
    elif isinstance(value, (dict, list)):
        v = {"stringValue": json.dumps(value)}
    else:
        v = {"stringValue": str(value)}
    return {"key": key, "value": v}


EVENT_ATTRS = {"text": "acsr.text", "intent": "acsr.intent", "confidence": "acsr.intent.confidence",
               "kb_query": "gen_ai.retrieval.query.text", "policy_id": "acsr.policy.id",
               "policy_outcome": "acsr.policy.outcome", "action": "gen_ai.tool.name",
               "action_status": "acsr.action.status", "rating": "acsr.feedback.rating",
               "dwell_ms": "acsr.suggestion.dwell_ms", "model": "gen_ai.response.model", "strategy": "acsr.strategy",
               "mode": "acsr.mode", "input_tokens": "gen_ai.usage.input_tokens",
               "output_tokens": "gen_ai.usage.output_tokens", "latency_ms": "acsr.latency_ms",
               "cost_usd": "acsr.cost_usd", "error_type": "error.type", "error_message": "acsr.error.message",
               "customer_id": "acsr.customer.id", "turn": "acsr.turn"}
OVERRIDE_ATTRS = {k: f"acsr.override.{k}" for k in ("reviewer_id", "stage", "agent_decision", "agent_confidence",
                                                     "human_decision", "rationale", "policy_clause_id", "evidence",
                                                     "outcome")}
CONVENTION_NAMED = {"action_executed": "execute_tool", "agent_response": "chat", "kb_query": "retrieval"}


def _span(trace: str, span_id: str, parent: str | None, name: str, start: datetime, latency_ms, attrs: list) -> dict:
    t0 = _nanos(start)
    end = t0 + int(float(latency_ms or 0) * 1e6)
    return {"traceId": trace, "spanId": span_id, "parentSpanId": parent or "", "name": name, "kind": 1,
            "startTimeUnixNano": str(t0), "endTimeUnixNano": str(end),
            "attributes": [a for a in attrs if a], "status": {}}


def otlp_lines(landing: str, day: str, case_map=ticket_id) -> list[dict]:
    """ExportTraceServiceRequest JSON objects for one day's agent events and overrides."""
    spans = []
    parents: dict[str, tuple] = {}
    for e in read_contract_rows(landing, "agent_events", day):
        conv = e["conversation_id"]
        trace = _hex(conv, 32)
        if conv not in parents:
            parents[conv] = (_hex(conv + "/agent", 16), e["ts"])
            spans.append(_span(trace, parents[conv][0], None, "invoke_agent support_agent", e["ts"], 0,
                               [_attr("gen_ai.operation.name", "invoke_agent"), _attr("gen_ai.agent.name", "support_agent"),
                                _attr("gen_ai.conversation.id", conv)]))
        et = e["event_type"]
        op = CONVENTION_NAMED.get(et)
        attrs = [_attr("gen_ai.conversation.id", conv), _attr("acsr.event.id", e["event_id"]),
                 _attr("acsr.case.id", None if e.get("case_id") is None else str(case_map(e["case_id"])))]
        attrs += [_attr(k, e.get(c)) for c, k in EVENT_ATTRS.items()]
        if e.get("kb_results") is not None:
            attrs.append(_attr("gen_ai.retrieval.documents",
                               [{"id": r["article_id"], "score": r["score"]} for r in e["kb_results"]]))
        if e.get("action_args") is not None:
            attrs.append(_attr("gen_ai.tool.call.arguments", json.loads(e["action_args"])
                               if isinstance(e["action_args"], str) else e["action_args"]))
        if op:
            attrs.append(_attr("gen_ai.operation.name", op))
            name = f"{op} {e.get('action') or e.get('model') or ''}".strip()
        else:
            attrs.append(_attr("acsr.event.type", et))
            name = f"acsr.{et}"
        spans.append(_span(trace, _hex(e["event_id"], 16), parents[conv][0], name, e["ts"], e.get("latency_ms"), attrs))
    for o in read_contract_rows(landing, "overrides", day):
        attrs = [_attr("acsr.event.type", "human_override"), _attr("acsr.override.id", o["override_id"]),
                 _attr("gen_ai.conversation.id", o["conversation_id"]),
                 _attr("acsr.case.id", None if o.get("case_id") is None else str(case_map(o["case_id"])))]
        attrs += [_attr(k, o.get(c)) for c, k in OVERRIDE_ATTRS.items()]
        spans.append(_span(_hex(o["conversation_id"], 32), _hex(o["override_id"], 16), None, "acsr.human_override",
                           o["ts"], 0, attrs))
    resource = {"attributes": [_attr("service.name", "support-agent"), _attr("telemetry.sdk.name", "opentelemetry"),
                               _attr("telemetry.sdk.language", "python")]}
    scope = {"name": "acsr.instrumentation", "version": "0.1.0"}
    return [{"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": scope, "spans": spans[i:i + 500]}]}]}
            for i in range(0, len(spans), 500)]


def write_otlp_files(landing: str, days: list[str], folder: str, case_map=ticket_id) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    out = []
    for day in days:
        path = os.path.join(folder, f"traces-{day}.jsonl")
        with open(path, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(doc, separators=(",", ":")) + "\n" for doc in otlp_lines(landing, day, case_map))
        out.append(path)
    return out


def copy_contract(sample_landing: str, landing: str, source: str, days: list[str], case_map=None) -> None:
    """A source no configured system feeds, copied as contract files (case ids as ticket ids when Zendesk
    holds the cases)."""
    from feedback_loop.ingest import contract
    from feedback_loop.sources.pull import gzip_lines

    json_fields = {f.name for f in contract.SOURCES[source].fields if f.type == contract.JSON}
    for day in days:
        cols = contract.SOURCES[source].columns
        rows = [{c: r.get(c) for c in cols} for r in read_contract_rows(sample_landing, source, day)]
        for r in rows:
            for k, v in r.items():
                if isinstance(v, datetime):
                    r[k] = v.isoformat()
                elif k in json_fields and isinstance(v, str):
                    r[k] = json.loads(v)
            if case_map and r.get("case_id") is not None:
                r["case_id"] = str(case_map(r["case_id"]))
        folder = Path(landing, source, f"dt={day}")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "part-0000.jsonl.gz").write_bytes(gzip_lines(rows))


FED = {"zendesk": ("crm_cases", "surveys", "kb_articles"), "otlp": ("agent_events", "overrides")}


@contextmanager
def vendor_night(data_dir: str, days: list[str], systems: list[str], *, conversations_per_day: int = 300,
                 seed: int = 7, malformed_share: float = 0.0):
    """Generate the sample days, turn them into vendor payloads, start the stand-ins, and point the
    settings (environment) at them: the nightly run then pulls instead of reading the sample's files.
    Sources no chosen system feeds are copied as contract files. Restores the environment on exit."""
    from datetime import date

    from feedback_loop.ingest.contract import SOURCE_NAMES
    from feedback_loop.settings import Settings

    from feedback_loop_sample.generator import generate
    from feedback_loop_sample.standins.zendesk import EMAIL, TOKEN, ZendeskStandIn

    unknown = set(systems) - set(FED)
    if unknown:
        raise ValueError(f"no stand-in for {', '.join(sorted(unknown))}; stand-ins: {', '.join(FED)}")
    from feedback_loop.lake.files import join

    settings = Settings.load()
    for system in systems:  # files of an earlier `make demo` would be landed beside the pulled rows
        for source in FED[system]:
            for day in days:
                folder = join(settings.landing, source, f"dt={day}")
                other = [n for n in (os.listdir(folder) if os.path.isdir(folder) else [])
                         if not n.startswith((system, ".", "_"))]
                if other:
                    raise RuntimeError(f"{folder} already holds {', '.join(other)} (an earlier demo's files?): "
                                       "start from a clean data folder (make clean)")
    sample = os.path.join(data_dir, "sample_exports")
    generate(sample, date.fromisoformat(days[0]), date.fromisoformat(days[-1]),
             conversations_per_day=conversations_per_day, seed=seed, malformed_share=malformed_share)
    case_map = ticket_id if "zendesk" in systems else None
    fed = {s for name in systems for s in FED[name]}
    for source in SOURCE_NAMES:
        if source not in fed:
            copy_contract(sample, settings.landing, source, days, case_map)
    env = {"ACSR_SOURCES": "+".join(systems)}
    stand_in = None
    if "zendesk" in systems:
        stand_in = ZendeskStandIn(zendesk_payloads(sample, days), page_size=100).start()
        env["AIRFLOW_CONN_ACSR_ZENDESK"] = json.dumps({"conn_type": "zendesk", "host": stand_in.url,
                                                       "login": EMAIL, "password": TOKEN})
        env["ACSR_SOURCES_MAPPINGS"] = json.dumps({"zendesk": str(DEMO_MAPPING)})
    if "otlp" in systems:
        folder = os.path.join(data_dir, "otlp_traces")
        shutil.rmtree(folder, ignore_errors=True)
        for day in days:
            write_otlp_files(sample, [day], folder, case_map or (lambda c: c))
        env["ACSR_SOURCES_OTLP_PATH"] = folder
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield {"sample": sample, "stand_in": stand_in, "env": env}
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if stand_in:
            stand_in.stop()


def day_list(start: str, n: int) -> list[str]:
    d = datetime.fromisoformat(start).date()
    return [(d + timedelta(days=i)).isoformat() for i in range(n)]
