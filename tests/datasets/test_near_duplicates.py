"""`curation.near_duplicates` against datasketch's own MinHashLSH, example by example.

The band index decides a block of examples at once (candidates of earlier blocks by `searchsorted`, those of
the block by sorting its band hashes); the reference is the plain sequential algorithm with datasketch's
index: in best-first order, query the group's `MinHashLSH` with the example's MinHash, keep the lowest kept
position whose `jaccard` reaches the threshold, else insert it. Texts are generated so that many pairs sit
around the threshold, share bands without being similar, repeat across groups, and fall on both sides of a
block's edge (blocks of a few examples as well as the real size)."""

from __future__ import annotations

import random

import pytest
from datasketch import MinHash, MinHashLSH
from feedback_loop.datasets import curation
from feedback_loop.datasets.curation import Example

WORDS = ("card", "arrived", "refund", "order", "cancel", "my", "the", "please", "account", "delivery", "late",
         "payment", "twice", "charged", "address", "change", "pin", "blocked", "exchange", "rate", "why", "is")


def _texts(rng: random.Random, n: int) -> list[str]:
    """Families of texts: a base sentence and copies with a word or two changed, dropped or added."""
    out = []
    while len(out) < n:
        base = [rng.choice(WORDS) for _ in range(rng.randint(3, 14))]
        for _ in range(rng.randint(1, 8)):
            words = list(base)
            for _ in range(rng.randint(0, 2)):
                at = rng.randrange(len(words))
                match rng.randrange(3):
                    case 0:
                        words[at] = rng.choice(WORDS)
                    case 1 if len(words) > 1:
                        del words[at]
                    case _:
                        words.insert(at, rng.choice(WORDS))
            out.append(" ".join(words) + rng.choice(("", "!", "?", " please")))
    return out[:n]


def _examples(seed: int, n: int, groups: int) -> list[Example]:
    rng = random.Random(seed)
    return [Example("sft", f"c{i:05d}", "csat", key=t, records={}, evidence=(rng.randint(0, 3), rng.random()),
                    group=f"g{rng.randrange(groups)}") for i, t in enumerate(_texts(rng, n))]


def _reference(examples: list[Example], threshold: float, num_perm: int = curation.NUM_PERM):
    """(conversation id, copies) of every kept example, by datasketch's MinHashLSH queried one at a time."""
    ordered = curation._best_first(examples)
    params = curation._lsh_params(threshold, num_perm)
    sigs = curation.signatures([e.key for e in ordered], num_perm)
    lsh: dict[str, MinHashLSH] = {}
    kept: list[tuple[Example, MinHash]] = []
    merged: list[int] = []
    for e, sig in zip(ordered, sigs):
        m = MinHash(num_perm=num_perm, hashvalues=sig, scheme="affine32")
        index = lsh.setdefault(e.group, MinHashLSH(num_perm=num_perm, params=params))
        found = [p for p in index.query(m) if kept[p][1].jaccard(m) >= threshold]
        if found:
            merged[min(found)] += 1
            continue
        index.insert(len(kept), m)
        kept.append((e, m))
        merged.append(1)
    return [(e.conversation_id, k) for (e, _), k in zip(kept, merged)]


@pytest.mark.parametrize(("seed", "n", "groups", "block", "threshold"), [
    (1, 600, 1, 7, 0.85),
    (2, 600, 3, 64, 0.85),
    (3, 900, 2, 2048, 0.85),
    (4, 500, 1, 33, 0.7),
    (5, 400, 4, 1, 0.9),
])
def test_the_band_index_keeps_what_datasketch_keeps(monkeypatch, seed, n, groups, block, threshold):
    monkeypatch.setattr(curation._BandIndex, "BLOCK", block)
    monkeypatch.setattr(curation._BandIndex, "PAIRS", 5)  # comparisons cut into slices too
    examples = _examples(seed, n, groups)
    expected = _reference(examples, threshold)
    kept, step = curation.near_duplicates(_examples(seed, n, groups), threshold)
    assert [(e.conversation_id, e.merged) for e in kept] == expected
    assert step.input == n and step.output == len(expected)
    assert n - len(expected) > n // 20  # the texts hold near-duplicates to find


def test_a_band_hash_alone_is_not_a_candidate(monkeypatch):
    """Every band hash made equal: a pair still needs a band equal in value (and the estimate), as in datasketch."""
    import numpy as np

    monkeypatch.setattr(curation._BandIndex, "band_hashes",
                        lambda self, sigs: np.zeros((len(sigs), self.bands), dtype=np.uint64))
    monkeypatch.setattr(curation._BandIndex, "BLOCK", 16)
    examples = _examples(6, 300, 2)
    expected = _reference(examples, 0.85)
    kept, _ = curation.near_duplicates(_examples(6, 300, 2), 0.85)
    assert [(e.conversation_id, e.merged) for e in kept] == expected


def test_a_band_value_shared_by_thousands_is_expanded_a_slice_at_a_time(monkeypatch):
    """3,000 signatures equal in their first band and different elsewhere: every pair is a candidate and none
    is similar, so all are kept; the second block's ~2 M candidate pairs are expanded at most PAIRS at a time
    (or one example's at a time), never the block's at once."""
    import numpy as np

    rng = np.random.default_rng(7)
    sigs = rng.integers(0, 2**32, size=(3000, curation.NUM_PERM), dtype=np.uint32)
    sigs[:, :curation._lsh_params(0.85, curation.NUM_PERM)[1]] = 12345
    examples = [Example("sft", f"c{i:05d}", "csat", key=f"text {i}", records={}, evidence=(1,)) for i in range(3000)]
    slices = []
    earlier = curation._BandIndex._earlier

    def spy(self, sigs, group, lo, count, best):
        slices.append((len(sigs), int(count.sum())))
        return earlier(self, sigs, group, lo, count, best)

    monkeypatch.setattr(curation._BandIndex, "_earlier", spy)
    monkeypatch.setattr(curation._BandIndex, "PAIRS", 10_000)
    kept, _ = curation.near_duplicates(examples, 0.85, signatures_of=lambda keys, *a, **k: iter(sigs))
    assert len(kept) == 3000
    assert sum(pairs for _, pairs in slices) == (3000 - 2048) * 2048  # every candidate pair of the second block
    assert all(pairs <= 10_000 or n == 1 for n, pairs in slices) and len(slices) > 100
