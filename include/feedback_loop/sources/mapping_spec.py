"""The vocabulary of a mapping file's field spec: vendor paths, conversions (`as`) and named functions (`fn`).

A mapping file (YAML, `sources/mappings/<system>.yaml`; docs/sources.md) lists outputs. Each output names
the contract source it feeds, the raw stream it reads, streams joined to it, a `where` that says which records
are rows of this output, and one spec per contract field:

    path: via.channel              # vendor field; a list = first that is not null; a.b, list[key=value], x['a.b']
    as: str|int|float|bool|ts|ns_ts|ms_ts|json|list
    map: {web: chat, email: email}  # value map (statuses, channels, rating scales)
    map_default: other              # for values the map does not name (without it: quarantined, with a reason)
    map_passthrough: true           # values the map does not name are kept as they are
    default: 0                      # when the value is null
    required: true                  # null after all of the above: quarantined, naming the vendor field
    fn: last_transition             # a named function (FUNCTIONS) for what a path cannot say
    multiply: 60                    # numeric scale (minutes -> seconds)
    prefix: "ces-"                  # text put before the value (ids of two outputs of one vendor record)
    only_if: {field: status, in: [solved, closed]}   # null unless another mapped field has one of the values

The row mapper (`feedback_loop.sources.mapping`) evaluates a spec on a record with these pieces; the loader
(`feedback_loop.sources.mapping_file`) checks a file's specs against them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime

MISSING = object()  # what get_path returns when a record has nothing at the path


class MappingError(ValueError):
    """A vendor record the mapping cannot read; `field` is the vendor field at fault."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"field `{field}`: {problem}")
        self.field = field


class MappingFileError(ValueError):
    """A mapping file that is not valid (unknown contract field, source, function or option)."""


# ------------------------------------------------------------------------------------------------ paths
_TOKEN = re.compile(r"""\.?([A-Za-z0-9_$@-]+)|\['([^']*)'\]|\[([A-Za-z0-9_]+)=([^\]]*)\]|\[(\d+)\]""")


def parse_path(path: str) -> list[tuple]:
    """'a.b', "attributes['gen_ai.tool.name']", 'custom_fields[id=123].value' -> steps."""
    steps, pos = [], 0
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if not m or m.end() == pos:
            raise MappingFileError(f"cannot parse the path {path!r} at {path[pos:]!r}")
        if m.group(1) is not None:
            steps.append(("key", m.group(1)))
        elif m.group(2) is not None:
            steps.append(("key", m.group(2)))
        elif m.group(5) is not None:
            steps.append(("index", int(m.group(5))))
        else:
            steps.append(("select", m.group(3), m.group(4)))
        pos = m.end()
    return steps


def get_path(record, steps: list[tuple]):
    """The value at a path, or MISSING."""
    cur = record
    for step in steps:
        if step[0] == "key":
            if not isinstance(cur, dict) or step[1] not in cur:
                return MISSING
            cur = cur[step[1]]
        elif step[0] == "index":
            if not isinstance(cur, list) or step[1] >= len(cur):
                return MISSING
            cur = cur[step[1]]
        else:
            if not isinstance(cur, list):
                return MISSING
            cur = next((x for x in cur if isinstance(x, dict) and str(x.get(step[1])) == step[2]), MISSING)
            if cur is MISSING:
                return MISSING
    return cur


def remove_path(record, steps: list[tuple]) -> None:
    """Remove what a path reads from `record` (for `_extra`: what is left was not used)."""
    cur = record
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        if step[0] == "key":
            if not isinstance(cur, dict) or step[1] not in cur:
                return
            if last:
                del cur[step[1]]
                return
            cur = cur[step[1]]
        elif step[0] == "index":
            if not isinstance(cur, list) or step[1] >= len(cur):
                return
            if last:
                cur[step[1]] = None
                return
            cur = cur[step[1]]
        else:
            if not isinstance(cur, list):
                return
            hit = next((x for x in cur if isinstance(x, dict) and str(x.get(step[1])) == step[2]), None)
            if hit is None:
                return
            if last:
                cur.remove(hit)
                return
            cur = hit


# ------------------------------------------------------------------------------------------- conversions
def to_timestamp(value, field: str) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC).isoformat()
    try:
        text = str(value).strip()
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError("a date without a time")
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise MappingError(field, f"{value!r} is not a timestamp ({exc})") from None
    if parsed.tzinfo is None:
        raise MappingError(field, f"{value!r} has no UTC offset")
    return parsed.isoformat()


def _epoch(value, field: str, per_second: int) -> str:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise MappingError(field, f"{value!r} is not an integer epoch time") from None
    return datetime.fromtimestamp(n // per_second, UTC).replace(
        microsecond=(n % per_second) * 1_000_000 // per_second).isoformat()


def convert(value, kind: str | None, field: str):
    if value is None or kind is None:
        return value
    try:
        if kind == "str":
            return value if isinstance(value, str) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError
            f = float(value)
            if f != int(f):
                raise ValueError
            return int(f)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "yes"):
                return True
            if text in ("false", "0", "no"):
                return False
            raise ValueError
        if kind == "ts":
            return to_timestamp(value, field)
        if kind == "ns_ts":
            return _epoch(value, field, 1_000_000_000)
        if kind == "ms_ts":
            return _epoch(value, field, 1000)
        if kind == "json":
            return json.loads(value) if isinstance(value, str) else value
        if kind == "list":
            if isinstance(value, str):
                value = json.loads(value) if value.startswith("[") else [v for v in value.split(",") if v]
            if not isinstance(value, list):
                raise ValueError
            return [str(v) for v in value]
    except MappingError:
        raise
    except (TypeError, ValueError, OverflowError):
        raise MappingError(field, f"{value!r} is not a {kind}") from None
    raise MappingFileError(f"unknown conversion `as: {kind}`")


# --------------------------------------------------------------------------------------------- functions
def _transitions(events, spec: dict):
    old, new, at = spec.get("old", "previous_value"), spec.get("new", "value"), spec.get("time", "created_at")
    field = spec.get("field")  # e.g. Salesforce CaseHistory.Field = Status
    field_key = spec.get("field_key", "field_name")
    out = []
    for e in events or []:
        if field is not None and e.get(field_key) != field:
            continue
        if e.get(old) in spec["from"] and e.get(new) in spec["to"]:
            out.append(e.get(at))
    return sorted(t for t in out if t is not None)


def fn_last_transition(value, spec: dict, record: dict, row: dict):
    """The time of the last status change from one of `from` to one of `to` (a reopen: solved -> open)."""
    times = _transitions(value, spec)
    return times[-1] if times else None


def fn_count_transitions(value, spec: dict, record: dict, row: dict):
    """How many status changes from one of `from` to one of `to` (reopens, from the vendor's history)."""
    return len(_transitions(value, spec))


def fn_first_tag(value, spec: dict, record: dict, row: dict):
    """The value of the first tag (or label) that the `tags` table names, else `default`."""
    for tag in value or []:
        if tag in spec["tags"]:
            return spec["tags"][tag]
    return spec.get("default")


def fn_has_any(value, spec: dict, record: dict, row: dict):
    """True when the list holds any of `any` (a tag that means escalated)."""
    return any(v in spec["any"] for v in value or [])


def fn_last_match(value, spec: dict, record: dict, row: dict):
    """The `time` of the last item of a list whose fields equal `match` (Intercom: the last `open` part)."""
    hits = [x.get(spec.get("time", "created_at")) for x in value or []
            if isinstance(x, dict) and all(x.get(k) == v for k, v in spec["match"].items())]
    hits = [h for h in hits if h is not None]
    return max(hits) if hits else None


def fn_pluck(value, spec: dict, record: dict, row: dict):
    """One key of every item of a list (Intercom tags: [{name}] -> [name])."""
    return None if value is None else [x.get(spec["key"]) for x in value if isinstance(x, dict)]


def fn_documents(value, spec: dict, record: dict, row: dict):
    """gen_ai.retrieval.documents ([{id, score}], a JSON string or a list) -> [{article_id, score}]."""
    if value is None:
        return None
    docs = json.loads(value) if isinstance(value, str) else value
    if not isinstance(docs, list):
        raise MappingError(spec.get("path", "documents"), "is not a list of {id, score}")
    out = []
    for d in docs:
        if not isinstance(d, dict) or "id" not in d:
            raise MappingError(spec.get("path", "documents"), f"item {d!r} has no id")
        out.append({"article_id": str(d["id"]), "score": None if d.get("score") is None else float(d["score"])})
    return out


def fn_duration_ms(value, spec: dict, record: dict, row: dict):
    """Span duration from OTLP start/end unix nanos (when the span carries no latency attribute)."""
    if value is not None:
        return float(value)
    try:
        return (int(record["endTimeUnixNano"]) - int(record["startTimeUnixNano"])) / 1e6
    except (KeyError, TypeError, ValueError):
        return None


def fn_event_type(value, spec: dict, record: dict, row: dict):
    """The contract's event_type of a span: the explicit attribute, else the team's tool table, else the
    span name / gen_ai.operation.name through the GenAI conventions' table (semconv.SPAN_EVENT_TYPES)."""
    from feedback_loop.sources import semconv

    if value:
        return value
    attrs = record.get("attributes", {})
    tool = attrs.get("gen_ai.tool.name")
    if tool and tool in (spec.get("tools") or {}):
        return spec["tools"][tool]
    op = attrs.get("gen_ai.operation.name") or str(record.get("name", "")).split(" ", 1)[0]
    table = {**semconv.SPAN_EVENT_TYPES, **(spec.get("operations") or {})}
    if op in table:
        return table[op] if table[op] is not None else "__skip__"
    return None


def fn_status_message(value, spec: dict, record: dict, row: dict):
    if value is not None:
        return value
    st = record.get("status") or {}
    return st.get("message") if st.get("code") in (2, "STATUS_CODE_ERROR") else None


FUNCTIONS: dict[str, Callable] = {
    "last_transition": fn_last_transition,
    "count_transitions": fn_count_transitions,
    "first_tag": fn_first_tag,
    "last_match": fn_last_match,
    "pluck": fn_pluck,
    "has_any": fn_has_any,
    "documents": fn_documents,
    "duration_ms": fn_duration_ms,
    "event_type": fn_event_type,
    "status_message": fn_status_message,
}


SPEC_KEYS = {"path", "as", "map", "map_default", "default", "required", "fn", "multiply", "only_if", "const",
             "from", "to", "old", "new", "time", "field", "field_key", "tags", "any", "tools", "operations",
             "round", "doc", "map_passthrough", "unreadable", "prefix", "match", "key"}
