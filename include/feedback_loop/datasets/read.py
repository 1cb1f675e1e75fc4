"""Reading a window: the marts and staged sources through DuckDB, every text redacted as it leaves.

Part of the dataset stage (`feedback_loop.datasets.build`, docs/datasets.md)."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter

from feedback_loop.datasets import actions, candidate_store, pii, redactions
from feedback_loop.datasets.candidates import Conversation, Turn, _Candidates, _Ordered
from feedback_loop.datasets.config import Config
from feedback_loop.datasets.redactions import STREAM_ROWS, TEXT_EVENTS, may_hold_pii
from feedback_loop.ingest import contract
from feedback_loop.lake.duck import lowered_memory_limit, parquet_view
from feedback_loop.lake.files import Lake
from feedback_loop.lake.sql import literal
from feedback_loop.settings import Settings


class Redaction:
    """Redacts every text that leaves DuckDB and counts what it replaced."""

    def __init__(self, settings: Settings):
        self.redactor = pii.redactor(settings)
        self.by_kind: Counter = Counter()
        self.by_field: Counter = Counter()
        self.texts = 0
        self.changed = 0

    def part(self) -> Redaction:
        """A counter of its own with the same redactor, for texts redacted out of the reading order;
        `absorb` it afterwards (the summary lists kinds in the order they were first found)."""
        other = object.__new__(Redaction)
        other.redactor, other.by_kind, other.by_field, other.texts, other.changed = self.redactor, Counter(), Counter(), 0, 0
        return other

    def absorb(self, other: Redaction) -> None:
        self.texts += other.texts
        self.add_counts(other.counts())

    def counts(self) -> tuple[int, list, list]:
        """What was replaced (texts changed, by kind, by field; kinds in the order found), as plain data:
        what `candidate_store` keeps of a conversation's redaction."""
        return self.changed, list(self.by_kind.items()), list(self.by_field.items())

    def add_counts(self, counts: tuple[int, list, list]) -> None:
        changed, by_kind, by_field = counts
        self.changed += changed
        self.by_kind.update(dict(by_kind))
        self.by_field.update(dict(by_field))

    def __call__(self, text, where: str, maybe_pii: bool = True):
        """`maybe_pii=False`: SQL has shown the detectors cannot find anything in it (`redactions.may_hold_pii`)."""
        if text is None:
            return None
        self.texts += 1
        if not maybe_pii:
            return text
        red, counts = self.redactor.redact_counted(text)
        if counts:
            self.changed += 1
            self.by_kind.update(counts)
            self.by_field[where] += sum(counts.values())
        return red

    def summary(self) -> dict:
        return {"texts_scanned": self.texts, "texts_changed": self.changed, "replaced_by_kind": dict(self.by_kind),
                "replaced_by_field": dict(self.by_field), "placeholders": [pii.placeholder(k) for k in pii.KINDS]}


def _view(con, name: str, lake: Lake, layer: str, source: str, days: list[str], empty: str) -> None:
    parquet_view(con, name, [lake.partition_file(layer, source, d) for d in days], empty)


def _empty(source: str, extra: str = "") -> str:
    cols = ", ".join(f'NULL::{f.type} AS "{f.name}"' for f in contract.SOURCES[source].fields)
    return f"SELECT {cols}, NULL::DATE AS dt{extra} WHERE false"


def _sources(lake: Lake, start: str, end: str) -> dict[tuple[str, str], list[str]]:
    """The partitions each input is read from (kb_articles: the newest snapshot up to the window's end)."""
    out = {
        ("marts", "conversation_facts"): lake.days_between("marts", "conversation_facts", start, end),
        ("staged", "agent_events"): lake.days_between("staged", "agent_events", start, end),
        ("staged", "overrides"): lake.days_between("staged", "overrides", start, end),
        ("staged", "crm_cases"): lake.days_between("staged", "crm_cases", start, end),
        ("staged", "surveys"): lake.days_between("staged", "surveys", start, end),
        ("quarantine", "overrides"): lake.days_between("quarantine", "overrides", start, end),
        ("staged", "outcome_checks"): lake.days_between("staged", "outcome_checks", start, end),
    }
    kb = [d for d in lake.days("staged", "kb_articles") if d <= end]
    out[("staged", "kb_articles")] = kb[-1:]
    return out


def _can_yield_sql(cfg: Config) -> str:
    """SQL over an outcome row: true for every conversation `_Candidates.add` can get anything from (a
    superset: the Python rules decide). A correction, an escalation category to relabel from, a confirmed
    intent, or an outcome `_good` or `_bad`; any other conversation yields no candidate and no
    'unusable' count, so its events are never read into Python."""
    good, bad = int(cfg.csat_good), int(cfg.csat_bad)
    return f"""(
        corrected
        OR (escalated AND coalesce(human_category, '') <> '' AND human_category IS DISTINCT FROM final_intent)
        OR (coalesce(final_intent, '') <> '' AND status IN ('solved', 'closed') AND coalesce(reopen_count, 0) = 0
            AND csat >= {good})
        OR (status IN ('solved', 'closed') AND NOT coalesce(reopen_count, 0) > 0 AND NOT escalated
            AND CASE WHEN csat IS NOT NULL THEN csat >= {good}
                     ELSE coalesce(n_thumbs_up, 0) > 0 AND coalesce(n_thumbs_down, 0) = 0 END)
        OR CASE WHEN csat IS NOT NULL THEN csat <= {bad}
                ELSE coalesce(n_thumbs_down, 0) > 0 AND coalesce(n_thumbs_up, 0) = 0 END)"""


OUTCOME_COLUMNS = ("conversation_id", "case_id", "fact_date", "final_intent", "final_confidence", "status",
                   "reopen_count", "human_category", "escalated", "csat", "n_thumbs_up", "n_thumbs_down",
                   "failed_checks")


def _read(con, lake: Lake, sources: dict, red: Redaction, cfg: Config,
          store: candidate_store.CandidateStore | None = None) -> tuple[int, dict[str, _Ordered],
                                                                        dict[str, Counter]]:
    """(conversations of the window, candidates of every dataset (parked until read back with `examples()`),
    unusable counts), streaming.

    The outcome of every conversation is computed in SQL; only the conversations that can yield a candidate
    (`_can_yield_sql`) have their events read into Python, in conversation order, `STREAM_ROWS` at a time,
    each turned into candidates as soon as its last event is read: memory holds the candidates, not the
    window's events. Every text is still redacted and counted as before (`redactions.may_hold_pii`).
    With a `store`, a conversation whose fingerprint an earlier night stored is not read: its stored
    candidates and counts are replayed in its place (`candidate_store`), and the ones built are stored."""
    facts_days = sources[("marts", "conversation_facts")]
    if not facts_days:
        return 0, *_Candidates(cfg, [], {}).result()
    _view(con, "facts", lake, "marts", "conversation_facts", facts_days, "")
    _view(con, "ev", lake, "staged", "agent_events", sources[("staged", "agent_events")],
          _empty("agent_events", ", NULL::BIGINT AS _row_id"))
    _view(con, "ovr", lake, "staged", "overrides", sources[("staged", "overrides")], _empty("overrides"))
    _view(con, "cases", lake, "staged", "crm_cases", sources[("staged", "crm_cases")], _empty("crm_cases"))
    _view(con, "surveys", lake, "staged", "surveys", sources[("staged", "surveys")], _empty("surveys"))
    _view(con, "kb", lake, "staged", "kb_articles", sources[("staged", "kb_articles")], _empty("kb_articles"))
    _view(con, "checks", lake, "staged", "outcome_checks", sources.get(("staged", "outcome_checks"), []),
          _empty("outcome_checks"))
    tools = actions.catalogue(con)

    # Corrections and KB passages are small: read whole, redacted into counters of their own that are
    # added after the events' (the order the summary had when they were read after the events).
    corr_sql = """
    SELECT override_id, ts, epoch_us(ts) AS ts_us, conversation_id, reviewer_id, stage, agent_decision,
           agent_confidence, human_decision, policy_clause_id
    FROM ovr WHERE outcome = 'corrected'
      AND conversation_id IN (SELECT conversation_id FROM facts)
    ORDER BY ts, override_id"""
    red_corr, red_kb = red.part(), red.part()
    cur = con.execute(corr_sql)
    cols = [d[0] for d in cur.description]
    corrections = []
    for row in cur.fetchall():
        o = dict(zip(cols, row))
        o["agent_decision"] = red_corr(o["agent_decision"], f"overrides.agent_decision ({o['stage']})")
        o["human_decision"] = red_corr(o["human_decision"], f"overrides.human_decision ({o['stage']})")
        corrections.append(o)
    kb = {}
    for aid, title, body in con.execute("SELECT article_id, title, body FROM kb ORDER BY article_id").fetchall():
        kb[aid] = (red_kb(title, "kb_articles.title") or "", red_kb(body, "kb_articles.body") or "")

    # The outcome known at the window's end: the latest case state and CSAT exported inside the window,
    # not only what the conversation's own day had seen.
    con.execute(f"""
    CREATE OR REPLACE TEMP TABLE outcome_rows AS
    WITH f AS (SELECT * FROM facts QUALIFY row_number() OVER (PARTITION BY conversation_id ORDER BY fact_date DESC) = 1),
    c AS (SELECT case_id, arg_max(status, updated_at) AS status, arg_max(reopen_count, updated_at) AS reopen_count,
                 arg_max(category, updated_at) AS category, bool_or(coalesce(escalated, false)) AS escalated
          FROM cases GROUP BY case_id),
    s AS (SELECT case_id, arg_max(score, submitted_at) FILTER (kind = 'csat') AS csat FROM surveys GROUP BY case_id),
    k AS (SELECT case_id, list(struct_pack(check_id, action, expected_state, observed_state)
                               ORDER BY checked_at, check_id) AS failed_checks
          FROM checks WHERE NOT verified GROUP BY case_id),
    o AS (
        SELECT f.conversation_id, f.case_id, f.fact_date::VARCHAR AS fact_date, f.final_intent, f.final_confidence,
            coalesce(c.status, f.case_status) AS status,
            coalesce(c.reopen_count, f.reopen_count, 0) AS reopen_count,
            coalesce(c.category, f.human_category) AS human_category,
            coalesce(c.escalated, false) OR coalesce(f.escalated, false) AS escalated,
            coalesce(s.csat, f.csat) AS csat, f.n_thumbs_up, f.n_thumbs_down,
            f.conversation_id IN (SELECT conversation_id FROM ovr WHERE outcome = 'corrected') AS corrected,
            k.failed_checks
        FROM f LEFT JOIN c ON c.case_id = f.case_id LEFT JOIN s ON s.case_id = f.case_id
               LEFT JOIN k ON k.case_id = f.case_id)
    SELECT * EXCLUDE (corrected), coalesce({_can_yield_sql(cfg)} OR len(failed_checks) > 0, false) AS keep FROM o""")
    outcome = "{" + ", ".join(f"'{c}': {c}" for c in OUTCOME_COLUMNS) + "}"
    event_days = sources[("staged", "agent_events")]
    if store is not None:
        key = candidate_store.global_key(cfg, kb, tools, redactions.redactor_key(red.redactor))
        store.prepare(con, key, outcome)
        con.execute("""CREATE OR REPLACE TEMP TABLE outcomes AS
            SELECT o.*, f.fingerprint, h.conversation_id IS NOT NULL AS stored_candidates
            FROM outcome_rows o LEFT JOIN candidate_fingerprints f USING (conversation_id)
            LEFT JOIN candidate_hits h USING (conversation_id)""")
    else:
        con.execute("CREATE OR REPLACE TEMP TABLE outcomes AS SELECT *, NULL::VARCHAR AS fingerprint, "
                    "false AS stored_candidates FROM outcome_rows")
    n_conversations, n_texts = con.execute(f"""
        SELECT (SELECT count(*) FROM outcomes),
               (SELECT count(e.text) FROM ev e JOIN outcomes o ON o.conversation_id = e.conversation_id
                WHERE e.event_type IN {TEXT_EVENTS})""").fetchone()

    # What each day's texts and tool-call arguments redact to was computed once, when the day first
    # entered a window (datasets/redactions.py): joined here instead of redacting 28 days again.
    ensured = redactions.ensure(con, lake, red.redactor, event_days, night=cfg.window_end,
                                args_of="SELECT conversation_id FROM outcomes WHERE keep")
    redactions.view(con, lake, [d for d in event_days if d not in ensured.get("restaged", ())])
    may = may_hold_pii(red.redactor, "e.text")
    # An event's time is only compared (with other events' and the corrections' `ts_us`), never written: as
    # epoch microseconds (DuckDB's precision), not as an aware datetime, which was 43 % of fetching the stream.
    stream_sql = f"""
    SELECT e.conversation_id, 1 AS part, epoch_us(e.ts) AS ts, e.turn, e.dt, e._row_id, e.event_type, e.text, e.intent, e.confidence,
           e.kb_results, e.policy_id, e.policy_outcome, e.rating, o.keep, coalesce(e.text IS NOT NULL AND {may}, false)
           AS maybe_pii, NULL AS outcome, NULL AS fingerprint, false AS replayed, e.action,
           e.action_args::VARCHAR AS action_args, e.action_status,
           r._row_id IS NOT NULL AS stored, r.clean, r.kinds, r.n_texts, r.n_changed
    FROM ev e JOIN outcomes o ON o.conversation_id = e.conversation_id
    LEFT JOIN redactions r ON r.dt = e.dt AND r._row_id = e._row_id
    WHERE e.event_type IN ('customer_message', 'agent_response', 'intent_classified', 'kb_query', 'policy_check', 'thumbs',
                           'action_proposed', 'action_executed')
      AND CASE WHEN o.keep THEN NOT o.stored_candidates
               ELSE e.event_type IN {TEXT_EVENTS} AND e.text IS NOT NULL AND {may} END
    UNION ALL
    SELECT conversation_id, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, true, false,
           {outcome}, fingerprint, stored_candidates, NULL, NULL, NULL, false, NULL, NULL, NULL, NULL
    FROM outcomes WHERE keep
    ORDER BY conversation_id, part, ts, turn, dt, _row_id"""

    def text_of(counter, text, where: str, maybe_pii: bool, stored: bool, clean, kinds, n_texts, n_changed):
        if stored and maybe_pii:
            redactions.replay(counter, where, kinds, n_texts, n_changed)
            return clean
        return counter(text, where, maybe_pii)

    def args_of(counter, action_args, stored: bool, clean, kinds, n_texts, n_changed):
        if stored:
            redactions.replay(counter, "agent_events.action_args", kinds, n_texts, n_changed)
            return None if clean is None else json.loads(clean)
        return actions.redact_args(counter, action_args)

    builder = _Candidates(cfg, corrections, kb, tools)
    texts_before = red.texts
    with tempfile.TemporaryDirectory(prefix="acsr-dataset-stored-") as tmp:
        stored = _stored_entries(con, store, tmp)

        def finish(conv: Conversation | None, fingerprint, conv_red: Redaction) -> None:
            """Candidates of a conversation read tonight, its redaction counts into `red`; stored for later nights."""
            if conv is None:
                return
            built = builder.add(conv, record=store is not None)
            red.absorb(conv_red)
            if store is not None:
                store.add(conv.conversation_id, fingerprint, candidate_store.entry(*built, conv_red.counts()))

        conv, fingerprint, conv_red, last_user = None, None, red, None
        for rows in _sorted_batches(con, stream_sql):
            for (cid, part, ts, _turn, _dt, _row_id, etype, text, intent, conf, kb_results, policy_id, policy_outcome,
                 rating, keep, maybe_pii, oc, fp, replayed, action, action_args, action_status, *redaction) in rows:
                if part == 0:  # a conversation that can yield candidates starts: its outcome, then its events
                    finish(conv, fingerprint, conv_red)
                    conv, fingerprint, conv_red, last_user = None, fp, red, None
                    if replayed:  # stored by an earlier night: its candidates and counts, none of its events
                        stored_cid, blob = next(stored)
                        if stored_cid != cid:
                            raise RuntimeError(f"stored candidates out of order: {stored_cid} for {cid}")
                        candidates, unusable, counts = candidate_store.load_plain(blob)
                        builder.add_stored(cid, candidates, unusable)
                        red.add_counts(counts)
                        store.reused += 1
                    else:
                        conv, conv_red = Conversation(cid, oc), red.part()
                    continue
                if not keep:  # a text that may hold personal data, of a conversation that yields nothing
                    text_of(red, text, f"agent_events.text ({etype})", True, *redaction)
                    continue
                if etype in TEXT_EVENTS:
                    clean = text_of(conv_red, text, f"agent_events.text ({etype})", maybe_pii, *redaction)
                    if clean and clean.strip():
                        conv.turns.append(Turn("user" if etype == "customer_message" else "assistant", clean.strip(), ts))
                        if etype == "customer_message":
                            last_user = clean.strip()
                elif etype == "intent_classified" and intent:
                    conv.intents.append((ts, intent, conf, last_user))
                elif etype == "kb_query":
                    for r in kb_results or []:
                        if r and r.get("article_id"):
                            conv.kb.append((ts, r["article_id"], r.get("score") or 0.0))
                elif etype == "policy_check" and policy_id:
                    conv.policies.append((ts, policy_id, policy_outcome))
                elif etype == "thumbs" and rating is not None:
                    conv.thumbs.append((ts, rating))
                elif etype in ("action_proposed", "action_executed") and action:
                    conv.actions.append((ts, etype, action, args_of(conv_red, action_args, *redaction), action_status))
        finish(conv, fingerprint, conv_red)
    red.texts = texts_before + n_texts  # the texts ruled out in SQL were scanned too, with nothing found
    red.absorb(red_corr)
    red.absorb(red_kb)
    return n_conversations, *builder.result()


def _stored_entries(con, store: candidate_store.CandidateStore | None, tmp: str):
    """An iterator of (conversation_id, entry) of the conversations whose candidates an earlier night stored,
    in conversation order. Sorted into a local file before the events' stream starts (it holds the
    connection), then read with pyarrow."""
    sql = store.hits_sql() if store is not None else None
    if sql is None:
        return iter(())
    path = os.path.join(tmp, "stored.parquet")
    with lowered_memory_limit(con, 1 / 3):
        con.execute(f"COPY ({sql}) TO {literal(path)} (FORMAT parquet, COMPRESSION lz4_raw, ROW_GROUP_SIZE 2000)")
    return _entries_of(path)


def _entries_of(path: str):
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as f:
        for batch in f.iter_batches(batch_size=500):
            yield from zip(batch.column("conversation_id").to_pylist(), batch.column("entry").to_pylist())


def _sorted_batches(con, sql: str):
    """The rows of `sql` (which ends with ORDER BY), `STREAM_ROWS` at a time, sorted into a local file first.

    Why: streaming an ORDER BY keeps the whole sorted result in DuckDB's memory until its last row is
    read, and the caller builds its candidates beside it: the two together were the dataset stage's peak.
    Sorted under a third of the memory limit (the rest spills) and written to a file, the sort's memory is
    released before the first row reaches Python. Reading the file back keeps its order."""
    with tempfile.TemporaryDirectory(prefix="acsr-dataset-stream-") as tmp:
        sorted_file = os.path.join(tmp, "stream.parquet")
        with lowered_memory_limit(con, 1 / 3):
            con.execute(f"COPY ({sql}) TO {literal(sorted_file)} (FORMAT parquet, COMPRESSION lz4_raw, "
                        "ROW_GROUP_SIZE 10000)")
        cur = con.execute(f"SELECT * FROM read_parquet({literal(sorted_file)})")
        while rows := cur.fetchmany(STREAM_ROWS):
            yield rows


def _incomplete_triads(con, lake: Lake, days: list[str]) -> dict:
    """Corrections the quality stage quarantined as incomplete triads, counted by the part that was missing."""
    staged = con.execute("SELECT stage, count(*) FROM ovr WHERE outcome = 'corrected' GROUP BY 1").fetchall()
    out = {"corrections_staged_by_stage": dict(sorted(staged)), "incomplete_total": 0, "incomplete_by_missing": {},
           "incomplete_by_stage": {}}
    if not days:
        return out
    _view(con, "qovr", lake, "quarantine", "overrides", days, "")
    groups = {
        "agent decision/confidence": " OR ".join(f"{c} IS NULL" for c in contract.OVERRIDE_TRIAD["agent"]),
        "human decision/rationale": " OR ".join(f"{c} IS NULL" for c in contract.OVERRIDE_TRIAD["human"]),
        "policy clause or evidence": " AND ".join(f"{c} IS NULL" for c in contract.OVERRIDE_TRIAD["grounding_any"]),
    }
    sel = ", ".join(f"count(*) FILTER ({cond})" for cond in groups.values())
    # A correction once: a second copy of it (quarantined as a duplicate too) is not another correction.
    where = ("list_contains(quarantine_reasons, 'incomplete_triad') "
             "AND NOT list_has_any(quarantine_reasons, ['duplicate_id', 'duplicate_id_across_days'])")
    row = con.execute(f"SELECT count(*), {sel} FROM qovr WHERE {where}").fetchone()
    out["incomplete_total"] = row[0]
    out["incomplete_by_missing"] = dict(zip(groups, row[1:]))
    out["incomplete_by_stage"] = dict(sorted(con.execute(
        f"SELECT coalesce(stage, 'unknown'), count(*) FROM qovr WHERE {where} GROUP BY 1").fetchall()))
    return out

