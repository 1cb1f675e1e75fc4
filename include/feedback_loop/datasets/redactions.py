"""Per-day partials of the redaction: every text of a day's agent events that may hold personal data, and
the tool-call arguments of the conversations that can yield an example, redacted once, when the day first
enters a dataset window.

Why: a dataset version reads its whole trailing window (28 days) every night, and redacting every text
again was most of that night's cost, growing with the window (issue 18: the steady-state benchmark). A
redaction is a pure function of the text and the redactor's configuration, so it is stored per day in
`<lake>/partials/dataset_redactions/dt=D/part.parquet` (one row per event, keyed by its `_row_id`) and the
night reads it back instead of calling the redactor. The counts the dataset's manifest reports
(texts scanned and changed, replacements by kind and field) are stored with each row and replayed in the
reading order, so versions are byte-identical to redacting everything again.

A day's partial is valid while (a) the staged partition it was computed from is unchanged (its size and
modification time, an object store's ETag) and (b) the redactor is the same (the PII settings, the
phonenumbers release and the source of the redactor's modules). Both are written into the Parquet file's
metadata; a changed setting recomputes the partial, a re-staged day's own night recomputes it (`ensure`), and
a row without a matching partial row is redacted on the spot as before.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import tempfile
from collections import Counter

from feedback_loop.datasets import actions, pii
from feedback_loop.lake.files import Lake, parquet_metadata
from feedback_loop.lake.sql import literal

LAYER, NAME = "partials", "dataset_redactions"
TEXT_EVENTS = ("customer_message", "agent_response")
ACTION_EVENTS = ("action_proposed", "action_executed")
# Rows fetched from DuckDB at a time (here and in read.py's stream): memory holds this many rows.
STREAM_ROWS = 5_000


def may_hold_pii(redactor: pii.Redactor, col: str = "text") -> str:
    """SQL that is true for every text in which `redactor.find` can find anything (a superset of them).

    The detectors need an '@' (e-mail), two ASCII letters and two digits in a row (IBAN), or 7 digits
    (phone; a card has 13); a text with any non-ASCII character is always sent (Python's digit classes are
    wider than ASCII), and so is every text when extra patterns are configured. Texts it rules out are
    counted as scanned without running the detectors: the counts and outputs are those of a full scan."""
    if redactor.extra_patterns:
        return "true"
    return (f"(contains({col}, '@') OR strlen({col}) <> length({col}) "
            f"OR regexp_matches({col}, '[A-Za-z]{{2}}[0-9]{{2}}') "
            f"OR length(regexp_replace({col}, '[^0-9]+', '', 'g')) >= 7)")


def redactor_key(redactor: pii.Redactor) -> str:
    """What a redaction depends on besides the text: the configuration, libphonenumber's metadata and the code."""
    import phonenumbers

    from feedback_loop.patches import phonenumbers_matcher

    h = hashlib.sha256()
    for part in (repr(redactor.phone_regions), repr(sorted(redactor.extra_patterns.items())), redactor.phone_leniency,
                 phonenumbers.__version__, inspect.getsource(pii), inspect.getsource(phonenumbers_matcher),
                 inspect.getsource(actions.redact_args)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


class _Counted:
    """A stand-in for `read.Redaction` that records what one value's redaction counted. `memo` is shared by
    a day's values: a tool call's arguments repeat (proposed, then executed; one customer's, one case's ids)."""

    MEMO_LIMIT = 200_000

    def __init__(self, redactor: pii.Redactor, memo: dict):
        self.redactor, self.memo = redactor, memo
        self.texts = self.changed = 0
        self.kinds: list[str] = []

    def __call__(self, text, where: str, maybe_pii: bool = True):
        if text is None:
            return None
        self.texts += 1
        found = self.memo.get(text)
        if found is None:
            if len(self.memo) >= self.MEMO_LIMIT:
                self.memo.clear()
            found = self.memo[text] = self.redactor.redact_counted(text)
        clean, counts = found
        if counts:
            self.changed += 1
            self.kinds.extend(counts.elements())  # Counter order: first found first, as update() sees it
        return clean


def _stored(con, lake: Lake, day: str) -> dict:
    """The metadata of the day's stored partial (its redactor key and staged signature); {} when none."""
    if not lake.has_partition(LAYER, NAME, day):
        return {}
    return parquet_metadata(con, lake.partition_file(LAYER, NAME, day))


def ensure(con, lake: Lake, redactor: pii.Redactor, days: list[str], args_of: str | None = None,
           night: str | None = None) -> dict:
    """Compute the partial of every day in `days` that has none valid; return {'reused': n, 'computed': [...]}
    and, under 'restaged', the days left to be redacted on the spot (below). `night`: the window's last day
    (default the last of `days`).

    Texts `may_hold_pii` rules out are never redacted (read.py counts them as scanned), so they get no row.
    `args_of`: SQL selecting the conversation ids whose tool-call arguments are redacted (the conversations
    that can yield an example tonight; default all). Arguments are read only for those, and a day holds tens
    of thousands of tool calls whose ids and amounts the phone matcher examines one by one: computing all of
    them made a 2 M-event night's dataset stage a third slower than reading the kept ones only. An argument
    left out (a conversation kept on a later night, when its survey arrived) is redacted on the spot then.

    So which arguments a partial holds depends on the night that computes it. An earlier day staged again
    since its partial was stored (same redactor, another staged file) is being reprocessed by its own
    night, or was and failed after staging: that night stores its partial. Stored by this night instead,
    the day's partial would hold the arguments this night keeps, and two nights reprocessed at once would
    leave whichever partial was written last (a reprocessing backfill then changed a stored file). Such a
    day is redacted on the spot and not stored; `view` leaves it out. A day with no partial, or one from
    another redactor (a first night, a changed setting), is computed and stored by whichever night meets it."""
    key = redactor_key(redactor)
    night = night or (max(days) if days else None)
    computed, reused, restaged = [], 0, []
    for day in days:
        staged = lake.partition_file("staged", "agent_events", day)
        sig = lake.signature(staged)
        if sig is None:
            continue
        meta = _stored(con, lake, day)
        if meta.get("redactor") == key and meta.get("staged") == sig:
            reused += 1
            continue
        if day != night and meta.get("redactor") == key:
            restaged.append(day)
            continue
        _compute(con, lake, redactor, day, staged, key, sig, args_of)
        computed.append(day)
    return {"reused": reused, "computed": computed, **({"restaged": restaged} if restaged else {})}


def _compute(con, lake: Lake, redactor: pii.Redactor, day: str, staged: str, key: str, sig: str,
             args_of: str | None = None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    of_conversations = f"AND conversation_id IN ({args_of})" if args_of else ""
    cur = con.execute(f"""
        SELECT _row_id, event_type IN {TEXT_EVENTS} AS is_text, text, action_args::VARCHAR AS action_args
        FROM read_parquet({literal(staged)}, hive_partitioning=false)
        WHERE (event_type IN {TEXT_EVENTS} AND text IS NOT NULL AND {may_hold_pii(redactor, 'text')})
           OR (event_type IN {ACTION_EVENTS} AND action IS NOT NULL AND action_args IS NOT NULL {of_conversations})
        ORDER BY _row_id""")
    schema = pa.schema([("_row_id", pa.int64()), ("clean", pa.string()), ("kinds", pa.list_(pa.string())),
                        ("n_texts", pa.int32()), ("n_changed", pa.int32())])
    schema = schema.with_metadata({"redactor": key, "staged": sig})
    memo: dict = {}
    # Written a batch at a time to a local file, already in `_row_id` order, then published as it is: a
    # day's redactions are never all in memory (a DuckDB COPY of it would buffer whole row groups again).
    with tempfile.TemporaryDirectory(prefix="acsr-redactions-") as tmp:
        spill = os.path.join(tmp, "part.parquet")
        with pq.ParquetWriter(spill, schema, compression="zstd") as writer:
            while rows := cur.fetchmany(STREAM_ROWS):
                cols: dict[str, list] = {name: [] for name in schema.names}
                for row_id, is_text, text, args in rows:
                    counted = _Counted(redactor, memo)
                    if is_text:
                        clean = counted(text, "")
                    else:
                        cleaned = actions.redact_args(counted, args)
                        clean = None if cleaned is None else json.dumps(cleaned)
                    cols["_row_id"].append(row_id)
                    cols["clean"].append(clean)
                    cols["kinds"].append(counted.kinds)
                    cols["n_texts"].append(counted.texts)
                    cols["n_changed"].append(counted.changed)
                writer.write_table(pa.table(cols, schema=schema))
        lake.publish_file(spill, LAYER, NAME, day)


def view(con, lake: Lake, days: list[str]) -> None:
    """Temp view `redactions` (dt, _row_id, clean, kinds, n_texts, n_changed) over the days' partials."""
    have = [d for d in days if lake.has_partition(LAYER, NAME, d)]
    if have:
        files = ", ".join(literal(lake.partition_file(LAYER, NAME, d)) for d in have)
        con.execute(f"""CREATE OR REPLACE TEMP VIEW redactions AS
            SELECT dt::DATE AS dt, _row_id, clean, kinds, n_texts, n_changed
            FROM read_parquet([{files}], hive_partitioning=true)""")
    else:
        con.execute("""CREATE OR REPLACE TEMP VIEW redactions AS SELECT NULL::DATE AS dt, NULL::BIGINT AS _row_id,
            NULL::VARCHAR AS clean, NULL::VARCHAR[] AS kinds, NULL::INTEGER AS n_texts, NULL::INTEGER AS n_changed
            WHERE false""")


def replay(red, where: str, kinds: list[str] | None, n_texts: int, n_changed: int) -> None:
    """Count a stored redaction into `red` (a read.Redaction) as if it had been redacted now."""
    red.texts += n_texts
    red.changed += n_changed
    if kinds:
        red.by_kind.update(Counter(kinds))
        red.by_field[where] += len(kinds)
