"""The `acsr.*` span attributes: what an instrumented agent emits beside the OpenTelemetry GenAI conventions.

The GenAI conventions have no attribute for an intent, a confidence, a policy outcome or a human override, so
every team would invent its own. This table is the one the project's instrumentation package emits and the
OTLP/Langfuse pulls read with no mapping work (their built-in `acsr` preset). One span per decision point;
`acsr.event.type` names the contract's `event_type` (docs/contract/agent_events.schema.json), and where it is
absent the span name / `gen_ai.operation.name` decides (see SPAN_EVENT_TYPES).

A copy of include/feedback_loop/sources/semconv.py (the pipeline side): keep the two equal, a test compares
them."""

from __future__ import annotations

# Attributes on every span of a conversation.
CONVERSATION_ID = "gen_ai.conversation.id"  # -> conversation_id (GenAI convention)
EVENT_TYPE = "acsr.event.type"  # -> event_type, one of contract.EVENT_TYPES (or "human_override", below)
EVENT_ID = "acsr.event.id"  # -> event_id (default: the span id)
CUSTOMER_ID = "acsr.customer.id"  # -> customer_id
CASE_ID = "acsr.case.id"  # -> case_id
TURN = "acsr.turn"  # -> turn (int, from 0)
TEXT = "acsr.text"  # -> text (customer or agent words, redacted before export)
MODE = "acsr.mode"  # -> mode: live | shadow
STRATEGY = "acsr.strategy"  # -> strategy (prompt or retrieval variant, A/B)
COST_USD = "acsr.cost_usd"  # -> cost_usd
LATENCY_MS = "acsr.latency_ms"  # -> latency_ms (default: span end - start)

# Decision points.
INTENT = "acsr.intent"  # -> intent (intent_classified)
INTENT_CONFIDENCE = "acsr.intent.confidence"  # -> confidence in [0, 1]
KB_QUERY = "gen_ai.retrieval.query.text"  # -> kb_query (GenAI convention)
KB_RESULTS = "gen_ai.retrieval.documents"  # -> kb_results: JSON [{"id": ..., "score": ...}] (GenAI convention)
POLICY_ID = "acsr.policy.id"  # -> policy_id
POLICY_OUTCOME = "acsr.policy.outcome"  # -> policy_outcome: pass | fail | waived
ACTION = "gen_ai.tool.name"  # -> action (GenAI convention)
ACTION_ARGS = "gen_ai.tool.call.arguments"  # -> action_args, a JSON object (GenAI convention)
ACTION_STATUS = "acsr.action.status"  # -> action_status (what the back end answered)
RATING = "acsr.feedback.rating"  # -> rating: 1 | -1 (thumbs)
DWELL_MS = "acsr.suggestion.dwell_ms"  # -> dwell_ms
MODEL = "gen_ai.response.model"  # -> model (falls back to gen_ai.request.model)
REQUEST_MODEL = "gen_ai.request.model"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
ERROR_TYPE = "error.type"  # -> error_type (GenAI/OTel convention)
ERROR_MESSAGE = "acsr.error.message"  # -> error_message (default: the span status description)

# A human override, as a span with acsr.event.type = "human_override": one row of the overrides source.
HUMAN_OVERRIDE = "human_override"
OVERRIDE_ID = "acsr.override.id"  # -> override_id (default: the span id)
OVERRIDE_REVIEWER = "acsr.override.reviewer_id"
OVERRIDE_STAGE = "acsr.override.stage"  # intent | action | response | policy
OVERRIDE_AGENT_DECISION = "acsr.override.agent_decision"
OVERRIDE_AGENT_CONFIDENCE = "acsr.override.agent_confidence"
OVERRIDE_HUMAN_DECISION = "acsr.override.human_decision"
OVERRIDE_RATIONALE = "acsr.override.rationale"
OVERRIDE_POLICY_CLAUSE = "acsr.override.policy_clause_id"
OVERRIDE_EVIDENCE = "acsr.override.evidence"
OVERRIDE_OUTCOME = "acsr.override.outcome"  # corrected | escalated | approved

# Span name (first word) or gen_ai.operation.name -> event_type, when acsr.event.type is absent.
SPAN_EVENT_TYPES = {
    "invoke_agent": None,  # the turn's parent span: no row of its own
    "chat": "agent_response",
    "text_completion": "agent_response",
    "execute_tool": "action_executed",
    "retrieval": "kb_query",
}
