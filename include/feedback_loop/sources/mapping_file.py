"""Reading a mapping file: the built-in or configured YAML, its `extends:` chain, and its validation.

A mapping file may `extends: zendesk` (a built-in) and change only some fields: a team's own custom fields,
tool and policy names. A file that names an unknown contract field, source, function or option is refused
with a MappingFileError before any record is mapped.
"""

from __future__ import annotations

import os
from pathlib import Path

from feedback_loop.ingest import contract
from feedback_loop.settings import Settings
from feedback_loop.sources.mapping_spec import FUNCTIONS, SPEC_KEYS, MappingFileError, parse_path

MAPPINGS_DIR = Path(__file__).parent / "mappings"


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


def sources_fed_by(system: str, settings: Settings | None = None) -> list[str]:
    return sorted({o["source"] for o in load_mapping(system, settings)["outputs"]})
