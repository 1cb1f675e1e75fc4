"""A large day's conversation facts are aggregated in buckets of conversations (model_bucket_events): the
facts must be exactly those of the one-pass aggregate, in the same order."""

from __future__ import annotations

import shutil

import duckdb


def test_bucketed_facts_equal_the_one_pass_facts(tmp_path, landed_day):
    from feedback_loop.model.conversations import build_model
    from feedback_loop.settings import Settings

    shutil.copytree(landed_day.root, tmp_path / "buckets")
    build_model(landed_day.settings, landed_day.day)
    bucketed = Settings.load(lake=str(tmp_path / "buckets" / "lake"), model_bucket_events=97)
    build_model(bucketed, landed_day.day)

    facts = "lake/marts/conversation_facts/dt=2026-11-20/part.parquet"
    con = duckdb.connect()
    events = con.execute(f"SELECT count(*) FROM '{tmp_path}/one/lake/staged/agent_events/*/*.parquet'").fetchone()[0]
    assert events > 5 * 97  # several buckets
    one = con.execute(f"SELECT * FROM '{tmp_path / 'one' / facts}'").fetchall()
    many = con.execute(f"SELECT * FROM '{tmp_path / 'buckets' / facts}'").fetchall()
    assert len(one) == 80 and many == one
