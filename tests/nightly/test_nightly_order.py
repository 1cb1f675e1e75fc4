"""Day order for concurrent runs: a day waits for earlier landed days, but not for one that failed."""

from __future__ import annotations

import os

import pytest
from feedback_loop import nightly
from feedback_loop.ingest.land import LandingError
from feedback_loop.lake.files import Lake


def _landing(settings, day, source="surveys"):
    os.makedirs(f"{settings.landing}/{source}/dt={day}", exist_ok=True)


def test_a_day_waits_for_earlier_landed_days_until_they_are_summarized(settings):
    for day in ("2026-11-18", "2026-11-19"):
        _landing(settings, day)
    assert nightly.earlier_days_pending(settings, "2026-11-20") == ["2026-11-18", "2026-11-19"]
    Lake(settings.lake).write_json({"dt": "2026-11-18"}, "runs", "dt=2026-11-18", "summary.json")
    assert nightly.earlier_days_pending(settings, "2026-11-20") == ["2026-11-19"]


def test_a_failed_earlier_day_does_not_block_later_days(settings):
    _landing(settings, "2026-11-18", "crm_cases")  # a landed day whose other sources are missing: an outage
    with pytest.raises(LandingError):
        nightly.land(settings, "surveys", "2026-11-18")
    assert nightly.day_failed(Lake(settings.lake), "2026-11-18")
    assert nightly.earlier_days_pending(settings, "2026-11-19") == []
