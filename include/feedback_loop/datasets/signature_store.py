"""Per-night partials of the near-duplicate signatures: `<lake>/partials/dataset_minhash/dt=D/part.parquet`
holds (hash of a normalised key, its MinHash signature) for every key a dataset build first signed on night D.

Why: every night re-curates the whole trailing window, and computing the MinHash signature of every
candidate of 28 days again was the largest step of a steady-state curation after the token counts (issue
18). A signature is a pure function of the normalised key, the number of permutations and datasketch's
hashing, so the stored value is the one computing would give and the versions are byte-identical. Files
written under another key (`signature_key` in their Parquet metadata) are ignored.

Memory stays bounded: the window's stored signatures are never loaded whole. For one dataset, the keys'
hashes go to DuckDB, which joins them with the window's files and streams the signatures back in the keys'
order, a batch at a time; the ones not found are computed and appended to a local spill file, stored when
the night ends (`save`).
"""

from __future__ import annotations

import hashlib
import inspect
from functools import lru_cache

from feedback_loop.datasets import curation
from feedback_loop.datasets.nightly_store import LAYER, NightlyStore  # noqa: F401 (LAYER: where the files are)
from feedback_loop.lake.files import Lake

NAME = "dataset_minhash"


@lru_cache(maxsize=8)
def signature_key(num_perm: int) -> str:
    """What a stored signature depends on: the permutations, datasketch's release and how a key becomes its
    5-grams (the source of `normalise` and `_grams`)."""
    import datasketch

    code = hashlib.sha256((inspect.getsource(curation.normalise) + inspect.getsource(curation._grams)).encode())
    return f"minhash:{num_perm}:datasketch {datasketch.__version__}:{code.hexdigest()[:16]}"


def key_hash(normalised: str) -> bytes:
    return hashlib.blake2b(normalised.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class SignatureStore(NightlyStore):
    """The signatures stored by the nights of a window, and the ones this night computes.

    `signatures(keys, num_perm)` is the callable `curation.near_duplicates` takes: the keys' signatures in
    order, stored ones read back, the rest computed (counted in `computed` and `reused`). Another
    `num_perm` than the store's is computed without it."""

    name, metadata_field = NAME, "signature_key"

    def __init__(self, con, lake: Lake, start: str, end: str, num_perm: int = curation.NUM_PERM):
        self.num_perm = num_perm
        super().__init__(con, lake, start, end)

    def key(self) -> str:
        return signature_key(self.num_perm)

    def schema(self):
        import pyarrow as pa

        return pa.schema([("key_hash", pa.binary()), ("signature", pa.binary())], metadata={"signature_key": self.key()})

    def signatures(self, keys: list[str], num_perm: int, normalised: list[str] | None = None):
        import numpy as np
        import pyarrow as pa

        if num_perm != self.num_perm:
            yield from curation.signatures(keys, num_perm, normalised)
            return
        if normalised is None:
            normalised = [curation.normalise(k) for k in keys]
        # An Arrow array, not a list: ~16-byte Python objects for every key of a dataset, held through its
        # whole near-duplicate pass, raised the 10 M night's peak (the missing keys are hashed again below).
        hashes = pa.array((key_hash(t) for t in normalised), pa.binary())
        for positions, values in self.lookup(hashes, ("signature",)):
            found = values["signature"]
            missing = [i for i, s in enumerate(found) if s is None]
            if missing:
                texts = [normalised[positions[i]] for i in missing]
                new = list(curation.signatures_of_normalised(texts, num_perm))
                # Two datasets, or two texts normalising alike, sign one key twice: spilled once.
                self.spill({"key_hash": [key_hash(t) for t in texts], "signature": [s.tobytes() for s in new]})
                for i, sig in zip(missing, new):
                    found[i] = sig
                self.computed += len(missing)
            self.reused += len(found) - len(missing)
            for sig in found:
                yield np.frombuffer(sig, dtype=np.uint32) if isinstance(sig, bytes) else sig
