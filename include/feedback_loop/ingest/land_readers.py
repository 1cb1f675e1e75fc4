"""How land reads each file format into the `rows` table of one landing day (land.py drives it).

JSON Lines: a fast path (read_json with the contract's columns, when every line parses to an object of
few key shapes) and the line path (every line kept as text, parsed one by one, unparseable lines kept with
a `_parse_error`); CSV with a sniffed delimiter: a fast path (read_csv's text fields typed directly, when
no record is rejected) and the line path (each record as a JSON object in `rows`); Parquet. Wide-encoding and zero-byte checks, and the
line/record a DuckDB error points at, so a LandingError names the file and the place.
"""

from __future__ import annotations

import contextlib
import logging
import os

from feedback_loop.ingest.contract import Source
from feedback_loop.ingest.land_types import _SCALAR_TYPES, RAW_TEXT_LIMIT, _ident, _q
from feedback_loop.lake.files import is_remote

log = logging.getLogger(__name__)
MAX_KEY_SHAPES = 1000  # distinct key lists in one JSON Lines file beyond which the fast path is not tried
# A landing record with this key is a vendor record that a source mapping could not read (feedback_loop.sources.
# mapping, issue 16): it lands as a parse error whose text is the mapping's reason, naming the vendor field.
MAPPING_ERROR = "_mapping_error"


class LandingError(RuntimeError):
    """A landing file or folder that cannot be read; the message names the file and the problem."""


class _StreamMismatch(Exception):
    """A streamed fast-path file did not give one record per line: land it by the line path instead."""


def _landed(con, fast: list) -> int:
    """Rows landed so far: the line path's `rows` plus the fast path's records."""
    return con.execute("SELECT count(*) FROM rows").fetchone()[0] + sum(f[3] for f in fast)


def _rejected_any(con, rejects: str) -> bool:
    """Whether a fast path's scan stored any rejected record in `rejects` (a table that may not exist)."""
    exists = con.execute(f"SELECT count(*) FROM duckdb_tables() WHERE table_name = '{rejects}'").fetchone()[0]
    return bool(exists and con.execute(f"SELECT count(*) FROM {rejects}").fetchone()[0])


STREAM_LINE = '"__acsr_line"'  # the line number column of a streamed fast-path file


def _read_jsonl_fast(con, src: Source, path: str, idx: int, stream: bool = False) -> tuple | None:
    """Land a JSON Lines file whose records are all clean with one JSON parse per record.

    Returns (table, SQL of `_extra`) when the file went this way, None when the caller must take the
    line path (`_read_jsonl`), which gives every line its row and its problem. The line path parses each
    record about six times (validity, type, contract values, keys and values of `_extra`, nested
    values); DuckDB's `read_json` parses it once, and landing was 9x a bare `read_json` (see
    docs/benchmark.md). Here the file is scanned twice. First as lines, with the line path's own reader
    (same splitting, same rejects), aggregated: every line must be a JSON object (no blank line either,
    so that record k is line k); its key lists are collected, one per distinct list. Then with
    `read_json`, every contract field typed VARCHAR (nested ones and non-contract keys JSON), so nothing
    is coerced: the values go through the line path's typing SQL. Anything else - an unreadable, blank
    or invalid line, a duplicate key or keys differing only in case, non-contract keys that differ
    between records, too many key lists, a read_json error, a count that does not match - keeps
    nothing and returns None."""

    if is_remote(path):
        return None
    core = [f.name for f in src.fields]
    rejects, table = f"fast_rejects_{idx}", f"json_{idx}"

    def read(stream: bool = stream) -> tuple | None:
        # One parse per line: json_keys raises on a line that is not JSON (the same reader as json_valid,
        # so the same lines), which sends the file to the line path; a non-object gives no keys (an empty
        # list, which `{}` gives too: both go to the line path). Grouped by the key list's 64-bit hash:
        # grouping by the list itself cost a fifth of the scan, and min = max per group (a guard against
        # a collision) half the scan again; two of a file's key lists sharing a hash is a 1e-14 event
        # at 1,000 lists. count(keys) < count(*) is a blank line (NULL) in the group.
        groups = con.execute(
            f"""SELECT any_value(keys), count(keys), count(*)
            FROM (SELECT json_keys(line) AS keys FROM read_csv('{_q(path)}', columns={{'line': 'VARCHAR'}}, header=false, delim='\\0', quote='',
                escape='', auto_detect=false, ignore_errors=true, store_rejects=true, rejects_table='{rejects}',
                rejects_scan='fast_scan_{idx}', strict_mode=false, max_line_size=67108864,
                buffer_size=134217728, hive_partitioning=false))
            GROUP BY hash(keys) LIMIT {MAX_KEY_SHAPES + 1}"""
        ).fetchall()
        if any(keys is None or n_keys != n for keys, n_keys, n in groups):
            return None  # a blank line (no key list)
        shapes = [(keys, n) for keys, _, n in groups]
        if _rejected_any(con, rejects):
            return None
        # A blank line has no key list (NULL), a non-object an empty one
        if not shapes or len(shapes) > MAX_KEY_SHAPES or any(not keys for keys, _ in shapes):
            return None
        if any(MAPPING_ERROR in keys for keys, _ in shapes):
            return None  # a vendor record a source mapping could not read: the line path makes it a parse error
        extras = {tuple(k for k in keys if k not in core) for keys, _ in shapes}
        if len(extras) != 1:
            return None  # `_extra` would differ by record: left to the line path
        (extra,) = extras
        names = [k.lower() for k in core + list(extra)]
        if len(set(names)) < len(names) or any(len({k.lower() for k in keys}) < len(keys) for keys, _ in shapes):
            return None  # a duplicate key (the line path keeps its first value), or keys differing in case
        nested = {f.name for f in src.fields if f.type not in _SCALAR_TYPES}
        # Scalars as VARCHAR: read_json gives the same text as the line path's json_extract_string for
        # every kind of JSON value (strings unescaped; numbers, booleans, objects and arrays as JSON).
        types = {f.name: "JSON" if f.name in nested else "VARCHAR" for f in src.fields} | {k: "JSON" for k in extra}
        cols = "{" + ", ".join(f"'{_q(c)}': '{t}'" for c, t in types.items()) + "}"
        stream = stream and STREAM_LINE.strip('"') not in names
        relation = (f"read_json('{_q(path)}', columns={cols}, format='newline_delimited', records=true, "
                    "ignore_errors=false, hive_partitioning=false, maximum_object_size=67108864)")
        return _fast_table(con, table, "*", relation, stream, sum(n for _, n in shapes), list(extra))

    return _fast_path(con, path, rejects, table, read)


def _fast_table(con, table: str, select: str, relation: str, stream: bool, records: int,
                extra: list[str]) -> tuple | None:
    """A fast path's records as `table`, and what `typed_select` needs of it: (table, SQL of `_extra`,
    records, SQL of `_line`), or None when the table does not hold `records` records.

    Streamed (a day of one file): a view that numbers the records as the reader gives them, in file order
    (row_number() OVER () keeps the scan's order), read when the partition is written; its count is
    checked on the written partition instead."""
    make = f"VIEW {table} AS SELECT row_number() OVER () AS {STREAM_LINE}, " if stream else f"TABLE {table} AS SELECT "
    con.execute(f"CREATE TEMP {make}{select} FROM {relation}")
    line = STREAM_LINE
    if not stream:
        line = "rowid + 1"
        if con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] != records:
            return None
    # The line path's `_extra`: the non-contract keys in record order, each with its JSON value.
    entries = ", ".join(f"{{'key': '{_q(k)}', 'value': {_ident(k)}}}" for k in extra)
    return table, f"to_json(map_from_entries([{entries}]))::VARCHAR" if extra else "NULL::VARCHAR", records, line


def _fast_path(con, path: str, rejects: str, table: str, read) -> tuple | None:
    """What one fast path's `read()` landed, or None, a DuckDB error included (the line path reads the file
    again and names the problem, if there is one). Its rejects table is dropped either way, and its records'
    table or view when it landed nothing."""
    import duckdb

    landed = None
    try:
        landed = read()
    except duckdb.Error as exc:
        log.debug("%s: fast path not taken (%s)", path, exc)
    finally:
        con.execute(f"DROP TABLE IF EXISTS {rejects}")
        if landed is None:
            for (kind,) in con.execute(
                    "SELECT 'VIEW' FROM duckdb_views() WHERE view_name = $name AND NOT internal "
                    "UNION ALL SELECT 'TABLE' FROM duckdb_tables() WHERE table_name = $name", {"name": table}
            ).fetchall():
                con.execute(f"DROP {kind} {table}")
    return landed


def _read_jsonl(con, src: Source, path: str, idx: int) -> None:
    """One row per non-blank line; lines that are not UTF-8 or not JSON objects keep their text.

    A bare carriage return ends a line too (DuckDB's line reader treats CR, LF and CRLF alike), so a
    record with a raw CR inside splits into parts that are each kept as a parse error.
    """
    rejects = f"rejects_{idx}"
    con.execute(
        f"""CREATE TEMP TABLE lines_{idx} AS
        SELECT line FROM read_csv('{_q(path)}', columns={{'line': 'VARCHAR'}}, header=false, delim='\\0',
            quote='', escape='', auto_detect=false, ignore_errors=true, store_rejects=true,
            rejects_table='{rejects}', rejects_scan='scan_{idx}', strict_mode=false, max_line_size=67108864, buffer_size=134217728, hive_partitioning=false)"""
    )
    bad = _reject_records(con, rejects, idx, header_lines=0)
    con.execute(
        f"""INSERT INTO rows
        SELECT '{_q(path)}', {_record_number(bad, "l")}, line,
               CASE WHEN NOT json_valid(line) THEN 'invalid JSON (truncated or not a JSON line)'
                    WHEN json_type(line::JSON) <> 'OBJECT' THEN 'not a JSON object'
                    WHEN contains(line, '"{MAPPING_ERROR}"') AND json_exists(line, '$.{MAPPING_ERROR}')
                    THEN 'vendor record not mapped: ' || json_extract_string(line, '$.{MAPPING_ERROR}') END
        FROM (SELECT rowid + 1 AS _n, line FROM lines_{idx}) l {_record_join(bad, "l")}
        WHERE line IS NOT NULL AND trim(line, ' ' || chr(9)) <> ''"""
    )
    _insert_rejects(con, path, bad)
    con.execute(f"DROP TABLE lines_{idx}")


CSV_DELIMITERS = (",", ";", "\t", "|")


def _read_csv(con, src: Source, path: str, idx: int) -> None:
    """CSV with a header: every field read as text, malformed records kept with DuckDB's reason.

    The dialect is RFC 4180 (quote and escape '"') with the delimiter that splits the header into the
    most contract columns. It is not left to DuckDB's sniffer: the sniffer guesses from a sample (a
    several-megabyte quoted field made it miss the quotes) and, with rejects stored, took time quadratic
    in the length of a long field. `_line` of a CSV row is its record number (1 = the first record after
    the header), which a quoted newline does not shift."""
    rejects = f"rejects_{idx}"
    delim, cols = _csv_header(src, path)
    _check_columns(src, path, cols)
    columns = "{" + ", ".join(f"'{_q(c)}': 'VARCHAR'" for c in cols) + "}"
    rel = (
        f"read_csv('{_q(path)}', header=true, auto_detect=false, columns={columns}, delim='{_q(delim)}', "
        "quote='\"', escape='\"', ignore_errors=true, store_rejects=true, "
        f"rejects_table='{rejects}', rejects_scan='scan_{idx}', max_line_size=67108864, buffer_size=134217728, hive_partitioning=false)"
    )
    con.execute(f"CREATE TEMP TABLE csv_{idx} AS SELECT to_json(t) AS j FROM {rel} t")
    bad = _reject_records(con, rejects, idx, header_lines=1)
    con.execute(
        f"""INSERT INTO rows SELECT '{_q(path)}', {_record_number(bad, "c")}, j, NULL
        FROM (SELECT rowid + 1 AS _n, j FROM csv_{idx}) c {_record_join(bad, "c")}"""
    )
    _insert_rejects(con, path, bad)
    con.execute(f"DROP TABLE csv_{idx}")


def _read_csv_fast(con, src: Source, path: str, idx: int, stream: bool = False) -> tuple | None:
    """Land a CSV file whose records all read cleanly straight from `read_csv`, without the line path.

    Returns what `_read_jsonl_fast` returns, or None when the caller must take `_read_csv` (a record DuckDB
    could not read, or a column named like the stream's line number). The line path turns every record
    into a JSON object (`to_json`), keeps it in the `rows` table and parses it again for each field, then
    sorts the day's rows: at 10 M events the cases' CSV took 22 s of CPU where reading it took 3.4. Here
    the file is read twice: once to count its records and collect DuckDB's rejects (any sends it to the
    line path), then, when the partition is written, as the record's text fields, which the line path's
    typing SQL reads as it reads the JSON object's: a field's text is the same, a nested field's JSON value
    is a JSON string (SQL NULL for an empty field, which that SQL treats as JSON null), a column the file
    lacks is NULL, and `_extra` maps the non-contract columns, in the header's order, to their JSON
    values. tests/ingest/test_land_fast_path.py compares both paths' rows."""

    if is_remote(path):
        return None
    delim, cols = _csv_header(src, path)
    _check_columns(src, path, cols)
    if STREAM_LINE.strip('"') in cols:
        return None
    columns = "{" + ", ".join(f"'{_q(c)}': 'VARCHAR'" for c in cols) + "}"
    options = (f"header=true, auto_detect=false, columns={columns}, delim='{_q(delim)}', quote='\"', escape='\"', "
               "max_line_size=67108864, buffer_size=134217728, hive_partitioning=false")
    rejects, table = f"fast_csv_rejects_{idx}", f"csv_fast_{idx}"

    def read() -> tuple | None:
        records = con.execute(
            f"""SELECT count(*) FROM read_csv('{_q(path)}', {options}, ignore_errors=true, store_rejects=true,
                rejects_table='{rejects}', rejects_scan='fast_csv_scan_{idx}')""").fetchall()[0][0]
        # (fetchall: the rejects table is written when the result is read to its end, not at fetchone)
        if _rejected_any(con, rejects):
            return None
        nested = {f.name for f in src.fields if f.type not in _SCALAR_TYPES}
        present = set(cols)
        fields = [(f"to_json(t.{_ident(f.name)})" if f.name in nested else f"t.{_ident(f.name)}") if f.name in present
                  else ("NULL::JSON" if f.name in nested else "NULL::VARCHAR") for f in src.fields]
        extra = [c for c in cols if c not in src.columns]
        select = ", ".join([f"{v} AS {_ident(f.name)}" for v, f in zip(fields, src.fields)]
                           + [f"to_json(t.{_ident(c)}) AS {_ident(c)}" for c in extra])
        return _fast_table(con, table, select, f"read_csv('{_q(path)}', {options}, ignore_errors=false) t",
                           stream, records, extra)

    return _fast_path(con, path, rejects, table, read)


def _csv_header(src: Source, path: str) -> tuple[str, list[str]]:
    """(delimiter, column names) from a CSV file's first line."""
    import csv

    first = _head(path, 1 << 20, line=True)
    try:
        line = first.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise LandingError(f"{path}: the header line is not UTF-8 ({exc})") from exc
    delim = max(CSV_DELIMITERS, key=lambda d: sum(c.strip().strip('"') in src.columns for c in line.split(d)))
    cols = [c.strip() for c in next(csv.reader([line], delimiter=delim), [])]
    dupes = sorted({c for c in cols if cols.count(c) > 1})
    if dupes:
        raise LandingError(f"{path}: the header names column(s) {', '.join(dupes)} more than once")
    return delim, [c or f"column{i}" for i, c in enumerate(cols)]


def _read_parquet(con, src: Source, path: str, idx: int) -> None:
    rel = f"read_parquet('{_q(path)}', hive_partitioning=false, file_row_number=true)"
    cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall() if r[0] != "file_row_number"]
    _check_columns(src, path, cols)
    record = ", ".join(f"{_ident(c)} := t.{_ident(c)}" for c in cols)
    con.execute(
        f"INSERT INTO rows SELECT '{_q(path)}', file_row_number + 1, to_json(struct_pack({record})), NULL FROM {rel} t"
    )


_READERS = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}


def _locate(path: str, fmt: str, exc: Exception) -> str:
    """Where in the file DuckDB's CSV parser gave up, for the errors that do not say it themselves.

    The strict parser rejects a whole file (rather than one record) for a carriage return that ends no
    line, e.g. an LF followed by a CR; strict mode stays on because without it a record with too many
    fields is silently cut short."""
    if fmt != "csv" or "state machine reached an invalid state" not in str(exc):
        return ""
    import gzip
    import re

    quoted = False  # RFC 4180: '"' opens and closes quoted fields, '""' inside one toggles twice
    opener = gzip.open if path.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            for number, line in enumerate(fh, start=1):
                body = line[:-2] if line.endswith(b"\r\n") else line.rstrip(b"\n")
                for m in re.finditer(rb'["\r]', body):
                    if m.group() == b'"':
                        quoted = not quoted
                    elif not quoted:
                        return f" (line {number}: a carriage return outside quotes that ends no line)"
    except OSError:
        pass
    return ""


def _check_columns(src: Source, path: str, cols: list[str]) -> None:
    """A tabular file must carry every required column (extra columns are fine and kept)."""
    missing = [f.name for f in src.fields if f.required and f.name not in cols]
    if missing:
        unknown = [c for c in cols if c not in src.columns]
        hint = f"; columns not in the contract: {', '.join(unknown)} (renamed?)" if unknown else ""
        raise LandingError(
            f"{path}: missing required column(s) {', '.join(missing)} for source '{src.name}'{hint}"
        )


def _reject_records(con, rejects: str, idx: int, header_lines: int) -> str | None:
    """The records DuckDB could not read (bad encoding, broken quoting, wrong field count), one row each.

    DuckDB logs one reject per problem, so a CSV record short of two fields appears twice: group by
    record and keep the first problem, or the record would be counted twice. Returns the table's name,
    or None when every record was readable."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [rejects]
    ).fetchone()[0]
    if not exists:
        return None
    bad = f"bad_{idx}"
    con.execute(
        f"""CREATE TEMP TABLE {bad} AS
        SELECT line - {header_lines} AS _line, any_value(csv_line) AS csv_line,
               arg_min('unreadable record (' || error_type || '): ' || error_message
                       || CASE WHEN error_type = 'UNQUOTED VALUE' AND csv_line LIKE '%' || chr(10) || '%'
                               THEN ' The open quote runs over ' || (length(csv_line) - length(replace(csv_line, chr(10), '')))
                                    || ' more line(s), which are part of this record.' ELSE '' END,
                       coalesce(column_idx, 0)) AS problem
        FROM {rejects} GROUP BY line"""
    )
    con.execute(f"DROP TABLE {rejects}")
    if not con.execute(f"SELECT count(*) FROM {bad}").fetchone()[0]:
        con.execute(f"DROP TABLE {bad}")
        return None
    # Readable record k comes after the rejects whose number minus their rank is below k: shift it past
    # them, so every row keeps the number of its record in the file.
    con.execute(
        f"""CREATE TEMP TABLE {bad}_shift AS
        SELECT _line - j AS readable_before, max(j) AS shift
        FROM (SELECT _line, row_number() OVER (ORDER BY _line) AS j FROM {bad}) GROUP BY 1"""
    )
    return bad


def _record_number(bad: str | None, alias: str) -> str:
    return f"{alias}._n + coalesce(s.shift, 0)" if bad else f"{alias}._n"


def _record_join(bad: str | None, alias: str) -> str:
    return f"ASOF LEFT JOIN {bad}_shift s ON {alias}._n > s.readable_before" if bad else ""


def _insert_rejects(con, path: str, bad: str | None) -> None:
    """Unreadable records become rows with a parse error and (the start of) their text."""
    if not bad:
        return
    con.execute(
        f"""INSERT INTO rows
        SELECT '{_q(path)}', _line, left(csv_line, {RAW_TEXT_LIMIT}), problem FROM {bad}"""
    )
    con.execute(f"DROP TABLE {bad}")
    con.execute(f"DROP TABLE {bad}_shift")


_WIDE_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16",
              b"\xfe\xff": "UTF-16"}


def _check_encoding(path: str) -> None:
    """A UTF-16/32 file would land as one garbage row per line: name the encoding and fail instead.

    Without a byte-order mark, ASCII text in UTF-16 has a NUL in every other byte ('{\\x00"\\x00')."""
    head = _head(path, 4)
    for bom, name in _WIDE_BOMS.items():
        if head.startswith(bom):
            raise LandingError(f"{path}: the file is {name}-encoded (byte-order mark {bom.hex(' ')}); "
                               "landing files must be UTF-8")
    if len(head) == 4 and (head[1] == head[3] == 0 or head[0] == head[2] == 0):
        raise LandingError(f"{path}: every other byte is NUL, the file looks UTF-16-encoded; "
                           "landing files must be UTF-8")


def _head(path: str, n: int, line: bool = False) -> bytes:
    """The first `n` bytes of a file (decompressed), or its first line (up to `n` bytes) when `line`.

    A file that cannot be decompressed gives b"" for the bytes (the reader names the problem later) and
    raises for the line: a CSV's header must not look empty because its gzip was cut short."""
    import gzip

    try:
        with contextlib.ExitStack() as stack:
            if is_remote(path):
                import fsspec

                fh = stack.enter_context(fsspec.open(path, "rb", compression="infer"))
            elif path.lower().endswith(".gz"):
                fh = stack.enter_context(gzip.open(path, "rb"))
            else:
                fh = stack.enter_context(open(path, "rb"))
            if not line:
                return fh.read(n)
            head = b""  # read in chunks, not fh.readline(n): fsspec's remote files take no size argument
            while len(head) < n and b"\n" not in head:
                chunk = fh.read(min(1 << 16, n - len(head)))
                if not chunk:
                    break
                head += chunk
            end = head.find(b"\n")
            return head[: end + 1] if end >= 0 else head
    except (OSError, EOFError):
        if line:
            raise
        return b""


def _size(path: str) -> int:
    if is_remote(path):
        import fsspec

        fs, p = fsspec.core.url_to_fs(path)
        return fs.size(p)
    return os.path.getsize(path)
