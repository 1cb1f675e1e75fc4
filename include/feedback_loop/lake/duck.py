"""DuckDB connections as every stage opens them: UTC, a bounded memory limit that spills to a per-process
folder, and the object store registered when the lake or the landing area is on S3."""

from __future__ import annotations

import os
import tempfile


def connect():
    """A fresh in-memory DuckDB connection with the settings every stage expects."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    # DuckDB takes 80% of the machine's memory by default: a large day's land held 12 GiB. Bounded, it
    # spills sorts and joins to a per-process folder instead (docs/benchmark.md).
    con.execute(f"SET memory_limit = '{os.environ.get('ACSR_DUCKDB_MEMORY_LIMIT', '1GB')}'")
    con.execute(f"SET temp_directory = '{_sql_str(os.path.join(tempfile.gettempdir(), f'acsr-duckdb-{os.getpid()}'))}'")
    if _lake_on_object_store():
        from feedback_loop.lake.object_store import configure_duckdb

        configure_duckdb(con)
    return con


def _lake_on_object_store() -> bool:
    """The lake or the landing area is an s3:// URL (read from the environment: no Variable look-ups on
    every connection)."""
    from feedback_loop.lake.object_store import uses_object_store

    return uses_object_store(os.environ.get("ACSR_LAKE", ""), os.environ.get("ACSR_LANDING", ""))


def _sql_str(s: str) -> str:
    return s.replace("'", "''")
