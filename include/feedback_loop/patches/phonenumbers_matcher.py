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

A verdict that cannot be valid is not computed: at leniency VALID or stricter a match needs
`is_valid_number`, whose first question is whether the national significant number fits the general
description of its country's region: one of its lengths, and its pattern over the whole number
(`_is_number_matching_desc`). For a candidate of ASCII digits, spaces and hyphens (an order, case or customer
id: `20261120-000019`, `0556894`) with no international prefix of the region at its start, `parse` keeps the
region's own country code, and the national number is the candidate's digits less the country code (when
they start with it) and what the national-prefix patterns strip, once or twice: `_cannot_be_valid` tries
every such number against every region of the country code, and when none fits, the library would refuse
the candidate, so `_parse_and_verify` refuses it without parsing (and `_extract_match` before its own
checks when there is no space: no inner group to try). Regions with a national-prefix transform rule (which
can add digits) are never cut short. The 2 M-event day's 26,000 case ids were parsed in all 11 regions,
now in one (DE allows 4 to 15 digits); its 21,000 customer ids in three, now in one.
tests/patches/test_phonenumbers_matcher.py checks the refusals against `parse` + `is_valid_number` on
generated digit runs in 28 regions, and the spans against the stock matcher.

It relies on `PhoneNumberMatcher._find`, `_extract_match` (and what that calls), `_trim_after_first_match`,
the attributes `__init__` sets, the module's `_PATTERN` / `_SECOND_NUMBER_START_PATTERN` / `_INNER_MATCHES`,
and how `phonenumberutil.parse` builds a national number and `is_valid_number` judges it, as read in
phonenumbers 9.0.43: `_EXPECTED_SOURCE_SHA256` pins each. If one differs, `matcher_class()` returns the stock
matcher (warning once). tests/patches/test_phonenumbers_matcher.py compares the spans with the stock
`PhoneNumberMatcher` over the PII corpus in every configured region.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache

from feedback_loop.patches import changed_sources, warn_once

_M = "phonenumbers.phonenumbermatcher"
_U = "phonenumbers.phonenumberutil"
_EXPECTED_SOURCE_SHA256: dict[str, str] = {
    # reproduced: the candidate loop (the shared search replaces its two _PATTERN.search calls)
    f"{_M}:PhoneNumberMatcher._find": "a9e89d83733105cbc7e9f5d751e7d931d386308800fa4b8e9e903ffde60d1f8d",
    f"{_M}:_PATTERN": "f612ab88a88961623720f839be92dfaee1cba9ebbe6f7d235a8e08b2e96e5039",
    f"{_M}:_SECOND_NUMBER_START_PATTERN": "6820fecd6404aa87de388b577f2e7a1402272946e11fddc3d8c670ce113f1370",
    f"{_M}:PhoneNumberMatcher._trim_after_first_match": (
        "f1425e3d66d98793d990c546b52d6ade2df22a555f9df4713af730800aa35324"),
    # overridden: a verdict remembered (its key: which characters around a candidate the verdict reads),
    # a candidate no allowed length fits refused (the inner groups it would try: `_INNER_MATCHES`)
    f"{_M}:_INNER_MATCHES": "fe85d373390eb4a1988ec314c25754a8ac0fc99eb33a447e94a7f09e89d91d8f",
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
    # read, for the length bound (`_cannot_be_valid`): how parse builds the national number, and what a
    # valid verdict needs of it
    f"{_M}:_verify": "6c642c22d31b02d43a74f5a411dc514988cbc62b01aabdc144e3cbf5d893a2b0",
    f"{_U}:parse": "6e48c9961d117feb21f4232232c48ca8ee25f47341bc15a424a155c28cf632b2",
    f"{_U}:_build_national_number_for_parsing": "4fe268be24704a22b1590b87ccd946fafb6aacfdc15b7bf649c9b421d2218901",
    f"{_U}:_extract_possible_number": "102c591aa7ba1c744bd67d555c119b3778a27122fe608eb851621f4ab6a208e2",
    f"{_U}:_maybe_strip_extension": "7a87aae1f355658617ad280482ae6bacf0bc5428c40d50c1867199699b79aa89",
    f"{_U}:_EXTN_PATTERN": "1bc81d143bc6454ead3016c0693806eace012148f7f5ee0fe13640d8ab2ac396",
    f"{_U}:_maybe_extract_country_code": "57b28e3098d96db7fe767de3799daecce9cf086d6641ea616c5c3cc85af10792",
    f"{_U}:_maybe_strip_i18n_prefix_and_normalize": (
        "b53e0190dd4d0e408a8cd0ee87e39beef7c3cb20c2ba550d63c562fa45f94a65"),
    f"{_U}:_parse_prefix_as_idd": "fe62f067f748953fe020d26ab2ee38349bfd81134e114533c296ff5caf139fa1",
    f"{_U}:_maybe_strip_national_prefix_carrier_code": (
        "462428c534345d072fcb0ebcae696d2332c8005bbd0b5e54c29f2c6007656fb3"),
    f"{_U}:_normalize": "7764d5985eaa9501b77ad9375ac217317a476e9ba2a9dc7a151d1ea8840b5304",
    f"{_U}:is_valid_number": "45d8cbd0ad2107a6c039db9623f9b5b49a858edfa2a24e73a952bb6393232a61",
    f"{_U}:region_code_for_number": "3e3013961eb5fbb1b49e3c39613db41a6fdcf29d967ad2d6940f8ddcf655b8d5",
    f"{_U}:region_code_for_country_code": "61e23b49cb9e7d71d6de449414037d9c1942800698dafa20f402372ecb85641d",
    f"{_U}:is_valid_number_for_region": "cbedb02b9bc0390108e8861c3771eacbb3bc220d23d0a92c1ad02aed775c7cce",
    f"{_U}:_number_type_helper": "6dbc09bac296be9217defd8bf0f6797f5f606fa26ce81f8e52a05bf3427b8404",
    f"{_U}:_is_number_matching_desc": "67f60669b1e0906211914bb0260d687040510a9d2190d7f23fb8deed18d7c42a",
    f"{_U}:_match_national_number": "be997ae44a4beac3e2b48a8fa3210c72504cf390b8d47aadb284562910753021",
    f"{_U}:_match": "3a14a146a78e64da2ca9f0322dfdf3eaf184350faca4765e448320fa902eacac",
    "phonenumbers.re_util:re_compile": "7c8e3ee4234ad8498724a7101566b46effc79a98179b579a2c608f7ed02dd15f",
    f"{_U}:national_significant_number": "0c62dcf3bfa6b2833dd053901864c251abc81441cf81dca3c6fbf65962adb2ec",
    f"{_U}:_set_italian_leading_zeros_for_phone_number": (
        "8315b5304136bdca3e49de55c62cce4d664e0c63c4b0acd1e741560140f9d6d4"),
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
    from phonenumbers import Leniency, PhoneNumberMatch, PhoneNumberMatcher
    from phonenumbers.phonenumbermatcher import _PATTERN, _SECOND_NUMBER_START_PATTERN

    valid = Leniency.VALID

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
            # Digits and hyphens only: no inner group to try (each of the library's `_INNER_MATCHES` needs a
            # space, bracket, slash, dot or non-ASCII dash), so a refused whole is the library's None too.
            if self.leniency >= valid and " " not in candidate and _cannot_be_valid(candidate, self.preferred_region):
                return None
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

        def _parse_and_verify(self, candidate, offset):
            # Every early return of the library's method is None too: refusing before it runs is its answer.
            if self.leniency >= valid and _cannot_be_valid(candidate, self.preferred_region):
                return None
            return super()._parse_and_verify(candidate, offset)

    return _RememberingMatcher


_PLAIN_DIGITS = re.compile(r"[0-9][0-9 \-]*\Z")  # ASCII digits, spaces and hyphens: no '+', letter or extension


@cache
def _parse_rules(region: str) -> tuple | None:
    """(country code as text, the region's international-prefix pattern, the national-prefix patterns parse
    may strip with, each region of the country code's general description as (lengths, pattern)), or None
    where no refusal is sound: an unknown region, a transform rule (it can add digits)."""
    import phonenumbers
    from phonenumbers import PhoneMetadata

    meta = PhoneMetadata.metadata_for_region(region.upper(), None) if region else None
    if meta is None or not meta.international_prefix:
        return None
    # The number is valid in one of its country code's regions (`region_code_for_number`); it was stripped
    # with the region's metadata, then, when the country code was read off the number, with the main region's.
    siblings = [PhoneMetadata.metadata_for_region(r, None)
                for r in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(meta.country_code, ())]
    main = PhoneMetadata.metadata_for_region(phonenumbers.region_code_for_country_code(meta.country_code), None)
    if not siblings or any(m is None for m in siblings) or main is None:
        return None
    strips = []
    for m in (meta, main):
        if m.national_prefix_transform_rule:
            return None
        if m.national_prefix_for_parsing and m.national_prefix_for_parsing not in strips:
            strips.append(m.national_prefix_for_parsing)
    # `_is_number_matching_desc(nsn, general_desc)`, which `_number_type_helper` asks first: a length of the
    # description (when it lists any) and its pattern matching the whole number. Every region's: CA allows
    # 7 digits (310 xxxx) where the US, its country's main region, has 10; a region without a pattern
    # validates nothing (`_match_national_number`).
    descs = tuple((tuple(m.general_desc.possible_length), re.compile(m.general_desc.national_number_pattern))
                  for m in siblings if m.general_desc is not None and m.general_desc.national_number_pattern)
    return (str(meta.country_code), re.compile(meta.international_prefix), tuple(re.compile(x) for x in strips),
            descs)


def _cannot_be_valid(candidate: str, region: str) -> bool:
    """True only when `parse(candidate, region)` cannot give a number `is_valid_number` accepts (see the
    module docstring); False means "parse and see"."""
    if not _PLAIN_DIGITS.match(candidate):
        return False
    rules = _parse_rules(region)
    if rules is None:
        return False
    cc, idd, strips, descs = rules
    digits = candidate.replace(" ", "").replace("-", "")
    if idd.match(digits):  # (no extension either: each of `_EXTN_PATTERN`'s needs another character)
        return False

    def stripped(number: str) -> list[str]:  # the number, and what each national-prefix pattern leaves of it
        out = [number]
        for pattern in strips:
            m = pattern.match(number)
            if m and m.end():
                out.append(number[m.end():])
        return out

    # No country code read off the number: one strip. The country code read off it: a strip in
    # `_maybe_extract_country_code`, then another in `parse`.
    national = stripped(digits)
    if digits.startswith(cc):
        national += [n for first in stripped(digits[len(cc):]) for n in stripped(first)]
    return not any((not lengths or len(n) in lengths) and pattern.fullmatch(n)
                   for n in set(national) for lengths, pattern in descs)
