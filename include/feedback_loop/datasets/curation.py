"""Curation steps shared by every fine-tuning dataset: normalisation, exact and near-duplicate removal,
label conflicts and the split by conversation.

Each step takes a list of `Example`s and returns what it kept plus a `Step` record (in, out, removed and
why) that goes into the version's manifest, so the counts of a version can be traced from candidates to
the files.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache

from feedback_loop.patches.minhash import batch_signatures as _batch_signatures  # guarded (patches/)

SPLITS = ("train", "validation", "test")


@dataclass(slots=True)
class Example:
    """One candidate training example and what is known about it.

    `records` holds the example in every output format (format name -> JSON object); `key` is the text
    duplicates are judged on; `group` keeps near-duplicate search within one label; `evidence` orders
    copies, highest kept."""

    dataset: str
    conversation_id: str
    source: str
    key: str
    records: dict
    evidence: tuple = ()
    group: str = ""
    label: str | None = None
    reviewer: str | None = None
    weight: float = 1.0
    meta: dict = field(default_factory=dict)
    tokens: int = 0
    split: str = ""
    example_id: str = ""
    merged: int = 1  # copies folded into this one by duplicate removal (itself included)
    # `normalise(key)`, kept by the curation step that first compares it on the examples it keeps
    # (`normalised_key`): not when the candidate is built, since every candidate of the window waits for
    # curation (~300 MB at 10 M events).
    normalised: str | None = None


@dataclass
class Step:
    step: str
    input: int
    output: int
    detail: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"step": self.step, "in": self.input, "out": self.output, "removed": self.input - self.output,
                **({"detail": self.detail} if self.detail else {})}


_NON_WORD = re.compile(r"[^\w\[\]]+")


def normalise(text: str) -> str:
    """Text as duplicates are compared: NFKC, case-folded, punctuation to spaces, single-spaced."""
    text = unicodedata.normalize("NFKC", text or "").casefold()
    return " ".join(_NON_WORD.sub(" ", text).split())


def normalised_key(e: Example) -> str:
    """The example's key as duplicates are compared, computed once per candidate (three steps compare it)."""
    if e.normalised is None:
        e.normalised = normalise(e.key)
    return e.normalised


def _best_first(examples: list[Example]) -> list[Example]:
    """Highest evidence first; the conversation id breaks ties so the choice is the same on every run."""
    return sorted(examples, key=lambda e: (tuple(-x for x in e.evidence), e.conversation_id, e.source))


def label_conflicts(examples: list[Example], human_sources: set[str]) -> tuple[list[Example], list[dict], Step]:
    """Hold out every example whose text human reviewers labelled differently.

    Per normalised text, each reviewer's latest label counts once; two reviewers disagreeing means the label
    cannot be guessed, so all copies of the text (the agent-confirmed ones too) are held out and listed.
    An agent-confirmed label that one human label contradicts yields to it (the human saw the case)."""
    by_text: dict[str, list[Example]] = defaultdict(list)
    canonical: dict[str, str] = {}  # copies of one text share one normalised string
    for e in examples:
        t = e.normalised if e.normalised is not None else normalise(e.key)
        e.normalised = t = canonical.setdefault(t, t)
        by_text[t].append(e)
    kept, conflicts, superseded = [], [], 0
    for text, group in sorted(by_text.items()):
        latest: dict[str, Example] = {}
        for e in sorted((e for e in group if e.source in human_sources), key=lambda e: e.meta.get("ts") or ""):
            latest[e.reviewer or e.conversation_id] = e
        human_labels = {e.label for e in latest.values()}
        if len(human_labels) > 1:
            conflicts.append({
                "text": group[0].key,
                "labels": sorted(human_labels),
                "reviewers": sorted({f"{e.reviewer}: {e.label}" for e in latest.values()}),
                "conversation_ids": sorted({e.conversation_id for e in group}),
                "examples_held_out": len(group),
            })
            continue
        for e in group:
            if human_labels and e.source not in human_sources and e.label not in human_labels:
                superseded += 1
                continue
            kept.append(e)
    step = Step("conflicts", len(examples), len(kept),
                {"conflicting_texts": len(conflicts), "held_out": len(examples) - len(kept) - superseded,
                 "confirmed_contradicted_by_a_reviewer": superseded})
    return kept, conflicts, step


def exact_duplicates(examples: list[Example]) -> tuple[list[Example], Step]:
    """One example per (group, normalised key): the best-evidenced copy, which records how many it stands for."""
    seen: dict[tuple[str, str], Example] = {}
    for e in _best_first(examples):
        # Kept on the copies that are kept only: a dropped copy may live on until the caller lets the input
        # go, and at 10 M events the normalised keys of every copy raised the stage's peak by ~130 MiB.
        k = (e.group, e.normalised if e.normalised is not None else normalise(e.key))
        if k in seen:
            keeper = seen[k]
            keeper.merged += e.merged
            if e.reviewer and e.reviewer not in keeper.meta.setdefault("reviewers", [keeper.reviewer] if keeper.reviewer else []):
                keeper.meta["reviewers"].append(e.reviewer)
            continue
        e.normalised = k[1]
        seen[k] = e
    kept = list(seen.values())
    return kept, Step("exact_duplicates", len(examples), len(kept))


def _grams(t: str, k: int = 5) -> list[str]:
    """A normalised key's character 5-grams (the whole key when shorter), repeats included: they do not
    change a minimum."""
    if len(t) <= k:
        return [t]
    return [t[i:i + k] for i in range(len(t) - k + 1)]


_SIGNATURE_BATCH = 2048  # 5-grams whose keys' signatures are computed together (a few MiB of temporaries)


NUM_PERM = 256  # MinHash permutations of the near-duplicate search


def signatures(keys, num_perm: int, normalised: list[str] | None = None):
    """The MinHash signature (uint32 array) of each key, in order (`signatures_of_normalised`); `normalised`:
    the keys already normalised."""
    return signatures_of_normalised(normalised if normalised is not None else (normalise(k) for k in keys), num_perm)


def signatures_of_normalised(texts, num_perm: int):
    """datasketch's MinHash signature of each key's 5-gram set (seed 1, its SHA-1 hash, its default
    `affine32` scheme: MurmurHash3 finaliser, then `a * h + b` modulo 2**32 per permutation, minimum over
    the 5-grams), in the keys' order, computed for a batch of keys at once: each distinct 5-gram of the
    batch is mixed and permuted once, and each key takes the minimum of its 5-grams' rows. The same
    uint32 arithmetic with datasketch's own finaliser and permutations, so the values are bit-identical to
    `MinHash.update_batch`; without a MinHash object, a byte string per 5-gram and a permutation of every
    5-gram of every key."""
    hashes: list[int] = []
    starts: list[int] = []
    known = _shingle_hashes.get
    for text in texts:
        starts.append(len(hashes))
        grams = _grams(text)
        found = list(map(known, grams))
        if None in found:
            found = [h if h is not None else _shingle_hash_of(g) for g, h in zip(grams, found)]
        hashes += found
        if len(hashes) >= _SIGNATURE_BATCH:
            yield from _batch_signatures(hashes, starts, num_perm)
            hashes, starts = [], []
    if starts:
        yield from _batch_signatures(hashes, starts, num_perm)


_SHINGLE_HASHES_LIMIT = 1 << 18
_shingle_hashes: dict[str, int] = {}


def _shingle_hash_of(gram: str) -> int:
    """datasketch's default hash (the first 4 bytes of SHA-1) of the 5-gram's UTF-8 bytes, remembered by
    the 5-gram: the same 5-grams recur in thousands of texts, and hashing them was most of this step."""
    from datasketch.hashfunc import sha1_hash32

    h = _shingle_hashes.get(gram)
    if h is None:
        if len(_shingle_hashes) >= _SHINGLE_HASHES_LIMIT:
            _shingle_hashes.clear()
        h = _shingle_hashes[gram] = sha1_hash32(gram.encode())
    return h


def near_duplicates(examples: list[Example], threshold: float, num_perm: int = NUM_PERM,
                    signatures_of=None) -> tuple[list[Example], Step]:
    """Drop examples whose key is a near-copy (MinHash Jaccard >= threshold over character 5-grams) of a
    better-evidenced kept example of the same group; LSH finds candidates, the MinHash estimate confirms.

    The LSH bands are tuned to miss few pairs (false negatives weighted 0.9): a missed duplicate leaks into
    the data, a false candidate only costs one comparison. Signatures are datasketch's MinHash values,
    computed for batches of examples at once (`signatures`; `signatures_of` may give them instead, as
    `signature_store.SignatureStore` does from earlier nights' partials); the kept ones are held by a
    `_BandIndex`, which takes the examples a block at a time."""
    ordered = _best_first(examples)
    bands, rows = _lsh_params(threshold, num_perm)
    index = _BandIndex(bands, rows, num_perm, threshold)
    kept: list[Example] = []
    groups: dict[str, int] = {}
    keys, normalised = [e.key for e in ordered], [normalised_key(e) for e in ordered]
    sigs = (signatures_of or signatures)(keys, num_perm, normalised=normalised)
    for start in range(0, len(ordered), _BandIndex.BLOCK):
        part = ordered[start:start + _BandIndex.BLOCK]
        block = [next(sigs) for _ in part]
        for e, match in zip(part, index.take(block, [groups.setdefault(e.group, len(groups)) for e in part])):
            if match is None:
                kept.append(e)
            else:
                kept[match].merged += e.merged
    return kept, Step("near_duplicates", len(examples), len(kept), {"threshold": threshold, "num_perm": num_perm,
                                                                    "shingles": "character 5-grams",
                                                                    "lsh_weights": [0.1, 0.9]})


class _BandIndex:
    """MinHash LSH over the kept signatures, as datasketch's MinHashLSH queries it (a candidate shares every
    value of at least one band of `rows` values with the query, in the same group), held in numpy arrays:
    the kept signatures as rows of uint32 chunks and, per band, the kept rows sorted by a 64-bit hash of the
    band's values (~220 bytes per kept example instead of a Python dict entry per band, ~1.2 KB).

    `take` decides a block of examples, in order: each one's match is the lowest kept position whose
    MinHash estimate reaches the threshold (the first kept, best-evidenced, example), as `min` over
    datasketch's candidates was; an example without one is kept and takes the next position. Candidates
    from earlier blocks are found with `searchsorted`, those of the block itself by sorting its band
    hashes; a pair is a candidate only when the band's values are equal, not only their hashes."""

    BLOCK = 2048  # examples decided together (a few MiB of temporaries)
    PAIRS = 1 << 15  # candidate pairs compared together (their signatures gathered: 32 MiB)
    CHUNK = 4096  # kept signatures per array

    def __init__(self, bands: int, rows: int, num_perm: int, threshold: float):
        import numpy as np

        self.np, self.bands, self.rows, self.num_perm, self.threshold = np, bands, rows, num_perm, threshold
        self.chunks: list = []  # uint32 arrays of CHUNK kept signatures each
        self.group = np.empty(0, dtype=np.int32)  # group of each kept row
        self.sorted_hashes = [np.empty(0, dtype=np.uint64) for _ in range(bands)]
        self.sorted_rows = [np.empty(0, dtype=np.int32) for _ in range(bands)]
        self.n = 0
        rng = np.random.default_rng(0x5EED)
        self.mult = rng.integers(1, 2**63, size=(bands, rows), dtype=np.uint64) | np.uint64(1)

    def band_hashes(self, sigs):
        """(n, bands) uint64: a multiply-xorshift hash of each band's values."""
        np = self.np
        values = sigs[:, :self.bands * self.rows].reshape(len(sigs), self.bands, self.rows).astype(np.uint64)
        h = np.zeros((len(sigs), self.bands), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for r in range(self.rows):
                h = (h ^ values[:, :, r]) * self.mult[:, r]
                h ^= h >> np.uint64(29)
        return h

    def signatures(self, rows):
        """The kept signatures of `rows` (an int array), gathered from their chunks."""
        np = self.np
        out = np.empty((len(rows), self.num_perm), dtype=np.uint32)
        chunk, at = np.divmod(rows, self.CHUNK)
        for c in np.unique(chunk):
            sel = chunk == c
            out[sel] = self.chunks[c][at[sel]]
        return out

    def _match(self, a, b):
        """Whether each pair of signature rows (a[k], b[k]; `a` may be one row) is a candidate that datasketch
        would confirm: equal in every value of at least one band, and the estimate (equal values over
        num_perm, as floats, as datasketch's `jaccard`) at the threshold or above."""
        np = self.np
        equal = a == b
        width = self.bands * self.rows
        band = equal[:, :width].reshape(len(equal), self.bands, self.rows).all(axis=2).any(axis=1)
        return band & (np.count_nonzero(equal, axis=1).astype(np.float64) / float(self.num_perm) >= self.threshold)

    def take(self, block: list, groups: list[int]) -> list[int | None]:
        np = self.np
        n = len(block)
        if not n:
            return []
        sigs = np.stack(block)
        group = np.asarray(groups, dtype=np.int32)
        hashes = self.band_hashes(sigs)
        # Earlier blocks: each example's lowest kept row that shares a band hash, is in its group and matches.
        # The pairs are expanded for a slice of the block at a time, at most PAIRS of them (one example's may
        # be more): a band value that thousands of kept examples share must not multiply the block's memory.
        lo = np.empty((n, self.bands), dtype=np.int64)
        count = np.empty((n, self.bands), dtype=np.int64)
        for b in range(self.bands):
            lo[:, b] = np.searchsorted(self.sorted_hashes[b], hashes[:, b], "left")
            count[:, b] = np.searchsorted(self.sorted_hashes[b], hashes[:, b], "right") - lo[:, b]
        best = np.full(n, self.n, dtype=np.int64)  # self.n: none
        per_example = np.cumsum(count.sum(axis=1))
        start = 0
        while start < n and per_example[-1] > (per_example[start - 1] if start else 0):
            done = per_example[start - 1] if start else 0
            stop = max(start + 1, int(np.searchsorted(per_example, done + self.PAIRS, "right")))
            self._earlier(sigs[start:stop], group[start:stop], lo[start:stop], count[start:stop], best[start:stop])
            start = stop
        # The block itself, in order: an example that shares a band hash with another of the block is looked up
        # among the block's kept examples, as datasketch's index would (only those go through Python dicts).
        shared = np.zeros((n, self.bands), dtype=bool)
        for b in range(self.bands):
            order = np.argsort(hashes[:, b], kind="stable")
            same = hashes[order[1:], b] == hashes[order[:-1], b]
            shared[order[1:][same], b] = True
            shared[order[:-1][same], b] = True
        has_shared = shared.any(axis=1)
        tables: list[dict] = [{} for _ in range(self.bands)]
        matches: list[int | None] = []
        kept: dict[int, int] = {}  # the block's kept examples -> their kept row
        band_numbers = range(self.bands)
        for i, found, local in zip(range(n), best.tolist(), has_shared.tolist()):
            if found < self.n:
                matches.append(found)
                continue
            if local:
                bands = [(b, k) for b, k, s in zip(band_numbers, hashes[i].tolist(), shared[i].tolist()) if s]
                others = sorted({j for b, k in bands for j in tables[b].get(k, ()) if groups[j] == groups[i]})
                if others:
                    ok = self._match(sigs[i], sigs[others])
                    rows = [kept[j] for j, yes in zip(others, ok.tolist()) if yes]
                    if rows:
                        matches.append(min(rows))
                        continue
                for b, k in bands:
                    tables[b].setdefault(k, []).append(i)
            kept[i] = self.n + len(kept)
            matches.append(None)
        if kept:
            self._add(sigs, hashes, group, np.fromiter(kept, dtype=np.int64, count=len(kept)))
        return matches

    def _earlier(self, sigs, group, lo, count, best) -> None:
        """Lower `best` (a view) to each example's lowest matching kept row among the candidates that
        `lo`/`count` (per band: where its hash starts among the sorted kept rows, how many share it) give."""
        np = self.np
        n = len(sigs)
        qs, rs = [], []
        for b in range(self.bands):
            c = count[:, b]
            total = int(c.sum())
            if total:
                q = np.repeat(np.arange(n), c)
                r = self.sorted_rows[b][np.repeat(lo[:, b], c) + np.arange(total) - np.repeat(np.cumsum(c) - c, c)]
                same = self.group[r] == group[q]
                qs.append(q[same])
                rs.append(r[same].astype(np.int64))
        if not qs:
            return
        pairs = np.unique(np.concatenate(qs) * self.n + np.concatenate(rs))  # a pair found in several bands once
        for s in range(0, len(pairs), self.PAIRS):
            q, r = np.divmod(pairs[s:s + self.PAIRS], self.n)
            ok = self._match(sigs[q], self.signatures(r))
            np.minimum.at(best, q[ok], r[ok])

    def _add(self, sigs, hashes, group, new) -> None:
        """Append the block's kept examples (`new`: their places in the block, in kept order)."""
        np = self.np
        rows = np.arange(self.n, self.n + len(new), dtype=np.int32)
        for k, at in zip(new, rows):
            chunk, offset = divmod(int(at), self.CHUNK)
            if offset == 0:
                self.chunks.append(np.empty((self.CHUNK, self.num_perm), dtype=np.uint32))
            self.chunks[chunk][offset] = sigs[k]
        self.group = np.concatenate([self.group, group[new]])
        for b in range(self.bands):
            order = np.argsort(hashes[new, b], kind="stable")  # inserted in order, so the band stays sorted
            h = hashes[new, b][order]
            at = np.searchsorted(self.sorted_hashes[b], h)
            self.sorted_hashes[b] = np.insert(self.sorted_hashes[b], at, h)
            self.sorted_rows[b] = np.insert(self.sorted_rows[b], at, rows[order])
        self.n += len(new)


@lru_cache(maxsize=16)
def _lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) for the threshold, false negatives weighted 0.9 (datasketch integrates numerically to find
    them, which costs about 0.2 s: once per setting, not once per label)."""
    from datasketch import MinHashLSH

    probe = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.1, 0.9))
    return probe.b, probe.r


def split_of(conversation_id: str, validation_share: float, test_share: float) -> str:
    """train / validation / test from a hash of the conversation id alone: stable across versions, and every
    example of one conversation lands in the same split."""
    h = int.from_bytes(hashlib.sha256(f"acsr-split:{conversation_id}".encode()).digest()[:8], "big") / 2**64
    if h < test_share:
        return "test"
    if h < test_share + validation_share:
        return "validation"
    return "train"


def assign_splits(examples: list[Example], validation_share: float, test_share: float) -> Step:
    counts = dict.fromkeys(SPLITS, 0)
    for e in examples:
        e.split = split_of(e.conversation_id, validation_share, test_share)
        counts[e.split] += 1
    return Step("split", len(examples), len(examples), {"by": "sha256(conversation_id)", **counts,
                                                         "validation_share": validation_share,
                                                         "test_share": test_share})
