"""The project's one personal-data redactor: find e-mail addresses, phone numbers, payment cards, IBANs and
configured extra patterns in free text and replace them with typed placeholders (`[EMAIL]`, `[PHONE]`,
`[CARD]`, `[IBAN]`, `[<NAME>]` for an extra pattern).

Every stage that writes free text to a dataset, report or log redacts it with this module first:

    from feedback_loop.datasets import pii
    pii.redact("mail me at ann@example.com")          # -> "mail me at [EMAIL]"
    pii.find("call +44 20 7946 0958")                  # -> [("PHONE", (5, 21))]
    r = pii.Redactor.from_settings(settings)          # regions and extra patterns from Settings
    pii.register_duckdb(con, settings)                # SQL: SELECT redact_pii(text) FROM ...

Why these detectors: phone numbers are recognised by `phonenumbers` (Google's libphonenumber metadata),
which knows every region's numbering plan, instead of a regex that either misses formats or eats dates and
amounts; card numbers must pass the Luhn checksum and IBANs the ISO 13616 mod-97 checksum and country
length (`python-stdnum`), so order numbers and other long digit runs are left alone unless they really are
one. Detectors run in a fixed order on a copy of the text in which earlier findings are masked, so a card
number is never also reported as three phone numbers.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

from feedback_loop.patches.phonenumbers_matcher import matcher_class as _matcher_class  # guarded (patches/)

# Order = precedence: an earlier detector's finding masks the text for the later ones.
KINDS = ("EMAIL", "IBAN", "CARD", "PHONE")
DEFAULT_PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "IE", "IN", "AU", "CA")

EMAIL_RE = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}\b")
# Candidates only: every hit is confirmed by a checksum before it counts.
IBAN_CANDIDATE_RE = re.compile(r"\b[A-Za-z]{2}\d{2}(?:[ \-]?[A-Za-z0-9]){11,32}")
DIGIT_RUN_RE = re.compile(r"(?<!\d)\d(?:[ \-]?\d)*")  # digits with single spaces or hyphens between
# What every built-in finding needs in ASCII text: an e-mail's "@" or a digit (an IBAN's check digits, a card's
# and a phone's). Most messages have neither, and one search says so before any detector runs.
_BUILT_IN_NEEDS_RE = re.compile(r"[0-9@]")
_MASK = "\x00"


def placeholder(kind: str) -> str:
    return f"[{kind}]"


@dataclass(frozen=True)
class Redactor:
    """A configured redactor. `extra_patterns` maps a placeholder name to a regular expression."""

    phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS
    extra_patterns: dict = field(default_factory=dict)
    phone_leniency: str = "valid"  # phonenumbers.Leniency name: possible | valid | strict_grouping | exact_grouping

    def __post_init__(self):
        compiled = tuple((str(k).upper(), re.compile(v)) for k, v in sorted((self.extra_patterns or {}).items()))
        object.__setattr__(self, "_extra", compiled)
        object.__setattr__(self, "_clean", set())  # see `find`

    # Texts the detectors ran on and found nothing in, by a 128-bit digest: `find` is a pure function of the
    # text, and a text comes back, unchanged, in the checks after redaction (every dataset file is scanned
    # again before it is published, issue 18), as the same id in many tool calls, and as the same system
    # message, prompt or reply in every file of every version of a night; the phone matcher's "nothing in
    # any region" is its costliest answer (~30 us a region). (A finding is not remembered: in the checks it
    # stops the version.)
    CLEAN_MEMO = 1 << 19  # digests remembered (~45 MiB); beyond it the memo starts again (same answers)

    @classmethod
    def from_settings(cls, settings) -> Redactor:
        """The redactor configured by `Settings.pii_phone_regions` and `Settings.pii_patterns`."""
        regions = getattr(settings, "pii_phone_regions", None) or ",".join(DEFAULT_PHONE_REGIONS)
        if isinstance(regions, str):
            regions = tuple(r.strip().upper() for r in regions.split(",") if r.strip())
        return cls(phone_regions=tuple(regions), extra_patterns=dict(getattr(settings, "pii_patterns", None) or {}),
                   phone_leniency=getattr(settings, "pii_phone_leniency", "valid") or "valid")

    # -- detection -------------------------------------------------------------------------------------

    def find(self, text: str | None) -> list[tuple[str, tuple[int, int]]]:
        """Every personal-data span in `text` as (kind, (start, end)), ordered by position, not overlapping."""
        if not text:
            return []
        if not self._extra and text.isascii() and _BUILT_IN_NEEDS_RE.search(text) is None:
            return []  # no "@" and no digit: no detector can find anything (outside ASCII, `\d` is wider)
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        if key in self._clean:
            return []
        found: list[tuple[str, tuple[int, int]]] = []
        masked = text

        def take(kind: str, start: int, end: int) -> None:
            nonlocal masked
            if start >= end or _MASK in masked[start:end]:
                return
            found.append((kind, (start, end)))
            masked = masked[:start] + _MASK * (end - start) + masked[end:]

        for kind, rx in self._extra:  # configured patterns first: the operator knows best
            for m in rx.finditer(masked):
                take(kind, m.start(), m.end())
        if "@" in masked:
            for m in EMAIL_RE.finditer(masked):
                take("EMAIL", m.start(), m.end())
        for start, end in _ibans(masked):
            take("IBAN", start, end)
        for start, end in _cards(masked):
            take("CARD", start, end)
        if _room_for_phone(masked):  # no phone number has fewer than 7 digits: skip the matcher
            for start, end in _phones(masked, self.phone_regions, self.phone_leniency):
                # ... nor accept a shorter match: libphonenumber takes "168.25" for a short number once the
                # text has 7 digits elsewhere, so an amount was a phone beside a case id but not alone
                # (a tool call's argument passed the per-value redaction, then failed the file's PII scan).
                if _digits(masked[start:end]) >= 7:
                    take("PHONE", start, end)
                    if not _room_for_phone(masked):  # every later span would be refused: stop matching
                        break
        if not found:
            if len(self._clean) >= self.CLEAN_MEMO:
                self._clean.clear()
            self._clean.add(key)
        return sorted(found, key=lambda f: f[1])

    def redact_counted(self, text: str | None) -> tuple[str | None, Counter]:
        """`text` with every finding replaced by its placeholder, and the number replaced per kind."""
        if not text:
            return text, Counter()
        spans = self.find(text)
        if not spans:
            return text, Counter()
        out, pos = [], 0
        for kind, (start, end) in spans:
            out.append(text[pos:start])
            out.append(placeholder(kind))
            pos = end
        out.append(text[pos:])
        return "".join(out), Counter(kind for kind, _ in spans)

    def redact(self, text: str | None) -> str | None:
        """`text` with personal data replaced by typed placeholders (None stays None)."""
        return self.redact_counted(text)[0]

    def redact_obj(self, obj, counts: Counter | None = None):
        """A deep copy of a JSON-like value with every string redacted (dict keys are left alone)."""
        if isinstance(obj, str):
            red, c = self.redact_counted(obj)
            if counts is not None:
                counts.update(c)
            return red
        if isinstance(obj, dict):
            return {k: self.redact_obj(v, counts) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.redact_obj(v, counts) for v in obj]
        return obj


# -- detectors ---------------------------------------------------------------------------------------------


def _ibans(text: str):
    """IBAN spans: a candidate run, shortened character by character until the mod-97 and country-length
    checks pass; a candidate with no valid prefix is retried one character further on."""
    from stdnum import iban

    pos = 0
    while (m := IBAN_CANDIDATE_RE.search(text, pos)) is not None:
        raw = m.group(0)
        # Offsets in `raw` just after each alphanumeric character: maps a compact prefix back to a span.
        ends = [i + 1 for i, ch in enumerate(raw) if ch.isalnum()]
        compact = "".join(ch for ch in raw if ch.isalnum()).upper()
        for length in range(len(compact), 14, -1):
            if iban.is_valid(compact[:length]):
                yield m.start(), m.start() + ends[length - 1]
                pos = m.start() + ends[length - 1]
                break
        else:
            pos = m.start() + 1


def _cards(text: str):
    """Payment card numbers: 13 to 19 digits, whole digit groups (spaces or hyphens between them), Luhn-valid.

    Windows of whole groups are tried longest first, so a card followed by another number ("... 1111 12")
    is still found."""
    from stdnum import luhn

    for m in DIGIT_RUN_RE.finditer(text):
        groups = [(g.start() + m.start(), g.end() + m.start()) for g in re.finditer(r"\d+", m.group(0))]
        i = 0
        while i < len(groups):
            for j in range(len(groups) - 1, i - 1, -1):
                digits = re.sub(r"\D", "", text[groups[i][0]:groups[j][1]])
                if 13 <= len(digits) <= 19 and luhn.is_valid(digits):
                    yield groups[i][0], groups[j][1]
                    i = j
                    break
            i += 1


def _room_for_phone(masked: str) -> bool:
    """Whether a phone number can still be taken in `masked`: `take` refuses a span that overlaps a finding,
    and a phone needs 7 digits, so some stretch between findings must hold 7. Once none does, the regions
    left cannot add a span (a customer id found in the third region skipped the other eight)."""
    if _MASK not in masked:
        return _digits(masked) >= 7
    return any(_digits(part) >= 7 for part in masked.split(_MASK) if len(part) >= 7)


def _digits(text: str) -> int:
    """How many characters of `text` are digits (`str.isdigit`); in ASCII text only 0-9 are, counted in C."""
    if text.isascii():
        return sum(map(text.count, "0123456789"))
    return sum(c.isdigit() for c in text)


def _phones(text: str, regions: tuple[str, ...], leniency: str):
    """Phone numbers that libphonenumber accepts in any of `regions` (international numbers in all)."""
    import phonenumbers

    level = getattr(phonenumbers.Leniency, leniency.upper())
    seen: set[tuple[int, int]] = set()
    searches: dict[int, tuple[int, str] | None] = {}  # the regions share the text's candidate search
    for region in regions:
        for m in _matcher_class()(text, region, leniency=level, searches=searches):
            span = (m.start, m.end)
            if span not in seen:
                seen.add(span)
                yield span


# -- module-level convenience --------------------------------------------------------------------------------

_lock = threading.Lock()


@lru_cache(maxsize=8)
def _cached(regions: tuple[str, ...], patterns: tuple[tuple[str, str], ...], leniency: str) -> Redactor:
    return Redactor(phone_regions=regions, extra_patterns=dict(patterns), phone_leniency=leniency)


def redactor(settings=None) -> Redactor:
    """The redactor for `settings` (the defaults when None), cached per configuration."""
    if settings is None:
        return _cached(DEFAULT_PHONE_REGIONS, (), "valid")
    r = Redactor.from_settings(settings)
    with _lock:
        return _cached(r.phone_regions, tuple(sorted(r.extra_patterns.items())), r.phone_leniency)


def find(text: str | None, settings=None) -> list[tuple[str, tuple[int, int]]]:
    """Personal-data spans in `text`: [(kind, (start, end)), ...]."""
    return redactor(settings).find(text)


def redact(text: str | None, settings=None) -> str | None:
    """`text` with personal data replaced by `[EMAIL]`, `[PHONE]`, `[CARD]`, `[IBAN]` or `[<PATTERN>]`."""
    return redactor(settings).redact(text)


def register_duckdb(con, settings=None, name: str = "redact_pii") -> str:
    """Register `name(VARCHAR) -> VARCHAR` on a DuckDB connection, so SQL can redact a column in place."""
    from duckdb.sqltypes import VARCHAR

    r = redactor(settings)
    con.create_function(name, r.redact, [VARCHAR], VARCHAR, side_effects=False)
    return name
