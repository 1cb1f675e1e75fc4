"""The DuckDB warehouse: a catalogue of views over the Parquet lake, for people and BI tools.

The lake is the source of truth; the warehouse holds no data of its own, so it can be rebuilt at any time
(`acsr warehouse`) and it is written by exactly one task at a time (the `duckdb_warehouse` pool has one
slot). Stages never open the warehouse file: they read the lake with an in-memory DuckDB, which is what
lets several days run at once and lets tasks run on other workers.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import time

from feedback_loop.lake.files import Lake, join, remove_stale_tmp, tmp_name
from feedback_loop.settings import Settings

log = logging.getLogger(__name__)

# (view name, layer, dataset) for every day-partitioned dataset the warehouse exposes.
LAYERS = ("raw", "staged", "quarantine", "marts")


def _datasets(lake: Lake) -> list[tuple[str, str, str]]:
    """Every (view, layer, name) that has at least one partition in the lake."""
    out = []
    for layer in LAYERS:
        base = join(lake.root, layer)
        try:
            from feedback_loop.lake.files import filesystem_for

            fs, path = filesystem_for(base)
            names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
        except (FileNotFoundError, OSError):
            continue
        for name in names:
            if lake.days(layer, name):
                view = name if layer == "marts" else f"{layer}_{name}"
                out.append((view, layer, name))
    return out


def view_sql(lake: Lake, layer: str, name: str) -> str:
    return f"SELECT * FROM read_parquet('{lake.glob(layer, name)}', hive_partitioning=true, union_by_name=true)"


def register_views(con, settings: Settings) -> list[str]:
    """Create the lake's views on any DuckDB connection (in-memory for stages, the file for users)."""
    lake = Lake(settings.lake)
    names = []
    for view, layer, name in _datasets(lake):
        con.execute(f"CREATE OR REPLACE VIEW {view} AS {view_sql(lake, layer, name)}")
        names.append(view)
    runs = join(lake.root, "runs", "dt=*", "summary.json")
    if lake.days_with_file("runs", "summary.json"):
        con.execute(
            f"CREATE OR REPLACE VIEW run_summaries AS SELECT * FROM read_json('{runs}', format='auto', union_by_name=true)"
        )
        names.append("run_summaries")
    for module in VIEW_MODULES:  # importing a stage module registers its views
        importlib.import_module(module)
    for extra in _extra_views:
        names.extend(extra(con, settings) or [])
    return names


# Later stages (signals, datasets, gaps) add views with `register_extra_views`, called when their module is
# imported; register_views imports these modules so that `acsr warehouse` and the DAG get the same views.
VIEW_MODULES = ("feedback_loop.signals.metrics", "feedback_loop.gaps.detect",
                "feedback_loop.review.approvals")
_extra_views: list = []


def register_extra_views(fn):
    _extra_views.append(fn)
    return fn


class WarehouseLockedError(RuntimeError):
    """Another process holds the warehouse file open for writing."""


def publish(settings: Settings) -> dict:
    """Rebuild the warehouse file's views and swap it in atomically.

    Readers that hold the file open read-only keep their old catalogue until they reconnect; nothing
    waits for them. A process holding it read-write could be writing to it, and its write-ahead log would
    not match the new file (every later connection would fail), so publishing waits for it to close, up to
    `warehouse_lock_wait_seconds`, then fails naming the file and the process."""
    import duckdb

    target = settings.warehouse
    folder = os.path.dirname(os.path.abspath(target))
    os.makedirs(folder, exist_ok=True)
    remove_stale_tmp(folder)
    _wait_for_writers(target, settings.warehouse_lock_wait_seconds)
    tmp = os.path.join(folder, f"{tmp_name()}.duckdb")
    try:
        con = duckdb.connect(tmp)
        con.execute("SET TimeZone = 'UTC'")
        if "://" in settings.lake:  # views over s3:// (see object_store: fsspec, not httpfs)
            from feedback_loop.lake.object_store import configure_duckdb

            configure_duckdb(con)
        views = register_views(con, settings)
        con.close()
        if os.path.exists(target + ".wal"):  # the log of the file being replaced (its writer is gone)
            os.remove(target + ".wal")
        os.replace(tmp, target)
    finally:
        for p in (tmp, tmp + ".wal"):
            if os.path.exists(p):
                os.remove(p)
    return {"warehouse": target, "views": views}


def _wait_for_writers(target: str, wait_seconds: float) -> None:
    """Return once no other process holds `target` open read-write; raise WarehouseLockedError after the wait.

    A read-only open succeeds beside read-only holders and fails with a lock conflict beside a read-write
    one, which is exactly the holder the swap must not run beside."""
    import duckdb

    if not os.path.exists(target):
        return
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            duckdb.connect(target, read_only=True).close()
            return
        except duckdb.ConnectionException as exc:  # this very process holds it read-write: no use waiting
            raise WarehouseLockedError(
                f"{target}: this process holds the warehouse open for writing ({exc}); close that connection "
                "before publishing") from exc
        except duckdb.IOException as exc:
            message = str(exc)
            if "WAL" in message and "lock" not in message.lower():
                # A log left beside an earlier file by a writer that died: it belongs to no database.
                log.warning("removing %s.wal, which does not belong to %s: %s", target, target, message)
                os.remove(target + ".wal")
                continue
            if "lock" not in message.lower():
                raise
            found = re.search(r"Conflicting lock is held in (.*?\(PID \d+\))", message)
            holder = found.group(1) if found else "unknown process"
            if time.monotonic() >= deadline:
                raise WarehouseLockedError(
                    f"{target}: another process holds the warehouse open for writing ({holder}) and did not "
                    f"close it within {wait_seconds:g} s; the warehouse was not republished (the lake is "
                    "complete). Close that connection, or open the warehouse read-only "
                    "(duckdb -readonly / duckdb.connect(path, read_only=True)), then retry the task."
                ) from exc
            log.warning("%s is held open for writing by %s; waiting for it to close", target, holder)
            time.sleep(max(0.0, min(2.0, deadline - time.monotonic())))
