"""The signals stage reads the per-conversation rows of the keys its families can use (sql/signal_keys.sql)
and writes what it wrote reading every conversation and case of its window (units.READ_EVERY_KEY).

The window is built to cross every restriction: customers who come back on the same intent across days,
conversations active on two days, facts without a case or a channel (the case linked through its states),
cases resolved and reopened on later days, surveys, reviews and outcome checks of conversations weeks old,
and a window longer than what the families read (the restriction drops keys)."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime, timedelta

import duckdb
import numpy as np
import pytest
from feedback_loop.lake.duck import connect
from feedback_loop.lake.files import Lake
from feedback_loop.model.conversations import build_model
from feedback_loop.settings import Settings
from feedback_loop.signals import units
from feedback_loop.signals.metrics import run_signals
from test_signals import write_staged

DAYS = [str(date(2026, 5, 1) + timedelta(days=i)) for i in range(14)]
SMALL = {"signals_ab_window_days": 2, "signals_reengagement_days": 2, "signals_review_window_days": 1,
         "lateness_hours": 48, "reference_lookback_days": 3, "signals_baseline_days": 3}
MARTS = ("signal_metrics", "signal_ab_tests", "action_queue")


def _settings(root) -> Settings:
    return Settings.load(landing=str(root / "landing"), lake=str(root / "lake"), warehouse=str(root / "w.duckdb"),
                         **SMALL)


def _write_days(lake: Lake) -> None:
    """Staged partitions of every day of DAYS (see the module docstring)."""
    rng = np.random.default_rng(7)
    at = lambda day, minutes: datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(minutes=int(minutes))
    intents = ("refund", "card", "login")
    history: list[dict] = []  # conversations of earlier days: reviewed, surveyed, reopened later
    carried: list[dict] = []  # conversations that go on the next day
    channel_later: list[dict] = []
    for k, day in enumerate(DAYS):
        ev, cases, surveys, reviews, checks = [], [], [], [], []
        convs = [dict(c, again=True) for c in carried]
        carried = []
        for c in channel_later:  # yesterday's planted case gets its channel, with no resolution
            cases.append({"case_id": c["case"], "customer_id": c["cust"], "conversation_id": None, "channel": "voice",
                          "created_at": c["start"], "updated_at": at(day, 5), "status": "pending",
                          "resolved_by": "ai", "reopen_count": 0, "escalated": False, "handle_time_s": 60.0})
        # Planted each day: facts name a case whose states name no conversation and have no channel yet.
        channel_later = [{"conv": f"P{k:02d}", "case": f"PK{k:02d}", "cust": "U99", "intent": "card", "strategy": "A",
                          "again": False, "case_in_facts": True, "plant": True, "start": at(day, 30)}]
        convs += channel_later
        for i in range(40):
            cust = f"U{rng.integers(0, 25)}"  # customers come back, often on the same intent
            convs.append({"conv": f"C{k:02d}-{i:02d}", "case": f"K{k:02d}-{i:02d}", "cust": cust,
                          "intent": intents[int(cust[1:]) % 3 if rng.random() < 0.7 else int(rng.integers(0, 3))],
                          "strategy": "B" if rng.random() < 0.4 else "A", "again": False,
                          "case_in_facts": rng.random() > 0.2, "start": at(day, rng.integers(0, 1300))})
        for c in convs:
            start = at(day, rng.integers(0, 600)) if c["again"] else c["start"]
            steps = [{"event_type": "customer_message", "text": "about my order"},
                     {"event_type": "intent_classified", "intent": c["intent"], "confidence": 0.8},
                     {"event_type": "agent_response", "text": "here is how"}]
            for j, s in enumerate(steps):
                ev.append({"event_id": f"{c['conv']}-{day}-{j}", "ts": start + timedelta(seconds=j),
                           "conversation_id": c["conv"], "case_id": c["case"] if c["case_in_facts"] and j else None,
                           "customer_id": c["cust"], "turn": 0, "strategy": c["strategy"], "mode": "live", **s})
            if c["again"]:
                continue
            resolved = start + timedelta(minutes=20) if rng.random() > 0.15 and "plant" not in c else None
            # Some cases' states do not name the conversation that the facts link them to.
            c["case_conv"] = None if c["case_in_facts"] and rng.random() < 0.15 or "plant" in c else c["conv"]
            channel = None if "plant" in c else [None, "email", "chat", "chat"][int(rng.integers(0, 4))]
            cases.append({"case_id": c["case"], "customer_id": c["cust"], "conversation_id": c["case_conv"],
                          "channel": channel, "created_at": start,
                          "updated_at": start + timedelta(minutes=20), "status": "solved" if resolved else "open",
                          "resolved_at": resolved, "resolved_by": "ai", "reopen_count": 0, "escalated": False,
                          "handle_time_s": 60.0})
            if rng.random() < 0.15 and k < len(DAYS) - 1 and "plant" not in c:
                carried.append(c)
            if "plant" not in c:
                history.append(dict(c, resolved=resolved or start))
        for c in rng.choice(history, size=min(len(history), 12), replace=False):  # old cases change state
            when = at(day, rng.integers(0, 1400))
            if when <= c["resolved"]:
                continue
            kind = rng.choice(["reopened", "closed", "pending"])  # pending: a new channel, no resolution
            reopened = kind == "reopened"
            cases.append({"case_id": c["case"], "customer_id": c["cust"], "conversation_id": c["case_conv"],
                          "channel": "voice" if kind == "pending" else "chat", "created_at": c["start"],
                          "updated_at": when, "status": {"closed": "closed"}.get(kind, "open"),
                          "resolved_at": when if kind == "closed" else None,
                          "resolved_by": "ai", "reopen_count": int(reopened), "escalated": rng.random() < 0.1,
                          "last_reopened_at": when if reopened else None, "handle_time_s": 90.0})
            if reopened:
                c["resolved"] = when
        pick = lambda: rng.choice(history, size=min(len(history), 10), replace=False)  # old ones too
        for n, (c, other) in enumerate(zip(pick(), pick())):  # late answers, some naming another conversation
            surveys.append({"survey_id": f"S{day}-{n}", "case_id": c["case"],
                            "conversation_id": [None, c["conv"], other["conv"]][n % 3], "submitted_at": at(day, 600 + n),
                            "kind": "csat" if n % 2 else "ces", "score": int(rng.integers(1, 6))})
        for n, c in enumerate(pick()):
            reviews.append({"override_id": f"O{day}-{n}", "ts": at(day, 700 + n), "conversation_id": c["conv"],
                            "case_id": c["case"], "reviewer_id": "R", "stage": "intent",
                            "outcome": "corrected" if n % 3 == 0 else "approved", "agent_decision": c["intent"],
                            "agent_confidence": 0.8, "human_decision": "refund", "rationale": "r", "evidence": "e"})
        for n, c in enumerate(pick()):
            checks.append({"check_id": f"X{day}-{n}", "case_id": c["case"], "action": "refund",
                           "checked_at": at(day, 800 + n), "expected_state": "refunded",
                           "observed_state": "refunded" if n % 4 else "pending", "verified": bool(n % 4)})
        for source, rows in (("agent_events", ev), ("crm_cases", cases), ("surveys", surveys),
                             ("overrides", reviews), ("outcome_checks", checks)):
            write_staged(lake, source, day, rows)


@pytest.fixture(scope="module")
def window(tmp_path_factory):
    """The staged days modelled (the signals stage reads the model's facts), on a lake copied per variant."""
    base = tmp_path_factory.mktemp("signal-keys")
    settings = _settings(base)
    _write_days(Lake(settings.lake))
    for day in DAYS:
        build_model(settings, date.fromisoformat(day))
    return base


def _marts(root, days) -> dict:
    con = duckdb.connect()
    lake = Lake(str(root / "lake"))
    out = {(m, d): con.execute(f"SELECT * FROM read_parquet('{lake.partition_file('marts', m, d)}')").fetchall()
           for m in MARTS for d in days}
    con.close()
    return out


def _marts_per_switch(window, monkeypatch, switch: str, days: list[str]) -> dict:
    """The marts of `days` with units.`switch` False and True, each on its own copy of the lake (`<switch>-<value>`)."""
    got = {}
    for value in (False, True):
        root = window / f"{switch}-{value}"
        shutil.copytree(window / "lake", root / "lake")
        monkeypatch.setattr(units, switch, value)
        for day in days:
            run_signals(_settings(root), date.fromisoformat(day))
        got[value] = _marts(root, days)
    return got


def test_the_signals_of_the_kept_keys_equal_those_of_every_key(window, monkeypatch):
    """The last three nights, each variant on its own copy of the lake: every mart row equal, in order."""
    days = DAYS[-3:]
    got = _marts_per_switch(window, monkeypatch, "READ_EVERY_KEY", days)
    assert got[False] == got[True]
    path = Lake(str(window / "READ_EVERY_KEY-False" / "lake")).partition_file("marts", "signal_metrics", days[-1])
    with_units = {m for (m,) in duckdb.sql(f"SELECT DISTINCT metric FROM read_parquet('{path}') "
                                           "WHERE dimension = 'all' AND sample_size > 0").fetchall()}
    # The families the restriction touches all had units: repeat contact, re-engagement, reopens, late
    # surveys, reviews and checks of old conversations.
    assert {"fcr", "reengagement_rate_7d", "reopen_rate_24h", "csat_mean", "ces_mean", "review_correction_rate",
            "outcome_verification_rate", "override_rate"} <= with_units, with_units


def test_the_restriction_drops_keys_the_families_cannot_read(window, monkeypatch):
    """On the last day, case_now and conv_dims hold fewer rows than the window has cases and conversations."""
    settings = _settings(window)
    plan = units.Plan.of(settings, date.fromisoformat(DAYS[-1]))
    sizes = {}
    for every in (False, True):
        monkeypatch.setattr(units, "READ_EVERY_KEY", every)
        con = connect()
        units.load_inputs(con, Lake(settings.lake), settings, plan)
        sizes[every] = con.execute("SELECT (SELECT count(*) FROM case_now), (SELECT count(*) FROM conv_dims)").fetchone()
        con.close()
    assert sizes[False][0] < sizes[True][0] and sizes[False][1] < sizes[True][1], sizes


def test_reopen_cohorts_filtered_from_one_build_equal_each_built_for_its_days(window, monkeypatch):
    """The run's and the A/B window's reopen cohorts are filters of one build over both their days
    (units.SHARE_REOPEN_COHORTS): the marts equal those of a build per purpose, with reopen units in both."""
    days = DAYS[-3:]
    got = _marts_per_switch(window, monkeypatch, "SHARE_REOPEN_COHORTS", days)
    assert got[True] == got[False]
    lake = Lake(str(window / "SHARE_REOPEN_COHORTS-True" / "lake"))
    metrics, ab = (lake.partition_file("marts", m, days[-1]) for m in ("signal_metrics", "signal_ab_tests"))
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{metrics}') WHERE metric = 'reopen_rate_24h' "
                      "AND sample_size > 0").fetchall()[0][0] > 0
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{ab}') WHERE metric = 'reopen_rate_24h'").fetchall()[0][0] > 0
