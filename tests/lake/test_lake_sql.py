"""lake.sql: the .sql files ship with their stage, markers are filled or refused, paths are quoted."""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import pytest
from feedback_loop.lake.sql import fill, literal, literal_list, load_sql


def test_every_stage_sql_file_loads_and_names_only_filled_markers():
    text = load_sql("feedback_loop.signals", "sql/queue.sql")
    assert "CREATE TEMP TABLE queue AS" in text
    with pytest.raises(KeyError, match="unfilled SQL marker"):
        fill(text)  # {{previous}} left open
    filled = fill(text, previous="SELECT NULL::VARCHAR AS action_id, NULL::DATE AS first_raised_date WHERE false")
    assert "{{" not in filled
    conversations = load_sql("feedback_loop.model", "sql/conversations.sql")
    assert conversations.count("{{bucket}}") == 1  # only in the SQL: comments name markers as <bucket>
    assert "{{" not in fill(conversations, bucket="", cost_sum="0", latency_sum="0")


def test_a_path_with_quotes_reads_through_literal(tmp_path):
    folder = tmp_path / "it's a \"lake\""
    folder.mkdir()
    con = duckdb.connect()
    paths = []
    for i in range(2):
        p = str(folder / f"part-{i}.parquet")
        con.execute(f"COPY (SELECT {i} AS x) TO {literal(p)} (FORMAT parquet)")
        paths.append(p)
    assert con.execute(f"SELECT count(*) FROM read_parquet({literal(paths[0])})").fetchone()[0] == 1
    assert con.execute(f"SELECT sum(x) FROM read_parquet({literal_list(paths)})").fetchone()[0] == 1
    # what the old f"'{path}'" produced is not SQL for such a path
    with pytest.raises(duckdb.ParserException):
        con.execute(f"SELECT count(*) FROM read_parquet('{paths[0]}')")


def test_exact_sum_is_the_same_in_any_order_and_falls_back_for_what_no_decimal_holds():
    import duckdb
    from feedback_loop.lake.sql import exact_sum

    con = duckdb.connect()

    def total(values: list) -> float | None:
        rows = ", ".join(f"({v}::DOUBLE, {i})" for i, v in enumerate(values))
        return con.execute(f"SELECT {exact_sum('x', 10)} FROM (VALUES {rows}) t(x, i)").fetchone()[0]

    assert 0.1 + 0.2 + 0.3 != 0.3 + 0.2 + 0.1  # doubles: the order shows
    assert total([0.1, 0.2, 0.3]) == total([0.3, 0.2, 0.1]) == 0.6
    assert total(["NULL", 1.5]) == 1.5 and total(["NULL"]) is None
    # NaN, infinities and values past the decimal's range: the double sum, not a cast error.
    assert math.isnan(total(["'nan'", 1.0]))
    assert total(["'inf'", 1.0]) == math.inf
    assert total([1e16, 1.0]) == 1e16 + 1.0


@pytest.mark.parametrize("values", [
    [0.1, 0.2, 0.3, 1e-9, 123456.789, -0.7, 2.5e-10, 3.0],
    ["NULL", 1.5, "NULL", 0.25],
    ["NULL", "NULL"],
    ["'nan'", 1.0, 2.0],
    ["'inf'", 1.0, "NULL"],
    [1e16, 1.0, 0.1],
])
def test_exact_sum_over_partial_sums_is_exact_sum_over_the_rows(values):
    """Signals sums each cell of units first, then each scope's cells (exact_sum_parts, exact_sum_total):
    the same value as exact_sum over the rows, whatever the cells, the fallback cases included."""
    import random

    from feedback_loop.lake.sql import exact_sum, exact_sum_parts, exact_sum_total

    con = duckdb.connect()
    rng = random.Random(5)
    for cells in (1, 2, 3, len(values)):
        rows = ", ".join(f"({v}::DOUBLE, {rng.randrange(cells)})" for v in values)
        con.execute(f"CREATE OR REPLACE TEMP TABLE t AS SELECT * FROM (VALUES {rows}) t(x, cell)")
        whole = con.execute(f"SELECT {exact_sum('x', 10)} FROM t").fetchone()[0]
        two = con.execute(f"SELECT {exact_sum_total('s')} FROM (SELECT {exact_sum_parts('x', 10, 's')} "
                          "FROM t GROUP BY cell)").fetchone()[0]
        if whole is not None and math.isnan(whole):
            assert math.isnan(two)
        elif whole is None or any(isinstance(v, float) and abs(v) >= 1e15 for v in values):
            assert two == whole or (whole is not None and two == pytest.approx(whole))  # the double fallback
        else:
            assert two == whole and isinstance(two, float)


def test_a_window_of_partitions_reads_as_one_view_or_its_empty_select(tmp_path):
    """Lake.days_between / files_between pick the window's days (oldest first, days without a partition
    skipped), and duck.parquet_view reads them, quoted, with their `dt`: every stage's window views."""
    from feedback_loop.lake.duck import parquet_view
    from feedback_loop.lake.files import Lake

    lake = Lake(str(tmp_path / "it's a lake"))
    con = duckdb.connect()
    for day, n in (("2026-11-01", 1), ("2026-11-03", 2), ("2026-11-04", 3)):
        target = lake.partition_file("staged", "surveys", day)
        Path(target).parent.mkdir(parents=True)
        con.execute(f"COPY (SELECT range AS v FROM range({n})) TO {literal(target)} (FORMAT parquet)")
    assert lake.days_between("staged", "surveys", "2026-11-02", "2026-11-04") == ["2026-11-03", "2026-11-04"]
    assert lake.files_between("staged", "surveys", "2026-11-02", "2026-11-03") == [
        lake.partition_file("staged", "surveys", "2026-11-03")]
    parquet_view(con, "s", lake.files_between("staged", "surveys", "2026-11-01", "2026-11-03"), "SELECT 1 WHERE false")
    assert con.execute("SELECT dt::VARCHAR, count(*) FROM s GROUP BY 1 ORDER BY 1").fetchall() == [
        ("2026-11-01", 1), ("2026-11-03", 2)]
    parquet_view(con, "s", lake.files_between("staged", "surveys", "2026-12-01", "2026-12-31"),
                 "SELECT NULL::BIGINT AS v WHERE false")
    assert con.execute("SELECT count(*) FROM s").fetchone() == (0,)
