"""Validators for the training-file formats the datasets are written in, one per consumer's rules.

A version is published only if every record of every file passes its format's validator, read back from
the file as written (JSON Lines or Parquet), so what a trainer loads is what was checked. The rules:

- TRL conversational language modeling (`SFTTrainer`): `{"messages": [...]}`; roles system / user /
  assistant, a system message only first, then user and assistant alternating, starting with user and
  ending with assistant; every content a non-empty string.
- TRL conversational preference (`DPOTrainer`, `RewardTrainer`): `{"prompt": [...], "chosen": [...],
  "rejected": [...]}`; the prompt ends with a user message; chosen and rejected are one assistant message
  each and differ.
- TRL conversational unpaired preference (`KTOTrainer`): `{"prompt": [...], "completion": [...],
  "label": bool}`.
- OpenAI chat fine-tuning JSONL: `{"messages": [...]}` (optionally `tools`, `parallel_tool_calls`);
  roles system / developer / user / assistant / tool; message keys role, content, name, weight (0 or 1,
  assistant only), tool_calls, tool_call_id; at least one assistant message with weight 1, ending with
  an assistant message.
- OpenAI DPO JSONL: `{"input": {"messages": [...], "tools"?, "parallel_tool_calls"?},
  "preferred_output": [...], "non_preferred_output": [...]}`; input ends with a user message; each
  output exactly one assistant message with text content; the two outputs differ.
- Intent relabels (this project's own): text, label, source, weight in (0, 1], conversation_id,
  example_id.
- Tool calling (learning from actions): OpenAI chat fine-tuning as above with `tools` (function JSON
  Schemas) and an assistant message whose `tool_calls` are `{id, type: function, function: {name,
  arguments: JSON string of an object}}` and whose content may be absent; TRL's tool-use format: the same
  conversational types (`messages`; `prompt`/`chosen`/`rejected`; `prompt`/`completion`/`label`) with a
  `tools` column and assistant messages `{"role": "assistant", "tool_calls": [{"type": "function",
  "function": {"name", "arguments": object}}]}`. Every called function must be one of `tools`.

Each example must also fit the token budget (`feedback_loop.datasets.tokens`, cl100k_base).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from feedback_loop.datasets import tokens


class FormatError(ValueError):
    """A file that its consumer would reject: the path, the number of bad records and the first problems."""


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    reference: str
    min_examples: int = 1  # below this a consumer refuses the file (reported, the version is still valid)


FORMATS = {
    "trl_messages": Format("trl_messages", "TRL conversational language modeling (SFTTrainer)",
                           "https://huggingface.co/docs/trl/dataset_formats"),
    "trl_preference": Format("trl_preference", "TRL conversational preference (DPOTrainer, RewardTrainer)",
                             "https://huggingface.co/docs/trl/dataset_formats"),
    "trl_unpaired": Format("trl_unpaired", "TRL conversational unpaired preference (KTOTrainer)",
                           "https://huggingface.co/docs/trl/dataset_formats"),
    "openai_chat": Format("openai_chat", "OpenAI supervised chat fine-tuning JSONL",
                          "https://platform.openai.com/docs/guides/supervised-fine-tuning", min_examples=10),
    "openai_dpo": Format("openai_dpo", "OpenAI direct preference optimization JSONL",
                         "https://platform.openai.com/docs/guides/direct-preference-optimization",
                         min_examples=10),
    "intent_relabel": Format("intent_relabel", "Intent relabels with provenance and weight (this project)",
                             "docs/datasets.md"),
    "trl_tool_messages": Format("trl_tool_messages", "TRL conversational language modeling with tool calls "
                                "(SFTTrainer, `tools` column)", "https://huggingface.co/docs/trl/dataset_formats"),
    "trl_tool_preference": Format("trl_tool_preference", "TRL conversational preference with tool calls "
                                  "(DPOTrainer, `tools` column)", "https://huggingface.co/docs/trl/dataset_formats"),
    "trl_tool_unpaired": Format("trl_tool_unpaired", "TRL conversational unpaired preference with tool calls "
                                "(KTOTrainer, `tools` column)", "https://huggingface.co/docs/trl/dataset_formats"),
}

TRL_ROLES = {"system", "user", "assistant"}
OPENAI_ROLES = {"system", "developer", "user", "assistant", "tool"}
OPENAI_MESSAGE_KEYS = {"role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call"}
OPENAI_TOP_KEYS = {"messages", "tools", "parallel_tool_calls", "functions"}
RELABEL_SOURCES = {"override", "escalation_category", "confirmed"}


def _messages(value, where: str, roles: set[str], keys: set[str] | None = None) -> list[str]:
    """Problems of a list of chat messages: shape, roles, keys and non-empty text content."""
    if not isinstance(value, list) or not value:
        return [f"{where}: must be a non-empty list of messages"]
    errors = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            errors.append(f"{where}[{i}]: not an object")
            continue
        if m.get("role") not in roles:
            errors.append(f"{where}[{i}]: role {m.get('role')!r} not in {sorted(roles)}")
        allowed = keys or {"role", "content"}
        unknown = set(m) - allowed
        if unknown:
            errors.append(f"{where}[{i}]: unknown keys {sorted(unknown)}")
        content = m.get("content")
        if not isinstance(content, str) or not content.strip():
            errors.append(f"{where}[{i}]: content must be a non-empty string")
    return errors


def _alternation(msgs: list[dict], where: str, last: str) -> list[str]:
    """System only first; then user/assistant alternating from user; ending with `last`."""
    errors = []
    body = msgs[1:] if msgs and msgs[0].get("role") == "system" else msgs
    if any(m.get("role") == "system" for m in body):
        errors.append(f"{where}: a system message is allowed only first")
    turns = [m.get("role") for m in body if m.get("role") != "system"]
    if not turns or turns[0] != "user":
        errors.append(f"{where}: the first non-system message must be from the user")
    if any(a == b for a, b in itertools.pairwise(turns)):
        errors.append(f"{where}: user and assistant messages must alternate")
    if not turns or turns[-1] != last:
        errors.append(f"{where}: the last message must be from the {last}")
    return errors


def _single_assistant(value, where: str, keys: set[str] | None = None) -> list[str]:
    errors = _messages(value, where, {"assistant"}, keys)
    if isinstance(value, list) and len(value) != 1:
        errors.append(f"{where}: must hold exactly one assistant message")
    return errors


def _budget(n: int, max_tokens: int | None, where: str = "example") -> list[str]:
    return [f"{where}: {n} tokens over the budget of {max_tokens}"] if max_tokens and n > max_tokens else []


def _only_keys(record: dict, allowed: set[str]) -> list[str]:
    unknown = set(record) - allowed
    return [f"unknown top-level keys {sorted(unknown)}"] if unknown else []


def check_trl_messages(r: dict, max_tokens: int | None = None) -> list[str]:
    errors = _only_keys(r, {"messages"}) + _messages(r.get("messages"), "messages", TRL_ROLES)
    if not errors:
        errors += _alternation(r["messages"], "messages", "assistant")
        errors += _budget(tokens.count_messages(r["messages"]), max_tokens)
    return errors


def check_trl_preference(r: dict, max_tokens: int | None = None) -> list[str]:
    errors = _only_keys(r, {"prompt", "chosen", "rejected"})
    errors += _messages(r.get("prompt"), "prompt", TRL_ROLES)
    errors += _single_assistant(r.get("chosen"), "chosen") + _single_assistant(r.get("rejected"), "rejected")
    if not errors:
        errors += _alternation(r["prompt"], "prompt", "user")
        if r["chosen"][0]["content"].strip() == r["rejected"][0]["content"].strip():
            errors.append("chosen and rejected are the same text")
        for side in ("chosen", "rejected"):
            errors += _budget(tokens.count_messages(r["prompt"] + r[side]), max_tokens, f"prompt + {side}")
    return errors


def check_trl_unpaired(r: dict, max_tokens: int | None = None) -> list[str]:
    errors = _only_keys(r, {"prompt", "completion", "label"})
    errors += _messages(r.get("prompt"), "prompt", TRL_ROLES) + _single_assistant(r.get("completion"), "completion")
    if not isinstance(r.get("label"), bool):
        errors.append(f"label must be a boolean, got {r.get('label')!r}")
    if not errors:
        errors += _alternation(r["prompt"], "prompt", "user")
        errors += _budget(tokens.count_messages(r["prompt"] + r["completion"]), max_tokens)
    return errors


def check_openai_chat(r: dict, max_tokens: int | None = None) -> list[str]:
    errors = _only_keys(r, OPENAI_TOP_KEYS)
    msgs = r.get("messages")
    names = None
    if "tools" in r:
        errors += _tools(r["tools"])
        names = _tool_names(r["tools"])
    if isinstance(msgs, list) and any(isinstance(m, dict) and "tool_calls" in m for m in msgs):
        for i, m in enumerate(msgs):
            if isinstance(m, dict) and "tool_calls" in m:
                errors += _tool_calls(m, f"messages[{i}]", names, openai=True)
        msgs = [_as_text(m) for m in msgs]
    errors += _messages(msgs, "messages", OPENAI_ROLES, OPENAI_MESSAGE_KEYS)
    if errors:
        return errors
    for i, m in enumerate(msgs):
        if "weight" in m:
            if m["role"] != "assistant":
                errors.append(f"messages[{i}]: weight is allowed on assistant messages only")
            elif m["weight"] not in (0, 1) or isinstance(m["weight"], bool):
                errors.append(f"messages[{i}]: weight must be 0 or 1")
    if not any(m["role"] == "assistant" and m.get("weight", 1) == 1 for m in msgs):
        errors.append("messages: no assistant message to train on (weight 1)")
    if msgs[-1]["role"] != "assistant":
        errors.append("messages: the last message must be from the assistant")
    errors += _budget(tokens.count_messages(msgs), max_tokens)
    return errors


def check_openai_dpo(r: dict, max_tokens: int | None = None) -> list[str]:
    errors = _only_keys(r, {"input", "preferred_output", "non_preferred_output"})
    inp = r.get("input")
    if not isinstance(inp, dict):
        return errors + ["input: must be an object with messages"]
    errors += [f"input: {e}" for e in _only_keys(inp, {"messages", "tools", "parallel_tool_calls"})]
    errors += _messages(inp.get("messages"), "input.messages", OPENAI_ROLES - {"tool"}, {"role", "content", "name"})
    errors += _single_assistant(r.get("preferred_output"), "preferred_output", {"role", "content"})
    errors += _single_assistant(r.get("non_preferred_output"), "non_preferred_output", {"role", "content"})
    if errors:
        return errors
    if inp["messages"][-1]["role"] != "user":
        errors.append("input.messages: the last message must be from the user")
    if r["preferred_output"][0]["content"].strip() == r["non_preferred_output"][0]["content"].strip():
        errors.append("preferred_output and non_preferred_output are the same text")
    for side in ("preferred_output", "non_preferred_output"):
        errors += _budget(tokens.count_messages(inp["messages"] + r[side]), max_tokens, f"input + {side}")
    return errors


def check_intent_relabel(r: dict, max_tokens: int | None = None) -> list[str]:
    errors = []
    for key in ("text", "label", "conversation_id", "example_id"):
        if not isinstance(r.get(key), str) or not r[key].strip():
            errors.append(f"{key} must be a non-empty string")
    if r.get("source") not in RELABEL_SOURCES:
        errors.append(f"source {r.get('source')!r} not in {sorted(RELABEL_SOURCES)}")
    w = r.get("weight")
    if not isinstance(w, (int, float)) or isinstance(w, bool) or not 0 < w <= 1:
        errors.append(f"weight must be a number in (0, 1], got {w!r}")
    if not errors:
        errors += _budget(tokens.count(r["text"]), max_tokens)
    return errors


def _tools(tools) -> list[str]:
    """`tools`: a non-empty list of {type: function, function: {name, description?, parameters: object schema}}."""
    if not isinstance(tools, list) or not tools:
        return ["tools: must be a non-empty list"]
    errors, seen = [], set()
    for i, t in enumerate(tools):
        f = t.get("function") if isinstance(t, dict) else None
        if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(f, dict):
            errors.append(f"tools[{i}]: must be {{type: function, function: {{...}}}}")
            continue
        if not isinstance(f.get("name"), str) or not f["name"]:
            errors.append(f"tools[{i}]: function.name must be a non-empty string")
        elif f["name"] in seen:
            errors.append(f"tools[{i}]: function {f['name']!r} listed twice")
        seen.add(f.get("name"))
        params = f.get("parameters")
        if params is not None and (not isinstance(params, dict) or params.get("type") != "object"):
            errors.append(f"tools[{i}]: parameters must be a JSON Schema of type object")
    return errors


def _tool_names(tools) -> set[str] | None:
    if not isinstance(tools, list):
        return None
    return {t["function"].get("name") for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)}


def _tool_calls(m: dict, where: str, names: set[str] | None, openai: bool) -> list[str]:
    """An assistant message's tool calls: OpenAI has an id and arguments as a JSON string, TRL an object."""
    calls = m.get("tool_calls")
    if m.get("role") != "assistant":
        return [f"{where}: only assistant messages make tool calls"]
    if not isinstance(calls, list) or not calls:
        return [f"{where}: tool_calls must be a non-empty list"]
    errors = []
    for j, c in enumerate(calls):
        w = f"{where}.tool_calls[{j}]"
        f = c.get("function") if isinstance(c, dict) else None
        if not isinstance(c, dict) or c.get("type") != "function" or not isinstance(f, dict):
            errors.append(f"{w}: must be {{type: function, function: {{name, arguments}}}}")
            continue
        if openai and (not isinstance(c.get("id"), str) or not c["id"]):
            errors.append(f"{w}: id must be a non-empty string")
        if not isinstance(f.get("name"), str) or not f["name"]:
            errors.append(f"{w}: function.name must be a non-empty string")
        elif names is None:
            errors.append(f"{w}: calls {f['name']!r} but the record lists no tools")
        elif f["name"] not in names:
            errors.append(f"{w}: calls {f['name']!r}, which is not in tools")
        args = f.get("arguments")
        if openai:
            try:
                args = json.loads(args) if isinstance(args, str) else None
            except json.JSONDecodeError:
                args = None
            if not isinstance(args, dict):
                errors.append(f"{w}: arguments must be a JSON string of an object")
        elif not isinstance(args, dict):
            errors.append(f"{w}: arguments must be an object")
    content = m.get("content")
    if content is not None and not isinstance(content, str):
        errors.append(f"{where}: content must be a string when present")
    return errors


def _as_text(m):
    """A tool-calling assistant message, for the shape/alternation checks: its calls stand for its content."""
    if isinstance(m, dict) and "tool_calls" in m and not (isinstance(m.get("content"), str) and m["content"].strip()):
        return {**{k: v for k, v in m.items() if k != "tool_calls"}, "content": "<tool call>"}
    return m


def _tool_record(r: dict, keys: set[str], sides: tuple[str, ...]) -> tuple[list[str], dict]:
    """Common checks of the TRL tool formats; returns (errors, the record with calls as text for the rest)."""
    errors = _only_keys(r, keys) + _tools(r.get("tools"))
    names = _tool_names(r.get("tools"))
    plain = {k: v for k, v in r.items() if k != "tools"}
    for side in sides:
        msgs = r.get(side)
        if isinstance(msgs, list):
            for i, m in enumerate(msgs):
                if isinstance(m, dict) and "tool_calls" in m:
                    errors += _tool_calls(m, f"{side}[{i}]", names, openai=False)
            plain[side] = [_as_text(m) for m in msgs]
    return errors, plain


def check_trl_tool_messages(r: dict, max_tokens: int | None = None) -> list[str]:
    errors, plain = _tool_record(r, {"messages", "tools"}, ("messages",))
    return errors + (check_trl_messages(plain) if not errors else []) + _json_budget(r, max_tokens)


def check_trl_tool_preference(r: dict, max_tokens: int | None = None) -> list[str]:
    errors, plain = _tool_record(r, {"prompt", "chosen", "rejected", "tools"}, ("prompt", "chosen", "rejected"))
    if not errors:  # the calls stand in as the same placeholder text: compare the calls themselves
        errors += [e for e in check_trl_preference(plain) if e != "chosen and rejected are the same text"]
        if json.dumps(r["chosen"], sort_keys=True) == json.dumps(r["rejected"], sort_keys=True):
            errors.append("chosen and rejected are the same call")
    return errors + _json_budget(r, max_tokens)


def check_trl_tool_unpaired(r: dict, max_tokens: int | None = None) -> list[str]:
    errors, plain = _tool_record(r, {"prompt", "completion", "label", "tools"}, ("prompt", "completion"))
    return errors + (check_trl_unpaired(plain) if not errors else []) + _json_budget(r, max_tokens)


def _json_budget(r: dict, max_tokens: int | None) -> list[str]:
    return _budget(tokens.count_json(r), max_tokens) if max_tokens else []


CHECKS = {
    "trl_tool_messages": check_trl_tool_messages,
    "trl_tool_preference": check_trl_tool_preference,
    "trl_tool_unpaired": check_trl_tool_unpaired,
    "trl_messages": check_trl_messages,
    "trl_preference": check_trl_preference,
    "trl_unpaired": check_trl_unpaired,
    "openai_chat": check_openai_chat,
    "openai_dpo": check_openai_dpo,
    "intent_relabel": check_intent_relabel,
}


def check(fmt: str, record: dict, max_tokens: int | None = None) -> list[str]:
    """The problems a consumer of `fmt` would have with one record (empty when it is valid)."""
    if not isinstance(record, dict):
        return ["record is not a JSON object"]
    return CHECKS[fmt](record, max_tokens)


def read_records(path: str | Path) -> list[dict]:
    """The records of a JSON Lines or Parquet file, as a trainer's loader would see them."""
    return list(iter_records(path))


PARQUET_BATCH_ROWS = 1024


def iter_records(path: str | Path):
    """`read_records` one record at a time (a JSON Lines line, a Parquet batch of rows), so checking a file
    holds one batch of it, not the whole file."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH_ROWS):
            yield from batch.to_pylist()
        return
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                raise FormatError(f"{path}:{n}: empty line (JSON Lines allows none)")
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise FormatError(f"{path}:{n}: not JSON: {e}") from e
            yield rec


KNOWN_VALID = object()  # in `validate_file`'s records: a record an earlier check found valid (line_store)


def validate_file(path: str | Path, fmt: str, max_tokens: int | None = None, records=None) -> dict:
    """Check every record of a file as it is read; raise FormatError naming the first problems, else return
    a summary. `records`: the file's records as `iter_records` reads them, `KNOWN_VALID` for one that needs
    no check (counted, not checked)."""
    parquet = str(path).endswith(".parquet")
    bad, n_bad, n_records = [], 0, 0
    for n, rec in enumerate(iter_records(path) if records is None else records, 1):
        n_records = n
        if rec is KNOWN_VALID:
            continue
        problems = check(fmt, _from_parquet(rec) if parquet else rec, max_tokens)
        if problems:
            n_bad += 1
            if len(bad) < 5:
                bad.append((n, problems))
    if n_bad:
        first = "; ".join(f"record {n}: {', '.join(p)}" for n, p in bad)
        raise FormatError(f"{path}: {n_bad} of {n_records} records fail {fmt}: {first}")
    spec = FORMATS[fmt]
    notes = []
    if n_records < spec.min_examples:
        notes.append(f"{n_records} examples: {spec.description} needs at least {spec.min_examples} in a "
                     "training file")
    return {"format": fmt, "records": n_records, "valid": True, "notes": notes}


def _from_parquet(rec: dict) -> dict:
    """Parquet has no 'absent' key inside a struct list: drop the null keys that Arrow fills in."""
    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if x is not None}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return clean(rec)
