"""The source systems a nightly run can pull, and the pull task's work: pull the day, then map it.

A system is a module with `make_puller(settings, connection)` and a built-in mapping file
(`mappings/<system>.yaml`). ACSR_SOURCES names the configured ones (`zendesk+otlp` or `zendesk,otlp`); each gets
a pull task before `land`, reading the Airflow connection `acsr_<system>` (docs/sources.md)."""

from __future__ import annotations

import importlib
import logging
import re

from feedback_loop.lake.files import Lake
from feedback_loop.settings import Settings
from feedback_loop.sources import mapping, mapping_file, pull

log = logging.getLogger(__name__)

# system -> (module, whether it needs an Airflow connection)
SYSTEMS: dict[str, tuple[str, bool]] = {
    "zendesk": ("feedback_loop.sources.zendesk", True),
    "otlp": ("feedback_loop.sources.otlp", False),
    "intercom": ("feedback_loop.sources.intercom", True),
    "salesforce": ("feedback_loop.sources.salesforce", True),
    "langfuse": ("feedback_loop.sources.langfuse", True),
}
ALIASES = {"otel": "otlp", "opentelemetry": "otlp"}


def connection_id(system: str) -> str:
    return f"acsr_{system}"


def configured(settings: Settings) -> list[str]:
    """The systems named in ACSR_SOURCES, in order, validated."""
    names = [ALIASES.get(n.strip().lower(), n.strip().lower()) for n in re.split(r"[+,\s]+", settings.sources or "")]
    names = list(dict.fromkeys(n for n in names if n))
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        raise ValueError(f"ACSR_SOURCES names unknown system(s) {', '.join(unknown)}; known: {', '.join(SYSTEMS)}")
    return names


def module(system: str):
    mod = importlib.import_module(SYSTEMS[system][0])  # registers the system's derived streams too
    return mod


def pull_system(settings: Settings, system: str, dt: str, state=None) -> dict:
    """Pull the system's day (pull.run_pull), map it into the contract's landing files (mapping.map_day),
    record both under `<lake>/runs/dt=D/pull/<system>.json`."""
    mod = module(system)
    conn = pull.get_connection(connection_id(system)) if SYSTEMS[system][1] else None
    puller = mod.make_puller(settings, conn)
    result = pull.run_pull(settings, puller, dt, state=state).as_dict()
    mapped = mapping.map_day(settings, system, dt)
    doc = {**result, "mapped": mapped}
    Lake(settings.lake).write_json(doc, "runs", f"dt={dt}", "pull", f"{system}.json")
    return doc


def map_system(settings: Settings, system: str, dt: str) -> dict:
    """Map an already pulled day again (after changing a mapping), without fetching anything."""
    module(system)
    return mapping.map_day(settings, system, dt)


def check_source_day(settings: Settings, source: str, dt: str) -> list[str]:
    """Raise IncompleteDayError when a configured system that feeds `source` has no complete pull of the
    day; returns the systems that feed it."""
    feeding = []
    for system in configured(settings):
        module(system)
        if source in mapping_file.sources_fed_by(system, settings):
            pull.require_complete(settings, system, dt)
            feeding.append(system)
    return feeding
