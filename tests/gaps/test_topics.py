"""The text space of gap topics: a space fitted on a sample projects more texts exactly as it projected its
own (the previous window's messages are projected a block at a time, after the rest)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from feedback_loop.gaps import topics
from gap_lake import utterances


def _texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    pool = [u for intent_utterances in utterances().values() for u in intent_utterances]
    return [rng.choice(pool) + rng.choice(["", " please", " today", " again?", " asap"]) for _ in range(n)]


def test_projected_texts_get_the_rows_they_get_among_the_fitted_space(monkeypatch):
    monkeypatch.setattr(topics, "TRANSFORM_BLOCK", 97)  # block edges fall inside the slices below
    texts = _texts(1200, 3)
    space = topics.fit_text_space(texts, lsa_components=20, seed=0, fit_texts=texts[::3])
    assert space.n_fitted == 400 and space.semantic.shape == (1200, 20)
    for start, stop in ((0, 1200), (37, 1234), (500, 501), (611, 1100)):
        tfidf, sem = space.project(texts[start:stop])
        assert sem.dtype == np.float32 and np.array_equal(sem, space.semantic[start:stop])
        assert (tfidf != space.tfidf[start:stop]).nnz == 0
        assert np.array_equal(tfidf.indptr, space.tfidf[start:stop].indptr)


def test_a_space_fitted_on_every_text_does_not_project():
    texts = _texts(50, 4)
    space = topics.fit_text_space(texts, lsa_components=5)
    with pytest.raises(ValueError, match="fitted on a sample"):
        space.project(texts[:3])


@pytest.mark.parametrize("fit_every_third", [True, False])
def test_each_distinct_text_projected_once_gives_the_same_bits_as_every_text(monkeypatch, fit_every_third):
    monkeypatch.setattr(topics, "TRANSFORM_BLOCK", 97)
    # Few distinct messages, repeated, with texts that have no topic word (empty TF-IDF rows) among them.
    texts = _texts(150, 5) * 6 + ["", "ok", "hi!!"] * 20
    random.Random(6).shuffle(texts)
    fit = texts[::3] if fit_every_third else None
    monkeypatch.setattr(topics, "DEDUPE_TEXTS", False)
    plain = topics.fit_text_space(texts, lsa_components=20, seed=0, fit_texts=fit)
    monkeypatch.setattr(topics, "DEDUPE_TEXTS", True)
    assert topics._distinct(texts) is not None  # the path under test is taken
    once = topics.fit_text_space(texts, lsa_components=20, seed=0, fit_texts=fit)
    assert np.array_equal(once.semantic, plain.semantic) and once.semantic.dtype == plain.semantic.dtype
    assert (once.tfidf != plain.tfidf).nnz == 0 and np.array_equal(once.tfidf.indptr, plain.tfidf.indptr)
    if fit_every_third:
        tfidf, sem = once.project(texts[40:700])
        assert np.array_equal(sem, plain.semantic[40:700]) and (tfidf != plain.tfidf[40:700]).nnz == 0


def test_texts_that_rarely_repeat_are_projected_as_they_come():
    texts = _texts(100, 7)
    assert topics._distinct(texts[:1] * 10) is not None
    assert topics._distinct(list(dict.fromkeys(texts))) is None


def test_repeated_rows_read_as_the_expanded_array():
    rng = np.random.default_rng(2)
    unique = rng.random((7, 4), dtype=np.float32)
    inverse = rng.integers(0, 7, 50)
    held, full = topics.RepeatedRows(unique, inverse), unique[inverse]
    assert held.shape == full.shape and held.dtype == full.dtype and len(held) == 50
    assert np.array_equal(np.asarray(held), full) and np.array_equal(held[3], full[3])
    assert np.array_equal(held[5:40][2:9], full[5:40][2:9]) and held[5:40].shape == (35, 4)
    for rows in ([1, 4, 4, 49], np.arange(10, 30), np.flatnonzero(inverse == 2), inverse > 3, []):
        assert np.array_equal(held[rows], full[rows])
    assert held[[]].shape == (0, 4)
