"""Fine-tuning datasets from the loop's own records, versioned under `<lake>/datasets/<name>/<version>/`.

Every human override is a labelled correction and every well-rated resolution a worked example; this
stage turns complete records of a trailing window into files a trainer loads as they are, and keeps
incomplete or contradictory ones out:

- `intent_relabels`: (customer text, intent) from intent-stage corrections, from escalated cases whose
  human-assigned category differs from the agent's intent, and agent intents confirmed by a good outcome,
  each with its provenance and a weight for the retraining job.
- `sft`: conversations that ended well, and conversations a human corrected with the human's response in
  place of the agent's; the system message carries the policy clauses and KB passages that grounded them.
  TRL `messages` (JSON Lines and Parquet) and OpenAI chat fine-tuning JSONL.
- `preference`: the agent's response (rejected) against the human's correction (chosen) for the same
  prompt. TRL `prompt/chosen/rejected` and OpenAI DPO JSONL.
- `kto`: single responses labelled good or bad by thumbs and CSAT, and both sides of every correction.
  TRL `prompt/completion/label`.

Order of work: read the window's marts and staged sources with DuckDB (filters and joins in SQL), redact
personal data from every text as it leaves DuckDB, build candidates, curate (conflicts, exact and near
duplicates, token budget, split by conversation), write a version folder under a temporary name, validate
every file against its consumer's rules and scan it for personal data, then rename it into place and move
the `latest.json` pointer. A version with fewer than `dataset_min_new_examples` examples unseen in the
previous version is not published. Details and formats: docs/datasets.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import shutil
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta

from feedback_loop.datasets import (  # DATASETS: the one list (assets.py)
    DATASETS,
    curation,
    formats,
    pii,
    tokens,
)
from feedback_loop.datasets.curation import Example, Step
from feedback_loop.ingest import contract
from feedback_loop.lake.files import Lake, file_sha256, filesystem_for, is_remote, join
from feedback_loop.settings import Settings

log = logging.getLogger(__name__)

# Asset URIs live in feedback_loop.assets (light, for DAG files); the names here are the folders.

# Which file of each dataset holds which format (relative path pattern, format name, Parquet too?).
LAYOUT = {
    "intent_relabels": [("data/{split}", "intent_relabel", True)],
    "sft": [("trl/{split}", "trl_messages", True), ("openai/{split}", "openai_chat", False)],
    "preference": [("trl/{split}", "trl_preference", True), ("openai_dpo/{split}", "openai_dpo", False)],
    "kto": [("trl/{split}", "trl_unpaired", True)],
}

DEFAULT_SYSTEM_PROMPT = (
    "You are the customer-support assistant of a retail bank. Answer from the knowledge-base passages and "
    "policy clauses below; when they do not cover the request, say so and offer a hand-over to a person."
)
# Weights the retraining job gives each provenance of an intent label (override with
# ACSR_EXTRA='{"dataset_relabel_weights": {...}}').
RELABEL_WEIGHTS = {"override": 1.0, "escalation_category": 0.8, "confirmed": 0.5}
HUMAN_LABEL_SOURCES = {"override", "escalation_category"}
RELABEL_FIELDS = ("example_id", "text", "label", "source", "weight", "conversation_id", "previous_label",
                  "agent_confidence", "reviewers", "n_copies", "csat", "override_id", "reviewed_at", "fact_date")
CSAT_GOOD, CSAT_BAD = 4, 2
KB_PASSAGES, KB_PASSAGE_CHARS = 3, 600


class DatasetError(RuntimeError):
    """A built version that must not be published (invalid format, personal data found)."""


@dataclass
class Config:
    """Everything that shapes a version; recorded in its manifest and part of its id."""

    window_start: str
    window_end: str
    min_new_examples: int
    min_new_pairs: int  # preference pairs come only from response corrections: a lower bar
    max_tokens: int
    near_duplicate_threshold: float
    validation_share: float
    test_share: float
    system_prompt: str
    relabel_weights: dict
    csat_good: int = CSAT_GOOD
    csat_bad: int = CSAT_BAD
    kb_passages: int = KB_PASSAGES
    kb_passage_chars: int = KB_PASSAGE_CHARS
    phone_regions: str = ""
    extra_pii_patterns: list = field(default_factory=list)

    @classmethod
    def from_settings(cls, settings: Settings, start: str, end: str) -> Config:
        return cls(
            window_start=start, window_end=end,
            min_new_examples=settings.dataset_min_new_examples, min_new_pairs=settings.dataset_min_new_pairs,
            max_tokens=settings.dataset_max_tokens,
            near_duplicate_threshold=settings.dataset_near_duplicate_threshold,
            validation_share=settings.dataset_validation_share, test_share=settings.dataset_test_share,
            system_prompt=settings.dataset_system_prompt or DEFAULT_SYSTEM_PROMPT,
            relabel_weights={**RELABEL_WEIGHTS, **settings.dataset_relabel_weights},
            csat_good=settings.dataset_csat_good, csat_bad=settings.dataset_csat_bad,
            phone_regions=settings.pii_phone_regions,
            extra_pii_patterns=sorted(settings.pii_patterns or {}),  # names only: patterns may be sensitive
        )

    def as_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def resolve_window(settings: Settings, dt: str | date | None = None, window_days: int | None = None,
                   start: str | None = None, end: str | None = None) -> tuple[str, str]:
    """[start, end] of a build: explicit bounds win; else the `window_days` (default from Settings) ending at dt."""
    end_d = date.fromisoformat(str(end or dt)[:10]) if (end or dt) else None
    if end_d is None:
        raise ValueError("give dt, or start and end")
    if start:
        start_d = date.fromisoformat(str(start)[:10])
    else:
        start_d = end_d - timedelta(days=(window_days or settings.dataset_window_days) - 1)
    if start_d > end_d:
        raise ValueError(f"window start {start_d} is after its end {end_d}")
    return start_d.isoformat(), end_d.isoformat()


# ---------------------------------------------------------------------------------------------- reading


@dataclass
class Turn:
    role: str  # user | assistant
    text: str
    ts: object


@dataclass
class Conversation:
    conversation_id: str
    outcome: dict
    turns: list = field(default_factory=list)
    intents: list = field(default_factory=list)  # (ts, intent, confidence, user text before it)
    kb: list = field(default_factory=list)  # (ts, article_id, score)
    policies: list = field(default_factory=list)  # (ts, policy_id, outcome)
    thumbs: list = field(default_factory=list)  # (ts, rating)


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
        self.changed += other.changed
        self.by_kind.update(other.by_kind)
        self.by_field.update(other.by_field)

    def __call__(self, text, where: str, maybe_pii: bool = True):
        """`maybe_pii=False`: SQL has shown the detectors cannot find anything in it (`_may_hold_pii`)."""
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


def _partitions(lake: Lake, layer: str, name: str, start: str, end: str) -> list[str]:
    return [d for d in lake.days(layer, name) if start <= d <= end]


def _view(con, name: str, lake: Lake, layer: str, source: str, days: list[str], empty: str) -> None:
    if days:
        files = ", ".join(f"'{lake.partition_file(layer, source, d)}'" for d in days)
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM read_parquet([{files}], "
                    "hive_partitioning=true, union_by_name=true)")
    else:
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {empty}")


def _empty(source: str, extra: str = "") -> str:
    cols = ", ".join(f'NULL::{f.type} AS "{f.name}"' for f in contract.SOURCES[source].fields)
    return f"SELECT {cols}, NULL::DATE AS dt{extra} WHERE false"


def _sources(lake: Lake, start: str, end: str) -> dict[tuple[str, str], list[str]]:
    """The partitions each input is read from (kb_articles: the newest snapshot up to the window's end)."""
    out = {
        ("marts", "conversation_facts"): _partitions(lake, "marts", "conversation_facts", start, end),
        ("staged", "agent_events"): _partitions(lake, "staged", "agent_events", start, end),
        ("staged", "overrides"): _partitions(lake, "staged", "overrides", start, end),
        ("staged", "crm_cases"): _partitions(lake, "staged", "crm_cases", start, end),
        ("staged", "surveys"): _partitions(lake, "staged", "surveys", start, end),
        ("quarantine", "overrides"): _partitions(lake, "quarantine", "overrides", start, end),
    }
    kb = [d for d in lake.days("staged", "kb_articles") if d <= end]
    out[("staged", "kb_articles")] = kb[-1:]
    return out


# Rows fetched from DuckDB at a time: the stream's memory is this many rows, not the window's events.
STREAM_ROWS = 5_000
TEXT_EVENTS = ("customer_message", "agent_response")


def _may_hold_pii(redactor: pii.Redactor, col: str = "text") -> str:
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
                   "reopen_count", "human_category", "escalated", "csat", "n_thumbs_up", "n_thumbs_down")


def _read(con, lake: Lake, sources: dict, red: Redaction, cfg: Config) -> tuple[int, dict[str, list[Example]],
                                                                                   dict[str, Counter]]:
    """(conversations of the window, candidates of every dataset, unusable counts), streaming.

    The outcome of every conversation is computed in SQL; only the conversations that can yield a candidate
    (`_can_yield_sql`) have their events read into Python, in conversation order, `STREAM_ROWS` at a time,
    each turned into candidates as soon as its last event is read: memory holds the candidates, not the
    window's events. Every text is still redacted and counted as before (`_may_hold_pii`)."""
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

    # Corrections and KB passages are small: read whole, redacted into counters of their own that are
    # added after the events' (the order the summary had when they were read after the events).
    corr_sql = """
    SELECT override_id, ts, conversation_id, reviewer_id, stage, agent_decision, agent_confidence, human_decision,
           policy_clause_id
    FROM ovr WHERE outcome = 'corrected' AND stage IN ('intent', 'response')
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
    CREATE OR REPLACE TEMP TABLE outcomes AS
    WITH f AS (SELECT * FROM facts QUALIFY row_number() OVER (PARTITION BY conversation_id ORDER BY fact_date DESC) = 1),
    c AS (SELECT case_id, arg_max(status, updated_at) AS status, arg_max(reopen_count, updated_at) AS reopen_count,
                 arg_max(category, updated_at) AS category, bool_or(coalesce(escalated, false)) AS escalated
          FROM cases GROUP BY case_id),
    s AS (SELECT case_id, arg_max(score, submitted_at) FILTER (kind = 'csat') AS csat FROM surveys GROUP BY case_id),
    o AS (
        SELECT f.conversation_id, f.case_id, f.fact_date::VARCHAR AS fact_date, f.final_intent, f.final_confidence,
            coalesce(c.status, f.case_status) AS status,
            coalesce(c.reopen_count, f.reopen_count, 0) AS reopen_count,
            coalesce(c.category, f.human_category) AS human_category,
            coalesce(c.escalated, false) OR coalesce(f.escalated, false) AS escalated,
            coalesce(s.csat, f.csat) AS csat, f.n_thumbs_up, f.n_thumbs_down,
            f.conversation_id IN (SELECT conversation_id FROM ovr WHERE outcome = 'corrected'
                                  AND stage IN ('intent', 'response')) AS corrected
        FROM f LEFT JOIN c ON c.case_id = f.case_id LEFT JOIN s ON s.case_id = f.case_id)
    SELECT * EXCLUDE (corrected), coalesce({_can_yield_sql(cfg)}, false) AS keep FROM o""")
    n_conversations, n_texts = con.execute(f"""
        SELECT (SELECT count(*) FROM outcomes),
               (SELECT count(e.text) FROM ev e JOIN outcomes o ON o.conversation_id = e.conversation_id
                WHERE e.event_type IN {TEXT_EVENTS})""").fetchone()

    may = _may_hold_pii(red.redactor, "e.text")
    outcome = "{" + ", ".join(f"'{c}': {c}" for c in OUTCOME_COLUMNS) + "}"
    stream_sql = f"""
    SELECT e.conversation_id, 1 AS part, e.ts, e.turn, e.dt, e._row_id, e.event_type, e.text, e.intent, e.confidence,
           e.kb_results, e.policy_id, e.policy_outcome, e.rating, o.keep, coalesce(e.text IS NOT NULL AND {may}, false)
           AS maybe_pii, NULL AS outcome
    FROM ev e JOIN outcomes o ON o.conversation_id = e.conversation_id
    WHERE e.event_type IN ('customer_message', 'agent_response', 'intent_classified', 'kb_query', 'policy_check', 'thumbs')
      AND (o.keep OR (e.event_type IN {TEXT_EVENTS} AND e.text IS NOT NULL AND {may}))
    UNION ALL
    SELECT conversation_id, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, true, false,
           {outcome}
    FROM outcomes WHERE keep
    ORDER BY conversation_id, part, ts, turn, dt, _row_id"""
    builder = _Candidates(cfg, corrections, kb)
    texts_before = red.texts
    conv, last_user = None, None
    cur = con.execute(stream_sql)
    while rows := cur.fetchmany(STREAM_ROWS):
        for (cid, part, ts, _turn, _dt, _row_id, etype, text, intent, conf, kb_results, policy_id, policy_outcome,
             rating, keep, maybe_pii, oc) in rows:
            if part == 0:  # a conversation that can yield candidates starts: its outcome, then its events
                if conv is not None:
                    builder.add(conv)
                conv, last_user = Conversation(cid, oc), None
                continue
            if not keep:  # a text that may hold personal data, of a conversation that yields nothing
                red(text, f"agent_events.text ({etype})")
                continue
            if etype in TEXT_EVENTS:
                clean = red(text, f"agent_events.text ({etype})", maybe_pii)
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
    if conv is not None:
        builder.add(conv)
    red.texts = texts_before + n_texts  # the texts ruled out in SQL were scanned too, with nothing found
    red.absorb(red_corr)
    red.absorb(red_kb)
    return n_conversations, *builder.result()


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
    where = "list_contains(quarantine_reasons, 'incomplete_triad')"
    row = con.execute(f"SELECT count(*), {sel} FROM qovr WHERE {where}").fetchone()
    out["incomplete_total"] = row[0]
    out["incomplete_by_missing"] = dict(zip(groups, row[1:]))
    out["incomplete_by_stage"] = dict(sorted(con.execute(
        f"SELECT coalesce(stage, 'unknown'), count(*) FROM qovr WHERE {where} GROUP BY 1").fetchall()))
    return out


# ------------------------------------------------------------------------------------------ candidates


def _messages(turns: list[Turn]) -> list[dict]:
    """Chat messages from turns: consecutive same-role turns merged, leading agent greetings dropped, so user
    and assistant alternate from a user message (what chat templates and the validators expect)."""
    out: list[dict] = []
    for t in turns:
        if not out and t.role != "user":
            continue
        if out and out[-1]["role"] == t.role:
            out[-1]["content"] += "\n\n" + t.text
        else:
            out.append({"role": t.role, "content": t.text})
    return out


def _system(cfg: Config, conv: Conversation, kb: dict, before=None, clause: str | None = None) -> dict:
    """The system message: the assistant's instructions and what grounded the answer in the trace."""
    ok = (lambda ts: True) if before is None else (lambda ts: ts is None or ts <= before)
    policies = []
    for ts, pid, outcome in conv.policies:
        if ok(ts) and pid not in [p for p, _ in policies]:
            policies.append((pid, outcome))
    if clause and clause not in [p for p, _ in policies]:
        policies.append((clause, "cited by the reviewer"))
    best: dict[str, float] = {}
    for ts, aid, score in conv.kb:
        if ok(ts) and aid in kb:
            best[aid] = max(score, best.get(aid, 0.0))
    parts = [cfg.system_prompt]
    if policies:
        parts.append("Policy clauses: " + "; ".join(f"{p} ({o})" if o else p for p, o in policies))
    ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[: cfg.kb_passages]
    if ranked:
        lines = ["Knowledge-base passages:"]
        for aid, _ in ranked:
            title, body = kb[aid]
            body = body if len(body) <= cfg.kb_passage_chars else body[: cfg.kb_passage_chars].rsplit(" ", 1)[0] + " ..."
            lines.append(f"[{aid}] {title}: {body}")
        parts.append("\n".join(lines))
    return {"role": "system", "content": "\n\n".join(parts)}


def _good(cfg: Config, o: dict) -> bool:
    """Ended well: resolved, never reopened in the window, not handed to a human, CSAT >= 4 (or, with no
    survey, thumbs up and no thumbs down)."""
    if o["status"] not in ("solved", "closed") or (o["reopen_count"] or 0) > 0 or o["escalated"]:
        return False
    if o["csat"] is not None:
        return o["csat"] >= cfg.csat_good
    return (o["n_thumbs_up"] or 0) > 0 and not (o["n_thumbs_down"] or 0)


def _bad(cfg: Config, o: dict) -> bool:
    if o["csat"] is not None:
        return o["csat"] <= cfg.csat_bad
    return (o["n_thumbs_down"] or 0) > 0 and not (o["n_thumbs_up"] or 0)


def _fact_date(conv: Conversation) -> str:
    return conv.outcome.get("fact_date") or ""


def _locate_correction(conv: Conversation, o: dict) -> int | None:
    """Index of the agent turn a response correction replaces: the one whose text the override quotes, else
    the last agent turn before the review."""
    target = curation.normalise(o["agent_decision"] or "")
    agent = [i for i, t in enumerate(conv.turns) if t.role == "assistant"]
    for i in agent:
        if target and curation.normalise(conv.turns[i].text) == target:
            return i
    before = [i for i in agent if o["ts"] is None or conv.turns[i].ts <= o["ts"]]
    return (before or agent or [None])[-1]


def _correction_prompt(cfg, conv, kb, o) -> tuple[list[dict] | None, str, str]:
    """(prompt messages ending with the user, rejected agent text, reason when unusable)."""
    j = _locate_correction(conv, o)
    if j is None:
        return None, "", "no agent response in the trace to replace"
    prefix = list(conv.turns[:j])
    while prefix and prefix[-1].role == "assistant":  # earlier agent text merges into the corrected message
        prefix.pop()
    msgs = _messages(prefix)
    if not msgs or msgs[-1]["role"] != "user":
        return None, "", "no customer message before the corrected response"
    rejected = o["agent_decision"] or conv.turns[j].text
    system = _system(cfg, conv, kb, before=conv.turns[j].ts, clause=o.get("policy_clause_id"))
    return [system, *msgs], rejected, ""


def build_candidates(cfg: Config, convs: dict[str, Conversation], corrections: list[dict], kb: dict
                     ) -> tuple[dict[str, list[Example]], dict[str, Counter]]:
    """Candidate examples of every dataset and, per dataset, the candidates that could not be used and why."""
    builder = _Candidates(cfg, corrections, kb)
    for conv in convs.values():
        builder.add(conv)
    return builder.result()


class _Spill:
    """Candidates' records (every output format of an example, KBs each) in an anonymous temporary file, so
    memory holds what curation decides on, not the formatted examples: they are read back one example at
    a time when counted, identified and written. Pickled, so what comes back is what was built, types
    included."""

    def __init__(self):
        self.fh = tempfile.TemporaryFile()  # noqa: SIM115 - anonymous, lives as long as the spill (closed on collection)
        self.end = 0

    def put(self, records: dict) -> _Spilled:
        blob = pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL)
        self.fh.seek(self.end)
        self.fh.write(blob)
        ref = _Spilled(self, self.end, len(blob))
        self.end += len(blob)
        return ref

    def load(self, offset: int, length: int) -> dict:
        self.fh.seek(offset)
        return pickle.loads(self.fh.read(length))


class _Spilled:
    """The records of one example in a `_Spill`; reads like the dict it stands for (a read loads it)."""

    __slots__ = ("length", "offset", "spill")

    def __init__(self, spill: _Spill, offset: int, length: int):
        self.spill, self.offset, self.length = spill, offset, length

    def load(self) -> dict:
        return self.spill.load(self.offset, self.length)

    def __getitem__(self, fmt: str):
        return self.load()[fmt]

    def get(self, fmt: str, default=None):
        return self.load().get(fmt, default)

    def __setitem__(self, fmt: str, value) -> None:
        records = self.load()
        records[fmt] = value
        ref = self.spill.put(records)
        self.offset, self.length = ref.offset, ref.length


class _Ordered:
    """A dataset's candidates with the place each would have had in a build over the whole window at once."""

    def __init__(self, spill: _Spill):
        self.key: tuple = (0, 0)
        self.items: list[tuple[tuple, Example]] = []
        self.spill = spill

    def append(self, example: Example) -> None:
        example.records = self.spill.put(example.records)
        self.items.append((self.key, example))


class _Candidates:
    """Candidates built one conversation at a time, in conversation order, so the window's events need not
    be in memory at once.

    Curation breaks ties by input order, so `result` returns them in the order of the four passes a whole
    window used to get: (0) intent corrections in review order, (1) relabels from each conversation's
    outcome, (2) SFT/KTO examples from outcomes, in conversation order, (3) response corrections in review
    order."""

    def __init__(self, cfg: Config, corrections: list[dict], kb: dict):
        self.cfg, self.kb = cfg, kb
        self.spill = _Spill()
        self.cands: dict[str, _Ordered] = {n: _Ordered(self.spill) for n in DATASETS}
        self.unusable: dict[str, Counter] = {n: Counter() for n in DATASETS}
        self.response_fixed = {o["conversation_id"] for o in corrections if o["stage"] == "response"}
        self.intent_fixed = {o["conversation_id"] for o in corrections if o["stage"] == "intent"}
        self.corrections_of: dict[str, list[tuple[int, dict]]] = {}
        for i, o in enumerate(corrections):
            self.corrections_of.setdefault(o["conversation_id"], []).append((i, o))
        self.seq = 0

    def _at(self, phase: int, position: int) -> None:
        for c in self.cands.values():
            c.key = (phase, position)

    def result(self) -> tuple[dict[str, list[Example]], dict[str, Counter]]:
        return ({n: [e for _, e in sorted(c.items, key=lambda t: t[0])] for n, c in self.cands.items()},
                self.unusable)

    def add(self, conv: Conversation) -> None:
        seq, self.seq = self.seq, self.seq + 1
        mine = self.corrections_of.get(conv.conversation_id, ())
        for i, o in mine:
            if o["stage"] == "intent":
                self._at(0, i)
                self._intent_correction(conv, o)
        self._at(1, seq)
        self._relabel_from_outcome(conv)
        self._at(2, seq)
        self._from_outcome(conv)
        for i, o in mine:
            if o["stage"] == "response":
                self._at(3, i)
                self._response_correction(conv, o)

    # Intent relabels ---------------------------------------------------------------------------------------
    def _relabel(self, conv, text, label, source, evidence, reviewer=None, **meta):
        w = self.cfg.relabel_weights
        if not text or not label:
            self.unusable["intent_relabels"][f"{source}: no customer text or label"] += 1
            return
        rec = {"text": text, "label": label, "source": source, "weight": float(w[source]),
               "conversation_id": conv.conversation_id, "fact_date": _fact_date(conv), **meta}
        self.cands["intent_relabels"].append(Example(
            "intent_relabels", conv.conversation_id, source, key=text, records={"intent_relabel": rec},
            evidence=evidence, group=label, label=label, reviewer=reviewer, weight=float(w[source]),
            meta={"ts": str(meta.get("reviewed_at") or "")}))

    def _intent_correction(self, conv: Conversation, o: dict) -> None:
        text = next((u for ts, intent, _, u in reversed(conv.intents)
                     if intent == o["agent_decision"] and (o["ts"] is None or ts <= o["ts"])), None)
        text = text or next((t.text for t in conv.turns if t.role == "user"), None)
        self._relabel(conv, text, o["human_decision"], "override", (3, o["agent_confidence"] or 0.0),
                      reviewer=o["reviewer_id"], previous_label=o["agent_decision"],
                      agent_confidence=o["agent_confidence"], reviewers=[o["reviewer_id"]],
                      reviewed_at=str(o["ts"]) if o["ts"] else None, override_id=o["override_id"])

    def _relabel_from_outcome(self, conv: Conversation) -> None:
        cfg, oc = self.cfg, conv.outcome
        first_text = next((t.text for t in conv.turns if t.role == "user"), None)
        final = conv.intents[-1] if conv.intents else None
        if oc["escalated"] and oc["human_category"] and oc["human_category"] != oc["final_intent"]:
            self._relabel(conv, (final[3] if final else None) or first_text, oc["human_category"],
                          "escalation_category", (2, 0.0), reviewer=f"case:{oc['case_id']}",
                          previous_label=oc["final_intent"], agent_confidence=oc["final_confidence"],
                          reviewers=[f"case:{oc['case_id']}"])
        elif (final and conv.conversation_id not in self.intent_fixed and oc["final_intent"]
              and oc["human_category"] in (None, oc["final_intent"]) and oc["status"] in ("solved", "closed")
              and not (oc["reopen_count"] or 0) and oc["csat"] is not None and oc["csat"] >= cfg.csat_good):
            self._relabel(conv, final[3] or first_text, oc["final_intent"], "confirmed", (1, oc["csat"]),
                          previous_label=oc["final_intent"], agent_confidence=oc["final_confidence"], reviewers=[],
                          csat=oc["csat"])

    # SFT, KTO from outcomes ---------------------------------------------------------------------------------
    def _from_outcome(self, conv: Conversation) -> None:
        cfg, kb, cands, unusable = self.cfg, self.kb, self.cands, self.unusable
        oc = conv.outcome
        if conv.conversation_id in self.response_fixed:
            return
        good, bad = _good(cfg, oc), _bad(cfg, oc)
        if not (good or bad):
            return
        agent_idx = [i for i, t in enumerate(conv.turns) if t.role == "assistant"]
        if good:
            if not agent_idx:
                unusable["sft"]["good outcome without an agent response"] += 1
                unusable["kto"]["good outcome without an agent response"] += 1
                return
            last = agent_idx[-1]
            msgs = _messages(conv.turns[: last + 1])
            if len(msgs) < 2 or msgs[-1]["role"] != "assistant":
                unusable["sft"]["no customer message before the agent's answer"] += 1
                unusable["kto"]["no customer message before the agent's answer"] += 1
                return
            system = _system(cfg, conv, kb)
            trl = {"messages": [system, *msgs]}
            evidence = (2, oc["csat"] or 0, oc["n_thumbs_up"] or 0)
            cands["sft"].append(Example("sft", conv.conversation_id, "good_outcome", key=_key(msgs), evidence=evidence,
                                        records={"trl_messages": trl, "openai_chat": {"messages": [system, *msgs]}},
                                        meta={"fact_date": _fact_date(conv), "csat": oc["csat"]}))
            first = _messages(conv.turns[: agent_idx[0] + 1])  # the answer to the request, not the closing
            if len(first) >= 2 and first[-1]["role"] == "assistant":
                _kto(cands, unusable, conv.conversation_id, [_system(cfg, conv, kb, before=conv.turns[agent_idx[0]].ts),
                     *first[:-1]], first[-1]["content"], True, "good_outcome", evidence, _fact_date(conv))
            else:
                unusable["kto"]["no customer message before the agent's answer"] += 1
        else:
            if not agent_idx:
                unusable["kto"]["bad outcome without an agent response"] += 1
                return
            # CSAT judges the conversation: label the agent's answer to the request (its first response, not
            # a closing courtesy); a thumbs-down judges the response it was given to.
            j = agent_idx[0]
            if oc["csat"] is None and conv.thumbs:
                down = next((ts for ts, r in conv.thumbs if r == -1), None)
                before = [i for i in agent_idx if down is None or conv.turns[i].ts <= down]
                j = (before or agent_idx)[-1]
            msgs = _messages(conv.turns[: j + 1])
            if len(msgs) < 2 or msgs[-1]["role"] != "assistant":
                unusable["kto"]["no customer message before the agent's answer"] += 1
                return
            system = _system(cfg, conv, kb, before=conv.turns[j].ts)
            _kto(cands, unusable, conv.conversation_id, [system, *msgs[:-1]], msgs[-1]["content"], False,
                 "bad_outcome", (2, 5 - (oc["csat"] or 3)), _fact_date(conv))

    # Human response corrections: SFT, preference pairs, both sides for KTO ----------------------------------
    def _response_correction(self, conv: Conversation, o: dict) -> None:
        cfg, kb, cands, unusable = self.cfg, self.kb, self.cands, self.unusable
        human = (o["human_decision"] or "").strip()
        prompt, rejected, why = _correction_prompt(cfg, conv, kb, o) if human else (None, "", "empty human response")
        if prompt is None:
            for n in ("sft", "preference", "kto"):
                unusable[n][f"correction: {why}"] += 1
            return
        ev = (3, o["agent_confidence"] or 0.0)
        meta = {"fact_date": _fact_date(conv), "override_id": o["override_id"], "reviewer": o["reviewer_id"]}
        openai_msgs = [{**m, "weight": 0} if m["role"] == "assistant" else m for m in prompt]
        cands["sft"].append(Example(
            "sft", conv.conversation_id, "human_correction", key=_key(prompt[1:] + [{"content": human}]), evidence=ev,
            records={"trl_messages": {"messages": [*prompt, {"role": "assistant", "content": human}]},
                     "openai_chat": {"messages": [*openai_msgs, {"role": "assistant", "content": human, "weight": 1}]}},
            meta=meta))
        if curation.normalise(rejected) == curation.normalise(human):
            unusable["preference"]["correction identical to the agent's response"] += 1
        else:
            chosen, rej = [{"role": "assistant", "content": human}], [{"role": "assistant", "content": rejected.strip()}]
            cands["preference"].append(Example(
                "preference", conv.conversation_id, "human_correction",
                key=_key(prompt[1:]) + "\n" + human + "\n" + rejected, evidence=ev, meta=meta,
                records={"trl_preference": {"prompt": prompt, "chosen": chosen, "rejected": rej},
                         "openai_dpo": {"input": {"messages": prompt}, "preferred_output": chosen,
                                        "non_preferred_output": rej}}))
        _kto(cands, unusable, conv.conversation_id, prompt, human, True, "correction_chosen", ev, meta["fact_date"])
        _kto(cands, unusable, conv.conversation_id, prompt, rejected.strip(), False, "correction_rejected", ev,
             meta["fact_date"])


def _key(msgs: list[dict]) -> str:
    return "\n".join(m["content"] for m in msgs)


def _kto(cands, unusable, cid, prompt, completion, label, source, evidence, fact_date) -> None:
    if not completion:
        unusable["kto"][f"{source}: empty completion"] += 1
        return
    user = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
    cands["kto"].append(Example(
        "kto", cid, source, key=user + "\n" + completion, evidence=evidence, group=str(label).lower(),
        label=str(label).lower(), reviewer=cid, meta={"fact_date": fact_date},
        records={"trl_unpaired": {"prompt": prompt, "completion": [{"role": "assistant", "content": completion}],
                                  "label": label}}))


# -------------------------------------------------------------------------------------------- curation


def _main_format(name: str) -> str:
    return LAYOUT[name][0][1]


def _count_tokens(name: str, e: Example) -> int:
    r = e.records[_main_format(name)]
    if name == "intent_relabels":
        return tokens.count(r["text"])
    if name == "sft":
        return tokens.count_messages(r["messages"])
    if name == "preference":
        return max(tokens.count_messages(r["prompt"] + r[s]) for s in ("chosen", "rejected"))
    return tokens.count_messages(r["prompt"] + r["completion"])


def curate(name: str, cfg: Config, candidates: list[Example], unusable: Counter) -> tuple[list[Example], list[dict], list[Step]]:
    """The curation steps of one dataset, in order; every step's out is the next step's in."""
    n_unusable = sum(unusable.values())
    steps = [Step("candidates", len(candidates) + n_unusable, len(candidates),
                  {"by_source": dict(sorted(Counter(e.source for e in candidates).items())),
                   "unusable": dict(sorted(unusable.items()))})]
    examples, conflicts = candidates, []
    if name == "intent_relabels":
        examples, conflicts, step = curation.label_conflicts(examples, HUMAN_LABEL_SOURCES)
        steps.append(step)
    elif name == "kto":  # the same response to the same message judged good and bad: neither is kept
        examples, conflicts, step = curation.label_conflicts(examples, {e.source for e in examples})
        steps.append(step)
    examples, step = curation.exact_duplicates(examples)
    steps.append(step)
    examples, step = curation.near_duplicates(examples, cfg.near_duplicate_threshold)
    steps.append(step)
    within = []
    for e in examples:
        e.tokens = _count_tokens(name, e)
        if e.tokens <= cfg.max_tokens:
            within.append(e)
    steps.append(Step("token_budget", len(examples), len(within), {"max_tokens": cfg.max_tokens,
                                                                   "tokenizer": tokens.ENCODING}))
    steps.append(curation.assign_splits(within, cfg.validation_share, cfg.test_share))
    for e in within:
        e.example_id = _example_id(name, e)
        if name == "intent_relabels":  # one fixed set of columns, so every file has the same schema
            rec = e.records["intent_relabel"]
            rec.update(example_id=e.example_id, n_copies=e.merged,
                       reviewers=sorted(set(rec.get("reviewers") or []) | set(e.meta.get("reviewers") or [])))
            e.records["intent_relabel"] = {k: rec.get(k) for k in RELABEL_FIELDS}
    within.sort(key=lambda e: e.example_id)
    return within, conflicts, steps


def _example_id(name: str, e: Example) -> str:
    """Content-derived id: the same example gets the same id in every version (used to count new ones)."""
    r = dict(e.records[_main_format(name)])
    for volatile in ("example_id", "n_copies", "reviewers", "weight"):
        r.pop(volatile, None)
    blob = json.dumps([name, e.conversation_id, e.source, r], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


# ------------------------------------------------------------------------------------------- publishing


def _jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records).encode()


def _write_files(folder: str, name: str, examples: list[Example], conflicts: list[dict]) -> list[dict]:
    """Write every format of every split; return [{path, format, split, rows}] (paths relative to folder)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = []
    for pattern, fmt, parquet in LAYOUT[name]:
        for split in curation.SPLITS:
            n_rows = sum(1 for e in examples if e.split == split)
            if not n_rows:
                continue
            rel = pattern.format(split=split)
            os.makedirs(os.path.dirname(os.path.join(folder, rel)), exist_ok=True)
            # JSON Lines one record at a time (records are read back from the spill as written); Parquet
            # still takes the split's records at once (its schema is inferred from all of them).
            records = [] if parquet else None
            with open(os.path.join(folder, rel + ".jsonl"), "wb") as fh:
                for e in examples:
                    if e.split == split:
                        rec = e.records[fmt]
                        fh.write(_jsonl([rec]))
                        if records is not None:
                            records.append(rec)
            files.append({"path": rel + ".jsonl", "format": fmt, "split": split, "rows": n_rows})
            if parquet:
                pq.write_table(pa.Table.from_pylist(records), os.path.join(folder, rel + ".parquet"),
                               compression="zstd")
                files.append({"path": rel + ".parquet", "format": fmt, "split": split, "rows": len(records)})
    index = [{"example_id": e.example_id, "conversation_id": e.conversation_id, "split": e.split, "source": e.source,
              "weight": e.weight, "tokens": e.tokens, "copies_merged": e.merged,
              "fact_date": str(e.meta.get("fact_date") or e.records.get("intent_relabel", {}).get("fact_date") or "")}
             for e in examples]
    pq.write_table(pa.Table.from_pylist(index, schema=pa.schema([
        ("example_id", pa.string()), ("conversation_id", pa.string()), ("split", pa.string()),
        ("source", pa.string()), ("weight", pa.float64()), ("tokens", pa.int64()), ("copies_merged", pa.int64()),
        ("fact_date", pa.string())])), os.path.join(folder, "examples.parquet"), compression="zstd")
    files.append({"path": "examples.parquet", "format": "index", "split": None, "rows": len(index)})
    if conflicts:
        with open(os.path.join(folder, "conflicts.jsonl"), "wb") as fh:
            fh.write(_jsonl(conflicts))
        files.append({"path": "conflicts.jsonl", "format": "conflicts", "split": None, "rows": len(conflicts)})
    for f in files:
        f["sha256"] = file_sha256(os.path.join(folder, f["path"]))
        f["bytes"] = os.path.getsize(os.path.join(folder, f["path"]))
    return files


class _ScanMemo:
    """`find` of a redactor, remembered per distinct string (by a 128-bit digest, not the text itself).

    The files of a version repeat the same strings many times over (the system message with its KB
    passages in every example, the same messages in the TRL and the OpenAI files, the same prompt in
    `sft`, `preference` and `kto`); the phone matcher is the costliest step of the stage, so each distinct
    string is scanned once per build. `find` is a pure function of the string: the answer is the same."""

    LIMIT = 1 << 19  # distinct strings remembered (~70 MiB); beyond it the memo starts again (same answers)

    def __init__(self, redactor: pii.Redactor):
        self.redactor = redactor
        self.seen: dict[bytes, tuple] = {}

    def find(self, text: str) -> tuple:
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        found = self.seen.get(key)
        if found is None:
            if len(self.seen) >= self.LIMIT:
                self.seen.clear()
            found = self.seen[key] = tuple(self.redactor.find(text))
        return found


def _validate(folder: str, files: list[dict], cfg: Config, redactor: pii.Redactor | _ScanMemo) -> dict:
    """Every data file read back and checked against its consumer's rules; every string scanned for PII."""
    checked = {}
    for f in files:
        path = os.path.join(folder, f["path"])
        if f["format"] in formats.CHECKS:
            checked[f["path"]] = formats.validate_file(path, f["format"], cfg.max_tokens)
        if f["path"].endswith(".jsonl"):
            leaks = Counter()
            for rec in formats.iter_records(path):
                for s in _strings(rec):
                    leaks.update(kind for kind, _ in redactor.find(s))
            if leaks:
                raise DatasetError(f"{path}: personal data found after redaction: {dict(leaks)}")
    return {"passed": True, "files": checked, "pii_scan": "no personal data found in any message content or text of any JSONL file"}


def _strings(obj, key: str | None = None):
    """The free-text values of a record (message contents, texts); ids and hashes are not free text."""
    if isinstance(obj, str):
        if key in FREE_TEXT_KEYS:
            yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(v, k)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v, key)


FREE_TEXT_KEYS = {"content", "text", "label", "labels", "previous_label"}  # free text a person or model typed


@contextlib.contextmanager
def _publish_lock(base: str):
    """One publisher per dataset at a time (backfill runs of several days may finish together)."""
    if is_remote(base):
        yield
        return
    import fcntl

    os.makedirs(base, exist_ok=True)
    with open(os.path.join(base, ".publish.lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _previous_ids(lake: Lake, name: str, latest: dict | None) -> set[str]:
    if not latest:
        return set()
    import pyarrow.parquet as pq

    path = join(lake.root, "datasets", name, latest["version"], "examples.parquet")
    if is_remote(path):
        fs, key = filesystem_for(path)
        with fs.open(key, "rb") as fh:
            return set(pq.read_table(fh, columns=["example_id"]).column(0).to_pylist())
    return set(pq.read_table(path, columns=["example_id"]).column(0).to_pylist())


def _dq(lake: Lake, start: str, end: str) -> dict:
    """The data-quality results of every day of the window, from the nightly run summaries."""
    out = {}
    for d in _days(start, end):
        s = lake.read_json("runs", f"dt={d}", "summary.json")
        if s is None:
            out[d] = {"status": "no run summary"}
            continue
        out[d] = {"status": s.get("status"), "totals": s.get("totals"),
                  "sources": {k: {x: v.get(x) for x in ("status", "rows_read", "rows_staged", "rows_quarantined",
                                                       "quarantined_by_reason")}
                              for k, v in (s.get("sources") or {}).items()}}
    return out


def _days(start: str, end: str) -> list[str]:
    a, b = date.fromisoformat(start), date.fromisoformat(end)
    return [(a + timedelta(days=i)).isoformat() for i in range((b - a).days + 1)]


def _source_files(lake: Lake, sources: dict) -> dict:
    out = {}
    for (layer, name), days in sources.items():
        rows = []
        for d in days:
            path = lake.partition_file(layer, name, d)
            entry = {"dt": d, "path": path[len(lake.root) + 1:]}
            if not is_remote(path):
                entry["sha256"] = file_sha256(path)
            rows.append(entry)
        out[f"{layer}/{name}"] = rows
    return out


def build_datasets(settings: Settings, dt: str | date | None = None, window_days: int | None = None,
                   start: str | None = None, end: str | None = None, *, only: list[str] | None = None) -> dict:
    """Build, validate and publish a version of every dataset for a trailing window; return what happened.

    The window is `window_days` (default `Settings.dataset_window_days`) ending at `dt`, or [start, end].
    Per dataset the result says `published` (a new version, now latest), `unchanged` (this exact version
    exists already), `published_not_latest` (a version of an older window than latest), or
    `not_published` with the reason (fewer new examples than the minimum)."""
    from feedback_loop.lake.duck import connect

    start, end = resolve_window(settings, dt, window_days, start, end)
    lake = Lake(settings.lake)
    cfg = Config.from_settings(settings, start, end)
    red = Redaction(settings)
    sources = _sources(lake, start, end)
    con = connect()
    try:
        n_conversations, cands, unusable = _read(con, lake, sources, red, cfg)
        triads = (_incomplete_triads(con, lake, sources[("quarantine", "overrides")]) if n_conversations
                  else {"incomplete_total": 0})
    finally:
        con.close()
    context = {"window": {"start": start, "end": end, "days": _days(start, end),
                          "days_with_facts": sources[("marts", "conversation_facts")]},
               "sources": _source_files(lake, sources), "data_quality": _dq(lake, start, end),
               "redaction": red.summary(), "incomplete_triads": triads, "config": cfg.as_dict(),
               "tokenizer": tokens.describe(), "conversations_read": n_conversations}
    result = {"window": {"start": start, "end": end}, "conversations": n_conversations, "datasets": {}}
    scan = _ScanMemo(pii.redactor(settings))  # shared by the datasets: they repeat each other's strings
    for name in only or DATASETS:
        examples, conflicts, steps = curate(name, cfg, cands[name], unusable[name])
        result["datasets"][name] = _publish(lake, name, cfg, examples, conflicts, steps, context, scan)
        r = result["datasets"][name]
        log.info("dataset %s %s..%s: %s (%s examples, %s new)%s", name, start, end, r["status"], r["examples"],
                 r.get("new_examples"), f" version {r['version']}" if r.get("version") else "")
    lake.write_json(result, "runs", f"dt={end}", "datasets.json")
    return result


def _publish(lake: Lake, name: str, cfg: Config, examples: list[Example], conflicts: list[dict], steps: list[Step],
             context: dict, redactor: pii.Redactor | _ScanMemo) -> dict:
    base = join(lake.root, "datasets", name)
    remote = is_remote(base)
    import tempfile

    tmp = (tempfile.mkdtemp(prefix=f"acsr-{name}-") if remote
           else os.path.join(base, f".tmp-{uuid.uuid4().hex}"))
    os.makedirs(tmp, exist_ok=True)
    try:
        files = _write_files(tmp, name, examples, conflicts)
        # Content and the settings that shaped it (not the publishing rule): same inputs, same version id.
        shaping = {k: v for k, v in cfg.as_dict().items() if k not in ("min_new_examples", "min_new_pairs")}
        digest = hashlib.sha256(json.dumps(
            [name, shaping, [(f["path"], f["sha256"]) for f in files if f["path"].endswith(".jsonl")]],
            sort_keys=True).encode()).hexdigest()
        version = f"v{cfg.window_end.replace('-', '')}-{digest[:10]}"
        out = {"status": "", "version": None, "examples": len(examples), "window_end": cfg.window_end}
        with _publish_lock(base):
            latest = lake.read_json("datasets", name, "latest.json")
            target = join(base, version)
            if latest and latest.get("version") == version or _exists(target):
                return {**out, "status": "unchanged", "version": version, "path": target,
                        "manifest": join(target, "manifest.json"), "new_examples": 0,
                        "reason": "this exact version is published already"}
            prev_ids = _previous_ids(lake, name, latest)
            new = sum(1 for e in examples if e.example_id not in prev_ids)
            out["new_examples"] = new
            minimum = cfg.min_new_pairs if name == "preference" else cfg.min_new_examples
            if new < minimum or not examples:
                return {**out, "status": "not_published", "supersedes": (latest or {}).get("version"),
                        "reason": f"{new} new examples, fewer than the minimum of {minimum}"}
            validation = _validate(tmp, files, cfg, redactor)
            manifest = _manifest(name, version, latest, examples, conflicts, steps, files, validation, context,
                                 new, prev_ids)
            with open(os.path.join(tmp, "manifest.json"), "w") as fh:
                json.dump(manifest, fh, indent=2, sort_keys=True, default=str)
                fh.write("\n")
            with open(os.path.join(tmp, "README.md"), "w") as fh:
                fh.write(dataset_card(manifest))
            _move_into_place(tmp, target)
            older = latest and latest.get("window_end", "") > cfg.window_end
            if not older:
                lake.write_json({"dataset": name, "version": version, "path": target,
                                 "manifest": join(target, "manifest.json"), "window_start": cfg.window_start,
                                 "window_end": cfg.window_end, "examples": len(examples), "new_examples": new},
                                "datasets", name, "latest.json")
            return {**out, "status": "published_not_latest" if older else "published", "version": version,
                    "path": target, "manifest": join(target, "manifest.json"),
                    "supersedes": (latest or {}).get("version"),
                    "by_split": dict(Counter(e.split for e in examples))}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _exists(target: str) -> bool:
    if is_remote(target):
        fs, path = filesystem_for(join(target, "manifest.json"))
        return fs.exists(path)
    return os.path.exists(os.path.join(target, "manifest.json"))


def _move_into_place(tmp: str, target: str) -> None:
    """Local: one rename of the finished folder. Object storage: upload the files, the manifest last."""
    if not is_remote(target):
        os.replace(tmp, target)
        return
    fs, path = filesystem_for(target)
    for root, _, names in os.walk(tmp):
        for n in sorted(names, key=lambda n: n == "manifest.json"):
            local = os.path.join(root, n)
            fs.put_file(local, path + "/" + os.path.relpath(local, tmp))


def _manifest(name, version, latest, examples, conflicts, steps, files, validation, context, new, prev_ids) -> dict:
    ids = {e.example_id for e in examples}
    return {
        "dataset": name,
        "version": version,
        "supersedes": (latest or {}).get("version"),
        "window": context["window"],
        "counts": {
            "examples": len(examples),
            "by_split": {s: sum(1 for e in examples if e.split == s) for s in curation.SPLITS},
            "by_source": dict(sorted(Counter(e.source for e in examples).items())),
            "new_examples": new,
            "carried_over": len(ids & prev_ids),
            "dropped_since_previous": len(prev_ids - ids),
            "conflicts_listed": len(conflicts),
            "conversations": len({e.conversation_id for e in examples}),
        },
        "curation": {
            "steps": [s.as_dict() for s in steps],
            "redaction": context["redaction"],
            "incomplete_triads_excluded": context["incomplete_triads"],
        },
        "files": files,
        "formats": {f: {"description": formats.FORMATS[f].description, "reference": formats.FORMATS[f].reference}
                    for f in sorted({f["format"] for f in files if f["format"] in formats.FORMATS})},
        "validation": validation,
        "tokenizer": context["tokenizer"],
        "config": context["config"],
        "sources": context["sources"],
        "data_quality": context["data_quality"],
    }


def dataset_card(m: dict) -> str:
    """The version's README.md: what it is, where it came from, how it was curated, how to load it."""
    name, c = m["dataset"], m["counts"]
    what = {
        "intent_relabels": "Customer messages with the intent a person (or a confirmed good outcome) assigned, "
                           "with provenance and a weight per example, for retraining the intent classifier.",
        "sft": "Support conversations that ended well, and conversations a person corrected with the person's "
               "response in place of the agent's, for supervised fine-tuning.",
        "preference": "The agent's response (rejected) against the person's correction (chosen) for the same "
                      "prompt, for DPO-style preference training.",
        "kto": "Single agent responses labelled good or bad by customer feedback (thumbs, CSAT) and by human "
               "corrections, for KTO-style unpaired preference training.",
    }[name]
    lines = [f"# ACSR {name} - {m['version']}", "", what, "",
             f"- Window: {m['window']['start']} .. {m['window']['end']}",
             f"- Supersedes: {m['supersedes'] or 'nothing (first version)'}",
             (f"- Examples: {c['examples']} ({c['new_examples']} new, {c['carried_over']} carried over, "
             f"{c['dropped_since_previous']} no longer present) from {c['conversations']} conversations"),
             "- Splits: " + ", ".join(f"{k} {v}" for k, v in c["by_split"].items()) + " (by a hash of the "
             "conversation id: a conversation never changes split between versions)",
             "- By source: " + ", ".join(f"{k} {v}" for k, v in c["by_source"].items()), "",
             "## Files", "", "| file | format | rows | sha256 |", "| --- | --- | ---: | --- |"]
    lines += [f"| `{f['path']}` | {f['format']} | {f['rows']} | `{f['sha256'][:16]}...` |" for f in m["files"]]
    lines += ["", "## Curation", "", "| step | in | out | removed |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {s['step']} | {s['in']} | {s['out']} | {s['removed']} |" for s in m["curation"]["steps"]]
    r, t = m["curation"]["redaction"], m["curation"]["incomplete_triads_excluded"]
    lines += ["", (f"Personal data: {r['texts_scanned']} texts scanned, {r['texts_changed']} changed; replaced "
              f"{r['replaced_by_kind'] or 'nothing'} with typed placeholders ({', '.join(r['placeholders'])}) before "
              "anything was written, and every output string was scanned again before publishing."),
              (f"Incomplete override triads excluded upstream (quarantined): {t.get('incomplete_total', 0)} "
              f"{t.get('incomplete_by_missing') or ''}."),
              (f"Token budget: {m['config']['max_tokens']} tokens per example, counted with "
              f"{m['tokenizer']['library']} / {m['tokenizer']['encoding']}."),
              "", "## Loading", ""]
    parquet = {f["split"]: f["path"] for f in m["files"] if f["path"].endswith(".parquet") and f["split"]}
    lines += ["```python", "from datasets import load_dataset  # works offline on the local files",
              f"ds = load_dataset('parquet', data_files={json.dumps(parquet)})", "```"]
    if name == "sft":
        lines += ["", ("OpenAI: upload `openai/train.jsonl` (and `openai/validation.jsonl`) with "
                  "`purpose=\"fine-tune\"`; earlier agent turns of corrected conversations carry `weight: 0`.")]
    if name == "preference":
        lines += ["", "OpenAI: `openai_dpo/train.jsonl` for a fine-tuning job with `method={\"type\": \"dpo\"}`."]
    notes = [n for v in m["validation"]["files"].values() for n in v.get("notes", [])]
    lines += ["", "## Validation", "", ("Every file was read back and checked against its consumer's rules "
              "(roles, non-empty content, final assistant message, token budget); see docs/datasets.md.")]
    lines += [f"- note: {n}" for n in notes]
    lines += ["", "## Limits", "",
              ("- Labels and outcomes come from production records and carry their noise: reviewers disagree "
              "(conflicting texts are held out and listed in `conflicts.jsonl` where any), CSAT is sparse."),
              "- The data describes one bank's support traffic; do not use it outside that domain.", ""]
    return "\n".join(lines)


def latest(settings: Settings, name: str) -> dict | None:
    """The `latest.json` pointer of a dataset (None before its first version)."""
    return Lake(settings.lake).read_json("datasets", name, "latest.json")

