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
