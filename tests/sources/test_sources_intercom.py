"""Intercom pull against the stand-in: search pagination, a 429 with X-RateLimit-Reset, one GET per
conversation, mapping, quarantine, idempotence, an incomplete day, credentials kept out of logs."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import duckdb
import pytest
from pulled import assert_kept_out, assert_repull_identical, assert_timeout_leaves_day_incomplete, serving
from pulled import gz_lines as _lines

sys.path.insert(0, str(Path(__file__).parent))
import intercom_fixture as icf
from feedback_loop_sample.standins.intercom import TOKEN, IntercomStandIn


@pytest.fixture
def intercom(data_dir, monkeypatch):
    with serving(monkeypatch, "intercom") as serve:
        def start(faults=None, token=TOKEN, **kw):
            return serve(IntercomStandIn(icf.data(), page_size=2, faults=faults),
                         lambda s: {"conn_type": "http", "host": s.url, "password": token}, **kw)

        yield start


def test_two_days_with_pagination_and_a_429_map_every_conversation_once(intercom, data_dir):
    from feedback_loop.nightly import land, validate
    from feedback_loop.sources.pull import read_stream
    from feedback_loop.sources.systems import pull_system

    stand_in, settings = intercom(faults={2: ("429-reset", 1)})
    out1 = pull_system(settings, "intercom", icf.D1)
    out2 = pull_system(settings, "intercom", icf.D2)
    assert out1["retries"] == 1
    searches = [r for r in stand_in.requests if r["path"] == "/conversations/search"]
    assert len(searches) >= 5  # 3 pages on day 1 (+ the 429), 2 on day 2
    convs = read_stream(settings, "intercom", icf.D1, "conversations")
    assert sorted(c["id"] for c in convs) == ["1001", "1002", "1003", "1004", "1005"]
    assert all(c["conversation_parts"]["type"] == "conversation_part.list" for c in convs)  # read whole
    assert sorted(c["id"] for c in read_stream(settings, "intercom", icf.D2, "conversations")) == ["2001", "2002", "2003"]
    assert out1["mapped"]["sources"] == {"crm_cases": {"rows": 4, "unmappable": 1}, "surveys": {"rows": 3, "unmappable": 0}}
    assert out2["mapped"]["sources"] == {"crm_cases": {"rows": 3, "unmappable": 0}, "surveys": {"rows": 2, "unmappable": 0}}

    cases = {r["case_id"]: r for r in _lines(data_dir / f"landing/crm_cases/dt={icf.D1}/intercom.jsonl.gz")}
    assert {k: v for k, v in cases["1002"].items() if "." not in k} == {
        "case_id": "1002", "customer_id": "CUST-1002", "conversation_id": "1002", "channel": "chat",
        "created_at": "2026-11-02T09:00:00+00:00", "updated_at": "2026-11-02T09:15:00+00:00", "status": "open",
        "resolved_at": None, "resolved_by": None, "escalated": True, "reopen_count": 1,
        "last_reopened_at": "2026-11-02T09:08:20+00:00", "handle_time_s": 840.0, "tags": []}
    assert cases["1001"]["resolved_by"] == "ai" and cases["1001"]["tags"] == ["card"]
    assert cases["1005"]["resolved_by"] == "human" and cases["1003"]["status"] == "pending"
    assert cases["1003"]["channel"] == "email"
    assert cases["1001"]["intercom.ai_agent"]["content_sources"]["content_sources"][0]["title"] == "Card arrival"
    surveys = _lines(data_dir / f"landing/surveys/dt={icf.D1}/intercom.jsonl.gz")
    assert [(s["survey_id"], s["score"], s["kind"]) for s in surveys] == [
        ("csat-1001", 5, "csat"), ("csat-1004", 2, "csat"), ("csat-1005", 1, "csat")]

    for source in ("crm_cases", "surveys"):
        land(settings, source, icf.D1)
        validate(settings, source, icf.D1)
    lake = data_dir / "lake"
    q = duckdb.sql(f"SELECT quarantine_reason, quarantine_detail FROM '{lake}/quarantine/crm_cases/dt={icf.D1}/part.parquet'").fetchall()
    assert len(q) == 1 and "record 1004" in q[0][1] and "field `state`" in q[0][1]
    # csat-1004 answers a case that was quarantined: the reference check quarantines it too, with its reason
    sq = duckdb.sql(f"SELECT survey_id, quarantine_reason FROM '{lake}/quarantine/surveys/dt={icf.D1}/part.parquet'").fetchall()
    assert sq == [("csat-1004", "unknown_case_id")] or sq == [("csat-1004", "reference_before_history")]


def test_repull_is_identical_and_a_timeout_leaves_the_day_incomplete(intercom, data_dir):
    assert_repull_identical(intercom, "intercom", icf.D1, data_dir / "landing", {1: ("500", 0), 4: ("429", 0)})
    assert_timeout_leaves_day_incomplete(intercom, "intercom", icf.D1, "surveys", {3: ("hang", 2)})


def test_the_token_stays_out_of_logs(intercom, data_dir, caplog, capsys):
    from feedback_loop.sources.pull import PullError
    from feedback_loop.sources.systems import pull_system

    caplog.set_level(logging.DEBUG)
    _, settings = intercom(faults={1: ("429", 0)})
    pull_system(settings, "intercom", icf.D1)
    _, settings = intercom(token="wrong-" + TOKEN)
    with pytest.raises(PullError, match="HTTP 401") as err:
        pull_system(settings, "intercom", icf.D2)
    out = capsys.readouterr()
    assert_kept_out((TOKEN,), (caplog.text, out.out, out.err, str(err.value)), data_dir)
