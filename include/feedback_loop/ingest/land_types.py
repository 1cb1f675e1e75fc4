"""The typed SELECT that turns landed rows into the raw partition: each contract field cast to its type
(a value that does not fit becomes NULL with a note in `_type_errors`), unknown keys kept in `_extra`.
"""

from __future__ import annotations

from feedback_loop.ingest import contract
from feedback_loop.ingest.contract import Source

# RFC 3339 date-time with a mandatory offset (a space instead of 'T' and "+00" are accepted, as DuckDB
# and many exporters write them).
RFC3339_WITH_OFFSET = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}(:?\d{2})?)$"
RAW_TEXT_LIMIT = 2000  # characters of an unparseable row kept for the quarantine report


def typed_select(src: Source, fast: list | tuple = (), *, only_fast: bool = False) -> str:
    """SQL that turns `rows` (raw JSON text per record) and the fast path's tables into the contract's
    typed columns, numbered in (file, line) order.

    `only_fast`: the day is one file, all in the fast path's one table (`rows` is empty). Its rows are
    already in line order, and `_row_id` = `_line`: no window and no sort of the wide rows (a third of
    the write); the scan keeps the table's order (DuckDB's preserve_insertion_order)."""
    paths = ", ".join(f"'$.\"{f.name}\"'" for f in src.fields)
    core = ", ".join(f"'{f.name}'" for f in src.fields)
    # Nested values are extracted once per row (every json_* call parses the whole record again).
    nested = [f for f in src.fields if f.type not in _SCALAR_TYPES]
    nested_col = (", json_extract(_j, [" + ", ".join(f"'$.\"{f.name}\"'" for f in nested) + "]) AS _n") if nested else ""
    # A plain expression, not a scalar subquery: DuckDB decorrelated that into a join on the whole record
    # text, which held every record in a hash table.
    extra_keys = f"list_filter(json_keys(_j), lambda k: NOT list_contains([{core}], k))"
    slow_extra = f"""CASE WHEN len({extra_keys}) > 0 THEN to_json(map_from_entries(list_transform({extra_keys},
                   lambda k: {{'key': k, 'value': json_extract(_j, '$."' || replace(k, '"', '\\"') || '"')}})))::VARCHAR
           END"""
    parts = [f"""
    SELECT {_typed_columns(src, lambda i, f: f"_v[{i}]", lambda f: f"_n[{nested.index(f) + 1}]")},
           {slow_extra} AS _extra,
           _parse_error,
           CASE WHEN _parse_error IS NOT NULL THEN left(_raw, {RAW_TEXT_LIMIT}) END AS _raw_text,
           _source_file, _line
    FROM (SELECT *, json_extract_string(_j, [{paths}]) AS _v{nested_col}
          FROM (SELECT *, CASE WHEN _parse_error IS NULL THEN _raw END::JSON AS _j FROM rows))"""]
    for path, table, extra, _, line in fast:  # scalars as VARCHAR, nested values as JSON (_read_jsonl_fast)
        def text(i, f):
            return f"json_extract_string({_ident(f.name)}, '$')" if f in nested else _ident(f.name)

        parts.append(f"""
    SELECT {_typed_columns(src, text, lambda f: _ident(f.name))},
           {extra} AS _extra, NULL::VARCHAR AS _parse_error, NULL::VARCHAR AS _raw_text,
           '{_q(path)}' AS _source_file, {line} AS _line
    FROM {table}""")
    names = ", ".join(_ident(f.name) for f in src.fields)
    if only_fast:
        return f"""
    SELECT _line AS _row_id, {names}, _type_errors, _extra, _parse_error, _raw_text, _source_file, _line
    FROM ({parts[1]})"""
    return f"""
    SELECT row_number() OVER (ORDER BY _source_file, _line) AS _row_id,
           {names}, _type_errors, _extra, _parse_error, _raw_text, _source_file, _line
    FROM ({" UNION ALL ".join(parts)})
    ORDER BY _row_id"""


def _typed_columns(src: Source, text_of, value_of) -> str:
    """The contract's typed columns and `_type_errors`, from each field's text and (nested) JSON value."""
    typed, errors = [], []
    for i, f in enumerate(src.fields, start=1):
        expr, bad = _typed(f, text_of(i, f), value_of(f) if f.type not in _SCALAR_TYPES else None)
        typed.append(f"{expr} AS \"{f.name}\"")
        errors.append(f"CASE WHEN {bad} THEN '{f.name}: {_type_note(f)}' END")
    return f"{', '.join(typed)}, nullif(concat_ws('; ', {', '.join(errors)}), '') AS _type_errors"


_SCALAR_TYPES = (contract.STR, contract.INT, contract.BOOL, contract.DBL, contract.TS)


def _typed(f: contract.Field, text: str, value: str | None = None) -> tuple[str, str]:
    """(typed expression, 'the value was given but does not fit' predicate) for one field.

    `text` is the field's value as text; `value`, for nested types, the field's JSON value."""
    t = f.type
    if t == contract.STR:
        return text, "false"
    if t == contract.INT:
        # DuckDB rounds '4.5' to 5 when casting text to an integer: accept only integral values.
        expr = f"CASE WHEN TRY_CAST({text} AS DOUBLE) = TRY_CAST({text} AS BIGINT) THEN TRY_CAST({text} AS BIGINT) END"
        return expr, f"({text} IS NOT NULL AND ({expr}) IS NULL)"
    if t == contract.BOOL:
        expr = f"TRY_CAST({text} AS {t})"
        return expr, f"({text} IS NOT NULL AND {expr} IS NULL)"
    if t == contract.DBL:
        cast = f"TRY_CAST({text} AS DOUBLE)"
        return (
            f"CASE WHEN isfinite({cast}) THEN {cast} END",
            f"({text} IS NOT NULL AND NOT coalesce(isfinite({cast}), false))",
        )
    if t == contract.TS:
        expr = f"CASE WHEN regexp_matches({text}, '{RFC3339_WITH_OFFSET}') THEN TRY_CAST({text} AS TIMESTAMPTZ) END"
        return expr, f"({text} IS NOT NULL AND ({expr}) IS NULL)"
    # Nested types: a JSON value, or (from CSV) a string holding JSON.
    value = value or f"""json_extract(_j, '$."{f.name}"')"""
    j = f"""(CASE WHEN json_type({value}) = 'VARCHAR'
                   THEN CASE WHEN json_valid({text}) THEN {text}::JSON END
              WHEN json_type({value}) = 'NULL' THEN NULL
              ELSE {value} END)"""
    if t == contract.JSON:
        expr = f"CASE WHEN json_type({j}) = 'OBJECT' THEN {j} END"
    else:
        expr = f"TRY_CAST({j} AS {t})"
    return expr, f"({text} IS NOT NULL AND ({expr}) IS NULL)"


def _type_note(f: contract.Field) -> str:
    return {
        contract.TS: "not an RFC 3339 timestamp with a UTC offset",
        contract.INT: "not an integer",
        contract.DBL: "not a finite number",
        contract.BOOL: "not a boolean",
        contract.JSON: "not a JSON object",
        contract.STR_LIST: "not a list of strings",
        contract.KB_RESULTS: "not a list of {article_id, score}",
    }.get(f.type, "wrong type")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _q(s: str) -> str:
    return s.replace("'", "''")
