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
import os
import tempfile
from functools import lru_cache

from feedback_loop.datasets import curation
from feedback_loop.datasets.token_store import window_files
from feedback_loop.lake.files import Lake, parquet_file, parquet_metadata
from feedback_loop.lake.sql import literal_list

LAYER, NAME = "partials", "dataset_minhash"
_BATCH = 4096  # keys per batch streamed back from DuckDB (and signed together when not stored)


@lru_cache(maxsize=8)
def signature_key(num_perm: int) -> str:
    """What a stored signature depends on: the permutations, datasketch's release and how a key becomes its
    5-grams (the source of `normalise` and `_grams`)."""
    import datasketch

    code = hashlib.sha256((inspect.getsource(curation.normalise) + inspect.getsource(curation._grams)).encode())
    return f"minhash:{num_perm}:datasketch {datasketch.__version__}:{code.hexdigest()[:16]}"


def key_hash(normalised: str) -> bytes:
    return hashlib.blake2b(normalised.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class SignatureStore:
    """The signatures stored by the nights of a window, and the ones this night computes.

    `signatures(keys, num_perm)` is the callable `curation.near_duplicates` takes: the keys' signatures in
    order, stored ones read back, the rest computed (counted in `computed` and `reused`). Another
    `num_perm` than the store's is computed without it."""

    def __init__(self, con, lake: Lake, start: str, end: str, num_perm: int = curation.NUM_PERM):
        self.con, self.lake, self.start, self.end, self.num_perm = con, lake, start, end, num_perm
        self.computed = 0
        self.reused = 0
        self._spill_dir = tempfile.mkdtemp(prefix="acsr-minhash-")
        self._spilled = os.path.join(self._spill_dir, "new.parquet")
        self._writer = None  # pyarrow ParquetWriter of this night's new rows
        self._spilled_keys: set[bytes] = set()  # their key hashes (16 bytes each)
        self._files: list[str] | None = None  # the window's stored files (their metadata read once)

    def signatures(self, keys: list[str], num_perm: int, normalised: list[str] | None = None):
        import numpy as np
        import pyarrow as pa

        if num_perm != self.num_perm:
            yield from curation.signatures(keys, num_perm, normalised)
            return
        if normalised is None:
            normalised = [curation.normalise(k) for k in keys]
        if self._files is None:  # the window's files are the same for every dataset of the night: listed once
            self._files = window_files(self.con, self.lake, NAME, "signature_key", signature_key(num_perm),
                                       self.start, self.end)
        files = self._files
        # A cursor of its own: the result streams while the caller consumes it, and closing the cursor ends
        # it (and the registered keys) even when the caller stops early.
        cur = self.con.cursor()
        cur.register("minhash_wanted", pa.table({"pos": pa.array(range(len(keys)), pa.int64()),
                                                 "key_hash": pa.array([key_hash(t) for t in normalised], pa.binary())}))
        try:
            if files:
                # A key stored by two nights (a backfill of an earlier day signs it again) has one value.
                stored = (f"(SELECT key_hash, any_value(signature) AS signature FROM read_parquet({literal_list(files)}, hive_partitioning=false)"
                          " GROUP BY key_hash)")
                query = ("SELECT w.pos, s.signature FROM minhash_wanted w LEFT JOIN "
                         f"{stored} s USING (key_hash) ORDER BY w.pos")
            else:
                query = "SELECT pos, NULL::BLOB AS signature FROM minhash_wanted ORDER BY pos"
            for batch in cur.sql(query).to_arrow_reader(_BATCH):
                positions = batch.column("pos").to_pylist()
                found = batch.column("signature").to_pylist()
                missing = [i for i, s in enumerate(found) if s is None]
                if missing:
                    texts = [normalised[positions[i]] for i in missing]
                    new = list(curation.signatures_of_normalised(texts, num_perm))
                    self._spill([key_hash(t) for t in texts], new)
                    for i, sig in zip(missing, new):
                        found[i] = sig
                    self.computed += len(missing)
                self.reused += len(found) - len(missing)
                for sig in found:
                    yield np.frombuffer(sig, dtype=np.uint32) if isinstance(sig, bytes) else sig
        finally:
            cur.close()

    def _spill(self, hashes: list[bytes], sigs: list) -> None:
        """Append the keys not spilled yet tonight (two datasets, or two texts normalising alike, sign one key
        twice): the spill holds each key once, so storing it needs no de-duplication."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        keep = []
        for i, h in enumerate(hashes):
            if h not in self._spilled_keys:
                self._spilled_keys.add(h)
                keep.append(i)
        if not keep:
            return
        table = pa.table({"key_hash": pa.array([hashes[i] for i in keep], pa.binary()),
                          "signature": pa.array([sigs[i].tobytes() for i in keep], pa.binary())})
        if self._writer is None:  # with the store's key: on a night's first run the spill is the partition
            schema = table.schema.with_metadata({"signature_key": signature_key(self.num_perm)})
            self._writer = pq.ParquetWriter(self._spilled, schema, compression="zstd")
        self._writer.write_table(table)

    def save(self, day: str) -> int:
        """Store tonight's new signatures under `day`, after what that night had stored already on a rerun:
        reprocessing a day rewrites every partition of that day, even when nothing is new. Return how many
        keys were new.

        The two parts hold no key in common (a key stored by that night is in the window, so it was read
        back, not signed), and on a rerun both are copied a batch at a time; a night's first run publishes
        the spill as it is. Sorting or grouping a night's signatures in DuckDB held ~8 times their size
        (the peak of a 2 M-event night's dataset stage)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            key = signature_key(self.num_perm)
            parts = []
            stored = self.lake.partition_file(LAYER, NAME, day)
            if self.lake.has_partition(LAYER, NAME, day) and parquet_metadata(self.con, stored).get("signature_key") == key:
                parts.append(stored)
            if self._writer is not None:
                self._writer.close()
                self._writer = None
                parts.append(self._spilled)
            if not parts:
                return 0
            if parts == [self._spilled]:  # the night's first run: the spill is the partition as it is
                self.lake.publish_file(self._spilled, LAYER, NAME, day)
                return len(self._spilled_keys)
            out = os.path.join(self._spill_dir, "part.parquet")
            schema = pa.schema([("key_hash", pa.binary()), ("signature", pa.binary())], metadata={"signature_key": key})
            with pq.ParquetWriter(out, schema, compression="zstd") as writer:
                for part in parts:
                    with parquet_file(part) as src:
                        for batch in src.iter_batches(batch_size=_BATCH, columns=["key_hash", "signature"]):
                            writer.write_batch(batch)
            self.lake.publish_file(out, LAYER, NAME, day)
            return len(self._spilled_keys)
        finally:
            self.close()

    def close(self) -> None:
        """Drop the spill file (after `save`, or without storing it when the build failed)."""
        import shutil

        if self._writer is not None:
            self._writer.close()
            self._writer = None
        shutil.rmtree(self._spill_dir, ignore_errors=True)
