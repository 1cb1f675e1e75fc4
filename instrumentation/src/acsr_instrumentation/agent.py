"""One call per decision point of a support agent, each an OpenTelemetry span the feedback loop reads.

    inst = Instrumentation.to_directory("traces/", service_name="support-agent", redact=my_redactor)
    with inst.conversation("CONV-1", customer_id="CUST-9") as conv, conv.turn(0) as turn:
        turn.customer_message("My card was stolen")
        turn.intent("lost_or_stolen_card", confidence=0.93)
        ...

Spans follow the OpenTelemetry GenAI conventions where they exist (`invoke_agent` for a turn, `retrieval`
for a knowledge query, `execute_tool` for a back-end action, `chat` for a response; `gen_ai.conversation.id`,
`gen_ai.usage.*`) and the `acsr.*` table of `semconv` for the rest. Every call is guarded: an error inside
the instrumentation or its exporter is counted (`stats()`), never raised into the agent. Texts pass through
`redact` before they are set on a span, so nothing unredacted is ever exported.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Self

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Status, StatusCode

from acsr_instrumentation import semconv as sc
from acsr_instrumentation.otlp_json import OtlpJsonFileExporter, SafeExporter

log = logging.getLogger(__name__)
SCOPE = "acsr_instrumentation"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
REDACTED_ATTRIBUTES = (sc.TEXT, sc.KB_QUERY, sc.ERROR_MESSAGE, sc.OVERRIDE_AGENT_DECISION,
                       sc.OVERRIDE_HUMAN_DECISION, sc.OVERRIDE_RATIONALE, sc.OVERRIDE_EVIDENCE)
POLICY_OUTCOMES = ("pass", "fail", "waived")
OVERRIDE_STAGES = ("intent", "action", "response", "policy")
OVERRIDE_OUTCOMES = ("corrected", "escalated", "approved")


def _ns(ts: datetime | None) -> int | None:
    """A timezone-aware datetime as unix nanoseconds (None: now, chosen by the SDK)."""
    if ts is None:
        return None
    if ts.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    d = ts - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000_000 + d.microseconds * 1000


def _guarded(fn):
    """Run an instrumentation call; on any error count it and return None, the agent carries on."""
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except Exception as e:  # noqa: BLE001 - instrumentation must never break the agent
            self._inst._error(fn.__name__, e)
            return None
    return wrapper


class Instrumentation:
    """The agent side of the loop: a tracer, a redaction hook and counters of what went wrong."""

    def __init__(self, tracer_provider: TracerProvider | None = None, *, redact: Callable[[str], str] | None = None,
                 agent_name: str = "support-agent"):
        self.provider = tracer_provider or trace.get_tracer_provider()
        self.tracer = self.provider.get_tracer(SCOPE, _version())
        self.redact = redact
        self.agent_name = agent_name
        self.exporters: list[SafeExporter] = []
        self._ended: _Counting | None = None
        self.instrumentation_errors = 0
        self.last_instrumentation_error: str | None = None
        self._lock = threading.Lock()

    @classmethod
    def with_exporter(cls, exporter: SpanExporter, *, service_name: str = "support-agent", batch: bool = True,
                      redact: Callable[[str], str] | None = None, agent_name: str | None = None,
                      resource: Mapping | None = None) -> Instrumentation:
        """A tracer provider of its own exporting through `exporter`, wrapped so its failures are counted.

        `batch=True` exports from a background thread (the agent never waits on the exporter; a full queue
        drops spans rather than blocking); `batch=False` exports as each span ends (tests, short scripts)."""
        safe = SafeExporter(exporter)
        provider = TracerProvider(resource=Resource.create({"service.name": service_name, **(resource or {})}))
        ended = _Counting()
        provider.add_span_processor(ended)
        provider.add_span_processor(BatchSpanProcessor(safe) if batch else SimpleSpanProcessor(safe))
        inst = cls(provider, redact=redact, agent_name=agent_name or service_name)
        inst.exporters.append(safe)
        inst._ended = ended
        return inst

    @classmethod
    def to_directory(cls, directory, **kwargs) -> Instrumentation:
        """OTLP JSON files in `directory`, the input of the feedback loop's trace pull."""
        return cls.with_exporter(OtlpJsonFileExporter(directory), **kwargs)

    def conversation(self, conversation_id: str, *, customer_id: str | None = None, case_id: str | None = None,
                     mode: str | None = None, strategy: str | None = None) -> Conversation:
        return Conversation(self, conversation_id, customer_id=customer_id, case_id=case_id, mode=mode,
                            strategy=strategy)

    def human_override(self, conversation_id: str, **kwargs) -> None:
        """A reviewer's decision on a conversation, logged whenever it happens (often hours later)."""
        Conversation(self, conversation_id, case_id=kwargs.pop("case_id", None)).human_override(**kwargs)

    def flush(self, timeout_millis: int = 30_000) -> bool:
        try:
            return bool(self.provider.force_flush(timeout_millis))
        except Exception as e:  # noqa: BLE001
            self._error("flush", e)
            return False

    def shutdown(self) -> None:
        """Export what is queued and close the exporters (an OTLP JSON file becomes visible here)."""
        try:
            self.provider.shutdown()
        except Exception as e:  # noqa: BLE001
            self._error("shutdown", e)

    def stats(self) -> dict:
        """What was lost and why: failed exports, spans dropped, errors inside the instrumentation."""
        ended = self._ended.count if self._ended is not None else None
        exported = sum(x.spans_exported for x in self.exporters)
        return {"spans_ended": ended, "spans_exported": exported,
                # ended but neither exported nor failed: still queued, or dropped by a full queue
                "spans_not_exported": None if ended is None else ended - exported,
                "export_failures": sum(x.failures for x in self.exporters),
                "spans_dropped": sum(x.spans_dropped for x in self.exporters),
                "last_export_error": next((x.last_error for x in reversed(self.exporters) if x.last_error), None),
                "instrumentation_errors": self.instrumentation_errors,
                "last_instrumentation_error": self.last_instrumentation_error}

    def _error(self, where: str, e: Exception) -> None:
        with self._lock:
            self.instrumentation_errors += 1
            self.last_instrumentation_error = f"{where}: {type(e).__name__}: {e}"
        log.debug("acsr instrumentation error in %s", where, exc_info=e)

    def _clean(self, key: str, value):
        if self.redact is not None and isinstance(value, str) and key in REDACTED_ATTRIBUTES:
            return self.redact(value)
        return value


class _Counting(SpanProcessor):
    """Counts the spans that ended, so spans lost before the exporter (a full queue) show in `stats()`."""

    def __init__(self):
        self.count = 0
        self._lock = threading.Lock()

    def on_end(self, span) -> None:
        with self._lock:
            self.count += 1


class Conversation:
    """Attributes shared by every span of a conversation; `turn()` opens one turn of it."""

    def __init__(self, inst: Instrumentation, conversation_id: str, *, customer_id=None, case_id=None, mode=None,
                 strategy=None):
        self._inst = inst
        self.conversation_id, self.customer_id, self.case_id = conversation_id, customer_id, case_id
        self.mode, self.strategy = mode, strategy

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def _common(self) -> dict:
        return {sc.CONVERSATION_ID: self.conversation_id, sc.CUSTOMER_ID: self.customer_id,
                sc.CASE_ID: self.case_id, sc.MODE: self.mode, sc.STRATEGY: self.strategy}

    @contextlib.contextmanager
    def turn(self, number: int, *, start: datetime | None = None):
        """The turn's `invoke_agent` span; every decision point inside it is a child span."""
        span = None
        try:
            attrs = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": self._inst.agent_name,
                     sc.TURN: int(number), **self._common()}
            span = self._inst.tracer.start_span(f"invoke_agent {self._inst.agent_name}", kind=trace.SpanKind.INTERNAL,
                                                attributes=_set(attrs), start_time=_ns(start))
        except Exception as e:  # noqa: BLE001
            self._inst._error("turn", e)
        turn = Turn(self, int(number), span)
        try:
            yield turn
        finally:
            try:
                if span is not None:
                    span.end(end_time=_ns(turn.last_ts))
            except Exception as e:  # noqa: BLE001
                self._inst._error("turn end", e)

    @_guarded
    def human_override(self, *, stage: str, outcome: str, reviewer_id: str, agent_decision: str | None = None,
                       agent_confidence: float | None = None, human_decision: str | None = None,
                       rationale: str | None = None, policy_clause_id: str | None = None,
                       evidence: str | None = None, override_id: str | None = None, ts: datetime | None = None,
                       case_id: str | None = None) -> None:
        """A human review with its triad: the agent's decision and confidence, the human's decision and
        rationale, and what grounds it (policy clause, evidence). For an action-stage review, a decision may
        be a tool call as JSON (`{"name": ..., "arguments": {...}}`) or a tool name."""
        if stage not in OVERRIDE_STAGES:
            raise ValueError(f"stage {stage!r} not in {OVERRIDE_STAGES}")
        if outcome not in OVERRIDE_OUTCOMES:
            raise ValueError(f"outcome {outcome!r} not in {OVERRIDE_OUTCOMES}")
        attrs = {sc.EVENT_TYPE: sc.HUMAN_OVERRIDE, sc.CONVERSATION_ID: self.conversation_id,
                 sc.CASE_ID: case_id if case_id is not None else self.case_id, sc.OVERRIDE_ID: override_id,
                 sc.OVERRIDE_REVIEWER: reviewer_id, sc.OVERRIDE_STAGE: stage,
                 sc.OVERRIDE_AGENT_DECISION: _decision(agent_decision), sc.OVERRIDE_AGENT_CONFIDENCE: agent_confidence,
                 sc.OVERRIDE_HUMAN_DECISION: _decision(human_decision), sc.OVERRIDE_RATIONALE: rationale,
                 sc.OVERRIDE_POLICY_CLAUSE: policy_clause_id, sc.OVERRIDE_EVIDENCE: evidence,
                 sc.OVERRIDE_OUTCOME: outcome}
        attrs = {k: self._inst._clean(k, v) for k, v in attrs.items()}
        t = _ns(ts)
        span = self._inst.tracer.start_span("acsr.human_override", attributes=_set(attrs), start_time=t)
        span.end(end_time=t)


class Turn:
    """The decision points of one turn. Every method takes, besides its own fields: `ts` (when the step
    finished; default now), `latency_ms`, `event_id` (default: the span id), `case_id`, `model`,
    `input_tokens`, `output_tokens`, `cost_usd`."""

    def __init__(self, conv: Conversation, number: int, span):
        self._conv, self._inst, self.number, self.span = conv, conv._inst, number, span
        self.last_ts: datetime | None = None

    def _emit(self, name: str, event_type: str, attrs: dict, *, ts=None, latency_ms=None, event_id=None,
              case_id=None, model=None, input_tokens=None, output_tokens=None, cost_usd=None, error=None,
              operation: str | None = None) -> None:
        common = self._conv._common()
        if case_id is not None:
            common[sc.CASE_ID] = case_id
        all_attrs = {**common, sc.TURN: self.number, sc.EVENT_TYPE: event_type, sc.EVENT_ID: event_id,
                     "gen_ai.operation.name": operation, sc.MODEL: model, sc.INPUT_TOKENS: input_tokens,
                     sc.OUTPUT_TOKENS: output_tokens, sc.COST_USD: cost_usd,
                     sc.LATENCY_MS: None if latency_ms is None else float(latency_ms), **attrs}
        all_attrs = {k: self._inst._clean(k, v) for k, v in all_attrs.items()}
        end = _ns(ts) if ts is not None else time.time_ns()  # a point in time: no measured duration
        start = end - round(latency_ms * 1_000_000) if latency_ms else end
        ctx = trace.set_span_in_context(self.span) if self.span is not None else None
        kind = trace.SpanKind.CLIENT if operation in ("chat", "execute_tool", "retrieval") else trace.SpanKind.INTERNAL
        span = self._inst.tracer.start_span(name, context=ctx, kind=kind, attributes=_set(all_attrs), start_time=start)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=end)
        if ts is not None:
            self.last_ts = ts

    @_guarded
    def customer_message(self, text: str, **kw) -> None:
        self._emit("acsr.customer_message", "customer_message", {sc.TEXT: text}, **kw)

    @_guarded
    def intent(self, intent: str, confidence: float | None = None, **kw) -> None:
        """After intent classification: the label and the classifier's confidence in [0, 1]."""
        if confidence is not None and not 0 <= confidence <= 1:
            raise ValueError(f"confidence {confidence} outside [0, 1]")
        self._emit("acsr.intent_classified", "intent_classified",
                   {sc.INTENT: intent, sc.INTENT_CONFIDENCE: None if confidence is None else float(confidence)}, **kw)

    @_guarded
    def knowledge_query(self, query: str | None, results: Iterable[tuple[str, float]] = (), *,
                        data_source: str = "kb", **kw) -> None:
        """A knowledge-base query with its scored results, best first: [(article_id, score)]."""
        docs = json.dumps([{"id": str(a), "score": float(s)} for a, s in results], separators=(",", ":"))
        self._emit(f"retrieval {data_source}", "kb_query", {sc.KB_QUERY: query, sc.KB_RESULTS: docs,
                                                            "gen_ai.data_source.id": data_source},
                   operation="retrieval", **kw)

    @_guarded
    def policy_check(self, policy_id: str, outcome: str, **kw) -> None:
        """After a policy check: the clause checked and its outcome (pass, fail, waived)."""
        if outcome not in POLICY_OUTCOMES:
            raise ValueError(f"policy outcome {outcome!r} not in {POLICY_OUTCOMES}")
        self._emit("acsr.policy_check", "policy_check", {sc.POLICY_ID: policy_id, sc.POLICY_OUTCOME: outcome}, **kw)

    @_guarded
    def action_proposed(self, action: str, arguments: Mapping | None = None, status: str | None = "proposed",
                        **kw) -> None:
        """A back-end action the agent decided on, before it runs (or while a human must approve it)."""
        self._emit(f"acsr.action_proposed {action}", "action_proposed", _action(action, arguments, status), **kw)

    @_guarded
    def action_executed(self, action: str, arguments: Mapping | None = None, status: str | None = "ok",
                        **kw) -> None:
        """After a back-end action: what ran, with which arguments, and what the back end answered."""
        self._emit(f"execute_tool {action}", "action_executed", _action(action, arguments, status),
                   operation="execute_tool", **kw)

    @_guarded
    def response(self, text: str, **kw) -> None:
        """The agent's words to the customer (`chat` span, with the model and token usage)."""
        model = kw.get("model")
        self._emit(f"chat {model}" if model else "chat", "agent_response", {sc.TEXT: text}, operation="chat", **kw)

    @_guarded
    def suggestion_shown(self, text: str | None, article_id: str | None = None, score: float | None = None,
                         **kw) -> None:
        docs = json.dumps([{"id": article_id, "score": float(score or 0.0)}]) if article_id else None
        self._emit("acsr.suggestion_shown", "suggestion_shown", {sc.TEXT: text, sc.KB_RESULTS: docs}, **kw)

    @_guarded
    def suggestion_clicked(self, url: str | None, dwell_ms: int | None = None, **kw) -> None:
        self._emit("acsr.link_clicked", "link_clicked", {sc.TEXT: url, sc.DWELL_MS: dwell_ms}, **kw)

    @_guarded
    def suggestion_dismissed(self, dwell_ms: int | None = None, **kw) -> None:
        self._emit("acsr.suggestion_dismissed", "suggestion_dismissed", {sc.DWELL_MS: dwell_ms}, **kw)

    @_guarded
    def thumbs(self, rating: int, **kw) -> None:
        if rating not in (1, -1):
            raise ValueError("rating must be 1 or -1")
        self._emit("acsr.thumbs", "thumbs", {sc.RATING: int(rating)}, **kw)

    @_guarded
    def escalated(self, text: str | None = None, **kw) -> None:
        """The conversation handed to a person (the hand-over message, if any)."""
        self._emit("acsr.escalated", "escalated", {sc.TEXT: text}, **kw)

    @_guarded
    def fallback(self, text: str | None = None, **kw) -> None:
        self._emit("acsr.fallback", "fallback", {sc.TEXT: text}, **kw)

    @_guarded
    def error(self, error_type: str, message: str | None = None, **kw) -> None:
        self._emit("acsr.error", "error", {sc.ERROR_TYPE: error_type, sc.ERROR_MESSAGE: message},
                   error=message or error_type, **kw)


def _action(action: str, arguments, status) -> dict:
    args = arguments if isinstance(arguments, str) or arguments is None else json.dumps(
        dict(arguments), separators=(",", ":"), sort_keys=False)
    return {sc.ACTION: action, sc.ACTION_ARGS: args, sc.ACTION_STATUS: status}


def _decision(value):
    """A decision as a string: tool calls (dicts) as compact JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _set(attrs: dict) -> dict:
    """Only the attributes that have a value (OpenTelemetry attributes cannot be None)."""
    return {k: v for k, v in attrs.items() if v is not None}


def _version() -> str:
    from acsr_instrumentation import __version__

    return __version__
