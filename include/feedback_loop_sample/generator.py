"""Seeded sample-data generator: a realistic landing area for any date range and scale.

Why it exists: every stage of the loop (land, quality, signals, gap mining, datasets) needs input that
behaves like production -- mixed file formats, CRM cases exported again as they change, surveys that
arrive days later, humans overriding the agent, personal data in free text, broken rows -- and a hidden
answer key to score itself against. The answer key is `<landing>/_ground_truth.json` plus an extra
`true_intent` column on the `customer_message` rows of agent_events.

Layout: `<landing>/<source>/dt=YYYY-MM-DD/part-0000.<ext>`, dt = the UTC day the export covers.

Determinism: every random draw comes from an RNG seeded with (seed, day, stream). Effects that cross
days (a case solved tomorrow and reopened next week, a survey three days after resolution, a customer
who comes back within seven days) are computed by re-deriving the earlier days they depend on, so the
bytes of a day never depend on which date range the call covered.

Scale: rows are built as numpy arrays (one vectorised draw per column, never a Python loop per event),
turned into Arrow tables and serialised by DuckDB; only the few free-text rows with personal data are
built in Python.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
from feedback_loop.ingest.contract import EVENT_TYPES, SOURCE_NAMES, SOURCES

from feedback_loop_sample import gap_regimes

DATA = Path(__file__).resolve().parents[1] / "feedback_loop" / "data"  # the product's bundled Banking77 and ABCD
GROUND_TRUTH = "_ground_truth.json"
GZIP_LEVEL = 1  # 6x faster than level 6 for ~35 % more bytes: at level 6 compression dominated the run
WRITE_SLICE = 200_000  # rows rendered per DuckDB COPY

MS_MIN = 60_000
MS_H = 3_600_000
MS_DAY = 86_400_000
START_MAX_MS = MS_DAY - 30 * MS_MIN  # conversations start early enough to end before midnight UTC
MAX_DUR_MS = 28 * MS_MIN
REENGAGE_SHARE = 0.08  # share of a day's conversations opened by a customer back on the same intent
RETURN_WINDOW = 7  # ... within this many days
EXTERNAL_CASE_SHARE = 0.03  # cases opened outside the agent (phone, e-mail): conversation_id null
# How many days after its conversation a row can still be exported (see the delays in _Gen.core):
# closed = last solve + 72 h, last solve <= 30 h + 96 h + 24 h after the conversation.
CASE_LOOKBACK, SURVEY_LOOKBACK, OVERRIDE_LOOKBACK, CHECK_LOOKBACK = 10, 5, 2, 1

# RNG streams: one per concern, so adding a draw to one never shifts another.
S_BASE, S_RET, S_OUT, S_PII, S_EVENTS, S_MAL, S_OV, S_SV, S_EXT = range(9)

ET = {name: i for i, name in enumerate(EVENT_TYPES)}
CHANNELS = ("chat", "email", "voice")
POLICY_OUTCOMES = ("pass", "fail", "waived")
REASONS = ("missing_knowledge", "customer_request", "policy_exception", "low_confidence")
R_MISSING, R_CUSTOMER, R_POLICY, R_LOWCONF = range(4)
STAGES = ("intent", "action", "response", "policy")
OUTCOMES = ("corrected", "escalated", "approved")
TZ_OFFSETS = (60, 120, 330, -300, -480, 540, 600, -180)  # minutes; a few customers are not in UTC
ERRORS = (
    ("timeout", "upstream model call timed out after 30 s"),
    ("rate_limit", "429 Too Many Requests from the model provider"),
    ("tool_error", "back-end tool returned HTTP 500"),
    ("context_length", "prompt exceeded the model's context window"),
)
MODELS = {  # model per step, and price per million input / output tokens (USD)
    "clf": ("intent-clf-v3", 0.02, 0.02),
    "embed": ("text-embedding-3-small", 0.02, 0.0),
    "llm": ("gpt-4.1-mini", 0.40, 1.60),
}
# (action, expected state after it, a state the check may observe instead)
ACTIONS = (
    ("freeze_card", "card_frozen", "card_active"),
    ("lock_app_access", "app_locked", "app_active"),
    ("cancel_transfer", "transfer_cancelled", "transfer_completed"),
    ("issue_refund", "refund_issued", "refund_pending"),
    ("open_dispute", "dispute_opened", "no_dispute"),
    ("unblock_pin", "pin_unblocked", "pin_blocked"),
    ("send_reset_link", "reset_link_sent", "not_sent"),
    ("close_account", "account_closed", "account_active"),
    ("update_profile", "profile_updated", "profile_unchanged"),
    ("send_verification_link", "verification_link_sent", "not_sent"),
    ("order_card", "card_ordered", "no_order"),
    ("create_virtual_card", "virtual_card_active", "no_virtual_card"),
    ("activate_card", "card_active", "card_inactive"),
    ("retry_top_up", "top_up_completed", "top_up_failed"),
    ("retry_transfer", "transfer_completed", "transfer_failed"),
)
_ACTION_OF_INTENT = {
    "lost_or_stolen_card": "freeze_card", "compromised_card": "freeze_card",
    "lost_or_stolen_phone": "lock_app_access", "cancel_transfer": "cancel_transfer",
    "request_refund": "issue_refund", "transaction_charged_twice": "open_dispute",
    "card_payment_not_recognised": "open_dispute", "direct_debit_payment_not_recognised": "open_dispute",
    "cash_withdrawal_not_recognised": "open_dispute", "extra_charge_on_statement": "open_dispute",
    "pin_blocked": "unblock_pin", "change_pin": "send_reset_link", "passcode_forgotten": "send_reset_link",
    "terminate_account": "close_account", "edit_personal_details": "update_profile",
    "verify_my_identity": "send_verification_link", "unable_to_verify_identity": "send_verification_link",
    "get_physical_card": "order_card", "order_physical_card": "order_card", "getting_spare_card": "order_card",
    "card_swallowed": "order_card", "card_about_to_expire": "order_card",
    "getting_virtual_card": "create_virtual_card", "get_disposable_virtual_card": "create_virtual_card",
    "activate_my_card": "activate_card", "top_up_failed": "retry_top_up", "top_up_reverted": "retry_top_up",
    "pending_top_up": "retry_top_up", "failed_transfer": "retry_transfer", "declined_transfer": "retry_transfer",
}

FOLLOW_GOOD = ("thanks!", "great, thank you", "ok thanks", "perfect, that worked", "thank you so much", "got it")
FOLLOW_BAD = (
    "still not working", "that didn't help", "that's not what I asked", "can I talk to a human?",
    "this is the third time I'm asking", "it's been days and nothing changed", "no, my question is different",
)
RESP_VARIANTS = ("I can help with {t}. {a}", "Here is what you need to know about {t}: {a}",
                 "Sorry for the trouble with {t}. {a}")
GENERIC_RESP = "I can help with that. Could you tell me a bit more about what happened?"
FALLBACKS = (
    "I'm sorry, I couldn't find an answer to that. Let me connect you with a colleague who can help.",
    "I don't have information about that yet. A member of our team will follow up with you.",
    "I'm not sure I understood. Could you rephrase your question?",
)
FOLLOW_RESP_GOOD = ("You're welcome! Is there anything else I can help you with?", "Glad I could help. Have a great day!")
FOLLOW_RESP_BAD = (
    "I'm sorry about that. Let me look into it further.",
    "I understand this is frustrating. I'm checking the details of your account now.",
    "Let me transfer you to a specialist who can help.",
)
HANDOVER = ("Transferring you to a human agent now.", "A colleague will take over this conversation shortly.")
COMMENTS_GOOD = ("Quick and helpful, thanks!", "Solved my problem in minutes.", "Great service.",
                 "Easy, the assistant knew exactly what to do.", "Clear answer, no waiting.")
COMMENTS_BAD = ("The bot didn't understand my question.", "Had to explain my problem three times.",
                "Still waiting for a real answer.", "Not helpful at all, I needed a human.",
                "The answer was about something else.", "Took far too long.")


def _rng(seed: int, day: date, stream: int) -> np.random.Generator:
    """The RNG of one (seed, day, concern): the root of per-day determinism."""
    return np.random.default_rng([seed, day.toordinal(), stream])


def _pyrng(seed: int, day: date, stream: int) -> random.Random:
    """A stdlib RNG for the few per-row string draws (faster than numpy one value at a time)."""
    return random.Random(seed * 10_000_019 + day.toordinal() * 101 + stream)


def _ymd(day: date) -> str:
    return day.strftime("%Y%m%d")


def _day_ms(day: date) -> int:
    return (day - date(1970, 1, 1)).days * MS_DAY


def _title(intent: str) -> str:
    """'card_arrival' -> 'Card arrival' (an article title a human would write)."""
    words = intent.strip("?").replace("_", " ").split()
    fix = {"atm": "ATM", "pin": "PIN", "apple": "Apple", "google": "Google", "visa": "Visa",
           "mastercard": "Mastercard", "top": "top", "fiat": "fiat"}
    words = [fix.get(w.lower(), w.lower()) for w in words]
    text = " ".join(words).replace("top up", "top-up")
    return text[0].upper() + text[1:]


def _section(intent: str) -> str:
    for key, sec in (("top_up", "Top up"), ("topping", "Top up"), ("transfer", "Payments > Transfers"),
                     ("refund", "Payments > Refunds"), ("exchange", "Currencies"), ("currenc", "Currencies"),
                     ("verify", "Account > Verification"), ("identity", "Account > Verification"),
                     ("pin", "Security"), ("passcode", "Security"), ("atm", "Cash withdrawals"),
                     ("cash", "Cash withdrawals"), ("card", "Cards"), ("account", "Account")):
        if key in intent.lower():
            return sec
    return "Help"


# ----------------------------------------------------------------------------- PII
# Every string made here is recorded in the ground truth, so tests can prove none survives redaction.

_FIRST = ("anna", "james", "maria", "li", "oliver", "fatima", "lukas", "chloe", "noah", "sofia", "amir", "emma")
_LAST = ("smith", "muller", "dubois", "garcia", "chen", "kowalski", "rossi", "novak", "jones", "martin")
_DOMAINS = ("example.com", "example.org", "mail.example.net", "inbox.example.co.uk")


def _luhn_digit(payload: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch)
        if i % 2 == 0:  # these positions are doubled once the check digit is appended
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def _iban_check(country: str, bban: str) -> str:
    digits = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{98 - int(digits) % 97:02d}"


def _pii(r: random.Random, kind: str) -> str:
    """One realistic personal-data string of `kind` (email, phone, card, iban)."""
    if kind == "email":
        return f"{r.choice(_FIRST)}.{r.choice(_LAST)}{r.randint(1, 99)}@{r.choice(_DOMAINS)}"
    if kind == "phone":
        style = r.randrange(4)
        if style == 0:
            return f"+1 {r.choice((415, 212, 646, 312, 206))}-555-01{r.randint(0, 99):02d}"
        if style == 1:
            return f"+44 20 7946 0{r.randint(0, 999):03d}"
        if style == 2:
            return f"+49 30 {r.randint(100000, 999999)}"
        return "+33 1 " + " ".join(f"{r.randint(10, 99)}" for _ in range(4))
    if kind == "card":
        payload = r.choice(("4", "51", "52", "53", "54", "55"))
        payload += "".join(str(r.randrange(10)) for _ in range(15 - len(payload)))
        number = payload + _luhn_digit(payload)
        sep = r.choice((" ", "-", ""))
        return sep.join(number[i:i + 4] for i in range(0, 16, 4))
    country = r.choice(("DE", "GB", "FR", "NL"))
    if country == "DE":
        bban = "".join(str(r.randrange(10)) for _ in range(18))
    elif country == "GB":
        bban = "".join(r.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(4))
        bban += "".join(str(r.randrange(10)) for _ in range(14))
    elif country == "FR":
        bban = "".join(str(r.randrange(10)) for _ in range(23))
    else:
        bban = "".join(r.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4))
        bban += "".join(str(r.randrange(10)) for _ in range(10))
    iban = country + _iban_check(country, bban) + bban
    return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4)) if r.random() < 0.6 else iban


_OPENING_PII = {
    "email": ("My email is {}.", "You can reach me at {}", "account email: {}"),
    "phone": ("Call me on {}.", "My number is {}", "please phone me back at {}"),
    "card": ("My card number is {}.", "card {} was charged", "the card ending in this: {}"),
    "iban": ("Please send it to my IBAN {}.", "IBAN: {}", "my account is {}"),
}


def _pii_kind(r: random.Random) -> str:
    return r.choices(("email", "phone", "card", "iban"), weights=(35, 30, 20, 15))[0]


# ----------------------------------------------------------------------------- static data (seed-free)


@dataclass(frozen=True)
class _Static:
    intents: tuple
    titles: tuple
    utt_text: list  # Banking77 train utterances, grouped by intent
    utt_start: np.ndarray
    utt_count: np.ndarray
    neigh: np.ndarray  # (77, 4) most similar intents: where the built-in classifier's errors go
    neigh_p: np.ndarray  # (77, 4) cumulative probabilities over those neighbours
    err: np.ndarray  # (77,) built-in classifier error rate: higher for intents with close neighbours
    policy: tuple  # per intent, plus one for labels outside the 77: "POL-<abcd subflow>"
    policy_text: tuple  # one guideline sentence per policy
    action: np.ndarray  # (77,) index into ACTIONS or -1
    resp: tuple  # per intent x variant: the agent's answer text


@lru_cache(maxsize=1)
def _static() -> _Static:
    """Banking77, the ABCD guidelines and the confusion neighbourhoods (TF-IDF), loaded once per process."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    intents = tuple(json.loads((DATA / "banking77" / "categories.json").read_text()))
    index = {c: i for i, c in enumerate(intents)}
    by_intent: list[list[str]] = [[] for _ in intents]
    with open(DATA / "banking77" / "train.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            by_intent[index[row["category"]]].append(" ".join(row["text"].split()))
    utt_text = [t for group in by_intent for t in group]
    utt_count = np.array([len(g) for g in by_intent], dtype=np.int64)
    utt_start = np.concatenate([[0], np.cumsum(utt_count)[:-1]])

    docs = [" ".join(g) + (" " + c.replace("_", " ")) * 5 for c, g in zip(intents, by_intent)]
    vec = TfidfVectorizer(sublinear_tf=True, stop_words="english", ngram_range=(1, 2), min_df=2).fit(docs)
    x = vec.transform(docs)
    sim = (x @ x.T).toarray()
    np.fill_diagonal(sim, 0.0)
    neigh = np.argsort(-sim, axis=1, kind="stable")[:, :4]
    w = np.take_along_axis(sim, neigh, axis=1) ** 2 + 1e-9
    neigh_p = np.cumsum(w / w.sum(1, keepdims=True), axis=1)
    maxsim = sim.max(1)
    err = np.clip(0.17 * maxsim / maxsim.mean(), 0.03, 0.45)

    # Policy per intent: the ABCD subflow whose guideline text is closest to the intent's utterances.
    guide = json.loads((DATA / "abcd" / "guidelines.json").read_text())
    sub_names, sub_docs, sub_sent = [], [], []
    for flow in guide.values():
        for name, sub in flow["subflows"].items():
            texts = [a["text"] for a in sub["actions"]] + sub.get("instructions", [])
            sub_names.append("POL-" + re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_"))
            sub_docs.append(f"{name} {flow['description']} " + " ".join(texts))
            sentence = re.sub(r"\s+", " ", re.sub(r"[\[\]]", "", texts[0])).strip().rstrip(":")
            sub_sent.append(sentence if sentence.endswith(".") else sentence + ".")
    pvec = TfidfVectorizer(stop_words="english").fit(sub_docs + docs)
    psim = (pvec.transform(docs) @ pvec.transform(sub_docs).T).toarray()
    pick = psim.argmax(1)
    general = sub_names.index("POL-policy_faq") if "POL-policy_faq" in sub_names else 0
    policy = tuple(sub_names[j] for j in pick) + (sub_names[general],)
    policy_text = tuple(sub_sent[j] for j in pick) + (sub_sent[general],)

    action_idx = {a[0]: i for i, a in enumerate(ACTIONS)}
    action = np.array([action_idx.get(_ACTION_OF_INTENT.get(c, ""), -1) for c in intents], dtype=np.int64)
    titles = tuple(_title(c) for c in intents)
    answer = {c: f"Open the app, go to {_section(c)} and follow the steps there; it usually takes a few minutes."
              for c in intents}
    resp = tuple(v.format(t=t.lower(), a=answer[c]) for c, t in zip(intents, titles) for v in RESP_VARIANTS)
    return _Static(intents, titles, utt_text, utt_start, utt_count, neigh, neigh_p, err, policy, policy_text,
                   action, resp)


# ----------------------------------------------------------------------------- the world (seed-only)


@dataclass
class _World:
    seed: int
    st: _Static
    popularity: np.ndarray
    gap: np.ndarray  # bool per intent: no published article (the true knowledge gaps)
    article: np.ndarray  # published article index per intent, -1 for a gap
    kb_ids: list  # published article ids, by article index
    kb: list  # the snapshot rows (with a fixed reference date for updated_at)
    pool: int
    cust_off: np.ndarray  # UTC offset (minutes) per customer
    cust_cdf: np.ndarray  # sampling distribution over the customer pool (some customers write often)
    vocab: list  # every text an event can carry, except the day's PII openings
    v: dict  # offsets of the text groups inside vocab


@lru_cache(maxsize=4)
def _world(seed: int, kb_gap_share: float, pool: int) -> _World:
    """What depends only on the seed: intent popularity, the KB and its gaps, the customer pool."""
    st = _static()
    k = len(st.intents)
    rng = np.random.default_rng([seed, 0, 77])
    popularity = rng.dirichlet(np.full(k, 2.0))
    order = rng.permutation(k)
    gap = np.zeros(k, dtype=bool)
    gap[order[: round(kb_gap_share * k)]] = True

    ref = datetime(2025, 1, 1, tzinfo=UTC)
    article = np.full(k, -1, dtype=np.int64)
    kb_ids, kb = [], []
    for i, intent in enumerate(st.intents):
        if gap[i]:
            continue
        utts = st.utt_text[st.utt_start[i]: st.utt_start[i] + st.utt_count[i]]
        ex = [utts[j] for j in rng.choice(len(utts), 3, replace=False)]
        body = (f"{st.titles[i]}. Customers ask things like: " + " / ".join(f'"{u}"' for u in ex)
                + f". {st.resp[i * 3].split('. ', 1)[1]} Policy: {st.policy_text[i]}")
        aid = f"KB-{i + 1:04d}"
        article[i] = len(kb_ids)
        kb_ids.append(aid)
        kb.append({"article_id": aid, "title": st.titles[i], "body": body, "intents": [intent],
                   "status": "published", "updated_at": ref + timedelta(minutes=int(rng.integers(0, 525_600)))})
    # A couple of drafts (one on a gap: someone has started writing it) and archived old versions.
    gaps, covered = np.flatnonzero(gap), np.flatnonzero(~gap)
    extra = [(int(gaps[0]) if len(gaps) else int(covered[0]), "draft"), (int(covered[-1]), "draft"),
             (int(covered[0]), "archived"), (int(covered[len(covered) // 2]), "archived")]
    for j, (i, status) in enumerate(extra):
        kb.append({"article_id": f"KB-{k + 1 + j:04d}",
                   "title": st.titles[i] + (" (draft)" if status == "draft" else ""),
                   "body": f"{st.titles[i]}. " + ("Work in progress." if status == "draft" else "Superseded."),
                   "intents": [st.intents[i]], "status": status,
                   "updated_at": ref + timedelta(minutes=int(rng.integers(0, 525_600)))})

    w = (np.arange(pool) + 50.0) ** -0.7
    w = w[rng.permutation(pool)]
    cdf = np.cumsum(w / w.sum())
    cdf[-1] = 1.0
    off = np.where(rng.random(pool) < 0.12, rng.choice(TZ_OFFSETS, pool), 0).astype(np.int64)

    texts, v = [], {}
    for name, group in (("utt", st.utt_text), ("good", FOLLOW_GOOD), ("bad", FOLLOW_BAD), ("resp", st.resp),
                        ("generic", (GENERIC_RESP,)), ("fallback", FALLBACKS), ("fgood", FOLLOW_RESP_GOOD),
                        ("fbad", FOLLOW_RESP_BAD), ("handover", HANDOVER),
                        ("sugg", tuple(f"Suggested article: {r['title']}" for r in kb[: len(kb_ids)])),
                        ("url", tuple(f"https://help.example-bank.com/articles/{a}" for a in kb_ids))):
        v[name] = len(texts)
        texts.extend(group)
    return _World(seed, st, popularity, gap, article, kb_ids, kb, pool, off, cdf, texts, v)


# ----------------------------------------------------------------------------- per-day simulation


def _builtin(st: _Static, rng: np.random.Generator, intent: np.ndarray):
    """The built-in classifier: ~83 % right; errors go mostly to TF-IDF neighbours, with lower confidence."""
    m = len(intent)
    wrong = rng.random(m) < st.err[intent]
    to_neigh = rng.random(m) < 0.85
    k = np.minimum((rng.random(m)[:, None] > st.neigh_p[intent]).sum(1), 3)
    other = (intent + rng.integers(1, len(st.intents), m)) % len(st.intents)
    pred = np.where(wrong, np.where(to_neigh, st.neigh[intent, k], other), intent)
    conf = np.where(wrong, 0.15 + 0.65 * rng.beta(2.2, 2.8, m), 0.55 + 0.44 * rng.beta(5.0, 1.6, m))
    return pred.astype(np.int64), np.round(conf, 3)


_TIME_FIELDS = {"start", "end", "dur", "m", "chk_t", "t"}


def _compact(ns: SimpleNamespace) -> None:
    """Shrink a cached day's integer arrays to the smallest dtype that holds them (times stay int64):
    a range of 200k-conversation days keeps ~11 of them in memory."""
    for name, a in vars(ns).items():
        if isinstance(a, np.ndarray) and a.dtype == np.int64 and name not in _TIME_FIELDS and a.size:
            lo, hi = int(a.min()), int(a.max())
            for t in (np.int8, np.int16, np.int32):
                if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max:
                    setattr(ns, name, a.astype(t))
                    break


def _wide(ns: SimpleNamespace) -> SimpleNamespace:
    """A view of a compacted day with int64 arrays again, so arithmetic on them cannot overflow."""
    return SimpleNamespace(**{k: a.astype(np.int64) if isinstance(a, np.ndarray) and a.dtype.kind == "i" else a
                              for k, a in vars(ns).items()})


def _lognormal(rng, median_ms: float, sigma: float, size, lo: float, hi: float) -> np.ndarray:
    return np.clip(median_ms * np.exp(sigma * rng.standard_normal(size)), lo, hi).astype(np.int64)


class _Gen:
    """Derives each day's conversations and their consequences, caching what a date range re-uses."""

    def __init__(self, world: _World, n: int, classifier, regime=None):
        self.w, self.st, self.n, self.classifier = world, world.st, n, classifier
        self.regime = regime  # gap_regimes.GapRegime when a labelling regime is planted, else None
        self.n_ret = round(n * REENGAGE_SHARE) if n >= 10 else 0
        self.labels = list(world.st.intents)  # grows if a custom classifier returns other labels
        self.label_index = {c: i for i, c in enumerate(self.labels)}
        self.bases: dict = {}
        self.cores: dict = {}

    def evict(self, keep_from: date) -> None:
        """Bounded memory over long ranges: drop days no later target can need."""
        for cache, margin in ((self.cores, 0), (self.bases, RETURN_WINDOW)):
            for d in [d for d in cache if d < keep_from - timedelta(margin)]:
                del cache[d]

    def base(self, day: date) -> SimpleNamespace:
        """First-time conversations of a day: only what re-engagement on later days needs."""
        if day not in self.bases:
            rng, w = _rng(self.w.seed, day, S_BASE), self.w
            nb = self.n - self.n_ret
            cust = np.minimum(np.searchsorted(w.cust_cdf, rng.random(nb), side="right"), w.pool - 1)
            intent = rng.choice(len(self.st.intents), nb, p=w.popularity)
            utt = self.st.utt_start[intent] + (rng.random(nb) * self.st.utt_count[intent]).astype(np.int64)
            bpred, bconf = _builtin(self.st, rng, intent)
            start = rng.integers(0, START_MAX_MS, nb) + _day_ms(day)
            self.bases[day] = SimpleNamespace(cust=cust, intent=intent, utt=utt, bpred=bpred, bconf=bconf,
                                              start=start)
            _compact(self.bases[day])
        return self.bases[day]

    def returners(self, day: date) -> SimpleNamespace:
        """Customers back within 7 days on the same intent: failed conversations come back more often."""
        rng, r = _rng(self.w.seed, day, S_RET), self.n_ret
        parts = [(lag, self.base(day - timedelta(lag))) for lag in range(1, RETURN_WINDOW + 1)]
        cust = np.concatenate([b.cust for _, b in parts])
        intent = np.concatenate([b.intent for _, b in parts])
        wrong = np.concatenate([b.bpred != b.intent for _, b in parts])
        lag = np.concatenate([np.full(len(b.cust), lag) for lag, b in parts])
        weight = 0.75 ** (lag - 1) * (1 + 2 * self.w.gap[intent] + 2 * wrong)
        keys = np.log(rng.random(len(cust))) / weight  # Efraimidis-Spirakis weighted sampling
        sel = np.sort(np.argpartition(-keys, r - 1)[:r]) if r else np.zeros(0, dtype=np.int64)
        intent = intent[sel]
        utt = self.st.utt_start[intent] + (rng.random(r) * self.st.utt_count[intent]).astype(np.int64)
        bpred, bconf = _builtin(self.st, rng, intent)
        start = rng.integers(0, START_MAX_MS, r) + _day_ms(day)
        return SimpleNamespace(cust=cust[sel], intent=intent, utt=utt, bpred=bpred, bconf=bconf, start=start)

    def _label(self, name: str) -> int:
        if name not in self.label_index:
            self.label_index[name] = len(self.labels)
            self.labels.append(name)
        return self.label_index[name]

    def core(self, day: date) -> SimpleNamespace:
        """One day's conversations and everything they cause later (cases, surveys, reviews, checks)."""
        if day in self.cores:
            return self.cores[day]
        st, w, seed = self.st, self.w, self.w.seed
        b, r = self.base(day), self.returners(day)
        cat = {f: np.concatenate([getattr(b, f), getattr(r, f)]) for f in vars(b)}
        ret = np.concatenate([np.zeros(len(b.cust), bool), np.ones(len(r.cust), bool)])
        order = np.argsort(cat["start"], kind="stable")
        c = SimpleNamespace(day=day, ymd=_ymd(day), ret=ret[order], **{f: a[order] for f, a in cat.items()})
        n = len(c.start)
        c.n = n
        c.off = w.cust_off[c.cust]
        c.gap = w.gap[c.intent]

        # Personal data in ~5 % of opening messages; the strings are made only when needed (openings).
        rng = _rng(seed, day, S_OUT)
        c.pii_rows = np.flatnonzero(rng.random(n) < 0.05)

        if self.classifier is not None:
            texts = [st.utt_text[u] for u in c.utt]
            for i, t in zip(c.pii_rows, self.openings(c)[1]):
                texts[i] = t
            out = list(self.classifier(texts))
            if len(out) != n:
                raise ValueError(f"classifier returned {len(out)} results for {n} texts")
            c.pred = np.array([self._label(str(lbl)) for lbl, _ in out], dtype=np.int64)
            c.conf = np.round(np.clip(np.array([float(p) for _, p in out]), 0.0, 1.0), 3)
        else:
            c.pred, c.conf = c.bpred, c.bconf
        if self.regime is not None:
            gap_regimes.route(self.regime, self, c)
        c.correct = c.pred == c.intent
        known = c.pred < len(st.intents)
        pred77 = np.where(known, c.pred, 0)

        c.rag = rng.random(n) < 0.30
        c.shadow = rng.random(n) < 0.10
        live = ~c.shadow
        c.channel = rng.choice(3, n, p=[0.85, 0.10, 0.05])
        c.has_case = rng.random(n) > 0.04
        bad = ~c.correct | c.gap
        c.turns = np.where(bad, rng.choice([1, 2, 3], n, p=[0.2, 0.4, 0.4]),
                           rng.choice([1, 2, 3], n, p=[0.35, 0.45, 0.2]))
        c.dur = np.minimum(20_000 + c.turns * _lognormal(rng, 45_000, 0.6, n, 5_000, 400_000), MAX_DUR_MS)
        c.end = c.start + c.dur
        c.pol = rng.choice(3, n, p=[0.88, 0.08, 0.04])
        c.policy = np.where(known, c.pred, len(st.intents))
        c.act = np.where(known, st.action[pred77], -1)
        c.proposed = (c.act >= 0) & (rng.random(n) < 0.7)
        c.exec = c.proposed & live & c.has_case & (c.pol != 1) & (rng.random(n) < 0.92)
        c.act_status = rng.choice(3, n, p=[0.94, 0.04, 0.02])  # ok, failed, timeout (on executed)
        c.fallback = live & np.where(c.gap, rng.random(n) < 0.6, (c.conf < 0.45) & (rng.random(n) < 0.35))
        c.error = np.where(rng.random(n) < 0.015, rng.integers(0, len(ERRORS), n), -1)
        # Escalation: the first reason that fires, in order of how a human triage would name it.
        u = rng.random((5, n))
        reason = np.full(n, -1)
        for cond, rid in (((c.pol == 1) & (u[0] < 0.6), R_POLICY), (c.gap & (u[1] < 0.55), R_MISSING),
                          ((c.conf < 0.5) & (u[2] < 0.3), R_LOWCONF),
                          ((~c.correct | (c.error >= 0)) & (u[3] < 0.2), R_CUSTOMER), (u[4] < 0.04, R_CUSTOMER)):
            reason = np.where((reason < 0) & cond, rid, reason)
        if self.regime is not None:
            reason = gap_regimes.reasons(c, reason, R_MISSING, R_CUSTOMER)
        c.reason = np.where(live, reason, -1)
        c.esc = c.reason >= 0
        c.variant = np.arange(n) % 3

        # Case milestones (ms, -1 = never): 0 open, 1 pending (escalated), 2 solved, 3 reopened,
        # 4 solved again, 5 closed. A day's CRM export holds each case's last milestone of that day.
        human = c.esc | c.shadow
        m = np.full((n, 6), -1, dtype=np.int64)
        m[:, 0] = c.start + rng.integers(300, 1500, n)
        m[:, 1] = np.where(c.esc, c.end, -1)
        human_delay = _lognormal(rng, 3 * MS_H, 1.0, n, 5 * MS_MIN, 30 * MS_H)
        human_delay = np.where(c.channel == 1, np.minimum(human_delay * 3 // 2, 30 * MS_H), human_delay)
        solved = rng.random(n) > 0.02
        m[:, 2] = np.where(solved, np.where(human, c.end + human_delay, c.end + rng.integers(1_000, 60_000, n)), -1)
        p_reopen = (0.04 + 0.18 * ~c.correct + 0.15 * c.gap + 0.05 * c.fallback
                    + 0.2 * (c.exec & (c.act_status > 0))) * np.where(c.rag, 0.8, 1.0)
        c.reopened = solved & (rng.random(n) < p_reopen)
        m[:, 3] = np.where(c.reopened, m[:, 2] + _lognormal(rng, 20 * MS_H, 0.9, n, 30 * MS_MIN, 96 * MS_H), -1)
        m[:, 4] = np.where(c.reopened, m[:, 3] + _lognormal(rng, 4 * MS_H, 1.0, n, 10 * MS_MIN, 24 * MS_H), -1)
        m[:, 5] = np.where(solved, np.where(c.reopened, m[:, 4], m[:, 2]) + 72 * MS_H, -1)
        m[~c.has_case] = -1
        ht1 = np.where(human, c.dur / 1000 + _lognormal(rng, 600_000, 0.7, n, 60_000, 7_200_000) / 1000,
                       c.dur / 1000)
        ht2 = _lognormal(rng, 900_000, 0.7, n, 60_000, 7_200_000) / 1000

        # Cases opened outside the agent (phone, e-mail), handled by humans: conversation_id is null.
        er = _rng(seed, day, S_EXT)
        ne = round(n * EXTERNAL_CASE_SHARE)
        e_cust = np.minimum(np.searchsorted(w.cust_cdf, er.random(ne), side="right"), w.pool - 1)
        e_intent = er.choice(len(st.intents), ne, p=w.popularity)
        em = np.full((ne, 6), -1, dtype=np.int64)
        em[:, 0] = _day_ms(day) + np.sort(er.integers(0, START_MAX_MS, ne))
        em[:, 2] = em[:, 0] + _lognormal(er, 5 * MS_H, 1.0, ne, 10 * MS_MIN, 30 * MS_H)
        e_re = er.random(ne) < 0.05
        em[:, 3] = np.where(e_re, em[:, 2] + _lognormal(er, 20 * MS_H, 0.9, ne, 30 * MS_MIN, 96 * MS_H), -1)
        em[:, 4] = np.where(e_re, em[:, 3] + _lognormal(er, 4 * MS_H, 1.0, ne, 10 * MS_MIN, 24 * MS_H), -1)
        em[:, 5] = np.where(e_re, em[:, 4], em[:, 2]) + 72 * MS_H
        c.case = SimpleNamespace(
            conv=np.concatenate([np.arange(n), np.full(ne, -1)]),
            cust=np.concatenate([c.cust, e_cust]), intent=np.concatenate([c.intent, e_intent]),
            channel=np.concatenate([c.channel, er.choice([1, 2], ne, p=[0.5, 0.5])]),
            esc=np.concatenate([c.esc, np.zeros(ne, bool)]), reason=np.concatenate([c.reason, np.full(ne, -1)]),
            shadow=np.concatenate([c.shadow, np.zeros(ne, bool)]),
            human=np.concatenate([human, np.ones(ne, bool)]),
            reopened=np.concatenate([c.reopened, e_re]), m=np.concatenate([m, em]),
            ht1=np.concatenate([ht1, _lognormal(er, 700_000, 0.7, ne, 60_000, 7_200_000) / 1000]),
            ht2=np.concatenate([ht2, _lognormal(er, 900_000, 0.7, ne, 60_000, 7_200_000) / 1000]),
            off=np.concatenate([c.off, w.cust_off[e_cust]]),
        )
        c.n_ext = ne

        self._surveys(c)
        self._overrides(c)
        # Outcome checks verify executed actions minutes to hours later; failures rarely verify.
        c.chk_t = np.where(c.exec, c.end + rng.integers(2 * MS_MIN, 6 * MS_H, n), -1)
        c.verified = np.where(c.act_status == 0, rng.random(n) < 0.96, rng.random(n) < 0.1)
        _compact(c)
        _compact(c.case)
        self.cores[day] = c
        return c

    def openings(self, c) -> tuple[list, list]:
        """(PII strings, full opening texts) of the day's conversations with personal data, in row order."""
        if not hasattr(c, "pii_open"):
            pr, st = _pyrng(self.w.seed, c.day, S_PII), self.st
            c.pii_strings, c.pii_open = [], []
            for i in c.pii_rows:
                kind = _pii_kind(pr)
                s = _pii(pr, kind)
                c.pii_strings.append(s)
                c.pii_open.append(st.utt_text[c.utt[i]] + " " + pr.choice(_OPENING_PII[kind]).format(s))
        return c.pii_strings, c.pii_open

    def _surveys(self, c) -> None:
        """CSAT (and sometimes CES) for ~25 % of solved cases, 0-3 days later, lower after bad outcomes."""
        rng, pr = _rng(self.w.seed, c.day, S_SV), _pyrng(self.w.seed, c.day, S_SV)
        cs = c.case
        nc = len(cs.conv)
        conv = np.maximum(cs.conv, 0)
        bad = cs.reopened | ((cs.conv >= 0) & (~c.correct[conv] | c.gap[conv] | c.fallback[conv]))
        take = (cs.m[:, 2] >= 0) & (rng.random(nc) < np.where(bad, 0.30, 0.22))
        t = cs.m[:, 2] + np.clip(rng.exponential(14 * MS_H, nc).astype(np.int64), MS_MIN, 72 * MS_H)
        good_p, bad_p = [0.02, 0.03, 0.10, 0.30, 0.55], [0.30, 0.25, 0.20, 0.15, 0.10]
        csat = np.where(bad, rng.choice(5, nc, p=bad_p), rng.choice(5, nc, p=good_p)) + 1
        ces_good, ces_bad = [0.02, 0.03, 0.05, 0.10, 0.20, 0.30, 0.30], [0.25, 0.20, 0.20, 0.15, 0.10, 0.05, 0.05]
        ces = np.where(rng.random(nc) < 0.4,
                       np.where(bad, rng.choice(7, nc, p=ces_bad), rng.choice(7, nc, p=ces_good)) + 1, 0)
        has_comment = rng.random(nc) < 0.4
        rows = np.flatnonzero(take)
        comments = []
        for i in rows:
            if not has_comment[i]:
                comments.append((None, None))
                continue
            text = pr.choice(COMMENTS_BAD if csat[i] <= 3 else COMMENTS_GOOD)
            pii = None
            if pr.random() < 0.10:
                pii = _pii(pr, pr.choice(("email", "phone")))
                text += f" You can reach me at {pii}."
            comments.append((text, pii))
        c.sv = SimpleNamespace(case=rows, t=t[rows], csat=csat[rows], ces=ces[rows], comments=comments)

    def _overrides(self, c) -> None:
        """The human-in-the-loop log: corrections of wrong decisions, some approvals, a few sloppy entries."""
        rng, pr = _rng(self.w.seed, c.day, S_OV), _pyrng(self.w.seed, c.day, S_OV)
        n = c.n
        u = rng.random((8, n))
        review_delay = np.where(c.shadow, rng.integers(MS_MIN, 20 * MS_MIN, n),
                                _lognormal(rng, 5 * MS_H, 1.0, n, 10 * MS_MIN, 40 * MS_H))
        groups = [  # (rows, stage, outcome array)
            (np.flatnonzero(~c.correct & (u[0] < np.where(c.shadow, 0.9, 0.35))), 0,
             np.where(u[1] < 0.88, 0, 1)),
            (np.flatnonzero(c.correct & (u[2] < np.where(c.shadow, 0.6, 0.04))), 0, np.full(n, 2)),
            (np.flatnonzero(c.exec & (~c.correct | (c.act_status > 0)) & (u[3] < 0.6)), 1,
             np.where(u[1] < 0.85, 0, 1)),
            (np.flatnonzero(c.gap & ~c.esc & ~c.fallback & ~c.shadow & (u[4] < 0.3)), 2, np.zeros(n, int)),
            (np.flatnonzero((c.reason == R_POLICY) & (u[5] < 0.5)), 3, np.zeros(n, int)),
        ]
        conv = np.concatenate([g[0] for g in groups])
        stage = np.concatenate([np.full(len(g[0]), g[1]) for g in groups])
        outcome = np.concatenate([g[2][g[0]] for g in groups])
        order = np.lexsort((stage, conv))
        conv, stage, outcome = conv[order], stage[order], outcome[order]
        k = len(conv)
        t = c.end[conv] + review_delay[conv] + stage * 17_000
        ground = rng.choice([1, 2, 3], k, p=[0.55, 0.30, 0.15])  # bit 1 policy clause, bit 2 evidence
        ground = np.where(outcome == 0, ground, np.where(rng.random(k) < 0.5, ground, 0))
        missing = np.where((outcome == 0) & (rng.random(k) < 0.04), rng.choice([1, 2], k), 0)
        has_rationale = (outcome != 2) | (rng.random(k) < 0.5)
        reviewer = rng.integers(1, 16, k)
        pii = []
        for j in range(k):
            kind = None
            if ground[j] & 2 and pr.random() < 0.10:
                kind = "evidence"
            elif has_rationale[j] and pr.random() < 0.03:
                kind = "rationale"
            pii.append((kind, _pii(pr, pr.choice(("email", "phone", "card"))) if kind else None))
        c.ov = SimpleNamespace(conv=conv, stage=stage, outcome=outcome, t=t, ground=ground, missing=missing,
                               has_rationale=has_rationale, reviewer=reviewer, pii=pii)


# ----------------------------------------------------------------------------- Arrow helpers


def _dict(idx: np.ndarray, vocab, mask: np.ndarray | None = None) -> pa.DictionaryArray:
    """A dictionary-encoded string column: cheap to build, DuckDB writes it as plain text."""
    vocab = vocab if isinstance(vocab, pa.Array) else pa.array(list(vocab), pa.string())
    ind = pa.array(np.asarray(idx, dtype=np.int32), mask=mask)
    return pa.DictionaryArray.from_arrays(ind, vocab)


def _num(values: np.ndarray, mask: np.ndarray | None, typ) -> pa.Array:
    return pa.array(np.asarray(values), type=typ, mask=mask)


def _ts(ms: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    """Timestamps travel as epoch milliseconds; DuckDB renders them as RFC 3339 at write time."""
    return pa.array(np.asarray(ms, dtype=np.int64), pa.int64(), mask=mask)


def _tz_cols(off: np.ndarray, utc_suffix: str) -> dict:
    """Per-row UTC offset (minutes) and its RFC 3339 suffix, both helper columns dropped on write."""
    off = np.asarray(off, dtype=np.int64)
    values = sorted(set(np.unique(off).tolist()) | {0})
    suffix = [utc_suffix if o == 0 else f"{'+' if o > 0 else '-'}{abs(o) // 60:02d}:{abs(o) % 60:02d}"
              for o in values]
    idx = np.searchsorted(np.array(values), off)
    return {"_off": pa.array(off, pa.int64()), "_tz": _dict(idx, suffix)}


# ----------------------------------------------------------------------------- building the sources


def _events(g: _Gen, day: date) -> tuple[pa.Table, list]:
    """The agent's trace for the day's conversations: ~10 events per conversation, in time order."""
    import pyarrow.compute as pc

    c, st, w = _wide(g.core(day)), g.st, g.w
    n, n_int = c.n, len(st.intents)
    rng = _rng(w.seed, day, S_EVENTS)
    live = ~c.shadow
    n_art = len(w.kb_ids)
    pred, utt, intent = c.pred.astype(np.int64), c.utt.astype(np.int64), c.intent.astype(np.int64)
    known = pred < n_int
    pred77 = np.minimum(pred, n_int - 1)

    # Conversation-level draws that nothing else depends on.
    thumbs = live & (rng.random(n) < 0.25)
    good = c.correct & ~c.gap & ~c.fallback & ~c.esc
    rating = np.where(rng.random(n) < np.where(good, 0.85, 0.25), 1, -1)
    # Retrieval: the right article scores high when it exists; a gap only gets low scores or nothing.
    true_art = w.article[intent]
    pred_art = np.where(known, w.article[pred77], -1)
    nb_art = w.article[st.neigh[intent]]  # (n, 4) neighbours' articles, -1 where a gap
    rand_art = rng.integers(0, max(n_art, 1), (n, 4))
    others = np.where(nb_art >= 0, nb_art, rand_art)[:, rng.permutation(4)]
    lo_scores = np.sort(rng.uniform(0.05, 0.29, (n, 3)), axis=1)[:, ::-1]
    hi = np.where(c.correct, rng.uniform(0.72, 0.97, n), rng.uniform(0.45, 0.8, n)) + 0.02 * c.rag
    mid = np.sort(rng.uniform(0.2, 0.6, (n, 2)), axis=1)[:, ::-1] * hi[:, None] / 0.97
    gap_len = np.where(rng.random(n) < 0.4, 0, rng.integers(1, 4, n))
    wrong_first = ~c.correct & (pred_art >= 0) & (pred_art != true_art) & (rng.random(n) < 0.5)
    arts = np.stack([np.where(c.gap, others[:, 0], np.where(wrong_first, pred_art, true_art)),
                     np.where(c.gap, others[:, 1], np.where(wrong_first, true_art, others[:, 0])),
                     np.where(c.gap, others[:, 2], others[:, 1])], axis=1)
    scores = np.round(np.stack([np.where(c.gap, lo_scores[:, 0], hi),
                                np.where(c.gap, lo_scores[:, 1], np.where(wrong_first, hi * 0.85, mid[:, 0])),
                                np.where(c.gap, lo_scores[:, 2], mid[:, 1])], axis=1), 3)
    kb_len = np.where(c.gap, gap_len, rng.integers(1, 4, n)) if n_art else np.zeros(n, np.int64)
    kb_len = np.where((kb_len == 3) & ((arts[:, 2] == arts[:, 0]) | (arts[:, 2] == arts[:, 1])), 2, kb_len)
    kb_len = np.where((kb_len >= 2) & (arts[:, 1] == arts[:, 0]), 1, kb_len)
    sugg = live & ~c.fallback & (kb_len > 0) & (rng.random(n) < 0.30)
    sugg_next = np.where(rng.random(n) < 0.45, ET["suggestion_dismissed"],
                         np.where(rng.random(n) < 0.73, ET["link_clicked"], -1))
    sugg_next = np.where(sugg, sugg_next, -1)

    # Event skeleton: (conversation, slot) pairs. Slots: 0 cm, 1 ic, 2 kq, 3 pc, 4 ap, 5 ae, 6 fb, 7 ar,
    # 8 ss, 9 sd/lc, then per follow-up turn cm, kq, ar (10-12 turn 1, 13-15 turn 2), 16 error, 17 thumbs,
    # 18 escalated. The agent retrieves again on every turn.
    cm, kq, ar = ET["customer_message"], ET["kb_query"], ET["agent_response"]
    slot_type = np.array([cm, ET["intent_classified"], kq, ET["policy_check"], ET["action_proposed"],
                          ET["action_executed"], ET["fallback"], ar, ET["suggestion_shown"], -1,
                          cm, kq, ar, cm, kq, ar, ET["error"], ET["thumbs"], ET["escalated"]])
    slot_turn = np.array([0] * 10 + [1, 1, 1, 2, 2, 2, -1, -1, -1])
    gap_w = np.array([0, 1, 1, 0.3, 1.5, 2, 0.5, 4, 0.5, 6, 25, 1, 4, 25, 1, 4, 1, 6, 2])
    every = np.ones(n, bool)
    t2, t3 = c.turns >= 2, c.turns >= 3
    masks = [every, every, every, every, c.proposed, c.exec, c.fallback, every, sugg, sugg_next >= 0,
             t2, t2, t2, t3, t3, t3, c.error >= 0, thumbs, c.esc]
    conv = np.concatenate([np.flatnonzero(m) for m in masks])
    slot = np.concatenate([np.full(int(m.sum()), s, dtype=np.int8) for s, m in enumerate(masks)])
    order = np.lexsort((slot, conv))
    conv, slot = conv[order], slot[order]
    e = len(conv)
    counts = np.bincount(conv, minlength=n)
    first = np.cumsum(counts) - counts
    seq = (np.arange(e) - first[conv]).astype(np.int16)

    # Each event sits after a random gap (weighted by slot: customers type slower than models answer);
    # the gaps are scaled so the conversation fits its duration. `+ seq` keeps ts strictly increasing.
    gaps = gap_w[slot] * rng.gamma(2.0, 0.5, e)
    cs = np.cumsum(gaps)
    cs -= (cs - gaps)[first][conv]
    del gaps
    total = np.zeros(n)
    has = counts > 0
    total[has] = cs[(first + counts - 1)[has]]
    total += 1.0
    ts = c.start[conv] + np.floor(c.dur[conv] * cs / total[conv]).astype(np.int64) + seq
    del cs

    # The export is a log: reorder once, by time (ties keep conversation order), before any column exists.
    order = np.lexsort((seq, conv, ts))
    conv, slot, seq, ts = conv[order], slot[order], seq[order], ts[order]
    del order
    draws = rng.random((3, e))  # per-event noise, drawn after ordering so columns line up

    etype = np.where(slot == 9, sugg_next[conv], slot_type[slot]).astype(np.int8)
    turn = np.where(slot_turn[slot] >= 0, slot_turn[slot], c.turns[conv] - 1).astype(np.int64)
    is_cm = etype == cm
    is_ic = slot == 1
    is_kq = etype == kq
    is_pc = slot == 3
    is_act = (slot == 4) | (slot == 5)
    is_ar = etype == ar
    is_llm = (slot == 4) | is_ar
    is_model = is_ic | is_kq | is_llm
    customer_side = is_cm | (etype == ET["thumbs"]) | (etype == ET["suggestion_dismissed"]) | \
        (etype == ET["link_clicked"])
    off = np.where(customer_side, c.off[conv], 0)

    # Texts: one dictionary for the whole day (static vocabulary + the day's openings with PII).
    v = w.v
    pii_strings, pii_open = g.openings(g.core(day))
    vocab = pa.array(w.vocab + pii_open, pa.string())
    open_idx = v["utt"] + utt
    open_idx[c.pii_rows] = len(w.vocab) + np.arange(len(c.pii_rows))
    bad = ~c.correct | c.gap | c.fallback
    other_utt = v["utt"] + st.utt_start[intent] + (rng.random((2, n)) * st.utt_count[intent]).astype(np.int64)
    fu_bad = np.where(rng.random((2, n)) < 0.4, other_utt, v["bad"] + rng.integers(0, len(FOLLOW_BAD), (2, n)))
    fu_good = np.where(rng.random((2, n)) < 0.15, other_utt, v["good"] + rng.integers(0, len(FOLLOW_GOOD), (2, n)))
    follow = np.where(bad, fu_bad, fu_good)
    answer = np.where(known, v["resp"] + pred77 * 3 + c.variant, v["generic"])
    answer = np.where(c.fallback, v["fallback"] + c.variant, answer)
    fresp = np.where(bad[None, :], v["fbad"] + rng.integers(0, len(FOLLOW_RESP_BAD), (2, n)),
                     v["fgood"] + rng.integers(0, len(FOLLOW_RESP_GOOD), (2, n)))
    handover = v["handover"] + rng.integers(0, len(HANDOVER), n)
    top_art = np.maximum(arts[:, 0], 0)
    text = np.full(e, -1, dtype=np.int64)
    query = np.full(e, -1, dtype=np.int64)
    for s, src, dst in ((0, open_idx, text), (10, follow[0], text), (13, follow[1], text), (7, answer, text),
                        (12, fresp[0], text), (15, fresp[1], text), (18, handover, text),
                        (8, v["sugg"] + top_art, text), (2, v["utt"] + utt, query), (11, follow[0], query),
                        (14, follow[1], query)):
        sel = slot == s
        dst[sel] = src[conv[sel]]
    sel = etype == ET["link_clicked"]
    text[sel] = v["url"] + top_art[conv[sel]]
    del follow, fu_bad, fu_good, other_utt

    # kb_results: the retrieved list on kb_query rows, the suggested article on suggestion_shown rows.
    has_kb = is_kq | (slot == 8)
    kb_rows = conv[has_kb]
    lens = np.zeros(e, np.int64)
    lens[has_kb] = np.where(slot[has_kb] == 8, 1, kb_len[kb_rows])
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    take = np.arange(3)[None, :] < lens[has_kb][:, None]
    kb_ids = pa.array(w.kb_ids or [""], pa.string())
    kb_values = pa.StructArray.from_arrays(
        [kb_ids.take(pa.array(np.maximum(arts[kb_rows][take], 0))), pa.array(scores[kb_rows][take])],
        names=["article_id", "score"])
    kb_results = pa.ListArray.from_arrays(pa.array(offsets), kb_values, mask=pa.array(~has_kb))
    del lens, offsets, take, kb_rows

    # Actions: arguments built once per conversation that has one (a few % of rows).
    act_rows = np.flatnonzero(c.proposed)
    pr = _pyrng(w.seed, day, S_EVENTS)
    args_text = []
    for i in act_rows:
        a = ACTIONS[c.act[i]][0]
        d = {"case_id": f"CASE-{c.ymd}-{i + 1:06d}" if c.has_case[i] else None,
             "customer_id": f"CUST-{c.cust[i]:07d}"}
        if a in ("issue_refund", "open_dispute"):
            d.update(amount=round(pr.uniform(5, 400), 2), currency=pr.choice(("EUR", "GBP", "USD")))
        elif a in ("cancel_transfer", "retry_transfer"):
            d["transfer_id"] = f"TR-{pr.getrandbits(40):010x}"
        elif a in ("freeze_card", "unblock_pin", "activate_card", "order_card"):
            d["card_last4"] = f"{pr.randint(0, 9999):04d}"
        elif a == "update_profile":
            d["field"] = pr.choice(("address", "phone", "name"))
        args_text.append(json.dumps(d, separators=(",", ":")))
    args_of = np.full(n, -1)
    args_of[act_rows] = np.arange(len(act_rows))

    # Tokens, latency and cost on model steps (and latency on tool steps).
    rag = c.rag[conv]
    lat_med = np.select([is_ic, is_kq, is_pc, slot == 4, slot == 5, is_ar],
                        [120.0, 250.0, 30.0, 900.0, 600.0, 2200.0], 0.0) * np.where(rag & is_llm, 1.25, 1.0)
    latency = np.round(lat_med * np.exp(0.4 * (draws[0] * 2 - 1) * 1.7), 1)
    u = draws[1]
    tin = np.select([is_ic, is_kq, slot == 4],
                    [180 + u * 240, 12 + u * 68, 600 + u * 900],
                    np.where(rag, 1600 + u * 2600, 900 + u * 1500) + 500 * turn).astype(np.int64)
    u = draws[2]
    tout = np.select([is_ic, is_kq, slot == 4], [4 + u * 8, u * 0, 30 + u * 60], 60 + u * 260).astype(np.int64)
    model = np.select([is_ic, is_kq], [0, 1], 2)
    keys = ("clf", "embed", "llm")
    cost = np.round((tin * np.array([MODELS[k][1] for k in keys])[model]
                     + tout * np.array([MODELS[k][2] for k in keys])[model]) / 1e6, 8)
    is_sd_lc = (etype == ET["suggestion_dismissed"]) | (etype == ET["link_clicked"])
    dwell = np.zeros(e, np.int64)
    dwell[is_sd_lc] = _lognormal(rng, 4_000, 0.9, int(is_sd_lc.sum()), 300, 120_000)
    err_idx = np.maximum(c.error[conv], 0)
    del draws, u

    conv_ids = pa.array([f"CONV-{c.ymd}-{i + 1:06d}" for i in range(n)], pa.string())
    case_ids = pa.array([f"CASE-{c.ymd}-{i + 1:06d}" for i in range(n)], pa.string())
    cust_ids = pa.array([f"CUST-{x:07d}" for x in c.cust], pa.string())
    seq_ids = pa.array([f"{s:02d}" for s in range(int(seq.max()) + 1 if e else 1)], pa.string())
    conv_idx = pa.array(conv.astype(np.int32))
    event_id = pc.binary_join_element_wise(conv_ids.take(conv_idx), seq_ids.take(pa.array(seq)), "-")
    cols = {
        "event_id": event_id,
        "ts": _ts(ts),
        "conversation_id": pa.DictionaryArray.from_arrays(conv_idx, conv_ids),
        "case_id": _dict(conv, case_ids, mask=~c.has_case[conv] | (slot == 0)),
        "customer_id": pa.DictionaryArray.from_arrays(conv_idx, cust_ids),
        "turn": _num(turn, None, pa.int64()),
        "event_type": _dict(etype, EVENT_TYPES),
        "text": _dict(np.maximum(text, 0), vocab, mask=text < 0),
        "intent": _dict(pred[conv], g.labels, mask=~is_ic),
        "confidence": _num(c.conf[conv], ~is_ic, pa.float64()),
        "kb_query": _dict(np.maximum(query, 0), vocab, mask=query < 0),
        "kb_results": kb_results,
        "policy_id": _dict(c.policy[conv], st.policy, mask=~is_pc),
        "policy_outcome": _dict(c.pol[conv], POLICY_OUTCOMES, mask=~is_pc),
        "action": _dict(np.maximum(c.act[conv], 0), [a[0] for a in ACTIONS], mask=~is_act),
        "action_args": _dict(np.maximum(args_of[conv], 0), args_text or [""], mask=~is_act),
        "action_status": _dict(np.where(slot == 4, np.where(c.shadow[conv], 4, 3), c.act_status[conv]),
                               ("ok", "failed", "timeout", "proposed", "awaiting_human"), mask=~is_act),
        "rating": _num(rating[conv], etype != ET["thumbs"], pa.int64()),
        "dwell_ms": _num(dwell, ~is_sd_lc, pa.int64()),
        "model": _dict(model, [MODELS[k][0] for k in keys], mask=~is_model),
        "strategy": _dict(rag.astype(np.int8), ("baseline", "rag-v2")),
        "mode": _dict(c.shadow[conv].astype(np.int8), ("live", "shadow")),
        "input_tokens": _num(tin, ~is_model, pa.int64()),
        "output_tokens": _num(tout, ~is_model, pa.int64()),
        "latency_ms": _num(latency, ~(lat_med > 0), pa.float64()),
        "cost_usd": _num(cost, ~is_model, pa.float64()),
        "error_type": _dict(err_idx, [x[0] for x in ERRORS], mask=etype != ET["error"]),
        "error_message": _dict(err_idx, [x[1] for x in ERRORS], mask=etype != ET["error"]),
        "true_intent": _dict(intent[conv], st.intents, mask=~is_cm),
        **_tz_cols(off, "+00:00"),
        "_clean": pa.array(~is_cm),  # rows planted copies may start from: no PII, not an opening
    }
    return pa.table(cols), list(pii_strings)


def _milestone_rows(c, dnum: int):
    """Each case's last milestone on day `dnum` (epoch days): its row in that day's CRM export."""
    m = c.case.m
    on = (m >= 0) & (m // MS_DAY == dnum)
    rows = np.flatnonzero(on.any(1))
    last = 5 - np.argmax(on[rows][:, ::-1], axis=1)
    return rows, last


def _cases(g: _Gen, day: date) -> pa.Table:
    """The CRM's 'updated since' export: every case whose state changed that day, as of its last change."""
    st, dnum = g.st, _day_ms(day) // MS_DAY
    parts = []
    for lag in range(CASE_LOOKBACK, -1, -1):
        c = g.core(day - timedelta(lag))
        rows, j = _milestone_rows(c, dnum)
        if not len(rows):
            continue
        cs = _wide(c.case)
        m = cs.m[rows]
        reopened = cs.reopened[rows]
        last_solve = np.where(reopened, m[:, 4], m[:, 2])
        resolved_at = np.select([j == 2, j == 4, j == 5], [m[:, 2], m[:, 4], last_solve], -1)
        human_solve = cs.human[rows] | (j >= 4) & reopened
        resolved_by = np.where(resolved_at >= 0, np.where(human_solve, 1, 0), -1)
        esc = cs.esc[rows] & (j >= 1)
        touched = cs.human[rows] & ((j >= 1) | cs.shadow[rows] | (cs.conv[rows] < 0)) | (reopened & (j >= 3))
        ht = np.where(j >= 2, cs.ht1[rows], np.nan) + np.where(j >= 4, cs.ht2[rows], 0)
        bits = (cs.shadow[rows] * 1 + esc * 2 + (reopened & (j >= 3)) * 4 + ((resolved_by == 0) * 8)
                + (cs.conv[rows] < 0) * 16)
        conv = cs.conv[rows]
        ids = [f"CASE-{c.ymd}-{i + 1:06d}" if i < c.n else f"CASE-{c.ymd}-X{i - c.n + 1:05d}" for i in rows]
        parts.append({
            "case_id": ids,
            "customer_id": [f"CUST-{x:07d}" for x in cs.cust[rows]],
            "conversation_id": [f"CONV-{c.ymd}-{i + 1:06d}" if i >= 0 else None for i in conv],
            "channel": cs.channel[rows], "created_at": m[:, 0], "updated_at": m[np.arange(len(rows)), j],
            "status": j, "resolved_at": resolved_at, "resolved_by": resolved_by, "escalated": esc,
            "reason": np.where(esc, cs.reason[rows], -1), "reopen_count": np.where(reopened & (j >= 3), 1, 0),
            "last_reopened_at": np.where(j >= 3, m[:, 3], -1), "handle_time_s": np.round(ht, 1),
            "category": np.where(touched, cs.intent[rows], -1),
            "tags": bits * 5 + np.where(esc, cs.reason[rows], -1) + 1,  # index into the tag combinations
        })
    names = ("case_id", "customer_id", "conversation_id", "channel", "created_at", "updated_at", "status",
             "resolved_at", "resolved_by", "escalated", "reason", "reopen_count", "last_reopened_at",
             "handle_time_s", "category", "tags")
    cat = {}
    for k in names:
        vals = [p[k] for p in parts]
        if k in ("case_id", "customer_id", "conversation_id"):
            cat[k] = [x for v in vals for x in v]
        else:
            cat[k] = np.concatenate(vals) if vals else np.zeros(0, bool if k == "escalated" else np.int64)
    cat["handle_time_s"] = cat["handle_time_s"].astype(np.float64)
    tag_combos = []
    for bits in range(32):
        for r in range(-1, len(REASONS)):
            t = ["ai_agent"] if not bits & 16 else ["phone_or_email"]
            t += ["shadow"] * bool(bits & 1) + ["escalated"] * bool(bits & 2) + ([REASONS[r]] if r >= 0 else [])
            t += ["reopened"] * bool(bits & 4) + ["auto_resolved"] * bool(bits & 8)
            tag_combos.append(t)
    tags = pa.array(tag_combos, pa.list_(pa.string())).take(pa.array(cat["tags"], pa.int64()))
    table = pa.table({
        "case_id": pa.array(cat["case_id"], pa.string()),
        "customer_id": pa.array(cat["customer_id"], pa.string()),
        "conversation_id": pa.array(cat["conversation_id"], pa.string()),
        "channel": _dict(cat["channel"], CHANNELS),
        "created_at": _ts(cat["created_at"]),
        "updated_at": _ts(cat["updated_at"]),
        "status": _dict(np.array([0, 1, 2, 0, 2, 3])[cat["status"]], ("open", "pending", "solved", "closed")),
        "resolved_at": _ts(np.maximum(cat["resolved_at"], 0), mask=cat["resolved_at"] < 0),
        "resolved_by": _dict(np.maximum(cat["resolved_by"], 0), ("ai", "human"), mask=cat["resolved_by"] < 0),
        "escalated": pa.array(cat["escalated"], pa.bool_()),
        "escalation_reason": _dict(np.maximum(cat["reason"], 0), REASONS, mask=cat["reason"] < 0),
        "reopen_count": _num(cat["reopen_count"], None, pa.int64()),
        "last_reopened_at": _ts(np.maximum(cat["last_reopened_at"], 0), mask=cat["last_reopened_at"] < 0),
        "handle_time_s": _num(np.nan_to_num(cat["handle_time_s"]), np.isnan(cat["handle_time_s"]), pa.float64()),
        "category": _dict(np.maximum(cat["category"], 0), st.intents, mask=cat["category"] < 0),
        "tags": tags,
        **_tz_cols(np.zeros(len(cat["case_id"]), np.int64), "Z"),
        "_clean": pa.array(np.ones(len(cat["case_id"]), bool)),
    })
    return table.take(pa.array(np.argsort(cat["updated_at"], kind="stable"), pa.int64()))


def _surveys(g: _Gen, day: date) -> tuple[pa.Table, list]:
    """Survey answers submitted that day, for cases solved up to a few days earlier."""
    dnum = _day_ms(day) // MS_DAY
    rows: dict = {k: [] for k in ("survey_id", "case_id", "conversation_id", "t", "kind", "score", "comment",
                                  "off", "clean")}
    pii = []
    for lag in range(SURVEY_LOOKBACK, -1, -1):
        c = g.core(day - timedelta(lag))
        sv = c.sv
        for j in np.flatnonzero(sv.t // MS_DAY == dnum):
            i = int(sv.case[j])
            case_id = f"CASE-{c.ymd}-{i + 1:06d}" if i < c.n else f"CASE-{c.ymd}-X{i - c.n + 1:05d}"
            conv_id = f"CONV-{c.ymd}-{i + 1:06d}" if i < c.n else None
            comment, p = sv.comments[j]
            if p:
                pii.append(p)
            for kind, score in (("csat", sv.csat[j]), ("ces", sv.ces[j])):
                if score == 0:
                    continue
                rows["survey_id"].append(f"SRV-{c.ymd}-{i + 1:06d}-{kind}")
                rows["case_id"].append(case_id)
                rows["conversation_id"].append(conv_id)
                rows["t"].append(int(sv.t[j]))  # one submission: both answers share its time
                rows["kind"].append(kind)
                rows["score"].append(int(score))
                rows["comment"].append(comment if kind == "csat" else None)
                rows["off"].append(int(c.case.off[i]))
                rows["clean"].append(p is None)
    return pa.table({
        "survey_id": pa.array(rows["survey_id"], pa.string()),
        "case_id": pa.array(rows["case_id"], pa.string()),
        "conversation_id": pa.array(rows["conversation_id"], pa.string()),
        "submitted_at": _ts(np.array(rows["t"], np.int64)),
        "kind": pa.array(rows["kind"], pa.string()),
        "score": pa.array(rows["score"], pa.int64()),
        "comment": pa.array(rows["comment"], pa.string()),
        **_tz_cols(np.array(rows["off"], np.int64), "+00:00"),
        "_clean": pa.array(rows["clean"], pa.bool_()),
    }), pii


def _override_text(g: _Gen, c, j: int) -> dict:
    """The human's side of one review, in words a reviewer would write."""
    st, ov = g.st, c.ov
    i, stage, outcome = int(ov.conv[j]), int(ov.stage[j]), int(ov.outcome[j])
    true, pred = int(c.intent[i]), int(c.pred[i])
    t_title = st.titles[true].lower()
    p_title = (st.titles[pred] if pred < len(st.intents) else g.labels[pred]).lower()
    snippet = st.utt_text[c.utt[i]][:80]
    v = (i + j) % 3
    if stage == 0:
        agent = g.labels[pred]
        human = st.intents[true]
        rationale = (
            (f"Customer asks about {t_title}, not {p_title}.",
             f"The message is about {t_title}; the agent picked {p_title}.",
             f"Misread the request: this is {t_title}.")[v] if outcome == 0 else
            f"Unclear between {p_title} and {t_title}; sent to the team lead." if outcome == 1 else
            ("Intent is correct.", "Checked, the agent got this right.", "Correct label.")[v])
        clause = st.policy[true]
    elif stage == 1:
        a = ACTIONS[c.act[i]][0]
        agent = a
        human = f"revert {a}" if not c.correct[i] else f"retry {a}"
        rationale = (f"{a} did not match the customer's request ({t_title})." if not c.correct[i]
                     else f"The back end returned an error; ran {a} again by hand.")
        clause = st.policy[true]
    elif stage == 2:
        agent = st.resp[pred * 3 + int(c.variant[i])] if pred < len(st.intents) else GENERIC_RESP
        human = (f"Sorry for the confusion. For {t_title}, our team has checked your account and will "
                 f"resolve it within 2 business days.")
        rationale = "The agent answered without a matching article and gave generic steps."
        clause = st.policy[true]
    else:
        agent, human = "fail", "waive"
        rationale = "Customer qualifies for an exception: long-standing account, first occurrence."
        clause = st.policy[int(c.policy[i])]
    evidence = f'Customer wrote: "{snippet}"' if stage != 2 else f"No published article covers {st.intents[true]}."
    kind, p = ov.pii[j]
    if kind == "evidence":
        evidence = f"Customer confirmed their contact details: {p}"
    if kind == "rationale":
        rationale += f" Called the customer back on {p}."
    has_r = bool(ov.has_rationale[j]) and ov.missing[j] != 1
    ground = 0 if ov.missing[j] == 2 else int(ov.ground[j])
    written = (kind == "evidence" and ground & 2) or (kind == "rationale" and has_r)
    return {"agent_decision": agent, "agent_confidence": float(c.conf[i]), "human_decision": human,
            "rationale": rationale if has_r else None, "policy_clause_id": clause if ground & 1 else None,
            "evidence": evidence if ground & 2 else None, "pii": p if written else None}


def _overrides(g: _Gen, day: date) -> tuple[pa.Table, list, list]:
    """Reviews logged that day. Natural incomplete triads are returned so the ground truth lists them."""
    dnum = _day_ms(day) // MS_DAY
    rows: dict = {k: [] for k in ("override_id", "t", "conversation_id", "case_id", "reviewer_id", "stage",
                                  "agent_decision", "agent_confidence", "human_decision", "rationale",
                                  "policy_clause_id", "evidence", "outcome", "clean")}
    pii, natural = [], []
    for lag in range(OVERRIDE_LOOKBACK, -1, -1):
        c = g.core(day - timedelta(lag))
        ov = c.ov
        for j in np.flatnonzero(ov.t // MS_DAY == dnum):
            i = int(ov.conv[j])
            txt = _override_text(g, c, int(j))
            oid = f"OVR-{c.ymd}-{j + 1:06d}"
            rows["override_id"].append(oid)
            rows["t"].append(int(ov.t[j]))
            rows["conversation_id"].append(f"CONV-{c.ymd}-{i + 1:06d}")
            rows["case_id"].append(f"CASE-{c.ymd}-{i + 1:06d}" if c.has_case[i] else None)
            rows["reviewer_id"].append(f"REV-{int(ov.reviewer[j]):03d}")
            rows["stage"].append(STAGES[ov.stage[j]])
            rows["outcome"].append(OUTCOMES[ov.outcome[j]])
            for k in ("agent_decision", "agent_confidence", "human_decision", "rationale", "policy_clause_id",
                      "evidence"):
                rows[k].append(txt[k])
            if txt["pii"]:
                pii.append(txt["pii"])
            incomplete = ov.missing[j] > 0
            if incomplete:
                natural.append(oid)
            rows["clean"].append(not incomplete and txt["pii"] is None and ov.outcome[j] == 0)
    order = np.argsort(np.array(rows["t"], np.int64), kind="stable")
    table = pa.table({
        "override_id": pa.array(rows["override_id"], pa.string()),
        "ts": _ts(np.array(rows["t"], np.int64)),
        "conversation_id": pa.array(rows["conversation_id"], pa.string()),
        "case_id": pa.array(rows["case_id"], pa.string()),
        "reviewer_id": pa.array(rows["reviewer_id"], pa.string()),
        "stage": pa.array(rows["stage"], pa.string()),
        "agent_decision": pa.array(rows["agent_decision"], pa.string()),
        "agent_confidence": pa.array(rows["agent_confidence"], pa.float64()),
        "human_decision": pa.array(rows["human_decision"], pa.string()),
        "rationale": pa.array(rows["rationale"], pa.string()),
        "policy_clause_id": pa.array(rows["policy_clause_id"], pa.string()),
        "evidence": pa.array(rows["evidence"], pa.string()),
        "outcome": pa.array(rows["outcome"], pa.string()),
        **_tz_cols(np.zeros(len(rows["t"]), np.int64), "Z"),
        "_clean": pa.array(rows["clean"], pa.bool_()),
    })
    return table.take(pa.array(order, pa.int64())), pii, natural


def _checks(g: _Gen, day: date) -> pa.Table:
    """Verifications of the agent's executed actions that ran that day."""
    dnum = _day_ms(day) // MS_DAY
    ids, case_ids, action, t, exp, obs, ver = [], [], [], [], [], [], []
    for lag in range(CHECK_LOOKBACK, -1, -1):
        c = g.core(day - timedelta(lag))
        rows = np.flatnonzero((c.chk_t >= 0) & (c.chk_t // MS_DAY == dnum))
        rows = rows[np.argsort(c.chk_t[rows], kind="stable")]
        for i in rows:
            a = ACTIONS[c.act[i]]
            ids.append(f"CHK-{c.ymd}-{i + 1:06d}")
            case_ids.append(f"CASE-{c.ymd}-{i + 1:06d}")
            action.append(a[0])
            t.append(int(c.chk_t[i]))
            exp.append(a[1])
            obs.append(a[1] if c.verified[i] else a[2])
            ver.append(bool(c.verified[i]))
    return pa.table({
        "check_id": pa.array(ids, pa.string()), "case_id": pa.array(case_ids, pa.string()),
        "action": pa.array(action, pa.string()), "checked_at": _ts(np.array(t, np.int64)),
        "expected_state": pa.array(exp, pa.string()), "observed_state": pa.array(obs, pa.string()),
        "verified": pa.array(ver, pa.bool_()),
        **_tz_cols(np.zeros(len(t), np.int64), "+00:00"),
        "_clean": pa.array(np.ones(len(t), bool)),
    })


def _kb_rows(w: _World, day: date) -> list[dict]:
    """The KB snapshot for a dt: same content every day; no article dated after the day it is exported."""
    limit = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    out = []
    for i, row in enumerate(w.kb):
        r = dict(row)
        if r["updated_at"] >= limit:  # a day before the reference date: keep the snapshot consistent
            r["updated_at"] = limit - timedelta(days=30 + i % 300, minutes=i * 7)
        out.append(r)
    return out


def _kb_table(rows: list[dict]) -> pa.Table:
    ms = np.array([int(r["updated_at"].timestamp() * 1000) for r in rows], np.int64)
    return pa.table({
        "article_id": pa.array([r["article_id"] for r in rows], pa.string()),
        "title": pa.array([r["title"] for r in rows], pa.string()),
        "body": pa.array([r["body"] for r in rows], pa.string()),
        "intents": pa.array([r["intents"] for r in rows], pa.list_(pa.string())),
        "status": pa.array([r["status"] for r in rows], pa.string()),
        "updated_at": _ts(ms),
        **_tz_cols(np.zeros(len(rows), np.int64), "Z"),
        "_clean": pa.array([r["status"] == "published" for r in rows]),
    })


# ----------------------------------------------------------------------------- malformed rows

KINDS = {  # which planted defects make sense for each source (invalid_json only in JSON Lines files)
    "agent_events": ("null_required", "bad_value", "out_of_range", "bad_type", "invalid_json", "ts_no_offset",
                     "ts_out_of_interval", "duplicate_id", "unknown_conversation"),
    "crm_cases": ("null_required", "bad_value", "out_of_range", "bad_type", "invalid_json", "ts_no_offset",
                  "ts_out_of_interval", "duplicate_id"),
    "surveys": ("null_required", "bad_value", "out_of_range", "bad_type", "invalid_json", "ts_no_offset",
                "ts_out_of_interval", "duplicate_id", "unknown_case"),
    "overrides": ("null_required", "bad_value", "out_of_range", "bad_type", "invalid_json", "ts_no_offset",
                  "ts_out_of_interval", "duplicate_id", "unknown_conversation", "incomplete_triad"),
    "outcome_checks": ("null_required", "bad_type", "invalid_json", "ts_no_offset", "ts_out_of_interval",
                       "duplicate_id", "unknown_case"),
    "kb_articles": ("null_required", "bad_value", "invalid_json", "duplicate_id"),
}
_NULL_FIELD = {"agent_events": "customer_id", "crm_cases": "customer_id", "surveys": "score",
               "overrides": "reviewer_id", "outcome_checks": "action", "kb_articles": "title"}
_BAD_VALUE = {"agent_events": ("event_type", "message_sent"), "crm_cases": ("status", "resolved"),
              "surveys": ("kind", "nps"), "overrides": ("stage", "routing"), "kb_articles": ("status", "deleted")}
_BAD_TYPE = {"agent_events": ("turn", "three"), "crm_cases": ("reopen_count", "two"), "surveys": ("score", "five"),
             "overrides": ("agent_confidence", "high"), "outcome_checks": ("verified", "maybe")}


def _shift_ts(value: str, days: int = 0, keep_offset: bool = True) -> str:
    t = datetime.fromisoformat(value) - timedelta(days=days)
    spec = "milliseconds" if "." in value else "seconds"
    if not keep_offset:
        return t.replace(tzinfo=None).isoformat(timespec=spec)
    out = t.isoformat(timespec=spec)
    return out[:-6] + "Z" if value.endswith("Z") else out


def _mutate(source: str, kind: str, row: dict, k: int, ymd: str) -> dict:
    """Give a copy of a valid row exactly one defect of `kind` (and a fresh id, so only that defect counts)."""
    spec = SOURCES[source]
    row[spec.id_column] = f"{row[spec.id_column]}-bad{k:05d}"
    if kind == "null_required":
        row[_NULL_FIELD[source]] = None
    elif kind == "bad_value":
        f, val = _BAD_VALUE[source]
        row[f] = val
    elif kind == "bad_type":
        f, val = _BAD_TYPE[source]
        row[f] = val
    elif kind == "out_of_range":
        if source == "agent_events":
            if row.get("confidence") not in (None, ""):
                row["confidence"] = 1.7
            else:
                row["turn"] = -1
        else:
            f, val = {"crm_cases": ("reopen_count", -1), "surveys": ("score", 9),
                      "overrides": ("agent_confidence", 1.7)}[source]
            row[f] = val
    elif kind in ("ts_no_offset", "ts_out_of_interval"):
        f = spec.time_column
        row[f] = _shift_ts(row[f], keep_offset=False) if kind == "ts_no_offset" else _shift_ts(row[f], days=10)
    elif kind == "unknown_conversation":
        row["conversation_id"] = f"CONV-{ymd}-Z{k:05d}"
        row["case_id"] = None
    elif kind == "unknown_case":
        row["case_id"] = f"CASE-{ymd}-Z{k:05d}"
        if "conversation_id" in row:
            row["conversation_id"] = None
    elif kind == "incomplete_triad":
        row["outcome"] = "corrected"
        row["rationale" if k % 2 else "human_decision"] = None
    return row


def _csv_cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


# ----------------------------------------------------------------------------- writing files


def _layout(source: str, formats: str) -> tuple[str, str, bool]:
    """(file name, format, gzip) of a source: 'mixed' mimics real exports, 'jsonl' keeps it uniform."""
    if formats == "jsonl":
        return "part-0000.jsonl", "jsonl", False
    return {"agent_events": ("part-0000.jsonl.gz", "jsonl", True), "kb_articles": ("part-0000.parquet", "parquet", False),
            "crm_cases": ("part-0000.csv", "csv", False), "surveys": ("part-0000.csv", "csv", False),
            "overrides": ("part-0000.jsonl", "jsonl", False),
            "outcome_checks": ("part-0000.jsonl", "jsonl", False)}[source]


class _Writer:
    """Serialises Arrow tables with DuckDB, appends planted rows, and swaps each file in atomically."""

    def __init__(self, landing: Path, formats: str, malformed_share: float, seed: int):
        import duckdb

        self.landing, self.formats, self.share, self.seed = landing, formats, malformed_share, seed
        self.con = duckdb.connect()
        # One DuckDB thread: an ordered COPY gains little from more, and under CPU contention extra
        # threads cost 2-4x wall time (measured). The second core compresses in parallel instead.
        self.con.execute("SET threads = 1")
        self.con.execute("SET memory_limit = '1GB'")  # its buffer pool would otherwise grow to 80 % of RAM
        self.con.execute("SET preserve_insertion_order = true")

    def _select(self, table: pa.Table, fmt: str, frac: bool) -> str:
        pattern = "%Y-%m-%dT%H:%M:%S.%g" if frac else "%Y-%m-%dT%H:%M:%S"
        repl = []
        for f in table.schema:
            name = f.name
            if name.startswith("_"):
                continue
            if name in ("ts", "created_at", "updated_at", "resolved_at", "last_reopened_at", "submitted_at",
                        "checked_at"):
                repl.append(f"strftime(make_timestamp(({name} + _off * 60000) * 1000), '{pattern}') || _tz AS {name}")
            elif name == "action_args":
                repl.append(f"{name}::JSON AS {name}")
            elif fmt == "csv" and pa.types.is_list(f.type):
                repl.append(f"to_json({name})::VARCHAR AS {name}")
        helpers = ", ".join(f.name for f in table.schema if f.name.startswith("_"))
        return f"SELECT * EXCLUDE ({helpers}) REPLACE ({', '.join(repl)}) FROM src" if repl else \
            f"SELECT * EXCLUDE ({helpers}) FROM src"

    def _render(self, table: pa.Table, fmt: str, frac: bool, path: Path, header: bool) -> None:
        self.con.register("src", table)
        try:
            opts = f"FORMAT csv, HEADER {'true' if header else 'false'}" if fmt == "csv" else "FORMAT json"
            target = path.as_posix().replace("'", "''")
            self.con.execute(f"COPY ({self._select(table, fmt, frac)}) TO '{target}' ({opts})")
        finally:
            self.con.unregister("src")

    def _plant(self, source: str, day: date, table: pa.Table, fmt: str, frac: bool, tmp: Path, fname: str):
        """Copies of valid rows, each given one defect; returned as text lines plus their ground truth."""
        kinds = [k for k in KINDS[source] if fmt != "csv" or k != "invalid_json"]
        if self.share <= 0 or table.num_rows == 0:
            return [], []
        rng = _rng(self.seed, day, S_MAL + 100 * SOURCE_NAMES.index(source))
        n_bad = max(len(kinds), int(np.ceil(self.share * table.num_rows)))
        kinds = [kinds[i] for i in rng.permutation(len(kinds))]
        clean = np.flatnonzero(table.column("_clean").to_numpy(zero_copy_only=False))
        pool = clean if len(clean) else np.arange(table.num_rows)
        src_rows = rng.choice(pool, n_bad, replace=n_bad > len(pool))
        sample = table.take(pa.array(src_rows, pa.int64()))
        lines = self._lines(sample, fmt, frac, tmp)
        header = table.schema.names
        header = [h for h in header if not h.startswith("_")]
        out, truth = [], []
        for k in range(n_bad):
            kind, line = kinds[k % len(kinds)], lines[k]
            if fmt == "csv":
                row = dict(zip(header, next(csv.reader([line]))))
            else:
                row = json.loads(line)
            rid = row[SOURCES[source].id_column]
            if kind == "duplicate_id":
                text = line
            elif kind == "invalid_json":
                text = line[: max(10, len(line) // 2)].rstrip("\\")
                rid = None
            else:
                row = _mutate(source, kind, row, k, _ymd(day))
                rid = row[SOURCES[source].id_column]
                if fmt == "csv":
                    buf = io.StringIO()
                    csv.writer(buf, lineterminator="\n").writerow([_csv_cell(row[h]) for h in header])
                    text = buf.getvalue().rstrip("\n")
                else:
                    text = json.dumps(row, separators=(",", ":"), ensure_ascii=False)
            out.append(text)
            truth.append({"source": source, "dt": day.isoformat(), "kind": kind, "id": rid, "file": fname})
        for i, t in enumerate(truth):
            if t["id"] is None:
                t["id"] = f"line:{table.num_rows + i + 1}"
        return out, truth

    def _render_bytes(self, table: pa.Table, fmt: str, frac: bool, tmp: Path, header: bool) -> bytes:
        path = tmp.with_name(tmp.name + ".body")
        try:
            self._render(table, fmt, frac, path, header=header)
            return path.read_bytes()
        finally:
            path.unlink(missing_ok=True)

    def _lines(self, table: pa.Table, fmt: str, frac: bool, tmp: Path) -> list[str]:
        return self._render_bytes(table, fmt, frac, tmp, header=False).decode("utf-8").splitlines()

    def write(self, source: str, day: date, table: pa.Table, *, frac: bool = False) -> tuple[int, list]:
        """Write one source's file for `day`; returns (data rows written, malformed ground truth)."""
        fname, fmt, gz = _layout(source, self.formats)
        folder = self.landing / source / f"dt={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / fname
        tmp = folder / f".{fname}.{os.getpid()}.{threading.get_ident()}.tmp"
        if fmt == "parquet":
            rows, truth = self._write_parquet(source, day, table, tmp, fname)
        else:
            planted, truth = self._plant(source, day, table, fmt, frac, tmp, fname)
            extra = "".join(line + "\n" for line in planted).encode("utf-8")
            comp = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31) if gz else None  # gzip header, mtime 0

            def sink(data: bytes) -> None:
                out.write(comp.compress(data) if comp else data)

            # Fixed-size slices bound DuckDB's memory; each slice is compressed in a worker thread while
            # DuckDB renders the next one (zlib and DuckDB both release the GIL).
            with open(tmp, "wb") as out, ThreadPoolExecutor(1) as pool:
                pending = None
                for k, first in enumerate(range(0, max(table.num_rows, 1), WRITE_SLICE)):
                    data = self._render_bytes(table.slice(first, WRITE_SLICE), fmt, frac, tmp,
                                              header=fmt == "csv" and k == 0)
                    if pending is not None:
                        pending.result()
                    pending = pool.submit(sink, data)
                    del data
                if pending is not None:
                    pending.result()
                sink(extra)
                if comp:
                    out.write(comp.flush())
            rows = table.num_rows + len(planted)
        os.replace(tmp, final)
        for other in folder.iterdir():  # the dt folder holds exactly this export
            if other.name != fname and not other.name.startswith("."):
                other.unlink()
        return rows, truth

    def _write_parquet(self, source: str, day: date, table: pa.Table, tmp: Path, fname: str):
        """The KB snapshot as Parquet, typed timestamps; planted rows are appended as Python rows."""
        import pyarrow.parquet as pq

        ms = table.column("updated_at").to_numpy()
        rows = table.drop_columns([c for c in table.column_names if c.startswith("_")]).to_pylist()
        for r, t in zip(rows, ms):
            r["updated_at"] = datetime.fromtimestamp(int(t) / 1000, tz=UTC)
        truth = []
        if self.share > 0 and rows:
            rng = _rng(self.seed, day, S_MAL + 100 * SOURCE_NAMES.index(source))
            kinds = [k for k in KINDS[source] if k != "invalid_json"]
            n_bad = max(len(kinds), int(np.ceil(self.share * len(rows))))
            kinds = [kinds[i] for i in rng.permutation(len(kinds))]
            pool = [i for i, r in enumerate(rows) if r["status"] == "published"] or list(range(len(rows)))
            src_rows = rng.choice(pool, n_bad)
            for k in range(n_bad):
                kind, row = kinds[k % len(kinds)], dict(rows[int(src_rows[k])])
                row["intents"] = list(row["intents"])
                if kind != "duplicate_id":
                    row = _mutate(source, kind, row, k, _ymd(day))
                rows.append(row)
                truth.append({"source": source, "dt": day.isoformat(), "kind": kind, "id": row["article_id"],
                              "file": fname})
        schema = pa.schema([("article_id", pa.string()), ("title", pa.string()), ("body", pa.string()),
                            ("intents", pa.list_(pa.string())), ("status", pa.string()),
                            ("updated_at", pa.timestamp("ms", tz="UTC"))])
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
        return len(rows), truth


# ----------------------------------------------------------------------------- public API


def generate(landing: str | Path, start: date, end: date, *, conversations_per_day: int = 300, seed: int = 7,
             malformed_share: float = 0.0, kb_gap_share: float = 0.15,
             classifier: Callable[[list[str]], list[tuple[str, float]]] | None = None,
             formats: str = "mixed", gap_regime: gap_regimes.GapRegime | None = None) -> dict:
    """Write `<landing>/<source>/dt=<day>/` for every day in [start, end] and return the ground truth.

    The ground truth is also merged into `<landing>/_ground_truth.json` (per-day entries of the days
    written here replace earlier ones; other days are kept).

    `classifier` replaces the built-in error model: it is called once per simulated day with that day's
    opening messages as the customers wrote them (PII included). Because a day's exports carry the
    consequences of up to `CASE_LOOKBACK` earlier days (cases closed, surveys, reviews), those earlier
    days are simulated and classified too. For the same reason the first days of a fresh landing hold
    some surveys, reviews and checks that refer to cases and conversations of days before `start`, as a
    real export switched on mid-stream would: their ids carry the earlier date (CASE-YYYYMMDD-...).
    `malformed_share` > 0 appends, per source and day, max(#kinds, ceil(share x rows)) copies of valid
    rows, each with exactly one defect, listed in the ground truth's `malformed`.
    `gap_regime` plants a labelling regime for gap evaluation (`gap_regimes.GapRegime`); None or the
    default regime leaves every byte as it was.
    """
    if formats not in ("mixed", "jsonl"):
        raise ValueError("formats must be 'mixed' or 'jsonl'")
    if end < start:
        raise ValueError("end is before start")
    if conversations_per_day < 1:
        raise ValueError("conversations_per_day must be at least 1")
    landing = Path(landing)
    landing.mkdir(parents=True, exist_ok=True)
    world = _world(seed, float(kb_gap_share), max(1000, 4 * conversations_per_day))
    regime = gap_regime if gap_regime is not None and gap_regime.active else None
    gen = _Gen(world, conversations_per_day, classifier, regime)
    writer = _Writer(landing, formats, malformed_share, seed)
    st = world.st

    days = [start + timedelta(i) for i in range((end - start).days + 1)]
    counts = {s: {} for s in SOURCE_NAMES}
    malformed, pii_by_day, stats, params = [], {}, {}, {}
    for day in days:
        gen.evict(day - timedelta(CASE_LOOKBACK))
        key = day.isoformat()
        events, pii = _events(gen, day)
        if regime is not None:
            events, reply_pii = gap_regimes.events(regime, gen, day, events)
            pii = pii + reply_pii
        n_ev, bad = writer.write("agent_events", day, events, frac=True)
        del events
        counts["agent_events"][key] = n_ev
        malformed += bad

        cases = _cases(gen, day)
        if regime is not None:
            cases = gap_regimes.cases(regime, gen, cases)
        counts["crm_cases"][key], bad = writer.write("crm_cases", day, cases)
        malformed += bad

        surveys, sv_pii = _surveys(gen, day)
        counts["surveys"][key], bad = writer.write("surveys", day, surveys)
        malformed += bad

        overrides, ov_pii, natural = _overrides(gen, day)
        if regime is not None:
            overrides, ov_pii, natural = gap_regimes.overrides(regime, gen, overrides, ov_pii, natural)
        counts["overrides"][key], bad = writer.write("overrides", day, overrides)
        malformed += bad + [{"source": "overrides", "dt": key, "kind": "incomplete_triad", "id": oid,
                             "file": _layout("overrides", formats)[0], "natural": True} for oid in natural]

        counts["outcome_checks"][key], bad = writer.write("outcome_checks", day, _checks(gen, day))
        malformed += bad

        counts["kb_articles"][key], bad = writer.write("kb_articles", day, _kb_table(_kb_rows(world, day)))
        malformed += bad

        pii_by_day[key] = sorted(set(pii + sv_pii + ov_pii))
        c = gen.core(day)
        stats[key] = {
            "conversations": int(c.n), "returning_conversations": int(c.ret.sum()),
            "classifier_accuracy": round(float(c.correct.mean()), 4),
            "gap_conversations": int(c.gap.sum()), "escalated": int(c.esc.sum()),
            "reopened_later": int(c.reopened.sum()), "shadow": int(c.shadow.sum()),
            "cases_exported": counts["crm_cases"][key],
        }
        params[key] = {"seed": seed, "conversations_per_day": conversations_per_day,
                       "malformed_share": malformed_share, "kb_gap_share": kb_gap_share, "formats": formats,
                       "classifier": "custom" if classifier else "builtin"}

    gap_intents = [c for c, g_ in zip(st.intents, world.gap) if g_]
    truth = {
        "seed": seed,
        "intents": list(st.intents),
        "gap_intents": gap_intents,
        "kb_intents": [c for c, g_ in zip(st.intents, world.gap) if not g_],
        "kb_articles": {r["article_id"]: {"intents": r["intents"], "status": r["status"]} for r in world.kb},
        "files": {s: dict(zip(("name", "format", "gzip"), _layout(s, formats))) for s in SOURCE_NAMES},
        "lookback_days": CASE_LOOKBACK,
        "days": [d.isoformat() for d in days],
        "counts": counts,
        "malformed": malformed,
        "pii_by_day": pii_by_day,
        "stats": stats,
        "params": params,
    }
    if regime is not None:
        truth.update(gap_regimes.ground_truth(regime, world))
    return _merge_ground_truth(landing, truth)


def _merge_ground_truth(landing: Path, new: dict) -> dict:
    """Keep other days' entries of an existing ground truth; the days just written replace theirs.

    Locked, because parallel runs (a backfill) may generate different days into one landing."""
    with open(landing / f".{GROUND_TRUTH}.lock", "w") as lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:  # not POSIX: best effort
            pass
        return _merge_locked(landing, new)


def _merge_locked(landing: Path, new: dict) -> dict:
    path = landing / GROUND_TRUTH
    merged = dict(new)
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        written = set(new["days"])
        merged["days"] = sorted(set(old.get("days", [])) | written)
        merged["counts"] = {s: {**{d: n for d, n in old.get("counts", {}).get(s, {}).items() if d not in written},
                                **new["counts"][s]} for s in SOURCE_NAMES}
        merged["malformed"] = [m for m in old.get("malformed", []) if m.get("dt") not in written] + new["malformed"]
        for k in ("pii_by_day", "stats", "params"):
            merged[k] = {**{d: v for d, v in old.get(k, {}).items() if d not in written}, **new[k]}
    merged["days"] = sorted(merged["days"])
    for k in ("pii_by_day", "stats", "params"):
        merged[k] = dict(sorted(merged[k].items()))
    merged["malformed"] = sorted(merged["malformed"], key=lambda m: (m["dt"], m["source"]))
    merged["pii"] = sorted({p for v in merged["pii_by_day"].values() for p in v})
    tmp = path.with_name(f".{GROUND_TRUTH}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(merged, indent=1, sort_keys=False))
    os.replace(tmp, path)
    return merged
