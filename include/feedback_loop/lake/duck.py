"""DuckDB connections as every stage opens them: UTC, a bounded memory limit that spills to a per-process
folder, and the object store registered when the lake or the landing area is on S3."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from typing import TYPE_CHECKING

from feedback_loop.lake.sql import literal_list

if TYPE_CHECKING:
    from feedback_loop.settings import Settings


def connect(settings: Settings | None = None):
    """A fresh in-memory DuckDB connection with the settings every stage expects.

    Without `settings`, the DuckDB options and the lake's location come from the environment and the
    defaults only (`Settings.from_env()`): connections are opened in many places, and opening one must never
    cost an Airflow Variable look-up."""
    import duckdb

    from feedback_loop.lake.object_store import uses_object_store
    from feedback_loop.settings import Settings

    s = settings or Settings.from_env()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    # DuckDB takes 80% of the machine's memory by default: a large day's land held 12 GiB. Bounded, it
    # spills sorts and joins to a per-process folder instead (docs/benchmark.md).
    con.execute("SET memory_limit = ?", [s.duckdb_memory_limit])
    con.execute("SET temp_directory = ?", [spill_dir(s)])
    if uses_object_store(s.lake, s.landing):
        from feedback_loop.lake.object_store import configure_duckdb

        configure_duckdb(con)
    return con


def spill_dir(settings: Settings) -> str:
    """This process's DuckDB spill folder: `<duckdb_temp_dir or the system temp>/acsr-duckdb-<pid>`."""
    return os.path.join(settings.duckdb_temp_dir or tempfile.gettempdir(), f"acsr-duckdb-{os.getpid()}")


_UNITS = {"bytes": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


@contextlib.contextmanager
def lowered_memory_limit(con, fraction: float):
    """Run a block under `fraction` of the connection's memory limit, then restore it.

    For a large sort written straight to a file: under a smaller limit DuckDB spills more of it, so what
    the process holds beside it (Python objects built from an earlier result) keeps its headroom."""
    (current,) = con.execute("SELECT current_setting('memory_limit')").fetchone()
    m = re.fullmatch(r"([0-9.]+) ?(bytes|KiB|MiB|GiB|TiB)", current.strip())
    if m is None:  # no limit, or a form this does not read: left as it is
        yield
        return
    lowered = int(float(m.group(1)) * _UNITS[m.group(2)] * fraction)
    con.execute("SET memory_limit = ?", [f"{max(lowered, 64 * 2**20) // 2**20}MiB"])
    try:
        yield
    finally:
        con.execute("SET memory_limit = ?", [current])


def parquet_view(con, name: str, files: list[str], empty_sql: str) -> None:
    """Temp view `name` over Parquet partition files (their hive `dt` column, columns matched by name, so
    older partitions missing a column still read), or `empty_sql` (a typed, empty SELECT) when there are none."""
    body = (f"SELECT * FROM read_parquet({literal_list(files)}, hive_partitioning=true, union_by_name=true)"
            if files else empty_sql)
    con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {body}")
