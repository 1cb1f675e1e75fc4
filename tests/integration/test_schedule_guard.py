"""The integration session does not run across the nightly schedule (conftest's guard), exactly around it."""

from datetime import UTC, datetime, timedelta, timezone

from conftest import SESSION_SPAN, seconds_before_the_schedule


def at(hour: int, minute: int, second: int = 0, tz=UTC) -> datetime:
    return datetime(2026, 12, 7, hour, minute, second, tzinfo=tz)


def test_a_session_that_would_cross_02_00_utc_waits_until_just_after_it():
    assert seconds_before_the_schedule(at(1, 58)) == 120 + 30  # the Celery week that found two runs
    assert seconds_before_the_schedule(at(1, 59, 59)) == 1 + 30
    assert seconds_before_the_schedule(at(2, 0) - SESSION_SPAN + timedelta(seconds=1)) == SESSION_SPAN.total_seconds() - 1 + 30


def test_a_session_that_ends_before_it_or_starts_after_it_does_not_wait():
    assert seconds_before_the_schedule(at(2, 0) - SESSION_SPAN) == 0
    assert seconds_before_the_schedule(at(1, 0)) == 0
    assert seconds_before_the_schedule(at(2, 0)) == 0  # the run of 02:00 is the latest interval already
    assert seconds_before_the_schedule(at(2, 1)) == 0
    assert seconds_before_the_schedule(at(23, 50)) == 0


def test_the_schedule_is_in_utc_whatever_the_clock_s_zone():
    paris = timezone(timedelta(hours=1))
    assert seconds_before_the_schedule(at(2, 55, tz=paris)) == 5 * 60 + 30  # 01:55 UTC
    assert seconds_before_the_schedule(at(1, 55, tz=paris)) == 0  # 00:55 UTC
