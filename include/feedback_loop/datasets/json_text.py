"""The JSON text of dataset records, with the tool catalogue's text encoded once.

Why: every tool-calling example carries the window's catalogue of tools (~5 KB of its ~6 KB of JSON), the
same in nearly every example. Encoding it again for each example's token count, id, file line and read-back
check was about a tenth of a first night's dataset stage. `dumps` gives exactly what `json.dumps` gives
(ensure_ascii=False, the default separators); a record's `"tools"` member is looked up by its `marshal`
bytes, which fix the value, its types and its order, so equal bytes always have the same text.
"""

from __future__ import annotations

import json
import marshal

CATALOGUE = "tools"  # the member of a tool-calling record that holds the catalogue (TRL and OpenAI formats)
_REMEMBERED = 64  # catalogue texts kept: a night has one catalogue, plus one per set of unknown tools offered
_texts: dict[tuple[bytes, bool, object], str] = {}


def dumps(obj, *, sort_keys: bool = False, default=None) -> str:
    """`json.dumps(obj, ensure_ascii=False, sort_keys=sort_keys, default=default)`."""
    if type(obj) is dict and CATALOGUE in obj and all(type(k) is str for k in obj):
        items = sorted(obj.items()) if sort_keys else obj.items()
        return "{" + ", ".join(_plain(k, False, None) + ": " + (catalogue(v, sort_keys, default) if k == CATALOGUE
                                                                else _plain(v, sort_keys, default))
                               for k, v in items) + "}"
    if type(obj) is list and any(type(x) is dict and CATALOGUE in x for x in obj):
        return "[" + ", ".join(dumps(x, sort_keys=sort_keys, default=default) for x in obj) + "]"
    return _plain(obj, sort_keys, default)


def catalogue(value, sort_keys: bool = False, default=None) -> str:
    """`json.dumps` of a catalogue, remembered by its marshal bytes (a value marshal refuses, e.g. a
    subclass of str or a datetime, is encoded every time)."""
    if type(value) not in (list, dict):
        return _plain(value, sort_keys, default)
    try:
        key = (marshal.dumps(value), sort_keys, default)
    except ValueError:
        return _plain(value, sort_keys, default)
    text = _texts.get(key)
    if text is None:
        if len(_texts) >= _REMEMBERED:
            _texts.clear()
        text = _texts[key] = _plain(value, sort_keys, default)
    return text


def _plain(obj, sort_keys: bool, default) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=sort_keys, default=default)
