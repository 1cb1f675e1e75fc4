"""Hostile input: every bad record ends staged-as-data or quarantined with its reason; every unreadable
file fails the task naming the file and the problem; nothing is dropped silently.

Complements tests/ingest/test_land.py and tests/ingest/test_quality.py (which pin single examples) with the whole
corpus of tests/hostile/corpus.py, for every source and every file format the source accepts.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import replace

import duckdb
import pytest
from feedback_loop import nightly
from feedback_loop.ingest import contract
from feedback_loop.ingest.land import LandingError, land_source

from .corpus import (
    DAY,
    PREV,
    FileSpec,
    Record,
    check_fates,
    formats_for,
    good_row,
    kinds_for,
    outcome,
    write_day,
    write_support,
)

SOURCES = list(contract.SOURCE_NAMES)
EXT = {"jsonl": "jsonl", "csv": "csv", "parquet": "parquet"}


@pytest.fixture
def lenient(settings):
    """Bad rows are the point here: never withhold a day for its share of them. References resolve within
    the day itself, so the lake's history is complete and an unknown id is `unknown_<column>` (not
    `reference_before_history`, the reason while the history is shorter than the lookback)."""
    return replace(settings, max_bad_row_share=1.0, reference_lookback_days=0)


def _land_support(settings, source, day=DAY):
    write_support(settings.landing, source, day)
    for other in ("agent_events", "crm_cases"):
        if other != source:
            nightly.land(settings, other, day)


@pytest.mark.parametrize("source", SOURCES)
def test_every_kind_of_bad_record_for_every_source_and_format(lenient, source):
    """One file per accepted format, each holding every record kind that applies to it; JSON Lines with a
    BOM, CRLF line ends, blank lines and a truncated last line; CSV with ';' as delimiter."""
    options = {"jsonl": {"bom": True, "newline": "\r\n", "blank_lines": True}, "csv": {"delimiter": ";"}, "parquet": {}}
    specs, i = [], 0
    for n, fmt in enumerate(formats_for(source)):
        records = []
        for kind in kinds_for(source, fmt):
            records.append(kind.make(source, i))
            i += 1
        specs.append(FileSpec(f"{n}-all-kinds.{EXT[fmt]}", records, **options[fmt]))
    assert specs[0].records[0].kind == "good"  # record 0 is the original of every duplicate
    _land_support(lenient, source)
    expected = write_day(lenient.landing, source, specs)
    landed = nightly.land(lenient, source, DAY)
    summary = nightly.validate(lenient, source, DAY)
    counts = check_fates(lenient.lake, source, expected)
    assert landed["rows_read"] == summary["rows_read"] == counts["read"] == len(expected)
    assert summary["rows_staged"] == counts["staged"] and summary["rows_quarantined"] == counts["quarantined"]
    kinds = {r.kind for r in expected.values()}
    assert {"good", "control_chars_and_html", "timestamp_other_zone_after", "duplicate_in_file"} <= kinds


def _gzip_cut(text: str) -> bytes:
    data = gzip.compress(text.encode())
    return data[: len(data) // 2]


def _jsonl_text(source, n=400):
    return "".join(json.dumps(good_row(source, i)) + "\n" for i in range(n))


def _csv_text(source, columns=None, n=400):
    columns = columns or list(contract.SOURCES[source].columns)
    rows = [",".join(columns)]
    for i in range(n):
        row = good_row(source, i)
        rows.append(",".join("" if row.get(c) is None else str(row[c]).replace(",", " ") for c in columns))
    return "\n".join(rows) + "\n"


def _parquet_without(source, column) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = [c for c in contract.SOURCES[source].columns if c != column]
    table = pa.table({c: pa.array([json.dumps(good_row(source, 0).get(c))], pa.string()) for c in cols})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _file_cases():
    """(id, source, file name, bytes, message fragments) of files that cannot be read at all."""
    for source in SOURCES:
        src = contract.SOURCES[source]
        required = next(f.name for f in src.fields if f.required and f.name != src.id_column)
        yield f"{source}-gzip-cut-short", source, "part.jsonl.gz", _gzip_cut(_jsonl_text(source)), ["cannot be read as jsonl", "GZIP"]
        yield f"{source}-zero-byte-gzip", source, "part.jsonl.gz", b"", ["zero bytes", "cut short"]
        yield f"{source}-zero-byte-parquet", source, "part.parquet", b"", ["zero bytes"]
        yield f"{source}-utf16", source, "part.jsonl", _jsonl_text(source, 3).encode("utf-16"), ["UTF-16", "must be UTF-8"]
        yield f"{source}-utf16-no-bom", source, "part.jsonl", _jsonl_text(source, 3).encode("utf-16-le"), ["UTF-16"]
        yield (f"{source}-parquet-missing-column", source, "part.parquet", _parquet_without(source, required),
               [f"missing required column(s) {required}"])
        yield f"{source}-unknown-format", source, "part.xlsx", b"PK\x03\x04", ["not a format", ".jsonl"]
        if src.csv:
            yield f"{source}-csv-gzip-cut-short", source, "part.csv.gz", _gzip_cut(_csv_text(source)), ["cannot be read as csv"]
            cols = [c for c in src.columns if c != required]
            yield (f"{source}-csv-missing-column", source, "part.csv", _csv_text(source, cols, 3).encode(),
                   [f"missing required column(s) {required}"])
            text = _csv_text(source, None, 3).replace(required, required.upper() + "_X", 1)  # in the header
            yield (f"{source}-csv-renamed-column", source, "part.csv", text.encode(),
                   [f"missing required column(s) {required}", f"{required.upper()}_X (renamed?)"])
        else:
            yield f"{source}-csv-not-accepted", source, "part.csv", _csv_text(source, None, 3).encode(), ["not a format"]


FILE_CASES = list(_file_cases())


@pytest.mark.parametrize("case", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_unreadable_files_fail_naming_the_file_and_the_problem(settings, case):
    _, source, name, data, fragments = case
    folder = f"{settings.landing}/{source}/dt={DAY}"
    os.makedirs(folder)
    with open(f"{folder}/{name}", "wb") as fh:
        fh.write(data)
    with pytest.raises(LandingError) as err:
        land_source(settings, source, DAY)
    message = str(err.value)
    assert f"{folder}/{name}" in message
    for fragment in fragments:
        assert fragment in message, message
    assert not os.path.exists(f"{settings.lake}/raw/{source}/dt={DAY}/part.parquet")  # nothing half-landed


def test_empty_files_of_every_text_format_are_days_without_records(settings):
    folder = f"{settings.landing}/surveys/dt={DAY}"
    os.makedirs(folder)
    files = {"a.jsonl": b"", "b.csv": b"", "c.jsonl": b"  \n\t\n\r\n", "d.csv": b"survey_id,case_id,submitted_at,kind,score\n",
             "e.jsonl.gz": gzip.compress(b"")}
    for name, data in files.items():
        with open(f"{folder}/{name}", "wb") as fh:
            fh.write(data)
    duckdb.sql(f"COPY (SELECT 's1' survey_id, 'k1' case_id, now() submitted_at, 'csat' kind, 5 score LIMIT 0) "
               f"TO '{folder}/f.parquet'")
    result = land_source(settings, "surveys", DAY)
    assert result.rows_read == 0 and [f["rows"] for f in result.files] == [0] * 6
    assert [f.get("empty", False) for f in result.files] == [True, True, False, False, False, False]


def test_a_zero_byte_lake_partition_fails_every_reader_naming_it(settings):
    """A partition the lake never writes (lake writes are atomic), e.g. left by a copy outside the pipeline."""
    path = f"{settings.lake}/raw/surveys/dt={DAY}/part.parquet"
    os.makedirs(os.path.dirname(path))
    open(path, "wb").close()
    with pytest.raises(Exception) as err:
        nightly.validate(settings, "surveys", DAY)
    assert path in str(err.value) and "too small to be a Parquet file" in str(err.value)
    # Re-landing the day replaces it.
    os.makedirs(f"{settings.landing}/surveys/dt={DAY}")
    land_source(settings, "surveys", DAY)
    assert duckdb.sql(f"SELECT count(*) FROM '{path}'").fetchall() == [(0,)]


def test_unreadable_records_keep_their_own_line_and_count_once(settings):
    """A record DuckDB rejects (bad UTF-8, wrong field count) is one row at its own line; the readable
    records after it keep theirs (they used to shift up, and a CSV record short of two fields counted twice)."""
    def write(source, name, data: bytes):
        os.makedirs(f"{settings.landing}/{source}/dt={DAY}", exist_ok=True)
        with open(f"{settings.landing}/{source}/dt={DAY}/{name}", "wb") as fh:
            fh.write(data)

    ev = [json.dumps(good_row("agent_events", i)).encode() for i in range(3)]
    write("agent_events", "a.jsonl", ev[0] + b"\n" + b'{"text": "\xff"}\n\n' + ev[1] + b"\n\xc3\x28\n" + ev[2] + b"\n")
    result = land_source(settings, "agent_events", DAY)
    rows = outcome(settings.lake, "agent_events")["raw"]
    assert result.rows_read == 5
    assert [(r["_line"], r["event_id"], r["_parse_error"] is not None) for r in rows] == [
        (1, "e0", False), (2, None, True), (4, "e1", False), (5, None, True), (6, "e2", False)]

    ok = f"k1,{DAY}T10:00:00Z,csat,5"
    write("surveys", "s.csv", "\n".join([
        "survey_id,case_id,submitted_at,kind,score,comment",
        f"s1,{ok},fine",
        f"s2,k1,{DAY}T10:00:00Z,csat",  # two fields short: DuckDB logs two rejects for it
        f's3,{ok},"a comment over\ntwo lines"',  # a quoted newline: record 3 spans lines 4-5
        f"s4,{ok},fine",
        f"s5,{ok},fine,surplus",
        f"s6,{ok},fine",
    ]).encode() + b"\n")
    result = land_source(settings, "surveys", DAY)
    got = [(r["_line"], r["survey_id"], (r["_parse_error"] or "").split(":")[0])
           for r in outcome(settings.lake, "surveys")["raw"]]
    assert result.rows_read == 6
    assert got == [(1, "s1", ""), (2, None, "unreadable record (MISSING COLUMNS)"), (3, "s3", ""), (4, "s4", ""),
                   (5, None, "unreadable record (TOO MANY COLUMNS)"), (6, "s6", "")]


def test_a_text_of_several_megabytes_survives_every_format(lenient):
    """Land reads lines up to 64 MB; a 5 MB comment is data, in JSON Lines, CSV and Parquet alike."""
    big = ("Lorem ipsum dolor sit amet, <b>consectetur</b> \u00e9\u00e8 " * 100_000)[:5_000_000]
    specs = [FileSpec("a.jsonl", [Record("good", {**good_row("surveys", 0), "comment": big}, None)]),
             FileSpec("b.csv", [Record("good", {**good_row("surveys", 1), "comment": big}, None)]),
             FileSpec("c.parquet", [Record("good", {**good_row("surveys", 2), "comment": big}, None)])]
    for s in specs:
        s.records[0].expect = {"comment": big}
    _land_support(lenient, "surveys")
    expected = write_day(lenient.landing, "surveys", specs)
    nightly.land(lenient, "surveys", DAY)
    nightly.validate(lenient, "surveys", DAY)
    assert check_fates(lenient.lake, "surveys", expected)["staged"] == 3


def test_a_line_beyond_the_line_size_limit_is_quarantined_not_dropped(settings):
    folder = f"{settings.landing}/agent_events/dt={DAY}"
    os.makedirs(folder)
    huge = json.dumps({**good_row("agent_events", 1), "text": "y" * 67_200_000}).encode()
    with open(f"{folder}/a.jsonl", "wb") as fh:
        fh.write(json.dumps(good_row("agent_events", 0)).encode() + b"\n" + huge + b"\n")
    del huge
    result = land_source(settings, "agent_events", DAY)
    rows = outcome(settings.lake, "agent_events")["raw"]
    assert result.rows_read == 2 and rows[1]["_line"] == 2
    assert "LINE SIZE OVER MAXIMUM" in rows[1]["_parse_error"] and len(rows[1]["_raw_text"]) == 2000


def test_parquet_with_drifted_native_types(lenient):
    """A vendor update writes native types the contract does not use: naive timestamps, dates, fractional
    scores, integer ids, text where a boolean belongs. Each row says which field does not fit."""
    folder = f"{lenient.landing}/outcome_checks/dt={DAY}"
    os.makedirs(folder)
    for name, checked_at, verified in (("a", f"TIMESTAMPTZ '{DAY} 10:00:00+00'", "'true'"),
                                       ("b", f"TIMESTAMP '{DAY} 10:00:00'", "'true'"),
                                       ("c", f"TIMESTAMPTZ '{DAY} 10:00:00+00'", "'maybe'")):
        duckdb.sql(f"COPY (SELECT {ord(name) - 96} check_id, 'k1' case_id, 'refund' action, {checked_at} checked_at, "
                   f"{verified} verified, 2.5 vendor_score) TO '{folder}/{name}.parquet'")
    os.makedirs(f"{lenient.landing}/crm_cases/dt={DAY}")
    duckdb.sql(f"COPY (SELECT 'k1' case_id, 'u1' customer_id, 'chat' channel, DATE '{DAY}' created_at, "
               f"TIMESTAMPTZ '{DAY} 09:00:00+00' updated_at, 'open' status, 1.5 reopen_count) "
               f"TO '{lenient.landing}/crm_cases/dt={DAY}/cases.parquet'")
    nightly.land(lenient, "crm_cases", DAY)
    nightly.land(lenient, "outcome_checks", DAY)
    nightly.validate(lenient, "outcome_checks", DAY)
    checks = outcome(lenient.lake, "outcome_checks")
    assert [r["check_id"] for r in checks["staged"]] == ["1"]  # an integer id is read as its text
    assert json.loads(checks["staged"][0]["_extra"]) == {"vendor_score": 2.5}
    assert {r["check_id"]: (r["quarantine_reason"], r["quarantine_detail"]) for r in checks["quarantine"]} == {
        "2": ("type_error", "checked_at: not an RFC 3339 timestamp with a UTC offset"),
        "3": ("type_error", "verified: not a boolean")}
    nightly.validate(lenient, "crm_cases", DAY)
    case = outcome(lenient.lake, "crm_cases")["quarantine"][0]
    assert case["quarantine_detail"] == ("created_at: not an RFC 3339 timestamp with a UTC offset; "
                                         "reopen_count: not an integer")


def test_duplicates_across_files_and_days_and_a_missing_folder_in_the_summary(lenient):
    """Day 1: every source but outcome_checks (its folder is missing: configured as an empty day, and the
    summary says so). Day 2: every source repeats an id of day 1 and an id across its two files."""
    settings = replace(lenient, missing_source="empty", reference_lookback_days=1)
    for source in SOURCES:
        if source != "outcome_checks":
            write_day(settings.landing, source, [FileSpec("a.jsonl", [
                Record("good", good_row(source, 0, PREV), None), Record("good", good_row(source, 1, PREV), None)])], PREV)
    for source in SOURCES:
        nightly.land(settings, source, PREV)
    for source in SOURCES:
        nightly.validate(settings, source, PREV)
    nightly.summarize(settings, PREV)
    with open(f"{settings.lake}/runs/dt={PREV}/summary.json") as fh:
        on_disk = json.load(fh)
    assert {s: v["missing_folder"] for s, v in on_disk["sources"].items()} == {s: s == "outcome_checks" for s in SOURCES}
    assert {v["missing_folder_policy"] for v in on_disk["sources"].values()} == {"empty"}
    assert on_disk["sources"]["outcome_checks"]["rows_read"] == 0

    expected = {}
    for source in SOURCES:
        # Record 0 repeats day 1's id: a duplicate across days, except for snapshots (a case exported again
        # with a new updated_at, the knowledge base's daily full snapshot), which repeat ids on purpose, and
        # for outcome_checks, which had no day 1.
        across_days = None if source in ("crm_cases", "kb_articles", "outcome_checks") else "duplicate_id_across_days"
        first = [Record("good", good_row(source, 0), across_days), Record("good", good_row(source, 2), None)]
        second = [Record("good", good_row(source, 2), "duplicate_id"), Record("good", good_row(source, 3), None)]
        other = "b.csv" if contract.SOURCES[source].csv else "b.parquet"
        expected[source] = write_day(settings.landing, source, [FileSpec("a.jsonl", first), FileSpec(other, second)])
    for source in SOURCES:
        nightly.land(settings, source, DAY)
    for source in SOURCES:
        nightly.validate(settings, source, DAY)
        check_fates(settings.lake, source, expected[source])
    summary = nightly.summarize(settings, DAY)
    assert not any(s["missing_folder"] for s in summary["sources"].values())
    detail = outcome(settings.lake, "surveys")["quarantine"]
    assert {r["quarantine_detail"] for r in detail} == {f"already staged on {PREV}", "duplicate of row 2"}


def test_a_missing_folder_is_an_outage_by_default(settings):
    with pytest.raises(LandingError) as err:
        nightly.land(settings, "kb_articles", DAY)
    assert f"{settings.landing}/kb_articles/dt={DAY}" in str(err.value)
    assert "ACSR_MISSING_SOURCE=empty" in str(err.value)
