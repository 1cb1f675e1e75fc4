"""Land: read one day's files of one source into a typed Parquet partition of the raw lake.

Every line or record of every file becomes exactly one raw row, including the ones that cannot be
parsed: those keep their text and a `_parse_error`, so the data-quality stage can quarantine them with a
reason instead of losing them. Values that do not fit their contract type become NULL with a note in
`_type_errors`; keys that the contract does not name are kept in `_extra` (a JSON object).
A file that cannot be read at all (a gzip cut short, a CSV without a required column) fails the task with
a message that names the file and the problem."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import date

from feedback_loop.ingest import contract
from feedback_loop.ingest.land_readers import (
    _READERS,
    STREAM_LINE,
    LandingError,
    _check_encoding,
    _landed,
    _locate,
    _read_csv_fast,
    _read_jsonl_fast,
    _size,
    _StreamMismatch,
)
from feedback_loop.ingest.land_types import _q, typed_select
from feedback_loop.lake.duck import connect
from feedback_loop.lake.files import Lake, is_remote, join
from feedback_loop.settings import Settings

log = logging.getLogger(__name__)


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
    fast = []  # (path, table, SQL of _extra, records, SQL of _line) of the files read by a fast path
    file_stats = []
    # A day of one clean JSON Lines or CSV file is streamed from its reader into the write (no table: at 2 M
    # events it spilled); its record count is checked on the written partition instead.
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
            fast_reader = {"jsonl": _read_jsonl_fast, "csv": _read_csv_fast}.get(fmt)
            landed = fast_reader(con, src, path, i, stream=stream) if fast_reader else None
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
            raise _StreamMismatch(f"{fast[0][0]}: the fast path gave {n} records for {fast[0][3]}")

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
        # read_json (read_csv) failed or did not give one record per line (per counted record): nothing was
        # published; land the file by the line path.
        path, table = fast[0][:2]
        fmt = contract.file_format(path)
        fast = []
        con.execute(f"DROP VIEW IF EXISTS {table}")
        try:
            _READERS[fmt](con, src, path, 0)
        except Exception as exc:
            raise LandingError(f"{path}: cannot be read as {fmt}{_locate(path, fmt, exc)}: {exc}") from exc
        file_stats[-1]["rows"] = _landed(con, fast)
        target = lake.write_query(con, typed_select(src, fast), "raw", source, dt)
    rows_read = _landed(con, fast)
    parse_errors = con.execute("SELECT count(_parse_error) FROM rows").fetchone()[0]
    con.close()
    return LandResult(source, dt, file_stats, rows_read, parse_errors, missing, target)
