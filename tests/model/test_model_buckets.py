"""A large day's conversation facts are aggregated in buckets of conversations (model_bucket_events): the
facts must be exactly those of the one-pass aggregate, in the same order."""

from __future__ import annotations

import shutil
from datetime import date

import duckdb

DAY = "2026-11-20"


def test_bucketed_facts_equal_the_one_pass_facts(tmp_path, monkeypatch):
    from feedback_loop import nightly
    from feedback_loop.ingest.contract import SOURCE_NAMES
    from feedback_loop.model.conversations import build_model
    from feedback_loop.settings import Settings
    from feedback_loop_sample.generator import generate

    monkeypatch.setenv("ACSR_DATA_DIR", str(tmp_path / "one"))
    settings = Settings.load()
    generate(settings.landing, date.fromisoformat(DAY), date.fromisoformat(DAY), conversations_per_day=80, seed=3)
    for source in SOURCE_NAMES:
        nightly.land(settings, source, DAY)
        nightly.validate(settings, source, DAY)
    shutil.copytree(tmp_path / "one", tmp_path / "buckets")
    build_model(settings, DAY)
    bucketed = Settings.load(lake=str(tmp_path / "buckets" / "lake"), model_bucket_events=97)
    build_model(bucketed, DAY)

    facts = "lake/marts/conversation_facts/dt=2026-11-20/part.parquet"
    con = duckdb.connect()
    events = con.execute(f"SELECT count(*) FROM '{tmp_path}/one/lake/staged/agent_events/*/*.parquet'").fetchone()[0]
    assert events > 5 * 97  # several buckets
    one = con.execute(f"SELECT * FROM '{tmp_path / 'one' / facts}'").fetchall()
    many = con.execute(f"SELECT * FROM '{tmp_path / 'buckets' / facts}'").fetchall()
    assert len(one) == 80 and many == one
