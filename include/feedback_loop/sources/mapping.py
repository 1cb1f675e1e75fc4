"""The mapping engine: a vendor's raw records -> the contract's landing rows, from a declarative mapping file.

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

A mapping file may `extends: zendesk` (a built-in) and change only some fields: a team's own custom fields,
tool and policy names. The vendor fields a mapping does not read are kept under `<system>.<field>` keys, which
the land stage puts in `_extra`. A record the mapping cannot read becomes a line with `_mapping_error` (the
vendor stream, the record's id, the vendor field and the problem) and the record itself: land keeps it as a
parse error and the data-quality stage quarantines it with that text; nothing is dropped.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from feedback_loop.ingest import contract
from feedback_loop.lake.files import join, write_bytes_atomic
from feedback_loop.settings import Settings
from feedback_loop.sources import pull

log = logging.getLogger(__name__)

MAPPINGS_DIR = Path(__file__).parent / "mappings"
MAPPING_ERROR = "_mapping_error"  # the key land turns into a parse error (ingest/land.py)
_MISSING = object()


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
    """The value at a path, or _MISSING."""
    cur = record
    for step in steps:
        if step[0] == "key":
            if not isinstance(cur, dict) or step[1] not in cur:
                return _MISSING
            cur = cur[step[1]]
        elif step[0] == "index":
            if not isinstance(cur, list) or step[1] >= len(cur):
                return _MISSING
            cur = cur[step[1]]
        else:
            if not isinstance(cur, list):
                return _MISSING
            cur = next((x for x in cur if isinstance(x, dict) and str(x.get(step[1])) == step[2]), _MISSING)
            if cur is _MISSING:
                return _MISSING
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


def _prune(value):
    """Drop the empty dicts and lists that removing the used fields left behind."""
    if isinstance(value, dict):
        out = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in ({}, [])}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


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

# Streams a system derives from its raw streams before mapping (OTLP: resourceSpans -> one record per span).
DERIVED_STREAMS: dict[str, dict[str, Callable[[Callable[[str], list[dict]]], list[dict]]]] = {}

SPEC_KEYS = {"path", "as", "map", "map_default", "default", "required", "fn", "multiply", "only_if", "const",
             "from", "to", "old", "new", "time", "field", "field_key", "tags", "any", "tools", "operations",
             "round", "doc", "map_passthrough", "unreadable", "prefix", "match", "key"}


# ---------------------------------------------------------------------------------------------- mappings
def load_mapping(system: str, settings: Settings | None = None) -> dict:
    """The mapping of a system: the file named in ACSR_SOURCES_MAPPINGS, else the built-in one; a file may
    `extends:` another (a built-in name or a path) and override parts of it."""
    path = (settings.sources_mappings if settings else {}).get(system) if settings else None
    doc = _read_mapping(path or str(MAPPINGS_DIR / f"{system}.yaml"))
    validate_mapping(doc)
    return doc


def _read_mapping(path: str) -> dict:
    import yaml

    if not os.path.exists(path):
        raise MappingFileError(f"mapping file {path} does not exist (built-in mappings: "
                               f"{', '.join(sorted(p.stem for p in MAPPINGS_DIR.glob('*.yaml')))})")
    with open(path, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh) or {}
    base = doc.pop("extends", None)
    if base:
        base_path = base if os.sep in base or base.endswith(".yaml") else str(MAPPINGS_DIR / f"{base}.yaml")
        doc = _merge(_read_mapping(base_path), doc)
    return doc


def _merge(base, over):
    """Deep merge; outputs (a list) are merged by their `name`."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            if k == "fields" and isinstance(base.get(k), dict) and isinstance(v, dict):
                out[k] = {**base[k], **v}  # a field named again is replaced whole, not merged option by option
            else:
                out[k] = _merge(base[k], v) if k in base else v
        return out
    if isinstance(base, list) and isinstance(over, list) and all(isinstance(x, dict) and "name" in x for x in base + over):
        named = {x["name"]: x for x in base}
        for x in over:
            named[x["name"]] = _merge(named[x["name"]], x) if x["name"] in named else x
        return list(named.values())
    return over


def validate_mapping(doc: dict) -> None:
    if not doc.get("system") or not isinstance(doc.get("outputs"), list):
        raise MappingFileError("a mapping needs `system` and a list of `outputs`")
    for out in doc["outputs"]:
        where = f"{doc['system']} output {out.get('name')!r}"
        if out.get("source") not in contract.SOURCES:
            raise MappingFileError(f"{where}: `source` must be one of {', '.join(contract.SOURCE_NAMES)}")
        if not out.get("stream"):
            raise MappingFileError(f"{where}: no `stream`")
        cols = contract.SOURCES[out["source"]].columns
        for name, spec in (out.get("fields") or {}).items():
            if name not in cols:
                raise MappingFileError(f"{where}: `{name}` is not a field of {out['source']}")
            _check_spec(f"{where} field {name}", spec)
        if out.get("where"):
            _check_spec(f"{where} where", out["where"], extra={"in", "not_in"})
        unknown = set(out) - {"name", "source", "stream", "id", "join", "where", "fields", "extra", "unreadable", "doc"}
        if unknown:
            raise MappingFileError(f"{where}: unknown output option(s) {', '.join(sorted(unknown))}")


def _check_spec(where: str, spec, extra=frozenset()) -> None:
    if not isinstance(spec, dict):
        raise MappingFileError(f"{where}: a field spec is a mapping (path, as, map, ...), got {spec!r}")
    unknown = set(spec) - SPEC_KEYS - set(extra)
    if unknown:
        raise MappingFileError(f"{where}: unknown option(s) {', '.join(sorted(unknown))}")
    if "fn" in spec and spec["fn"] not in FUNCTIONS:
        raise MappingFileError(f"{where}: unknown function {spec['fn']!r} ({', '.join(sorted(FUNCTIONS))})")
    for p in [spec["path"]] if isinstance(spec.get("path"), str) else spec.get("path") or []:
        parse_path(p)


def _paths(spec: dict) -> list[str]:
    p = spec.get("path")
    return [] if p is None else [p] if isinstance(p, str) else list(p)


def _value(spec: dict, record: dict, row: dict, name: str):
    """One spec evaluated on one record (with its joins); raises MappingError naming the vendor field."""
    paths = _paths(spec)
    field = paths[0] if paths else name
    value = spec.get("const")
    for p in paths:
        v = get_path(record, parse_path(p))
        if v is not _MISSING and v is not None and v != "":
            value, field = v, p
            break
    if "fn" in spec:
        value = FUNCTIONS[spec["fn"]](value, spec, record, row)
    if value is not None and "map" in spec:
        key = value if isinstance(value, (str, int, float, bool)) else json.dumps(value)
        table = spec["map"]
        hit = table.get(key, table.get(str(key), _MISSING)) if isinstance(table, dict) else _MISSING
        if hit is _MISSING and spec.get("map_passthrough"):
            hit = value
        if hit is _MISSING:
            if "map_default" not in spec:
                raise MappingError(field, f"value {value!r} is not in the mapping's value map "
                                          f"({', '.join(map(str, table))})")
            hit = spec["map_default"]
        value = hit
    value = convert(value, spec.get("as"), field)
    if value is not None and "multiply" in spec:
        value = round(float(value) * float(spec["multiply"]), int(spec.get("round", 6)))
    if value is None and "default" in spec:
        value = spec["default"]
    if value is not None and "prefix" in spec:
        value = f"{spec['prefix']}{value}"
    if (cond := spec.get("only_if")) and row.get(cond["field"]) not in cond["in"]:
        value = None
    if value is None and spec.get("required"):
        raise MappingError(field, "is missing or null and the contract requires "
                                  f"`{name}`" if paths else f"gives no value for required `{name}`")
    return value


def map_records(doc: dict, out: dict, records: list[dict], joins: dict[str, list[dict]]) -> tuple[list, list, int]:
    """(rows, unmappable lines, skipped) of one output."""
    system = doc["system"]
    id_path = parse_path(out.get("id", "id"))
    indexes = {}
    for name, j in (out.get("join") or {}).items():
        idx: dict = {}
        for r in joins[j["stream"]]:
            k = get_path(r, parse_path(j["key"]))
            if k is not _MISSING:
                idx.setdefault(str(k), []).append(r)
        indexes[name] = (j, idx)
    fields = out.get("fields") or {}
    order = [c for c in contract.SOURCES[out["source"]].columns if c in fields]
    rows, bad, skipped = [], [], 0
    used = [parse_path(p) for spec in fields.values() for p in _paths(spec)]
    used += [parse_path(p) for p in _paths(out.get("where") or {})]
    for raw in records:
        if "_unreadable_line" in raw:  # a line of a vendor file that is not JSON (OTLP files, export files)
            if out.get("unreadable", "quarantine") == "quarantine":
                bad.append({MAPPING_ERROR: f"{system} {out['stream']}: line {raw.get('_line')} of "
                                           f"{raw.get('_file')} is not JSON (a write cut short?)",
                            "_vendor_stream": out["stream"], "_vendor_record": raw})
            else:
                skipped += 1
            continue
        rec = dict(raw)
        for name, (j, idx) in indexes.items():
            hits = idx.get(str(get_path(raw, parse_path(j["by"]))), [])
            rec[name] = hits if j.get("many") else (hits[0] if hits else None)
        rid = get_path(raw, id_path)
        try:
            if w := out.get("where"):
                v = _value(w, rec, {}, "where")
                if ("in" in w and v not in w["in"]) or ("not_in" in w and v in w["not_in"]):
                    skipped += 1
                    continue
            row: dict = {}
            for name in order:
                row[name] = _value(fields[name], rec, row, name)
        except MappingError as exc:
            bad.append({MAPPING_ERROR: f"{system} {out['stream']} record {rid if rid is not _MISSING else '?'} "
                                       f"(mapping output {out.get('name', out['source'])}): {exc}",
                        "_vendor_stream": out["stream"], "_vendor_record": raw})
            continue
        if out.get("extra", True):
            rest = copy.deepcopy(raw)
            for steps in used:
                remove_path(rest, steps)
            for k, v in _prune(rest).items():
                if v is not None:
                    row[f"{system}.{k}"] = v
        rows.append(row)
    return rows, bad, skipped


def contract_file(settings: Settings, source: str, dt: str, system: str, unmappable: bool = False) -> str:
    return join(settings.landing, source, f"dt={dt}", f"{system}{'-unmappable' if unmappable else ''}.jsonl.gz")


def map_day(settings: Settings, system: str, dt: str) -> dict:
    """Map a complete pull of the day into the contract's landing files `<landing>/<source>/dt=D/<system>.jsonl.gz`
    (and `<system>-unmappable.jsonl.gz` for the records it cannot read); each file replaced atomically."""
    doc = load_mapping(system, settings)
    if doc["system"] != system:
        raise MappingFileError(f"the mapping for {system} says `system: {doc['system']}`")
    cache: dict[str, list[dict]] = {}

    def stream(name: str) -> list[dict]:
        if name not in cache:
            derived = DERIVED_STREAMS.get(system, {})
            cache[name] = derived[name](stream) if name in derived else pull.read_stream(settings, system, dt, name)
        return cache[name]

    by_source: dict[str, tuple[list, list]] = {}
    summary: dict = {}
    for out in doc["outputs"]:
        joins = {j["stream"]: stream(j["stream"]) for j in (out.get("join") or {}).values()}
        rows, bad, skipped = map_records(doc, out, stream(out["stream"]), joins)
        acc = by_source.setdefault(out["source"], ([], []))
        acc[0].extend(rows)
        acc[1].extend(bad)
        summary[out.get("name", out["source"])] = {"source": out["source"], "rows": len(rows),
                                                    "unmappable": len(bad), "skipped": skipped}
    files = {}
    for source, (rows, bad) in by_source.items():
        write_bytes_atomic(contract_file(settings, source, dt, system), pull.gzip_lines(rows))
        bad_path = contract_file(settings, source, dt, system, unmappable=True)
        if bad:
            write_bytes_atomic(bad_path, pull.gzip_lines(bad))
        elif os.path.exists(bad_path):
            os.remove(bad_path)
        files[source] = {"rows": len(rows), "unmappable": len(bad)}
    log.info("%s %s mapped: %s", system, dt, files)
    return {"system": system, "dt": dt, "outputs": summary, "sources": files}


def sources_fed_by(system: str, settings: Settings | None = None) -> list[str]:
    return sorted({o["source"] for o in load_mapping(system, settings)["outputs"]})
