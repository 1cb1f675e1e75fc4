"""Learning from what the agent does: action- and policy-stage corrections and failed outcome checks become
tool-calling training data (`tool_sft`, `tool_preference`, `tool_kto`).

- The tools offered in every example are the window's catalogue: each back-end action the agent called, with
  a JSON Schema inferred from the arguments it was called with (`catalogue`), plus two decisions every support
  agent makes: `escalate_to_human` and `policy_decision`.
- An action-stage correction: the agent's call (its `action_executed` / `action_proposed` event) against the
  reviewer's, written in `human_decision` as a tool call in JSON (`{"name": ..., "arguments": {...}}`), a bare
  tool name (the agent's arguments that the tool takes are kept), or `escalate_to_human`.
- A policy-stage correction: `policy_decision(policy_id, outcome)` with the agent's outcome rejected and the
  reviewer's chosen (`waive` -> `waived`).
- A failed outcome check (the refund that was never issued): the executed call, labelled undesirable.

The prompt is what the agent had seen when it decided: the system message (with the policy clauses checked so
far and the clause the reviewer cited) and the conversation up to the last customer message before the call.
Every example carries its provenance (override or check, reviewer, stage, policy clause) in provenance.jsonl.
Formats: docs/datasets.md.
"""

from __future__ import annotations

import json
import re

from feedback_loop.datasets.curation import Example

# The records' key of a tool-calling example's provenance (override or check, reviewer, policy clause, the
# calls): kept with the records, which wait on disk (candidates._Spill), not in memory with the candidate.
PROVENANCE = "provenance"
ESCALATE = "escalate_to_human"
POLICY = "policy_decision"
BUILTIN_TOOLS = {
    ESCALATE: {"description": "Hand the conversation over to a human agent.",
               "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}, "required": ["reason"]}},
    POLICY: {"description": "Record the decision on a policy clause for this request.",
             "parameters": {"type": "object", "properties": {
                 "policy_id": {"type": "string"}, "outcome": {"type": "string", "enum": ["pass", "fail", "waived"]}},
                 "required": ["policy_id", "outcome"]}},
}
POLICY_WORDS = {"pass": "pass", "passed": "pass", "approve": "pass", "approved": "pass", "allow": "pass",
                "fail": "fail", "failed": "fail", "deny": "fail", "denied": "fail", "reject": "fail",
                "waive": "waived", "waived": "waived", "exception": "waived"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_JSON_TYPES = {"VARCHAR": "string", "BIGINT": "integer", "UBIGINT": "integer", "DOUBLE": "number",
               "BOOLEAN": "boolean", "OBJECT": "object", "ARRAY": "array"}


def catalogue(con) -> dict:
    """{tool name: {description, parameters}} of the actions called in the window (view `ev`), with
    each argument's JSON type as seen and `required` = the arguments present (non-null) in every call."""
    rows = con.execute("""
    WITH a AS (SELECT action, action_args FROM ev
               WHERE event_type IN ('action_proposed', 'action_executed') AND action IS NOT NULL
                 AND json_type(action_args) = 'OBJECT'),
    n AS (SELECT action, count(*) AS calls FROM a GROUP BY action),
    k AS (SELECT action, unnest(json_keys(action_args)) AS key, action_args FROM a)
    SELECT k.action, n.calls, k.key,
           list_sort(list_distinct(list(json_type(k.action_args, '$."' || replace(k.key, '"', '') || '"')))) AS types,
           count(*) FILTER (json_type(k.action_args, '$."' || replace(k.key, '"', '') || '"') <> 'NULL') AS present
    FROM k JOIN n USING (action) GROUP BY ALL ORDER BY k.action, k.key""").fetchall()
    tools: dict = {}
    for action, calls, key, types, present in rows:
        t = tools.setdefault(action, {"description": f"Back-end action {action} (arguments as the agent calls it).",
                                      "parameters": {"type": "object", "properties": {}, "required": []}})
        kinds = sorted({_JSON_TYPES.get(x, "string") for x in types if x != "NULL"})
        prop = {"type": kinds[0] if len(kinds) == 1 else kinds} if kinds else {}
        t["parameters"]["properties"][key] = prop
        if present == calls:
            t["parameters"]["required"].append(key)
    for name, spec in BUILTIN_TOOLS.items():
        tools.setdefault(name, spec)
    return dict(sorted(tools.items()))


_PY_JSON_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), (dict, "object"),
                  (list, "array"))


def offered(tools: dict, *calls: dict | None) -> dict:
    """The catalogue plus every tool an example's calls name: a reviewer may choose an action the agent never
    called in the window, and a trainer's validator refuses a call to a tool that is not offered."""
    missing = {c["name"]: c.get("arguments") or {} for c in calls if c and c["name"] not in tools}
    if not missing:
        return tools
    out = dict(tools)
    for name, args in missing.items():
        props = {k: {"type": next((t for py, t in _PY_JSON_TYPES if isinstance(v, py)), "string")}
                 for k, v in args.items() if v is not None}
        out[name] = {"description": f"Back-end action {name} (named by a reviewer; not called in the window).",
                     "parameters": {"type": "object", "properties": props, "required": sorted(props)}}
    return dict(sorted(out.items()))


def tools_openai(tools: dict) -> list[dict]:
    """The catalogue as OpenAI / TRL `tools` (function JSON Schemas)."""
    return [{"type": "function", "function": {"name": n, **spec}} for n, spec in tools.items()]


def redact_args(red, args_json: str | None) -> dict | None:
    """Action arguments as a dict with every string value redacted (and counted) like any other text."""
    if args_json is None:
        return None
    try:
        args = json.loads(args_json)
    except (TypeError, json.JSONDecodeError):
        return None
    if not isinstance(args, dict):
        return None

    def clean(v):
        if isinstance(v, str):
            return red(v, "agent_events.action_args")
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return {k: clean(v) for k, v in args.items()}


def parse_call(decision: str | None, tools: dict, like: dict | None = None) -> dict | None:
    """A decision written in an override as a tool call {name, arguments}, or None when it is not one."""
    text = (decision or "").strip()
    if not text:
        return None
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            return None
        if isinstance(obj, dict) and isinstance(obj.get("name"), str):
            args = obj.get("arguments") or {}
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except json.JSONDecodeError:
                    return None
            return {"name": obj["name"], "arguments": args} if isinstance(args, dict) else None
        return None
    if not _NAME.match(text):
        return None
    known = (tools.get(text) or {}).get("parameters", {}).get("properties")
    base = (like or {}).get("arguments") or {}
    if like and like["name"] == text:
        args = dict(base)
    elif known is not None:
        args = {k: v for k, v in base.items() if k in known}
    else:
        args = {}
    if text == ESCALATE and "reason" not in args:
        args["reason"] = "reviewer decision"
    return {"name": text, "arguments": args}


def policy_call(decision: str | None, policy_id: str | None) -> dict | None:
    outcome = POLICY_WORDS.get((decision or "").strip().lower())
    if outcome is None or not policy_id:
        return None
    return {"name": POLICY, "arguments": {"policy_id": policy_id, "outcome": outcome}}


def trl_message(call: dict) -> dict:
    """An assistant message calling one tool, in TRL's tool-use format (arguments as an object)."""
    return {"role": "assistant", "tool_calls": [{"type": "function", "function": {
        "name": call["name"], "arguments": call["arguments"]}}]}


def openai_message(call: dict, call_id: str) -> dict:
    """The same in OpenAI's chat format (arguments as a JSON string)."""
    return {"role": "assistant", "tool_calls": [{"id": call_id, "type": "function", "function": {
        "name": call["name"], "arguments": json.dumps(call["arguments"], sort_keys=True, ensure_ascii=False)}}]}


def call_key(call: dict) -> str:
    return json.dumps(call, sort_keys=True, ensure_ascii=False)


class ActionExamples:
    """Tool-calling candidates of one conversation; mixed into `candidates._Candidates`."""

    def _offered(self, *calls: dict | None) -> list[dict]:
        """The catalogue offered with these calls: the night's own object (`self.catalogue`, pickled by
        reference) unless a call names a tool it lacks."""
        tools = offered(self.tools, *calls)
        return self.catalogue if tools is self.tools else tools_openai(tools)

    def _agent_call(self, conv, name: str | None = None, before=None):
        """(ts, call) of the agent's action: executed before proposed, the named one if given, the last before
        `before`."""
        acts = [a for a in conv.actions if before is None or a[0] is None or a[0] <= before]
        for etype in ("action_executed", "action_proposed"):
            cands = [a for a in acts if a[1] == etype and (name is None or a[2] == name)]
            if cands:
                ts, _, action, args, _ = cands[-1]
                return ts, {"name": action, "arguments": args or {}}
        return None, None

    def _tool_prompt(self, conv, at, clause: str | None):
        """System + the conversation up to the last customer message before `at`."""
        from feedback_loop.datasets.candidates import _messages, _system

        turns = [t for t in conv.turns if at is None or t.ts is None or t.ts <= at]
        while turns and turns[-1].role == "assistant":
            turns.pop()
        msgs = _messages(turns)
        if not msgs or msgs[-1]["role"] != "user":
            return None
        return [_system(self.cfg, conv, self.kb, before=at, clause=clause), *msgs]

    def _policy_before(self, conv, at) -> str | None:
        ids = [pid for ts, pid, _ in conv.policies if at is None or ts is None or ts <= at]
        return ids[-1] if ids else None

    def _tool_examples(self, conv, o: dict | None, prompt, chosen: dict | None, rejected: dict | None,
                       provenance: dict, evidence) -> None:
        from feedback_loop.datasets.candidates import _fact_date

        cid, tools = conv.conversation_id, self._offered(chosen, rejected)
        meta = {"fact_date": _fact_date(conv)}
        if chosen is not None:
            self.cands["tool_sft"].append(Example(
                "tool_sft", cid, provenance["source"], key=_prompt_key(prompt) + "\n" + call_key(chosen),
                evidence=evidence, meta=meta,
                records={"trl_tool_messages": {"messages": [*prompt, trl_message(chosen)], "tools": tools},
                         "openai_chat": {"messages": [*prompt, openai_message(chosen, "call_0")], "tools": tools},
                         PROVENANCE: provenance}))
            self._tool_kto(conv, prompt, chosen, True, provenance, evidence, meta)
        if rejected is not None:
            self._tool_kto(conv, prompt, rejected, False, provenance, evidence, meta)
        if chosen is not None and rejected is not None:
            if call_key(chosen) == call_key(rejected):
                self.unusable["tool_preference"]["reviewer's call identical to the agent's"] += 1
            else:
                self.cands["tool_preference"].append(Example(
                    "tool_preference", cid, provenance["source"], evidence=evidence, meta=meta,
                    key=_prompt_key(prompt) + "\n" + call_key(chosen) + "\n" + call_key(rejected),
                    records={"trl_tool_preference": {"prompt": prompt, "chosen": [trl_message(chosen)],
                                                     "rejected": [trl_message(rejected)], "tools": tools},
                             PROVENANCE: provenance}))

    def _tool_kto(self, conv, prompt, call, label: bool, provenance, evidence, meta) -> None:
        user = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
        source = provenance["source"] + (":chosen" if label else ":rejected")
        self.cands["tool_kto"].append(Example(
            "tool_kto", conv.conversation_id, source, key=user + "\n" + call_key(call), evidence=evidence,
            group=str(label).lower(), label=str(label).lower(), reviewer=conv.conversation_id,
            meta=meta,
            records={"trl_tool_unpaired": {"prompt": prompt, "completion": [trl_message(call)], "label": label,
                                           "tools": self._offered(call)},
                     PROVENANCE: {**provenance, "label": label}}))

    def _action_correction(self, conv, o: dict) -> None:
        """An action- or policy-stage correction: the reviewer's call chosen, the agent's rejected."""
        stage, why = o["stage"], ""
        names = ("tool_sft", "tool_preference", "tool_kto")
        at = o["ts_us"]  # times are epoch microseconds here (read.py)
        if stage == "action":
            named = parse_call(o["agent_decision"], self.tools)
            at, agent = self._agent_call(conv, named["name"] if named else None, before=o["ts_us"])
            if agent is None:
                agent, at = named, o["ts_us"]
            human = parse_call(o["human_decision"], self.tools, like=agent)
            clause = o.get("policy_clause_id") or self._policy_before(conv, at)
            if agent is None:
                why = "no agent action in the trace or the override"
            elif human is None:
                why = "human decision is not a tool call"
        else:
            policy = o.get("policy_clause_id") or self._policy_before(conv, o["ts_us"])
            checks = [ts for ts, pid, _ in conv.policies if pid == policy]
            at = checks[-1] if checks else o["ts_us"]
            agent, human = policy_call(o["agent_decision"], policy), policy_call(o["human_decision"], policy)
            clause = policy
            if human is None:
                why = "human decision is not a policy outcome (pass, fail, waive) or no policy clause"
        prompt = None if why else self._tool_prompt(conv, at, clause)
        if prompt is None:
            for n in names:
                self.unusable[n][f"{stage} correction: {why or 'no customer message before the decision'}"] += 1
            return
        provenance = {"source": f"{stage}_correction", "stage": stage, "override_id": o["override_id"],
                      "reviewer_id": o["reviewer_id"], "policy_clause_id": clause, "agent_call": agent,
                      "human_call": human}
        self._tool_examples(conv, o, prompt, human, agent, provenance, (3, o["agent_confidence"] or 0.0))

    def _failed_checks(self, conv) -> None:
        """Executed actions whose outcome check failed: the agent's call, labelled undesirable (KTO)."""
        for chk in conv.outcome.get("failed_checks") or []:
            at, call = self._agent_call(conv, chk["action"])
            if call is None:
                self.unusable["tool_kto"]["failed check: the action is not in the trace"] += 1
                continue
            clause = self._policy_before(conv, at)
            prompt = self._tool_prompt(conv, at, clause)
            if prompt is None:
                self.unusable["tool_kto"]["failed check: no customer message before the action"] += 1
                continue
            from feedback_loop.datasets.candidates import _fact_date

            provenance = {"source": "failed_outcome_check", "stage": "action", "check_id": chk["check_id"],
                          "expected_state": chk["expected_state"], "observed_state": chk["observed_state"],
                          "policy_clause_id": clause, "agent_call": call}
            self._tool_kto(conv, prompt, call, False, provenance, (2, 0.0), {"fact_date": _fact_date(conv)})


def _prompt_key(prompt: list[dict]) -> str:
    return "\n".join(m["content"] for m in prompt[1:])
