"""Candidate examples built one conversation at a time from its turns, outcome and corrections.

Part of the dataset stage (`feedback_loop.datasets.build`, docs/datasets.md)."""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from collections import Counter
from dataclasses import dataclass, field

from feedback_loop.datasets import candidate_store, curation
from feedback_loop.datasets.actions import BUILTIN_TOOLS, ActionExamples, tools_openai
from feedback_loop.datasets.config import ALL_DATASETS, Config
from feedback_loop.datasets.curation import Example


@dataclass
class Turn:
    role: str  # user | assistant
    text: str
    ts: int | None  # epoch microseconds (read.py's stream), compared with a correction's `ts_us`


@dataclass
class Conversation:
    conversation_id: str
    outcome: dict
    turns: list = field(default_factory=list)
    intents: list = field(default_factory=list)  # (ts, intent, confidence, user text before it)
    kb: list = field(default_factory=list)  # (ts, article_id, score)
    policies: list = field(default_factory=list)  # (ts, policy_id, outcome)
    thumbs: list = field(default_factory=list)  # (ts, rating)
    actions: list = field(default_factory=list)  # (ts, event_type, action, arguments, status)


def _messages(turns: list[Turn]) -> list[dict]:
    """Chat messages from turns: consecutive same-role turns merged, leading agent greetings dropped, so user
    and assistant alternate from a user message (what chat templates and the validators expect)."""
    out: list[dict] = []
    for t in turns:
        if not out and t.role != "user":
            continue
        if out and out[-1]["role"] == t.role:
            out[-1]["content"] += "\n\n" + t.text
        else:
            out.append({"role": t.role, "content": t.text})
    return out


def _system(cfg: Config, conv: Conversation, kb: dict, before=None, clause: str | None = None) -> dict:
    """The system message: the assistant's instructions and what grounded the answer in the trace."""
    ok = (lambda ts: True) if before is None else (lambda ts: ts is None or ts <= before)
    policies = []
    for ts, pid, outcome in conv.policies:
        if ok(ts) and pid not in [p for p, _ in policies]:
            policies.append((pid, outcome))
    if clause and clause not in [p for p, _ in policies]:
        policies.append((clause, "cited by the reviewer"))
    best: dict[str, float] = {}
    for ts, aid, score in conv.kb:
        if ok(ts) and aid in kb:
            best[aid] = max(score, best.get(aid, 0.0))
    parts = [cfg.system_prompt]
    if policies:
        parts.append("Policy clauses: " + "; ".join(f"{p} ({o})" if o else p for p, o in policies))
    ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[: cfg.kb_passages]
    if ranked:
        lines = ["Knowledge-base passages:"]
        for aid, _ in ranked:
            title, body = kb[aid]
            body = body if len(body) <= cfg.kb_passage_chars else body[: cfg.kb_passage_chars].rsplit(" ", 1)[0] + " ..."
            lines.append(f"[{aid}] {title}: {body}")
        parts.append("\n".join(lines))
    return {"role": "system", "content": "\n\n".join(parts)}


def _good(cfg: Config, o: dict) -> bool:
    """Ended well: resolved, never reopened in the window, not handed to a human, CSAT >= 4 (or, with no
    survey, thumbs up and no thumbs down)."""
    if o["status"] not in ("solved", "closed") or (o["reopen_count"] or 0) > 0 or o["escalated"]:
        return False
    if o["csat"] is not None:
        return o["csat"] >= cfg.csat_good
    return (o["n_thumbs_up"] or 0) > 0 and not (o["n_thumbs_down"] or 0)


def _bad(cfg: Config, o: dict) -> bool:
    if o["csat"] is not None:
        return o["csat"] <= cfg.csat_bad
    return (o["n_thumbs_down"] or 0) > 0 and not (o["n_thumbs_up"] or 0)


def _fact_date(conv: Conversation) -> str:
    return conv.outcome.get("fact_date") or ""


def _locate_correction(conv: Conversation, o: dict) -> int | None:
    """Index of the agent turn a response correction replaces: the one whose text the override quotes, else
    the last agent turn before the review."""
    target = curation.normalise(o["agent_decision"] or "")
    agent = [i for i, t in enumerate(conv.turns) if t.role == "assistant"]
    for i in agent:
        if target and curation.normalise(conv.turns[i].text) == target:
            return i
    before = [i for i in agent if o["ts_us"] is None or conv.turns[i].ts <= o["ts_us"]]
    return (before or agent or [None])[-1]


def _correction_prompt(cfg, conv, kb, o) -> tuple[list[dict] | None, str, str]:
    """(prompt messages ending with the user, rejected agent text, reason when unusable)."""
    j = _locate_correction(conv, o)
    if j is None:
        return None, "", "no agent response in the trace to replace"
    prefix = list(conv.turns[:j])
    while prefix and prefix[-1].role == "assistant":  # earlier agent text merges into the corrected message
        prefix.pop()
    msgs = _messages(prefix)
    if not msgs or msgs[-1]["role"] != "user":
        return None, "", "no customer message before the corrected response"
    rejected = o["agent_decision"] or conv.turns[j].text
    system = _system(cfg, conv, kb, before=conv.turns[j].ts, clause=o.get("policy_clause_id"))
    return [system, *msgs], rejected, ""

class _Spill:
    """Candidates' records (every output format of an example, KBs each) in an anonymous temporary file, so
    memory holds what curation decides on, not the formatted examples: they are read back one example at
    a time when counted, identified and written. Pickled, so what comes back is what was built, types
    included; read back as plain data only (`candidate_store.load_plain`), since a stored night's records
    come from the lake."""

    BUFFER = 1 << 20

    def __init__(self, catalogue: list | None = None):
        self.fh = tempfile.TemporaryFile(buffering=0)  # noqa: SIM115 - anonymous, lives as long as the spill (closed on collection)
        self.end = 0  # bytes put so far: the file's, then the buffer's
        # Blobs are appended to a buffer written out `BUFFER` bytes at a time, and read back with `os.pread`: a
        # seek and a system call for every blob (173,000 put and 265,000 read at 2 M events) cost ~7 s of the
        # 80 s of a first night's datasets (issue 18). A blob is in the file or in the buffer, never both.
        self.buffer = bytearray()
        self.flushed = 0
        # The night's tool catalogue, pickled by reference (`candidate_store.dumps_records`); `catalogue_key`
        # stands for it where a content hash of the records must cover it (`value_store.content_hash`).
        self.catalogue = catalogue
        self.catalogue_key = hashlib.blake2b(pickle.dumps(catalogue, protocol=candidate_store.PROTOCOL),
                                             digest_size=16).digest()

    def put(self, records: dict) -> _Spilled:
        return self.put_blob(candidate_store.dumps_records(records, self.catalogue))

    def put_blob(self, blob: bytes) -> _Spilled:
        ref = _Spilled(self, self.end, len(blob))
        self.buffer += blob
        self.end += len(blob)
        if len(self.buffer) >= self.BUFFER:
            self._flush()
        return ref

    def _flush(self) -> None:
        view = memoryview(self.buffer)
        while view:  # a write may take part of it
            view = view[os.write(self.fh.fileno(), view):]
        self.flushed += len(self.buffer)
        self.buffer = bytearray()

    def _read(self, offset: int, length: int) -> bytes:
        if offset >= self.flushed:
            return bytes(self.buffer[offset - self.flushed:offset - self.flushed + length])
        out = os.pread(self.fh.fileno(), length, offset)  # a local file: short only past its end
        if len(out) != length:
            raise OSError(f"spill file: {length} bytes at {offset} asked, {len(out)} there")
        return out

    def load(self, offset: int, length: int) -> dict:
        return candidate_store.load_plain(self._read(offset, length), self.catalogue)

    def blob(self, ref: _Spilled) -> bytes:
        return self._read(ref.offset, ref.length)


class _Spilled:
    """The records of one example in a `_Spill`; reads like the dict it stands for (a read loads it)."""

    __slots__ = ("length", "offset", "spill")

    def __init__(self, spill: _Spill, offset: int, length: int):
        self.spill, self.offset, self.length = spill, offset, length

    def load(self) -> dict:
        return self.spill.load(self.offset, self.length)

    def blob(self) -> bytes:
        """The records' pickle as stored, not unpickled."""
        return self.spill.blob(self)

    def __getitem__(self, fmt: str):
        return self.load()[fmt]

    def get(self, fmt: str, default=None):
        return self.load().get(fmt, default)

    def __setitem__(self, fmt: str, value) -> None:
        records = self.load()
        records[fmt] = value
        ref = self.spill.put(records)
        self.offset, self.length = ref.offset, ref.length


class _Ordered:
    """A dataset's candidates with the place each would have had in a build over the whole window at once.

    Once the candidates of every dataset held in memory pass `_Candidates.PARK_AFTER`, they are parked in an
    anonymous temporary file a batch at a time (their fields pickled, their records already in the
    `_Spill`): memory then holds the dataset being curated, not every dataset's candidates waiting for
    their turn (~650 MiB at 10 M events), while a smaller window pays nothing for it. `examples` gives them
    back, in that order."""

    BATCH = 4096

    def __init__(self, spill: _Spill, name: str, builder: _Candidates):
        self.key: tuple = (0, 0)
        self.items: list[tuple[tuple, Example]] = []  # not parked
        self.parked = None  # the temporary file, once a batch is parked
        self.spill, self.name, self.builder = spill, name, builder

    def append(self, example: Example) -> None:
        blob = candidate_store.dumps_records(example.records, self.spill.catalogue)
        example.records = self.spill.put_blob(blob)
        self.push(self.key, example)
        if self.builder.recording is not None:  # what the conversation gave, before curation changes it
            self.builder.recording.append((self.name, self.key[0], self.builder.ordinal,
                                           candidate_store.example_fields(example), blob))

    def push(self, key: tuple, example: Example) -> None:
        """Add a candidate whose records are in the spill, at place `key`."""
        self.items.append((key, example))
        self.builder.held += 1
        if len(self.items) >= self.BATCH and self.builder.held > self.builder.PARK_AFTER:
            self._park()

    def _park(self) -> None:
        if self.parked is None:
            self.parked = tempfile.TemporaryFile()  # noqa: SIM115 - anonymous, closed when read back
        for start in range(0, len(self.items), self.BATCH):
            rows = [(key, candidate_store.example_fields(e), e.records.offset, e.records.length)
                    for key, e in self.items[start:start + self.BATCH]]
            pickle.dump(rows, self.parked, protocol=candidate_store.PROTOCOL)
        self.builder.held -= len(self.items)
        self.items = []

    def examples(self) -> list[Example]:
        """Every candidate, in place order (ties in the order they came): the parked ones read back first."""
        placed: list[tuple[tuple, Example]] = []
        if self.parked is not None:
            self.parked.seek(0)
            while True:
                try:
                    rows = pickle.load(self.parked)
                except EOFError:
                    break
                placed += [(key, candidate_store.example_of(values, _Spilled(self.spill, offset, length)))
                           for key, values, offset, length in rows]
            self.parked.close()
            self.parked = None
        placed += self.items
        self.builder.held -= len(self.items)
        self.items = []
        placed.sort(key=lambda t: t[0])
        return [e for _, e in placed]


class _Candidates(ActionExamples):
    """Candidates built one conversation at a time, in conversation order, so the window's events need not
    be in memory at once.

    Curation breaks ties by input order, so `result` returns them in the order of the four passes a whole
    window used to get: (0) intent corrections in review order, (1) relabels from each conversation's
    outcome, (2) SFT/KTO examples from outcomes, in conversation order, (3) response corrections in review
    order; then the tool-calling sets: (4) action/policy corrections in review order, (5) failed outcome
    checks in conversation order."""

    # Candidates held in memory (all datasets) beyond which `_Ordered` parks them: ~150 MiB of them.
    PARK_AFTER = 200_000

    def __init__(self, cfg: Config, corrections: list[dict], kb: dict, tools: dict | None = None):
        self.cfg, self.kb = cfg, kb
        self.held = 0  # candidates in memory, not parked
        self.tools = tools or dict(BUILTIN_TOOLS)
        self.catalogue = tools_openai(self.tools)  # what every example offering no other tool carries
        self.spill = _Spill(self.catalogue)
        self.cands: dict[str, _Ordered] = {n: _Ordered(self.spill, n, self) for n in ALL_DATASETS}
        self.unusable: dict[str, Counter] = {n: Counter() for n in ALL_DATASETS}
        self.response_fixed = {o["conversation_id"] for o in corrections if o["stage"] == "response"}
        self.intent_fixed = {o["conversation_id"] for o in corrections if o["stage"] == "intent"}
        self.corrections_of: dict[str, list[tuple[int, dict]]] = {}
        for i, o in enumerate(corrections):
            self.corrections_of.setdefault(o["conversation_id"], []).append((i, o))
        self.seq = 0
        self.recording: list | None = None  # a conversation's candidates while `add(record=True)` builds them
        self.ordinal: int | None = None  # which of the conversation's corrections the candidates come from

    def _at(self, phase: int, position: int, ordinal: int | None = None) -> None:
        self.ordinal = ordinal
        for c in self.cands.values():
            c.key = (phase, position)

    def result(self) -> tuple[dict[str, _Ordered], dict[str, Counter]]:
        """Each dataset's candidates (read back with `examples()` when its turn comes) and unusable counts."""
        return dict(self.cands), self.unusable

    def add(self, conv: Conversation, record: bool = False) -> tuple[list, dict] | None:
        """Build the conversation's candidates; with `record`, also return what it gave (its candidates
        and unusable counts) for `candidate_store`."""
        seq, self.seq = self.seq, self.seq + 1
        mine = self.corrections_of.get(conv.conversation_id, ())
        if record:
            self.recording, totals = [], self.unusable
            self.unusable = {n: Counter() for n in ALL_DATASETS}
        try:
            for j, (i, o) in enumerate(mine):
                if o["stage"] == "intent":
                    self._at(0, i, j)
                    self._intent_correction(conv, o)
            self._at(1, seq)
            self._relabel_from_outcome(conv)
            self._at(2, seq)
            self._from_outcome(conv)
            for j, (i, o) in enumerate(mine):
                if o["stage"] == "response":
                    self._at(3, i, j)
                    self._response_correction(conv, o)
            for j, (i, o) in enumerate(mine):
                if o["stage"] in ("action", "policy"):
                    self._at(4, i, j)
                    self._action_correction(conv, o)
            self._at(5, seq)
            self._failed_checks(conv)
        finally:
            if record:
                recorded, self.recording = self.recording, None
                mine_unusable = {n: dict(c) for n, c in self.unusable.items() if c}
                for n, c in self.unusable.items():
                    totals[n].update(c)
                self.unusable = totals
        if not record:
            return None
        return recorded, mine_unusable

    def add_stored(self, conversation_id: str, stored: list, unusable: dict) -> None:
        """What `add(record=True)` gave for the conversation on an earlier night, in the same places: the
        candidates of its corrections at the corrections' places tonight, the others at its own."""
        seq, self.seq = self.seq, self.seq + 1
        mine = self.corrections_of.get(conversation_id, ())
        for name, phase, j, values, blob in stored:
            example = candidate_store.example_of(values, self.spill.put_blob(blob))
            self.cands[name].push((phase, seq if j is None else mine[j][0]), example)
        for name, counts in unusable.items():
            self.unusable[name].update(counts)

    # Intent relabels ---------------------------------------------------------------------------------------
    def _relabel(self, conv, text, label, source, evidence, reviewer=None, **meta):
        w = self.cfg.relabel_weights
        if not text or not label:
            self.unusable["intent_relabels"][f"{source}: no customer text or label"] += 1
            return
        rec = {"text": text, "label": label, "source": source, "weight": float(w[source]),
               "conversation_id": conv.conversation_id, "fact_date": _fact_date(conv), **meta}
        self.cands["intent_relabels"].append(Example(
            "intent_relabels", conv.conversation_id, source, key=text, records={"intent_relabel": rec},
            evidence=evidence, group=label, label=label, reviewer=reviewer, weight=float(w[source]),
            meta={"ts": str(meta.get("reviewed_at") or "")}))

    def _intent_correction(self, conv: Conversation, o: dict) -> None:
        text = next((u for ts, intent, _, u in reversed(conv.intents)
                     if intent == o["agent_decision"] and (o["ts_us"] is None or ts <= o["ts_us"])), None)
        text = text or next((t.text for t in conv.turns if t.role == "user"), None)
        self._relabel(conv, text, o["human_decision"], "override", (3, o["agent_confidence"] or 0.0),
                      reviewer=o["reviewer_id"], previous_label=o["agent_decision"],
                      agent_confidence=o["agent_confidence"], reviewers=[o["reviewer_id"]],
                      reviewed_at=str(o["ts"]) if o["ts"] else None, override_id=o["override_id"])

    def _relabel_from_outcome(self, conv: Conversation) -> None:
        cfg, oc = self.cfg, conv.outcome
        first_text = next((t.text for t in conv.turns if t.role == "user"), None)
        final = conv.intents[-1] if conv.intents else None
        if oc["escalated"] and oc["human_category"] and oc["human_category"] != oc["final_intent"]:
            self._relabel(conv, (final[3] if final else None) or first_text, oc["human_category"],
                          "escalation_category", (2, 0.0), reviewer=f"case:{oc['case_id']}",
                          previous_label=oc["final_intent"], agent_confidence=oc["final_confidence"],
                          reviewers=[f"case:{oc['case_id']}"])
        elif (final and conv.conversation_id not in self.intent_fixed and oc["final_intent"]
              and oc["human_category"] in (None, oc["final_intent"]) and oc["status"] in ("solved", "closed")
              and not (oc["reopen_count"] or 0) and oc["csat"] is not None and oc["csat"] >= cfg.csat_good):
            self._relabel(conv, final[3] or first_text, oc["final_intent"], "confirmed", (1, oc["csat"]),
                          previous_label=oc["final_intent"], agent_confidence=oc["final_confidence"], reviewers=[],
                          csat=oc["csat"])

    # SFT, KTO from outcomes ---------------------------------------------------------------------------------
    def _from_outcome(self, conv: Conversation) -> None:
        cfg, kb, cands, unusable = self.cfg, self.kb, self.cands, self.unusable
        oc = conv.outcome
        if conv.conversation_id in self.response_fixed:
            return
        good, bad = _good(cfg, oc), _bad(cfg, oc)
        if not (good or bad):
            return
        agent_idx = [i for i, t in enumerate(conv.turns) if t.role == "assistant"]
        if good:
            if not agent_idx:
                unusable["sft"]["good outcome without an agent response"] += 1
                unusable["kto"]["good outcome without an agent response"] += 1
                return
            last = agent_idx[-1]
            msgs = _messages(conv.turns[: last + 1])
            if len(msgs) < 2 or msgs[-1]["role"] != "assistant":
                unusable["sft"]["no customer message before the agent's answer"] += 1
                unusable["kto"]["no customer message before the agent's answer"] += 1
                return
            system = _system(cfg, conv, kb)
            trl = {"messages": [system, *msgs]}
            evidence = (2, oc["csat"] or 0, oc["n_thumbs_up"] or 0)
            cands["sft"].append(Example("sft", conv.conversation_id, "good_outcome", key=_key(msgs), evidence=evidence,
                                        records={"trl_messages": trl, "openai_chat": {"messages": [system, *msgs]}},
                                        meta={"fact_date": _fact_date(conv), "csat": oc["csat"]}))
            first = _messages(conv.turns[: agent_idx[0] + 1])  # the answer to the request, not the closing
            if len(first) >= 2 and first[-1]["role"] == "assistant":
                _kto(cands, unusable, conv.conversation_id, [_system(cfg, conv, kb, before=conv.turns[agent_idx[0]].ts),
                     *first[:-1]], first[-1]["content"], True, "good_outcome", evidence, _fact_date(conv))
            else:
                unusable["kto"]["no customer message before the agent's answer"] += 1
        else:
            if not agent_idx:
                unusable["kto"]["bad outcome without an agent response"] += 1
                return
            # CSAT judges the conversation: label the agent's answer to the request (its first response, not
            # a closing courtesy); a thumbs-down judges the response it was given to.
            j = agent_idx[0]
            if oc["csat"] is None and conv.thumbs:
                down = next((ts for ts, r in conv.thumbs if r == -1), None)
                before = [i for i in agent_idx if down is None or conv.turns[i].ts <= down]
                j = (before or agent_idx)[-1]
            msgs = _messages(conv.turns[: j + 1])
            if len(msgs) < 2 or msgs[-1]["role"] != "assistant":
                unusable["kto"]["no customer message before the agent's answer"] += 1
                return
            system = _system(cfg, conv, kb, before=conv.turns[j].ts)
            _kto(cands, unusable, conv.conversation_id, [system, *msgs[:-1]], msgs[-1]["content"], False,
                 "bad_outcome", (2, 5 - (oc["csat"] or 3)), _fact_date(conv))

    # Human response corrections: SFT, preference pairs, both sides for KTO ----------------------------------
    def _response_correction(self, conv: Conversation, o: dict) -> None:
        cfg, kb, cands, unusable = self.cfg, self.kb, self.cands, self.unusable
        human = (o["human_decision"] or "").strip()
        prompt, rejected, why = _correction_prompt(cfg, conv, kb, o) if human else (None, "", "empty human response")
        if prompt is None:
            for n in ("sft", "preference", "kto"):
                unusable[n][f"correction: {why}"] += 1
            return
        ev = (3, o["agent_confidence"] or 0.0)
        meta = {"fact_date": _fact_date(conv), "override_id": o["override_id"], "reviewer": o["reviewer_id"]}
        openai_msgs = [{**m, "weight": 0} if m["role"] == "assistant" else m for m in prompt]
        cands["sft"].append(Example(
            "sft", conv.conversation_id, "human_correction", key=_key(prompt[1:] + [{"content": human}]), evidence=ev,
            records={"trl_messages": {"messages": [*prompt, {"role": "assistant", "content": human}]},
                     "openai_chat": {"messages": [*openai_msgs, {"role": "assistant", "content": human, "weight": 1}]}},
            meta=meta))
        if curation.normalise(rejected) == curation.normalise(human):
            unusable["preference"]["correction identical to the agent's response"] += 1
        else:
            chosen, rej = [{"role": "assistant", "content": human}], [{"role": "assistant", "content": rejected.strip()}]
            cands["preference"].append(Example(
                "preference", conv.conversation_id, "human_correction",
                key=_key(prompt[1:]) + "\n" + human + "\n" + rejected, evidence=ev, meta=meta,
                records={"trl_preference": {"prompt": prompt, "chosen": chosen, "rejected": rej},
                         "openai_dpo": {"input": {"messages": prompt}, "preferred_output": chosen,
                                        "non_preferred_output": rej}}))
        _kto(cands, unusable, conv.conversation_id, prompt, human, True, "correction_chosen", ev, meta["fact_date"])
        _kto(cands, unusable, conv.conversation_id, prompt, rejected.strip(), False, "correction_rejected", ev,
             meta["fact_date"])


def _key(msgs: list[dict]) -> str:
    return "\n".join(m["content"] for m in msgs)


def _kto(cands, unusable, cid, prompt, completion, label, source, evidence, fact_date) -> None:
    if not completion:
        unusable["kto"][f"{source}: empty completion"] += 1
        return
    user = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
    cands["kto"].append(Example(
        "kto", cid, source, key=user + "\n" + completion, evidence=evidence, group=str(label).lower(),
        label=str(label).lower(), reviewer=cid, meta={"fact_date": fact_date},
        records={"trl_unpaired": {"prompt": prompt, "completion": [{"role": "assistant", "content": completion}],
                                  "label": label}}))

