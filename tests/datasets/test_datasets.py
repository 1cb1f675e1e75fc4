"""Fine-tuning datasets: formats each consumer accepts, no personal data, curation counted, versions stable.

The lake is built the real way (landing JSON Lines -> land -> GX validation -> model -> summary) from a
small hand-written sample in which every situation the stage must handle occurs at least once, with
personal data seeded in every field that can reach a dataset.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import shutil
from datetime import datetime, timedelta

import duckdb
import pyarrow.parquet as pq
import pytest
from feedback_loop import nightly
from feedback_loop.datasets import candidates, curation, formats, pii, publish, tokens
from feedback_loop.datasets.build import ACTION_DATASETS, DATASETS, build_datasets
from feedback_loop.datasets.curation import Example
from feedback_loop.lake.files import Lake
from feedback_loop.settings import Settings

D1, D2 = "2026-11-20", "2026-11-21"


def _luhn(payload: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return payload + str((10 - total % 10) % 10)


CARD = " ".join(_luhn("453957876362148")[i:i + 4] for i in range(0, 16, 4))
SEEDED = {
    "customer_email": "anna.berg77@example.org",
    "customer_phone": "+44 20 7946 0321",
    "customer_card": CARD,
    "customer_iban": "DE89 3704 0044 0532 0130 00",
    "agent_phone": "+1 415-555-0142",
    "agent_iban": "GB82 WEST 1234 5698 7654 32",
    "human_email": "j.smith@example.net",
    "kb_phone": "+49 30 901820",
    "kb_title_email": "cards@bank.example",
    "intent_text_email": "lost.card.owner@example.com",
    "rationale_email": "reviewer.note@example.com",
    "evidence_phone": "+44 20 7946 0999",
    "survey_phone": "+1 212-555-0177",
}
LONG_TEXT = "My statement is wrong. " + " ".join(f"line {i} shows a charge I do not recognise" for i in range(700))


class Sample:
    """Landing rows for one day, written as the exports would be."""

    def __init__(self, day: str):
        self.day = day
        self.rows: dict[str, list] = {s: [] for s in ("agent_events", "crm_cases", "surveys", "overrides",
                                                      "outcome_checks", "kb_articles")}
        self.n = 0

    def ts(self, minutes: float) -> str:
        return (datetime.fromisoformat(f"{self.day}T08:00:00+00:00") + timedelta(minutes=minutes)).isoformat()

    def conversation(self, cid, turns, intent="card_arrival", conf=0.9, kb=(("KB-1", 0.8),), policy="POL-cards",
                     thumbs=None, status="solved", reopen=0, category=None, escalated=False, csat=None,
                     comment=None, at=0):
        """turns: [(role, text)], starting with the customer. One case per conversation."""
        case = f"K-{cid}"
        ev = self.rows["agent_events"]
        t = at

        def event(etype, turn, **kw):
            nonlocal t
            self.n += 1
            t += 0.5
            ev.append({"event_id": f"E-{self.day}-{self.n}", "ts": self.ts(t), "conversation_id": cid,
                       "customer_id": f"U-{cid}", "case_id": case, "turn": turn, "event_type": etype, **kw})

        for turn, (role, text) in enumerate(turns):
            if role == "user":
                event("customer_message", turn, text=text)
                if turn == 0:
                    event("intent_classified", turn, intent=intent, confidence=conf)
                    event("kb_query", turn, kb_query=text[:50],
                          kb_results=[{"article_id": a, "score": s} for a, s in kb])
                    event("policy_check", turn, policy_id=policy, policy_outcome="pass")
            else:
                event("agent_response", turn, text=text, model="m1", strategy="s1", mode="live")
        if thumbs is not None:
            event("thumbs", len(turns), rating=thumbs)
        self.rows["crm_cases"].append({
            "case_id": case, "customer_id": f"U-{cid}", "conversation_id": cid, "channel": "chat",
            "created_at": self.ts(at), "updated_at": self.ts(at + 60), "status": status,
            "resolved_at": self.ts(at + 60) if status in ("solved", "closed") else None,
            "resolved_by": "human" if escalated else "ai", "escalated": escalated, "reopen_count": reopen,
            "category": category or intent})
        if csat is not None:
            self.rows["surveys"].append({"survey_id": f"S-{cid}", "case_id": case, "conversation_id": cid,
                                         "submitted_at": self.ts(at + 90), "kind": "csat", "score": csat,
                                         "comment": comment})
        self.rows["outcome_checks"].append({"check_id": f"OC-{cid}", "case_id": case, "action": "none",
                                            "checked_at": self.ts(at + 70), "verified": True})
        return case

    def override(self, cid, stage, agent, human, reviewer, *, conf=0.5, rationale="checked the case",
                 clause="POL-cards", evidence=None, at=100):
        self.n += 1
        self.rows["overrides"].append({
            "override_id": f"O-{self.day}-{self.n}", "ts": self.ts(at), "conversation_id": cid,
            "case_id": f"K-{cid}", "reviewer_id": reviewer, "stage": stage, "agent_decision": agent,
            "agent_confidence": conf, "human_decision": human, "rationale": rationale, "policy_clause_id": clause,
            "evidence": evidence, "outcome": "corrected"})

    def kb(self):
        self.rows["kb_articles"] = [
            {"article_id": "KB-1", "title": f"Card arrival (questions: {SEEDED['kb_title_email']})",
             "body": f"Cards arrive within 7 working days. Urgent? Call {SEEDED['kb_phone']}.",
             "intents": ["card_arrival"], "status": "published", "updated_at": self.ts(-600)},
            {"article_id": "KB-2", "title": "Refunds", "body": "Duplicate charges are refunded within 3 days.",
             "intents": ["transaction_charged_twice"], "status": "published", "updated_at": self.ts(-600)},
        ]

    def write(self, landing: str):
        for source, rows in self.rows.items():
            folder = f"{landing}/{source}/dt={self.day}"
            os.makedirs(folder, exist_ok=True)
            with open(f"{folder}/part.jsonl", "w") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in rows)


ARRIVAL = f"My card still hasn't arrived, it has been two weeks. Email me at {SEEDED['customer_email']}"
ARRIVAL_REPLY = "Cards arrive within 7 working days; I have sent a replacement to your address."


def day_one() -> Sample:
    s = Sample(D1)
    s.kb()
    # Ended well (CSAT 5): SFT, KTO good, confirmed intent.
    s.conversation("C1-good", [("user", ARRIVAL), ("assistant", ARRIVAL_REPLY), ("user", "thanks"),
                               ("assistant", "Glad I could help.")], csat=5, at=0)
    # An exact copy (CSAT 4, weaker evidence) and a near copy ("2 weeks"): both removed from SFT.
    s.conversation("C1-copy", [("user", ARRIVAL), ("assistant", ARRIVAL_REPLY), ("user", "thanks"),
                               ("assistant", "Glad I could help.")], csat=4, at=5)
    s.conversation("C1-near", [("user", ARRIVAL.replace("two weeks", "2 weeks")), ("assistant", ARRIVAL_REPLY),
                               ("user", "thanks"), ("assistant", "Glad I could help.")], csat=5, at=10)
    # No survey, thumbs up: SFT. PII in the customer's and the agent's text.
    s.conversation("C1-thumbs", [("user", f"Please call me on {SEEDED['customer_phone']} about my top-up"),
                                 ("assistant", f"I will; our line is {SEEDED['agent_phone']} if you need us sooner.")],
                   intent="top_up_failed", thumbs=1, at=15)
    # Reopened: not a good ending, whatever the CSAT.
    s.conversation("C1-reopened", [("user", "Why was I charged a fee for my transfer?"),
                                   ("assistant", "Transfers abroad cost 1 EUR.")],
                   intent="transfer_fee_charged", reopen=1, csat=5, at=20)
    # CSAT 1: a KTO 'bad' example. Card number in the customer's text.
    s.conversation("C1-bad", [("user", f"Block card {SEEDED['customer_card']} now, it was stolen"),
                              ("assistant", "Have you tried turning the app off and on again?")],
                   intent="lost_or_stolen_card", csat=1, comment=f"awful, call {SEEDED['survey_phone']}", at=25)
    # A response a human corrected: SFT with the human's words, a preference pair, KTO both sides.
    agent_text = f"Please wait for the pending payment to drop off. Refunds go to {SEEDED['agent_iban']}."
    human_text = (f"Sorry about that - I have refunded the duplicate charge. If it is not back in 3 days, "
                  f"write to {SEEDED['human_email']}.")
    s.conversation("C1-fixed", [("user", f"I was charged twice! My IBAN is {SEEDED['customer_iban']}"),
                                ("assistant", agent_text)],
                   intent="transaction_charged_twice", kb=(("KB-2", 0.9),), csat=2, at=30)
    s.override("C1-fixed", "response", agent_text, human_text, "REV-001",
               rationale=f"refund was due; told {SEEDED['rationale_email']}", evidence=f"called {SEEDED['evidence_phone']}")
    # Two reviewers relabel the same text differently: a conflict, held out and listed.
    lost = f"I lost my card yesterday, write to {SEEDED['intent_text_email']}"
    s.conversation("C1-lostA", [("user", lost), ("assistant", "Sorry to hear that.")], intent="card_not_working",
                   conf=0.4, status="open", at=35)
    s.override("C1-lostA", "intent", "card_not_working", "lost_or_stolen_card", "REV-001")
    s.conversation("C1-lostB", [("user", lost + "!"), ("assistant", "Sorry to hear that.")],
                   intent="card_not_working", conf=0.4, status="open", at=40)
    s.override("C1-lostB", "intent", "card_not_working", "card_swallowed", "REV-002")
    # Two reviewers agree: one example, both reviewers in its provenance.
    pin = "How do I change my PIN?"
    for i, rev in enumerate(("REV-003", "REV-004")):
        s.conversation(f"C1-pin{i}", [("user", pin), ("assistant", "In the app.")], intent="get_physical_card",
                       conf=0.3, status="open", at=45 + i)
        s.override(f"C1-pin{i}", "intent", "get_physical_card", "change_pin", rev)
    # The agent's intent stood and the customer was happy: a 'confirmed' copy of the same text, outranked.
    s.conversation("C1-pin-ok", [("user", pin), ("assistant", "Go to Cards > PIN in the app.")],
                   intent="change_pin", csat=5, at=50)
    # Escalated, and the human filed it under another intent.
    s.conversation("C1-esc", [("user", "The exchange rate you gave me is wrong"),
                              ("assistant", "Let me pass you to a colleague.")],
                   intent="exchange_charge", status="solved", escalated=True, category="wrong_exchange_rate", at=55)
    # Incomplete triads: quarantined upstream, counted by what is missing.
    s.conversation("C1-triad", [("user", "Where is my money?"), ("assistant", "Checking.")], intent="balance",
                   status="open", at=60)
    s.override("C1-triad", "intent", "balance", "pending_transfer", "REV-005", rationale=None)
    s.override("C1-triad", "intent", "balance", "pending_transfer", "REV-006", clause=None, evidence=None)
    # Far over the token budget: dropped and counted.
    s.conversation("C1-long", [("user", LONG_TEXT), ("assistant", "I have opened a dispute for those charges.")],
                   intent="card_payment_not_recognised", csat=5, at=65)
    return s


def day_two() -> Sample:
    s = Sample(D2)
    s.kb()
    for i, text in enumerate(["Can I get a virtual card?", "How do I top up with Apple Pay?",
                              "Is there a fee for ATM withdrawals abroad?"]):
        s.conversation(f"C2-good{i}", [("user", text), ("assistant", f"Answer number {i}: see the app's help.")],
                       intent=f"intent_{i}", csat=5, at=i * 5)
    return s


@pytest.fixture(scope="module")
def staged_lake(tmp_path_factory):
    """Landing -> raw -> GX -> staged/quarantine -> marts and run summaries, for D1 and D2 (built once)."""
    root = tmp_path_factory.mktemp("acsr-datasets")
    s = Settings.load(landing=str(root / "landing"), lake=str(root / "lake"), warehouse=str(root / "wh.duckdb"),
                      max_bad_row_share=0.5)  # the sample is small: 2 incomplete triads in 7 overrides
    for sample in (day_one(), day_two()):
        sample.write(s.landing)
        for source in sample.rows:
            nightly.land(s, source, sample.day)
        for source in sample.rows:
            nightly.validate(s, source, sample.day)
        nightly.summarize(s, sample.day, {"model": nightly.model(s, sample.day)})
    return root


def _settings(root, **extra) -> Settings:
    return Settings.load(landing=str(root / "landing"), lake=str(root / "lake"), warehouse=str(root / "wh.duckdb"),
                         **{"dataset_min_new_examples": 1, "dataset_min_new_pairs": 1, **extra})


def _copy(staged_lake, tmp_path):
    shutil.copytree(staged_lake / "lake", tmp_path / "lake")
    return tmp_path


@pytest.fixture(scope="module")
def built(staged_lake, tmp_path_factory):
    """One build over D1..D2 on a copy of the lake, shared by the read-only tests."""
    root = _copy(staged_lake, tmp_path_factory.mktemp("built"))
    result = build_datasets(_settings(root), start=D1, end=D2)
    return root, result


def _json(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _version(result, name):
    return result["datasets"][name]["path"]


def _manifest(result, name):
    return _json(os.path.join(_version(result, name), "manifest.json"))


def _records(result, name, pattern):
    out = []
    for f in sorted(glob.glob(os.path.join(_version(result, name), pattern))):
        out += formats.read_records(f)
    return out


# ------------------------------------------------------------------------------------------------ formats

GOOD = {
    "trl_messages": {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                                  {"role": "assistant", "content": "a"}]},
    "trl_preference": {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}],
                       "rejected": [{"role": "assistant", "content": "b"}]},
    "trl_unpaired": {"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "a"}],
                     "label": False},
    "openai_chat": {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "x", "weight": 0},
                                 {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a", "weight": 1}]},
    "openai_dpo": {"input": {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]},
                   "preferred_output": [{"role": "assistant", "content": "a"}],
                   "non_preferred_output": [{"role": "assistant", "content": "b"}]},
    "intent_relabel": {"text": "q", "label": "l", "source": "override", "weight": 1.0, "conversation_id": "c",
                       "example_id": "e"},
}
U, A = {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}
BAD = [
    ("trl_messages", {"messages": [U]}, "last message must be from the assistant"),
    ("trl_messages", {"messages": [U, {"role": "assistant", "content": "  "}]}, "non-empty string"),
    ("trl_messages", {"messages": [U, {"role": "bot", "content": "a"}]}, "role 'bot'"),
    ("trl_messages", {"messages": [U, A, {"role": "system", "content": "s"}, U, A]}, "system message is allowed only first"),
    ("trl_messages", {"messages": [U, U, A]}, "must alternate"),
    ("trl_messages", {"messages": [A, U, A]}, "first non-system message must be from the user"),
    ("trl_messages", {"messages": []}, "non-empty list"),
    ("trl_messages", {"messages": [U, {**A, "weight": 1}]}, "unknown keys"),
    ("trl_messages", {"messages": [U, A], "text": "x"}, "unknown top-level keys"),
    ("trl_preference", {"prompt": [U], "chosen": [A], "rejected": [A]}, "same text"),
    ("trl_preference", {"prompt": [U, A], "chosen": [A], "rejected": [{"role": "assistant", "content": "b"}]},
     "last message must be from the user"),
    ("trl_preference", {"prompt": [U], "chosen": [A, A], "rejected": [{"role": "assistant", "content": "b"}]},
     "exactly one assistant message"),
    ("trl_preference", {"prompt": [U], "chosen": [U], "rejected": [A]}, "role 'user'"),
    ("trl_unpaired", {"prompt": [U], "completion": [A], "label": "true"}, "label must be a boolean"),
    ("trl_unpaired", {"prompt": [U], "completion": [], "label": True}, "non-empty list"),
    ("openai_chat", {"messages": [U, A, U]}, "last message must be from the assistant"),
    ("openai_chat", {"messages": [{**U, "weight": 1}, A]}, "weight is allowed on assistant messages only"),
    ("openai_chat", {"messages": [U, {**A, "weight": 2}]}, "weight must be 0 or 1"),
    ("openai_chat", {"messages": [U, {**A, "weight": 0}]}, "no assistant message to train on"),
    ("openai_chat", {"messages": [U, {"role": "assistant", "content": None}]}, "non-empty string"),
    ("openai_chat", {"messages": [U, A], "metadata": {}}, "unknown top-level keys"),
    ("openai_dpo", {"input": {"messages": [U, A]}, "preferred_output": [A],
                    "non_preferred_output": [{"role": "assistant", "content": "b"}]}, "last message must be from the user"),
    ("openai_dpo", {"input": {"messages": [U]}, "preferred_output": [A, A],
                    "non_preferred_output": [{"role": "assistant", "content": "b"}]}, "exactly one assistant message"),
    ("openai_dpo", {"input": {"messages": [U]}, "preferred_output": [A], "non_preferred_output": [A]}, "same text"),
    ("openai_dpo", {"messages": [U, A]}, "input: must be an object"),
    ("intent_relabel", {**GOOD["intent_relabel"], "weight": 0}, "weight must be a number in (0, 1]"),
    ("intent_relabel", {**GOOD["intent_relabel"], "source": "guess"}, "source 'guess'"),
    ("intent_relabel", {**GOOD["intent_relabel"], "text": ""}, "text must be a non-empty string"),
]


@pytest.mark.parametrize("fmt", sorted(GOOD))
def test_valid_records_pass(fmt):
    assert formats.check(fmt, GOOD[fmt], max_tokens=100) == []


@pytest.mark.parametrize("fmt,record,problem", BAD, ids=[f"{b[0]}:{b[2][:30]}" for b in BAD])
def test_consumers_rules_reject(fmt, record, problem):
    errors = formats.check(fmt, record, max_tokens=100)
    assert any(problem in e for e in errors), errors


@pytest.mark.parametrize("fmt", sorted(GOOD))
def test_token_budget_is_enforced(fmt):
    big = json.loads(json.dumps(GOOD[fmt]).replace('"q"', json.dumps("word " * 400)))
    assert formats.check(fmt, big, max_tokens=10_000) == []
    assert any("over the budget of 100" in e for e in formats.check(fmt, big, max_tokens=100))


def test_files_with_broken_lines_are_rejected(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text(json.dumps(GOOD["trl_messages"]) + "\n\n")
    with pytest.raises(formats.FormatError, match="empty line"):
        formats.validate_file(p, "trl_messages")
    p.write_text("{not json\n")
    with pytest.raises(formats.FormatError, match="not JSON"):
        formats.validate_file(p, "trl_messages")
    p.write_text(json.dumps({"messages": [U]}) + "\n")
    with pytest.raises(formats.FormatError, match="1 of 1 records fail trl_messages"):
        formats.validate_file(p, "trl_messages")


def test_tokenizer_is_tiktokens_own_cl100k_offline(monkeypatch):
    """The vendored rank file is the one tiktoken pins, and counts match the published encoding."""
    import inspect

    import tiktoken_ext.openai_public as op

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "/nonexistent")  # nothing may be fetched or cached
    assert tokens.RANKS_SHA256 in inspect.getsource(op.cl100k_base)
    assert tokens.encoding().encode("hello world") == [15339, 1917]
    assert tokens.count("hello world") == 2
    assert tokens.count_messages([{"role": "user", "content": "hello world"}]) == 3 + 2 + 1 + 3


# ---------------------------------------------------------------------------------------- curation units


def _ex(cid, key, source="override", label="a", reviewer=None, evidence=(1,), ts=""):
    return Example("intent_relabels", cid, source, key=key, records={}, evidence=evidence, group=label,
                   label=label, reviewer=reviewer or cid, meta={"ts": ts})


def test_conflicts_need_two_reviewers_and_a_reviewers_latest_label_counts():
    kept, conflicts, step = curation.label_conflicts([
        _ex("c1", "Lost my card", label="lost", reviewer="R1", ts="1"),
        _ex("c2", "lost my card!", label="stolen", reviewer="R2", ts="2"),   # R1 vs R2: conflict
        _ex("c3", "pin change", label="pin", reviewer="R3", ts="1"),
        _ex("c3", "pin change", label="change_pin", reviewer="R3", ts="2"),  # R3 revised: no conflict
        _ex("c4", "pin change", source="confirmed", label="pin"),          # contradicted by R3's latest label
    ], {"override"})
    assert [c["labels"] for c in conflicts] == [["lost", "stolen"]]
    assert sorted((e.conversation_id, e.label) for e in kept) == [("c3", "change_pin"), ("c3", "pin")]
    assert step.input == 5 and step.output == 2 and step.detail["confirmed_contradicted_by_a_reviewer"] == 1


def test_duplicates_keep_the_best_evidenced_copy():
    examples = [_ex("c1", "my card has not arrived yet, two weeks now", evidence=(1, 4)),
                _ex("c2", "My card has not arrived yet - two weeks now!", evidence=(3, 0)),
                _ex("c3", "my card has not arrived yet, 2 weeks now", evidence=(2, 0)),
                _ex("c4", "my card has not arrived yet, two weeks now", label="b", evidence=(1, 0)),
                _ex("c5", "completely different question about fees", evidence=(1, 0))]
    kept, step = curation.exact_duplicates(examples)
    assert step.output == 4 and {e.conversation_id for e in kept} == {"c2", "c3", "c4", "c5"}
    kept, step = curation.near_duplicates(kept, threshold=0.7)
    # c3 is a near copy of c2 (better evidence); c4 has another label, so it is not compared.
    assert {e.conversation_id for e in kept} == {"c2", "c4", "c5"}
    assert next(e for e in kept if e.conversation_id == "c2").merged == 3


def test_split_depends_on_the_conversation_alone():
    ids = [f"CONV-{i}" for i in range(2000)]
    splits = [curation.split_of(c, 0.1, 0.1) for c in ids]
    assert splits == [curation.split_of(c, 0.1, 0.1) for c in ids]
    share = {s: splits.count(s) / len(ids) for s in curation.SPLITS}
    assert 0.75 < share["train"] < 0.85 and 0.07 < share["test"] < 0.13


# --------------------------------------------------------------------------------------- the whole stage


def test_every_dataset_is_published_with_valid_files(built):
    root, result = built
    for name in DATASETS:
        r = result["datasets"][name]
        assert r["status"] == "published", (name, r)
        m = _manifest(result, name)
        assert m["version"] == r["version"] and m["supersedes"] is None
        latest = _json(root / "lake" / "datasets" / name / "latest.json")
        assert latest["version"] == r["version"]
        for f in m["files"]:
            path = os.path.join(r["path"], f["path"])
            assert curation_sha(path) == f["sha256"]
            if f["format"] in formats.CHECKS:  # read back and checked again, JSON Lines and Parquet alike
                assert formats.validate_file(path, f["format"], m["config"]["max_tokens"])["records"] == f["rows"]
        assert os.path.exists(os.path.join(r["path"], "README.md"))
    assert not glob.glob(str(root / "lake" / "datasets" / "*" / ".tmp-*"))


def curation_sha(path):
    import hashlib

    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_no_seeded_personal_data_in_any_output(built):
    root, _ = built
    texts = []
    for path in glob.glob(str(root / "lake" / "datasets" / "**" / "*"), recursive=True) + glob.glob(
            str(root / "lake" / "runs" / "*" / "datasets.json")):
        if os.path.isdir(path) or path.endswith(".lock"):
            continue
        if path.endswith(".parquet"):
            texts.append((path, json.dumps(pq.read_table(path).to_pylist(), default=str)))
        else:
            with open(path, encoding="utf-8") as fh:
                texts.append((path, fh.read()))
    assert len(texts) > 20
    for value in SEEDED.values():
        compact = "".join(ch for ch in value if ch.isalnum())
        for path, text in texts:
            assert value not in text and (len(compact) < 10 or compact not in text), (value, path)
    sft = json.dumps(_records(built[1], "sft", "trl/*.jsonl"))
    assert "[EMAIL]" in sft and "[PHONE]" in sft and "[IBAN]" in sft


def test_sft_contents(built):
    _, result = built
    rows = _records(result, "sft", "trl/*.jsonl")
    by_first_user = {r["messages"][1]["content"]: r for r in rows}
    fixed = next(r for k, r in by_first_user.items() if k.startswith("I was charged twice"))
    assert fixed["messages"][-1]["content"].startswith("Sorry about that - I have refunded")
    assert "KB-2" in fixed["messages"][0]["content"] and "POL-cards" in fixed["messages"][0]["content"]
    good = next(r for k, r in by_first_user.items() if k.startswith("My card still hasn't arrived"))
    assert [m["role"] for m in good["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert "Cards arrive within 7 working days. Urgent? Call [PHONE]" in good["messages"][0]["content"]
    firsts = [r["messages"][1]["content"] for r in rows]
    assert sum(f.startswith("My card still hasn't arrived") for f in firsts) == 1  # copy and near copy removed
    assert not any(f.startswith("Why was I charged a fee") for f in firsts)  # reopened
    assert not any(f.startswith("Block card") for f in firsts)  # CSAT 1
    assert not any(f.startswith("My statement is wrong") for f in firsts)  # over the token budget
    openai = [r for r in _records(result, "sft", "openai/*.jsonl") if r["messages"][-1].get("weight") == 1]
    assert len(openai) == 1 and all(m.get("weight", 0) == 0 for m in openai[0]["messages"][1:-1] if m["role"] == "assistant")


def test_preference_and_kto_contents(built):
    _, result = built
    (pair,) = _records(result, "preference", "trl/*.jsonl")
    assert pair["prompt"][-1]["role"] == "user" and pair["prompt"][-1]["content"].startswith("I was charged twice")
    assert pair["chosen"][0]["content"].startswith("Sorry about that") and "[EMAIL]" in pair["chosen"][0]["content"]
    assert pair["rejected"][0]["content"].startswith("Please wait") and "[IBAN]" in pair["rejected"][0]["content"]
    (dpo,) = _records(result, "preference", "openai_dpo/*.jsonl")
    assert dpo["input"]["messages"] == pair["prompt"] and dpo["preferred_output"] == pair["chosen"]
    kto = _records(result, "kto", "trl/*.jsonl")
    labels = {(r["prompt"][-1]["content"][:20], r["label"]) for r in kto}
    assert ("Block card [CARD] no", False) in labels  # CSAT 1
    assert ("I was charged twice!", True) in labels and ("I was charged twice!", False) in labels
    good = next(r for r in kto if r["prompt"][-1]["content"].startswith("My card still"))
    assert good["label"] is True and good["completion"][0]["content"] == ARRIVAL_REPLY  # the answer, not "Glad..."


def test_intent_relabels_conflicts_duplicates_and_provenance(built):
    _, result = built
    rows = {r["text"]: r for r in _records(result, "intent_relabels", "data/*.jsonl")}
    assert not any(t.startswith("I lost my card") for t in rows)
    (conflict,) = _records(result, "intent_relabels", "conflicts.jsonl")
    assert conflict["labels"] == ["card_swallowed", "lost_or_stolen_card"]
    assert conflict["conversation_ids"] == ["C1-lostA", "C1-lostB"] and "[EMAIL]" in conflict["text"]
    pin = rows["How do I change my PIN?"]
    assert pin["label"] == "change_pin" and pin["source"] == "override" and pin["weight"] == 1.0
    assert pin["reviewers"] == ["REV-003", "REV-004"] and pin["n_copies"] == 3
    esc = rows["The exchange rate you gave me is wrong"]
    assert (esc["source"], esc["label"], esc["previous_label"], esc["weight"]) == (
        "escalation_category", "wrong_exchange_rate", "exchange_charge", 0.8)
    confirmed = [r for r in rows.values() if r["source"] == "confirmed"]
    assert confirmed and all(r["weight"] == 0.5 and r["csat"] >= 4 for r in confirmed)
    assert "Where is my money?" not in rows  # both of its corrections were incomplete triads
    steps = {s["step"]: s for s in _manifest(result, "intent_relabels")["curation"]["steps"]}
    assert steps["conflicts"]["detail"]["conflicting_texts"] == 1


def test_manifest_counts_add_up(built):
    _, result = built
    for name in DATASETS:
        m = _manifest(result, name)
        steps = m["curation"]["steps"]
        assert steps[0]["step"] == "candidates" and steps[-1]["step"] == "split"
        for a, b in itertools.pairwise(steps):
            assert a["out"] == b["in"], (name, a, b)
        for s in steps:
            assert s["in"] - s["out"] == s["removed"] >= 0
        split = steps[-1]["detail"]
        assert split["train"] + split["validation"] + split["test"] == steps[-1]["out"] == m["counts"]["examples"]
        assert m["counts"]["by_split"] == {k: split[k] for k in curation.SPLITS}
        assert sum(m["counts"]["by_source"].values()) == m["counts"]["examples"]
        data = [f for f in m["files"] if f["format"] in formats.CHECKS and f["path"].endswith(".jsonl")]
        per_format = {}
        for f in data:
            per_format[f["format"]] = per_format.get(f["format"], 0) + f["rows"]
        assert set(per_format.values()) == {m["counts"]["examples"]}
        assert m["counts"]["new_examples"] == m["counts"]["examples"]
        assert set(m["sources"]) >= {"marts/conversation_facts", "staged/agent_events", "staged/overrides"}
        assert m["data_quality"][D1]["status"] == "ok" and m["data_quality"][D1]["sources"]["overrides"]["rows_quarantined"] == 2
    triads = _manifest(result, "sft")["curation"]["incomplete_triads_excluded"]
    assert triads["incomplete_total"] == 2
    assert triads["incomplete_by_missing"] == {"agent decision/confidence": 0, "human decision/rationale": 1,
                                               "policy clause or evidence": 1}
    sft_steps = {s["step"]: s for s in _manifest(result, "sft")["curation"]["steps"]}
    assert sft_steps["exact_duplicates"]["removed"] == 1 and sft_steps["near_duplicates"]["removed"] == 1
    assert sft_steps["token_budget"]["removed"] == 1
    assert _manifest(result, "sft")["curation"]["redaction"]["replaced_by_kind"]["EMAIL"] >= 3


def test_versions_idempotent_split_stable_and_threshold(staged_lake, tmp_path):
    root = _copy(staged_lake, tmp_path)
    first = build_datasets(_settings(root), start=D1, end=D1)
    assert first["datasets"]["sft"]["status"] == "published"
    again = build_datasets(_settings(root), start=D1, end=D1)
    assert {r["status"] for n, r in again["datasets"].items() if n in DATASETS} == {"unchanged"}
    assert {n: r["version"] for n, r in again["datasets"].items()} == {n: r["version"] for n, r in first["datasets"].items()}
    assert {again["datasets"][n]["status"] for n in ACTION_DATASETS} == {"not_published"}  # no action corrections here

    blocked = build_datasets(_settings(root, dataset_min_new_examples=50, dataset_min_new_pairs=50), start=D1, end=D2)
    r = blocked["datasets"]["sft"]
    assert r["status"] == "not_published" and r["new_examples"] == 3 and "fewer than the minimum of 50" in r["reason"]
    assert len(glob.glob(str(root / "lake" / "datasets" / "sft" / "v*"))) == 1

    second = build_datasets(_settings(root), start=D1, end=D2)
    r2 = second["datasets"]["sft"]
    assert r2["status"] == "published" and r2["new_examples"] == 3 and r2["supersedes"] == first["datasets"]["sft"]["version"]
    m2 = _json(os.path.join(r2["path"], "manifest.json"))
    assert m2["counts"]["carried_over"] == first["datasets"]["sft"]["examples"]

    def splits(path):
        rows = pq.read_table(os.path.join(path, "examples.parquet")).to_pylist()
        out = {}
        for row in rows:
            out.setdefault(row["conversation_id"], set()).add(row["split"])
        return out

    for name in ("sft", "kto", "intent_relabels"):
        old, new = splits(first["datasets"][name]["path"]), splits(second["datasets"][name]["path"])
        assert all(len(s) == 1 for s in new.values())  # nothing of one conversation crosses splits
        assert {c: old[c] for c in old if c in new} == {c: new[c] for c in old if c in new}
    assert _json(root / "lake" / "datasets" / "sft" / "latest.json")["version"] == r2["version"]


def _dataset_files(root) -> dict[str, bytes]:
    base = root / "lake" / "datasets"
    return {str(p.relative_to(base)): p.read_bytes().replace(str(root).encode(), b"<root>")
            for p in sorted(base.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


def test_redactions_and_token_counts_are_computed_once_and_replayed_byte_identically(staged_lake, tmp_path,
                                                                                      monkeypatch):
    """Issue 18: a day's redactions are stored when the day first enters a window, a night's token counts
    and near-duplicate signatures when it first computes them (partials/); a later night replays them
    instead of redacting, tokenizing and signing the window again; the versions are byte for byte those of a night that computed everything,
    and a re-staged day or another PII setting recomputes its redaction partial."""
    from feedback_loop.datasets import read, redactions

    fresh = _copy(staged_lake, tmp_path / "fresh")  # every text redacted now (no partial exists yet)
    first = build_datasets(_settings(fresh), start=D1, end=D2)
    partials = fresh / "lake" / "partials" / "dataset_redactions"
    assert sorted(p.name for p in partials.iterdir()) == [f"dt={D1}", f"dt={D2}"]

    # The next night: the stored partials are there; no agent-event text may reach the redactor.
    replayed = _copy(staged_lake, tmp_path / "replayed")
    shutil.copytree(fresh / "lake" / "partials", replayed / "lake" / "partials")
    assert (fresh / "lake" / "partials" / "dataset_token_counts" / f"dt={D2}" / "part.parquet").exists()
    assert (fresh / "lake" / "partials" / "dataset_minhash" / f"dt={D2}" / "part.parquet").exists()
    redacted_now: list[str] = []
    call = read.Redaction.__call__

    def spy(self, text, where, maybe_pii=True):
        if maybe_pii and text is not None and where.startswith("agent_events"):
            redacted_now.append(where)
        return call(self, text, where, maybe_pii)

    monkeypatch.setattr(read.Redaction, "__call__", spy)
    monkeypatch.setattr(redactions, "_compute", lambda *a, **k: pytest.fail("a valid partial was recomputed"))
    monkeypatch.setattr(tokens, "encoding", lambda: pytest.fail("a stored token count was encoded again"))
    monkeypatch.setattr(curation, "signatures_of_normalised",
                        lambda *a, **k: pytest.fail("a stored near-duplicate signature was computed again"))
    monkeypatch.setattr(candidates._Candidates, "add",
                        lambda *a, **k: pytest.fail("a conversation with stored candidates was built again"))
    monkeypatch.setattr(publish, "_example_id", lambda *a, **k: pytest.fail("a stored example id was computed again"))
    monkeypatch.setattr(publish, "_count_tokens", lambda *a, **k: pytest.fail("a stored token count was computed again"))
    monkeypatch.setattr(publish, "_strings", lambda *a, **k: pytest.fail("a line checked by an earlier night was scanned again"))
    second = build_datasets(_settings(replayed), start=D1, end=D2)
    monkeypatch.undo()
    assert redacted_now == []
    assert _dataset_files(replayed) == _dataset_files(fresh)
    assert (json.dumps(second["datasets"], sort_keys=True).replace(str(replayed), "<root>")
            == json.dumps(first["datasets"], sort_keys=True).replace(str(fresh), "<root>"))
    summary = _manifest(second, "sft")["curation"]["redaction"]
    assert summary == _manifest(first, "sft")["curation"]["redaction"] and summary["texts_changed"] > 0

    # A day staged again (validate re-ran) and another redactor both invalidate the stored partial.
    staged = replayed / "lake" / "staged" / "agent_events" / f"dt={D2}" / "part.parquet"
    os.utime(staged, ns=(staged.stat().st_atime_ns, staged.stat().st_mtime_ns + 10**9))
    s = _settings(replayed)
    con = duckdb.connect()
    lake = Lake(s.lake)
    assert redactions.ensure(con, lake, pii.redactor(s), [D1, D2]) == {"reused": 1, "computed": [D2]}
    other = _settings(replayed, pii_patterns={"TICKET": r"TKT-[0-9]{6}"})
    assert redactions.ensure(con, lake, pii.redactor(other), [D1, D2]) == {"reused": 0, "computed": [D1, D2]}


def test_an_earlier_day_staged_again_is_redacted_on_the_spot_and_left_to_its_own_night(staged_lake, tmp_path,
                                                                                       monkeypatch):
    """Two nights reprocessed at once: the later night meets the earlier day staged again before that day's
    own night stored its partial. A partial stored by the later night would hold the arguments the later
    night keeps, and whichever night wrote last would win (CI caught a reprocessing backfill changing
    `partials/dataset_redactions/dt=D`). The later night redacts that day on the spot, stores nothing for it,
    and gives the same versions; the day's own night stores it."""
    from feedback_loop.datasets import redactions

    root = _copy(staged_lake, tmp_path / "lake")
    build_datasets(_settings(root), start=D1, end=D2)
    partial = root / "lake" / "partials" / "dataset_redactions" / f"dt={D1}" / "part.parquet"
    stored, stored_at = partial.read_bytes(), partial.stat().st_mtime_ns
    files = _dataset_files(root)
    staged = root / "lake" / "staged" / "agent_events" / f"dt={D1}" / "part.parquet"
    os.utime(staged, ns=(staged.stat().st_atime_ns, staged.stat().st_mtime_ns + 10**9))  # D1's validate re-ran
    shutil.rmtree(root / "lake" / "partials" / "dataset_candidates")  # every conversation's events read again
    computed: list[str] = []
    compute = redactions._compute
    monkeypatch.setattr(redactions, "_compute", lambda con, lake, r, day, *a: computed.append(day) or compute(con, lake, r, day, *a))
    again = build_datasets(_settings(root), start=D1, end=D2)
    assert computed == []
    assert partial.read_bytes() == stored and partial.stat().st_mtime_ns == stored_at
    assert _dataset_files(root) == files  # the same versions (on-the-spot redaction gives the stored values)
    assert {d["status"] for d in again["datasets"].values()} <= {"unchanged", "not_published"}

    s = _settings(root)
    con = duckdb.connect()
    lake = Lake(s.lake)
    assert redactions.ensure(con, lake, pii.redactor(s), [D1, D2]) == {"reused": 1, "computed": [], "restaged": [D1]}
    assert redactions.ensure(con, lake, pii.redactor(s), [D1], night=D1) == {"reused": 0, "computed": [D1]}
    assert partial.stat().st_mtime_ns != stored_at
    assert redactions.ensure(con, lake, pii.redactor(s), [D1, D2]) == {"reused": 2, "computed": []}
    con.close()


def test_the_spill_gives_back_every_blob_from_its_buffer_and_from_its_file(monkeypatch):
    """Candidates' records are appended to a buffer written out a block at a time and read back by offset
    (`candidates._Spill`): whatever was put comes back, read while later ones are still being put, from
    the file or from the buffer, blobs larger than the buffer and a record replaced in place included."""
    import random

    monkeypatch.setattr(candidates._Spill, "BUFFER", 100)
    spill = candidates._Spill()
    rnd = random.Random(7)
    put = []
    for i in range(300):
        records = {"trl": {"i": i, "text": "x" * rnd.choice((0, 5, 40, 250))}}
        put.append((spill.put(records), records))
        for ref, expected in rnd.sample(put, min(3, len(put))):  # reads between the puts
            assert ref.load() == expected
    assert 0 < spill.flushed < spill.end and spill.buffer  # some in the file, the last ones still buffered
    assert os.fstat(spill.fh.fileno()).st_size == spill.flushed
    for ref, expected in put:
        assert ref.load() == expected and candidates.candidate_store.load_plain(ref.blob()) == expected
    ref, _ = put[0]
    ref["trl"] = {"i": "replaced"}  # a record replaced: written again, the reference moved
    assert ref.load() == {"trl": {"i": "replaced"}} and put[1][0].load() == put[1][1]


def test_candidates_parked_a_batch_at_a_time_come_back_in_place_order(staged_lake, built, tmp_path, monkeypatch):
    """Past `PARK_AFTER` candidates in memory, a dataset's wait in a temporary file until its turn
    (`candidates._Ordered`): read back in the order of their places, ties in the order they came, with their
    records, the ones parked and the ones not; a build that parks every candidate on its own writes the same
    files as one that parks none."""
    spill = candidates._Spill()
    builder = candidates._Candidates(None, [], {})
    parked = candidates._Ordered(spill, "sft", builder)
    monkeypatch.setattr(candidates._Ordered, "BATCH", 2)
    monkeypatch.setattr(candidates._Candidates, "PARK_AFTER", 3)
    places = [(2, 5), (0, 9), (2, 1), (0, 9), (1, 0), (2, 1), (0, 3)]
    for i, place in enumerate(places):
        parked.key = place
        parked.append(Example("sft", f"c{i}", "csat", key=f"text {i}", records={"f": {"i": i}}, evidence=(i, 0.5),
                              meta={"fact_date": "2026-01-01"}))
    assert parked.parked is not None and len(parked.items) == 3 and builder.held == 3  # four parked, three held
    back = parked.examples()
    assert builder.held == 0
    expected = sorted(range(len(places)), key=lambda i: places[i])
    assert [e.conversation_id for e in back] == [f"c{i}" for i in expected]
    assert [e.records["f"]["i"] for e in back] == expected
    assert [(e.key, e.evidence, e.meta) for e in back] == [(f"text {i}", (i, 0.5), {"fact_date": "2026-01-01"})
                                                           for i in expected]

    monkeypatch.setattr(candidates._Ordered, "BATCH", 1)
    monkeypatch.setattr(candidates._Candidates, "PARK_AFTER", 0)
    parks = []
    park = candidates._Ordered._park
    monkeypatch.setattr(candidates._Ordered, "_park", lambda self: parks.append(len(self.items)) or park(self))
    root, _ = built
    one_by_one = _copy(staged_lake, tmp_path / "one-by-one")
    build_datasets(_settings(one_by_one), start=D1, end=D2)
    assert len(parks) > 20 and set(parks) == {1}
    assert _dataset_files(one_by_one) == _dataset_files(root)


def test_stored_candidates_are_rebuilt_only_where_late_data_or_settings_changed_them(staged_lake, tmp_path):
    """Issue 18: a conversation's candidates are stored the night it is built and replayed while its
    fingerprint (outcome, corrections, event days, settings, KB, tools, code) holds. Late surveys flip some
    outcomes: those conversations alone are built again, and the versions are byte for byte those of a
    lake that kept no candidates; another setting builds every conversation again."""
    import duckdb as ddb

    stored = _copy(staged_lake, tmp_path / "stored")
    first = build_datasets(_settings(stored), start=D1, end=D2)
    assert first["candidates"]["conversations_replayed"] == 0 and first["candidates"]["conversations_built"] > 0
    kept = first["candidates"]["conversations_built"]
    again = build_datasets(_settings(stored), start=D1, end=D2)  # a rerun of the night: everything replayed
    assert again["candidates"] == {"conversations_replayed": kept, "conversations_built": 0}

    fresh = _copy(staged_lake, tmp_path / "fresh")  # the same lake and versions, without stored candidates
    build_datasets(_settings(fresh), start=D1, end=D2)
    shutil.rmtree(fresh / "lake" / "partials" / "dataset_candidates")
    for root in (stored, fresh):  # late surveys: every CSAT of the second day changes (5 -> 1, 1 -> 5, ...)
        staged = root / "lake" / "staged" / "surveys" / f"dt={D2}" / "part.parquet"
        flipped = root / "flipped.parquet"
        ddb.execute(f"COPY (SELECT * REPLACE (CASE WHEN kind = 'csat' THEN 6 - score ELSE score END AS score) "
                    f"FROM read_parquet('{staged}')) TO '{flipped}' (FORMAT parquet)")
        os.replace(flipped, staged)
    late = build_datasets(_settings(stored), start=D1, end=D2)
    reference = build_datasets(_settings(fresh), start=D1, end=D2)
    assert 0 < late["candidates"]["conversations_built"] < kept, late["candidates"]
    assert late["candidates"]["conversations_replayed"] > 0
    assert reference["candidates"]["conversations_replayed"] == 0
    assert any(r["status"] == "published" for r in late["datasets"].values())  # the flip changed examples
    assert _dataset_files(stored) == _dataset_files(fresh)
    assert (json.dumps(late["datasets"], sort_keys=True).replace(str(stored), "<root>")
            == json.dumps(reference["datasets"], sort_keys=True).replace(str(fresh), "<root>"))

    other = build_datasets(_settings(stored, dataset_csat_good=5), start=D1, end=D2)
    assert other["candidates"]["conversations_replayed"] == 0


def test_a_stored_candidate_entry_is_read_as_plain_data_only():
    """The entries are pickles in the lake: read back by an unpickler that builds containers, numbers,
    strings and dates, and refuses anything that names code."""
    import pickle
    from datetime import date

    from feedback_loop.datasets import candidate_store

    ok = candidate_store.entry([("sft", 2, None, ("sft", "c1", "good_outcome", "key", (2, 5), ""), b"x")],
                               {"kto": {"no agent response": 1}}, (1, [("PHONE", 1)], [("agent_events.text", 1)]))
    assert candidate_store.load_plain(ok)[1] == {"kto": {"no agent response": 1}}
    assert candidate_store.load_plain(pickle.dumps({"fact_date": date(2026, 11, 20)})) == {"fact_date": date(2026, 11, 20)}
    with pytest.raises(pickle.UnpicklingError, match="os.system|posix.system"):
        candidate_store.load_plain(pickle.dumps(os.system))


def test_the_nights_catalogue_is_pickled_by_reference_and_the_stored_values_follow_it(tmp_path):
    """A tool-calling example's records hold the night's catalogue (the builder's own object) as a reference,
    not ~5 KB of it; read back, it is that object again. Two nights with other catalogues pickle the same
    records to the same bytes, so the stored token count and id of one (`value_store`) must not serve the
    other: the content hash covers the catalogue."""
    import pickle

    from feedback_loop.datasets import candidate_store, value_store

    def catalogue(*names):
        return [{"type": "function", "function": {"name": n, "description": f"Back-end action {n}." * 20,
                                                  "parameters": {"type": "object", "properties": {}}}}
                for n in names]

    def records_offering(tools):
        return {fmt: {"messages": [{"role": "user", "content": "where is my order"}], "tools": tools}
                for fmt in ("trl_tool_messages", "openai_chat")}

    one, other = catalogue("refund"), catalogue("refund", "cancel_order")
    records = records_offering(one)
    a, b = candidates._Spill(one), candidates._Spill(other)
    ref = a.put(records)
    assert b.put(records_offering(other)).blob() == ref.blob()
    assert b"catalogue" in ref.blob() and len(ref.blob()) < len(pickle.dumps(one)) / 2
    back = ref.load()
    assert back == records and back["trl_tool_messages"]["tools"] is one and back["openai_chat"]["tools"] is one
    assert b.put_blob(ref.blob()).load()["openai_chat"]["tools"] is other  # the same bytes, another night
    equal = json.loads(json.dumps(one))  # equal but not the night's object: pickled whole
    assert candidates._Spill(one).put({"x": {"tools": equal}}).load() == {"x": {"tools": equal}}
    with pytest.raises(pickle.UnpicklingError, match="catalogue"):
        candidate_store.load_plain(ref.blob())  # a reference read without a catalogue is refused

    def example(spill):
        return Example("tool_sft", "c1", "action_correction", key="k", records=spill.put(records_offering(spill.catalogue)))

    counted = []
    for spill, day in ((a, "2026-11-20"), (b, "2026-11-21")):
        store = value_store.ExampleValues(duckdb.connect(), Lake(str(tmp_path / "lake")), "2026-11-20", day)
        e = example(spill)
        store.fill([e], lambda e, day=day: counted.append(day) or len(counted), lambda e, day=day: f"id-{day}")
        store.save(day)
        store.close()
    assert counted == ["2026-11-20", "2026-11-21"]  # the second night's catalogue differs: computed again
    store = value_store.ExampleValues(duckdb.connect(), Lake(str(tmp_path / "lake")), "2026-11-20", "2026-11-21")
    e = example(b)
    store.fill([e], lambda e: pytest.fail("a stored value was computed again"), lambda e: pytest.fail("again"))
    store.close()
    assert (e.tokens, e.example_id) == (2, "id-2026-11-21")


def test_hugging_face_datasets_loads_the_files_offline(built, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    hf = pytest.importorskip("datasets")
    _, result = built
    sft = _version(result, "sft")
    ds = hf.load_dataset("parquet", data_files={"train": f"{sft}/trl/train.parquet"}, cache_dir=str(tmp_path / "c"))
    assert ds["train"].column_names == ["messages"] and ds["train"].num_rows > 0
    kto = hf.load_dataset("json", data_files={"train": f"{_version(result, 'kto')}/trl/train.jsonl"},
                          cache_dir=str(tmp_path / "c"))
    assert kto["train"].features["label"].dtype == "bool"
    dpo = hf.load_dataset("json", data_files={"train": glob.glob(f"{_version(result, 'preference')}/openai_dpo/*.jsonl")},
                          cache_dir=str(tmp_path / "c"))
    assert set(dpo["train"].column_names) == {"input", "preferred_output", "non_preferred_output"}


def test_nightly_dag_emits_an_asset_event_only_for_new_versions(staged_lake, tmp_path, monkeypatch, airflow_db):
    """Real Airflow: the build task and the announce tasks of acsr_nightly, run twice for the same day."""
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from feedback_loop.assets import DATASET_ASSETS
    from feedback_loop_sample.demo_runner import load_dag

    root = _copy(staged_lake, tmp_path)
    monkeypatch.setenv("ACSR_LANDING", str(root / "landing"))
    monkeypatch.setenv("ACSR_LAKE", str(root / "lake"))
    monkeypatch.setenv("ACSR_WAREHOUSE", str(root / "wh.duckdb"))
    monkeypatch.setenv("ACSR_DATASET_MIN_NEW_EXAMPLES", "1")
    monkeypatch.setenv("ACSR_DATASET_MIN_NEW_PAIRS", "1")
    nightly_dag = load_dag("acsr_nightly")
    dag = nightly_dag.partial_subset(["resolve_day", "build_datasets", *(f"announce_{n}" for n in DATASET_ASSETS)],
                                     include_upstream=False)
    assert len(dag.tasks) == 2 + len(DATASET_ASSETS)
    # dag.test() of Airflow 3.3.2 fails at the end of a run whose DAG has a DeadlineAlert ("'dict' object has
    # no attribute 'hex'" in DeadlineAlert.get_by_id); the deadline is not what this test is about.
    dag.deadline = None
    uris = [a.uri for a in DATASET_ASSETS.values()]

    def events():
        with create_session() as session:
            return [(e.asset.uri, e.extra) for e in session.query(AssetEvent).all() if e.asset.uri in uris]

    before = len(events())
    run = dag.test(run_conf={"date": D2})
    assert str(run.state) == "success"
    first = events()[before:]
    assert sorted(uri for uri, _ in first) == sorted(uris)
    latest = {n: _json(root / "lake" / "datasets" / n / "latest.json") for n in DATASET_ASSETS}
    for uri, extra in first:
        name = uri.rsplit("/", 1)[-1]
        assert extra["version"] == latest[name]["version"] and extra["end"] == D2
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert all(states[f"announce_{n}"] == "success" for n in DATASET_ASSETS)

    rerun = dag.test(run_conf={"date": D2})  # the same day again: nothing new, every announce skipped
    assert str(rerun.state) == "success"
    assert len(events()) == before + len(uris)
    states = {ti.task_id: str(ti.state) for ti in rerun.get_task_instances()}
    assert all(states[f"announce_{n}"] == "skipped" for n in DATASET_ASSETS)
