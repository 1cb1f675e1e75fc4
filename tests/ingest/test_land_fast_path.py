"""Land's fast path (read_json once per clean JSON Lines file) gives exactly the line path's raw rows."""

from __future__ import annotations

import gzip
import json
import os

import duckdb
import pytest
from feedback_loop.ingest import land
from feedback_loop.ingest.land import land_source

DAY = "2026-11-20"


def _event(i, **kw):
    row = {"event_id": f"e{i}", "ts": f"{DAY}T10:00:{i % 60:02d}+00:00", "conversation_id": "c1",
           "customer_id": "u1", "turn": i, "event_type": "customer_message", "text": "hello", "true_intent": None}
    row.update(kw)
    return row


# Clean JSON objects (the fast path takes them) whose values exercise every typing rule of the line path.
CLEAN = [
    _event(0),
    _event(1, turn="7", confidence="0.5", rating=1.0, ts=f"{DAY} 10:00:00+00", true_intent="card_arrival"),
    _event(2, turn=4.5, cost_usd="NaN", kb_results='[{"article_id": "KB-1", "score": 1}]', action_args=[1]),
    _event(3, text={"x": [1, 2.50]}, intent=12, model=True, latency_ms=1e308, dwell_ms=-1, input_tokens="x"),
    _event(4, ts=f"{DAY}T10:00:00", kb_results=[{"article_id": "KB-2", "score": "high"}], action_args={"a": None}),
    _event(5, ts="yesterday", turn=None, text="h\u00e9 \u2028 \"quoted\" \\ back", true_intent={"nested": [1e5]}),
    _event(6, text=123456789012345678901234567890, confidence=-0.0, kb_query=None, error_message="line\nbreak"),
]
# Files the fast path must leave to the line path; each still lands one row per line, as before.
DECLINED = {
    "blank_line": "\n\n",
    "invalid_line": "\n{not json}\n",
    "array_line": "\n[1, 2]\n",
    "scalar_line": "\n42\n",
    "null_line": "\nnull\n",
    "empty_object": "\n{}\n",  # no keys, like a non-object in the scan: left to the line path
    "trailing_text": '\n{"event_id": "d0"} x\n',
    "duplicate_key": '\n{"event_id": "d1", "event_id": "d2"}\n',
    "case_collision": '\n{"event_id": "d3", "EVENT_ID": "d4"}\n',
    "varying_extras": '\n{"event_id": "d5", "other_key": 1}\n',
}


def _land_both_ways(settings, monkeypatch, text: bytes, gz: bool):
    name = "part.jsonl" + (".gz" if gz else "")
    return _land_files_both_ways(settings, monkeypatch, "agent_events", "_read_jsonl_fast",
                                 {name: gzip.compress(text) if gz else text})


def _land_files_both_ways(settings, monkeypatch, source: str, fast_reader: str, files: dict[str, bytes]):
    """Land `files` as `source`'s day with the fast path `fast_reader` (spied on), then with it turned off:
    (the fast path's results per file, rows in one and not the other both ways, connection, fast file)."""
    folder = f"{settings.landing}/{source}/dt={DAY}"
    os.makedirs(folder, exist_ok=True)
    for name, data in files.items():
        with open(f"{folder}/{name}", "wb") as fh:
            fh.write(data)
    calls = []
    real = getattr(land, fast_reader)

    def spy(*args, **kw):
        calls.append(result := real(*args, **kw))
        return result

    monkeypatch.setattr(land, fast_reader, spy)
    fast = land_source(settings, source, DAY)
    part = f"{settings.lake}/raw/{source}/dt={DAY}/part.parquet"
    os.rename(part, part.replace("part.parquet", "fast.parquet"))
    monkeypatch.setattr(land, fast_reader, lambda *a, **kw: None)
    line = land_source(settings, source, DAY)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    a, b = "'" + part.replace("part.parquet", "fast.parquet") + "'", f"'{part}'"
    diff = con.execute(f"SELECT (SELECT count(*) FROM (FROM {a} EXCEPT ALL FROM {b})),"
                       f" (SELECT count(*) FROM (FROM {b} EXCEPT ALL FROM {a}))").fetchone()
    assert con.execute(f"DESCRIBE FROM {a}").fetchall() == con.execute(f"DESCRIBE FROM {b}").fetchall()
    assert (fast.rows_read, fast.parse_errors) == (line.rows_read, line.parse_errors)
    return calls, diff, con, a


@pytest.mark.parametrize("gz", [False, True])
def test_clean_file_takes_the_fast_path_with_the_line_paths_rows(settings, monkeypatch, gz):
    text = "\n".join(json.dumps(r) for r in CLEAN).encode() + b"\n"
    calls, diff, con, part = _land_both_ways(settings, monkeypatch, text, gz)
    assert calls and calls[0] is not None  # the fast path was taken
    assert diff == (0, 0)
    errors = con.execute(f"SELECT count(_type_errors), count(_extra) FROM {part}").fetchone()
    assert errors == (4, len(CLEAN))  # rows 2..5 carry type errors; every row keeps true_intent in _extra
    # One fast-path file is written without a sort: still in _row_id order, _row_id = line number
    order = con.execute(f"SELECT list(_row_id), list(_line), list(event_id) FROM {part.replace('part.parquet', 'fast.parquet')}").fetchone()
    assert order == (list(range(1, 8)), list(range(1, 8)), [f"e{i}" for i in range(7)])


@pytest.mark.parametrize("case", sorted(DECLINED))
def test_files_the_fast_path_declines_land_as_before(settings, monkeypatch, case):
    clean = "\n".join(json.dumps(r) for r in CLEAN[:3])
    calls, diff, _, _ = _land_both_ways(settings, monkeypatch, (clean + DECLINED[case]).encode(), gz=False)
    assert calls == [None]
    assert diff == (0, 0)


def test_streamed_file_that_read_json_rejects_falls_back_to_the_line_path(settings, monkeypatch):
    # A bare CR ends a line for the line reader (two clean objects) but not for read_json, which fails
    # only while the partition is being written: the file is landed again by the line path.
    clean = "\n".join(json.dumps(r) for r in CLEAN[:3])
    text = (clean + "\n" + json.dumps(_event(7)) + "\r" + json.dumps(_event(8)) + "\n").encode()
    calls, diff, con, part = _land_both_ways(settings, monkeypatch, text, gz=False)
    assert calls and calls[0] is not None  # the scan accepted it; the write declined it
    assert diff == (0, 0)
    assert con.execute(f"SELECT list(event_id ORDER BY _row_id) FROM {part}").fetchone()[0] == [
        "e0", "e1", "e2", "e7", "e8"]


def test_a_partition_that_fails_its_check_is_never_published(tmp_path):
    """The streamed fast path checks the written file before the rename: a failed check leaves the
    previous version (or nothing) in place and no temporary file behind."""
    import duckdb
    from feedback_loop.lake.files import copy_atomic

    con = duckdb.connect()
    target = tmp_path / "raw" / "agent_events" / "dt=2026-11-20" / "part.parquet"
    copy_atomic(con, "SELECT 1 AS a", str(target))
    seen = []

    def wrong_count(path):
        seen.append(con.execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchone()[0])
        raise ValueError("wrong count")

    with pytest.raises(ValueError, match="wrong count"):
        copy_atomic(con, "SELECT * FROM range(5) t(a)", str(target), check=wrong_count)
    assert seen == [5]
    assert con.execute(f"SELECT a FROM read_parquet('{target}')").fetchall() == [(1,)]
    assert sorted(p.name for p in target.parent.iterdir()) == ["part.parquet"]


# -- CSV: read_csv's text fields typed directly, when no record is rejected ---------------------------------

CSV_HEADER = ("case_id,customer_id,conversation_id,channel,created_at,updated_at,status,resolved_at,escalated,"
              "reopen_count,handle_time_s,tags,priority_hint,\n")  # no resolved_by/category/...; an extra and an unnamed
# column (`column13`): `_extra` keeps the header's order, not the sorted one
CSV_CLEAN = [
    f"k1,u1,c1,web,{DAY}T10:00:00Z,{DAY}T10:05:00+00:00,open,,true,0,12.5,\"[\"\"billing\"\", \"\"vip\"\"]\",web,x",
    f"k2,u2,,email,{DAY} 10:00:00+00,{DAY}T10:00:00,resolved,{DAY}T11:00:00Z,yes,4.5,NaN,not json,,",
    f"k3,u3,c3,chat,yesterday,{DAY}T10:00:00Z,open,,,\"7\",-0.0,\"[1, 2]\",\"quoted, \"\"hint\"\"\",",
    f"k4,u4,c4,chat,{DAY}T10:00:00Z,{DAY}T10:00:00Z,open,,FALSE,,1e308,\"{{\"\"a\"\": 1}}\",\"h\u00e9 \u2028\",",
    f"k5,u5,c5,phone,{DAY}T10:00:00Z,{DAY}T10:00:00Z,\"multi\nline\",,0,-3,,[],\"\",",
    f"k6,u6,c6,web,{DAY}T10:00:00Z,{DAY}T10:00:00Z,open,,1,12345678901234567890,x,\"[\"\"a\"\"]\",t,",
]
CSV_DECLINED = {
    "short_record": "k7,u7\n",  # fewer fields: DuckDB rejects it, the line path keeps it as a parse error
    "long_record": f"k8,u8,c8,web,{DAY}T10:00:00Z,{DAY}T10:00:00Z,open,,,,,,,,extra,fields\n",
    "open_quote": f"k9,u9,c9,web,{DAY}T10:00:00Z,{DAY}T10:00:00Z,\"never closed\n",
}


def _land_csv_both_ways(settings, monkeypatch, files: dict[str, str]):
    return _land_files_both_ways(settings, monkeypatch, "crm_cases", "_read_csv_fast",
                                 {name: text.encode() for name, text in files.items()})


def test_clean_csv_takes_the_fast_path_with_the_line_paths_rows(settings, monkeypatch):
    calls, diff, con, fast = _land_csv_both_ways(settings, monkeypatch, {"cases.csv": CSV_HEADER + "\n".join(CSV_CLEAN) + "\n"})
    assert calls and calls[0] is not None  # the fast path was taken
    assert diff == (0, 0)
    rows = con.execute(f"SELECT list(_row_id), list(_line), list(case_id), count(_type_errors), count(_extra), "
                       f"list(tags ORDER BY _row_id), list(status ORDER BY _row_id) FROM {fast}").fetchone()
    assert rows[:3] == (list(range(1, 7)), list(range(1, 7)), [f"k{i}" for i in range(1, 7)])
    assert rows[3] >= 4 and rows[4] == 6  # type errors in several records; every record keeps its extra columns
    assert rows[5][0] == ["billing", "vip"] and rows[6][4] == "multi\nline"


@pytest.mark.parametrize("case", sorted(CSV_DECLINED))
def test_csv_the_fast_path_declines_lands_as_before(settings, monkeypatch, case):
    text = CSV_HEADER + "\n".join(CSV_CLEAN[:3]) + "\n" + CSV_DECLINED[case] + CSV_CLEAN[3] + "\n"
    calls, diff, con, fast = _land_csv_both_ways(settings, monkeypatch, {"cases.csv": text})
    assert calls == [None]
    assert diff == (0, 0)
    assert con.execute(f"SELECT count(_parse_error) FROM {fast}").fetchone()[0] >= 1


def test_a_day_of_two_csv_files_takes_the_fast_path_for_each(settings, monkeypatch):
    other = "case_id,customer_id,channel,created_at,updated_at,status,tags\n" + \
        f"k9,u9,web,{DAY}T10:00:00Z,{DAY}T10:00:00Z,open,\"[\"\"z\"\"]\"\n"
    calls, diff, con, fast = _land_csv_both_ways(
        settings, monkeypatch, {"a.csv": CSV_HEADER + "\n".join(CSV_CLEAN) + "\n", "b.csv": other})
    assert len(calls) == 2 and all(c is not None for c in calls)
    assert diff == (0, 0)
    assert con.execute(f"SELECT count(*), max(_row_id) FROM {fast}").fetchone() == (7, 7)
