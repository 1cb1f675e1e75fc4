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


# -- the length bound: a candidate no region's lengths allow is refused without parsing ----------------------

# The configured regions, and others whose metadata takes every branch of `_parse_rules`: a country code of
# many regions (US/CA/AG, GB/GG/IM/JE, AU/CC), transform rules (AR, BR, JP, GG: never cut short), IDD and
# national-prefix patterns of several digits (AU, RU, MX).
BOUND_REGIONS = REGIONS + ("MX", "RU", "KZ", "GG", "IM", "JE", "AG", "JM", "CC", "AR", "BR", "JP", "CN", "SG", "ZA",
                           "JO")


def _stock_valid(candidate: str, region: str) -> bool:
    """What the library decides for the whole candidate at leniency VALID: parse, then `is_valid_number`."""
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(candidate, region, keep_raw_input=True))
    except phonenumbers.NumberParseException:
        return False


def _plain_candidates(rng, region: str, n: int) -> list[str]:
    """Digits with spaces and hyphens, many starting with the region's country code, international and
    national prefixes, of every length around the region's allowed ones."""
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    starts = ["", str(meta.country_code), "0", "1", "00", "011", "8", "810", "0011", "1832", "180020",
              (meta.national_prefix or ""), str(meta.country_code) + (meta.national_prefix or "")]
    out = []
    for _ in range(n):
        body = rng.choice(starts) + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 17)))
        text = body[0]
        for ch in body[1:]:
            text += rng.choice(["", "", "", " ", "-"]) + ch
        out.append(text)
    return out


def _valid_examples(region: str) -> list[str]:
    """Valid numbers of the region in the forms a text holds them without '+': national, with the country
    code, and bare digits."""
    out = []
    for kind in (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE,
                 phonenumbers.PhoneNumberType.TOLL_FREE, phonenumbers.PhoneNumberType.VOIP):
        num = phonenumbers.example_number_for_type(region, kind)
        if num is None:
            continue
        national = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.NATIONAL)
        nsn = phonenumbers.national_significant_number(num)
        out += [national, nsn, f"{num.country_code}{nsn}", f"{num.country_code} {nsn}", national.replace(" ", "-")]
    return [c for c in out if pm._PLAIN_DIGITS.match(c)]


def test_a_candidate_refused_by_the_length_bound_is_one_the_library_refuses():
    import random

    from phonenumbers.phonenumberutil import _EXTN_PATTERN

    rng = random.Random(18)
    refused = valid = 0
    for region in BOUND_REGIONS:
        for candidate in _plain_candidates(rng, region, 400) + _valid_examples(region):
            assert _EXTN_PATTERN.search(candidate) is None  # no extension in digits, spaces and hyphens
            if pm._cannot_be_valid(candidate, region):
                refused += 1
                assert not _stock_valid(candidate, region), (region, candidate)
            valid += _stock_valid(candidate, region)
    assert refused > 2000 and valid > 150  # both sides of the bound were exercised


def test_valid_examples_are_never_refused_and_ids_are():
    for region in BOUND_REGIONS:
        examples = _valid_examples(region)
        assert all(_stock_valid(c, region) <= (not pm._cannot_be_valid(c, region)) for c in examples)
    # a case id's 14 digits are no national number in ten of the eleven regions (DE allows 4 to 15 digits)
    assert [r for r in REGIONS if not pm._cannot_be_valid("20261120-000019", r)] == ["DE"]
    assert not any(pm._cannot_be_valid(c, r) for c in ("+44 20 7946 0958", "12 ext 3", "(020)")
                   for r in REGIONS)  # a '+', an extension, brackets: parsed as before
    # an international prefix of the region: any country's number may follow (00 is none in the US, CA, AU)
    assert [r for r in REGIONS if pm._cannot_be_valid("0044 20 7946 0958", r)] == ["US", "AU", "CA"]
    # the country code read off the number, then a national prefix stripped twice (in
    # `_maybe_extract_country_code`, then in `parse`): 9620079... is Jordan's 7 9176 4144 (found by a sweep of
    # every region when the bound allowed one strip)
    assert _stock_valid("96-2007-9-1-7-64144", "JO") and not pm._cannot_be_valid("96-2007-9-1-7-64144", "JO")
    # valid in another region of the country code: parsed in the US, 310-1234 is a Canadian 7-digit number
    assert _stock_valid("310-1234", "US") and not pm._cannot_be_valid("310-1234", "US")
    for region in ("AR", "BR", "JP", "GG"):  # a transform rule can add digits: never cut short
        assert pm._parse_rules(region) is None


def test_refused_candidates_are_not_parsed(monkeypatch):
    """The bound is what saves the time: refused regions never reach `parse`."""
    from phonenumbers import phonenumbermatcher

    parsed = []
    real = phonenumbermatcher.parse
    monkeypatch.setattr(phonenumbermatcher, "parse", lambda text, region, **kw: parsed.append(region) or real(
        text, region, **kw))
    pm._candidates.clear()
    assert pii.Redactor().find("CASE-20261120-000019") == []
    assert set(parsed) == {"DE"}


@hsettings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["CASE-20261120-000019", "0556894", "-", " ", "--", "0044", "+", "20 7946 0958",
                                 "1832", "0011", "555-0187", "9", "12", "x", "/"]), max_size=8).map("".join),
       st.sampled_from(BOUND_REGIONS))
def test_spans_equal_the_stock_matcher_on_ids_and_digit_runs(text, region):
    """Whole candidates refused before the library's pre-checks (digits and hyphens), or before parsing
    (spaces too): the same spans as the stock matcher, in regions with and without a bound."""
    level = phonenumbers.Leniency.VALID
    got = [(m.start, m.end, m.raw_string, m.number) for m in pm.matcher_class()(text, region, leniency=level, searches={})]
    assert got == _stock(text, region, level)
