"""The nightly review queue and the way its answers come back: selection rules on hand-made facts, then a
real generated day through land / validate / model -> the queue -> Label Studio tasks, answered in a Label
Studio JSON export dropped into the next day's landing area -> overrides through the contract."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

DAY1, DAY2 = "2026-11-02", "2026-11-03"
BETTER = "Your new card is on its way: you can follow its delivery under Cards, Track delivery."


def _fact(i, intent="card_arrival", channel="chat", conf=0.95, **kw):
    row = {"conversation_id": f"C{i:04d}", "case_id": f"K{i:04d}", "channel": channel, "final_intent": intent,
           "final_confidence": conf, "mode": "live", "resolved": True, "reopen_count": 0, "csat": 5,
           "n_thumbs_up": 0, "n_thumbs_down": 0, "escalated": False, "human_category": None,
           "n_policy_fail": 0, "n_policy_waived": 0, "policy_ids": [], "n_overrides": 0}
    row.update(kw)
    return row


def test_selection_respects_budget_and_strata_and_gives_reasons():
    from feedback_loop.review.queue import select

    # 60 unsure conversations of one intent on chat, 10 of other intents on email, and a few others.
    rows = [_fact(i, conf=0.2 + i / 1000) for i in range(60)]
    rows += [_fact(100 + i, intent=f"intent_{i}", channel="email", conf=0.5) for i in range(10)]
    rows.append(_fact(200, intent="top_up_failed", channel="voice", conf=0.97, reopen_count=1))  # miscalibrated
    rows.append(_fact(201, intent="top_up_failed", channel="voice", mode="shadow", human_category="card_arrival"))
    rows.append(_fact(202, intent="pin_blocked", channel="voice", n_thumbs_up=1, csat=1, conf=0.7))
    rows.append(_fact(203, intent="pin_blocked", channel="voice", n_policy_fail=1, policy_ids=["POL-x"]))
    rows.append(_fact(204, intent="pin_blocked", channel="voice", n_overrides=1, conf=0.1))  # already reviewed
    rows.append(_fact(205, intent="pin_blocked", channel="voice"))  # nothing worth a look
    rows.append(_fact(206, intent="lost_or_stolen_card", channel="voice"))  # a member of a new gap
    picked, stats = select(rows, budget=20, max_intent_share=0.25, max_channel_share=0.5, low=0.6,
                           new_gaps={"C0206": ["gap-1"]})
    assert len(picked) == 20 == stats["picked"]
    assert max(Counter(p["final_intent"] for p in picked).values()) <= 5  # 25 % of 20
    assert max(Counter(p["channel"] for p in picked).values()) <= 10
    assert stats["skipped_by_cap"]["intent"] > 0  # the big intent was held back by its cap
    by_id = {p["conversation_id"]: p for p in picked}
    assert "C0204" not in by_id and "C0205" not in by_id
    assert by_id["C0200"]["reasons"] == ["miscalibrated", "reopened_after_resolved"]
    assert by_id["C0201"]["reasons"] == ["shadow_disagreement"]
    assert "card_arrival" in by_id["C0201"]["reason"]
    assert by_id["C0202"]["reasons"] == ["positive_response_negative_csat"]
    assert by_id["C0203"]["reasons"] == ["policy_flag"] and "POL-x" in by_id["C0203"]["reason"]
    assert by_id["C0206"]["reasons"] == ["new_gap_topic"] and by_id["C0206"]["gap_ids"] == ["gap-1"]
    assert all(p["reasons"] and p["reason"] for p in picked)
    assert [p["rank"] for p in picked] == list(range(1, 21))
    scores = [p["score"] for p in picked]
    assert scores == sorted(scores, reverse=True)
    # The most unsure of the big intent come first among its picks.
    big = [p for p in picked if p["final_intent"] == "card_arrival" and p["channel"] == "chat"]
    assert [p["conversation_id"] for p in big] == ["C0000", "C0001", "C0002", "C0003", "C0004"]
    again, _ = select(list(reversed(rows)), budget=20, max_intent_share=0.25, max_channel_share=0.5, low=0.6,
                      new_gaps={"C0206": ["gap-1"]})
    assert [p["conversation_id"] for p in again] == [p["conversation_id"] for p in picked]


# ------------------------------------------------------------------------------------------------ a real day


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """Two generated days; day 1 landed, validated and modelled, and its review queue built."""
    from feedback_loop import nightly as n
    from feedback_loop.ingest import contract
    from feedback_loop.settings import Settings
    from feedback_loop_sample.generator import generate

    root = tmp_path_factory.mktemp("review")
    s = Settings.load(landing=str(root / "landing"), lake=str(root / "lake"), warehouse=str(root / "wh.duckdb"),
                      review_budget=12, review_max_intent_share=0.25, review_max_channel_share=0.75,
                      dataset_min_new_examples=1, dataset_min_new_pairs=1)
    generate(root / "landing", date.fromisoformat(DAY1), date.fromisoformat(DAY2), conversations_per_day=60)
    for source in contract.SOURCE_NAMES:
        n.land(s, source, DAY1)
    for source in contract.SOURCE_NAMES:
        n.validate(s, source, DAY1)
    n.model(s, DAY1)
    out = n.review_queue(s, DAY1)
    return {"settings": s, "root": root, "queue": out}


def _mart(settings, name, layer="marts", dt=DAY1):
    from feedback_loop.lake.duck import connect
    from feedback_loop.lake.files import Lake

    path = Lake(settings.lake).partition_file(layer, name, dt)
    con = connect()
    try:
        cur = con.execute(f"SELECT * FROM read_parquet('{path}')")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]
    finally:
        con.close()


def test_the_nightly_queue_on_a_generated_day(night):
    s, out = night["settings"], night["queue"]
    rows = _mart(s, "review_queue")
    assert 0 < len(rows) <= 12 and out["picked"] == len(rows)
    assert max(Counter(r["agent_intent"] for r in rows).values()) <= 3
    assert all(r["reasons"] and r["reason"] for r in rows)
    facts = {f["conversation_id"]: f for f in _mart(s, "conversation_facts")}
    for r in rows:
        f = facts[r["conversation_id"]]
        assert f["n_overrides"] == 0  # never a conversation a person already reviewed
        if "low_confidence" in r["reasons"]:
            assert f["final_confidence"] < s.review_low_confidence

    tasks = json.loads(Path(out["tasks"]).read_text())
    assert [t["data"]["conversation_id"] for t in tasks] == [r["conversation_id"] for r in rows]
    config = Path(out["config"]).read_text()
    tree = ET.fromstring(config)  # well-formed XML
    names = {el.get("name") for el in tree.iter() if el.get("name")}
    assert {"message", "verdict", "intent", "correct_action", "rationale", "policy_clause", "evidence"} <= names
    for var in re.findall(r"\$(\w+)", config):  # every variable the interface shows is in every task
        assert all(var in t["data"] for t in tasks), var
    intents = {el.get("value") for el in tree.iter("Choice")}
    assert all(t["predictions"][0]["result"][0]["value"]["choices"][0] in intents for t in tasks if "predictions" in t)

    # The same night again gives the same queue, byte for byte.
    from feedback_loop import nightly as n

    before = Path(out["tasks"]).read_bytes()
    n.review_queue(s, DAY1)
    assert Path(out["tasks"]).read_bytes() == before


def _annotation(ann_id, verdict=None, intent=None, rationale=None, policy=None, evidence=None, action=None,
                cancelled=False, better=None):
    result = []
    if verdict:
        result.append({"from_name": "verdict", "to_name": "message", "type": "choices",
                       "value": {"choices": [verdict]}})
    if intent:
        result.append({"from_name": "intent", "to_name": "message", "type": "choices", "value": {"choices": [intent]}})
    for name, text in (("rationale", rationale), ("policy_clause", policy), ("evidence", evidence),
                       ("correct_action", action), ("better_response", better)):
        if text:
            result.append({"from_name": name, "to_name": "message", "type": "textarea", "value": {"text": [text]}})
    return {"id": ann_id, "completed_by": 7, "result": result, "was_cancelled": cancelled,
            "created_at": f"{DAY2}T09:00:00.000000Z", "updated_at": f"{DAY2}T09:05:00.000000Z", "lead_time": 31.2}


def test_a_label_studio_export_comes_back_as_overrides(night):
    """Answers in Label Studio's JSON export -> overrides: complete corrections staged with every triad field,
    incomplete ones quarantined with what is missing, skipped and unanswered tasks counted."""
    from feedback_loop import nightly as n
    from feedback_loop.ingest import contract

    s, root = night["settings"], night["root"]
    tasks = json.loads(Path(night["queue"]["tasks"]).read_text())
    assert len(tasks) >= 5
    export = []
    for i, t in enumerate(tasks):
        export.append({"id": 100 + i, "data": t["data"], "predictions": t.get("predictions", []), "annotations": []})
    a = export
    a[0]["annotations"] = [_annotation(1, "agent_wrong", "card_arrival", "asked where the card is",
                                       policy="POL-card-delivery", action="track_card_delivery", better=BETTER)]
    a[1]["annotations"] = [_annotation(2, "agent_correct", rationale="fine")]
    a[2]["annotations"] = [_annotation(3, "agent_wrong", "pin_blocked", rationale=None, policy="POL-pin")]
    a[3]["annotations"] = [_annotation(4, None, "top_up_failed", "no verdict given")]
    a[4]["annotations"] = [_annotation(5, "agent_wrong", "pin_blocked", "x", cancelled=True)]
    folder = root / "landing" / "label_studio" / f"dt={DAY2}"
    folder.mkdir(parents=True)
    (folder / "project-3-at-2026-11-03.json").write_text(json.dumps(export))

    for source in contract.SOURCE_NAMES:
        n.land(s, source, DAY2)
    for source in contract.SOURCE_NAMES:
        n.validate(s, source, DAY2)

    report = json.loads((root / "lake" / "runs" / f"dt={DAY2}" / "label_studio.json").read_text())["exports"][0]
    assert report["tasks"] == len(tasks) and report["answered"] == 4 and report["skipped"] == 1
    assert report["unanswered"] == len(tasks) - 4 and report["rows"] == 6  # the skipped one is unanswered too

    staged = {r["override_id"]: r for r in _mart(s, "overrides", "staged", DAY2) if r["override_id"].startswith("ls-")}
    quarantined = {r["override_id"]: r for r in _mart(s, "overrides", "quarantine", DAY2)
                   if r["override_id"].startswith("ls-")}
    assert set(staged) | set(quarantined) == {"ls-100-1-intent", "ls-100-1-action", "ls-100-1-response",
                                              "ls-101-2-intent", "ls-102-3-intent", "ls-103-4-intent"}  # nothing lost
    fixed = staged["ls-100-1-intent"]
    d0 = tasks[0]["data"]
    assert (fixed["agent_decision"], fixed["agent_confidence"]) == (d0["agent_intent"], d0["agent_confidence"])
    assert (fixed["human_decision"], fixed["rationale"]) == ("card_arrival", "asked where the card is")
    assert (fixed["policy_clause_id"], fixed["outcome"], fixed["stage"]) == ("POL-card-delivery", "corrected", "intent")
    assert fixed["reviewer_id"] == "label-studio-user-7" and fixed["conversation_id"] == d0["conversation_id"]
    assert staged["ls-100-1-action"]["human_decision"] == "track_card_delivery"
    better = staged["ls-100-1-response"]
    assert (better["agent_decision"], better["human_decision"]) == (d0["agent_response"] or None, BETTER)
    assert staged["ls-101-2-intent"]["outcome"] == "approved"
    assert staged["ls-101-2-intent"]["human_decision"] == tasks[1]["data"]["agent_intent"]
    no_rationale = quarantined["ls-102-3-intent"]
    assert no_rationale["quarantine_reason"] == "incomplete_triad"
    assert "human decision/rationale" in no_rationale["quarantine_detail"]
    no_verdict = quarantined["ls-103-4-intent"]
    assert "outcome" in (no_verdict["quarantine_reason"] + no_verdict["quarantine_detail"])

    # ... and the correction reaches the relabel dataset like any other override.
    n.summarize(s, DAY1)
    n.model(s, DAY2)
    n.summarize(s, DAY2)
    built = n.build_datasets(s, DAY2, window_days=2)
    relabels = built["datasets"]["intent_relabels"]
    assert relabels["status"] == "published", relabels
    import pyarrow.parquet as pq

    version = root / "lake" / "datasets" / "intent_relabels" / relabels["version"]
    rows = [r for f in version.rglob("*.parquet") for r in pq.read_table(f).to_pylist()]
    mine = [r for r in rows if "label" in r and r.get("conversation_id") == d0["conversation_id"]]
    assert [(r["label"], r["source"]) for r in mine] == [("card_arrival", "override")], mine
    preference = built["datasets"]["preference"]
    assert preference["status"] == "published", preference
    files = (root / "lake" / "datasets" / "preference" / preference["version"]).rglob("*.jsonl")
    assert any(BETTER in f.read_text() for f in files)  # the better answer is a chosen response

    # Re-running the day converts to the same file, and a broken export stops the land task, naming it.
    converted = sorted((root / "landing" / "overrides" / f"dt={DAY2}").glob("label_studio-*.jsonl"))
    assert len(converted) == 1
    before = converted[0].read_bytes()
    n.land(s, "overrides", DAY2)
    assert converted[0].read_bytes() == before
    (folder / "broken.json").write_text('{"not": "an export"}')
    from feedback_loop.ingest.land import LandingError

    with pytest.raises(LandingError, match="broken.json: not a Label Studio JSON export"):
        n.land(s, "overrides", DAY2)
