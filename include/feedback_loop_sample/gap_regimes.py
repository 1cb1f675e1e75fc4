"""Labelling regimes for knowledge-base gap evaluation (issue 15), planted into the sample generator.

Why: with today's defaults the agent's classifier knows every Banking77 intent, the gap intents included,
and humans label cases and correct intents. In production most conversations are never labelled, and an
agent that lacks the knowledge about a topic usually also lacks the class: it routes the request to its
nearest known intent. Each switch below plants one of those situations; with every switch off the
generator's output is byte-identical to the default (nothing here draws from the generator's RNG streams).

- `human_labels=False`: no case category and no override rows at all (nobody labelled anything).
- `routing`: what the agent predicts for an *unknown* request (an intent without article, or an
  out-of-scope one): "builtin" (the default error model, which knows the gap intents), "fixed" (always the
  nearest known intent, as confidently as a right answer), "random" (a random known intent) or
  "low_confidence" (the nearest known intent with confidence below 0.45).
- `out_of_scope_share`: that share of conversations open with something the bank does not handle, or
  with chit-chat (texts below); the answer key's `true_intent` is `out_of_scope:<topic>` or `chit_chat`.
- `human_replies=True`: escalated conversations get the human agent's reply as an `agent_response`
  event after the `escalated` event (the material a gap's draft article is made from).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROUTINGS = ("builtin", "fixed", "random", "low_confidence")
S_REGIME = 101  # RNG stream of this module: far from the generator's streams, so theirs never shift

# Requests a bank's support desk does not handle, and chit-chat. Hand-written (Banking77 has no
# out-of-scope class): several wordings per topic, as customers type them.
OUT_OF_SCOPE = {
    "out_of_scope:track_parcel": (
        "where is my package? it was supposed to arrive yesterday", "can you track my parcel for me",
        "my order from the online shop has not been delivered", "the courier says my parcel was delivered but it wasn't",
        "how do I track a delivery from the store", "I need the tracking number for my order"),
    "out_of_scope:flight_booking": (
        "can you book me a flight to Lisbon next friday", "I want to change my flight seat",
        "is my flight delayed", "how much luggage can I take on the plane",
        "book a return flight to Berlin for two adults", "cancel my hotel booking for the weekend"),
    "out_of_scope:phone_contract": (
        "my mobile data is not working since this morning", "I want to upgrade my phone contract",
        "why is my phone bill so high this month", "how do I port my number to another network",
        "my broadband is down again", "I need a new sim for my phone contract"),
    "out_of_scope:recipes": (
        "what should I cook for dinner tonight", "give me a recipe for banana bread",
        "how long do I boil an egg", "what wine goes with salmon", "any ideas for a vegetarian lunch",
        "how do I make pancakes without eggs"),
    "chit_chat": (
        "hi", "hello there", "are you a robot?", "tell me a joke", "good morning!", "how are you today",
        "what's your name", "you are very slow", "lol", "ok", "nice weather today isn't it", "thanks bye"),
}


@dataclass(frozen=True)
class GapRegime:
    """The planted labelling situation; the default instance changes nothing."""

    human_labels: bool = True
    routing: str = "builtin"
    out_of_scope_share: float = 0.0
    human_replies: bool = False

    def __post_init__(self) -> None:
        if self.routing not in ROUTINGS:
            raise ValueError(f"unknown routing {self.routing!r}: one of {ROUTINGS}")
        if not 0.0 <= self.out_of_scope_share < 1.0:
            raise ValueError("out_of_scope_share must be in [0, 1)")

    @property
    def active(self) -> bool:
        return self != GapRegime()

    def as_dict(self) -> dict:
        return asdict(self)


OOS_LABELS = tuple(OUT_OF_SCOPE)
_OOS_TEXTS = [t for k in OOS_LABELS for t in OUT_OF_SCOPE[k]]
_OOS_LABEL_OF_TEXT = np.array([i for i, k in enumerate(OOS_LABELS) for _ in OUT_OF_SCOPE[k]])


def _rng(seed: int, day: date, what: int) -> np.random.Generator:
    return np.random.default_rng([seed, day.toordinal(), S_REGIME, what])


def nearest_known(st, gap: np.ndarray) -> np.ndarray:
    """Per intent, the most similar intent that has an article (itself for a covered intent)."""
    out = np.arange(len(st.intents))
    for i in np.flatnonzero(gap):
        known = [int(j) for j in st.neigh[i] if not gap[j]]
        out[i] = known[0] if known else int(np.flatnonzero(~gap)[0])
    return out


def route(regime: GapRegime, g, c) -> None:
    """Mark out-of-scope conversations and set the agent's prediction for unknown requests (in place).

    Called by `_Gen.core` after the built-in prediction and before anything reads it."""
    n = c.n
    rng = _rng(g.w.seed, c.day, 0)
    u = rng.random((4, n))
    c.oos = np.zeros(n, bool)
    c.oos_text = np.full(n, -1)
    if regime.out_of_scope_share > 0:
        c.oos = u[0] < regime.out_of_scope_share
        c.oos[c.pii_rows] = False  # those openings carry personal data around a real request
        c.oos_text = np.where(c.oos, rng.integers(0, len(_OOS_TEXTS), n), -1)
        c.gap = c.gap | c.oos  # retrieval finds nothing useful, as for a missing article
    unknown = c.gap
    if regime.routing == "builtin":
        # The default error model already predicts gap intents; an out-of-scope request gets a random
        # known intent with a middling confidence.
        pick = rng.integers(0, len(g.st.intents), n)
        c.pred = np.where(c.oos, pick, c.pred)
        c.conf = np.where(c.oos, np.round(0.2 + 0.4 * u[1], 3), c.conf)
        return
    known = np.flatnonzero(~g.w.gap)
    near = nearest_known(g.st, g.w.gap)
    # An out-of-scope request's "nearest" known intent: a fixed one per out-of-scope topic.
    oos_near = known[(np.arange(len(OOS_LABELS)) * 7 + g.w.seed) % len(known)]
    nearest = np.where(c.oos, oos_near[_OOS_LABEL_OF_TEXT[np.maximum(c.oos_text, 0)]], near[c.intent])
    if regime.routing == "fixed":
        pred, conf = nearest, 0.55 + 0.44 * rng.beta(5.0, 1.6, n)
    elif regime.routing == "random":
        pred, conf = known[rng.integers(0, len(known), n)], 0.15 + 0.65 * rng.beta(2.2, 2.8, n)
    else:
        pred, conf = nearest, 0.1 + 0.35 * u[2]
    c.pred = np.where(unknown, pred, c.pred).astype(np.int64)
    c.conf = np.where(unknown, np.round(conf, 3), c.conf)


def reasons(c, reason: np.ndarray, r_missing: int, r_customer: int) -> np.ndarray:
    """Out-of-scope escalations are the customer's request for a human, not missing knowledge."""
    if not getattr(c, "oos", np.zeros(0)).any():
        return reason
    return np.where(c.oos & (reason == r_missing), r_customer, reason)


def _reply(g, intent: int, r: np.random.Generator) -> str:
    """What a human agent writes once the conversation is handed over: the answer the KB lacks."""
    from feedback_loop_sample.generator.common import _section

    st = g.st
    title = st.titles[intent].lower()
    days = int(r.integers(1, 6))
    return (f"Thanks for waiting. About {title}: go to {_section(st.intents[intent])} in the app and "
            f"follow the steps there; if it still fails we fix it by hand within {days} working days. "
            f"{st.policy_text[intent]}")


def events(regime: GapRegime, g, day: date, table: pa.Table) -> tuple[pa.Table, list]:
    """Out-of-scope openings and their answer key, and the human replies after escalations."""
    c = g.core(day)
    pii: list[str] = []
    oos = getattr(c, "oos", None)
    if oos is None or not (oos.any() or regime.human_replies):
        return table, pii
    table = table.cast(pa.schema([pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f
                                  for f in table.schema]))
    conv = np.array([int(x.rsplit("-", 1)[1]) - 1 for x in table["conversation_id"].to_pylist()])
    etype = np.array(table["event_type"].to_pylist(), dtype=object)
    if oos.any():
        turn0 = np.array(table["turn"].to_pylist()) == 0
        cm = etype == "customer_message"
        hit_text = oos[conv] & cm & turn0
        hit_query = oos[conv] & (etype == "kb_query") & turn0
        text = np.array(table["text"].to_pylist(), dtype=object)
        query = np.array(table["kb_query"].to_pylist(), dtype=object)
        truth = np.array(table["true_intent"].to_pylist(), dtype=object)
        oos_text = np.array(_OOS_TEXTS, dtype=object)
        text[hit_text] = oos_text[c.oos_text[conv[hit_text]]]
        query[hit_query] = oos_text[c.oos_text[conv[hit_query]]]
        hit_truth = oos[conv] & cm
        truth[hit_truth] = np.array(OOS_LABELS, dtype=object)[_OOS_LABEL_OF_TEXT[c.oos_text[conv[hit_truth]]]]
        for name, values in (("text", text), ("kb_query", query), ("true_intent", truth)):
            table = table.set_column(table.schema.get_field_index(name), name, pa.array(values.tolist(), pa.string()))
    if regime.human_replies:
        rows = np.flatnonzero(etype == "escalated")
        if rows.size:
            r = _rng(g.w.seed, day, 1)
            from feedback_loop_sample.generator.common import _pii, _pyrng

            pr = _pyrng(g.w.seed, day, S_REGIME)
            esc = table.take(pa.array(rows))
            texts = []
            for i in conv[rows]:
                if oos[i]:
                    texts.append("Sorry, that is not something our bank can help with; please contact the "
                                 "company that provides the service.")
                    continue
                t = _reply(g, int(c.intent[i]), r)
                if pr.random() < 0.1:
                    s = _pii(pr, "email")
                    pii.append(s)
                    t += f" I have also sent the details to {s}."
                texts.append(t)
            ids = [e.rsplit("-", 1)[0] + f"-{int(e.rsplit('-', 1)[1]) + 1:02d}" for e in esc["event_id"].to_pylist()]
            ts = pc.add(esc["ts"], pa.scalar(90_000, esc.schema.field("ts").type))  # 90 s later (epoch ms)
            replies = esc
            for name, values in (("event_id", pa.array(ids, pa.string())), ("ts", ts.cast(esc.schema.field("ts").type)),
                                 ("event_type", pa.array(["agent_response"] * len(ids), pa.string())),
                                 ("text", pa.array(texts, pa.string())),
                                 ("_clean", pa.array([False] * len(ids)))):
                replies = replies.set_column(replies.schema.get_field_index(name), name, values)
            table = pa.concat_tables([table, replies]).sort_by([("ts", "ascending"), ("event_id", "ascending")])
    return table, pii


def _conv_flags(g, ids: list, attr: str) -> np.ndarray:
    """Per conversation id (CONV-YYYYMMDD-nnnnnn or None), the flag `attr` of its simulated day."""
    out = np.zeros(len(ids), bool)
    for k, cid in enumerate(ids):
        if not cid:
            continue
        _, ymd, num = cid.split("-")
        day = datetime.strptime(ymd, "%Y%m%d").date()
        core = g.cores.get(day)
        flags = getattr(core, attr, None) if core is not None else None
        if flags is not None and int(num) - 1 < len(flags):
            out[k] = bool(flags[int(num) - 1])
    return out


def cases(regime: GapRegime, g, table: pa.Table) -> pa.Table:
    """No human labels: no case category. Out-of-scope cases get none either (no intent fits them)."""
    if regime.human_labels and not regime.out_of_scope_share:
        return table
    idx = table.schema.get_field_index("category")
    if not regime.human_labels:
        drop = np.ones(table.num_rows, bool)
    else:
        drop = _conv_flags(g, table["conversation_id"].to_pylist(), "oos")
    cat = table["category"].combine_chunks().cast(pa.string())
    return table.set_column(idx, "category", pc.if_else(pa.array(drop), pa.scalar(None, pa.string()), cat))


def overrides(regime: GapRegime, g, table: pa.Table, pii: list, natural: list) -> tuple[pa.Table, list, list]:
    """No human labels: no review rows at all. Out-of-scope conversations are not reviewed."""
    if not regime.human_labels:
        return table.slice(0, 0), [], []
    if regime.out_of_scope_share:
        keep = ~_conv_flags(g, table["conversation_id"].to_pylist(), "oos")
        ids = set(table.filter(pa.array(~keep))["override_id"].to_pylist())
        table = table.filter(pa.array(keep))
        natural = [o for o in natural if o not in ids]
    return table, pii, natural


def ground_truth(regime: GapRegime, world) -> dict:
    """What the answer key adds: the regime and, per gap intent, the intent the agent routes it to."""
    st = world.st
    near = nearest_known(st, world.gap)
    return {"gap_regime": regime.as_dict(), "out_of_scope_labels": list(OOS_LABELS),
            "routed_to": ({st.intents[i]: st.intents[near[i]] for i in np.flatnonzero(world.gap)}
                          if regime.routing in ("fixed", "low_confidence") else {})}
