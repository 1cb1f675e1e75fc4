"""Long SQL lives in `.sql` files next to the stage that owns it; Python keeps the parameters and the flow.

    from feedback_loop.lake.sql import load_sql
    con.execute(load_sql("feedback_loop.signals", "metrics.sql"), {"day": day})

Values are bound as DuckDB parameters (`$name` / `?`), never formatted into the text. Identifiers that
cannot be parameters (a lake path in `read_parquet(...)`, a table name) are the only placeholders a caller
fills with `str.format`-free replacement of `{{name}}` markers, quoted by the caller."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def load_sql(package: str, name: str) -> str:
    """The text of `name` in `package`'s folder (installed as package data: pyproject's `**/*.sql`)."""
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


def fill(sql: str, **identifiers: str) -> str:
    """Replace `{{name}}` markers by already-quoted identifiers or paths (not values: bind those)."""
    for key, value in identifiers.items():
        sql = sql.replace("{{" + key + "}}", value)
    if "{{" in sql:
        raise KeyError(f"unfilled SQL marker in: {sql[sql.index('{{'):sql.index('{{') + 40]!r}")
    return sql


def literal(text: str) -> str:
    """`text` as a quoted SQL string literal, for `fill` (a path in `read_parquet`: not a bindable value)."""
    return "'" + str(text).replace("'", "''") + "'"


def literal_list(texts) -> str:
    """`[...]` of quoted string literals (a list of partition files for `read_parquet`)."""
    return "[" + ", ".join(literal(t) for t in texts) + "]"


def _fits(expr: str) -> str:
    """True where a DECIMAL(38, scale) holds the double: false for NaN and infinities too (DuckDB orders NaN
    above everything)."""
    return f"(abs({expr}) < 1e15)"


def exact_sum(expr: str, scale: int) -> str:
    """SQL for `sum(expr)` of doubles that is the same whatever order DuckDB's threads add the rows in (a sum
    of doubles is not: re-running a day changed its last bits): added as DECIMAL(38, scale), exactly. A
    group holding a value no such decimal holds (NaN, infinite, 1e15 or more) falls back to the double sum."""
    fits = _fits(expr)
    return (f"CASE WHEN count(*) FILTER (NOT {fits}) = 0 THEN sum(CASE WHEN {fits} THEN ({expr})::DECIMAL(38, {scale}) "
            f"END)::DOUBLE ELSE sum({expr}) END")


def exact_sum_parts(expr: str, scale: int, name: str) -> str:
    """`exact_sum` in two steps, for sums taken over partial sums (the same value): these aggregates per fine
    group (`{name}_dec`, `{name}_bad`, `{name}_dbl`), then `exact_sum_total(name)` over those groups."""
    fits = _fits(expr)
    return (f"sum(CASE WHEN {fits} THEN ({expr})::DECIMAL(38, {scale}) END) AS {name}_dec, "
            f"count(*) FILTER (NOT {fits}) AS {name}_bad, sum({expr}) AS {name}_dbl")


def exact_sum_total(name: str) -> str:
    """The `exact_sum` of a group from the partial sums `exact_sum_parts(..., name)` of its fine groups: the
    decimal sums add exactly, so this is `exact_sum` over the group's rows, bit for bit."""
    return f"CASE WHEN sum({name}_bad) = 0 THEN sum({name}_dec)::DOUBLE ELSE sum({name}_dbl) END"
