"""The sample agent: a deterministic support agent instrumented with `acsr_instrumentation`.

It shows the path an adopter builds: the agent calls the instrumentation at each decision point, spans go to
OTLP JSON files, the trace pull (`feedback_loop.sources.otlp_acsr`) turns them into contract rows in the
landing area, and the nightly run takes it from there.

Its "models" are scripted: the classifier, retriever, policy engine, back end and response writer of each
conversation answer what the sample generator decided for that conversation (Banking77 intents and
utterances, the ABCD knowledge base and policies, `feedback_loop_sample.generator`), read from the
generator's day. So the agent's traffic is the generator's day, emitted the way a real agent would emit it,
and the two can be compared row by row (tests/sources/test_instrumented_agent.py). The reviewers'
decisions are logged through the same package (`human_override`), as a review tool would.

Rows the agent cannot replay (a planted defect: not JSON, a timestamp without offset, a confidence out of
range, a turn that is not a number) are kept, as they were, in `<landing>/<source>/dt=<day>/unreplayable.jsonl`
beside the pull's file: nothing is lost, and the quality stage still quarantines them with a reason.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from datetime import datetime
from itertools import groupby
from pathlib import Path

from acsr_instrumentation import Instrumentation

INSTRUMENTED_SOURCES = ("agent_events", "overrides")
LEFTOVER = "unreplayable.jsonl"
COMMON = ("ts", "latency_ms", "event_id", "case_id", "model", "input_tokens", "output_tokens", "cost_usd")


def _rows(folder: Path) -> list[tuple[str, dict | None]]:
    """(line, parsed object or None) of every JSON Lines file of a landing partition, in file order."""
    out = []
    for f in sorted(folder.glob("*.jsonl*")):
        opener = gzip.open if f.suffix == ".gz" else open
        with opener(f, "rt", encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    obj = None
                out.append((line if line.endswith("\n") else line + "\n", obj if isinstance(obj, dict) else None))
    return out


def _ts(value) -> datetime:
    ts = datetime.fromisoformat(value)
    if ts.tzinfo is None:
        raise ValueError(f"timestamp without offset: {value!r}")
    return ts


class SampleAgent:
    """Handles conversations turn by turn, calling the instrumentation at every decision point."""

    def __init__(self, inst: Instrumentation):
        self.inst = inst

    def _call(self, turn, ev: dict) -> None:
        """One decision point: the step the scripted models took, reported with what they answered."""
        kw = {k: ev.get(k) for k in COMMON}
        kw["ts"] = _ts(ev["ts"])
        et = ev["event_type"]
        if et == "customer_message":
            turn.customer_message(ev.get("text"), **kw)
        elif et == "intent_classified":
            turn.intent(ev.get("intent"), ev.get("confidence"), **kw)
        elif et == "kb_query":
            turn.knowledge_query(ev.get("kb_query"), [(r["article_id"], r["score"]) for r in ev.get("kb_results") or []],
                                 **kw)
        elif et == "policy_check":
            turn.policy_check(ev.get("policy_id"), ev.get("policy_outcome"), **kw)
        elif et == "action_proposed":
            turn.action_proposed(ev.get("action"), ev.get("action_args"), ev.get("action_status"), **kw)
        elif et == "action_executed":
            turn.action_executed(ev.get("action"), ev.get("action_args"), ev.get("action_status"), **kw)
        elif et == "agent_response":
            turn.response(ev.get("text"), **kw)
        elif et == "suggestion_shown":
            top = (ev.get("kb_results") or [{}])[0]
            turn.suggestion_shown(ev.get("text"), top.get("article_id"), top.get("score"), **kw)
        elif et == "link_clicked":
            turn.suggestion_clicked(ev.get("text"), ev.get("dwell_ms"), **kw)
        elif et == "suggestion_dismissed":
            turn.suggestion_dismissed(ev.get("dwell_ms"), **kw)
        elif et == "thumbs":
            turn.thumbs(ev.get("rating"), **kw)
        elif et == "escalated":
            turn.escalated(ev.get("text"), **kw)
        elif et == "fallback":
            turn.fallback(ev.get("text"), **kw)
        elif et == "error":
            turn.error(ev.get("error_type"), ev.get("error_message"), **kw)
        else:
            raise ValueError(f"event type {et!r} is no decision point of this agent")

    def conversation(self, events: list[dict]) -> list[dict]:
        """Run one conversation (its steps in time order); return the steps it could not report."""
        first = events[0]
        failed = []
        with self.inst.conversation(first["conversation_id"], customer_id=first.get("customer_id"),
                                    mode=first.get("mode"), strategy=first.get("strategy")) as conv:
            for number, steps in groupby(events, key=lambda e: e["turn"]):
                steps = list(steps)
                with conv.turn(int(number), start=_ts(steps[0]["ts"])) as turn:
                    for ev in steps:
                        before = self.inst.instrumentation_errors
                        try:
                            self._call(turn, ev)
                        except (KeyError, TypeError, ValueError):
                            failed.append(ev)
                            continue
                        if self.inst.instrumentation_errors != before:
                            failed.append(ev)
        return failed

    def review(self, o: dict) -> None:
        self.inst.human_override(
            o["conversation_id"], case_id=o.get("case_id"), stage=o["stage"], outcome=o["outcome"],
            reviewer_id=o["reviewer_id"], agent_decision=o.get("agent_decision"),
            agent_confidence=o.get("agent_confidence"), human_decision=o.get("human_decision"),
            rationale=o.get("rationale"), policy_clause_id=o.get("policy_clause_id"), evidence=o.get("evidence"),
            override_id=o.get("override_id"), ts=_ts(o["ts"]))


def _replayable_event(o: dict) -> bool:
    return (isinstance(o.get("conversation_id"), str) and isinstance(o.get("ts"), str)
            and isinstance(o.get("event_type"), str) and isinstance(o.get("turn"), int)
            and not isinstance(o.get("turn"), bool))


def run_day(script_landing: str | os.PathLike, day: str, traces_dir: str | os.PathLike,
            redact=None) -> dict:
    """The agent's traffic of `day` (scripted by the generator's landing files of that day) as OTLP JSON files
    in `traces_dir`. Returns the instrumentation's counters and the lines it could not replay."""
    script = Path(script_landing)
    inst = Instrumentation.to_directory(traces_dir, service_name="acsr-sample-agent", redact=redact)
    agent = SampleAgent(inst)
    leftover = {s: [] for s in INSTRUMENTED_SOURCES}
    rows = _rows(script / "agent_events" / f"dt={day}")
    good = []
    for line, o in rows:
        if o is not None and _replayable_event(o):
            try:
                good.append((_ts(o["ts"]), o, line))
                continue
            except ValueError:
                pass
        leftover["agent_events"].append(line)
    # Conversations in the order they started; each conversation's steps in time order.
    good.sort(key=lambda t: (t[1]["conversation_id"], t[0], t[1].get("event_id") or ""))
    lines_of = {id(o): line for _, o, line in good}
    convs = [[o for _, o, _ in g] for _, g in groupby(good, key=lambda t: t[1]["conversation_id"])]
    convs.sort(key=lambda evs: (_ts(evs[0]["ts"]), evs[0]["conversation_id"]))
    for events in convs:
        for ev in agent.conversation(events):
            leftover["agent_events"].append(lines_of[id(ev)])
    for line, o in _rows(script / "overrides" / f"dt={day}"):
        before = inst.instrumentation_errors
        try:
            if o is None:
                raise ValueError("not a JSON object")
            agent.review(o)
        except (KeyError, TypeError, ValueError):
            leftover["overrides"].append(line)
            continue
        if inst.instrumentation_errors != before:
            leftover["overrides"].append(line)
    inst.shutdown()
    return {"stats": inst.stats(), "leftover": leftover, "conversations": len(convs)}


def through_instrumentation(landing: str | os.PathLike, day: str, traces_root: str | os.PathLike) -> dict:
    """Replace the generator's agent_events and overrides of `day` in `landing` by the sample agent's: the
    generator's files become the agent's script, its instrumented traffic goes to
    `<traces_root>/dt=<day>/` as OTLP JSON, and the pull converts that into the landing partitions. A day
    already replayed is left as it is (a re-run changes nothing)."""
    from feedback_loop.sources.otlp_acsr import FILE_NAME, convert

    landing = Path(landing)
    traces = Path(traces_root) / f"dt={day}"
    if not any(f.name not in (FILE_NAME, LEFTOVER) for s in INSTRUMENTED_SOURCES
               for f in (landing / s / f"dt={day}").glob("*")):
        return {"day": day, "traces": str(traces), "skipped": "no generator files: replayed already"}
    shutil.rmtree(traces, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="acsr-agent-script-") as script:
        originals = {}
        for source in INSTRUMENTED_SOURCES:  # copied, not moved: a crash here leaves the landing as it was
            src = landing / source / f"dt={day}"
            originals[source] = [f for f in src.glob("*") if f.name not in (FILE_NAME, LEFTOVER)] if src.exists() else []
            for f in originals[source]:
                (Path(script) / source / f"dt={day}").mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, Path(script) / source / f"dt={day}" / f.name)
        run = run_day(script, day, traces)
        pulled = convert(sorted(traces.glob("*.jsonl")), landing, day=day)
        for source, lines in run["leftover"].items():
            if not originals[source]:  # replayed already (or nothing generated): its files stay as they are
                continue
            folder = landing / source / f"dt={day}"
            folder.mkdir(parents=True, exist_ok=True)
            if lines:
                tmp = folder / f".{LEFTOVER}.tmp"
                tmp.write_text("".join(lines), encoding="utf-8")
                os.replace(tmp, folder / LEFTOVER)
            else:
                (folder / LEFTOVER).unlink(missing_ok=True)
            for f in originals[source]:  # the agent's rows are in place: the generator's files go
                f.unlink()
    return {"day": day, "traces": str(traces), "conversations": run["conversations"], **run["stats"],
            "rows": pulled["rows"], "skipped_spans": pulled["skipped"],
            "unreplayable": {s: len(v) for s, v in run["leftover"].items()}}
