"""The row mapper: a vendor's raw records -> the contract's landing rows, from a declarative mapping file.

The mapping file is read by `mapping_file`; its field specs are evaluated with `mapping_spec`. The vendor
fields a mapping does not read are kept under `<system>.<field>` keys, which the land stage puts in `_extra`.
A record the mapping cannot read becomes a line with `_mapping_error` (the vendor stream, the record's id,
the vendor field and the problem) and the record itself: land keeps it as a parse error and the data-quality
stage quarantines it with that text; nothing is dropped.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Callable

from feedback_loop.ingest import contract
from feedback_loop.lake.files import join, write_bytes_atomic
from feedback_loop.settings import Settings
from feedback_loop.sources import pull
from feedback_loop.sources.mapping_file import load_mapping
from feedback_loop.sources.mapping_spec import (
    FUNCTIONS,
    MISSING,
    MappingError,
    MappingFileError,
    convert,
    get_path,
    parse_path,
    remove_path,
)

log = logging.getLogger(__name__)

MAPPING_ERROR = "_mapping_error"  # the key land turns into a parse error (ingest/land.py)

# Streams a system derives from its raw streams before mapping (OTLP: resourceSpans -> one record per span).
DERIVED_STREAMS: dict[str, dict[str, Callable[[Callable[[str], list[dict]]], list[dict]]]] = {}


def _prune(value):
    """Drop the empty dicts and lists that removing the used fields left behind."""
    if isinstance(value, dict):
        out = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in ({}, [])}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


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
        if v is not MISSING and v is not None and v != "":
            value, field = v, p
            break
    if "fn" in spec:
        value = FUNCTIONS[spec["fn"]](value, spec, record, row)
    if value is not None and "map" in spec:
        key = value if isinstance(value, (str, int, float, bool)) else json.dumps(value)
        table = spec["map"]
        hit = table.get(key, table.get(str(key), MISSING)) if isinstance(table, dict) else MISSING
        if hit is MISSING and spec.get("map_passthrough"):
            hit = value
        if hit is MISSING:
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
            if k is not MISSING:
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
            bad.append({MAPPING_ERROR: f"{system} {out['stream']} record {rid if rid is not MISSING else '?'} "
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
