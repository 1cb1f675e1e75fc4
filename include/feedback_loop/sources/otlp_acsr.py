"""OTLP JSON spans with the `acsr.*` attributes -> contract rows of agent_events and overrides, as landing files.

The trace pull's built-in preset for agents instrumented with the project's instrumentation package
(instrumentation/, docs/instrumentation.md): no mapping work. Reads the OpenTelemetry file exporter's format
(one ExportTraceServiceRequest per line, or one per file), turns each decision-point span into one contract
row (`sources/semconv.py` says which attribute is which field) and writes them as the JSON Lines files `land`
reads, one partition per UTC day of the row's timestamp. Nothing is dropped silently: spans that are no row
(a turn's `invoke_agent` parent, a span of another instrumentation) are counted by reason, and a line that is
not OTLP JSON is an error naming the file and line.

Small and self-contained on purpose (pure JSON, no OpenTelemetry import); the sources framework's OTLP
reader will take this over as its `acsr` preset.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from feedback_loop.ingest import contract
from feedback_loop.sources import semconv as sc
from feedback_loop.sources.otlp import attributes  # one OTLP AnyValue decoder for the pull and this converter

FILE_NAME = "otlp-acsr.jsonl"  # the file this preset writes in each landing partition


class OtlpError(ValueError):
    """A file that is not OTLP JSON, with the file and line."""


def iter_spans(paths: Iterable[str | os.PathLike]) -> Iterator[tuple[dict, dict]]:
    """(attributes, span) of every span of the files, in file and line order."""
    for path in paths:
        path = Path(path)
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            text = fh.read()
        docs = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                docs.append((n, json.loads(line)))
            except json.JSONDecodeError as e:
                if n == 1:  # a whole file can be one (pretty-printed) request
                    try:
                        docs = [(1, json.loads(text))]
                        break
                    except json.JSONDecodeError:
                        pass
                raise OtlpError(f"{path}:{n}: not JSON: {e}") from e
        for n, doc in docs:
            if not isinstance(doc, dict) or not isinstance(doc.get("resourceSpans"), list):
                raise OtlpError(f"{path}:{n}: not an OTLP trace export (no resourceSpans)")
            for rs in doc["resourceSpans"]:
                for ss in rs.get("scopeSpans") or []:
                    for span in ss.get("spans") or []:
                        attrs = attributes(span.get("attributes"))
                        yield attrs, span


def _ts(nanos) -> str | None:
    if nanos in (None, "", "0", 0):
        return None
    n = int(nanos)
    return datetime.fromtimestamp(n // 1_000_000_000, UTC).replace(
        microsecond=(n % 1_000_000_000) // 1000).isoformat(timespec="microseconds")


def _event_type(attrs: dict, span: dict) -> str | None:
    if sc.EVENT_TYPE in attrs:
        return attrs[sc.EVENT_TYPE]
    op = attrs.get("gen_ai.operation.name") or (span.get("name") or "").split(" ", 1)[0]
    return sc.SPAN_EVENT_TYPES.get(op)


def _json_attr(value):
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value  # kept as it came: land records the type error and quarantines the row
    return value


def span_row(attrs: dict, span: dict) -> tuple[str | None, dict | None, str]:
    """(source, contract row, reason when no row) of one span."""
    etype = _event_type(attrs, span)
    if etype is None:
        return None, None, ("turn span (invoke_agent)" if (span.get("name") or "").startswith("invoke_agent")
                            else "no acsr.event.type and no GenAI operation that maps to an event")
    ts = _ts(span.get("endTimeUnixNano")) or _ts(span.get("startTimeUnixNano"))
    span_id = span.get("spanId")
    if etype == sc.HUMAN_OVERRIDE:
        row = {
            "override_id": attrs.get(sc.OVERRIDE_ID) or span_id, "ts": ts,
            "conversation_id": attrs.get(sc.CONVERSATION_ID), "case_id": attrs.get(sc.CASE_ID),
            "reviewer_id": attrs.get(sc.OVERRIDE_REVIEWER), "stage": attrs.get(sc.OVERRIDE_STAGE),
            "agent_decision": attrs.get(sc.OVERRIDE_AGENT_DECISION),
            "agent_confidence": attrs.get(sc.OVERRIDE_AGENT_CONFIDENCE),
            "human_decision": attrs.get(sc.OVERRIDE_HUMAN_DECISION), "rationale": attrs.get(sc.OVERRIDE_RATIONALE),
            "policy_clause_id": attrs.get(sc.OVERRIDE_POLICY_CLAUSE), "evidence": attrs.get(sc.OVERRIDE_EVIDENCE),
            "outcome": attrs.get(sc.OVERRIDE_OUTCOME),
        }
        return "overrides", row, ""
    latency = attrs.get(sc.LATENCY_MS)
    if latency is None:
        try:
            dur = (int(span.get("endTimeUnixNano") or 0) - int(span.get("startTimeUnixNano") or 0)) / 1e6
        except ValueError:
            dur = 0
        latency = dur if dur > 0 else None
    docs = _json_attr(attrs.get(sc.KB_RESULTS))
    kb = ([{"article_id": d.get("id"), "score": d.get("score")} if isinstance(d, dict) else d for d in docs]
          if isinstance(docs, list) else docs)
    status = span.get("status") or {}
    error_message = attrs.get(sc.ERROR_MESSAGE)
    if error_message is None and etype == "error":
        error_message = status.get("message")
    row = {
        "event_id": attrs.get(sc.EVENT_ID) or span_id, "ts": ts,
        "conversation_id": attrs.get(sc.CONVERSATION_ID), "case_id": attrs.get(sc.CASE_ID),
        "customer_id": attrs.get(sc.CUSTOMER_ID), "turn": attrs.get(sc.TURN), "event_type": etype,
        "text": attrs.get(sc.TEXT), "intent": attrs.get(sc.INTENT), "confidence": attrs.get(sc.INTENT_CONFIDENCE),
        "kb_query": attrs.get(sc.KB_QUERY), "kb_results": kb, "policy_id": attrs.get(sc.POLICY_ID),
        "policy_outcome": attrs.get(sc.POLICY_OUTCOME), "action": attrs.get(sc.ACTION),
        "action_args": _json_attr(attrs.get(sc.ACTION_ARGS)), "action_status": attrs.get(sc.ACTION_STATUS),
        "rating": attrs.get(sc.RATING), "dwell_ms": attrs.get(sc.DWELL_MS),
        "model": attrs.get(sc.MODEL) or attrs.get(sc.REQUEST_MODEL), "strategy": attrs.get(sc.STRATEGY),
        "mode": attrs.get(sc.MODE), "input_tokens": attrs.get(sc.INPUT_TOKENS),
        "output_tokens": attrs.get(sc.OUTPUT_TOKENS), "latency_ms": latency, "cost_usd": attrs.get(sc.COST_USD),
        "error_type": attrs.get(sc.ERROR_TYPE), "error_message": error_message,
    }
    return "agent_events", row, ""


def convert(paths: Iterable[str | os.PathLike], landing: str | os.PathLike, day: str | None = None) -> dict:
    """Write `<landing>/{agent_events,overrides}/dt=<day>/otlp-acsr.jsonl` from the spans of `paths`.

    With `day` (a pull of that day's traces), every row goes to that partition, as a vendor's export of the
    day would: land checks the timestamps and quarantines those outside the interval with a reason. Without
    it, rows go to the UTC day of their timestamp (a row without one is counted and written nowhere). Each file is written to a temporary name and renamed:
    a re-run replaces it whole. Returns the counts: spans read, rows per source and day, spans that are no row
    by reason."""
    rows: dict[tuple[str, str], list[dict]] = defaultdict(list)
    skipped: Counter = Counter()
    n_spans = 0
    for attrs, span in iter_spans(paths):
        n_spans += 1
        source, row, why = span_row(attrs, span)
        if row is None:
            skipped[why] += 1
            continue
        dt = day or (row["ts"] or "")[:10]
        if not dt:
            skipped[f"{source}: span without a timestamp"] += 1
            continue
        rows[(source, dt)].append(row)
    written = {}
    for (source, dt), part in sorted(rows.items()):
        cols = contract.SOURCES[source].columns
        folder = Path(landing) / source / f"dt={dt}"
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".otlp-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                for r in part:
                    fh.write(json.dumps({c: r.get(c) for c in cols}, ensure_ascii=False, separators=(",", ":")))
                    fh.write("\n")
            os.replace(tmp, folder / FILE_NAME)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.setdefault(source, {})[dt] = len(part)
    return {"spans": n_spans, "rows": written, "skipped": dict(skipped)}
