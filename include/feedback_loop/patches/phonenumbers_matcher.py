"""libphonenumber's PhoneNumberMatcher, faster over many texts and regions, guarded (see the package docstring).

The matcher scans a text for digit runs (a regular expression that does not depend on the region) and
parses and verifies each candidate in the region: that is where its time goes, and the same candidates
(order numbers, amounts, dates, a KB article's phone number) recur across thousands of texts. A candidate's
verdict depends only on the region, the leniency, the candidate, the character before it and the three after
it (the neighbours of its inner groups lie inside it), so it is remembered under that key, with the number
of tries it used; the matcher's own loop, and so every span it reports, is unchanged. Near the try limit
(65,535 failed candidates in one text) the library decides alone. The candidate search itself (the
library's `_find` loop, reproduced) is shared by the regions' matchers over one text: it does not depend on
the region, and it was run once per region.

It relies on `PhoneNumberMatcher._find`, `_extract_match` (and what that calls), `_trim_after_first_match`,
the attributes `__init__` sets, and the module's `_PATTERN` / `_SECOND_NUMBER_START_PATTERN`, as read in
phonenumbers 9.0.43: `_EXPECTED_SOURCE_SHA256` pins each. If one differs, `matcher_class()` returns the stock
matcher (warning once). tests/patches/test_phonenumbers_matcher.py compares the spans with the stock
`PhoneNumberMatcher` over the PII corpus in every configured region.
"""

from __future__ import annotations

from functools import lru_cache

from feedback_loop.patches import changed_sources, warn_once

_M = "phonenumbers.phonenumbermatcher"
_EXPECTED_SOURCE_SHA256: dict[str, str] = {
    # reproduced: the candidate loop (the shared search replaces its two _PATTERN.search calls)
    f"{_M}:PhoneNumberMatcher._find": "a9e89d83733105cbc7e9f5d751e7d931d386308800fa4b8e9e903ffde60d1f8d",
    f"{_M}:_PATTERN": "f612ab88a88961623720f839be92dfaee1cba9ebbe6f7d235a8e08b2e96e5039",
    f"{_M}:_SECOND_NUMBER_START_PATTERN": "6820fecd6404aa87de388b577f2e7a1402272946e11fddc3d8c670ce113f1370",
    f"{_M}:PhoneNumberMatcher._trim_after_first_match": (
        "f1425e3d66d98793d990c546b52d6ade2df22a555f9df4713af730800aa35324"),
    # overridden: a verdict remembered (its key: which characters around a candidate the verdict reads)
    f"{_M}:PhoneNumberMatcher._extract_match": "59b5958e65b0c9e5c06e257fabdfbdd7e37ca8ef79ee10750474676a37e7ae59",
    f"{_M}:PhoneNumberMatcher._extract_inner_match": (
        "3f18c77cd6a26a929bab8b0a0524a604c381ccfa24aec70f34b22387300e27e0"),
    f"{_M}:PhoneNumberMatcher._parse_and_verify": "d8adb854f3266ed5ce02e02ced5a5a20daf25cbcbe59a6a4b3856f3c7b7ba4e7",
    f"{_M}:PhoneNumberMatcher._is_latin_letter": "63c50a4a46b3b9b8dc985d4efd3fef2c48b109581ac657e3da25fa70befdb307",
    f"{_M}:PhoneNumberMatcher._is_invalid_punctuation_symbol": (
        "4cc8579208a68c84763094056bfa216f215d9049e634105679c7b0bf4eaa68b9"),
    # the attributes read (text, preferred_region, leniency, _max_tries, _min_candidate_length) and the loop
    # that calls _find
    f"{_M}:PhoneNumberMatcher.__init__": "dddc75cddbdf70c129237c293e1063b9d8e2624bb7eaacc17538f07a06be7c08",
    f"{_M}:PhoneNumberMatcher.has_next": "5206c1c330b62d3f0d84fbd3d2f79101e8ef2cf571b335aa20e8cf457158b789",
    f"{_M}:PhoneNumberMatch.__init__": "624d1cf6ace3ede24d9a684feb1b41f42001b2d82f059f31e8ad8cef4f3d5b52",
}

_CANDIDATES_LIMIT = 1 << 18  # candidate verdicts remembered; beyond it the memo starts again (same answers)
_candidates: dict = {}


@lru_cache(maxsize=1)
def matcher_class():
    """The remembering matcher, or the stock one (same spans, slower) if the library code it relies on changed.

    Either is called as `cls(text, region, leniency=..., searches=dict)`, `searches` shared by the matchers
    of every region over one text."""
    changed = changed_sources(_EXPECTED_SOURCE_SHA256)
    if changed:
        import phonenumbers

        warn_once("phonenumbers_matcher", (
            f"phonenumbers {getattr(phonenumbers, '__version__', '?')} changed code that "
            "feedback_loop.patches.phonenumbers_matcher relies on; using the stock PhoneNumberMatcher (same "
            "spans, slower). Re-read the new code, update _EXPECTED_SOURCE_SHA256 and run "
            "tests/patches/test_phonenumbers_matcher.py.\n  " + "\n  ".join(changed)))
        return _stock_class()
    return _remembering_class()


def _stock_class():
    from phonenumbers import PhoneNumberMatcher

    class _StockMatcher(PhoneNumberMatcher):
        def __init__(self, text, region, *, searches: dict | None = None, **kwargs):
            super().__init__(text, region, **kwargs)

    return _StockMatcher


def _remembering_class():
    from phonenumbers import PhoneNumberMatch, PhoneNumberMatcher
    from phonenumbers.phonenumbermatcher import _PATTERN, _SECOND_NUMBER_START_PATTERN

    class _RememberingMatcher(PhoneNumberMatcher):
        def __init__(self, text, region, *, searches: dict, **kwargs):
            super().__init__(text, region, **kwargs)
            self._searches = searches

        def _candidate_at(self, index):
            """The library's candidate search from `index` (its regular expression, then the cut before a
            second number), shared by the matchers of every region over the same text."""
            if index in self._searches:
                return self._searches[index]
            match = _PATTERN.search(self.text, index)
            found = None
            if match is not None:
                found = (match.start(), self._trim_after_first_match(_SECOND_NUMBER_START_PATTERN, match.group()))
            self._searches[index] = found
            return found

        def _find(self, index):
            # PhoneNumberMatcher._find (phonenumbers 9.0.43) with the search shared: same loop, same tries.
            found = self._candidate_at(index)
            while self._max_tries > 0 and found is not None:
                start, candidate = found
                candidate_len = len(candidate)
                if candidate_len >= self._min_candidate_length:
                    match = self._extract_match(candidate, start)
                    if match is not None:
                        return match
                    self._max_tries -= 1
                index = start + candidate_len
                found = self._candidate_at(index)
            return None

        def _extract_match(self, candidate, offset):
            if self._max_tries < 1024:
                return super()._extract_match(candidate, offset)
            end = offset + len(candidate)
            key = (self.preferred_region, self.leniency, candidate,
                   self.text[offset - 1] if offset > 0 else "", self.text[end:end + 3])
            known = _candidates.get(key)
            if known is None:
                before = self._max_tries
                m = super()._extract_match(candidate, offset)
                known = (None if m is None else (m.start - offset, m.raw_string, m.number), before - self._max_tries)
                if len(_candidates) >= _CANDIDATES_LIMIT:
                    _candidates.clear()
                _candidates[key] = known
            else:
                self._max_tries -= known[1]
            if known[0] is None:
                return None
            rel, raw, number = known[0]
            return PhoneNumberMatch(offset + rel, raw, number)

    return _RememberingMatcher
