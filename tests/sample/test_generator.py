"""Tests of the seeded sample-data generator.

The generator's ground truth is what every later evaluation is scored against, so these tests check it
against the files themselves: an independent contract checker must find exactly the recorded defects,
every recorded PII string must really be in the landing, and the hidden labels must behave as claimed.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta

import numpy as np
import pyarrow.parquet as pq
import pytest
from feedback_loop.ingest.contract import BOOL, DBL, INT, OVERRIDE_TRIAD, SOURCE_NAMES, SOURCES, TS
from feedback_loop_sample import generator as G
from feedback_loop_sample.generator import generate

D0 = date(2026, 11, 20)
N = 120
OFFSET = re.compile(r"(Z|[+-]\d\d:\d\d)$")


# ----------------------------------------------------------------------------- reading a landing


def read_file(path) -> list[tuple[int, object]]:
    """(line number, row) per data row; row is None for a line that is not JSON."""
    name = path.name
    if name.endswith(".parquet"):
        return [(i + 1, r) for i, r in enumerate(pq.read_table(path).to_pylist())]
    raw = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
    text = raw.decode("utf-8")
    if name.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        return [(i + 1, {k: (v if v != "" else None) for k, v in r.items()}) for i, r in enumerate(reader)]
    out = []
    for i, line in enumerate(text.splitlines()):
        try:
            out.append((i + 1, json.loads(line)))
        except ValueError:
            out.append((i + 1, None))
    return out


def load(landing) -> dict:
    """{(source, dt): (file, rows)} for every export in the landing."""
    out = {}
    for source in SOURCE_NAMES:
        for folder in sorted((landing / source).glob("dt=*")):
            files = [f for f in folder.iterdir() if not f.name.startswith(".")]
            assert len(files) == 1, files
            out[(source, folder.name[3:])] = (files[0], read_file(files[0]))
    return out


def all_text(landing) -> str:
    parts = []
    for f in sorted(landing.rglob("part-*")):
        if f.name.endswith(".parquet"):
            parts.append(json.dumps(pq.read_table(f).to_pylist(), default=str))
        else:
            raw = f.read_bytes()
            parts.append((gzip.decompress(raw) if f.name.endswith(".gz") else raw).decode("utf-8"))
    return "\n".join(parts)


# ----------------------------------------------------------------------------- an independent checker


def _is_type(value, typ) -> bool:
    if typ == INT:
        if isinstance(value, str):
            return re.fullmatch(r"-?\d+", value) is not None
        return isinstance(value, int) and not isinstance(value, bool)
    if typ == DBL:
        if isinstance(value, str):
            try:
                float(value)
                return True
            except ValueError:
                return False
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typ == BOOL:
        return isinstance(value, bool) or value in ("true", "false")
    return True


def _ts(value):
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def _id_day(identifier: str):
    m = re.match(r"[A-Z]+-(\d{8})-", identifier or "")
    return datetime.strptime(m.group(1), "%Y%m%d").date() if m else None


def check(landing) -> set:
    """Every contract violation in the landing, as (source, dt, kind, id) -- like the ground truth."""
    data = load(landing)
    days = sorted({dt for _, dt in data})
    first_day = date.fromisoformat(days[0])
    opened = {r["conversation_id"] for (s, _), (_, rows) in data.items() if s == "agent_events"
              for _, r in rows if isinstance(r, dict) and r.get("event_type") == "customer_message"}
    cases = {r["case_id"] for (s, _), (_, rows) in data.items() if s == "crm_cases" for _, r in rows if r}
    found = set()
    for (source, dt), (path, rows) in data.items():
        spec = SOURCES[source]
        start = datetime.fromisoformat(dt + "T00:00:00+00:00")
        seen = Counter()
        for line, row in rows:
            if row is None:
                found.add((source, dt, "invalid_json", f"line:{line}"))
                continue
            rid = row[spec.id_column]
            seen[rid] += 1
            if seen[rid] > 1:
                found.add((source, dt, "duplicate_id", rid))
                continue
            kinds = set()
            flag = kinds.add

            for f in spec.fields:
                value = row.get(f.name)
                if value is None:
                    if f.required:
                        flag("null_required")
                    continue
                if not _is_type(value, f.type):
                    flag("bad_type")
                    continue
                if f.values is not None and value not in f.values and str(value) not in map(str, f.values):
                    flag("bad_value")
                num = float(value) if f.type in (INT, DBL) else None
                if num is not None and ((f.min is not None and num < f.min) or (f.max is not None and num > f.max)):
                    flag("out_of_range")
                if f.type == TS and isinstance(value, str) and not OFFSET.search(value):
                    flag("ts_no_offset")
            t = row.get(spec.time_column)
            if t is not None and (not isinstance(t, str) or OFFSET.search(t)):
                t = _ts(t)
                if t > start + timedelta(days=1, minutes=15) or (not spec.snapshot and t < start - timedelta(hours=48)):
                    flag("ts_out_of_interval")
            conv = row.get("conversation_id")
            if source == "agent_events" and row.get("event_type") != "customer_message" and conv not in opened \
                    and _id_day(conv) and _id_day(conv) >= first_day:
                flag("unknown_conversation")
            if source == "overrides" and conv not in opened and _id_day(conv) and _id_day(conv) >= first_day:
                flag("unknown_conversation")
            if source in ("surveys", "outcome_checks") and row.get("case_id") and row["case_id"] not in cases \
                    and _id_day(row["case_id"]) and _id_day(row["case_id"]) >= first_day:
                flag("unknown_case")
            if source == "overrides" and row.get("outcome") == "corrected":
                missing = [f for f in OVERRIDE_TRIAD["agent"] + OVERRIDE_TRIAD["human"] if row.get(f) is None]
                if missing or all(row.get(f) is None for f in OVERRIDE_TRIAD["grounding_any"]):
                    flag("incomplete_triad")
            found |= {(source, dt, kind, rid) for kind in kinds}
    return found


def truth_set(gt) -> set:
    return {(m["source"], m["dt"], m["kind"], m["id"]) for m in gt["malformed"]}


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def week(tmp_path_factory):
    """Seven clean days (plus one planted-defect run elsewhere): enough for cross-day behaviour."""
    landing = tmp_path_factory.mktemp("week")
    gt = generate(landing, D0 - timedelta(6), D0, conversations_per_day=N, seed=7)
    return landing, gt


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    landing = tmp_path_factory.mktemp("broken")
    gt = generate(landing, D0 - timedelta(2), D0, conversations_per_day=N, seed=11, malformed_share=0.03)
    return landing, gt


# ----------------------------------------------------------------------------- tests


def test_layout_and_formats(week):
    landing, gt = week
    data = load(landing)
    names = {"agent_events": "part-0000.jsonl.gz", "crm_cases": "part-0000.csv", "surveys": "part-0000.csv",
             "overrides": "part-0000.jsonl", "outcome_checks": "part-0000.jsonl",
             "kb_articles": "part-0000.parquet"}
    for day in gt["days"]:
        for source in SOURCE_NAMES:
            path, rows = data[(source, day)]
            assert path.name == names[source]
            assert gt["counts"][source][day] == len(rows)
            assert rows, (source, day)  # every source has data every day at this scale
    for source in ("crm_cases", "surveys"):
        header = (landing / source / f"dt={D0}" / "part-0000.csv").read_text().splitlines()[0]
        assert header.split(",") == SOURCES[source].columns
    cases = data[("crm_cases", D0.isoformat())][1]
    assert all(isinstance(json.loads(r["tags"]), list) for _, r in cases)  # list fields as JSON text in CSV
    assert pq.read_table(landing / "kb_articles" / f"dt={D0}" / "part-0000.parquet").schema.field(
        "updated_at").type.tz == "UTC"
    events = data[("agent_events", D0.isoformat())][1]
    for _, r in events:
        assert list(r)[: len(SOURCES["agent_events"].columns)] == SOURCES["agent_events"].columns
        assert (r["true_intent"] is not None) == (r["event_type"] == "customer_message")
    # Timestamps carry an offset; a few customers are not in UTC.
    offsets = Counter(OFFSET.search(r["ts"]).group(1) for _, r in events)
    assert offsets["+00:00"] > 0.8 * len(events) and len(offsets) > 2
    assert all(_ts(r["ts"]).date() == D0 or _ts(r["ts"]).astimezone().date() == D0 for _, r in events[:50])
    assert not list(landing.rglob(".*tmp*"))


def test_events_are_ordered_traces(week):
    landing, _ = week
    events = [r for _, r in load(landing)[("agent_events", D0.isoformat())][1]]
    by_conv = defaultdict(list)
    for r in events:
        by_conv[r["conversation_id"]].append(r)
    assert len({r["event_id"] for r in events}) == len(events)
    for conv in by_conv.values():
        ts = [_ts(r["ts"]) for r in conv]
        assert ts == sorted(ts) and len(set(ts)) == len(ts)
        assert [r["turn"] for r in conv] == sorted(r["turn"] for r in conv)
        assert conv[0]["event_type"] == "customer_message" and conv[1]["event_type"] == "intent_classified"
        assert 1 <= sum(r["event_type"] == "customer_message" for r in conv) <= 3
    strategies = Counter(by_conv[c][0]["strategy"] for c in by_conv)
    assert 0.15 < strategies["rag-v2"] / len(by_conv) < 0.45
    assert {r["mode"] for r in events} == {"live", "shadow"}
    assert all(r["cost_usd"] is not None for r in events if r["event_type"] == "agent_response")


def test_same_day_is_byte_identical_whatever_the_range(tmp_path, week):
    landing, gt = week
    other = tmp_path / "alone"
    gt2 = generate(other, D0 - timedelta(1), D0 - timedelta(1), conversations_per_day=N, seed=7)
    gt3 = generate(other, D0, D0, conversations_per_day=N, seed=7)
    day = D0.isoformat()
    for source in SOURCE_NAMES:
        for d in (day, (D0 - timedelta(1)).isoformat()):
            a = next((landing / source / f"dt={d}").iterdir()).read_bytes()
            b = next((other / source / f"dt={d}").iterdir()).read_bytes()
            assert a == b, (source, d)
    for key in ("counts",):
        assert {s: v[day] for s, v in gt[key].items()} == {s: v[day] for s, v in gt3[key].items()}
    assert gt["pii_by_day"][day] == gt3["pii_by_day"][day]
    # The ground-truth file merges days written by separate calls.
    merged = json.loads((other / "_ground_truth.json").read_text())
    assert merged["days"] == [(D0 - timedelta(1)).isoformat(), day]
    assert set(merged["counts"]["agent_events"]) == set(merged["days"])
    assert set(gt2["pii_by_day"][merged["days"][0]]) <= set(merged["pii"])
    # Re-generating replaces the day's files (no stray files) and its ground-truth entries.
    generate(other, D0, D0, conversations_per_day=N, seed=7, formats="jsonl")
    assert [f.name for f in (other / "crm_cases" / f"dt={day}").iterdir()] == ["part-0000.jsonl"]
    merged = json.loads((other / "_ground_truth.json").read_text())
    assert merged["days"] == [(D0 - timedelta(1)).isoformat(), day]


def test_kb_gaps_depend_only_on_the_seed(week, tmp_path):
    landing, gt = week
    assert len(gt["intents"]) == 77 and len(gt["gap_intents"]) == round(0.15 * 77)
    assert set(gt["gap_intents"]) | set(gt["kb_intents"]) == set(gt["intents"])
    for day in gt["days"]:
        rows = [r for _, r in load(landing)[("kb_articles", day)][1]]
        published = {i for r in rows if r["status"] == "published" for i in r["intents"]}
        assert published == set(gt["kb_intents"])
        assert not published & set(gt["gap_intents"])
        assert {r["status"] for r in rows} == {"published", "draft", "archived"}
        assert all(re.fullmatch(r"KB-\d{4}", r["article_id"]) for r in rows)
        assert all(r["updated_at"].date() <= date.fromisoformat(day) for r in rows)
    again = generate(tmp_path, D0 + timedelta(30), D0 + timedelta(30), conversations_per_day=10, seed=7)
    assert again["gap_intents"] == gt["gap_intents"]
    assert generate(tmp_path / "s8", D0, D0, conversations_per_day=10, seed=8)["gap_intents"] != gt["gap_intents"]


def test_gap_intents_get_no_good_retrieval(week):
    landing, gt = week
    gaps = set(gt["gap_intents"])
    events = [r for _, r in load(landing)[("agent_events", D0.isoformat())][1]]
    true = {r["conversation_id"]: r["true_intent"] for r in events if r["event_type"] == "customer_message"}
    for r in events:
        if r["event_type"] != "kb_query":
            continue
        scores = [x["score"] for x in r["kb_results"]]
        if true[r["conversation_id"]] in gaps:
            assert all(s < 0.3 for s in scores)
        else:
            assert scores and max(scores) >= 0.4


def test_malformed_ground_truth_matches_the_files(broken):
    landing, gt = broken
    assert check(landing) == truth_set(gt)
    planted = [m for m in gt["malformed"] if not m.get("natural")]
    kinds = defaultdict(set)
    for m in planted:
        kinds[m["source"]].add(m["kind"])
    for source, expected in G.KINDS.items():
        usable = {k for k in expected if k != "invalid_json" or G._layout(source, "mixed")[1] == "jsonl"}
        assert kinds[source] == usable, source
    # Counts include the planted rows; invalid lines are addressed by line number.
    for m in planted:
        if m["kind"] == "invalid_json":
            assert m["id"].startswith("line:") and m["file"].endswith((".jsonl", ".jsonl.gz"))


def test_malformed_in_jsonl_format(tmp_path):
    gt = generate(tmp_path, D0, D0, conversations_per_day=60, seed=3, malformed_share=0.02, formats="jsonl")
    assert {f.name for f in tmp_path.rglob("part-*")} == {"part-0000.jsonl"}
    assert check(tmp_path) == truth_set(gt)
    assert {m["source"] for m in gt["malformed"] if m["kind"] == "invalid_json"} == set(SOURCE_NAMES)


def test_clean_landing_has_only_natural_incomplete_triads(week):
    landing, gt = week
    assert all(m.get("natural") and m["kind"] == "incomplete_triad" for m in gt["malformed"])
    assert check(landing) == truth_set(gt)


def test_pii_is_seeded_and_recorded(week):
    landing, gt = week
    text = all_text(landing)
    assert len(gt["pii"]) > 20
    assert all(p in text for p in gt["pii"])
    for day, strings in gt["pii_by_day"].items():
        day_text = "\n".join(
            (gzip.decompress(f.read_bytes()) if f.name.endswith(".gz") else f.read_bytes()).decode()
            for f in landing.glob(f"*/dt={day}/part-*") if not f.name.endswith(".parquet"))
        assert all(p in day_text for p in strings)

    def luhn(digits):
        total = sum(int(d) if i % 2 == 0 else (int(d) * 2 - 9 if int(d) > 4 else int(d) * 2)
                    for i, d in enumerate(reversed(digits)))
        return total % 10 == 0

    cards = [p for p in gt["pii"] if re.fullmatch(r"[\d -]{16,19}", p) and not p.startswith("+")]
    ibans = [p.replace(" ", "") for p in gt["pii"] if re.match(r"[A-Z]{2}\d\d", p)]
    assert cards and ibans and any("@" in p for p in gt["pii"])
    assert all(luhn(re.sub(r"\D", "", c)) for c in cards)
    for iban in ibans:
        moved = iban[4:] + iban[:4]
        assert int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1
    phones = [p for p in gt["pii"] if p.startswith("+")]
    assert {p.split()[0] for p in phones} >= {"+1", "+44"}
    # The survey comments and review notes carry PII too, not only the customer's messages.
    non_event = "\n".join(f.read_text() for f in landing.glob("*/dt=*/part-*")
                          if f.name.endswith((".csv", ".jsonl")))
    assert any(p in non_event for p in gt["pii"])


def test_builtin_classifier_errs_on_confusable_intents(tmp_path):
    generate(tmp_path, D0, D0, conversations_per_day=3000, seed=5)
    events = [r for _, r in read_file(tmp_path / "agent_events" / f"dt={D0}" / "part-0000.jsonl.gz")]
    true = {r["conversation_id"]: r["true_intent"] for r in events if r["event_type"] == "customer_message"}
    pred = {r["conversation_id"]: (r["intent"], r["confidence"]) for r in events
            if r["event_type"] == "intent_classified"}
    st = G._static()
    neighbours = {c: {st.intents[j] for j in st.neigh[i]} for i, c in enumerate(st.intents)}
    wrong = [(true[c], p, conf) for c, (p, conf) in pred.items() if p != true[c]]
    right = [conf for c, (p, conf) in pred.items() if p == true[c]]
    accuracy = 1 - len(wrong) / len(pred)
    assert 0.78 < accuracy < 0.88
    assert sum(p in neighbours[t] for t, p, _ in wrong) / len(wrong) > 0.75
    assert np.mean([c for *_, c in wrong]) < np.mean(right) - 0.2
    assert neighbours["card_arrival"] & {"card_delivery_estimate"}


def test_custom_classifier_is_honoured(tmp_path):
    calls = []

    def classifier(texts):
        calls.append(list(texts))
        return [("card_arrival" if "card" in t.lower() else "my_own_label", 0.42) for t in texts]

    gt = generate(tmp_path, D0, D0, conversations_per_day=80, seed=2, classifier=classifier)
    assert calls and all(len(c) == 80 for c in calls)
    events = [r for _, r in read_file(tmp_path / "agent_events" / f"dt={D0}" / "part-0000.jsonl.gz")]
    openings = {r["conversation_id"]: r["text"] for r in events
                if r["event_type"] == "customer_message" and r["turn"] == 0}
    # Once per day: the target day, and the earlier days whose cases and surveys land in it.
    assert len(calls) == G.CASE_LOOKBACK + 1
    assert sorted(openings.values()) in [sorted(c) for c in calls]
    assert any(re.search(r"@|\+\d", t) for c in calls for t in c)  # it sees openings with PII as written
    for r in events:
        if r["event_type"] == "intent_classified":
            text = openings[r["conversation_id"]]
            assert r["intent"] == ("card_arrival" if "card" in text.lower() else "my_own_label")
            assert r["confidence"] == 0.42
    assert gt["params"][D0.isoformat()]["classifier"] == "custom"


def test_cross_day_behaviour(week):
    landing, gt = week
    data = load(landing)
    days = gt["days"]
    history = defaultdict(list)
    for day in days:
        for _, r in data[("crm_cases", day)][1]:
            history[r["case_id"]].append((day, r))
    multi = [h for h in history.values() if len(h) > 1]
    assert multi  # cases are exported again as they change
    for h in multi:
        updated = [_ts(r["updated_at"]) for _, r in h]
        assert updated == sorted(updated)
    reopened = {cid: h[-1][1] for cid, h in history.items() if h[-1][1]["reopen_count"] == "1"}
    delays = [(_ts(r["last_reopened_at"]) - _ts(history[c][0][1]["created_at"])).total_seconds() / 3600
              for c, r in reopened.items()]
    assert min(delays) < 24 < max(delays)  # reopens straddle 24 h
    statuses = {r["status"] for h in history.values() for _, r in h}
    assert {"open", "solved", "closed"} <= statuses
    assert any(r["escalation_reason"] == "missing_knowledge" for h in history.values() for _, r in h)
    assert any(r["conversation_id"] is None for h in history.values() for _, r in h)  # cases outside the agent
    # Surveys arrive after resolution, some on a later day than the case was opened.
    surveys = [r for day in days for _, r in data[("surveys", day)][1]]
    assert any(_ts(r["submitted_at"]).date() > _id_day(r["case_id"]) for r in surveys)
    # Customers come back on the same intent within 7 days.
    seen = {}
    returning = 0
    for day in days:
        for _, r in data[("agent_events", day)][1]:
            if r["event_type"] == "customer_message" and r["turn"] == 0:
                key = (r["customer_id"], r["true_intent"])
                if key in seen and (date.fromisoformat(day) - seen[key]).days <= 7:
                    returning += 1
                seen[key] = date.fromisoformat(day)
    assert returning >= 0.05 * N * (len(days) - 1)


def test_outcomes_correlate_with_the_hidden_labels(week):
    landing, gt = week
    data = load(landing)
    wrong_or_gap = set()
    for day in gt["days"]:
        events = [r for _, r in data[("agent_events", day)][1]]
        true = {r["conversation_id"]: r["true_intent"] for r in events if r["event_type"] == "customer_message"}
        for r in events:
            if r["event_type"] == "intent_classified" and (r["intent"] != true[r["conversation_id"]]
                                                            or true[r["conversation_id"]] in gt["gap_intents"]):
                wrong_or_gap.add(r["conversation_id"])
    csat = [(r["conversation_id"] in wrong_or_gap, int(r["score"])) for day in gt["days"]
            for _, r in data[("surveys", day)][1] if r["kind"] == "csat" and r["conversation_id"]]
    bad = [s for w, s in csat if w]
    good = [s for w, s in csat if not w]
    assert np.mean(bad) < np.mean(good) - 0.5
    overrides = [r for day in gt["days"] for _, r in data[("overrides", day)][1]]
    corrected = [r for r in overrides if r["stage"] == "intent" and r["outcome"] == "corrected"]
    assert corrected and all(r["agent_decision"] != r["human_decision"] for r in corrected)
    assert any(r["outcome"] == "approved" for r in overrides)
    checks = [r for day in gt["days"] for _, r in data[("outcome_checks", day)][1]]
    assert 0.8 < np.mean([r["verified"] for r in checks]) < 1.0
