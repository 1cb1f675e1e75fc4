"""Great Expectations 1.x over DuckDB: the suite runner and Data Docs (the guarded shim it applies is
gx_shim.py, whose names are re-exported here).

The runner. `run_suite` validates one DuckDB table with a list of GX expectation objects through a GX
SQL datasource (the SQL runs inside DuckDB, nothing is loaded into pandas) and returns, per map
expectation, the id of every failing row. On SQL, GX cuts `unexpected_index_list` at
`partial_unexpected_count` (default 20), so it is not used as is. With the COMPLETE result format GX
also renders `unexpected_index_query`, complete and unlimited: the runner executes it in DuckDB and
keeps the ids only if there are exactly `unexpected_count` of them. That query ignores `row_condition`,
so for such expectations (and on any count mismatch or query error) the runner asks GX again for that
one expectation with `partial_unexpected_count` raised to the unexpected count, which makes GX's own,
row_condition-aware `unexpected_index_list` complete; a list that still disagrees with the count
raises. The stored GX result keeps GX's bounded lists (20 index entries, 200 values per expectation).

Storage and concurrency. Validation runs in an in-memory (ephemeral) GX context with names private to
the call, so concurrent calls share nothing while the heavy work runs. With `gx_root`, the suite and the
validation result are then written to a FILE context at `gx_root` under an exclusive `fcntl.flock` on
`<gx_root>/.gx_duckdb.lock` (held for well under a second; `build_data_docs` takes the same lock). Only
the suite (replaced by name) and the result (one new file per run) are written there: datasources,
assets and validation definitions stay in the ephemeral context, so re-runs never accumulate them and
`great_expectations.yml` is never rewritten by a run.

Layout under gx_root (GX's own file-context layout):
    gx/great_expectations.yml
    gx/expectations/<suite>.json                                   the latest definition of each suite
    gx/uncommitted/validations/<suite>/<run_name>/<run_time>/<batch>.json      one per run_suite call
    gx/uncommitted/data_docs/local_site/index.html                 written by build_data_docs

GX takes seconds to import: it is imported inside the functions below, never when this module loads.
Its chatty INFO loggers are quieted when this module loads (that needs only `logging`). Code that
builds expectation objects should get GX through `import_gx()`, which also applies the shim.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import logging
import os
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feedback_loop.ingest.gx_shim import (  # noqa: F401 - re-exported: callers and tests use gx_duckdb.*
    _EXPECTED_SOURCE_SHA256,
    _ORIGINALS,
    _REPLACEMENTS,
    _execute_query,
    _execute_query_in_transaction,
    _owner_and_name,
    _substitute_with_render_postcompile,
    check_gx_sources,
    import_gx,
    patch_gx_for_duckdb,
    quiet_gx_loggers,
)

log = logging.getLogger(__name__)

quiet_gx_loggers()  # cheap (logging only); GX logs hundreds of INFO lines while it is imported


# ---------------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------------

_LOCK_FILE = ".gx_duckdb.lock"


@dataclass
class ExpectationOutcome:
    expectation_type: str  # e.g. "expect_column_values_to_not_be_null"
    column: str | None
    kwargs: dict
    success: bool
    unexpected_count: int
    element_count: int
    failed_row_ids: list  # row_id_column of every failing row (all of them), sorted
    meta: dict  # the expectation's meta
    exception: str | None = None  # set when GX could not evaluate the expectation (success is False)


@dataclass
class SuiteOutcome:
    suite_name: str
    success: bool
    statistics: dict
    outcomes: list[ExpectationOutcome] = field(default_factory=list)
    result_json_path: str | None = None  # the stored GX validation result (None without gx_root)


@contextlib.contextmanager
def _gx_root_lock(gx_root: str) -> Iterator[None]:
    """Exclusive inter-process (and inter-thread) lock on a gx_root."""
    root = Path(gx_root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / _LOCK_FILE, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


_FILE_CONTEXTS: dict[str, Any] = {}  # resolved gx_root -> its file context, opened once per process


def _file_context(gx_root: str) -> Any:
    """The file context at gx_root, opened once per process (opening it parses its YAML and builds its
    stores: ~0.1-0.2 s per call, paid per source before). Reopened if its config file went away."""
    import great_expectations as gx

    root = str(Path(gx_root).resolve())
    ctx = _FILE_CONTEXTS.get(root)
    if ctx is None or not (Path(root) / "gx" / "great_expectations.yml").is_file():
        ctx = _FILE_CONTEXTS[root] = gx.get_context(mode="file", project_root_dir=root)
    return ctx


def _ephemeral_context() -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _check_table(db_path: str, table: str, row_id_column: str) -> None:
    """Fail early, and clearly, if the table or its row-id column is missing."""
    import duckdb

    con = duckdb.connect(db_path, read_only=True)
    try:
        quoted = '"' + table.replace('"', '""') + '"'
        cols = [r[0] for r in con.execute(f"DESCRIBE {quoted}").fetchall()]
        if row_id_column not in cols:
            raise ValueError(f"table {table!r} in {db_path} has no row-id column {row_id_column!r}")
    except duckdb.CatalogException as exc:
        raise ValueError(f"table {table!r} not found in {db_path}: {exc}") from exc
    finally:
        con.close()


def _fresh_expectation(expectation: Any) -> Any:
    """A copy of `expectation` not bound to any suite (the caller's objects stay untouched)."""
    clone = copy.deepcopy(expectation)
    clone.id = None
    return clone


def _sorted_ids(ids: list) -> list:
    try:
        return sorted(ids)
    except TypeError:  # mixed / unorderable types: keep GX's order
        return ids


class _Lazy:
    """Call `factory` once, on first use (the fallback path needs a GX batch; most runs do not)."""

    def __init__(self, factory: Any) -> None:
        self._factory, self._value, self._made = factory, None, False

    def __call__(self) -> Any:
        if not self._made:
            self._value, self._made = self._factory(), True
        return self._value


def _outcome(
    expectation: Any, vr: Any, connection: Any, batch: _Lazy, row_id_column: str
) -> ExpectationOutcome:
    """One expectation's result; `expectation` is the suite's copy, `vr` its validation result."""
    config = vr.expectation_config
    result = vr.result or {}
    kwargs = {k: v for k, v in dict(config.kwargs).items() if k != "batch_id"}
    exception = _exception_message(vr)
    unexpected_count = int(result.get("unexpected_count") or 0)
    failed: list = []
    if exception is None and ("unexpected_index_query" in result or "unexpected_index_list" in result):
        failed, how = _failed_row_ids(connection, batch, expectation, result, row_id_column, unexpected_count)
        log.debug("%s %s: %d failing row ids via %s", config.type, kwargs, len(failed), how)
    elif unexpected_count and exception is None:
        log.warning("%s: %d unexpected rows but no row ids from GX", config.type, unexpected_count)
    return ExpectationOutcome(
        expectation_type=config.type,
        column=kwargs.get("column"),
        kwargs=kwargs,
        success=bool(vr.success),
        unexpected_count=unexpected_count,
        element_count=int(result.get("element_count") or 0),
        failed_row_ids=_sorted_ids(failed),
        meta=dict(config.meta or {}),
        exception=exception,
    )


def _exception_message(vr: Any) -> str | None:
    info = vr.exception_info or {}
    if "raised_exception" not in info:  # several metrics failed: {metric_id: info}
        info = next((i for i in info.values() if isinstance(i, dict) and i.get("raised_exception")), {})
    return info.get("exception_message") if info.get("raised_exception") else None


def _ids_from_index_query(connection: Any, query: str) -> list:
    """Run GX's `unexpected_index_query` text as is (no bind parsing); its first column is the id."""
    return [row[0] for row in connection.exec_driver_sql(query.strip().rstrip(";")).fetchall()]


def _ids_from_gx(batch: Any, expectation: Any, row_id_column: str, unexpected_count: int) -> list:
    """Ask GX for the complete unexpected_index_list of one expectation (row_condition-aware)."""
    vr = batch().validate(
        _fresh_expectation(expectation),
        result_format={
            "result_format": "COMPLETE",
            "unexpected_index_column_names": [row_id_column],
            "partial_unexpected_count": max(unexpected_count, 1),
        },
    )
    return [row[row_id_column] for row in (vr.result or {}).get("unexpected_index_list") or []]


def _failed_row_ids(
    connection: Any, batch: Any, expectation: Any, result: dict, row_id_column: str, unexpected_count: int
) -> tuple[list, str]:
    """Every failing row id of a map expectation, and how they were obtained.

    Fast path: GX's own `unexpected_index_query` (complete, unlike `unexpected_index_list`, which GX
    cuts at partial_unexpected_count), run in DuckDB. That query ignores `row_condition`, so with a
    row condition, or whenever the count does not match `unexpected_count`, the ids come from GX
    itself with partial_unexpected_count raised to the unexpected count.
    """
    if unexpected_count == 0:
        return [], "none"
    query = result.get("unexpected_index_query")
    if isinstance(query, str) and not getattr(expectation, "row_condition", None):
        try:
            ids = _ids_from_index_query(connection, query)
        except Exception as exc:  # noqa: BLE001 - fall back to GX below
            log.warning("unexpected_index_query failed (%s); asking GX for the full list", exc)
        else:
            if len(ids) == unexpected_count:
                return ids, "unexpected_index_query"
            log.warning(
                "unexpected_index_query returned %d rows for %d unexpected; asking GX for the full list",
                len(ids),
                unexpected_count,
            )
    ids = _ids_from_gx(batch, expectation, row_id_column, unexpected_count)
    if len(ids) != unexpected_count:
        raise RuntimeError(
            f"GX returned {len(ids)} failing row ids for {expectation.expectation_type} on "
            f"{getattr(expectation, 'column', None)!r} but counted {unexpected_count} unexpected rows; "
            "refusing to return a partial list"
        )
    return ids, "unexpected_index_list"


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def run_suite(
    db_path: str,
    table: str,
    suite_name: str,
    expectations: list,
    *,
    row_id_column: str = "_row_id",
    gx_root: str | None = None,
    run_name: str | None = None,
) -> SuiteOutcome:
    """Validate `table` of the DuckDB file `db_path` with GX `expectations` as suite `suite_name`.

    The file must not be open for writing by anyone (it is opened read-only, so several runs can read
    it at once). Returns the suite result and, for every map expectation, the `row_id_column` value of
    every failing row. With `gx_root`, the suite and the full GX validation result are stored in the
    file data context there (see the module docstring); otherwise nothing is written.
    """
    if not expectations:
        raise ValueError("run_suite needs at least one expectation")
    db_path = str(Path(db_path).resolve())
    if not Path(db_path).is_file():
        raise FileNotFoundError(db_path)

    patch_gx_for_duckdb()
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    _check_table(db_path, table, row_id_column)
    # COMPLETE makes GX render `unexpected_index_query` for map expectations; its own lists stay at
    # partial_unexpected_count (20) / 200 entries, which keeps the stored result JSON small.
    result_format = {"result_format": "COMPLETE", "unexpected_index_column_names": [row_id_column]}

    context = _ephemeral_context()
    datasource = context.data_sources.add_sql(
        name=_safe_name(Path(db_path).stem),
        connection_string=f"duckdb:///{db_path}",
        kwargs={"connect_args": {"read_only": True}},
    )
    try:
        asset = datasource.add_table_asset(name=table, table_name=table)
        batch_definition = asset.add_batch_definition_whole_table("whole_table")
        # One store write for the whole suite: add_expectation() serialises the suite on every call
        # (about 0.5 s of CPU for a 24-expectation suite).
        suite = context.suites.add(
            gx.ExpectationSuite(name=suite_name, expectations=[_fresh_expectation(e) for e in expectations])
        )
        validation = context.validation_definitions.add(
            gx.ValidationDefinition(name=suite_name, data=batch_definition, suite=suite)
        )
        result = validation.run(result_format=result_format, run_id=RunIdentifier(run_name=run_name))

        by_id = {vr.expectation_config.id: vr for vr in result.results}
        batch = _Lazy(batch_definition.get_batch)
        with datasource.get_execution_engine().engine.connect() as connection:
            outcomes = [
                _outcome(exp, by_id[exp.id], connection, batch, row_id_column) for exp in suite.expectations
            ]
    finally:
        _dispose_engines(datasource)

    result.meta["feedback_loop"] = {"db_path": db_path, "table": table, "row_id_column": row_id_column}
    json_path = None
    if gx_root is not None:
        (key,) = context.validation_results_store.list_keys()
        json_path = _store(gx_root, suite, key, result)

    return SuiteOutcome(
        suite_name=suite_name,
        success=bool(result.success),
        statistics=dict(result.statistics),
        outcomes=outcomes,
        result_json_path=json_path,
    )


def _dispose_engines(datasource: Any) -> None:
    """Close the pooled DuckDB connections so the file is released when run_suite returns."""
    for get in (lambda: datasource.get_execution_engine().engine, datasource.get_engine):
        with contextlib.suppress(Exception):
            get().dispose()


def _store(gx_root: str, suite: Any, key: Any, result: Any) -> str:
    """Replace the suite and add the validation result in the file context (under the lock)."""
    import great_expectations as gx

    with _gx_root_lock(gx_root):
        ctx = _file_context(gx_root)
        stored = gx.ExpectationSuite(
            name=suite.name,
            expectations=[_fresh_expectation(e) for e in suite.expectations],
            meta=copy.deepcopy(suite.meta),
        )
        with contextlib.suppress(gx.exceptions.DataContextError):
            ctx.suites.delete(suite.name)
        ctx.suites.add(stored)
        store = ctx.validation_results_store
        store.set(key, result)
        backend = store.store_backend
        path = Path(backend.full_base_directory) / backend._convert_key_to_filepath(key.to_tuple())
        if not path.is_file():
            raise RuntimeError(f"GX stored the validation result somewhere other than {path}")
        return str(path)


def build_data_docs(gx_root: str) -> str:
    """Build (or refresh) the Data Docs of the file context at gx_root; return index.html's path."""
    patch_gx_for_duckdb()
    with _gx_root_lock(gx_root):
        ctx = _file_context(gx_root)
        ctx.build_data_docs()
        sites = ctx.get_site_names()
        url = ctx.get_docs_sites_urls(site_name=sites[0])[0]["site_url"] if sites else None
    path = urllib.parse.unquote(urllib.parse.urlparse(url).path) if url else ""
    if not os.path.isfile(path):
        raise RuntimeError(f"GX Data Docs did not produce an index.html under {gx_root} (got {url!r})")
    return path
