"""What the per-night stores of values keyed by a hash share: `<lake>/partials/<name>/dt=D/part.parquet` holds
the rows a dataset build first computed on night D, under a key (in the file's metadata) naming what the
values depend on; a night reads the window's files whose key is current and spills its new rows to a local
file, stored when the night ends (`save`). Used by `signature_store`, `value_store` (token counts and
example ids), `line_store` (validated lines of a version's files) and `candidate_store`.
"""

from __future__ import annotations

import os
import tempfile

from feedback_loop.datasets.token_store import window_files
from feedback_loop.lake.files import Lake, parquet_file, parquet_metadata
from feedback_loop.lake.sql import literal_list

LAYER = "partials"
BATCH = 4096  # keys per batch streamed back by `lookup` (the signature store signs a batch's missing keys together)


class NightlyStore:
    """Rows of `schema` (its first column the 16-byte key) stored per night under `metadata_field` = `key`."""

    name = ""
    metadata_field = ""
    dedupe = True  # spill each key once (a set of tonight's keys); False when repeats are harmless

    def __init__(self, con, lake: Lake, start: str, end: str):
        self.con, self.lake, self.start, self.end = con, lake, start, end
        self.computed = 0
        self.reused = 0
        self._spill_dir = tempfile.mkdtemp(prefix=f"acsr-{self.name}-")
        self._spilled = os.path.join(self._spill_dir, "new.parquet")
        self._writer = None
        self._spilled_keys: set[bytes] = set()
        self._files: list[str] | None = None

    def key(self) -> str:
        raise NotImplementedError

    def schema(self):
        raise NotImplementedError

    def files(self) -> list[str]:
        """The window's stored files whose key is current (their metadata read once per night)."""
        if self._files is None:
            self._files = window_files(self.con, self.lake, self.name, self.metadata_field, self.key(),
                                       self.start, self.end)
        return self._files

    def lookup(self, keys, columns: tuple[str, ...]):
        """What the window's nights stored for each key, in the keys' order, a batch at a time: yields
        (positions, values) with `values[c][i]` the stored `c` of `keys[positions[i]]` and `values["found"][i]`
        whether any night stored it. DuckDB joins the keys with the window's files and streams the result
        back, so the window's rows are never in memory at once; a key stored by two nights (a backfill signs
        or counts it again) has one value. A cursor of its own: closing it ends the stream even when the
        caller stops early. `keys`: a list of bytes or a pyarrow binary array."""
        import pyarrow as pa

        files = self.files()
        if not files:
            for start in range(0, len(keys), BATCH):
                n = min(BATCH, len(keys) - start)
                yield list(range(start, start + n)), {c: [None] * n for c in ("found", *columns)}
            return
        key = self.schema().names[0]
        picked = "".join(f", any_value({c}) AS {c}" for c in columns)
        stored = (f"(SELECT {key}, true AS found{picked} FROM read_parquet({literal_list(files)}, "
                  f"hive_partitioning=false) GROUP BY {key})")
        cur = self.con.cursor()
        cur.register("nightly_store_wanted", pa.table({"pos": pa.array(range(len(keys)), pa.int64()),
                                                       key: keys if isinstance(keys, pa.Array) else pa.array(keys, pa.binary())}))
        try:
            query = (f"SELECT w.pos, s.found{''.join(f', s.{c}' for c in columns)} FROM nightly_store_wanted w "
                     f"LEFT JOIN {stored} s USING ({key}) ORDER BY w.pos")
            for batch in cur.sql(query).to_arrow_reader(BATCH):
                yield (batch.column("pos").to_pylist(),
                       {c: batch.column(c).to_pylist() for c in ("found", *columns)})
        finally:
            cur.close()

    def spill(self, columns: dict[str, list]) -> None:
        """Append rows computed tonight whose key is not spilled yet (the first column is the key)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        first = self.schema().names[0]
        keep = []
        for i, k in enumerate(columns[first]):  # each key once, also within one call
            if not self.dedupe or k not in self._spilled_keys:
                if self.dedupe:
                    self._spilled_keys.add(k)
                keep.append(i)
        if not keep:
            return
        table = pa.table({c: [v[i] for i in keep] for c, v in columns.items()}, schema=self.schema())
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._spilled, table.schema, compression="zstd")
        self._writer.write_table(table)

    def flush(self) -> None:
        """Write what a subclass still buffers (before `save`)."""

    def save(self, day: str, con=None) -> int:
        """Store tonight's new rows under `day`, after what that night had stored already on a rerun (a key
        stored by it was read back, not computed, so the two parts hold no key in common). Return how many
        were computed. `con`: a DuckDB connection, when the store's own is closed."""
        import pyarrow.parquet as pq

        try:
            self.flush()
            parts = []
            stored = self.lake.partition_file(LAYER, self.name, day)
            if (self.lake.has_partition(LAYER, self.name, day)
                    and parquet_metadata(con or self.con, stored).get(self.metadata_field) == self.key()):
                parts.append(stored)
            if self._writer is not None:
                self._writer.close()
                self._writer = None
                parts.append(self._spilled)
            if not parts:
                return 0
            if parts == [self._spilled]:  # the night's first run: the spill is the partition as it is
                self.lake.publish_file(self._spilled, LAYER, self.name, day)
                return self.computed
            out = os.path.join(self._spill_dir, "part.parquet")
            schema = self.schema()
            with pq.ParquetWriter(out, schema, compression="zstd") as writer:
                for part in parts:
                    with parquet_file(part) as src:
                        for batch in src.iter_batches(batch_size=BATCH, columns=schema.names):
                            writer.write_batch(batch)
            self.lake.publish_file(out, LAYER, self.name, day)
            return self.computed
        finally:
            self.close()

    def close(self) -> None:
        """Drop the spill (after `save`, or without storing it when the build failed)."""
        import shutil

        if self._writer is not None:
            self._writer.close()
            self._writer = None
        shutil.rmtree(self._spill_dir, ignore_errors=True)
