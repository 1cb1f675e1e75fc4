"""OTLP JSON files: the OpenTelemetry Collector file exporter's format, written by the agent itself.

One line per export call, each an `ExportTraceServiceRequest` in the OTLP/JSON mapping
(resourceSpans / scopeSpans / spans; ids as hex strings; times as unix-nano strings; attributes as
`{key, value: {stringValue | intValue | doubleValue | boolValue | arrayValue}}`), so the same files can
be read by the feedback loop's pull, by a Collector's `otlpjsonfile` receiver or by any OTLP tool.

A file is written under `<name>.partial` and renamed to `<name>` when the exporter shuts down: a reader
never sees a file the agent is still writing, and an agent that crashed leaves only a `.partial` file.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

_STATUS = {StatusCode.UNSET: 0, StatusCode.OK: 1, StatusCode.ERROR: 2}


def any_value(v) -> dict:
    """An attribute value as an OTLP/JSON AnyValue (int64 as a decimal string, as proto3 JSON requires)."""
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, (list, tuple)):
        return {"arrayValue": {"values": [any_value(x) for x in v]}}
    return {"stringValue": str(v)}


def key_values(attrs) -> list[dict]:
    return [{"key": k, "value": any_value(v)} for k, v in (attrs or {}).items()]


def encode_spans(spans: Sequence[ReadableSpan]) -> dict:
    """An ExportTraceServiceRequest (OTLP/JSON) of spans, grouped by resource and instrumentation scope."""
    by_resource: dict = {}
    for span in spans:
        res = span.resource
        rkey = id(res)
        scope = span.instrumentation_scope
        skey = (scope.name, scope.version) if scope else ("", None)
        entry = by_resource.setdefault(rkey, (res, {}))
        entry[1].setdefault(skey, []).append(_span(span))
    out = []
    for res, scopes in by_resource.values():
        out.append({
            "resource": {"attributes": key_values(res.attributes if res else {})},
            "scopeSpans": [{"scope": {"name": name, **({"version": version} if version else {})}, "spans": s}
                           for (name, version), s in scopes.items()],
        })
    return {"resourceSpans": out}


def _span(span: ReadableSpan) -> dict:
    ctx = span.get_span_context()
    d = {
        "traceId": f"{ctx.trace_id:032x}",
        "spanId": f"{ctx.span_id:016x}",
        "name": span.name,
        "kind": int(span.kind.value) + 1,  # OTLP's SpanKind counts from UNSPECIFIED = 0
        "startTimeUnixNano": str(span.start_time or 0),
        "endTimeUnixNano": str(span.end_time or 0),
        "attributes": key_values(span.attributes),
    }
    if span.parent is not None:
        d["parentSpanId"] = f"{span.parent.span_id:016x}"
    if span.events:
        d["events"] = [{"timeUnixNano": str(e.timestamp), "name": e.name, "attributes": key_values(e.attributes)}
                       for e in span.events]
    status = {"code": _STATUS.get(span.status.status_code, 0)}
    if span.status.description:
        status["message"] = span.status.description
    d["status"] = status
    return d


class OtlpJsonFileExporter(SpanExporter):
    """Appends each batch of spans as one OTLP/JSON line to `<directory>/<prefix>-<start>-<pid>.jsonl`."""

    def __init__(self, directory: str | os.PathLike, prefix: str = "spans"):
        os.makedirs(directory, exist_ok=True)
        name = f"{prefix}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{id(self):x}.jsonl"
        self.path = os.path.join(os.fspath(directory), name)
        self._partial = self.path + ".partial"
        self._lock = threading.Lock()
        self._fh = None
        self._closed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        line = json.dumps(encode_spans(spans), separators=(",", ":"), ensure_ascii=False) + "\n"
        with self._lock:
            if self._closed:
                return SpanExportResult.FAILURE
            if self._fh is None:
                self._fh = open(self._partial, "a", encoding="utf-8")  # noqa: SIM115 - open until shutdown
            self._fh.write(line)
            self._fh.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Close the file and make it visible under its final name (nothing to rename if nothing was sent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._fh is not None:
                self._fh.close()
                os.replace(self._partial, self.path)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class SafeExporter(SpanExporter):
    """Wraps any exporter so that its failures never reach the agent: swallowed, counted, last one kept."""

    def __init__(self, exporter: SpanExporter):
        self.exporter = exporter
        self.failures = 0  # export calls that raised or reported failure
        self.spans_dropped = 0  # spans of those calls
        self.spans_exported = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.exporter.export(spans)
        except Exception as e:  # noqa: BLE001 - the agent must not see an exporter's failure
            result, err = SpanExportResult.FAILURE, f"{type(e).__name__}: {e}"
        else:
            err = None if result == SpanExportResult.SUCCESS else "exporter reported FAILURE"
        with self._lock:
            if err is None:
                self.spans_exported += len(spans)
            else:
                self.failures += 1
                self.spans_dropped += len(spans)
                self.last_error = err
        return result

    def shutdown(self) -> None:
        try:
            self.exporter.shutdown()
        except Exception as e:  # noqa: BLE001
            with self._lock:
                self.failures += 1
                self.last_error = f"shutdown: {type(e).__name__}: {e}"

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return bool(self.exporter.force_flush(timeout_millis))
        except Exception as e:  # noqa: BLE001
            with self._lock:
                self.failures += 1
                self.last_error = f"force_flush: {type(e).__name__}: {e}"
            return False
