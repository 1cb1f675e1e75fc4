"""Property-based variations of the hostile-input corpus (Hypothesis).

Every example is a random day of one source: one to three files, each in a random format the source
accepts (JSON Lines, gzip, CSV with a random delimiter, Parquet), BOM, CRLF, blank lines, with a random
mix of the corpus's good and bad records. The invariant checked every time, per source and day:

    rows read = rows staged + rows quarantined = records written

and every record's fate is the one its kind prescribes. A second property damages the bytes of a valid
file at random (truncation, NUL/invalid UTF-8/CR/quote bytes) and checks that landing either fails naming
the file or keeps exactly one row per line.

Example counts are kept small (CI has two cores): validation runs Great Expectations per example.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import tempfile

from feedback_loop import nightly
from feedback_loop.ingest import contract
from feedback_loop.ingest.land import LandingError, land_source
from feedback_loop.settings import Settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .corpus import (
    DAY,
    KINDS,
    FileSpec,
    check_fates,
    formats_for,
    good_row,
    kinds_for,
    outcome,
    write_day,
    write_support,
)

PARSE_KINDS = {"not_json", "json_array", "truncated_last_line", "invalid_utf8", "csv_missing_fields", "csv_extra_fields"}
EXTENSIONS = {"jsonl": ["jsonl", "jsonl.gz", "ndjson"], "csv": ["csv", "csv.gz"], "parquet": ["parquet"]}
SETTINGS = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.too_slow]}


@st.composite
def days(draw, source=None, max_records=8):
    """(source, [FileSpec]) of a random day; record 0 of file 0 is good (the original of duplicates)."""
    source = source or draw(st.sampled_from(contract.SOURCE_NAMES))
    specs, i = [], 0
    for n in range(draw(st.integers(1, 3))):
        fmt = draw(st.sampled_from(formats_for(source)))
        ext = draw(st.sampled_from(EXTENSIONS[fmt]))
        kinds = draw(st.lists(st.sampled_from([k.name for k in kinds_for(source, fmt)]), max_size=max_records))
        if n == 0:
            kinds = ["good", *kinds]
        records = []
        for name in kinds:
            records.append(KINDS[name].make(source, i))
            i += 1
        text = fmt != "parquet"
        specs.append(FileSpec(
            f"part-{n}.{ext}", records,
            newline=draw(st.sampled_from(["\n", "\r\n"])) if text else "\n",
            bom=draw(st.booleans()) if text else False,
            delimiter=draw(st.sampled_from([",", ";", "\t", "|"])) if fmt == "csv" else ",",
            blank_lines=draw(st.booleans()) if fmt == "jsonl" else False,
            trailing_newline=draw(st.booleans()) if text else True,
        ))
    return source, specs


def _settings(root: str) -> Settings:
    return Settings(landing=f"{root}/landing", lake=f"{root}/lake", warehouse=f"{root}/warehouse.duckdb",
                    max_bad_row_share=1.0, reference_lookback_days=0)


@settings(max_examples=25, **SETTINGS)
@given(days())
def test_landing_keeps_one_row_per_record_with_its_problem(day):
    source, specs = day
    with tempfile.TemporaryDirectory() as root:
        s = _settings(root)
        expected = write_day(s.landing, source, specs)
        result = land_source(s, source, DAY)
        raw = outcome(s.lake, source)["raw"]
        assert result.rows_read == len(raw) == len(expected)
        assert {(r["_source_file"], r["_line"]) for r in raw} == set(expected)
        for r in raw:
            rec = expected[(r["_source_file"], r["_line"])]
            assert (r["_parse_error"] is not None) == (rec.kind in PARSE_KINDS), (rec.kind, r["_parse_error"])
            if r["_parse_error"] is None:
                assert (r["_type_errors"] is not None) == (rec.reason == "type_error"), (rec.kind, r["_type_errors"])
            else:
                assert r["_raw_text"] is not None or rec.kind == "invalid_utf8"


@settings(max_examples=6, **SETTINGS)
@given(days(max_records=8))
def test_validation_stages_or_quarantines_every_record_with_its_reason(day):
    source, specs = day
    with tempfile.TemporaryDirectory() as root:
        s = _settings(root)
        write_support(s.landing, source)
        for other in ("agent_events", "crm_cases"):
            if other != source:
                nightly.land(s, other, DAY)
        expected = write_day(s.landing, source, specs)
        landed = nightly.land(s, source, DAY)
        summary = nightly.validate(s, source, DAY)
        counts = check_fates(s.lake, source, expected)
        assert landed["rows_read"] == summary["rows_read"] == counts["read"] == len(expected)
        assert summary["rows_read"] == summary["rows_staged"] + summary["rows_quarantined"]


def _jsonl_lines(data: bytes) -> int:
    """Records DuckDB's line reader sees: lines ended by LF, CRLF or a bare CR, not blank (spaces/tabs)."""
    return sum(1 for seg in re.split(rb"\r\n|\r|\n", data) if seg.strip(b" \t"))


DAMAGE = st.sampled_from([b"\x00", b"\xff", b"\xc3", b"\r", b"\n", b'"', b"{", b"\t", b"\xef\xbb\xbf", b"\\"])


@settings(max_examples=25, **SETTINGS)
@given(source=st.sampled_from(contract.SOURCE_NAMES), n=st.integers(1, 6), data=st.data())
def test_damaged_bytes_fail_naming_the_file_or_keep_every_line(source, n, data):
    body = b"".join(json.dumps(good_row(source, i), ensure_ascii=False).encode() + b"\n" for i in range(n))
    cut = data.draw(st.integers(0, len(body)), label="truncate at")
    body = body[:cut]
    for _ in range(data.draw(st.integers(0, 4), label="insertions")):
        at = data.draw(st.integers(0, len(body)), label="at")
        body = body[:at] + data.draw(DAMAGE, label="bytes") + body[at:]
    zipped = data.draw(st.booleans(), label="gzip")
    with tempfile.TemporaryDirectory() as root:
        s = _settings(root)
        folder = f"{s.landing}/{source}/dt={DAY}"
        os.makedirs(folder)
        path = f"{folder}/part.jsonl" + (".gz" if zipped else "")
        with open(path, "wb") as fh:
            fh.write(gzip.compress(body, mtime=0) if zipped else body)
        try:
            result = land_source(s, source, DAY)
        except LandingError as err:  # only for a file that cannot be read at all, and it says which
            assert path in str(err)
            return
        raw = outcome(s.lake, source)["raw"]
        assert result.rows_read == len(raw) == _jsonl_lines(body)
        assert len({r["_line"] for r in raw}) == len(raw)
        assert all(r["_raw_text"] is not None for r in raw if r["_parse_error"])  # kept for the quarantine


@settings(max_examples=15, **SETTINGS)
@given(source=st.sampled_from([s for s in contract.SOURCE_NAMES if contract.SOURCES[s].csv]), data=st.data())
def test_damaged_csv_keeps_one_row_per_record(source, data):
    """CSV records cannot be counted without a CSV parser, so: distinct record numbers, and every
    well-formed record of the undamaged prefix is landed with its values; or the file fails naming itself
    and the line."""
    spec = FileSpec("part.csv", [KINDS["good"].make(source, i) for i in range(5)],
                    delimiter=data.draw(st.sampled_from([",", ";", "\t", "|"]), label="delimiter"))
    with tempfile.TemporaryDirectory() as root:
        s = _settings(root)
        write_day(s.landing, source, [spec])
        path = f"{s.landing}/{source}/dt={DAY}/part.csv"
        with open(path, "rb") as fh:
            body = fh.read()
        header_end = body.index(b"\n") + 1
        at = data.draw(st.integers(header_end, len(body)), label="damage at")
        body = body[:at] + data.draw(DAMAGE, label="bytes") + body[at:]
        with open(path, "wb") as fh:
            fh.write(body)
        untouched = body[header_end:at].count(b"\n")  # records wholly before the damage
        try:
            result = land_source(s, source, DAY)
        except LandingError as err:  # e.g. a bare CR: DuckDB's strict parser rejects the whole file
            assert path in str(err) and re.search(r"\(line \d+: ", str(err)), str(err)
            return
        raw = outcome(s.lake, source)["raw"]
        assert result.rows_read == len(raw) and len({r["_line"] for r in raw}) == len(raw)
        ids = [r[contract.SOURCES[source].id_column] for r in raw if r["_parse_error"] is None]
        first_ids = [good_row(source, i)[contract.SOURCES[source].id_column] for i in range(untouched)]
        assert ids[:untouched] == first_ids


def test_the_strategies_cover_every_kind():
    """Every corpus kind is reachable by the generators above for some source and format."""
    reachable = {k.name for s in contract.SOURCE_NAMES for f in formats_for(s) for k in kinds_for(s, f)}
    assert reachable == set(KINDS)

