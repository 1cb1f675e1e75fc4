"""The input contract: the six landing sources, their fields, types and rules.

This module is the single machine-readable definition of what the landing area may contain. The land
stage casts every file to these types, the data-quality suites are generated from the same rules, and
`python -m feedback_loop contract` exports it as JSON Schema (docs/contract/*.schema.json).
Kept free of heavy imports: DAG files may read SOURCES at parse time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# DuckDB type names used by the land stage's casts.
TS = "TIMESTAMPTZ"
STR = "VARCHAR"
INT = "BIGINT"
DBL = "DOUBLE"
BOOL = "BOOLEAN"
JSON = "JSON"
STR_LIST = "VARCHAR[]"
KB_RESULTS = "STRUCT(article_id VARCHAR, score DOUBLE)[]"

EVENT_TYPES = (
    "customer_message",
    "intent_classified",
    "kb_query",
    "policy_check",
    "action_proposed",
    "action_executed",
    "agent_response",
    "suggestion_shown",
    "suggestion_dismissed",
    "link_clicked",
    "thumbs",
    "escalated",
    "fallback",
    "error",
)


@dataclass(frozen=True)
class Field:
    """One contract field: its DuckDB type, whether it must be present, and its row-level rules."""

    name: str
    type: str
    required: bool = False  # must be non-null on every row
    values: tuple | None = None  # allowed values (value-set expectation)
    min: float | None = None
    max: float | None = None
    description: str = ""
    otel: str | None = None  # OpenTelemetry GenAI semantic-convention name, where one exists


@dataclass(frozen=True)
class Reference:
    """Referential integrity: `column` must match `target_column` of `target` in the raw lake."""

    column: str
    target: str
    target_column: str
    where: str | None = None  # SQL filter on the target (e.g. only conversation openings)
    description: str = ""


@dataclass(frozen=True)
class Source:
    name: str
    id_column: str
    time_column: str  # the timestamp that must fall inside the interval (+ lateness)
    fields: tuple[Field, ...]
    csv: bool = False  # CRM sources also accept CSV with a header
    references: tuple[Reference, ...] = ()
    snapshot: bool = False  # a full snapshot per dt (kb_articles): no lower bound on time_column
    description: str = ""
    groups: dict = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.fields]

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)


def _opened_by_a_customer_message(description: str) -> Reference:
    """A `conversation_id` that must name a conversation a customer message opened (in agent_events)."""
    return Reference("conversation_id", "agent_events", "conversation_id", where="event_type = 'customer_message'",
                     description=description)


AGENT_EVENTS = Source(
    name="agent_events",
    id_column="event_id",
    time_column="ts",
    description="One event of the agent's reasoning trace per row.",
    fields=(
        Field("event_id", STR, True, description="unique id of the event"),
        Field("ts", TS, True, description="when it happened, RFC 3339 with offset"),
        Field("conversation_id", STR, True, description="conversation", otel="gen_ai.conversation.id"),
        Field("case_id", STR, description="CRM case, null until one exists"),
        Field("customer_id", STR, True),
        Field("turn", INT, True, min=0, description="turn number in the conversation, from 0"),
        Field("event_type", STR, True, values=EVENT_TYPES),
        Field("text", STR, description="customer or agent text"),
        Field("intent", STR, description="intent label (intent_classified)"),
        Field("confidence", DBL, min=0, max=1, description="classifier confidence in [0, 1]"),
        Field("kb_query", STR, description="query sent to the knowledge base"),
        Field("kb_results", KB_RESULTS, description="list of {article_id, score}", otel="gen_ai.retrieval.documents (closest)"),
        Field("policy_id", STR, description="policy clause checked"),
        Field("policy_outcome", STR, values=("pass", "fail", "waived")),
        Field("action", STR, description="back-end action", otel="gen_ai.tool.name"),
        Field("action_args", JSON, description="arguments of the action (object)", otel="gen_ai.tool.call.arguments"),
        Field("action_status", STR, description="status the back end returned"),
        Field("rating", INT, values=(1, -1), description="+1 / -1 for thumbs"),
        Field("dwell_ms", INT, min=0, description="time the customer spent on a suggestion"),
        Field("model", STR, description="model that produced the step", otel="gen_ai.request.model"),
        Field("strategy", STR, description="prompt or retrieval variant, for A/B"),
        Field("mode", STR, values=("live", "shadow")),
        Field("input_tokens", INT, min=0, otel="gen_ai.usage.input_tokens"),
        Field("output_tokens", INT, min=0, otel="gen_ai.usage.output_tokens"),
        Field("latency_ms", DBL, min=0, description="step latency"),
        Field("cost_usd", DBL, min=0, description="cost of the step in US dollars"),
        Field("error_type", STR, otel="error.type"),
        Field("error_message", STR),
    ),
    references=(
        _opened_by_a_customer_message("every event belongs to a conversation opened by a customer message"),
    ),
)

CRM_CASES = Source(
    name="crm_cases",
    id_column="case_id",
    time_column="updated_at",
    csv=True,
    description="Snapshots of the cases updated in the interval (an 'updated since' export).",
    fields=(
        Field("case_id", STR, True),
        Field("customer_id", STR, True),
        Field("conversation_id", STR, description="null for cases opened outside the agent"),
        Field("channel", STR, True, description="chat, email, voice, ..."),
        Field("created_at", TS, True),
        Field("updated_at", TS, True, description="when this state was exported"),
        Field("status", STR, True, values=("new", "open", "pending", "solved", "closed")),
        Field("resolved_at", TS),
        Field("resolved_by", STR, values=("ai", "human")),
        Field("escalated", BOOL),
        Field("escalation_reason", STR),
        Field("reopen_count", INT, min=0),
        Field("last_reopened_at", TS),
        Field("handle_time_s", DBL, min=0),
        Field("category", STR, description="the human-assigned intent label"),
        Field("tags", STR_LIST),
    ),
)

SURVEYS = Source(
    name="surveys",
    id_column="survey_id",
    time_column="submitted_at",
    csv=True,
    description="CSAT (1-5) and CES (1-7) survey answers.",
    fields=(
        Field("survey_id", STR, True),
        Field("case_id", STR, True),
        Field("conversation_id", STR),
        Field("submitted_at", TS, True),
        Field("kind", STR, True, values=("csat", "ces")),
        Field("score", INT, True, min=1, max=7, description="1-5 for csat, 1-7 for ces"),
        Field("comment", STR),
    ),
    references=(Reference("case_id", "crm_cases", "case_id", description="surveys answer known cases"),),
)

OVERRIDES = Source(
    name="overrides",
    id_column="override_id",
    time_column="ts",
    csv=True,
    description="The human-in-the-loop log: every review of an agent decision.",
    fields=(
        Field("override_id", STR, True),
        Field("ts", TS, True),
        Field("conversation_id", STR, True),
        Field("case_id", STR),
        Field("reviewer_id", STR, True),
        Field("stage", STR, True, values=("intent", "action", "response", "policy")),
        Field("agent_decision", STR),
        Field("agent_confidence", DBL, min=0, max=1),
        Field("human_decision", STR),
        Field("rationale", STR),
        Field("policy_clause_id", STR),
        Field("evidence", STR, description="the data point that led to the correction"),
        Field("outcome", STR, True, values=("corrected", "escalated", "approved")),
    ),
    references=(
        _opened_by_a_customer_message("overrides review conversations that a customer message opened"),
    ),
)

OUTCOME_CHECKS = Source(
    name="outcome_checks",
    id_column="check_id",
    time_column="checked_at",
    csv=True,
    description="Verifications of the agent's back-end actions.",
    fields=(
        Field("check_id", STR, True),
        Field("case_id", STR, True),
        Field("action", STR, True),
        Field("checked_at", TS, True),
        Field("expected_state", STR),
        Field("observed_state", STR),
        Field("verified", BOOL, True),
    ),
    references=(Reference("case_id", "crm_cases", "case_id", description="checks verify known cases"),),
)

KB_ARTICLES = Source(
    name="kb_articles",
    id_column="article_id",
    time_column="updated_at",
    snapshot=True,
    description="A full snapshot of the knowledge base per dt.",
    fields=(
        Field("article_id", STR, True),
        Field("title", STR, True),
        Field("body", STR),
        Field("intents", STR_LIST),
        Field("status", STR, True, values=("published", "draft", "archived")),
        Field("updated_at", TS, True),
    ),
)

SOURCES: dict[str, Source] = {
    s.name: s for s in (AGENT_EVENTS, CRM_CASES, SURVEYS, OVERRIDES, OUTCOME_CHECKS, KB_ARTICLES)
}
SOURCE_NAMES: tuple[str, ...] = tuple(SOURCES)

# Override triad: the agent's side, the human's side, and the grounding. All must be present for an
# override whose outcome is 'corrected' to count as a labelled correction.
OVERRIDE_TRIAD = {
    "agent": ("agent_decision", "agent_confidence"),
    "human": ("human_decision", "rationale"),
    "grounding_any": ("policy_clause_id", "evidence"),
}

FILE_FORMATS = {"jsonl": (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson", ".ndjson.gz"),
                "parquet": (".parquet",),
                "csv": (".csv", ".csv.gz")}


def file_format(path: str) -> str | None:
    """The format of a landing file by its name, or None when the contract does not accept it."""
    lower = path.lower()
    for fmt, suffixes in FILE_FORMATS.items():
        if lower.endswith(suffixes):
            return fmt
    return None


_JSON_TYPES = {
    TS: {"type": "string", "format": "date-time"},
    STR: {"type": "string"},
    INT: {"type": "integer"},
    DBL: {"type": "number"},
    BOOL: {"type": "boolean"},
    JSON: {"type": "object"},
    STR_LIST: {"type": "array", "items": {"type": "string"}},
    KB_RESULTS: {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"article_id": {"type": "string"}, "score": {"type": "number"}},
            "required": ["article_id", "score"],
        },
    },
}


def json_schema(source: Source) -> dict:
    """The JSON Schema (draft 2020-12) of one row of `source`. Extra properties are allowed."""
    props = {}
    for f in source.fields:
        p = dict(_JSON_TYPES[f.type])
        if not f.required:
            p = {"anyOf": [p, {"type": "null"}]}
        if f.values is not None:
            p["enum"] = list(f.values) + ([] if f.required else [None])
        if f.min is not None:
            p["minimum"] = f.min
        if f.max is not None:
            p["maximum"] = f.max
        desc = f.description + (f" (OpenTelemetry GenAI: `{f.otel}`)" if f.otel else "")
        if desc:
            p["description"] = desc.strip()
        props[f.name] = p
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"acsr-feedback-loop/{source.name}.schema.json",
        "title": source.name,
        "description": source.description,
        "type": "object",
        "properties": props,
        "required": [f.name for f in source.fields if f.required],
        "additionalProperties": True,
    }
