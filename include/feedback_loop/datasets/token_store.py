"""Per-night partials of the token counts: `<lake>/partials/dataset_token_counts/dt=D/part.parquet` holds
(hash of a text, its tokens) for every text a dataset build first encoded on night D.

Why: every night re-curates the whole trailing window, and a window's examples are mostly the previous
night's; tokenizing them again was the largest share of a steady-state dataset night (issue 18). A count
is a pure function of the text and the tokenizer, so the stored value is the one encoding would give: the
versions are byte-identical. Files written by another tokenizer (the key in their Parquet metadata) are
ignored.
"""

from __future__ import annotations

from feedback_loop.datasets import tokens
from feedback_loop.lake.files import Lake, parquet_file, parquet_metadata
from feedback_loop.lake.sql import literal

LAYER, NAME = "partials", "dataset_token_counts"


def _current(con, path: str) -> bool:
    return parquet_metadata(con, path).get("tokenizer") == tokens.store_key()


def window_files(con, lake: Lake, name: str, field: str, key: str, start: str, end: str) -> list[str]:
    """The files of `partials/<name>` for the nights of [start, end] whose Parquet metadata `field` is `key`
    (what their values depend on); the others were computed differently and are not used."""
    out = []
    for day in lake.days(LAYER, name):
        if start <= day <= end:
            f = lake.partition_file(LAYER, name, day)
            if parquet_metadata(con, f).get(field) == key:
                out.append(f)
    return out


def load(con, lake: Lake, start: str, end: str) -> int:
    """Hand the counts stored by the nights of [start, end] to `tokens`; return how many there are."""
    counts: dict[bytes, int] = {}
    for f in window_files(con, lake, NAME, "tokenizer", tokens.store_key(), start, end):
        for k, n in con.execute(f"SELECT text_key, tokens FROM read_parquet({literal(f)})").fetchall():
            counts[bytes(k)] = n
    tokens.remember(counts)
    return len(counts)


def save(con, lake: Lake, day: str) -> int:
    """Store the counts encoded tonight under `day` (with what that night had stored already, on a rerun).

    A rerun of the night rewrites its partition even when it encoded nothing new (same rows): reprocessing
    a day rewrites every partition of that day. Rows in `text_key` order, written with pyarrow: a DuckDB
    UNION, sort and COPY of a 10 M-event night's ~1 M new counts was the stage's peak after the candidates."""
    import tempfile

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    new = tokens.new_counts()
    stored = lake.partition_file(LAYER, NAME, day)
    keep_stored = lake.has_partition(LAYER, NAME, day) and _current(con, stored)
    if not new and not keep_stored:
        return 0
    schema = pa.schema([("text_key", pa.binary()), ("tokens", pa.int64())], metadata={"tokenizer": tokens.store_key()})
    table = pa.table({"text_key": pa.array(list(new), pa.binary()), "tokens": pa.array(list(new.values()), pa.int64())},
                     schema=schema)
    n_new = len(new)
    del new
    if keep_stored:
        with parquet_file(stored) as f:
            old = f.read(columns=["text_key", "tokens"]).cast(schema)
        old = old.filter(pc.invert(pc.is_in(old["text_key"], value_set=table["text_key"])))
        table = pa.concat_tables([table, old])
    table = table.sort_by("text_key")
    with tempfile.TemporaryDirectory(prefix="acsr-token-counts-") as tmp:
        local = f"{tmp}/part.parquet"
        pq.write_table(table, local, compression="zstd")
        lake.publish_file(local, LAYER, NAME, day)
    return n_new
