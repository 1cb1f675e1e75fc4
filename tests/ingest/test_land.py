"""Land: every line or record becomes one raw row; unreadable files fail with the file named."""

from __future__ import annotations

import gzip
import json

import duckdb
import pytest
from feedback_loop.ingest import contract
from feedback_loop.ingest.land import LandingError, land_source

DAY = "2026-11-20"


def _write(settings, source, name, data: bytes | str):
    folder = f"{settings.landing}/{source}/dt={DAY}"
    import os

    os.makedirs(folder, exist_ok=True)
    path = f"{folder}/{name}"
    with open(path, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    return path


def _event(i, **kw):
    row = {"event_id": f"e{i}", "ts": f"{DAY}T10:00:{i % 60:02d}+00:00", "conversation_id": "c1",
           "customer_id": "u1", "turn": i, "event_type": "customer_message", "text": "hello"}
    row.update(kw)
    return json.dumps(row)


class _Rows(list):
    """Raw rows as dicts, indexable like raw.loc[i, column] (no pandas NaN-for-None surprises)."""

    @property
    def loc(self):
        return _Loc(self)

    def __getitem__(self, key):
        if isinstance(key, str):
            return [r[key] for r in self]
        return list.__getitem__(self, key)


class _Loc:
    def __init__(self, rows):
        self.rows = rows

    def __getitem__(self, key):
        i, col = key
        return self.rows[i][col]


def _raw(settings, source="agent_events"):
    rel = duckdb.sql(f"SELECT * FROM '{settings.lake}/raw/{source}/dt={DAY}/part.parquet' ORDER BY _row_id")
    return _Rows(dict(zip(rel.columns, row)) for row in rel.fetchall())


def test_every_jsonl_line_is_one_row_with_its_problem(settings):
    lines = [
        _event(1, confidence=0.5, kb_results=[{"article_id": "KB-1", "score": 0.9}], action_args={"a": 1},
               vendor_field="kept"),
        _event(2, turn="three"),
        _event(3, ts="2026-11-20T10:00:00"),  # no offset
        "this is not json",
        _event(4, confidence="NaN"),
        "",  # blank lines are not records
        '{"event_id": "e5", "ts": "2026-11-20T10:00:0',  # truncated last line
    ]
    _write(settings, "agent_events", "a.jsonl", "\n".join(lines))
    result = land_source(settings, "agent_events", DAY)
    assert result.rows_read == 6 and result.parse_errors == 2
    raw = _raw(settings)
    assert list(raw["_line"]) == [1, 2, 3, 4, 5, 7]
    assert raw.loc[0, "_type_errors"] is None and json.loads(raw.loc[0, "_extra"]) == {"vendor_field": "kept"}
    assert raw.loc[0, "kb_results"][0]["article_id"] == "KB-1"
    assert raw.loc[1, "_type_errors"] == "turn: not an integer"
    assert raw.loc[2, "_type_errors"].startswith("ts: not an RFC 3339 timestamp")
    assert raw.loc[3, "_parse_error"].startswith("invalid JSON") and raw.loc[3, "_raw_text"] == "this is not json"
    assert raw.loc[4, "_type_errors"] == "confidence: not a finite number"
    assert raw.loc[5, "_parse_error"].startswith("invalid JSON")


def test_gzip_bom_and_invalid_utf8(settings):
    body = "\ufeff" + _event(1) + "\n" + _event(2) + "\n"
    _write(settings, "agent_events", "a.jsonl.gz", gzip.compress(body.encode()))
    _write(settings, "agent_events", "b.jsonl", _event(3).encode() + b"\n" + b'{"text": "\xff\xfe"}\n')
    result = land_source(settings, "agent_events", DAY)
    assert result.rows_read == 4
    raw = _raw(settings)
    assert list(raw["event_id"][:3]) == ["e1", "e2", "e3"]
    assert "INVALID ENCODING" in raw.loc[3, "_parse_error"] or "unicode" in raw.loc[3, "_parse_error"].lower()


def test_gzip_cut_short_fails_naming_the_file(settings):
    data = gzip.compress(("\n".join(_event(i) for i in range(2000))).encode())
    path = _write(settings, "agent_events", "cut.jsonl.gz", data[: len(data) // 2])
    with pytest.raises(LandingError) as err:
        land_source(settings, "agent_events", DAY)
    assert path in str(err.value)


def test_csv_with_quoted_newline_extra_column_and_other_delimiter(settings):
    header = "survey_id;case_id;submitted_at;kind;score;comment;channel_hint\n"
    _write(settings, "surveys", "s.csv", header + f's1;k1;{DAY}T10:00:00Z;csat;5;"great\nthanks";web\n'
           f"s2;k2;{DAY}T11:00:00Z;ces;x;;\n")
    result = land_source(settings, "surveys", DAY)
    assert result.rows_read == 2
    raw = _raw(settings, "surveys")
    assert raw.loc[0, "comment"] == "great\nthanks"
    assert json.loads(raw.loc[0, "_extra"]) == {"channel_hint": "web"}
    assert raw.loc[1, "_type_errors"] == "score: not an integer"


def test_csv_missing_or_renamed_required_column_fails(settings):
    path = _write(settings, "surveys", "s.csv", f"survey_id,case,submitted_at,kind,score\ns1,k1,{DAY}T10:00:00Z,csat,5\n")
    with pytest.raises(LandingError) as err:
        land_source(settings, "surveys", DAY)
    msg = str(err.value)
    assert path in msg and "missing required column(s) case_id" in msg
    assert "columns not in the contract: case (renamed?)" in msg


def test_parquet_with_nested_and_naive_timestamps(settings):
    import os

    folder = f"{settings.landing}/kb_articles/dt={DAY}"
    os.makedirs(folder)
    duckdb.sql(
        f"""COPY (SELECT 'KB-1' article_id, 'Title' title, 'Body' body, ['card_arrival'] intents,
                  'published' status, TIMESTAMPTZ '{DAY} 08:00:00+00' updated_at
           UNION ALL SELECT 'KB-2', 'T2', 'B2', [], 'draft', NULL) TO '{folder}/kb.parquet'"""
    )
    result = land_source(settings, "kb_articles", DAY)
    assert result.rows_read == 2
    raw = _raw(settings, "kb_articles")
    assert list(raw.loc[0, "intents"]) == ["card_arrival"] and raw.loc[0, "_type_errors"] is None


def test_empty_file_and_zero_byte_partition_are_empty_days(settings):
    _write(settings, "overrides", "empty.jsonl", b"")
    assert land_source(settings, "overrides", DAY).rows_read == 0
    import os

    os.makedirs(f"{settings.landing}/outcome_checks/dt={DAY}")
    assert land_source(settings, "outcome_checks", DAY).rows_read == 0


def test_missing_source_folder_is_an_outage_unless_configured(settings):
    with pytest.raises(LandingError, match="does not exist"):
        land_source(settings, "surveys", DAY)
    from dataclasses import replace

    result = land_source(replace(settings, missing_source="empty"), "surveys", DAY)
    assert result.missing_folder and result.rows_read == 0


def test_unknown_file_format_is_refused(settings):
    path = _write(settings, "agent_events", "events.xml", "<x/>")
    with pytest.raises(LandingError) as err:
        land_source(settings, "agent_events", DAY)
    assert path in str(err.value)


def test_landing_twice_replaces_the_partition(settings):
    _write(settings, "agent_events", "a.jsonl", _event(1) + "\n" + _event(2))
    land_source(settings, "agent_events", DAY)
    first = _raw(settings)
    land_source(settings, "agent_events", DAY)
    assert _raw(settings) == first
    import os

    assert sorted(os.listdir(f"{settings.lake}/raw/agent_events/dt={DAY}")) == ["part.parquet"]


def test_published_json_schemas_match_the_contract():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "docs" / "contract"
    for src in contract.SOURCES.values():
        published = json.loads((folder / f"{src.name}.schema.json").read_text())
        assert published == contract.json_schema(src), "re-export with: python -m feedback_loop contract"


def test_json_schema_accepts_a_contract_row_and_rejects_a_bad_one():
    import jsonschema

    schema = contract.json_schema(contract.AGENT_EVENTS)
    good = json.loads(_event(1, confidence=0.3, extra="ok"))
    jsonschema.validate(good, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**good, "event_type": "teleport"}, schema)
