"""The token-count partials (datasets/token_store.py): a night stores what it encoded, in key order; a
later night reads the counts back instead of encoding; a rerun of the night keeps its earlier rows, adds
the new ones once and rewrites the partition; files of another tokenizer are not used."""

from __future__ import annotations

import os

import duckdb
import pyarrow.parquet as pq
import pytest
from encode_spy import record_encodes
from feedback_loop.datasets import token_store, tokens
from feedback_loop.lake.files import Lake, parquet_metadata

TEXTS = [f"Where is my refund for order {i}? It has been {i % 9} days." for i in range(40)] + ["", "héllo ✓"]


def _encoded(text: str) -> int:
    return len(tokens.encoding().encode(text, disallowed_special=()))


def _night(lake: Lake, start: str, day: str, texts: list[str]) -> tuple[list[int], int, int]:
    """Load the window's counts, count `texts`, save; (counts, loaded, saved)."""
    con = duckdb.connect()
    try:
        loaded = token_store.load(con, lake, start, day)
        counts = [tokens.count(t) for t in texts]
        saved = token_store.save(con, lake, day)
    finally:
        con.close()
    return counts, loaded, saved


def _rows(lake: Lake, day: str) -> list[tuple[bytes, int]]:
    t = pq.read_table(lake.partition_file("partials", token_store.NAME, day))
    return list(zip(t["text_key"].to_pylist(), t["tokens"].to_pylist()))


@pytest.fixture(autouse=True)
def _fresh_counts():
    tokens.remember({})
    yield
    tokens.remember({})


def test_a_night_stores_its_counts_in_key_order_and_the_next_night_reads_them_back(tmp_path, monkeypatch):
    lake = Lake(str(tmp_path / "lake"))
    counts, loaded, saved = _night(lake, "2026-11-01", "2026-11-01", TEXTS[:30])
    assert counts == [_encoded(t) for t in TEXTS[:30]]
    assert (loaded, saved) == (0, 30)
    rows = _rows(lake, "2026-11-01")
    assert rows == sorted((tokens.text_key(t), _encoded(t)) for t in TEXTS[:30])
    con = duckdb.connect()
    try:
        meta = parquet_metadata(con, lake.partition_file("partials", token_store.NAME, "2026-11-01"))
    finally:
        con.close()
    assert meta["tokenizer"] == tokens.store_key()

    # The next night encodes only the texts no earlier night stored.
    expected = [_encoded(t) for t in TEXTS]
    encoded = record_encodes(monkeypatch)
    counts, loaded, saved = _night(lake, "2026-11-01", "2026-11-02", TEXTS)
    assert counts == expected
    assert loaded == 30 and saved == len(TEXTS) - 30 and sorted(encoded) == sorted(TEXTS[30:])


def test_a_rerun_keeps_the_nights_rows_adds_new_ones_once_and_rewrites_the_partition(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    _night(lake, "2026-11-01", "2026-11-01", TEXTS[:10])
    # A rerun of the same night whose window (it includes the night itself) holds the 10 stored counts:
    # five of them and five new texts are counted; the partition holds 15 rows, each key once, in order.
    path = lake.partition_file("partials", token_store.NAME, "2026-11-01")
    mtime = os.stat(path).st_mtime_ns
    _, loaded, saved = _night(lake, "2026-11-01", "2026-11-01", TEXTS[5:15])
    assert (loaded, saved) == (10, 5)
    rows = _rows(lake, "2026-11-01")
    assert rows == sorted((tokens.text_key(t), _encoded(t)) for t in TEXTS[:15])
    assert os.stat(path).st_mtime_ns > mtime
    # A rerun with nothing new still rewrites the partition, with the same rows.
    mtime = os.stat(path).st_mtime_ns
    _, _, saved = _night(lake, "2026-11-01", "2026-11-01", TEXTS[:15])
    assert saved == 0 and _rows(lake, "2026-11-01") == rows and os.stat(path).st_mtime_ns > mtime


def test_counts_of_another_tokenizer_are_not_used(tmp_path, monkeypatch):
    lake = Lake(str(tmp_path / "lake"))
    _night(lake, "2026-11-01", "2026-11-01", TEXTS[:10])
    monkeypatch.setattr(tokens, "store_key", lambda: "another tokenizer")
    _, loaded, saved = _night(lake, "2026-11-01", "2026-11-02", TEXTS[:10])
    assert (loaded, saved) == (0, 10)


def test_a_text_counted_once_is_found_by_its_hash_not_kept_in_the_memo(monkeypatch):
    """`count_unique` (a tool example's whole JSON): the same count as `count`, stored among tonight's
    counts, not held in `count`'s memo of texts, and not encoded again when it comes back."""
    text = '{"messages": [{"role": "user", "content": "card 4111 1111 1111 1111 stolen"}], "tools": []}'
    tokens.remember({})
    n = tokens.count_unique(text)
    assert n == _encoded(text) > 0
    assert tokens._count.cache_info().currsize == 0
    assert tokens.new_counts() == {tokens.text_key(text): n}

    def no_encoding():
        raise AssertionError("encoded again")

    monkeypatch.setattr(tokens, "encoding", no_encoding)
    assert tokens.count_unique(text) == n
    assert tokens.count(text) == n  # `count` finds tonight's count too
    tokens.remember({})
