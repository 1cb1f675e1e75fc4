"""The guarded phonenumbers matcher (feedback_loop.patches.phonenumbers_matcher): the same spans as the stock
PhoneNumberMatcher over the PII corpus in every configured region, and the stock matcher when the library
code it relies on changed."""

from __future__ import annotations

import logging

import phonenumbers
import pytest
from feedback_loop.datasets import pii
from feedback_loop.patches import phonenumbers_matcher as pm
from feedback_loop.settings import Settings
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pii_texts import corpus

REGIONS = tuple(r.strip() for r in Settings().pii_phone_regions.split(","))


@pytest.fixture(autouse=True)
def _fresh_matcher():
    pm.matcher_class.cache_clear()
    yield
    pm.matcher_class.cache_clear()


def _stock(text: str, region: str, leniency) -> list[tuple]:
    return [(m.start, m.end, m.raw_string, m.number)
            for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=leniency)]


def _patched(text: str, leniency) -> dict[str, list[tuple]]:
    """Per region, as pii._phones runs them: one candidate search shared by every region's matcher."""
    searches: dict = {}
    cls = pm.matcher_class()
    return {r: [(m.start, m.end, m.raw_string, m.number) for m in cls(text, r, leniency=leniency, searches=searches)]
            for r in REGIONS}


def test_configured_regions_are_the_redactors():
    assert REGIONS == pii.DEFAULT_PHONE_REGIONS


def test_the_remembering_matcher_is_in_use_with_the_pinned_library():
    """If this fails after an upgrade, the guard fell back: re-read the library code and re-pin."""
    assert pm.matcher_class().__name__ == "_RememberingMatcher"


@pytest.mark.parametrize("leniency", ["VALID", "POSSIBLE"])
def test_spans_equal_the_stock_matcher_over_the_corpus(leniency):
    level = getattr(phonenumbers.Leniency, leniency)
    texts = corpus()
    found = 0
    for _ in range(2):  # the second pass answers from the remembered verdicts
        for text in texts:
            got = _patched(text, level)
            for region in REGIONS:
                expected = _stock(text, region, level)
                assert got[region] == expected, (region, text)
                found += len(expected)
    assert found > 100  # the corpus does hold phone numbers in every format


def test_redactor_findings_equal_with_the_stock_matcher(monkeypatch):
    """The whole redactor (masking order included) finds the same with the stock matcher."""
    texts = corpus()
    patched = [pii.Redactor().find(t) for t in texts]
    monkeypatch.setattr(pii, "_matcher_class", pm._stock_class)
    assert [pii.Redactor().find(t) for t in texts] == patched
    assert sum(k == "PHONE" for f in patched for k, _ in f) > 40


@hsettings(max_examples=150, deadline=None)
@given(st.text(alphabet="0123456789 +-()./x\x00aT:,", max_size=60))
def test_spans_equal_the_stock_matcher_on_generated_text(text):
    level = phonenumbers.Leniency.VALID
    got = _patched(text, level)
    for region in REGIONS:
        assert got[region] == _stock(text, region, level)


@pytest.mark.parametrize("change", ["hash", "missing"])
def test_changed_library_code_falls_back_to_the_stock_matcher(monkeypatch, caplog, change):
    pins = dict(pm._EXPECTED_SOURCE_SHA256)
    if change == "hash":
        pins[f"{pm._M}:PhoneNumberMatcher._find"] = "0" * 64
    else:
        pins[f"{pm._M}:_NO_SUCH_PATTERN"] = "0" * 64
    monkeypatch.setattr(pm, "_EXPECTED_SOURCE_SHA256", pins)
    monkeypatch.setattr("feedback_loop.patches._warned", set())
    with caplog.at_level(logging.WARNING, logger="feedback_loop.patches"):
        cls = pm.matcher_class()
        pm.matcher_class.cache_clear()
        pm.matcher_class()
    assert cls.__name__ == "_StockMatcher"
    warnings = [r for r in caplog.records if "using the stock PhoneNumberMatcher" in r.getMessage()]
    assert len(warnings) == 1  # once per process
    text = "call +44 20 7946 0958 or (212) 555-0187"
    got = _patched(text, phonenumbers.Leniency.VALID)
    assert got["GB"] == _stock(text, "GB", phonenumbers.Leniency.VALID) and got["US"]


def _every_region(text: str) -> list[tuple[str, tuple[int, int]]]:
    """Redactor.find with the phone stage scanning every region to the end (no early stop): the reference
    for `pii._room_for_phone`."""
    r = pii.Redactor()
    found = [f for f in r.find(text) if f[0] != "PHONE"]
    masked = text
    for _, (s, e) in found:
        masked = masked[:s] + pii._MASK * (e - s) + masked[e:]
    if pii._digits(masked) >= 7:
        for s, e in pii._phones(masked, r.phone_regions, r.phone_leniency):
            if pii._digits(masked[s:e]) >= 7 and pii._MASK not in masked[s:e]:
                found.append(("PHONE", (s, e)))
                masked = masked[:s] + pii._MASK * (e - s) + masked[e:]
    return sorted(found, key=lambda f: f[1])


ARGUMENT_IDS = ["CUST-0556894", "CUST-0391672", "CASE-20261120-000009", "TR-7083822942", "TR-99e9999999",
                "CUST-0556894 CUST-0635593", "CUST-0556894, call +44 20 7946 0321", "0556894-0635593",
                "card 4539 5787 6362 1486 and 0151 234 5678", "tel 06 12 34 56 78 / 0612345678 / 0556894"]


def test_stopping_when_no_phone_fits_finds_what_every_region_finds():
    texts = corpus() + ARGUMENT_IDS
    got = [pii.Redactor().find(t) for t in texts]
    assert got == [_every_region(t) for t in texts]
    assert sum(k == "PHONE" for f in got for k, _ in f) > 40


@hsettings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(ARGUMENT_IDS + ["+44 20 7946 0321", "168.25", "020 7946 0958", " ", ", "]),
                max_size=6).map("".join))
def test_stopping_early_on_generated_argument_text(text):
    assert pii.Redactor().find(text) == _every_region(text)


def test_a_customer_id_found_in_one_region_is_not_matched_in_the_rest(monkeypatch):
    regions_run = []
    cls = pm.matcher_class()

    class Counting(cls):
        def __init__(self, text, region, **kwargs):
            regions_run.append(region)
            super().__init__(text, region, **kwargs)

    monkeypatch.setattr(pii, "_matcher_class", lambda: Counting)
    assert pii.Redactor().find("CUST-0556894") == [("PHONE", (5, 12))]
    assert regions_run == ["US", "GB", "DE"]  # DE takes it; no 7 digits are left outside the finding
    regions_run.clear()
    assert [k for k, _ in pii.Redactor().find("CUST-0556894, call +44 20 7946 0321")] == ["PHONE", "PHONE"]
    assert regions_run == ["US", "GB", "DE"]  # US finds the +44 number, DE the id
    regions_run.clear()
    assert pii.Redactor().find("CUST-0556894 ref 0000000") == [("PHONE", (5, 12))]
    assert len(regions_run) == len(REGIONS)  # 7 digits still free after the id: every region runs
