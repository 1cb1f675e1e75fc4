"""Label Studio, the annotation tool of the review queue: the labelling config, the tasks, and the
conversion of its JSON export back into rows of the `overrides` source.

Round trip:
1. the nightly queue writes `<lake>/review/dt=<day>/label_studio_tasks.json` (import it into a Label
   Studio project whose labelling interface is `<lake>/review/label_studio_config.xml`);
2. reviewers answer: a verdict (agent right / wrong / should have escalated), the correct intent, the
   correct action, a rationale, the policy clause and any evidence;
3. the project's JSON export (Export > JSON) is dropped into `<landing>/label_studio/dt=<day>/`;
4. before the night lands `overrides`, `convert_exports` turns each export into
   `<landing>/overrides/dt=<day>/label_studio-<hash>.jsonl` (atomic, same name and bytes on a re-run):
   one `intent` override per answer (an `action` override when a correct action was given, a `response`
   override when a better answer was written: a preference pair downstream), with
   the agent's decision and confidence from the task, the human's decision and rationale, the policy
   clause and evidence. From there the contract decides like for any other override: a correction
   without the full triad is quarantined as `incomplete_triad` with what is missing, an answer without a
   verdict or reviewer fails the `outcome` / `reviewer_id` checks, and complete ones reach the relabel and
   preference datasets.

A file that is not a Label Studio JSON export stops the `overrides` land task with the file and the
problem named (nothing of it is landed); skipped (cancelled) annotations and unanswered tasks are counted in
`<lake>/runs/dt=<day>/label_studio.json`, never turned into overrides.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from xml.sax.saxutils import quoteattr

from feedback_loop.lake.files import Lake, is_remote, join, write_bytes_atomic
from feedback_loop.settings import Settings

log = logging.getLogger(__name__)

SOURCE = "label_studio"  # the landing folder of the exports
PREFIX = "label_studio-"  # the converted files in the overrides folder
VERDICTS = {"agent_correct": "approved", "agent_wrong": "corrected", "should_escalate": "escalated"}
BANKING77 = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "banking77", "categories.json")


class ReviewImportError(ValueError):
    """A file in the Label Studio landing folder that is not a Label Studio JSON export."""


# ------------------------------------------------------------------------------------------------ config and tasks


def intent_labels(facts: list[dict] | None = None) -> list[str]:
    """The intents a reviewer can choose: Banking77's, plus any the live agent used that it lacks."""
    with open(BANKING77, encoding="utf-8") as fh:
        labels = set(json.load(fh))
    labels |= {r["final_intent"] for r in facts or [] if r.get("final_intent")}
    return sorted(labels)


def labeling_config(intents: list[str]) -> str:
    """Label Studio's labelling interface (XML): the message and the agent's decision, why it was picked,
    then the verdict, the correct intent, the correct action, the rationale, the policy clause, evidence."""
    choices = "\n".join(f"      <Choice value={quoteattr(i)}/>" for i in intents)
    return f"""<View>
  <Header value="Why you are asked: $reason"/>
  <Text name="message" value="$message"/>
  <Header value="Agent: intent $agent_intent (confidence $agent_confidence), actions: $agent_actions; policies checked: $policy_ids"/>
  <Choices name="verdict" toName="message" choice="single" required="true" showInline="true">
    <Choice value="agent_correct" hint="the agent's intent and action were right"/>
    <Choice value="agent_wrong" hint="correct the intent and/or the action below"/>
    <Choice value="should_escalate" hint="a person should have taken over"/>
  </Choices>
  <View visibleWhen="choice-selected" whenTagName="verdict" whenChoiceValue="agent_wrong">
    <Header value="Correct intent"/>
    <Choices name="intent" toName="message" choice="single">
{choices}
    </Choices>
    <Header value="Correct action (the back-end action the agent should have taken, if different)"/>
    <TextArea name="correct_action" toName="message" maxSubmissions="1" rows="1"/>
    <Header value="The agent answered: $agent_response"/>
    <Header value="A better answer (optional: becomes a preference pair for the reasoning model)"/>
    <TextArea name="better_response" toName="message" maxSubmissions="1" rows="3"/>
  </View>
  <Header value="Rationale (required for a correction)"/>
  <TextArea name="rationale" toName="message" maxSubmissions="1" rows="3"/>
  <Header value="Policy clause that applies (id), or evidence below"/>
  <TextArea name="policy_clause" toName="message" maxSubmissions="1" rows="1"/>
  <TextArea name="evidence" toName="message" maxSubmissions="1" rows="2"/>
</View>
"""


def tasks(picked: list[dict], dt: str) -> list[dict]:
    """The queue as Label Studio tasks (import format): `data` for the interface, the agent's intent as a
    prediction so reviewers start from it."""
    out = []
    for p in picked:
        conf = p.get("final_confidence")
        data = {"conversation_id": p["conversation_id"], "case_id": p.get("case_id"), "queue_date": dt,
                "rank": p["rank"], "message": p.get("message") or "", "agent_intent": p.get("final_intent"),
                "agent_confidence": None if conf is None else round(float(conf), 4),
                "agent_response": p.get("agent_response") or "",
                "agent_actions": ", ".join(p.get("actions_executed") or []) or "none",
                "policy_ids": ", ".join(p.get("policy_ids") or []) or "none", "channel": p.get("channel"),
                "reasons": list(p["reasons"]), "reason": p["reason"]}
        task = {"data": data}
        if p.get("final_intent"):
            task["predictions"] = [{"model_version": "acsr-agent", "score": data["agent_confidence"],
                                    "result": [{"from_name": "intent", "to_name": "message", "type": "choices",
                                                "value": {"choices": [p["final_intent"]]}}]}]
        out.append(task)
    return out


# ------------------------------------------------------------------------------------------------ export -> overrides


def _answers(result: list) -> dict:
    """{from_name: value} of one annotation's result list (choices -> first choice, textarea -> text)."""
    out = {}
    for item in result or []:
        if not isinstance(item, dict):
            continue
        name, value = item.get("from_name"), item.get("value") or {}
        if value.get("choices"):
            out[name] = str(value["choices"][0])
        elif "text" in value:
            text = value["text"]
            text = " ".join(str(t) for t in text) if isinstance(text, list) else str(text)
            out[name] = text.strip() or None
    return out


def _reviewer(completed_by) -> str | None:
    if isinstance(completed_by, dict):
        return str(completed_by.get("email") or completed_by.get("id") or "") or None
    return None if completed_by in (None, "") else f"label-studio-user-{completed_by}"


def overrides_from_export(doc, name: str = "export") -> tuple[list[dict], dict]:
    """Override rows (the contract's fields, plus where they came from) of one Label Studio JSON export."""
    if not isinstance(doc, list) or any(not isinstance(t, dict) or "data" not in t for t in doc):
        raise ReviewImportError(f"{name}: not a Label Studio JSON export (a list of tasks with 'data' and "
                                "'annotations')")
    rows, report = [], {"tasks": len(doc), "answered": 0, "unanswered": 0, "skipped": 0, "rows": 0}
    for task in doc:
        data = task.get("data") or {}
        anns = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
        live = [a for a in anns if not a.get("was_cancelled")]
        report["skipped"] += len(anns) - len(live)
        if not live:
            report["unanswered"] += 1
            continue
        for ann in live:
            report["answered"] += 1
            a = _answers(ann.get("result"))
            verdict = a.get("verdict")
            outcome = VERDICTS.get(verdict)
            intent = a.get("intent") or (data.get("agent_intent") if verdict == "agent_correct" else None)
            common = {
                "ts": ann.get("updated_at") or ann.get("created_at"),
                "conversation_id": data.get("conversation_id"), "case_id": data.get("case_id"),
                "reviewer_id": _reviewer(ann.get("completed_by")),
                "agent_confidence": data.get("agent_confidence"),
                "rationale": a.get("rationale"), "policy_clause_id": a.get("policy_clause"),
                "evidence": a.get("evidence"), "outcome": outcome,
                "review_source": "label_studio", "label_studio_task_id": task.get("id"),
                "label_studio_annotation_id": ann.get("id"), "label_studio_verdict": verdict,
                "review_queue_date": data.get("queue_date"), "review_queue_reasons": data.get("reasons"),
            }
            key = f"ls-{task.get('id')}-{ann.get('id')}"
            rows.append({"override_id": f"{key}-intent", **common, "stage": "intent",
                         "agent_decision": data.get("agent_intent"), "human_decision": intent})
            if a.get("better_response"):
                rows.append({"override_id": f"{key}-response", **common, "stage": "response",
                             "agent_decision": data.get("agent_response") or None,
                             "human_decision": a["better_response"]})
            if a.get("correct_action"):
                rows.append({"override_id": f"{key}-action", **common, "stage": "action",
                             "agent_decision": data.get("agent_actions"), "human_decision": a["correct_action"]})
    report["rows"] = len(rows)
    return rows, report


def _export_files(settings: Settings, dt: str) -> list[str]:
    folder = join(settings.landing, SOURCE, f"dt={dt}")
    if is_remote(folder) or not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                  if n.lower().endswith(".json") and not n.startswith((".", "_")))


def convert_exports(settings: Settings, dt: str) -> dict:
    """Turn the day's Label Studio exports into override files in the overrides landing folder."""
    exports = _export_files(settings, dt)
    target_dir = join(settings.landing, "overrides", f"dt={dt}")
    if is_remote(target_dir):
        if exports:
            raise ReviewImportError("Label Studio exports are converted on a local landing area only")
        return {"dt": dt, "exports": []}
    wanted, reports = set(), []
    for path in exports:
        with open(path, "rb") as fh:
            raw = fh.read()
        try:
            doc = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ReviewImportError(f"{path}: not valid JSON ({exc})") from exc
        rows, report = overrides_from_export(doc, path)
        name = f"{PREFIX}{os.path.basename(path).rsplit('.', 1)[0]}-{hashlib.sha256(raw).hexdigest()[:10]}.jsonl"
        wanted.add(name)
        body = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows)
        write_bytes_atomic(join(target_dir, name), body.encode())
        reports.append({"export": path, "converted": join(target_dir, name), **report})
    if os.path.isdir(target_dir):  # an export removed or replaced: its old conversion must not land again
        for old in os.listdir(target_dir):
            if old.startswith(PREFIX) and old not in wanted:
                os.remove(os.path.join(target_dir, old))
    out = {"dt": dt, "exports": reports}
    if reports:
        Lake(settings.lake).write_json(out, "runs", f"dt={dt}", "label_studio.json")
        log.info("label studio %s: %s", dt, [(r["export"], r["answered"], r["rows"]) for r in reports])
    return out


def write_config(settings: Settings, intents: list[str] | None = None) -> str:
    path = join(settings.lake, "review", "label_studio_config.xml")
    write_bytes_atomic(path, labeling_config(intents or intent_labels()).encode())
    return path

