"""The model stage sharded by conversation (issue 18): 4 independent shards of the day's facts, then a combine,
must publish exactly the one-process build's partitions - same rows, schema and order - and a combine must
never publish from an incomplete or mixed-up set of shards."""

from __future__ import annotations

import os
import shutil

import duckdb
import pytest

SHARDS = 4
FACTS = "conversation_facts"


def _settings(root, **overrides):
    from feedback_loop.settings import Settings

    return Settings.load(lake=str(root / "lake"), **overrides)


def _build_shards(settings, day, shards=range(SHARDS)) -> list[dict]:
    from feedback_loop.model.shards import build_facts_shard

    return [build_facts_shard(settings, day, k, SHARDS) for k in shards]


def _assert_same_partition(one: str, sharded: str, key: str) -> None:
    con = duckdb.connect()  # hive_partitioning=false: the files' schemas, without the `dt` of their folder
    a, b = (f"read_parquet('{p}', hive_partitioning=false)" for p in (one, sharded))
    n = con.execute(f"SELECT count(*) FROM {a}").fetchone()[0]
    assert con.execute(f"SELECT count(*) FROM {b}").fetchone()[0] == n
    assert con.execute(f"DESCRIBE SELECT * FROM {b}").fetchall() == con.execute(f"DESCRIBE SELECT * FROM {a}").fetchall()
    assert con.execute(f"SELECT count(*) FROM (SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b})").fetchone()[0] == 0
    assert con.execute(f"SELECT count(*) FROM (SELECT * FROM {b} EXCEPT ALL SELECT * FROM {a})").fetchone()[0] == 0
    in_order = (f"SELECT {key} FROM read_parquet('{{}}', hive_partitioning=false, file_row_number=true) ORDER BY file_row_number")
    assert con.execute(in_order.format(sharded)).fetchall() == con.execute(in_order.format(one)).fetchall()


@pytest.mark.parametrize("bucket_events", [2_000_000, 29], ids=["one-bucket", "buckets-in-each-shard"])
def test_combined_shards_equal_the_one_process_build(tmp_path, landed_day, bucket_events):
    from feedback_loop.lake.files import Lake
    from feedback_loop.model.conversations import build_model
    from feedback_loop.model.shards import combine_facts_shards

    shutil.copytree(landed_day.root, tmp_path / "sharded")
    one_counts = build_model(landed_day.settings, landed_day.day)
    settings = _settings(tmp_path / "sharded", model_bucket_events=bucket_events)
    shards = _build_shards(settings, landed_day.day)
    assert [s["shard"] for s in shards] == list(range(SHARDS))
    assert all(s["rows"] > 0 for s in shards)  # every shard has conversations of its own
    assert sum(s["rows"] for s in shards) == one_counts[FACTS] == 80
    assert all(os.path.exists(s["path"]) for s in shards)

    assert combine_facts_shards(settings, landed_day.day, SHARDS) == one_counts
    one, sharded = Lake(landed_day.settings.lake), Lake(settings.lake)
    dt = landed_day.day.isoformat()
    _assert_same_partition(one.partition_file("marts", FACTS, dt), sharded.partition_file("marts", FACTS, dt),
                           "conversation_id")
    assert one_counts["case_history"] > 0
    _assert_same_partition(one.partition_file("marts", "case_history", dt),
                           sharded.partition_file("marts", "case_history", dt), "case_id, updated_at, state_seq")
    assert not any(os.path.exists(s["path"]) for s in shards)  # the shard files are removed once published
    assert not (tmp_path / "sharded" / "lake" / "shards" / FACTS / f"dt={dt}").exists()


def test_rerunning_shards_and_the_combine_gives_the_same_partition(tmp_path, landed_day):
    from feedback_loop.lake.files import Lake
    from feedback_loop.model.shards import combine_facts_shards

    settings, day = landed_day.settings, landed_day.day
    target = Lake(settings.lake).partition_file("marts", FACTS, day.isoformat())
    first_shards = _build_shards(settings, day)
    again = _build_shards(settings, day, [1])  # a retried mapped task instance replaces its shard file
    assert again[0]["rows"] == first_shards[1]["rows"]
    first = combine_facts_shards(settings, day, SHARDS)
    shutil.copy(target, tmp_path / "first.parquet")
    _build_shards(settings, day)  # the whole mapped task group cleared and run again
    assert combine_facts_shards(settings, day, SHARDS) == first
    _assert_same_partition(str(tmp_path / "first.parquet"), target, "conversation_id")


def test_combine_with_a_missing_shard_fails_and_publishes_nothing(landed_day):
    from feedback_loop.lake.files import Lake
    from feedback_loop.model.shards import combine_facts_shards

    settings, day = landed_day.settings, landed_day.day
    lake = Lake(settings.lake)
    built = _build_shards(settings, day, [0, 1, 3])
    with pytest.raises(FileNotFoundError, match=r"1 of 4 conversation_facts shard\(s\) missing: .*shard-2-of-4\.parquet"):
        combine_facts_shards(settings, day, SHARDS)
    assert not lake.has_partition("marts", FACTS, day.isoformat())
    assert not lake.has_partition("marts", "case_history", day.isoformat())
    assert all(os.path.exists(s["path"]) for s in built)  # kept: only the missing shard needs to run


def test_combine_refuses_a_shard_file_holding_another_shards_conversations(landed_day):
    from feedback_loop.lake.files import Lake
    from feedback_loop.model.shards import combine_facts_shards

    settings, day = landed_day.settings, landed_day.day
    lake = Lake(settings.lake)
    built = _build_shards(settings, day)
    shutil.copy(built[0]["path"], built[1]["path"])  # shard 0's conversations twice, shard 1's lost
    with pytest.raises(RuntimeError, match=r"shard-1-of-4\.parquet: \d+ conversation\(s\) not of shard 1 of 4"):
        combine_facts_shards(settings, day, SHARDS)
    assert not lake.has_partition("marts", FACTS, day.isoformat())
