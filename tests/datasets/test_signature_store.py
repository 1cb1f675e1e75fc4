"""The near-duplicate signature partials (datasets/signature_store.py): what a night reads back is what
computing gives, whatever mix of stored and new keys, reruns and backfills; files of another key are not
used; a night's rerun rewrites its partition."""

from __future__ import annotations

import os

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from feedback_loop.datasets import curation, signature_store
from feedback_loop.datasets.signature_store import NAME, SignatureStore
from feedback_loop.lake.files import Lake

KEYS = [f"my card number {i} was charged twice, please refund order {i * 7}" for i in range(300)]
KEYS += ["", "a", "Hello!", "hello", "héllo wörld ✓", "x" * 2000] + KEYS[:5]  # short, empty, repeats


def _night(lake: Lake, start: str, day: str, keys: list[str], num_perm: int = 256) -> tuple[list, SignatureStore]:
    con = duckdb.connect()
    store = SignatureStore(con, lake, start, day)
    try:
        sigs = list(store.signatures(keys, num_perm))
        store.save(day)
    finally:
        con.close()
    return sigs, store


def _expected(keys, num_perm=256):
    return [s.copy() for s in curation.signatures(keys, num_perm)]


def _same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype == np.uint32 and np.array_equal(x, y)


def _rows(lake: Lake, day: str) -> int:
    return pq.read_metadata(lake.partition_file("partials", NAME, day)).num_rows


def test_stored_signatures_are_the_computed_ones_and_only_new_keys_are_computed(tmp_path, monkeypatch):
    lake = Lake(str(tmp_path / "lake"))
    first, store = _night(lake, "2026-11-01", "2026-11-01", KEYS[:200])
    _same(first, _expected(KEYS[:200]))
    assert (store.computed, store.reused) == (200, 0) and _rows(lake, "2026-11-01") == 200

    # The next night, in another order: the 200 known keys and 5 repeats of them reused, the rest signed
    # and stored once per normalised text ("Hello!" and "hello" are one).
    keys = KEYS[::-1]
    second, store = _night(lake, "2026-11-01", "2026-11-02", keys)
    _same(second, _expected(keys))
    assert store.reused == 205 and store.computed == len(keys) - 205
    assert _rows(lake, "2026-11-02") == len(set(map(curation.normalise, KEYS))) - 200 == 105

    # A third night with everything stored computes nothing.
    monkeypatch.setattr(curation, "signatures_of_normalised", lambda *a, **k: pytest.fail("computed again"))
    third, store = _night(lake, "2026-11-01", "2026-11-03", keys)
    _same(third, second)
    assert store.computed == 0 and not lake.has_partition("partials", NAME, "2026-11-03")


def test_a_backfill_signing_known_keys_again_and_a_rerun_keep_one_value_per_key(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    _night(lake, "2026-11-02", "2026-11-02", KEYS[:50])
    # A backfill of the day before: its window does not reach 11-02, so it signs the same keys again.
    _, store = _night(lake, "2026-11-01", "2026-11-01", KEYS[:50])
    assert store.computed == 50
    # A window with both nights: the duplicated keys give one signature each, still the right ones.
    both, _ = _night(lake, "2026-11-01", "2026-11-03", KEYS[:50])
    _same(both, _expected(KEYS[:50]))
    # A rerun of 11-02 that signs nothing new still rewrites its partition, with the same rows.
    path = lake.partition_file("partials", NAME, "2026-11-02")
    before = pq.read_table(path)
    mtime = os.stat(path).st_mtime_ns
    _, store = _night(lake, "2026-11-01", "2026-11-02", KEYS[:50])
    assert store.computed == 0
    assert pq.read_table(path).equals(before) and os.stat(path).st_mtime_ns > mtime


def test_files_of_another_key_or_num_perm_are_not_used(tmp_path, monkeypatch):
    lake = Lake(str(tmp_path / "lake"))
    _night(lake, "2026-11-01", "2026-11-01", KEYS[:20])
    # Another num_perm is computed without the store (and stored nowhere).
    other, store = _night(lake, "2026-11-01", "2026-11-02", KEYS[:20], num_perm=128)
    _same(other, _expected(KEYS[:20], 128))
    assert store.reused == 0 and not lake.has_partition("partials", NAME, "2026-11-02")
    # Another 5-gram code (or datasketch release) makes every stored file stale.
    signature_store.signature_key.cache_clear()
    monkeypatch.setattr(signature_store, "signature_key", lambda num_perm: "another key")
    again, store = _night(lake, "2026-11-01", "2026-11-02", KEYS[:20])
    _same(again, _expected(KEYS[:20]))
    assert (store.computed, store.reused) == (20, 0)


def test_a_failed_build_leaves_no_partition_and_no_spill(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    con = duckdb.connect()
    store = SignatureStore(con, lake, "2026-11-01", "2026-11-01")
    list(store.signatures(KEYS[:30], 256))
    spill_dir = store._spill_dir
    store.close()  # what build_datasets does when a dataset fails before save
    con.close()
    assert not lake.has_partition("partials", NAME, "2026-11-01")
    assert not os.path.exists(spill_dir)
