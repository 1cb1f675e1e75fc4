"""Constants, vocabularies, the seeded random streams, the personal-data fakes and the Arrow helpers
shared by the generator's modules.
"""

from __future__ import annotations

import random
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
from feedback_loop.ingest.contract import EVENT_TYPES

DATA = Path(__file__).resolve().parents[2] / "feedback_loop" / "data"  # the product's bundled Banking77 and ABCD
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
