"""The nightly retraining decision: every trigger below and above its threshold, on small fixture lakes."""

from __future__ import annotations

import json

import duckdb
import pytest
from retrain_helpers import (
    days,
    write_action_queue,
    write_champion,
    write_chat_version,
    write_facts,
    write_overrides,
    write_relabel_version,
)

DT = "2026-11-25"
INTENTS = {"card_arrival": 100, "top_up_failed": 100, "exchange_rate": 100, "lost_or_stolen_card": 100}
UNIFORM = {k: 0.25 for k in INTENTS}


@pytest.fixture
def decide():
    from feedback_loop.retrain.decide import decide as fn

    return fn


def _settings(**kw):
    kw.setdefault("signals_baseline_days", 7)
    from feedback_loop.settings import Settings

    return Settings.load(**kw)


def _fired(decision, trigger, target="intent_classifier"):
    return [c for c in decision["checks"] if c["trigger"] == trigger and c["target"] == target and c["fired"]]


def _quiet_lake(settings, baseline_rate=0.05, window_rate=0.05, window_mix=None):
    """14 days of facts (window 7 + baseline 7) with a steady override rate per intent."""
    for i, d in enumerate(days(DT, 14)):
        recent = i >= 7
        mix = (window_mix or INTENTS) if recent else INTENTS
        write_facts(settings, d, {k: v // 4 for k, v in mix.items()})
        rate = window_rate if recent else baseline_rate
        write_overrides(settings, d, {k: round(v // 4 * rate) for k, v in mix.items()})


def test_no_champion_fires_and_everything_is_recorded(data_dir, decide):
    s = _settings()
    write_facts(s, DT, INTENTS)
    d = decide(s, DT)
    assert d["intent_classifier"]["retrain"] is True
    assert d["intent_classifier"]["reasons"] == ["no champion model yet"]
    assert d["intent_classifier"]["conf"]["decision"]["triggers"] == ["no_champion"]
    assert d["reasoning_model"]["finetune"] is False
    mart = data_dir / "lake" / "marts" / "retrain_decisions" / f"dt={DT}" / "part.parquet"
    rows = duckdb.sql(f"SELECT target, trigger, fired, decision FROM '{mart}' ORDER BY ALL").fetchall()
    assert ("intent_classifier", "no_champion", True, True) in rows
    assert {r[1] for r in rows} >= {"no_champion", "new_relabels", "intent_drift", "override_rise", "action_queue",
                                    "new_finetune_data"}
    doc = json.loads((data_dir / "lake" / "runs" / f"dt={DT}" / "retrain_decision.json").read_text())
    assert doc["intent_classifier"]["retrain"] is True
    before = duckdb.sql(f"SELECT * FROM '{mart}' ORDER BY ALL").fetchall()
    decide(s, DT)  # idempotent: the same inputs give the same partition
    assert duckdb.sql(f"SELECT * FROM '{mart}' ORDER BY ALL").fetchall() == before


def test_a_quiet_night_keeps_the_champion_and_says_so(data_dir, decide):
    s = _settings()
    _quiet_lake(s)
    write_champion(s, reference={"n": 2800, "start": "2026-10-01", "end": "2026-10-28", "shares": UNIFORM})
    d = decide(s, DT)
    assert d["intent_classifier"]["retrain"] is False
    assert d["intent_classifier"]["reasons"] == ["no trigger fired"]
    drift = next(c for c in d["checks"] if c["trigger"] == "intent_drift")
    assert drift["value"] < 0.01 and not drift["fired"]
    rise = next(c for c in d["checks"] if c["trigger"] == "override_rise")
    assert rise["scope"] == "all" and not rise["fired"]


@pytest.mark.parametrize("new,minimum,fires", [(49, 50, False), (50, 50, True), (3, 2, True)])
def test_new_relabels_against_the_minimum(data_dir, decide, new, minimum, fires):
    s = _settings(retrain_min_new_relabels=minimum)
    write_facts(s, DT, INTENTS)
    old = [{"example_id": f"old{i}", "text": f"old text {i}", "label": "card_arrival"} for i in range(20)]
    v1 = write_relabel_version(s, "2026-11-18", {"train": old}, tag="v1")
    write_champion(s, dataset_version=v1, train_ids=[r["example_id"] for r in old], label_distribution=UNIFORM)
    fresh = [{"example_id": f"new{i}", "text": f"new text {i}", "label": "top_up_failed"} for i in range(new)]
    confirmed = [{"example_id": f"conf{i}", "text": f"confirmed {i}", "label": "card_arrival", "source": "confirmed",
                  "weight": 0.5} for i in range(30)]  # confirmations are not relabels: they never count
    write_relabel_version(s, DT, {"train": old + fresh + confirmed}, tag="v2")
    d = decide(s, DT)
    check = next(c for c in d["checks"] if c["trigger"] == "new_relabels")
    assert check["value"] == new and check["fired"] is fires
    assert check["detail"]["new_by_source"]["confirmed"] == 30
    assert d["intent_classifier"]["retrain"] is fires


def test_drift_fires_above_the_psi_threshold_only(data_dir, decide):
    s = _settings(retrain_drift_psi=0.2)
    write_champion(s, reference={"n": 2800, "start": "2026-10-01", "end": "2026-10-28", "shares": UNIFORM})
    skewed = {"card_arrival": 250, "top_up_failed": 50, "exchange_rate": 50, "lost_or_stolen_card": 50}
    mild = {"card_arrival": 115, "top_up_failed": 95, "exchange_rate": 95, "lost_or_stolen_card": 95}
    for mix, fires in ((mild, False), (skewed, True)):
        for d in days(DT, 7):
            write_facts(s, d, mix)
        check = next(c for c in decide(s, DT)["checks"] if c["trigger"] == "intent_drift")
        assert check["fired"] is fires, check
        assert (check["value"] >= 0.2) is fires
    assert check["detail"]["largest_shifts"]["card_arrival"]["live"] > 0.5


def test_drift_on_a_thin_window_is_sampling_noise(data_dir, decide):
    """Six conversations over 40 intents can give a large PSI by chance alone: below 2x noise it never fires."""
    s = _settings(retrain_drift_psi=0.2)
    ref = {f"intent_{i}": 1 / 40 for i in range(40)}
    write_champion(s, reference={"n": 4000, "start": "2026-10-01", "end": "2026-10-28", "shares": ref})
    write_facts(s, DT, {"intent_1": 2, "intent_2": 2, "intent_3": 2})
    check = next(c for c in decide(s, DT)["checks"] if c["trigger"] == "intent_drift")
    assert check["value"] > 0.2 and check["detail"]["sampling_noise_psi"] * 2 > check["value"]
    assert not check["fired"]


def test_override_rise_fires_beyond_noise_and_names_the_intent(data_dir, decide):
    s = _settings(retrain_override_z=3.5, retrain_min_sample=30)
    write_champion(s, reference={"n": 2800, "start": "2026-10-01", "end": "2026-10-28", "shares": UNIFORM})
    for i, d in enumerate(days(DT, 14)):
        write_facts(s, d, {k: v // 4 for k, v in INTENTS.items()})  # 25 a day per intent
        if i < 7:
            write_overrides(s, d, {"card_arrival": 1, "top_up_failed": 1})  # 4 %
        else:
            write_overrides(s, d, {"card_arrival": 8, "top_up_failed": 2})  # 32 % vs 8 % (noise)
    dec = decide(s, DT)
    fired = _fired(dec, "override_rise")
    assert [c["scope"] for c in fired] == ["all", "intent=card_arrival"] or \
        {c["scope"] for c in fired} == {"all", "intent=card_arrival"}
    card = next(c for c in fired if c["scope"] == "intent=card_arrival")
    assert card["detail"]["rate"] == pytest.approx(0.32) and card["value"] >= 3.5
    assert not any(c["scope"] == "intent=top_up_failed" for c in fired)  # 4 % -> 8 %: within noise
    assert dec["intent_classifier"]["retrain"]
    assert any("card_arrival" in r for r in dec["intent_classifier"]["reasons"])


def test_override_rise_needs_a_baseline(data_dir, decide):
    s = _settings()
    for d in days(DT, 3):
        write_facts(s, d, INTENTS)
        write_overrides(s, d, {"card_arrival": 90})
    check = next(c for c in decide(s, DT)["checks"] if c["trigger"] == "override_rise")
    assert not check["fired"] and check["detail"]["note"] == "no baseline days yet"


def test_action_queue_items_route_to_their_model(data_dir, decide):
    s = _settings()
    write_facts(s, DT, INTENTS)
    write_champion(s, reference={"n": 400, "start": DT, "end": DT, "shares": UNIFORM})
    write_action_queue(s, DT, [("knowledge_base", "fcr")])
    d = decide(s, DT)
    assert not _fired(d, "action_queue") and not _fired(d, "action_queue", "reasoning_model")
    assert d["intent_classifier"]["retrain"] is False

    write_action_queue(s, DT, [("intent_classifier", "override_rate"), ("reasoning_model", "csat_mean")])
    d = decide(s, DT)
    assert _fired(d, "action_queue") and d["intent_classifier"]["retrain"]
    assert "override_rate" in d["intent_classifier"]["reasons"][0]
    # A reasoning-model item alone is not enough: there must be a dataset version no job has used yet.
    assert d["reasoning_model"]["finetune"] is False
    version = write_chat_version(s, "sft", DT)
    d = decide(s, DT)
    assert d["reasoning_model"]["finetune"] is True
    assert d["reasoning_model"]["conf"] == {"dataset": "sft", "dataset_version": version, "backend": "dry_run",
                                            "reason": d["reasoning_model"]["conf"]["reason"]}
    from feedback_loop.lake.files import Lake

    Lake(s.lake).write_json({"job_key": f"sft-{version}-openai-dryrun-x", "dataset": "sft", "dataset_version": version,
                             "backend": "openai", "dry_run": True, "status": "dry_run"}, "finetune_jobs", f"sft-{version}-openai-dryrun-x.json")
    assert decide(s, DT)["reasoning_model"]["finetune"] is False


def test_psi_and_z_helpers():
    from feedback_loop.retrain.decide import psi, two_proportion_z

    assert psi(UNIFORM, UNIFORM) == 0
    assert psi({"a": 1.0}, {"b": 1.0}) > 5
    assert two_proportion_z(30, 100, 10, 100) > 3.5 > two_proportion_z(12, 100, 10, 100)
    assert two_proportion_z(0, 0, 1, 10) == 0.0
