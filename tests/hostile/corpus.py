"""The hostile-input corpus: every kind of bad record, for every source and file format it applies to.

A `Kind` makes one record of one source (good or bad, for a given file format) together with what the
pipeline must do with it: stage it (reason None) or quarantine it with an exact `quarantine_reason`.
`write_day` serialises records into landing files (JSON Lines, CSV with any delimiter, Parquet, gzip,
BOM, CRLF, blank lines, truncated last line) and returns, for every record, the (file, line) the raw
row must carry, so a test can check each row's fate and the accounting:

    rows read = rows staged + rows quarantined = records written (non-blank lines / CSV records / rows)
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb
from feedback_loop.ingest import contract

DAY = "2026-11-20"
PREV = "2026-11-19"
CONV = "c1"  # the conversation every good event, override and case refers to
CASE = "k1"  # the case every good survey and outcome check refers to
EXTRA = "vendor_note"  # a column the contract does not name (kept in _extra)

# Free-text fields of every source: where customers and agents write prose (and personal data).
TEXT_FIELDS = {
    "agent_events": ("text", "kb_query", "error_message", "action_status"),
    "crm_cases": ("escalation_reason",),
    "surveys": ("comment",),
    "overrides": ("rationale", "evidence", "agent_decision", "human_decision"),
    "outcome_checks": ("expected_state", "observed_state"),
    "kb_articles": ("title", "body"),
}

HOSTILE_TEXT = (
    "tab\there, nul \x00, bell \x07, esc \x1b[31mred\x1b[0m, cr \r, lf \n, crlf \r\n, "
    "<script>alert('x')</script> <b onclick=\"steal()\">bold</b> &amp; &lt; "
    "line sep \u2028 para sep \u2029 nel \x85 bom \ufeff rtl \u202e emoji \U0001F600 "
    "quote \" backslash \\ comma , semicolon ; pipe | end"
)


def good_row(source: str, i: int, day: str = DAY) -> dict:
    """A valid record of `source` for `day` with a unique id; references point at CONV / CASE."""
    ts = f"{day}T10:{i % 60:02d}:{(i // 60) % 60:02d}Z"
    if source == "agent_events":
        return {"event_id": f"e{i}", "ts": ts, "conversation_id": CONV, "case_id": CASE, "customer_id": "u1",
                "turn": 1, "event_type": "customer_message" if i == 0 else "intent_classified",
                "text": "my card has not arrived", "intent": "card_arrival", "confidence": 0.8,
                "kb_results": [{"article_id": "KB-1", "score": 0.9}], "action_args": {"card": "last4"},
                "mode": "live", "input_tokens": 10, "latency_ms": 12.5}
    if source == "crm_cases":
        return {"case_id": f"k{i + 1}", "customer_id": "u1", "conversation_id": CONV, "channel": "chat",
                "created_at": f"{day}T09:00:00Z", "updated_at": ts, "status": "solved", "resolved_by": "ai",
                "escalated": False, "reopen_count": 0, "handle_time_s": 30.5, "category": "card_arrival",
                "tags": ["card"]}
    if source == "surveys":
        return {"survey_id": f"s{i}", "case_id": CASE, "conversation_id": CONV, "submitted_at": ts,
                "kind": "csat", "score": 4, "comment": "quick and friendly"}
    if source == "overrides":
        return {"override_id": f"o{i}", "ts": ts, "conversation_id": CONV, "case_id": CASE, "reviewer_id": "r1",
                "stage": "intent", "agent_decision": "card_delivery_estimate", "agent_confidence": 0.55,
                "human_decision": "card_arrival", "rationale": "customer asks where the card is",
                "policy_clause_id": "POL-1", "evidence": "tracking shows no dispatch", "outcome": "corrected"}
    if source == "outcome_checks":
        return {"check_id": f"x{i}", "case_id": CASE, "action": "refund", "checked_at": ts,
                "expected_state": "refunded", "observed_state": "refunded", "verified": True}
    if source == "kb_articles":
        return {"article_id": f"KB-{i}", "title": f"Article {i}", "body": "How to track a card",
                "intents": ["card_arrival"], "status": "published", "updated_at": f"{day}T08:00:00Z"}
    raise KeyError(source)


SRC = contract.SOURCES


def _time(source: str) -> str:
    return SRC[source].time_column


def _id(source: str) -> str:
    return SRC[source].id_column


# Per source: a field and a value for each kind of wrong value (absent = the kind does not apply).
STRING_FOR_NUMBER = {"agent_events": "turn", "crm_cases": "reopen_count", "surveys": "score",
                     "overrides": "agent_confidence"}
INT_FIELD = {"agent_events": "turn", "crm_cases": "reopen_count", "surveys": "score"}
DBL_FIELD = {"agent_events": "confidence", "crm_cases": "handle_time_s", "overrides": "agent_confidence"}
BOOL_FIELD = {"crm_cases": "escalated", "outcome_checks": "verified"}
OUT_OF_RANGE = {"agent_events": ("confidence", 1.7), "crm_cases": ("reopen_count", -1), "surveys": ("score", 9),
                "overrides": ("agent_confidence", -0.25)}
BAD_ENUM = {"agent_events": ("event_type", "teleport"), "crm_cases": ("status", "lost"), "surveys": ("kind", "nps"),
            "overrides": ("stage", "vibes"), "kb_articles": ("status", "deleted")}
WRONG_NESTED = {"agent_events": ("kb_results", "KB-1 0.9"), "crm_cases": ("tags", {"a": 1}),
                "kb_articles": ("intents", 5)}
UNKNOWN_REF = {"agent_events": ("conversation_id", "ghost", {"event_type": "agent_response"}),
               "surveys": ("case_id", "nope", {}), "overrides": ("conversation_id", "never-seen", {}),
               "outcome_checks": ("case_id", "zzz", {})}


@dataclass
class Record:
    kind: str
    row: dict | None  # the record's fields (None for records that are only bytes)
    reason: str | None  # the expected quarantine_reason; None = staged
    # Turns the serialised record (bytes, no newline) into the hostile bytes: (line, delimiter) -> bytes.
    mangle: Callable[[bytes, str], bytes] | None = None
    expect: dict = field(default_factory=dict)  # staged column values to check exactly
    last: bool = False  # must be the last line of its file, without a newline (a truncated write)


@dataclass(frozen=True)
class Kind:
    name: str
    formats: frozenset  # "jsonl", "csv", "parquet"
    applies: Callable[[str], bool]
    make: Callable[[str, int], Record]


ALL = frozenset({"jsonl", "csv", "parquet"})
TEXTUAL = frozenset({"jsonl", "csv"})


def _with(source: str, i: int, kind: str, reason: str | None, /, **changes) -> Record:
    row = good_row(source, i)
    row.update(changes)
    return Record(kind, row, reason)


def _drop(source: str, i: int, kind: str, column: str, reason: str) -> Record:
    row = good_row(source, i)
    row.pop(column)
    return Record(kind, row, reason)


def _hostile_text(source: str, i: int) -> Record:
    name = TEXT_FIELDS[source][0]
    rec = _with(source, i, "control_chars_and_html", None, **{name: HOSTILE_TEXT})
    rec.expect = {name: HOSTILE_TEXT}
    return rec


def _other_zone_inside(source: str, i: int) -> Record:
    rec = _with(source, i, "timestamp_other_zone_inside", None, **{_time(source): "2026-11-21T01:00:00+02:00"})
    rec.expect = {_time(source): datetime(2026, 11, 20, 23, 0, tzinfo=UTC)}
    return rec


def _late_inside_allowance(source: str, i: int) -> Record:
    return _with(source, i, "timestamp_late_within_allowance", None, **{_time(source): f"{PREV}T03:00:00Z"})


def _utf8_mangle(line: bytes, delim: str) -> bytes:
    return line.replace(b"BADUTF8", b"bad \xff\xfe utf8")


def _invalid_utf8(source: str, i: int) -> Record:
    rec = _with(source, i, "invalid_utf8", "parse_error", **{TEXT_FIELDS[source][0]: "BADUTF8"})
    rec.mangle = _utf8_mangle
    return rec


def _duplicate(source: str, i: int) -> Record:
    # A second copy of record 0 (the first record of the first file), as a retried export writes it.
    return Record("duplicate_in_file", good_row(source, 0), "duplicate_id")


KINDS: dict[str, Kind] = {k.name: k for k in [
    Kind("good", ALL, lambda s: True, lambda s, i: Record("good", good_row(s, i), None)),
    Kind("extra_column", ALL, lambda s: True,
         lambda s, i: Record("extra_column", {**good_row(s, i), EXTRA: "kept"}, None)),
    Kind("control_chars_and_html", ALL, lambda s: True, _hostile_text),
    # JSON Lines only: lines that are not a JSON object.
    Kind("not_json", frozenset({"jsonl"}), lambda s: True,
         lambda s, i: Record("not_json", None, "parse_error", mangle=lambda line, d: b"this is not json {")),
    Kind("json_array", frozenset({"jsonl"}), lambda s: True,
         lambda s, i: Record("json_array", None, "parse_error", mangle=lambda line, d: b'["an", "array"]')),
    Kind("truncated_last_line", frozenset({"jsonl"}), lambda s: True,
         lambda s, i: Record("truncated_last_line", good_row(s, i), "parse_error",
                             mangle=lambda line, d: line[: len(line) // 2], last=True)),
    Kind("invalid_utf8", TEXTUAL, lambda s: True, _invalid_utf8),
    # CSV only: records with too few or too many fields.
    Kind("csv_missing_fields", frozenset({"csv"}), lambda s: True,
         lambda s, i: Record("csv_missing_fields", good_row(s, i), "parse_error",
                             mangle=lambda line, d: d.encode().join(line.split(d.encode())[:3]))),
    Kind("csv_extra_fields", frozenset({"csv"}), lambda s: True,
         lambda s, i: Record("csv_extra_fields", good_row(s, i), "parse_error",
                             mangle=lambda line, d: line + d.encode() + b"surplus" + d.encode() + b"more")),
    # Wrong types.
    Kind("string_for_number", ALL, lambda s: s in STRING_FOR_NUMBER,
         lambda s, i: _with(s, i, "string_for_number", "type_error", **{STRING_FOR_NUMBER[s]: "three"})),
    Kind("fraction_for_integer", ALL, lambda s: s in INT_FIELD,
         lambda s, i: _with(s, i, "fraction_for_integer", "type_error", **{INT_FIELD[s]: 4.5})),
    Kind("integer_overflow", ALL, lambda s: s in INT_FIELD,
         lambda s, i: _with(s, i, "integer_overflow", "type_error", **{INT_FIELD[s]: 10**25})),
    Kind("nan", ALL, lambda s: s in DBL_FIELD,
         lambda s, i: _with(s, i, "nan", "type_error", **{DBL_FIELD[s]: "NaN"})),
    Kind("infinity", ALL, lambda s: s in DBL_FIELD,
         lambda s, i: _with(s, i, "infinity", "type_error", **{DBL_FIELD[s]: "-Infinity"})),
    Kind("bare_json_infinity", frozenset({"jsonl"}), lambda s: s in DBL_FIELD,
         lambda s, i: Record("bare_json_infinity", {**good_row(s, i), DBL_FIELD[s]: 0.125}, "type_error",
                             mangle=lambda line, d: line.replace(b"0.125", b"Infinity"))),
    Kind("not_a_boolean", ALL, lambda s: s in BOOL_FIELD,
         lambda s, i: _with(s, i, "not_a_boolean", "type_error", **{BOOL_FIELD[s]: "maybe"})),
    Kind("wrong_nested_type", ALL, lambda s: s in WRONG_NESTED,
         lambda s, i: _with(s, i, "wrong_nested_type", "type_error", **{WRONG_NESTED[s][0]: WRONG_NESTED[s][1]})),
    Kind("number_out_of_range", ALL, lambda s: s in OUT_OF_RANGE,
         lambda s, i: _with(s, i, "number_out_of_range", f"out_of_range_{OUT_OF_RANGE[s][0]}",
                            **{OUT_OF_RANGE[s][0]: OUT_OF_RANGE[s][1]})),
    Kind("value_not_in_set", ALL, lambda s: s in BAD_ENUM,
         lambda s, i: _with(s, i, "value_not_in_set", f"bad_{BAD_ENUM[s][0]}", **{BAD_ENUM[s][0]: BAD_ENUM[s][1]})),
    Kind("missing_id", ALL, lambda s: True,
         lambda s, i: _drop(s, i, "missing_id", _id(s), f"missing_{_id(s)}")),
    Kind("missing_timestamp", ALL, lambda s: True,
         lambda s, i: _drop(s, i, "missing_timestamp", _time(s), f"missing_{_time(s)}")),
    # Timestamps.
    Kind("timestamp_without_zone", ALL, lambda s: True,
         lambda s, i: _with(s, i, "timestamp_without_zone", "type_error", **{_time(s): f"{DAY}T10:00:00"})),
    Kind("timestamp_not_a_date", ALL, lambda s: True,
         lambda s, i: _with(s, i, "timestamp_not_a_date", "type_error", **{_time(s): "yesterday at noon"})),
    Kind("timestamp_other_zone_inside", ALL, lambda s: True, _other_zone_inside),
    Kind("timestamp_other_zone_after", ALL, lambda s: True,
         lambda s, i: _with(s, i, "timestamp_other_zone_after", "timestamp_outside_interval",
                            **{_time(s): f"{DAY}T23:30:00-05:00"})),
    Kind("timestamp_in_future", ALL, lambda s: True,
         lambda s, i: _with(s, i, "timestamp_in_future", "timestamp_outside_interval",
                            **{_time(s): "2026-11-23T10:00:00Z"})),
    Kind("timestamp_beyond_lateness", ALL, lambda s: True,
         lambda s, i: _with(s, i, "timestamp_beyond_lateness",
                            None if SRC[s].snapshot else "timestamp_outside_interval",
                            **{_time(s): "2026-11-10T10:00:00Z"})),
    Kind("timestamp_late_within_allowance", ALL, lambda s: True, _late_inside_allowance),
    # Cross-row and cross-source.
    Kind("duplicate_in_file", ALL, lambda s: True, _duplicate),
    Kind("unknown_reference", ALL, lambda s: s in UNKNOWN_REF,
         lambda s, i: _with(s, i, "unknown_reference", f"unknown_{UNKNOWN_REF[s][0]}",
                            **{UNKNOWN_REF[s][0]: UNKNOWN_REF[s][1]}, **UNKNOWN_REF[s][2])),
    Kind("csat_above_scale", ALL, lambda s: s == "surveys",
         lambda s, i: _with(s, i, "csat_above_scale", "score_outside_scale", score=6)),
    Kind("incomplete_triad", ALL, lambda s: s == "overrides",
         lambda s, i: _with(s, i, "incomplete_triad", "incomplete_triad", rationale=None)),
]}


def kinds_for(source: str, fmt: str) -> list[Kind]:
    return [k for k in KINDS.values() if fmt in k.formats and k.applies(source)]


def formats_for(source: str) -> list[str]:
    return ["jsonl", "csv", "parquet"] if SRC[source].csv else ["jsonl", "parquet"]


# -- writing landing files ------------------------------------------------------------------------------


@dataclass
class FileSpec:
    """One landing file: its records and how it is written."""

    name: str  # file name, its extension names the format (.jsonl, .jsonl.gz, .csv, .csv.gz, .parquet)
    records: list[Record]
    newline: str = "\n"
    bom: bool = False
    delimiter: str = ","
    blank_lines: bool = False  # blank lines between records (not records; JSON Lines only)
    trailing_newline: bool = True

    @property
    def fmt(self) -> str:
        return contract.file_format(self.name)


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def _columns(source: str) -> list[str]:
    return [*SRC[source].columns, EXTRA]


def serialise(source: str, spec: FileSpec) -> tuple[bytes, dict[int, Record]]:
    """The file's bytes and {line (JSON Lines) / record number (CSV) / row number (Parquet): record}."""
    records = [r for r in spec.records if not r.last] + [r for r in spec.records if r.last]
    lines: dict[int, Record] = {}
    if spec.fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols = _columns(source)
        table = pa.table({c: pa.array([None if r.row.get(c) is None else _cell(r.row[c]) for r in records],
                                      pa.string()) for c in cols})
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return buf.getvalue(), {n: r for n, r in enumerate(records, start=1)}
    chunks: list[bytes] = []
    number = 0
    if spec.fmt == "csv":
        out = io.StringIO()
        csv.writer(out, delimiter=spec.delimiter, lineterminator="").writerow(_columns(source))
        chunks.append(out.getvalue().encode())
    for i, r in enumerate(records):
        if spec.fmt == "csv":
            out = io.StringIO()
            csv.writer(out, delimiter=spec.delimiter, lineterminator="").writerow(
                [_cell(r.row.get(c)) if r.row else "" for c in _columns(source)])
            line = out.getvalue().encode()
        else:
            line = json.dumps(r.row, ensure_ascii=False).encode() if r.row is not None else b""
            if spec.blank_lines and i:
                chunks.append(b"   ")
                number += 1
        if r.mangle:
            line = r.mangle(line, spec.delimiter)
        chunks.append(line)
        number += 1
        lines[number] = r
    data = spec.newline.encode().join(chunks)
    if spec.trailing_newline and not (records and records[-1].last):
        data += spec.newline.encode()
    if spec.bom:
        data = "\ufeff".encode() + data
    if spec.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    return data, lines


def write_day(landing: str, source: str, specs: list[FileSpec], day: str = DAY) -> dict[tuple[str, int], Record]:
    """Write the files of one source and day; {(path, line): record} for every record written."""
    folder = f"{landing}/{source}/dt={day}"
    os.makedirs(folder, exist_ok=True)
    expected = {}
    for spec in specs:
        path = f"{folder}/{spec.name}"
        data, lines = serialise(source, spec)
        with open(path, "wb") as fh:
            fh.write(data)
        expected.update({(path, n): r for n, r in lines.items()})
    return expected


def write_support(landing: str, source: str, day: str = DAY) -> None:
    """The rows other sources refer to (the opening customer message of CONV, the case CASE)."""
    if source != "agent_events":
        opener = good_row("agent_events", 0, day)
        write_day(landing, "agent_events", [FileSpec("support.jsonl", [Record("good", opener, None)])], day)
    if source != "crm_cases":
        case = good_row("crm_cases", 0, day)  # case k1
        write_day(landing, "crm_cases", [FileSpec("support.jsonl", [Record("good", case, None)])], day)


# -- reading the outcome --------------------------------------------------------------------------------


def rows(path: str, columns: str = "*") -> list[dict]:
    if not os.path.exists(path):
        return []
    rel = duckdb.sql(f"SELECT {columns} FROM read_parquet('{path}') ORDER BY _source_file, _line")
    return [dict(zip(rel.columns, r)) for r in rel.fetchall()]


def outcome(lake: str, source: str, day: str = DAY) -> dict[str, list[dict]]:
    return {layer: rows(f"{lake}/{layer}/{source}/dt={day}/part.parquet") for layer in ("raw", "staged", "quarantine")}


def check_fates(lake: str, source: str, expected: dict[tuple[str, int], Record], day: str = DAY) -> dict:
    """Assert every record's fate (staged, or quarantined with its reason) and the accounting."""
    out = outcome(lake, source, day)
    raw, staged, quarantined = out["raw"], out["staged"], out["quarantine"]
    where = {(r["_source_file"], r["_line"]): ("staged", r) for r in staged}
    for r in quarantined:
        key = (r["_source_file"], r["_line"])
        assert key not in where, f"{key} both staged and quarantined"
        where[key] = ("quarantine", r)
    assert len(raw) == len(expected), f"{source}: raw rows {len(raw)} != records written {len(expected)}"
    assert {(r["_source_file"], r["_line"]) for r in raw} == set(expected), f"{source}: raw rows name other lines"
    assert len(staged) + len(quarantined) == len(raw), f"{source}: staged + quarantined != read"
    problems = []
    for key, rec in sorted(expected.items()):
        layer, row = where.get(key, (None, None))
        if layer is None:
            problems.append(f"{key} {rec.kind}: lost (neither staged nor quarantined)")
        elif rec.reason is None and layer != "staged":
            problems.append(f"{key} {rec.kind}: quarantined as {row['quarantine_reason']} ({row['quarantine_detail']}), "
                            "expected staged")
        elif rec.reason is not None and (layer != "quarantine" or row["quarantine_reason"] != rec.reason):
            got = row["quarantine_reason"] if layer == "quarantine" else "staged"
            problems.append(f"{key} {rec.kind}: {got}, expected {rec.reason}")
        elif rec.reason is not None and not row["quarantine_detail"]:
            problems.append(f"{key} {rec.kind}: quarantined without a detail")
        else:
            for col, value in rec.expect.items():
                if row[col] != value:
                    problems.append(f"{key} {rec.kind}: {col} = {row[col]!r}, expected {value!r}")
    assert not problems, "\n".join(problems)
    return {"read": len(raw), "staged": len(staged), "quarantined": len(quarantined)}
