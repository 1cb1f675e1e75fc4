"""OpenTelemetry traces as OTLP JSON files: the OpenTelemetry file exporter's (and the Collector's `file`
exporter's) format, one `ExportTraceServiceRequest` per line (docs/sources.md#opentelemetry).

Spec followed: https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding and the file exporter,
https://opentelemetry.io/docs/specs/otel/protocol/file-exporter/ : `resourceSpans[].scopeSpans[].spans[]`,
ids as hex strings, times as unix nanoseconds in decimal strings, attributes as
`{key, value: {stringValue | intValue | doubleValue | boolValue | arrayValue | kvlistValue | bytesValue}}`
(`intValue` is a decimal string: int64 in JSON). Span names and attributes follow the GenAI semantic
conventions (https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/) and, where the conventions
have nothing (intent, confidence, policy outcome, overrides), the `acsr.*` table of sources/semconv.py.

The pull reads every `*.json`, `*.jsonl` (optionally `.gz`) file under ACSR_SOURCES_OTLP_PATH and keeps the
spans that started in the day's interval, grouped as they came (resource and scope kept); the mapping reads
them through the derived `spans` stream: one flat record per span with its attributes as a plain object.
"""

from __future__ import annotations

import base64
import gzip
import json
import os

from feedback_loop.sources import mapping
from feedback_loop.sources.pull import Puller, PullError

SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")


def any_value(v: dict):
    """An OTLP AnyValue -> a Python value."""
    if not isinstance(v, dict) or not v:
        return None
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        return [any_value(x) for x in (v["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in v:
        return {kv["key"]: any_value(kv.get("value")) for kv in (v["kvlistValue"] or {}).get("values", [])}
    if "bytesValue" in v:
        return base64.b64decode(v["bytesValue"]).hex()
    return None


def attributes(kvs) -> dict:
    return {kv["key"]: any_value(kv.get("value")) for kv in kvs or [] if isinstance(kv, dict) and "key" in kv}


class OTLPFilesPuller(Puller):
    system = "otlp"
    streams = ("resource_spans",)

    def __init__(self, path: str):
        self.path = path

    def files(self) -> list[str]:
        if not os.path.isdir(self.path):
            raise PullError(f"otlp: {self.path} is not a folder (ACSR_SOURCES_OTLP_PATH)")
        out = []
        for root, _, names in os.walk(self.path):
            out += [os.path.join(root, n) for n in names if n.endswith(SUFFIXES) and not n.startswith(".")]
        return sorted(out)

    def pages(self, stream, start, end, cursor):
        lo, hi = int(start.timestamp()) * 10**9, int(end.timestamp()) * 10**9
        for path in self.files():  # one page per file: a retry resumes after the last file written
            if cursor is not None and path <= cursor:
                continue
            opener = gzip.open if path.endswith(".gz") else open
            records, unreadable, latest = [], [], None
            with opener(path, "rt", encoding="utf-8") as fh:
                for number, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        doc = json.loads(line)
                    except ValueError:
                        unreadable.append({"_unreadable_line": line[:10000], "_file": os.path.basename(path),
                                           "_line": number})
                        continue
                    for rs in doc.get("resourceSpans", []) if isinstance(doc, dict) else []:
                        kept = []
                        for ss in rs.get("scopeSpans", []):
                            for s in ss.get("spans", []):
                                latest = max(latest or 0, _start(s) or 0)
                            spans = [s for s in ss.get("spans", []) if _in(s, lo, hi)]
                            if spans:
                                kept.append({**ss, "spans": spans})
                        if kept:
                            records.append({**rs, "scopeSpans": kept})
            # A line that is not JSON (the exporter died mid-write) belongs to the day of the file's latest span
            # (or of the file's modification time): quarantined once, by that day's pull, not every night.
            when = latest or int(os.path.getmtime(path) * 10**9)
            if unreadable and lo <= when < hi:
                records.extend(unreadable)
            yield records, path


def _start(span: dict) -> int | None:
    try:
        return int(span.get("startTimeUnixNano"))
    except (TypeError, ValueError):
        return None


def _in(span: dict, lo: int, hi: int) -> bool:
    try:
        return lo <= int(span.get("startTimeUnixNano")) < hi
    except (TypeError, ValueError):
        return True  # a span without a readable start time goes to the mapping, which quarantines it


def flatten(stream) -> list[dict]:
    """`resource_spans` -> one record per span: ids, name, times, status, attributes (a plain object),
    events, resource and scope. An unreadable line stays one record, for the mapping to quarantine."""
    out = []
    for rs in stream("resource_spans"):
        if "_unreadable_line" in rs:
            out.append(rs)
            continue
        resource = attributes((rs.get("resource") or {}).get("attributes"))
        for ss in rs.get("scopeSpans", []):
            scope = ss.get("scope") or {}
            for s in ss.get("spans", []):
                rec = {k: v for k, v in s.items() if k not in ("attributes", "events")}
                rec["attributes"] = attributes(s.get("attributes"))
                if s.get("events"):
                    rec["events"] = [{**e, "attributes": attributes(e.get("attributes"))} for e in s["events"]]
                rec["resource"] = resource
                rec["scope"] = {k: scope.get(k) for k in ("name", "version") if scope.get(k)}
                out.append(rec)
    return out


def make_puller(settings, conn=None) -> Puller:
    if not settings.sources_otlp_path:
        raise PullError("otlp: set ACSR_SOURCES_OTLP_PATH to the folder the OTLP file exporter writes to")
    return OTLPFilesPuller(settings.sources_otlp_path)


mapping.DERIVED_STREAMS["otlp"] = {"spans": flatten}
