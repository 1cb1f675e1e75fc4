"""Great Expectations 1.x over DuckDB, the guarded compatibility shim (the suite runner that needs it is
gx_duckdb.py).

The shim (`patch_gx_for_duckdb()`, idempotent) fixes two things, for the DuckDB dialect only (every
other dialect still runs GX's own code):

1. GX 1.24's `SqlAlchemyExecutionEngine.execute_query` runs the query inside
   `with self.get_connection() as connection:` and returns the live `CursorResult` after the block has
   closed the connection; callers fetch the rows afterwards (`execute_query(q).fetchall()`).
   duckdb_engine drops the result with the connection, so the fetch returns `[]` and
   `resolve_metric_bundle` dies with `IndexError: list index out of range` on `res[0]` (GX issues
   #10738, #11579): every expectation fails. `execute_query` and `execute_query_in_transaction` are
   replaced by versions that buffer the rows (`result.freeze()()`) while the connection is open.
2. `unexpected_index_query` (the SQL that lists failing rows, shown in Data Docs and used below) comes
   out with `$1`-style placeholders instead of values whenever a parameter's repr happens to appear in
   the query text (numeric IN-lists always; the unique check's `HAVING count(*) >= 2` if a "2" appears
   anywhere): GX does not know duckdb_engine's numeric_dollar paramstyle. The helper
   `great_expectations.expectations.metrics.util._substitute_with_render_postcompile` is wrapped so
   that on DuckDB such text is re-rendered with literal binds (GX's own fallback).

Every replaced GX function, and every GX function the replacements call, is pinned by a SHA-256 of
its source (`_EXPECTED_SOURCE_SHA256`), checked on every `patch_gx_for_duckdb()` call: after a GX
upgrade that touches any of them, patching raises RuntimeError until someone re-checks the shim.
tests/ingest/test_gx_duckdb.py also checks that each part is still needed (or at least harmless).

Buffering cost: a buffered result holds all its rows in memory. GX only reads unbounded results for
the failing rows of a map expectation (COMPLETE result format), so memory grows with the number of
failing rows, the same order as `failed_row_ids`, which must hold all of them anyway.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import re
import threading
from typing import Any

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------
# The shim
# ---------------------------------------------------------------------------------------------------

_ENGINE = "great_expectations.execution_engine.sqlalchemy_execution_engine:SqlAlchemyExecutionEngine"
_UTIL = "great_expectations.expectations.metrics.util"

# SHA-256 of inspect.getsource() of every GX function the shim replaces or relies on, as read in
# great_expectations 1.24.1. If GX changes any of them, re-read the new code (does execute_query still
# close the connection before its callers fetch? does unexpected_index_query still come out with `$n`
# placeholders on DuckDB?), adapt or drop the shim, then update the hashes.
_EXPECTED_SOURCE_SHA256: dict[str, str] = {
    # replaced: buffer rows before the connection closes (the IndexError)
    f"{_ENGINE}.execute_query": "00b686f959e59eec0a8dc12d352dd8c65d3273e42cff8e6e3d4e42862598d06b",
    f"{_ENGINE}.execute_query_in_transaction": (
        "d1afa96b879b83bd7cb6fc0dcedc6c7f60d7231b2dac165c3f93baf6a5891f67"
    ),
    # called by those replacements
    f"{_ENGINE}._execute_query_with_recovery": (
        "e4b7310103053c956d7213372e785df28419d9537528ea499f2add4666db2d3b"
    ),
    f"{_ENGINE}.get_connection": "b46ee9fbae2ac1c33d6f00c53c4e50c5152376a16f7f3741adb7444d1939d905",
    # replaced: render unexpected_index_query with literal values on DuckDB (not `$1` placeholders)
    f"{_UTIL}:_substitute_with_render_postcompile": (
        "edb484bb29fb1ef4c7a60585ea462fb69b6a0a61cc6d29b408eee32c71006851"
    ),
    # its caller, and the function the replacement calls
    f"{_UTIL}:sqlalchemy_select_to_sql_string": (
        "4ff94a2d2d7b749a57f875a93d41fa8635448cf1f6cde1eb6203347e6582d33b"
    ),
    f"{_UTIL}:_fallback_to_literal_binds": "d28d8649044c9b1c0b445e3f0f346cf6d3ea970941573fc3110b0e371e8bb1b1",
}
_SHIM_MARKER = "_feedback_loop_duckdb_shim"

# Loggers that print hundreds of INFO lines per task (registration of every expectation and metric).
_CHATTY_LOGGERS = (
    "great_expectations._docs_decorators",  # "Skipping registering function ..." x ~200 on import
    "great_expectations.expectations.registry",  # "Multiple declarations of metric ..." on import
    "great_expectations.expectations.metrics.util",  # "While introspecting columns ... pg_collation"
    "great_expectations.data_context",
    "great_expectations.datasource.fluent",
    "great_expectations.render",
)

_ORIGINALS: dict[str, Any] = {}  # target -> GX's own function, kept for delegation and the tests
_patch_lock = threading.Lock()


def _owner_and_name(target: str) -> tuple[Any, str]:
    """'pkg.module:Class.attr' -> (Class, 'attr'); 'pkg.module:func' -> (module, 'func')."""
    import importlib

    module_name, path = target.split(":")
    owner: Any = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    return owner, name


def _gx_function(target: str) -> Any:
    """GX's own function for `target`, even when the shim has already replaced it."""
    if target in _ORIGINALS:
        return _ORIGINALS[target]
    owner, name = _owner_and_name(target)
    return inspect.getattr_static(owner, name)


def _source_sha256(func: Any) -> str:
    func = getattr(func, "__func__", func)  # staticmethod / classmethod -> function
    return hashlib.sha256(inspect.getsource(func).encode("utf-8")).hexdigest()


def check_gx_sources() -> None:
    """Raise RuntimeError if the GX code the shim depends on is not the code it was written for."""
    import great_expectations

    changed = []
    for target, expected in _EXPECTED_SOURCE_SHA256.items():
        try:
            actual = _source_sha256(_gx_function(target))
        except (AttributeError, ImportError, OSError, TypeError) as exc:  # gone, or no source
            actual = f"unreadable ({exc!r})"
        if actual != expected:
            changed.append(f"{target}: expected sha256 {expected}, found {actual}")
    if changed:
        raise RuntimeError(
            f"great_expectations {getattr(great_expectations, '__version__', '?')} changed code that "
            "feedback_loop.ingest.gx_duckdb patches or relies on. The DuckDB shim was written against "
            "great_expectations 1.24.1 and must be re-checked: does "
            "SqlAlchemyExecutionEngine.execute_query still close the connection before callers fetch "
            "(IndexError in resolve_metric_bundle, GX #10738/#11579)? is unexpected_index_query still "
            "rendered with $n placeholders on DuckDB? Adapt or drop the shim, update "
            "_EXPECTED_SOURCE_SHA256 in include/feedback_loop/ingest/gx_duckdb.py and run "
            "tests/ingest/test_gx_duckdb.py.\n  " + "\n  ".join(changed)
        )


def _is_duckdb(execution_engine: Any) -> bool:
    return execution_engine.engine.dialect.name.lower() == "duckdb"


def _buffered(result: Any) -> Any:
    """Read every row of `result` now, while its connection is open (a no-op for DML/DDL)."""
    if getattr(result, "returns_rows", False):
        return result.freeze()()  # FrozenResult() -> an IteratorResult over the buffered rows
    return result


def _execute_query(self: Any, query: Any) -> Any:
    """Replacement for SqlAlchemyExecutionEngine.execute_query: buffer rows before closing (DuckDB)."""
    if not _is_duckdb(self):
        return _ORIGINALS[f"{_ENGINE}.execute_query"](self, query)
    with self.get_connection() as connection:
        return _buffered(self._execute_query_with_recovery(connection, query))


def _execute_query_in_transaction(self: Any, query: Any) -> Any:
    """Replacement for SqlAlchemyExecutionEngine.execute_query_in_transaction (DuckDB only)."""
    if not _is_duckdb(self):
        return _ORIGINALS[f"{_ENGINE}.execute_query_in_transaction"](self, query)
    with self.get_connection() as connection:
        result = _buffered(self._execute_query_with_recovery(connection, query))
        if connection.in_transaction():  # SQLAlchemy 2 autobegin; DuckDB supports COMMIT
            connection.commit()
    return result


_DOLLAR_PLACEHOLDER = re.compile(r"\$\d+")


def _substitute_with_render_postcompile(engine: Any, select_statement: Any) -> tuple[str, Any]:
    """Replacement for GX's helper of sqlalchemy_select_to_sql_string (used for unexpected_index_query).

    duckdb_engine's paramstyle is numeric_dollar (`$1`), which GX does not substitute; GX's check for
    leftover parameters looks for repr(value) anywhere in the text, so a value like 2 "matches" the
    placeholder `$2` and the query is returned with placeholders (always for
    expect_column_values_to_be_unique's HAVING count(*) >= 2). On DuckDB, render literal binds instead.
    """
    query, compiled = _ORIGINALS[f"{_UTIL}:_substitute_with_render_postcompile"](engine, select_statement)
    if _is_duckdb(engine) and compiled.params and _DOLLAR_PLACEHOLDER.search(query):
        from great_expectations.expectations.metrics import util

        try:
            query = util._fallback_to_literal_binds(engine, select_statement)
        except Exception:
            log.debug("literal rendering failed; leaving GX's query text as is", exc_info=True)
    return query, compiled


_REPLACEMENTS: dict[str, Any] = {
    f"{_ENGINE}.execute_query": _execute_query,
    f"{_ENGINE}.execute_query_in_transaction": _execute_query_in_transaction,
    f"{_UTIL}:_substitute_with_render_postcompile": _substitute_with_render_postcompile,
}


def quiet_gx_loggers(level: int = logging.WARNING) -> None:
    """Raise the level of GX's very chatty INFO loggers (importing GX logs hundreds of lines)."""
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(level)


def import_gx() -> Any:
    """The `great_expectations` module, imported with quiet loggers and the DuckDB shim applied."""
    patch_gx_for_duckdb()
    import great_expectations

    return great_expectations


def patch_gx_for_duckdb() -> None:
    """Make GX's SQL execution engine work on DuckDB (duckdb_engine). Idempotent and thread-safe.

    Raises RuntimeError if the GX functions involved differ from the ones the shim was written for
    (checked on every call, so a stale shim cannot stay silently in place).
    """
    quiet_gx_loggers()  # before GX is imported: it logs while registering expectations
    import sqlalchemy
    from great_expectations.execution_engine.sqlalchemy_execution_engine import (
        SqlAlchemyExecutionEngine,
    )

    with _patch_lock:
        check_gx_sources()
        if getattr(SqlAlchemyExecutionEngine, _SHIM_MARKER, False):
            return
        if int(sqlalchemy.__version__.split(".")[0]) < 2:
            raise RuntimeError("feedback_loop.ingest.gx_duckdb needs SQLAlchemy 2 (autobegin connections)")
        for target, replacement in _REPLACEMENTS.items():
            owner, name = _owner_and_name(target)
            _ORIGINALS[target] = inspect.getattr_static(owner, name)
            setattr(owner, name, replacement)
        setattr(SqlAlchemyExecutionEngine, _SHIM_MARKER, True)
