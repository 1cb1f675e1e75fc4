"""The lines a version's check passed are stored per night (datasets/line_store.py): a later night counts
them without parsing, checking or scanning them again, and still catches every new line that fails, with
the same errors as a check that stores nothing."""

from __future__ import annotations

import json

import duckdb
import pytest
from feedback_loop.datasets import formats, pii, publish, redactions
from feedback_loop.datasets.config import DatasetError
from feedback_loop.datasets.line_store import NAME, ValidatedLines
from feedback_loop.lake.files import Lake

D1, D2 = "2026-11-01", "2026-11-02"


def _line(i: int, answer: str | None = None) -> dict:
    return {"messages": [{"role": "system", "content": "Answer from the passages."},
                         {"role": "user", "content": f"Where is my card {i}?"},
                         {"role": "assistant", "content": answer or f"It was sent on day {i}."}]}


def _file(path, records) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return str(path)


OPEN: list[ValidatedLines] = []


@pytest.fixture(autouse=True)
def _close_stores():
    """save() removes a store's spill folder in the temp dir; the stores a test leaves unsaved are closed here."""
    yield
    while OPEN:
        OPEN.pop().close()


def _store(con, lake: Lake, day: str) -> ValidatedLines:
    OPEN.append(ValidatedLines(con, lake, D1, day, redactions.redactor_key(pii.redactor())))
    return OPEN[-1]


def test_a_stored_line_is_not_checked_again_and_a_new_bad_line_still_fails(tmp_path, monkeypatch):
    lake, con = Lake(str(tmp_path / "lake")), duckdb.connect()
    good = [_line(i) for i in range(3)]
    first = _store(con, lake, D1)
    summary = publish._check_jsonl(_file(tmp_path / "a.jsonl", good), "trl_messages", 512, pii.redactor(), first)
    assert summary["records"] == 3 and first.computed == 3
    first.save(D1)
    assert lake.has_partition("partials", NAME, D1)

    # The next night: the three stored lines are counted without being walked for strings; new lines are.
    walked = []
    strings = publish._strings

    def spy(obj, *a):  # records only the top-level calls (a record), not the recursion into it
        if isinstance(obj, dict) and "messages" in obj:
            walked.append(obj)
        return strings(obj, *a)

    monkeypatch.setattr(publish, "_strings", spy)
    second = _store(con, lake, D2)
    path = _file(tmp_path / "b.jsonl", [*good, _line(3)])
    assert publish._check_jsonl(path, "trl_messages", 512, pii.redactor(), second) == summary | {"records": 4}
    assert walked == [_line(3)] and second.reused == 3

    # A new line with personal data fails, stored lines or not.
    leaking = _file(tmp_path / "c.jsonl", [*good, _line(4, "Mail ann@example.com for it.")])
    with pytest.raises(DatasetError, match="EMAIL"):
        publish._check_jsonl(leaking, "trl_messages", 512, pii.redactor(), _store(con, lake, D2))

    # A new invalid record fails with the error of a check that stores nothing (the file's whole count).
    broken = _file(tmp_path / "d.jsonl", [*good, {"messages": [{"role": "user", "content": "no answer"}]}])
    with pytest.raises(formats.FormatError) as without:
        formats.validate_file(broken, "trl_messages", 512)
    with pytest.raises(formats.FormatError) as with_store:
        publish._check_jsonl(broken, "trl_messages", 512, pii.redactor(), _store(con, lake, D2))
    assert str(with_store.value) == str(without.value) and "1 of 4 records" in str(without.value)


def test_lines_are_stored_only_for_their_format_budget_and_a_passing_file(tmp_path):
    lake, con = Lake(str(tmp_path / "lake")), duckdb.connect()
    good = [_line(i) for i in range(3)]
    first = _store(con, lake, D1)
    publish._check_jsonl(_file(tmp_path / "a.jsonl", good), "trl_messages", 512, pii.redactor(), first)
    first.save(D1)
    later = _store(con, lake, D2)
    with open(_file(tmp_path / "b.jsonl", good), "rb") as fh:
        lines = list(fh)
    assert later.known([publish.line_hash("trl_messages", 512, line) for line in lines]) == [True] * 3
    assert later.known([publish.line_hash("trl_messages", 64, line) for line in lines]) == [False] * 3
    assert later.known([publish.line_hash("openai_chat", 512, line) for line in lines]) == [False] * 3

    # A file that fails stores none of its lines, the good ones included.
    failing = _store(con, lake, D2)
    bad = _file(tmp_path / "c.jsonl", [_line(7), _line(8, "Call +44 20 7946 0958.")])
    with pytest.raises(DatasetError):
        publish._check_jsonl(bad, "trl_messages", 512, pii.redactor(), failing)
    assert failing.computed == 0
    failing.save(D2)
    assert not lake.has_partition("partials", NAME, D2)
