"""The landing area and the lake on object storage: every nightly stage against a real S3-compatible server
(moto's server mode), with DuckDB reading and writing s3:// through fsspec/s3fs."""

from __future__ import annotations

from datetime import date

import pytest
from s3_server import S3Server

BUCKET = "acsr-lake"
DAYS = ("2026-11-20",)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with S3Server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


@pytest.fixture
def s3_settings(s3, tmp_path, monkeypatch):
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    bucket = f"{BUCKET}-{tmp_path.name.lower().replace('_', '-')[-20:]}"
    s3.create_bucket(bucket)
    monkeypatch.setenv("ACSR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ACSR_LAKE", f"s3://{bucket}/lake")
    monkeypatch.setenv("ACSR_LANDING", f"s3://{bucket}/landing")
    monkeypatch.delenv("ACSR_WAREHOUSE", raising=False)
    from feedback_loop.settings import Settings

    return Settings.load()


def _digest(con, url: str):
    return con.execute(
        f"SELECT count(*), md5(coalesce(string_agg(h, ',' ORDER BY h), '')) FROM "
        f"(SELECT md5(t::VARCHAR) AS h FROM read_parquet('{url}', hive_partitioning=false) t)"
    ).fetchone()


def test_every_stage_runs_with_the_lake_on_s3_and_reruns_identically(s3_settings, tmp_path):
    import duckdb
    from feedback_loop.ingest.quality import gx_root
    from feedback_loop.lake.duck import connect
    from feedback_loop.lake.files import Lake
    from feedback_loop.lake.object_store import s3_filesystem
    from feedback_loop.nightly import run_day
    from feedback_loop_sample.generator import generate

    settings = s3_settings
    fs = s3_filesystem()
    generate(tmp_path / "export", date.fromisoformat(DAYS[0]), date.fromisoformat(DAYS[-1]), conversations_per_day=30)
    fs.put(f"{tmp_path / 'export'}/", settings.landing.removeprefix("s3://") + "/", recursive=True)
    summaries = [run_day(settings, day) for day in DAYS]
    assert [s["status"] for s in summaries] == ["ok"] * len(DAYS)
    assert all(f["file"].startswith("s3://") for s in summaries[0]["sources"].values() for f in s["files"])

    lake = Lake(settings.lake)
    keys = fs.find(settings.lake.removeprefix("s3://"))
    for day in DAYS:
        for layer in ("raw", "staged", "quarantine"):
            assert lake.days(layer, "agent_events")[-len(DAYS):] == list(DAYS)
        assert lake.has_partition("marts", "conversation_facts", day)
        assert lake.read_json("runs", f"dt={day}", "summary.json")["status"] == "ok"
    assert not any("/.tmp-" in k for k in keys), "no temporary objects are left on the object store"
    assert not (tmp_path / "lake").exists() and not (tmp_path / "landing").exists(), "nothing local but GX"
    assert (tmp_path / "gx").is_dir() and gx_root(settings) == str(tmp_path / "gx")  # GX results stay local

    # The warehouse's views read the lake on S3.
    con = duckdb.connect(settings.warehouse, read_only=True)
    from feedback_loop.lake.object_store import configure_duckdb

    configure_duckdb(con)
    per_day = dict(con.execute("SELECT dt::VARCHAR, count(*) FROM conversation_facts GROUP BY 1").fetchall())
    con.close()
    assert set(per_day) == set(DAYS) and all(n > 0 for n in per_day.values())

    # Re-running a day on S3 replaces its objects with identical contents.
    con = connect()
    parquet = [f"s3://{k}" for k in keys if f"dt={DAYS[-1]}/" in k and k.endswith(".parquet")]
    before = {url: _digest(con, url) for url in parquet}
    run_day(settings, DAYS[-1])
    assert {url: _digest(con, url) for url in parquet} == before
    con.close()
