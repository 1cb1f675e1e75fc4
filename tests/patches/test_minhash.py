"""The guarded batched MinHash (feedback_loop.patches.minhash): signatures equal to datasketch's
MinHash.update_batch over each key's 5-grams, and datasketch itself when its private code changed or is gone."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from datasketch import MinHash
from feedback_loop.datasets import curation
from feedback_loop.patches import minhash as mh
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pii_texts import corpus

NUM_PERM = 256  # curation.near_duplicates' default


@pytest.fixture(autouse=True)
def _fresh_guard():
    mh.batched_path_usable.cache_clear()
    yield
    mh.batched_path_usable.cache_clear()


def _stock(key: str, num_perm: int = NUM_PERM) -> np.ndarray:
    m = MinHash(num_perm=num_perm, seed=1)
    m.update_batch([g.encode("utf-8") for g in curation._grams(curation.normalise(key))])
    return m.hashvalues


def _keys() -> list[str]:
    texts = corpus()
    # Near copies, repeats, very short and empty keys, non-ASCII: what dataset examples look like.
    return texts + [t.upper() + " !" for t in texts[:20]] + ["", "a", "hello", "héllo wörld ✓", "x" * 3000]


def _assert_equal(sigs, keys, num_perm=NUM_PERM):
    sigs = list(sigs)
    assert len(sigs) == len(keys)
    for key, sig in zip(keys, sigs):
        expected = _stock(key, num_perm)
        assert sig.dtype == expected.dtype and np.array_equal(sig, expected), key


def test_the_batched_path_is_in_use_with_the_pinned_library():
    """If this fails after an upgrade, the guard fell back: re-read datasketch's code and re-pin."""
    assert mh.batched_path_usable()


@pytest.mark.parametrize("num_perm", [NUM_PERM, 128])
def test_batched_signatures_equal_update_batch(num_perm):
    keys = _keys()
    _assert_equal(curation.signatures(keys, num_perm), keys, num_perm)  # the stage's own entry point
    _assert_equal(curation.signatures(keys, num_perm), keys, num_perm)  # again: 5-gram hashes remembered


@hsettings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=80), min_size=1, max_size=12))
def test_batched_signatures_equal_update_batch_on_generated_keys(keys):
    _assert_equal(curation.signatures(keys, NUM_PERM), keys)


@pytest.mark.parametrize("change", ["hash", "fmix_gone"])
def test_changed_or_missing_private_code_falls_back_to_datasketch(monkeypatch, caplog, change):
    pins = dict(mh._EXPECTED_SOURCE_SHA256)
    if change == "hash":
        pins[f"{mh._M}:MinHash.update_batch"] = "0" * 64
    else:  # a datasketch whose finaliser is gone or renamed (datasketch's own code needs it: pin another name)
        pins[f"{mh._M}:_fmix_gone"] = pins.pop(f"{mh._M}:_fmix")
    monkeypatch.setattr(mh, "_EXPECTED_SOURCE_SHA256", pins)
    monkeypatch.setattr("feedback_loop.patches._warned", set())
    keys = _keys()[:40]
    with caplog.at_level(logging.WARNING, logger="feedback_loop.patches"):
        _assert_equal(curation.signatures(keys, NUM_PERM), keys)
        _assert_equal(curation.signatures(keys, NUM_PERM), keys)
    assert not mh.batched_path_usable()
    warnings = [r for r in caplog.records if "fall back to MinHash.update_batch" in r.getMessage()]
    named = "MinHash.update_batch: expected" if change == "hash" else "_fmix_gone: expected sha256"
    assert len(warnings) == 1 and named in warnings[0].getMessage()  # says what changed
