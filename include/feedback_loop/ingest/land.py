"""Land: read one day's files of one source into a typed Parquet partition of the raw lake.

Every line or record of every file becomes exactly one raw row, including the ones that cannot be
parsed: those keep their text and a `_parse_error`, so the data-quality stage can quarantine them with a
reason instead of losing them. Values that do not fit their contract type become NULL with a note in
`_type_errors`; keys that the contract does not name are kept in `_extra` (a JSON object).
A file that cannot be read at all (a gzip cut short, a CSV without a required column) fails the task with
a message that names the file and the problem.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from datetime import date

from feedback_loop.ingest import contract
from feedback_loop.ingest.contract import Source
from feedback_loop.lake.duck import connect
from feedback_loop.lake.files import Lake, is_remote, join
from feedback_loop.settings import Settings

log = logging.getLogger(__name__)

# RFC 3339 date-time with a mandatory offset (a space instead of 'T' and "+00" are accepted, as DuckDB
# and many exporters write them).
RFC3339_WITH_OFFSET = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}(:?\d{2})?)$"
MAX_KEY_SHAPES = 1000  # distinct key lists in one JSON Lines file beyond which the fast path is not tried
RAW_TEXT_LIMIT = 2000  # characters of an unparseable row kept for the quarantine report
# A landing record with this key is a vendor record that a source mapping could not read (feedback_loop.sources.
# mapping): it lands as a parse error whose text is the mapping's reason, naming the vendor field.
MAPPING_ERROR = "_mapping_error"


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


def land_source(settings: Settings, source: str, dt: date | str) -> LandResult:
    """Land one source for one day into `<lake>/raw/<source>/dt=<dt>/part.parquet` (idempotent)."""
    import duckdb

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
    fast = []  # (path, table, SQL of _extra, records, SQL of _line) of the files read by _read_jsonl_fast
    file_stats = []
    # A day of one JSON Lines file is streamed from read_json into the write (no table: at 2 M events it
    # spilled); its record count is checked on the written partition instead.
    stream = len(files or []) == 1
    for i, path in enumerate(files or []):
        fmt = contract.file_format(path)
        if fmt is None or (fmt == "csv" and not src.csv):
            accepted = ", ".join(s for k, v in contract.FILE_FORMATS.items() if k != "csv" or src.csv for s in v)
            raise LandingError(f"{path}: not a format source '{source}' accepts ({accepted})")
        if _size(path) == 0:
            # A text file with no bytes is an export with no records. A complete gzip or Parquet file is
            # never zero bytes long, so one that is was cut short: fail rather than call the day empty.
            if fmt == "parquet" or path.lower().endswith(".gz"):
                raise LandingError(f"{path}: the file is zero bytes long; a complete {fmt} file never is "
                                   "(an export cut short?)")
            log.warning("%s: empty file (zero bytes), no records", path)
            file_stats.append({"file": path, "format": fmt, "rows": 0, "empty": True})
            continue
        if fmt != "parquet":
            _check_encoding(path)
        before = _landed(con, fast)
        try:
            landed = _read_jsonl_fast(con, src, path, i, stream=stream) if fmt == "jsonl" else None
            if landed:
                fast.append((path, *landed))
            else:
                _READERS[fmt](con, src, path, i)
        except LandingError:
            raise
        except Exception as exc:  # DuckDB names the problem; we add the file (and the line when we can)
            raise LandingError(f"{path}: cannot be read as {fmt}{_locate(path, fmt, exc)}: {exc}") from exc
        n = _landed(con, fast) - before
        file_stats.append({"file": path, "format": fmt, "rows": n})

    lake = Lake(settings.lake)
    only_fast = len(fast) == 1 and not con.execute("SELECT count(*) FROM rows").fetchone()[0]
    streamed = only_fast and fast[0][4] == STREAM_LINE

    def one_record_per_line(written: str) -> None:
        # Checked on the written file before it is published: a wrong partition is never visible.
        n = con.execute(f"SELECT count(*) FROM read_parquet('{_q(written)}')").fetchone()[0]
        if n != fast[0][3]:
            raise _StreamMismatch(f"{fast[0][0]}: read_json gave {n} records for {fast[0][3]} lines")

    try:
        target = lake.write_query(con, typed_select(src, fast, only_fast=only_fast), "raw", source, dt,
                                  check=one_record_per_line if streamed else None)
        stream_failed = False
    except (duckdb.Error, _StreamMismatch) as exc:
        if not streamed:
            raise
        log.debug("%s: streamed fast path failed (%s)", fast[0][0], exc)
        stream_failed = True
    if stream_failed:
        # read_json failed or did not give one record per line: nothing was published; land the file by
        # the line path.
        path, table = fast[0][:2]
        fast = []
        con.execute(f"DROP VIEW IF EXISTS {table}")
        try:
            _read_jsonl(con, src, path, 0)
        except Exception as exc:
            raise LandingError(f"{path}: cannot be read as jsonl{_locate(path, 'jsonl', exc)}: {exc}") from exc
        file_stats[-1]["rows"] = _landed(con, fast)
        target = lake.write_query(con, typed_select(src, fast), "raw", source, dt)
    rows_read = _landed(con, fast)
    parse_errors = con.execute("SELECT count(_parse_error) FROM rows").fetchone()[0]
    con.close()
    return LandResult(source, dt, file_stats, rows_read, parse_errors, missing, target)


class _StreamMismatch(Exception):
    """A streamed fast-path file did not give one record per line: land it by the line path instead."""


def _landed(con, fast: list) -> int:
    """Rows landed so far: the line path's `rows` plus the fast path's records."""
    return con.execute("SELECT count(*) FROM rows").fetchone()[0] + sum(f[3] for f in fast)


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
    import duckdb

    if is_remote(path):
        return None
    core = [f.name for f in src.fields]
    rejects, table = f"fast_rejects_{idx}", f"json_{idx}"
    landed = None
    try:
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
        rejected = con.execute(f"SELECT count(*) FROM duckdb_tables() WHERE table_name = '{rejects}'").fetchone()[0]
        if rejected and con.execute(f"SELECT count(*) FROM {rejects}").fetchone()[0]:
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
        # Streamed: a view that numbers the records as read_json gives them, in file order (row_number()
        # OVER () keeps the scan's order); read when the partition is written.
        make = f"VIEW {table} AS SELECT row_number() OVER () AS {STREAM_LINE}, *" if stream else f"TABLE {table} AS SELECT *"
        con.execute(
            f"""CREATE TEMP {make} FROM read_json('{_q(path)}', columns={cols},
                format='newline_delimited', records=true, ignore_errors=false, hive_partitioning=false,
                maximum_object_size=67108864)"""
        )
        records = sum(n for _, n in shapes)
        if stream:
            line = STREAM_LINE
        else:
            line = "rowid + 1"
            if con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] != records:
                return None
        # The line path's `_extra`: the non-contract keys in record order, each with its JSON value.
        entries = ", ".join(f"{{'key': '{_q(k)}', 'value': {_ident(k)}}}" for k in extra)
        landed = table, f"to_json(map_from_entries([{entries}]))::VARCHAR" if extra else "NULL::VARCHAR", records, line
        return landed
    except duckdb.Error as exc:  # the line path reads the file again and names the problem, if there is one
        log.debug("%s: fast path not taken (%s)", path, exc)
        return None
    finally:
        con.execute(f"DROP TABLE IF EXISTS {rejects}")
        if landed is None:
            con.execute(f"DROP {'VIEW' if stream else 'TABLE'} IF EXISTS {table}")


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
