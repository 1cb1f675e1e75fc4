"""The PII redactor: every kind found and replaced by its placeholder, look-alikes left alone."""

from __future__ import annotations

import duckdb
import pytest
from feedback_loop.datasets import pii
from feedback_loop.settings import Settings
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st


def luhn_complete(payload: str) -> str:
    """`payload` plus the Luhn check digit."""
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return payload + str((10 - total % 10) % 10)


def iban(country: str, bban: str) -> str:
    digits = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(digits) % 97:02d}{bban}"


CASES = [
    ("write to anna.berg77@example.org today", "EMAIL", "anna.berg77@example.org"),
    ("mail J.Smith+billing@mail.example.co.uk.", "EMAIL", "J.Smith+billing@mail.example.co.uk"),
    ("call me on +44 20 7946 0321 please", "PHONE", "+44 20 7946 0321"),
    ("my number is +1 415-555-0142", "PHONE", "+1 415-555-0142"),
    ("Festnetz +49 30 901820, danke", "PHONE", "+49 30 901820"),
    ("tel +33 1 42 68 53 00", "PHONE", "+33 1 42 68 53 00"),
    ("US local (415) 555-2671 works", "PHONE", "(415) 555-2671"),
    ("UK local 020 7946 0958 works", "PHONE", "020 7946 0958"),
    ("card 4539 5787 6362 1486 was charged", "CARD", "4539 5787 6362 1486"),
    ("card 5555-5555-5555-4444!", "CARD", "5555-5555-5555-4444"),
    ("card 4111111111111111 2024", "CARD", "4111111111111111"),
    ("IBAN DE89 3704 0044 0532 0130 00 AND more", "IBAN", "DE89 3704 0044 0532 0130 00"),
    ("send to GB82WEST12345698765432.", "IBAN", "GB82WEST12345698765432"),
    ("ref AB12 FR1420041010050500013M02606 ok", "IBAN", "FR1420041010050500013M02606"),
]


@pytest.mark.parametrize("text,kind,secret", CASES, ids=[c[1] + ":" + c[2] for c in CASES])
def test_each_kind_is_found_and_replaced(text, kind, secret):
    found = pii.find(text)
    assert (kind, (text.index(secret), text.index(secret) + len(secret))) in found
    red = pii.redact(text)
    assert secret not in red and f"[{kind}]" in red


LOOKALIKES = [
    "order 4539 5787 6362 1487 is on its way",  # Luhn fails: not a card
    "dated 2026-11-20 at 10:30, amount 1234.56 EUR",
    "reference CONV-20261120-000101 and case 123456",
    "IBAN DE00 3704 0044 0532 0130 00 has a wrong check",  # mod-97 fails
    "version 3.11.4 of the app, build 20261120",
    "I need 2 cards and 3 top ups",
    # an amount beside an id: the text has 7 digits, the number itself 5 (found by the steady-state bench,
    # where a tool call's arguments passed the per-value redaction and failed the dataset's PII scan)
    "amount 168.25 case CASE-20261023-007122",
    '{"amount": 168.25, "case_id": "CASE-20261023-007122", "currency": "EUR", "customer_id": "CUST-0079416"}',
]


@pytest.mark.parametrize("text", LOOKALIKES)
def test_lookalikes_are_left_alone(text):
    assert pii.find(text) == []
    assert pii.redact(text) == text


def test_a_card_is_not_also_reported_as_phone_numbers():
    text = "card 4539 5787 6362 1486, phone +44 20 7946 0321"
    assert [k for k, _ in pii.find(text)] == ["CARD", "PHONE"]
    assert pii.redact(text) == "card [CARD], phone [PHONE]"


def test_a_phone_beside_short_numbers_is_still_found():
    text = "refund 168.25 on CASE-20261023-007122, call me on +44 20 7946 0321"
    assert [k for k, _ in pii.find(text)] == ["PHONE"]
    assert pii.redact(text).endswith("call me on [PHONE]")


def test_none_and_empty_pass_through():
    assert pii.redact(None) is None
    assert pii.redact("") == ""
    assert pii.find(None) == []


def test_extra_patterns_and_regions_come_from_settings(monkeypatch, data_dir):
    monkeypatch.setenv("ACSR_PII_PATTERNS", '{"customer_no": "CUST-\\\\d{6}"}')
    monkeypatch.setenv("ACSR_PII_PHONE_REGIONS", "DE")
    s = Settings.load()
    assert pii.redact("id CUST-004711, mail a@b.de", s) == "id [CUSTOMER_NO], mail [EMAIL]"
    # With only German numbering plans, a US national number is not a phone number; an international one is.
    assert pii.find("(415) 555-2671", s) == []
    assert pii.redact("+1 415-555-0142", s) == "[PHONE]"


def test_redact_obj_walks_nested_json_and_counts():
    from collections import Counter

    counts = Counter()
    out = pii.redactor().redact_obj({"a": ["x@y.org", {"b": "+44 20 7946 0321"}], "n": 3}, counts)
    assert out == {"a": ["[EMAIL]", {"b": "[PHONE]"}], "n": 3}
    assert counts == {"EMAIL": 1, "PHONE": 1}


def test_duckdb_function_redacts_a_column():
    con = duckdb.connect()
    name = pii.register_duckdb(con)
    rows = con.execute(f"SELECT {name}(t) FROM (VALUES ('mail x@y.org'), (NULL), ('fine')) v(t)").fetchall()
    assert rows == [("mail [EMAIL]",), (None,), ("fine",)]


_filler = st.text(alphabet=st.sampled_from(list("abcdefghij klmnop,.!?")), max_size=30)


@st.composite
def secrets(draw):
    kind = draw(st.sampled_from(["EMAIL", "PHONE", "CARD", "IBAN"]))
    if kind == "EMAIL":
        user = draw(st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,8})?[0-9]{0,2}", fullmatch=True))
        return kind, f"{user}@{draw(st.sampled_from(['example.org', 'mail.example.com', 'bank.example']))}"
    if kind == "PHONE":
        return kind, draw(st.sampled_from([
            f"+44 20 7946 0{draw(st.integers(0, 999)):03d}",
            f"+1 {draw(st.sampled_from([212, 415, 646]))}-555-01{draw(st.integers(0, 99)):02d}",
            f"+49 30 {draw(st.integers(100000, 999999))}",
        ]))
    if kind == "CARD":
        payload = draw(st.sampled_from(["4", "51", "55"])) + draw(st.from_regex(r"[0-9]{13}", fullmatch=True))
        number = luhn_complete(payload[:15])
        sep = draw(st.sampled_from([" ", "-", ""]))
        return kind, sep.join(number[i:i + 4] for i in range(0, 16, 4))
    country, bban = draw(st.sampled_from([("DE", r"[0-9]{18}"), ("FR", r"[0-9]{23}"), ("GB", r"[A-Z]{4}[0-9]{14}")]))
    value = iban(country, draw(st.from_regex(bban, fullmatch=True)))
    if draw(st.booleans()):
        value = " ".join(value[i:i + 4] for i in range(0, len(value), 4))
    return kind, value


@hsettings(max_examples=300, deadline=None)
@given(before=_filler, secret=secrets(), after=_filler)
def test_generated_personal_data_never_survives(before, secret, after):
    kind, value = secret
    text = f"{before} {value} {after}"
    red = pii.redact(text)
    assert value not in red
    assert f"[{kind}]" in red


def _without_shortcut(redactor, text):
    """`redactor.find(text)` with every detector run, as before the no-"@"-no-digit shortcut (and by a new
    redactor of the same configuration, whose memo of clean texts is empty)."""
    import dataclasses
    import re
    from unittest import mock

    with mock.patch.object(pii, "_BUILT_IN_NEEDS_RE", re.compile("")):
        return dataclasses.replace(redactor).find(text)


_mixed = st.text(alphabet=st.sampled_from(list("abcXYZ @.+-()0123456789") + ["\u0662", "\u0660", "\uff14", "\u00b2", "é"]),
                 max_size=40)


@hsettings(max_examples=300, deadline=None)
@given(before=_filler, secret=secrets(), after=_mixed)
def test_the_no_digit_shortcut_finds_what_every_detector_finds(before, secret, after):
    r = pii.redactor()
    for text in (before, after, f"{before} {secret[1]} {after}", f"{before} {after}"):
        assert r.find(text) == _without_shortcut(r, text)


def test_the_shortcut_leaves_configured_patterns_and_non_ascii_digits_to_the_detectors():
    # A configured pattern needs no digit; digits outside ASCII are digits to `\d` and to libphonenumber.
    r = pii.Redactor(extra_patterns={"ticket": r"TICKET-[A-Z]{4}"})
    assert r.find("see TICKET-ABCD now") == [("TICKET", (4, 15))]
    arabic = "call +\u0664\u0664 \u0662\u0660 \u0667\u0669\u0664\u0666 \u0660\u0669\u0665\u0668"
    assert pii.find(arabic) == [("PHONE", (5, 21))]
    assert pii.find("mail ann@example.com and nothing else") == [("EMAIL", (5, 20))]
    assert pii.find("no personal data here at all") == []


def test_a_text_found_clean_is_not_scanned_again(monkeypatch):
    # The memo of clean texts: the datasets stage scans a text when it redacts it and again when it checks
    # the files it wrote; the second answer comes from the memo. A text with findings is scanned every time.
    r = pii.Redactor()
    clean, phone = "case CASE-20261120-051447 for order 1234567", "call me on +44 20 7946 0321 please"
    assert r.find(clean) == [] and r.find(phone) == [("PHONE", (11, 27))]
    calls = []
    real = pii._phones
    monkeypatch.setattr(pii, "_phones", lambda *a: calls.append(a[0]) or real(*a))
    assert r.find(clean) == []
    assert calls == []
    assert r.find(phone) == [("PHONE", (11, 27))]
    assert len(calls) == 1
    assert pii.Redactor().find(clean) == [] and len(calls) == 2  # another redactor has its own memo


def test_the_clean_memo_starts_again_when_full(monkeypatch):
    monkeypatch.setattr(pii.Redactor, "CLEAN_MEMO", 3)
    r = pii.Redactor()
    sizes = []
    for n in range(1000, 1010):
        assert r.find(f"order {n} of 12 items") == []
        sizes.append(len(r._clean))
    assert sizes == [1, 2, 3, 1, 2, 3, 1, 2, 3, 1]
    assert r.find("call me on +44 20 7946 0321 please") == [("PHONE", (11, 27))]


@hsettings(max_examples=200, deadline=None)
@given(texts=st.lists(st.one_of(_mixed, secrets().map(lambda s: f"x {s[1]} y")), min_size=1, max_size=6))
def test_a_redactor_that_remembers_answers_as_a_new_one(texts):
    # The same texts, some repeated, some with personal data: every answer equals a new redactor's.
    r = pii.Redactor()
    for text in texts + texts[::-1]:
        assert r.find(text) == pii.Redactor().find(text)
