"""Zendesk pull end to end against the stand-in: pagination, a 429, mapping, quarantine, idempotence,
an incomplete day, resume from the task state store, credentials kept out of logs."""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
from pathlib import Path

import duckdb
import pytest
from pulled import assert_kept_out, assert_repull_identical, serving
from pulled import gz_lines as _lines
from pulled import tree_digest as _tree_digest

sys.path.insert(0, str(Path(__file__).parent))
import zendesk_fixture as zf
from feedback_loop_sample.standins.zendesk import EMAIL, TOKEN, ZendeskStandIn


@pytest.fixture
def zendesk(data_dir, monkeypatch):
    with serving(monkeypatch, "zendesk") as serve:
        def start(faults=None, page_size=2, **settings_kw):
            return serve(ZendeskStandIn(zf.data(), page_size=page_size, faults=faults),
                         lambda s: {"conn_type": "zendesk", "host": s.url, "login": EMAIL, "password": TOKEN},
                         **settings_kw)

        yield start


def test_two_days_paginated_with_a_429_land_every_record_once(zendesk, data_dir):
    from feedback_loop.sources.pull import read_stream
    from feedback_loop.sources.systems import pull_system

    stand_in, settings = zendesk(faults={2: ("429", 1)})
    out1 = pull_system(settings, "zendesk", zf.D1)
    out2 = pull_system(settings, "zendesk", zf.D2)
    assert out1["retries"] == 1 and any(r["n"] == 2 for r in stand_in.requests)
    # Several pages per stream (page size 2), every ticket of a day exactly once, none of the other day.
    assert sum(1 for r in stand_in.requests if r["path"].endswith("cursor.json")) >= 5
    ids1 = [t["id"] for t in read_stream(settings, "zendesk", zf.D1, "tickets")]
    ids2 = [t["id"] for t in read_stream(settings, "zendesk", zf.D2, "tickets")]
    assert sorted(ids1) == [101, 102, 103, 104, 105] and sorted(ids2) == [201, 202, 203]
    events1 = [e["id"] for e in read_stream(settings, "zendesk", zf.D1, "ticket_events")]
    assert sorted(events1) == [2, 3, 4]  # the 11-01 event belongs to the day before; no duplicate at page ends
    assert out1["mapped"]["sources"] == {"crm_cases": {"rows": 4, "unmappable": 1},
                                         "surveys": {"rows": 2, "unmappable": 0},
                                         "kb_articles": {"rows": 3, "unmappable": 0}}
    assert out2["mapped"]["sources"]["crm_cases"] == {"rows": 3, "unmappable": 0}

    cases = {r["case_id"]: r for r in _lines(data_dir / f"landing/crm_cases/dt={zf.D1}/zendesk.jsonl.gz")}
    core = {k: v for k, v in cases["102"].items() if "." not in k}
    assert core == {"case_id": "102", "customer_id": "9102", "conversation_id": "CONV-2", "channel": "email",
                    "created_at": "2026-11-01T07:00:00+00:00", "updated_at": "2026-11-02T09:15:00+00:00",
                    "status": "open", "resolved_at": None, "resolved_by": None, "escalated": False,
                    "reopen_count": 1, "last_reopened_at": "2026-11-02T09:05:00+00:00", "handle_time_s": None,
                    "tags": []}
    assert cases["101"]["resolved_by"] == "ai" and cases["101"]["handle_time_s"] == 1500.0
    assert cases["103"]["status"] == "pending" and cases["103"]["escalated"] is True  # hold -> pending
    assert cases["105"]["resolved_by"] == "human"
    assert cases["102"]["zendesk.subject"] == "Card question 102"  # unmapped vendor fields are kept
    surveys = _lines(data_dir / f"landing/surveys/dt={zf.D1}/zendesk.jsonl.gz")
    assert [(s["survey_id"], s["case_id"], s["score"], s["conversation_id"]) for s in surveys] == [
        ("7001", "101", 5, "CONV-1"), ("7002", "105", 1, "CONV-5")]

    # Through land and validate: the unmappable ticket is quarantined with the vendor field in its reason,
    # the unmapped fields are in _extra.
    from feedback_loop.nightly import land, validate

    for source in ("crm_cases", "surveys", "kb_articles"):
        land(settings, source, zf.D1)
        validate(settings, source, zf.D1)
    lake = data_dir / "lake"
    q = duckdb.sql(f"SELECT quarantine_reason, quarantine_detail FROM '{lake}/quarantine/crm_cases/dt={zf.D1}/part.parquet'").fetchall()
    assert len(q) == 1 and q[0][0] == "parse_error"
    assert "record 104" in q[0][1] and "field `status`" in q[0][1] and "weird_status" in q[0][1]
    staged = duckdb.sql(f"SELECT case_id, json_extract_string(_extra, '$.\"zendesk.subject\"') FROM "
                        f"'{lake}/staged/crm_cases/dt={zf.D1}/part.parquet' ORDER BY case_id").fetchall()
    assert staged == [(str(i), f"Card question {i}") for i in (101, 102, 103, 105)]
    assert duckdb.sql(f"SELECT count(*) FROM '{lake}/staged/surveys/dt={zf.D1}/part.parquet'").fetchall()[0][0] == 2


def test_repull_gives_identical_landing_files(zendesk, data_dir):
    # the second pull takes a different path (a 429, a 500) to the same records
    assert_repull_identical(zendesk, "zendesk", zf.D1, data_dir / "landing", {1: ("429", 0), 3: ("500", 0)})
    assert len(list((data_dir / f"landing/_vendor/zendesk/dt={zf.D1}").glob("pull-*"))) == 1


def test_timeout_mid_pull_leaves_the_day_incomplete_and_land_refuses_it(zendesk, data_dir):
    from feedback_loop.nightly import land
    from feedback_loop.sources.pull import IncompleteDayError, PullError, read_manifest
    from feedback_loop.sources.systems import pull_system

    _, settings = zendesk()
    pull_system(settings, "zendesk", zf.D1)  # a complete pull first: its files stay, but must not be used
    _, settings = zendesk(faults={3: ("hang", 2)}, sources_timeout_seconds=0.3, sources_max_retries=0)
    with pytest.raises(PullError, match="timed out"):
        pull_system(settings, "zendesk", zf.D1)
    m = read_manifest(settings, "zendesk", zf.D1)
    assert m["status"] == "incomplete" and "timed out" in m["error"] and m["previous_complete_folder"]
    with pytest.raises(IncompleteDayError, match="incomplete"):
        land(settings, "crm_cases", zf.D1)
    failed = json.loads((data_dir / f"lake/runs/dt={zf.D1}/land/crm_cases.json").read_text())
    assert failed["status"] == "failed"


class _State:
    """The task state store's interface (get/set/delete), for a pull retried within one task instance."""

    def __init__(self):
        self.data = {}

    def get(self, key, default=None):
        return json.loads(json.dumps(self.data.get(key, default)))

    def set(self, key, value):
        self.data[key] = json.loads(json.dumps(value))

    def delete(self, key):
        self.data.pop(key, None)


def test_a_retry_resumes_from_the_stored_cursor_and_gives_the_same_day(zendesk, data_dir):
    from feedback_loop.sources import pull
    from feedback_loop.sources.systems import pull_system

    _, settings = zendesk()
    pull_system(settings, "zendesk", zf.D1)
    clean = _tree_digest(data_dir / "landing")
    state = _State()
    _stand_in, settings = zendesk(faults={3: ("hang", 2)}, sources_timeout_seconds=0.3, sources_max_retries=0)
    with pytest.raises(pull.PullError):
        pull_system(settings, "zendesk", zf.D1, state=state)
    saved = state.data[f"pull:zendesk:{zf.D1}"]
    assert saved["progress"]["tickets"]["pages"] == 2
    stand_in2, settings = zendesk()
    out = pull_system(settings, "zendesk", zf.D1, state=state)
    assert out["resumed_from"]["tickets"]["pages"] == 2
    first = stand_in2.requests[0]
    assert first["path"].endswith("cursor.json") and "cursor" in first["query"]  # no refetch of pages 1-2
    assert _tree_digest(data_dir / "landing") == clean and not state.data


def test_credentials_never_appear_in_logs_or_files(zendesk, data_dir, caplog, capsys):
    from feedback_loop.sources.pull import PullError
    from feedback_loop.sources.systems import pull_system

    caplog.set_level(logging.DEBUG)
    _, settings = zendesk(faults={1: ("429", 0), 2: ("500", 0)})
    pull_system(settings, "zendesk", zf.D1)
    stand_in, settings = zendesk()
    os.environ["AIRFLOW_CONN_ACSR_ZENDESK"] = json.dumps(
        {"conn_type": "zendesk", "host": stand_in.url, "login": EMAIL, "password": "wrong-" + TOKEN})
    with pytest.raises(PullError, match="HTTP 401") as err:
        pull_system(settings, "zendesk", zf.D2)
    basic = base64.b64encode(f"{EMAIL}/token:{TOKEN}".encode()).decode()
    captured = capsys.readouterr()
    assert_kept_out((TOKEN, basic), (caplog.text, captured.out, captured.err, str(err.value)), data_dir)


def test_mapping_files_are_checked_and_can_extend_a_builtin(tmp_path, settings):
    from feedback_loop.sources.mapping_file import load_mapping
    from feedback_loop.sources.mapping_spec import MappingFileError

    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: zendesk\noutputs:\n  - name: cases\n    fields:\n      no_such_field: {path: id}\n")
    with pytest.raises(MappingFileError, match="no_such_field"):
        load_mapping("zendesk", settings.__class__(**{**settings.as_dict(), "sources_mappings": {"zendesk": str(bad)}}))
    own = tmp_path / "own.yaml"
    own.write_text("extends: zendesk\noutputs:\n  - name: cases\n    fields:\n"
                   "      category: {path: 'custom_fields[id=360000000001].value'}\n")
    doc = load_mapping("zendesk", settings.__class__(**{**settings.as_dict(), "sources_mappings": {"zendesk": str(own)}}))
    cases = next(o for o in doc["outputs"] if o["name"] == "cases")
    assert cases["fields"]["category"]["path"].startswith("custom_fields") and "status" in cases["fields"]
