"""Salesforce pull through the Airflow Salesforce provider's hook (simple-salesforce) against an HTTPS stand-in
of the REST query resource: pagination (nextRecordsUrl), a 429, CaseHistory reopens, the survey object,
quarantine, idempotence, an incomplete day, the session id kept out of logs."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import duckdb
import pytest
from pulled import assert_kept_out, assert_repull_identical, assert_timeout_leaves_day_incomplete, serving
from pulled import gz_lines as _lines

sys.path.insert(0, str(Path(__file__).parent))
import salesforce_fixture as sff
from feedback_loop_sample.standins.salesforce import SESSION_ID, SalesforceStandIn


@pytest.fixture
def salesforce(data_dir, tmp_path, monkeypatch):
    with serving(monkeypatch, "salesforce") as serve:
        def start(faults=None, session_id=SESSION_ID, **kw):
            return serve(SalesforceStandIn(sff.data(), str(tmp_path), page_size=2, faults=faults),
                         lambda s: {"conn_type": "salesforce", "password": session_id,
                                    "extra": {"instance_url": s.url, "direct_session": True, "ca_bundle": s.ca_path,
                                              "survey_soql": sff.SURVEY_SOQL}}, **kw)

        yield start


def test_two_days_through_the_provider_hook(salesforce, data_dir):
    from feedback_loop.nightly import land, validate
    from feedback_loop.sources.pull import read_stream
    from feedback_loop.sources.systems import pull_system

    stand_in, settings = salesforce(faults={2: ("429", 1)})
    out1 = pull_system(settings, "salesforce", sff.D1)
    out2 = pull_system(settings, "salesforce", sff.D2)
    queries = [r for r in stand_in.requests if "/query/" in r["path"]]
    assert any(r["n"] == 2 for r in queries) and len(queries) >= 8  # paged, and the 429 was retried
    cases = read_stream(settings, "salesforce", sff.D1, "cases")
    assert sorted(c["Id"][-5:] for c in cases) == ["A0001", "A0002", "A0003", "A0004", "A0005"]
    assert sorted(c["Id"][-5:] for c in read_stream(settings, "salesforce", sff.D2, "cases")) == ["B0001", "B0002"]
    assert len(read_stream(settings, "salesforce", sff.D1, "case_history")) == 5  # whole history of the day's cases
    assert out1["mapped"]["sources"] == {"crm_cases": {"rows": 4, "unmappable": 1}, "surveys": {"rows": 2, "unmappable": 0}}
    assert out2["mapped"]["sources"] == {"crm_cases": {"rows": 2, "unmappable": 0}, "surveys": {"rows": 1, "unmappable": 0}}

    rows = {r["case_id"][-5:]: r for r in _lines(data_dir / f"landing/crm_cases/dt={sff.D1}/salesforce.jsonl.gz")}
    assert {k: v for k, v in rows["A0002"].items() if "." not in k} == {
        "case_id": "500xx00000A0002", "customer_id": "003xx002", "conversation_id": None, "channel": "email",
        "created_at": "2026-10-30T09:00:00+00:00", "updated_at": "2026-11-02T09:15:00+00:00", "status": "open",
        "resolved_at": None, "resolved_by": None, "escalated": False, "reopen_count": 2,
        "last_reopened_at": "2026-11-02T09:10:00+00:00", "category": "card_arrival",
        "escalation_reason": "Instructions not clear"}  # no handle time or tags in a standard Case
    assert rows["A0003"]["status"] == "pending" and rows["A0003"]["escalated"] is True
    assert rows["A0001"]["resolved_by"] == "human" and rows["A0001"]["status"] == "closed"
    assert rows["A0001"]["salesforce.CaseNumber"] == "0000001" and rows["A0001"]["salesforce.attributes"]["type"] == "Case"
    surveys = _lines(data_dir / f"landing/surveys/dt={sff.D1}/salesforce.jsonl.gz")
    assert [(s["survey_id"], s["kind"], s["score"]) for s in surveys] == [("a0Axx01", "csat", 5), ("a0Axx02", "ces", 6)]

    for source in ("crm_cases", "surveys"):
        land(settings, source, sff.D1)
        validate(settings, source, sff.D1)
    q = duckdb.sql(f"SELECT quarantine_detail FROM '{data_dir}/lake/quarantine/crm_cases/dt={sff.D1}/part.parquet'").fetchall()
    assert len(q) == 1 and "A0004" in q[0][0] and "field `Status`" in q[0][0] and "Bogus" in q[0][0]


def test_repull_identical_timeout_incomplete_and_no_session_id_in_logs(salesforce, data_dir, caplog, capsys):
    from feedback_loop.sources.pull import PullError
    from feedback_loop.sources.systems import pull_system

    caplog.set_level(logging.DEBUG)
    assert_repull_identical(salesforce, "salesforce", sff.D1, data_dir / "landing", {1: ("500", 0), 3: ("429", 0)})
    assert_timeout_leaves_day_incomplete(salesforce, "salesforce", sff.D1, "crm_cases", {3: ("hang", 2)},
                                         match="timed out|connection failed|retries")
    _, settings = salesforce(session_id="wrong-" + SESSION_ID)
    with pytest.raises(PullError, match="401") as err:
        pull_system(settings, "salesforce", sff.D2)
    out = capsys.readouterr()
    assert_kept_out((SESSION_ID,), (caplog.text, out.out, out.err, str(err.value)), data_dir)
