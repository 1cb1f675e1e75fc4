"""Land: read one day's files of one source into a typed Parquet partition of the raw lake.

Every line or record of every file becomes exactly one raw row, including the ones that cannot be
parsed: those keep their text and a `_parse_error`, so the data-quality stage can quarantine them with a
reason instead of losing them. Values that do not fit their contract type become NULL with a note in
`_type_errors`; keys that the contract does not name are kept in `_extra` (a JSON object).
A file that cannot be read at all (a gzip cut short, a CSV without a required column) fails the task with
a message that names the file and the problem.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import date

from . import contract
from .config import Settings
from .contract import Source
from .lake import Lake, is_remote, join

log = logging.getLogger(__name__)

# RFC 3339 date-time with a mandatory offset (a space instead of 'T' and "+00" are accepted, as DuckDB
# and many exporters write them).
RFC3339_WITH_OFFSET = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}(:?\d{2})?)$"
RAW_TEXT_LIMIT = 2000  # characters of an unparseable row kept for the quarantine report


class LandingError(RuntimeError):
    """A landing file or folder that cannot be read; the message names the file and the problem."""


@dataclass
class LandResult:
    source: str
    dt: str
    files: list[dict]
    rows_read: int
    parse_errors: int
    missing_folder: bool
    path: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def landing_dir(settings: Settings, source: str, dt: date | str) -> str:
    return join(settings.landing, source, f"dt={dt}")


def list_landing_files(settings: Settings, source: str, dt: date | str) -> list[str] | None:
    """The data files of one source and day, sorted; None when the day's folder does not exist."""
    folder = landing_dir(settings, source, dt)
    if is_remote(folder):
        import fsspec

        fs, path = fsspec.core.url_to_fs(folder)
        if not fs.exists(path):
            return None
        proto = folder.split("://", 1)[0]
        names = [f"{proto}://{p}" for p in fs.ls(path, detail=False)]
    else:
        if not os.path.isdir(folder):
            return None
        names = [os.path.join(folder, n) for n in os.listdir(folder)]
    out = []
    for name in sorted(names):
        leaf = name.rstrip("/").rsplit("/", 1)[-1]
        if leaf.startswith((".", "_")):  # _SUCCESS markers, .tmp files of an export still being written
            continue
        if is_remote(name) or os.path.isfile(name):
            out.append(name)
    return out


def connect():
    """A fresh in-memory DuckDB connection with the settings every stage expects."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if _lake_on_object_store():
        from .object_store import configure_duckdb

        configure_duckdb(con)
    return con


def _lake_on_object_store() -> bool:
    """The lake or the landing area is an s3:// URL (read from the environment: no Variable look-ups on
    every connection)."""
    from .object_store import uses_object_store

    return uses_object_store(os.environ.get("ACSR_LAKE", ""), os.environ.get("ACSR_LANDING", ""))


def land_source(settings: Settings, source: str, dt: date | str) -> LandResult:
    """Land one source for one day into `<lake>/raw/<source>/dt=<dt>/part.parquet` (idempotent)."""
    src = contract.SOURCES[source]
    dt = str(dt)
    files = list_landing_files(settings, source, dt)
    missing = files is None
    if missing and settings.missing_source != "empty":
        raise LandingError(
            f"{landing_dir(settings, source, dt)}: the folder for source '{source}' and day {dt} does not exist. "
            "Treating this as an outage; set ACSR_MISSING_SOURCE=empty to treat a missing folder as a day "
            "without data."
        )
    con = connect()
    con.execute(
        "CREATE TABLE rows (_source_file VARCHAR, _line BIGINT, _raw VARCHAR, _parse_error VARCHAR)"
    )
    file_stats = []
    for i, path in enumerate(files or []):
        fmt = contract.file_format(path)
        if fmt is None or (fmt == "csv" and not src.csv):
            accepted = ", ".join(s for k, v in contract.FILE_FORMATS.items() if k != "csv" or src.csv for s in v)
            raise LandingError(f"{path}: not a format source '{source}' accepts ({accepted})")
        before = con.execute("SELECT count(*) FROM rows").fetchone()[0]
        try:
            _READERS[fmt](con, src, path, i)
        except LandingError:
            raise
        except Exception as exc:  # DuckDB names the problem; we add the file
            raise LandingError(f"{path}: cannot be read as {fmt}: {exc}") from exc
        n = con.execute("SELECT count(*) FROM rows").fetchone()[0] - before
        file_stats.append({"file": path, "format": fmt, "rows": n})

    lake = Lake(settings.lake)
    target = lake.write_query(con, typed_select(src), "raw", source, dt)
    rows_read, parse_errors = con.execute(
        "SELECT count(*), count(_parse_error) FROM rows"
    ).fetchone()
    con.close()
    return LandResult(source, dt, file_stats, rows_read, parse_errors, missing, target)


def _read_jsonl(con, src: Source, path: str, idx: int) -> None:
    """One row per non-blank line; lines that are not UTF-8 or not JSON objects keep their text."""
    rejects = f"rejects_{idx}"
    con.execute(
        f"""CREATE TEMP TABLE lines_{idx} AS
        SELECT line FROM read_csv('{_q(path)}', columns={{'line': 'VARCHAR'}}, header=false, delim='\\0',
            quote='', escape='', auto_detect=false, ignore_errors=true, store_rejects=true,
            rejects_table='{rejects}', rejects_scan='scan_{idx}', strict_mode=false, max_line_size=67108864, hive_partitioning=false)"""
    )
    con.execute(
        f"""INSERT INTO rows
        SELECT '{_q(path)}', rowid + 1, line,
               CASE WHEN NOT json_valid(line) THEN 'invalid JSON (truncated or not a JSON line)'
                    WHEN json_type(line::JSON) <> 'OBJECT' THEN 'not a JSON object' END
        FROM lines_{idx} WHERE line IS NOT NULL AND trim(line) <> ''"""
    )
    _take_rejects(con, path, rejects)
    con.execute(f"DROP TABLE lines_{idx}")


def _read_csv(con, src: Source, path: str, idx: int) -> None:
    """CSV with a header: every field read as text, malformed records kept with DuckDB's reason."""
    rejects = f"rejects_{idx}"
    rel = (
        f"read_csv('{_q(path)}', header=true, all_varchar=true, ignore_errors=true, store_rejects=true, "
        f"rejects_table='{rejects}', rejects_scan='scan_{idx}', max_line_size=67108864, hive_partitioning=false)"
    )
    cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall()]
    _check_columns(src, path, cols)
    con.execute(f"CREATE TEMP TABLE csv_{idx} AS SELECT to_json(t) AS j FROM {rel} t")
    con.execute(f"INSERT INTO rows SELECT '{_q(path)}', rowid + 1, j, NULL FROM csv_{idx}")
    _take_rejects(con, path, rejects)
    con.execute(f"DROP TABLE csv_{idx}")


def _read_parquet(con, src: Source, path: str, idx: int) -> None:
    rel = f"read_parquet('{_q(path)}', hive_partitioning=false)"
    cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall()]
    _check_columns(src, path, cols)
    con.execute(
        f"INSERT INTO rows SELECT '{_q(path)}', row_number() OVER (), to_json(t), NULL FROM {rel} t"
    )


_READERS = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}


def _check_columns(src: Source, path: str, cols: list[str]) -> None:
    """A tabular file must carry every required column (extra columns are fine and kept)."""
    missing = [f.name for f in src.fields if f.required and f.name not in cols]
    if missing:
        unknown = [c for c in cols if c not in src.columns]
        hint = f"; columns not in the contract: {', '.join(unknown)} (renamed?)" if unknown else ""
        raise LandingError(
            f"{path}: missing required column(s) {', '.join(missing)} for source '{src.name}'{hint}"
        )


def _take_rejects(con, path: str, rejects: str) -> None:
    """Records DuckDB could not read (bad encoding, broken quoting) become rows with a parse error."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [rejects]
    ).fetchone()[0]
    if not exists:
        return
    con.execute(
        f"""INSERT INTO rows
        SELECT '{_q(path)}', line, left(csv_line, {RAW_TEXT_LIMIT}),
               'unreadable record (' || error_type || '): ' || error_message
        FROM (SELECT DISTINCT line, csv_line, error_type, error_message FROM {rejects})"""
    )
    con.execute(f"DROP TABLE {rejects}")


def typed_select(src: Source) -> str:
    """SQL that turns `rows` (raw JSON text per record) into the contract's typed columns."""
    paths = ", ".join(f"'$.\"{f.name}\"'" for f in src.fields)
    core = ", ".join(f"'{f.name}'" for f in src.fields)
    typed, errors = [], []
    for i, f in enumerate(src.fields, start=1):
        text = f"_v[{i}]"
        expr, bad = _typed(f, text)
        typed.append(f"{expr} AS \"{f.name}\"")
        errors.append(f"CASE WHEN {bad} THEN '{f.name}: {_type_note(f)}' END")
    return f"""
    WITH src AS (
        SELECT *, json_extract_string(_j, [{paths}]) AS _v
        FROM (SELECT *, CASE WHEN _parse_error IS NULL THEN _raw END::JSON AS _j FROM rows)
    )
    SELECT row_number() OVER (ORDER BY _source_file, _line) AS _row_id,
           {", ".join(typed)},
           nullif(concat_ws('; ', {", ".join(errors)}), '') AS _type_errors,
           (SELECT CASE WHEN len(ks) > 0 THEN to_json(map_from_entries(list_transform(ks,
                   lambda k: {{'key': k, 'value': json_extract(_j, '$."' || replace(k, '"', '\\"') || '"')}})))::VARCHAR
               END FROM (SELECT list_filter(json_keys(_j), lambda k: NOT list_contains([{core}], k)) AS ks)
           ) AS _extra,
           _parse_error,
           CASE WHEN _parse_error IS NOT NULL THEN left(_raw, {RAW_TEXT_LIMIT}) END AS _raw_text,
           _source_file, _line
    FROM src
    ORDER BY _row_id"""


def _typed(f: contract.Field, text: str) -> tuple[str, str]:
    """(typed expression, 'the value was given but does not fit' predicate) for one field."""
    t = f.type
    if t == contract.STR:
        return text, "false"
    if t in (contract.INT, contract.BOOL):
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
    j = f"""(CASE WHEN json_type(_j, '$."{f.name}"') = 'VARCHAR'
                   THEN CASE WHEN json_valid({text}) THEN {text}::JSON END
              WHEN json_type(_j, '$."{f.name}"') = 'NULL' THEN NULL
              ELSE json_extract(_j, '$."{f.name}"') END)"""
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


def _q(s: str) -> str:
    return s.replace("'", "''")
