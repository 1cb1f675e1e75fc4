"""The records' JSON text with the catalogue's text remembered: always exactly `json.dumps`'s."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from feedback_loop.datasets import json_text, tokens
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

TEXT = st.sampled_from(["a", "b", "tools", "é", "漢", "", "x y", '"', "\\"]) | st.text(max_size=8)
# 1, 1.0 and True are equal in Python but not in JSON; keys in every order; strings equal to a key.
SCALARS = st.none() | st.booleans() | st.integers(-2, 2) | st.sampled_from([1.0, -0.0, 0.0, 1e16, 0.1]) | TEXT
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                      max_leaves=12)
RECORDS = st.dictionaries(TEXT, VALUES, max_size=5).flatmap(
    lambda r: st.builds(lambda tools: {**r, "tools": tools}, VALUES))


def plain(obj, **kw) -> str:
    return json.dumps(obj, ensure_ascii=False, **kw)


@hsettings(max_examples=500, deadline=None)
@given(st.lists(RECORDS, min_size=1, max_size=6), st.booleans())
def test_the_text_is_json_dumps_whatever_was_remembered_before(records, sort_keys):
    # The same call order as a night: many records, most catalogues seen before in another record.
    for r in records:
        assert json_text.dumps(r, sort_keys=sort_keys, default=str) == plain(r, sort_keys=sort_keys, default=str)
        assert json_text.dumps(["name", "cid", r], sort_keys=sort_keys) == plain(["name", "cid", r], sort_keys=sort_keys)
        assert tokens.count_json(r) == len(tokens.encoding().encode(plain(r), disallowed_special=()))


def test_values_python_finds_equal_keep_their_own_text():
    texts = [json_text.catalogue(v) for v in ([1], [1.0], [True], {"a": 1, "b": 2}, {"b": 2, "a": 1}, [1], [True])]
    assert texts == ["[1]", "[1.0]", "[true]", '{"a": 1, "b": 2}', '{"b": 2, "a": 1}', "[1]", "[true]"]
    assert json_text.catalogue({"b": 2, "a": 1}, sort_keys=True) == '{"a": 1, "b": 2}'


def test_values_marshal_refuses_are_encoded_every_time():
    class Name(str):
        pass

    when = datetime(2026, 11, 20, tzinfo=UTC)
    record = {"messages": [], "tools": [{"name": Name("lookup"), "at": when}]}
    assert json_text.dumps(record, default=str) == plain(record, default=str)
    assert json_text.dumps(record, sort_keys=True, default=str) == plain(record, sort_keys=True, default=str)


def test_a_catalogue_is_remembered_once_and_the_memory_stays_bounded():
    json_text._texts.clear()
    catalogue = [{"type": "function", "function": {"name": f"t{i}", "parameters": {"type": "object"}}} for i in range(3)]
    for _ in range(10):
        json_text.dumps({"prompt": "p", "tools": json.loads(json.dumps(catalogue))})  # equal, never the same object
    assert len(json_text._texts) == 1
    for i in range(3 * json_text._REMEMBERED):
        json_text.catalogue([i])
    assert len(json_text._texts) <= json_text._REMEMBERED
