"""Stale-article statistics (gaps/stale.sql) equal the query they replaced, which unnested every column of
every conversation of both windows: the counts from two unnested columns and the overridden conversations'
lists from those rows alone give every article the same values (its clauses as a multiset: neither query
orders them, `stale_articles` does)."""

from __future__ import annotations

import random

import duckdb
import pyarrow as pa
from feedback_loop.gaps.kb import stale_articles
from feedback_loop.gaps.params import GapParams
from feedback_loop.lake.sql import exact_sum, fill, load_sql

REPLACED = """WITH u AS (SELECT conversation_id, customer_id, in_window, override_clauses, n_overrides_failed, weight,
                  escalated, handle_time_s, unnest(kb_articles) AS article_id FROM conv)
SELECT article_id,
    count(*) FILTER (in_window) AS retrieved_now,
    count(*) FILTER (NOT in_window) AS retrieved_before,
    count(*) FILTER (in_window AND len(override_clauses) > 0) AS overridden,
    list(conversation_id ORDER BY conversation_id) FILTER (in_window AND len(override_clauses) > 0) AS overridden_ids,
    count(DISTINCT customer_id) FILTER (in_window AND len(override_clauses) > 0) AS overridden_customers,
    flatten(list(override_clauses) FILTER (in_window AND len(override_clauses) > 0)) AS clauses,
    {{evidence_sum}} AS evidence
FROM u GROUP BY article_id"""
EVIDENCE = exact_sum("CASE WHEN in_window AND len(override_clauses) > 0 THEN weight END", 10)


def _conv(con, n: int = 4000, seed: int = 3) -> None:
    rng = random.Random(seed)
    articles = [None, "A1", "A2", "A3", "A-prev-only", "A-overridden"]
    rows = []
    for i in range(n):
        in_window = rng.random() < 0.6
        arts = [] if rng.random() < 0.1 else None if rng.random() < 0.05 else rng.sample(articles, rng.randint(1, 3))
        if not in_window and arts is not None and rng.random() < 0.3:
            arts = arts + ["A-prev-only"]
        elif arts is not None:
            arts = [a for a in arts if a != "A-prev-only"]
        clauses = rng.choice([[]] * 30 + [None, ["P-1"], ["P-1", "P-2"], ["P-3"]])
        if arts and "A-overridden" in arts and rng.random() < 0.7:
            clauses = ["P-9"]
        rows.append((f"C{i:05d}", rng.choice([None, *(f"U{k}" for k in range(300))]), in_window, clauses,
                     rng.randint(0, 2), rng.choice([0.0, 0.25, 1.0 / 3, 2.5, None]), rng.random() < 0.2, 60.0, arts))
    schema = pa.schema([("conversation_id", pa.string()), ("customer_id", pa.string()), ("in_window", pa.bool_()),
                        ("override_clauses", pa.list_(pa.string())), ("n_overrides_failed", pa.int64()),
                        ("weight", pa.float64()), ("escalated", pa.bool_()), ("handle_time_s", pa.float64()),
                        ("kb_articles", pa.list_(pa.string()))])
    con.register("generated", pa.Table.from_pylist([dict(zip(schema.names, r)) for r in rows], schema=schema))
    con.execute("CREATE TEMP TABLE conv AS SELECT * FROM generated")


def _by_article(rows) -> dict:
    return {r[0]: (*r[:6], sorted(r[6]) if r[6] is not None else None, r[7]) for r in rows}


def test_stale_statistics_equal_the_replaced_query():
    con = duckdb.connect()
    _conv(con)
    new = _by_article(con.execute(fill(load_sql("feedback_loop.gaps", "stale.sql"), evidence_sum=EVIDENCE)).fetchall())
    old = _by_article(con.execute(fill(REPLACED, evidence_sum=EVIDENCE)).fetchall())
    assert new == old
    assert new["A-prev-only"][1] == 0 and new["A-prev-only"][2] > 0 and new["A-prev-only"][3] == 0
    assert new["A-overridden"][3] > 100 and new["A-overridden"][5] > 50 and new["A-overridden"][7] > 0
    assert None in new and "A1" in new


def test_an_article_humans_keep_overriding_is_stale():
    con = duckdb.connect()
    _conv(con)
    published = [(a, f"title {a}", "", [], "published", None) for a in ("A1", "A-overridden", "A-prev-only")]
    rows = {r["article_id"]: r for r in stale_articles(con, GapParams(), published)}
    assert "overridden on policy clause P-9" in rows["A-overridden"]["reason"]
    assert "not retrieved in the window (retrieved" in rows["A-prev-only"]["reason"] and "A1" not in rows
