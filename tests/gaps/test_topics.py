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
