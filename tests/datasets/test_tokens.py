"""Token counts: a JSON object counted member by member gives the whole text's count."""

from __future__ import annotations

import json

from encode_spy import record_encodes
from feedback_loop.datasets import tokens
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st


def whole(obj) -> int:
    return len(tokens.encoding().encode(json.dumps(obj, ensure_ascii=False), disallowed_special=()))


# Text that puts the pre-tokenizer's every rule at a member's edge: apostrophes, letters and digits of any
# script, runs of punctuation and of whitespace, newlines, commas and spaces, special-token strings.
TEXT = st.lists(st.sampled_from(list("ab Z9'\",: \n\r\t,.{}[]-_é漢٣") + [", ", "'s", " ,", "<|endoftext|>"]),
                max_size=20).map("".join) | st.text(max_size=20)
VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
                      lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                      max_leaves=12)


@hsettings(max_examples=400, deadline=None)
@given(st.dictionaries(TEXT, VALUES, max_size=6))
def test_an_object_counted_by_members_counts_as_its_whole_text(obj):
    assert tokens.count_json(obj) == whole(obj)


@hsettings(max_examples=100, deadline=None)
@given(VALUES)
def test_any_json_value_counts_as_its_whole_text(value):
    assert tokens.count_json(value) == whole(value)


def test_a_tool_example_counts_as_its_whole_text_and_encodes_the_catalogue_once(monkeypatch):
    tools = [{"type": "function", "function": {"name": f"action_{i}", "description": f"Back-end action {i}.",
                                               "parameters": {"type": "object", "properties": {
                                                   "customer_id": {"type": "string"}}, "required": []}}}
             for i in range(15)]
    examples = [{"messages": [{"role": "user", "content": f"Hi, I'd like refund {i}, thanks!"},
                              {"role": "assistant", "tool_calls": [{"id": "call_0", "type": "function",
                               "function": {"name": "action_1", "arguments": json.dumps({"n": i})}}]}],
                 "tools": tools} for i in range(20)]
    tokens.remember({})
    encoded = record_encodes(monkeypatch)
    assert [tokens.count_json(e) for e in examples] == [whole(e) for e in examples]
    catalogue = ' "tools": ' + json.dumps(tools, ensure_ascii=False) + "}"
    assert encoded.count(catalogue) == 1  # the shared part, encoded once for 20 examples
    tokens.remember({})
