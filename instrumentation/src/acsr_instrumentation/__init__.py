"""Instrument a customer-support agent for the ACSR feedback loop: one OpenTelemetry span per decision point.

Depends only on opentelemetry-api/-sdk. See docs/instrumentation.md of the feedback-loop project."""

__version__ = "0.1.0"

from acsr_instrumentation import semconv
from acsr_instrumentation.agent import Conversation, Instrumentation, Turn
from acsr_instrumentation.otlp_json import OtlpJsonFileExporter, SafeExporter, encode_spans

__all__ = ["Conversation", "Instrumentation", "OtlpJsonFileExporter", "SafeExporter", "Turn", "encode_spans",
           "semconv"]
