"""Learning from actions: action- and policy-stage corrections and failed outcome checks become tool-calling
datasets (tool_sft, tool_preference, tool_kto) that the OpenAI and TRL validators accept, redacted, with the
policy clause in each example's provenance.

The lake is built the real way (landing JSON Lines -> land -> GX validation -> model -> summary) from a
hand-written day with one conversation of each kind.
"""

from __future__ import annotations

import glob
import json
import os
import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from feedback_loop import nightly
from feedback_loop.datasets import formats
from feedback_loop.datasets.build import ACTION_DATASETS, build_datasets
from feedback_loop.settings import Settings

DAY = "2026-11-20"
PHONE = "+44 20 7946 0321"
SOURCES = ("agent_events", "crm_cases", "surveys", "overrides", "outcome_checks", "kb_articles")


def _ts(minutes: float) -> str:
    return (datetime.fromisoformat(f"{DAY}T08:00:00+00:00") + timedelta(minutes=minutes)).isoformat()


class Day:
    def __init__(self):
        self.rows = {s: [] for s in SOURCES}
        self.n = 0

    def conversation(self, cid, text, steps, at, reply="Done, see the app."):
        """steps: [(event_type, fields)] after the customer's message and the intent; then the agent's reply."""
        case, t = f"K-{cid}", at

        def event(etype, turn, **kw):
            nonlocal t
            self.n += 1
            t += 0.5
            self.rows["agent_events"].append({"event_id": f"E-{self.n}", "ts": _ts(t), "conversation_id": cid,
                                              "customer_id": f"U-{cid}", "case_id": case, "turn": turn,
                                              "event_type": etype, **kw})
            return _ts(t)

        event("customer_message", 0, text=text)
        event("intent_classified", 0, intent="card_payment_not_recognised", confidence=0.81)
        event("kb_query", 0, kb_query=text, kb_results=[{"article_id": "KB-1", "score": 0.7}])
        for etype, fields in steps:
            event(etype, 0, **fields)
        event("agent_response", 0, text=reply, model="m1", mode="live")
        self.rows["crm_cases"].append({
            "case_id": case, "customer_id": f"U-{cid}", "conversation_id": cid, "channel": "chat",
            "created_at": _ts(at), "updated_at": _ts(at + 60), "status": "solved", "resolved_at": _ts(at + 60),
            "resolved_by": "ai", "escalated": False, "reopen_count": 0, "category": "card_payment_not_recognised"})
        return case

    def override(self, cid, stage, agent, human, clause, at):
        self.n += 1
        self.rows["overrides"].append({
            "override_id": f"O-{self.n}", "ts": _ts(at), "conversation_id": cid, "case_id": f"K-{cid}",
            "reviewer_id": "REV-7", "stage": stage, "agent_decision": agent, "agent_confidence": 0.8,
            "human_decision": human, "rationale": "the customer did not make this payment", "policy_clause_id": clause,
            "evidence": None, "outcome": "corrected"})

    def write(self, landing):
        self.rows["kb_articles"] = [{"article_id": "KB-1", "title": "Unknown card payment",
                                     "body": "Freeze the card, then open a dispute.", "intents": [],
                                     "status": "published", "updated_at": _ts(-600)}]
        self.rows["surveys"].append({"survey_id": "S-1", "case_id": "K-C-act", "conversation_id": "C-act",
                                     "submitted_at": _ts(200), "kind": "csat", "score": 3})
        for source, rows in self.rows.items():
            os.makedirs(f"{landing}/{source}/dt={DAY}", exist_ok=True)
            with open(f"{landing}/{source}/dt={DAY}/part.jsonl", "w") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in rows)


def sample() -> Day:
    d = Day()
    # The agent froze the card; the reviewer opened a dispute instead (a tool call in JSON).
    d.conversation("C-act", "There is a payment on my card I never made", [
        ("policy_check", {"policy_id": "POL-disputes-2", "policy_outcome": "pass"}),
        ("action_executed", {"action": "freeze_card", "action_status": "ok",
                             "action_args": {"card_last4": "4242", "callback": PHONE}}),
    ], at=0)
    d.override("C-act", "action", "freeze_card",
               json.dumps({"name": "open_dispute", "arguments": {"amount": 42.5, "currency": "EUR"}}),
               "POL-disputes-2", at=120)
    # Another dispute, so open_dispute is in the window's tool catalogue with its arguments.
    d.conversation("C-dsp", "I was charged twice for one coffee", [
        ("action_executed", {"action": "open_dispute", "action_status": "ok",
                             "action_args": {"amount": 3.2, "currency": "GBP"}})], at=10)
    # The policy said fail; the reviewer waived it.
    d.conversation("C-pol", "Please refund the overdraft fee, it is the first time", [
        ("policy_check", {"policy_id": "POL-fees-4", "policy_outcome": "fail"})], at=20)
    d.override("C-pol", "policy", "fail", "waive", "POL-fees-4", at=130)
    # The refund was issued by the agent, but the check found it never arrived.
    d.conversation("C-chk", "Where is my refund for the cancelled order?", [
        ("policy_check", {"policy_id": "POL-refunds-1", "policy_outcome": "pass"}),
        ("action_executed", {"action": "issue_refund", "action_status": "ok",
                             "action_args": {"amount": 19.99, "currency": "EUR"}})], at=30)
    d.rows["outcome_checks"].append({"check_id": "CHK-1", "case_id": "K-C-chk", "action": "issue_refund",
                                     "checked_at": _ts(90), "expected_state": "refund_issued",
                                     "observed_state": "refund_pending", "verified": False})
    d.rows["outcome_checks"].append({"check_id": "CHK-2", "case_id": "K-C-dsp", "action": "open_dispute",
                                     "checked_at": _ts(95), "expected_state": "dispute_opened",
                                     "observed_state": "dispute_opened", "verified": True})
    return d


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("acsr-action-datasets")
    s = Settings.load(landing=str(root / "landing"), lake=str(root / "lake"), warehouse=str(root / "wh.duckdb"),
                      dataset_min_new_examples=1, dataset_min_new_pairs=1)
    sample().write(s.landing)
    for source in SOURCES:
        nightly.land(s, source, DAY)
    for source in SOURCES:
        assert nightly.validate(s, source, DAY)["status"] != "failed"
    nightly.summarize(s, DAY, {"model": nightly.model(s, DAY)})
    return s, build_datasets(s, start=DAY, end=DAY, only=list(ACTION_DATASETS))


def _records(result, name, pattern="trl/*.jsonl"):
    out = []
    for f in sorted(glob.glob(os.path.join(result["datasets"][name]["path"], pattern))):
        out += formats.read_records(f)
    return out


def _provenance(result, name):
    return formats.read_records(os.path.join(result["datasets"][name]["path"], "provenance.jsonl"))


def _call(msg):
    [c] = msg["tool_calls"]
    return c["function"]["name"], c["function"]["arguments"]


def test_every_tool_dataset_is_published_and_every_file_validates(built):
    _, result = built
    for name in ACTION_DATASETS:
        r = result["datasets"][name]
        assert r["status"] == "published", (name, r)
        manifest = json.loads(Path(r["path"], "manifest.json").read_text())
        checked = [f for f in manifest["files"] if f["format"] in formats.CHECKS]
        assert checked
        for f in checked:  # read back and checked by the consumer's validator
            assert formats.validate_file(os.path.join(r["path"], f["path"]), f["format"], 4096)["records"] == f["rows"]


def test_action_correction_gives_tool_sft_in_openai_and_trl_format(built):
    _, result = built
    openai = [r for r in _records(result, "tool_sft", "openai/*.jsonl")
              if _call(r["messages"][-1])[0] == "open_dispute"]
    trl = [r for r in _records(result, "tool_sft") if _call(r["messages"][-1])[0] == "open_dispute"]
    assert len(openai) == len(trl) == 1
    o, t = openai[0], trl[0]
    assert formats.check("openai_chat", o) == [] and formats.check("trl_tool_messages", t) == []
    assert json.loads(_call(o["messages"][-1])[1]) == {"amount": 42.5, "currency": "EUR"}  # a JSON string
    assert _call(t["messages"][-1])[1] == {"amount": 42.5, "currency": "EUR"}  # an object
    assert o["messages"][-2] == {"role": "user", "content": "There is a payment on my card I never made"}
    assert "POL-disputes-2" in o["messages"][0]["content"]
    tools = {x["function"]["name"]: x["function"] for x in o["tools"]}
    assert {"freeze_card", "open_dispute", "issue_refund", "escalate_to_human", "policy_decision"} <= set(tools)
    assert tools["open_dispute"]["parameters"]["properties"] == {"amount": {"type": "number"},
                                                                 "currency": {"type": "string"}}


def test_action_correction_gives_a_preference_pair_the_validators_accept(built):
    _, result = built
    pairs = {_call(r["chosen"][0])[0]: r for r in _records(result, "tool_preference")}
    pair = pairs["open_dispute"]
    assert formats.check("trl_tool_preference", pair) == []
    name, args = _call(pair["rejected"][0])
    assert name == "freeze_card" and args["card_last4"] == "4242"
    assert not re.search(r"\b7946\b", json.dumps(args)) and args["callback"] == "[PHONE]"  # redacted as it left DuckDB
    policy = pairs["policy_decision"]
    assert _call(policy["chosen"][0])[1] == {"policy_id": "POL-fees-4", "outcome": "waived"}
    assert _call(policy["rejected"][0])[1] == {"policy_id": "POL-fees-4", "outcome": "fail"}
    prov = {p["override_id"]: p for p in _provenance(result, "tool_preference")}
    assert {p["policy_clause_id"] for p in prov.values()} == {"POL-disputes-2", "POL-fees-4"}
    assert {p["stage"] for p in prov.values()} == {"action", "policy"}


def test_failed_outcome_check_gives_a_kto_undesirable_example(built):
    _, result = built
    kto = _records(result, "tool_kto")
    refund = [r for r in kto if _call(r["completion"][0])[0] == "issue_refund"]
    assert len(refund) == 1 and refund[0]["label"] is False
    assert formats.check("trl_tool_unpaired", refund[0]) == []
    assert refund[0]["prompt"][-1]["content"] == "Where is my refund for the cancelled order?"
    prov = [p for p in _provenance(result, "tool_kto") if p["source"] == "failed_outcome_check"]
    assert len(prov) == 1  # the verified check of C-dsp gives nothing
    assert prov[0]["check_id"] == "CHK-1" and prov[0]["policy_clause_id"] == "POL-refunds-1"
    assert prov[0]["observed_state"] == "refund_pending" and prov[0]["label"] is False
    labels = {(p["source"], p["label"]) for p in _provenance(result, "tool_kto")}
    assert ("action_correction", True) in labels and ("action_correction", False) in labels


def test_no_personal_data_in_any_file(built):
    _, result = built
    for name in ACTION_DATASETS:
        for f in glob.glob(os.path.join(result["datasets"][name]["path"], "**", "*.jsonl"), recursive=True):
            assert not re.search(r"\b7946\b", Path(f).read_text()), f  # a word: not inside a hex id


def test_rebuild_is_unchanged(built):
    s, result = built
    again = build_datasets(s, start=DAY, end=DAY, only=list(ACTION_DATASETS))
    for name in ACTION_DATASETS:
        assert again["datasets"][name]["status"] == "unchanged"
        assert again["datasets"][name]["version"] == result["datasets"][name]["version"]


def test_hugging_face_datasets_loads_the_tool_files_offline(built, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from datasets import load_dataset

    _, result = built
    path = result["datasets"]["tool_sft"]["path"]
    files = sorted(glob.glob(os.path.join(path, "trl", "*.jsonl")))
    ds = load_dataset("json", data_files=files, split="train", cache_dir=str(os.path.join(path, "..", ".hf")))
    assert len(ds) == result["datasets"]["tool_sft"]["examples"] and set(ds.column_names) == {"messages", "tools"}


@pytest.mark.parametrize("record, problem", [
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [
        {"type": "function", "function": {"name": "nope", "arguments": {}}}]}],
      "tools": [{"type": "function", "function": {"name": "t", "parameters": {"type": "object"}}}]},
     "not in tools"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [
        {"type": "function", "function": {"name": "t", "arguments": "{}"}}]}],
      "tools": [{"type": "function", "function": {"name": "t", "parameters": {"type": "object"}}}]},
     "arguments must be an object"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": []}],
      "tools": [{"type": "function", "function": {"name": "t"}}]}, "tool_calls must be a non-empty list"),
])
def test_trl_tool_validator_rejects(record, problem):
    assert any(problem in e for e in formats.check("trl_tool_messages", record)), formats.check("trl_tool_messages",
                                                                                                  record)


def test_openai_tool_validator_rejects_unparseable_arguments_and_missing_ids():
    tools = [{"type": "function", "function": {"name": "t", "parameters": {"type": "object"}}}]
    call = {"id": "call_0", "type": "function", "function": {"name": "t", "arguments": "{}"}}
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [call]}], "tools": tools}
    assert formats.check("openai_chat", good) == []
    bad_args = json.loads(json.dumps(good))
    bad_args["messages"][1]["tool_calls"][0]["function"]["arguments"] = "{not json"
    assert any("JSON string of an object" in e for e in formats.check("openai_chat", bad_args))
    no_id = json.loads(json.dumps(good))
    del no_id["messages"][1]["tool_calls"][0]["id"]
    assert any("id must be" in e for e in formats.check("openai_chat", no_id))
    same = {"prompt": [{"role": "user", "content": "q"}],
            "chosen": [{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "t", "arguments": {}}}]}],
            "rejected": [{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "t", "arguments": {}}}]}],
            "tools": tools}
    assert formats.check("trl_tool_preference", same) == ["chosen and rejected are the same call"]


def test_a_reviewer_call_to_a_tool_the_agent_never_called_is_offered():
    """The reviewer may choose an action absent from the window's calls: it is added to the offered tools,
    so the preference pair validates (seen on a generated week: 'calls lock_app_access, which is not in tools')."""
    from feedback_loop.datasets.actions import offered, tools_openai, trl_message

    catalogue = {"refund": {"description": "d", "parameters": {"type": "object", "properties": {}, "required": []}}}
    chosen = {"name": "lock_app_access", "arguments": {"account_id": "A1", "reason": None}}
    rejected = {"name": "refund", "arguments": {}}
    tools = tools_openai(offered(catalogue, chosen, rejected))
    assert [t["function"]["name"] for t in tools] == ["lock_app_access", "refund"]
    assert tools[0]["function"]["parameters"]["properties"] == {"account_id": {"type": "string"}}
    record = {"prompt": [{"role": "user", "content": "lock my app"}], "chosen": [trl_message(chosen)],
              "rejected": [trl_message(rejected)], "tools": tools}
    assert formats.check("trl_tool_preference", record) == []
    assert offered(catalogue, rejected) is catalogue  # nothing missing: the catalogue as it was
