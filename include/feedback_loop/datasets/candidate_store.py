"""Per-night partials of the candidates: `<lake>/partials/dataset_candidates/dt=D/part.parquet` holds, for
every conversation a dataset build turned into candidates on night D, what that gave (its candidates in
every format, its unusable counts, what redacting its events counted), under a fingerprint of everything
the build read for it.

Why: every night re-curates the whole trailing window, and streaming 28 days of the kept conversations'
events into Python and building their candidates again was a third of a steady-state dataset night after
the redactions, token counts and signatures were stored (issue 18). A conversation's candidates are a pure
function of its outcome, its corrections, its events, the window's KB snapshot and tool catalogue, the
configuration and the code, so a night whose fingerprint of those matches a stored one replays the stored
result instead of reading the conversation's events: the versions are byte-identical. Late data (a survey,
a reopen, a correction, a re-landed event) changes the fingerprint of the conversations it touches, and
only those are built again; a night reprocessed with the same data finds every fingerprint again.

The fingerprint is computed in SQL (`fingerprint_sql`): an md5 over the conversation's outcome row, its
corrections and a digest of its events' contents, prefixed by `global_key` (configuration, KB, tools,
redactor, code). Entries are pickles
read back with an unpickler that only builds plain data (`load_plain`): the lake is data, never code. A
candidate's records hold the night's tool catalogue as a reference (`dumps_records`), which a night with
the same `global_key` (the same catalogue) resolves to its own.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import pickle
import sys
from dataclasses import fields
from functools import lru_cache

from feedback_loop.datasets.curation import Example
from feedback_loop.datasets.nightly_store import NightlyStore
from feedback_loop.lake.files import Lake
from feedback_loop.lake.sql import literal, literal_list

NAME = "dataset_candidates"
ROWS = 2_000  # entries per write, and per row group
EXAMPLE_FIELDS = tuple(f.name for f in fields(Example) if f.name != "records")
PROTOCOL = pickle.HIGHEST_PROTOCOL


@lru_cache(maxsize=1)
def store_key() -> str:
    """What a stored entry depends on besides its fingerprint: the code that reads a conversation and
    builds its candidates, the pickle format and DuckDB's rendering of the outcome row."""
    import duckdb

    from feedback_loop.datasets import actions, candidates, read

    h = hashlib.sha256()
    for part in (inspect.getsource(candidates), inspect.getsource(actions), inspect.getsource(read),
                 repr(EXAMPLE_FIELDS), str(PROTOCOL), sys.version.split()[0], duckdb.__version__):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def global_key(cfg, kb: dict, tools: dict, redactor_key: str) -> str:
    """The part of every fingerprint shared by the window's conversations: the configuration (without the
    window's bounds), the redacted KB snapshot, the tool catalogue (inferred from the window's calls), the
    redactor and the code."""
    config = {k: v for k, v in cfg.as_dict().items() if k not in ("window_start", "window_end")}
    blob = json.dumps([config, sorted(kb.items()), tools, redactor_key, store_key()], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


# The event columns a conversation's candidates are built from (read.py's stream), digested per conversation.
EVENT_COLUMNS = ("dt", "_row_id", "ts", "turn", "event_type", "text", "intent", "confidence", "kb_results",
                 "policy_id", "policy_outcome", "rating", "action", "action_args", "action_status")


def fingerprint_sql(global_key: str, outcome: str) -> str:
    """SQL creating temp table `candidate_fingerprints` (conversation_id, fingerprint) for the kept rows of
    `outcome_rows`, given `outcome` (the SQL struct of the outcome row the reading hands to Python).

    The events enter as their count and the sum of DuckDB's hash of each event row: a digest of their
    content, so a day staged again with the same rows (a reprocessed night) keeps its fingerprints, and a
    changed row changes them. One pass over the window's events of the kept conversations, in DuckDB."""
    row = "struct_pack(" + ", ".join(f"e.{c}" for c in EVENT_COLUMNS) + ")"
    return f"""
    CREATE OR REPLACE TEMP TABLE candidate_fingerprints AS
    WITH k AS (SELECT conversation_id FROM outcome_rows WHERE keep),
    d AS (SELECT e.conversation_id, count(*)::VARCHAR || ':' || sum(hash({row}))::VARCHAR AS events
          FROM ev e WHERE e.conversation_id IN (SELECT conversation_id FROM k)
          GROUP BY 1),
    c AS (SELECT conversation_id,
                 string_agg(CAST(struct_pack(override_id, ts, reviewer_id, stage, agent_decision, agent_confidence,
                                             human_decision, policy_clause_id) AS VARCHAR), '|'
                            ORDER BY ts, override_id, reviewer_id, stage, agent_decision, human_decision,
                                     policy_clause_id) AS corrections
          FROM ovr WHERE outcome = 'corrected' AND conversation_id IN (SELECT conversation_id FROM k)
          GROUP BY 1)
    SELECT o.conversation_id,
           md5(concat_ws('#', {literal(global_key)}, CAST({outcome} AS VARCHAR), coalesce(c.corrections, ''),
                         coalesce(d.events, ''))) AS fingerprint
    FROM outcome_rows o LEFT JOIN c USING (conversation_id) LEFT JOIN d USING (conversation_id)
    WHERE o.keep"""


CATALOGUE = "catalogue"  # the persistent id of the night's tool catalogue in a candidate's records


class _ByReference(pickle.Pickler):
    """Pickles the night's tool catalogue (~5 KB, the same list in nearly every tool-calling example) as a
    reference: what a record is built from besides it is its own."""

    def __init__(self, fh, catalogue):
        super().__init__(fh, protocol=PROTOCOL)
        self.catalogue = catalogue

    def persistent_id(self, obj):
        return CATALOGUE if obj is self.catalogue and obj is not None else None


def dumps_records(records: dict, catalogue: list | None = None) -> bytes:
    """A candidate's records, pickled with `catalogue` (the very object) by reference."""
    out = io.BytesIO()
    _ByReference(out, catalogue).dump(records)
    return out.getvalue()


class _PlainData(pickle.Unpickler):
    """Builds only plain data: containers, numbers, strings, bytes and the datetime types (and the
    catalogue given, for its reference)."""

    ALLOWED = {("datetime", n) for n in ("datetime", "date", "time", "timedelta", "timezone")} | {("decimal", "Decimal")}

    def __init__(self, fh, catalogue):
        super().__init__(fh)
        self.catalogue = catalogue

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"a stored candidate entry names {module}.{name}: not plain data, refused")

    def persistent_load(self, pid):
        if pid == CATALOGUE and self.catalogue is not None:
            return self.catalogue
        raise pickle.UnpicklingError(f"a stored candidate entry refers to {pid!r}, which this reading has not")


def load_plain(blob: bytes, catalogue: list | None = None):
    """A stored entry, or a candidate's records (what `candidates._Spill` holds), built as plain data only;
    a reference to the catalogue is `catalogue` (the same object: it is shared, never changed)."""
    return _PlainData(io.BytesIO(blob), catalogue).load()


def entry(candidates: list, unusable: dict, redaction) -> bytes:
    """A conversation's entry: its candidates as (dataset, phase, correction ordinal, Example fields
    without the records, the records' pickle), its unusable counts and its redaction counts."""
    return pickle.dumps((candidates, unusable, redaction), protocol=PROTOCOL)


def example_fields(example: Example) -> tuple:
    return tuple(getattr(example, f) for f in EXAMPLE_FIELDS)


def example_of(values: tuple, records) -> Example:
    """The `Example` whose `example_fields` are `values`, with `records`."""
    return Example(**dict(zip(EXAMPLE_FIELDS, values)), records=records)


class CandidateStore(NightlyStore):
    """The entries stored by the nights of a window, and the ones this night builds (`add`, then `save`).
    `computed` counts the conversations built tonight, `reused` the ones replayed."""

    name, metadata_field = NAME, "candidate_key"
    dedupe = False  # a conversation is built once a night

    def __init__(self, lake: Lake, start: str, end: str):
        super().__init__(None, lake, start, end)  # the connection comes with `prepare`
        self._rows: dict[str, list] = {"conversation_id": [], "fingerprint": [], "entry": []}

    def key(self) -> str:
        return store_key()

    def schema(self):
        import pyarrow as pa

        return pa.schema([("conversation_id", pa.string()), ("fingerprint", pa.string()), ("entry", pa.binary())],
                         metadata={"candidate_key": store_key()})

    def prepare(self, con, global_key: str, outcome: str) -> None:
        """Fingerprint the kept conversations (temp table `candidate_fingerprints`) and find the stored
        entries that match (temp table `candidate_hits`: conversation_id, fingerprint, file)."""
        self.con = con
        con.execute(fingerprint_sql(global_key, outcome))
        files = self.files()
        if files:
            con.execute(f"""CREATE OR REPLACE TEMP TABLE candidate_hits AS
                SELECT f.conversation_id, f.fingerprint, min(s.filename) AS file
                FROM candidate_fingerprints f
                JOIN read_parquet({literal_list(files)}, filename=true, hive_partitioning=false) s
                  ON s.conversation_id = f.conversation_id AND s.fingerprint = f.fingerprint
                GROUP BY ALL""")
        else:
            con.execute("CREATE OR REPLACE TEMP TABLE candidate_hits AS SELECT NULL::VARCHAR AS conversation_id, "
                        "NULL::VARCHAR AS fingerprint, NULL::VARCHAR AS file WHERE false")

    def hits_sql(self) -> str | None:
        """SQL of the matching entries (conversation_id, entry), in conversation order; None without any."""
        files = self.files() if self.con is not None else []
        if not files:
            return None
        return f"""SELECT s.conversation_id, s.entry
            FROM read_parquet({literal_list(files)}, filename=true, hive_partitioning=false) s
            JOIN candidate_hits h ON h.conversation_id = s.conversation_id AND h.fingerprint = s.fingerprint
                                 AND h.file = s.filename
            ORDER BY s.conversation_id"""

    def add(self, conversation_id: str, fingerprint: str, blob: bytes) -> None:
        """Keep a conversation built tonight (spilled to a local file, stored by `save`)."""
        self.computed += 1
        self._rows["conversation_id"].append(conversation_id)
        self._rows["fingerprint"].append(fingerprint)
        self._rows["entry"].append(blob)
        if len(self._rows["entry"]) >= ROWS:
            self.flush()

    def flush(self) -> None:
        if self._rows["entry"]:
            self.spill(self._rows)
            self._rows = {"conversation_id": [], "fingerprint": [], "entry": []}
