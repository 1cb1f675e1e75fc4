"""The DuckDB warehouse: a catalogue of views over the Parquet lake, for people and BI tools.

The lake is the source of truth; the warehouse holds no data of its own, so it can be rebuilt at any time
(`acsr warehouse`) and it is written by exactly one task at a time (the `duckdb_warehouse` pool has one
slot). Stages never open the warehouse file: they read the lake with an in-memory DuckDB, which is what
lets several days run at once and lets tasks run on other workers.
"""

from __future__ import annotations

import importlib
import os
import uuid

from .config import Settings
from .lake import Lake, join

# (view name, layer, dataset) for every day-partitioned dataset the warehouse exposes.
LAYERS = ("raw", "staged", "quarantine", "marts")


def _datasets(lake: Lake) -> list[tuple[str, str, str]]:
    """Every (view, layer, name) that has at least one partition in the lake."""
    out = []
    for layer in LAYERS:
        base = join(lake.root, layer)
        try:
            from .lake import _fs

            fs, path = _fs(base)
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
VIEW_MODULES = ("feedback_loop.signals", "feedback_loop.gaps")
_extra_views: list = []


def register_extra_views(fn):
    _extra_views.append(fn)
    return fn


def publish(settings: Settings) -> dict:
    """Rebuild the warehouse file's views and swap it in atomically."""
    import duckdb

    target = settings.warehouse
    folder = os.path.dirname(os.path.abspath(target))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex}.duckdb")
    try:
        con = duckdb.connect(tmp)
        con.execute("SET TimeZone = 'UTC'")
        if "://" in settings.lake:  # views over s3:// (see object_store: fsspec, not httpfs)
            from .object_store import configure_duckdb

            configure_duckdb(con)
        views = register_views(con, settings)
        con.close()
        os.replace(tmp, target)
    finally:
        for p in (tmp, tmp + ".wal"):
            if os.path.exists(p):
                os.remove(p)
    return {"warehouse": target, "views": views}
