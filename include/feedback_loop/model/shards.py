"""The model stage split by conversation, for a day too large for one worker (issue 18).

A day's conversations are split in `shards` by `hash(conversation_id) % shards`: each shard is an
independent task (on Airflow, one mapped task instance, on any worker) that aggregates only its
conversations' events, with the same SQL as the one-process build (`build_model`), and writes them to
its own shard file. `combine_facts_shards` then publishes the day's `marts/conversation_facts` as the union
of the shards in conversation order - the one-process build's partition, row for row - and
`marts/case_history`, which is per case, not per conversation, so it is built once there.

DuckDB's hash() is stable within one DuckDB version only: every shard must run the same version, or a
conversation could land in no shard or in two. The combine checks that each shard file holds only its
shard's conversations, so such a mix fails instead of publishing.
"""

from __future__ import annotations

from datetime import date

from feedback_loop.lake.files import Lake, copy_atomic
from feedback_loop.lake.sql import literal, literal_list
from feedback_loop.model.conversations import _conversations, _count, _day_views, _sql, _write_case_history
from feedback_loop.nightly import as_day
from feedback_loop.settings import Settings

FACTS = "conversation_facts"


def _check_shard(shard: int, shards: int) -> None:
    if shards < 1 or not 0 <= shard < shards:
        raise ValueError(f"shard {shard} of {shards}: need shards >= 1 and 0 <= shard < shards")


def build_facts_shard(settings: Settings, day: date | str, shard: int, shards: int) -> dict:
    """Compute the day's conversation facts of shard `shard` of `shards` and write them atomically to its
    shard file (`Lake.shard_file`); a re-run replaces it. Returns {"shard", "shards", "rows", "path"}.

    Reads the day's events (keeping only the shard's conversations: the staged file is not split by
    conversation, so every shard scans it) and the reference tables of the lookback window."""
    _check_shard(shard, shards)
    day = as_day(day)
    dt = day.isoformat()
    con, lake = _day_views(settings, day)
    try:
        conversations, params = _conversations(con, settings, shard, shards)
        path = copy_atomic(con, _sql("facts.sql", conversations=conversations),
                           lake.shard_file(FACTS, dt, shard, shards), params={"day": dt, **params})
        rows = con.execute(f"SELECT count(*) FROM read_parquet({literal(path)})").fetchone()[0]
    finally:
        con.close()
    return {"shard": shard, "shards": shards, "rows": rows, "path": path}


def combine_facts_shards(settings: Settings, day: date | str, shards: int) -> dict:
    """Publish `marts/conversation_facts` for the day as the union of its `shards` shard files ordered by
    conversation_id, and `marts/case_history` as `build_model` does; then remove the shard files. Returns
    the same counts as `build_model`.

    Fails before publishing anything when a shard file is missing (naming them) or holds conversations of
    another shard."""
    _check_shard(0, shards)
    day = as_day(day)
    dt = day.isoformat()
    lake = Lake(settings.lake)
    files = [lake.shard_file(FACTS, dt, k, shards) for k in range(shards)]
    missing = [f for f in files if not lake.exists(f)]
    if missing:
        raise FileNotFoundError(
            f"{dt}: {len(missing)} of {shards} {FACTS} shard(s) missing: {', '.join(missing)}; run "
            f"build_facts_shard for them, then combine again (nothing was published)")
    con, lake = _day_views(settings, day)
    try:
        for k, f in enumerate(files):
            stray = con.execute(f"SELECT count(*) FROM read_parquet({literal(f)}, hive_partitioning=false) "
                                "WHERE hash(conversation_id) % $shards <> $shard",
                                {"shards": shards, "shard": k}).fetchone()[0]
            if stray:
                raise RuntimeError(
                    f"{f}: {stray} conversation(s) not of shard {k} of {shards} (a shard built with another "
                    f"number of shards or another DuckDB version?): rebuild it; nothing was published")
        # hive_partitioning=false: the shard files' dt=D folder must not add a `dt` column.
        union = f"SELECT * FROM read_parquet({literal_list(files)}, hive_partitioning=false) ORDER BY conversation_id"
        lake.write_query(con, union, "marts", FACTS, dt)
        counts = {FACTS: _count(con, lake, FACTS, dt), "case_history": _write_case_history(con, lake, dt)}
    finally:
        con.close()
    for f in files:
        lake.remove(f)
    return counts
