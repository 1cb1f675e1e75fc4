"""The generator's labelling regimes (feedback_loop_sample.gap_regimes): off, nothing changes; on, each
switch plants what it says; and the gap stage, run through the real nightly stages on an unlabelled day
where the agent misroutes the withheld intents, reports them as missing articles with `misrouted_to`."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest
from feedback_loop_sample.gap_regimes import GapRegime
from feedback_loop_sample.generator import generate
from generated_night import gap_night

END = date(2026, 11, 20)


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_regime_off_is_byte_identical(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate(a, END - timedelta(days=1), END, conversations_per_day=60, seed=3)
    generate(b, END - timedelta(days=1), END, conversations_per_day=60, seed=3, gap_regime=GapRegime())
    assert _digest(a) == _digest(b)


def _read(con, landing: Path, source: str) -> list[dict]:
    files = sorted(str(p) for p in (landing / source).rglob("part-*") if p.stat().st_size)
    if not files:
        return []
    fmt = "read_csv_auto" if files[0].endswith(".csv") else ("read_parquet" if files[0].endswith(".parquet") else "read_json_auto")
    cur = con.execute(f"SELECT * FROM {fmt}({files!r})")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def test_each_switch_plants_what_it_says(tmp_path):
    landing = tmp_path / "landing"
    regime = GapRegime(human_labels=False, routing="fixed", out_of_scope_share=0.1, human_replies=True)
    truth = generate(landing, END - timedelta(days=1), END, conversations_per_day=200, seed=3, kb_gap_share=0.1,
                     gap_regime=regime)
    assert truth["gap_regime"] == regime.as_dict() and set(truth["routed_to"]) == set(truth["gap_intents"])
    con = duckdb.connect()
    assert _read(con, landing, "overrides") == []  # nobody reviewed anything
    assert {r["category"] for r in _read(con, landing, "crm_cases")} == {None}  # nor categorised a case
    events = _read(con, landing, "agent_events")
    true_of = {r["conversation_id"]: r["true_intent"] for r in events
               if r["event_type"] == "customer_message" and r["turn"] == 0}
    predicted = {r["conversation_id"]: r["intent"] for r in events if r["event_type"] == "intent_classified"}
    gap_convs = [c for c, t in true_of.items() if t in truth["routed_to"]]
    assert gap_convs and all(predicted[c] == truth["routed_to"][true_of[c]] for c in gap_convs)
    oos = Counter(t.split(":")[0] for t in true_of.values() if t.startswith(("out_of_scope", "chit_chat")))
    assert oos["out_of_scope"] and oos["chit_chat"]
    assert 0.05 < sum(oos.values()) / len(true_of) < 0.15
    by_conv: dict[str, list] = {}
    for r in sorted(events, key=lambda r: r["ts"]):
        by_conv.setdefault(r["conversation_id"], []).append(r)
    escalated = [c for c, evs in by_conv.items() if any(e["event_type"] == "escalated" for e in evs)]
    assert escalated
    for c in escalated:  # the human's reply comes after the hand-over
        types = [e["event_type"] for e in by_conv[c]]
        assert types[-1] == "agent_response" and types[-2] == "escalated"


@pytest.fixture(scope="module")
def unlabelled_night(tmp_path_factory):
    """Six days of an unlabelled desk whose agent routes withheld intents to a fixed known intent, through
    land, validate and model, then the gap stage (built once for this module)."""
    _settings, *night = gap_night(tmp_path_factory.mktemp("gaps-regime"), END, 6, conversations_per_day=250, seed=5,
                                  kb_gap_share=0.1,
                                  gap_regime=GapRegime(human_labels=False, routing="fixed", human_replies=True))
    return tuple(night)


def test_unlabelled_misrouted_gaps_are_missing_articles(unlabelled_night):
    truth, _summary, rows, intents = unlabelled_night
    article_of = {v["intents"][0]: a for a, v in truth["kb_articles"].items() if v["status"] == "published"}
    asked = Counter(intents[c] for c in intents if intents[c] in truth["gap_intents"])
    top_gap, n = asked.most_common(1)[0]
    assert n >= 20
    hits = [r for r in rows if r["status"] == "open" and r["kind"] == "missing_article"
            and Counter(intents[c] for c in r["conversation_ids"]).most_common(1)[0][0] == top_gap]
    assert hits, [(r["kind"], r["label"]) for r in rows[:10]]
    assert hits[0]["misrouted_to"] == article_of[truth["routed_to"][top_gap]]
    assert hits[0]["draft_replies"]  # what the humans answered after the hand-over
    # No article to revise is reported for the intent the agent routes it to.
    assert not [r for r in rows if r["status"] == "open" and r["kind"] == "revise_article"
                and r["article_id"] == hits[0]["misrouted_to"]]


def test_no_personal_data_from_the_generated_regime(unlabelled_night):
    truth, summary, rows, _intents = unlabelled_night
    page = Path(summary["page"]).read_text()
    mart = json.dumps(rows, default=str)
    assert truth["pii"]
    for value in truth["pii"]:
        assert value not in page and value not in mart
