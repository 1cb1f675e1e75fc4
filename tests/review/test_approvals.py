"""Approval gates without a scheduler: configuration, the evidence a person sees, the cost estimate, how a
promotion applies the answer, and the decision records with their warehouse view and Flywheel rows.
(The gates through the real scheduler and REST API: tests/integration/test_approvals_through_scheduler.py.)"""

from __future__ import annotations

import json

import pytest

EVALUATION = {
    "training_key": "v20261103-0123456789-b0-abcdef12", "dataset_version": "v20261103-0123456789",
    "champion": {"version": "3", "training_key": "old"}, "dry_run": False,
    "request": {"policy": {"mode": "evidence"}},
    "metrics": {"challenger": {"gold": {"accuracy": 0.801, "macro_f1": 0.79, "ece": 0.03, "n": 3080},
                               "holdout": {"accuracy": 0.7, "macro_f1": 0.6, "ece": 0.05, "n": 40}},
                "champion": {"gold": {"accuracy": 0.78, "macro_f1": 0.77, "ece": 0.031, "n": 3080},
                             "holdout": {"accuracy": 0.5, "macro_f1": 0.45, "ece": 0.09, "n": 40}}},
    "decision": {"promote": True, "reasons": ["gold accuracy +0.021 >= margin 0.005", "McNemar p = 0.001"],
                 "checks": {"margin": {"passed": True}, "protected_intents": {"passed": True}},
                 "mcnemar": {"test": "exact McNemar, one-sided", "only_challenger_right": 90,
                             "only_champion_right": 25, "p_value": 0.0004},
                 "worse_intents": [{"intent": "card_arrival", "champion_f1": 0.9, "challenger_f1": 0.85,
                                    "drop": 0.05, "protected": False}]},
}
REGISTERED = {"version": "4", "model_uri": "models:/acsr-intent-classifier/4", "run_id": "abc"}


def test_gate_configuration_is_checked(settings):
    from feedback_loop.review.approvals import ApprovalConfigError, gate_config
    from feedback_loop.settings import Settings

    cfg = gate_config(settings, "promotion")
    assert cfg["mode"] == "auto" and cfg["default_option"] == "Reject" and cfg["assignees"] == []
    cfg = gate_config(Settings.load(approval_finetune_mode="required", approval_finetune_assignees="alice, bob",
                                    approval_finetune_on_timeout="approve"), "finetune")
    assert (cfg["mode"], cfg["assignees"], cfg["default_option"]) == ("required", ["alice", "bob"], "Approve")
    for bad in ({"approval_promotion_mode": "maybe"}, {"approval_promotion_on_timeout": "shrug"},
                {"approval_promotion_timeout_minutes": 0}):
        with pytest.raises(ApprovalConfigError):
            gate_config(Settings.load(**bad), "promotion")


def test_promotion_evidence_shows_figures_test_worse_intents_and_card():
    from feedback_loop.review.approvals import needs_person, promotion_evidence

    shown = promotion_evidence(EVALUATION, REGISTERED, "/lake/retrain/card.draft.md")
    body = shown["body"]
    assert "v4" in shown["subject"] and "0.780 -> 0.801" in shown["subject"]
    assert "| gold (n=3080) | accuracy | 0.7800 | 0.8010 |" in body
    assert "| holdout (n=40) | accuracy | 0.5000 | 0.7000 |" in body
    assert "p = 0.0004" in body and "only the challenger right on 90" in body
    assert "card_arrival: 0.900 -> 0.850" in body and "/lake/retrain/card.draft.md" in body
    assert shown["summary"]["worse_intents"] == ["card_arrival"] and shown["summary"]["model_version"] == "4"
    assert needs_person("promotion", {"evaluation": EVALUATION}) == (True, "the challenger would become champion")
    keep = {**EVALUATION, "decision": {**EVALUATION["decision"], "promote": False}}
    assert needs_person("promotion", {"evaluation": keep})[0] is False


def test_finetune_evidence_counts_tokens_and_prices_the_job(settings, tmp_path):
    from feedback_loop.datasets import tokens
    from feedback_loop.review.approvals import finetune_evidence, needs_person

    lines = [{"messages": [{"role": "system", "content": "You are the bank's assistant."},
                           {"role": "user", "content": f"Where is my card number {i}?"},
                           {"role": "assistant", "content": "It is on its way."}]} for i in range(5)]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(x) + "\n" for x in lines))
    expected = sum(tokens.count_messages(x["messages"]) for x in lines)
    request = {"backend": "openai", "base_model": "gpt-4.1-mini-2025-04-14", "dry_run": False,
               "hyperparameters": {"n_epochs": 2}, "reason": "weekly"}
    plan = {"dataset": "sft", "dataset_version": "v20261103-0123456789", "manifest": "/m.json", "job_key": "k",
            "training_examples": 5, "files": [{"role": "training_file", "path": str(train), "records": 5,
                                               "bytes": train.stat().st_size}]}
    shown = finetune_evidence(settings, request, plan)
    s = shown["summary"]
    assert s["training_tokens"] == expected > 0 and s["epochs"] == 2
    assert s["estimated_cost_usd"] == round(expected * 2 * 5.0 / 1e6, 4)  # $5 / 1M for gpt-4.1-mini
    assert "v20261103-0123456789" in shown["body"] and "gpt-4.1-mini-2025-04-14" in shown["subject"]
    assert needs_person("finetune", {"request": request}) == (True, "a openai fine-tuning job would be submitted")
    assert needs_person("finetune", {"request": {**request, "dry_run": True}})[0] is False
    unknown = finetune_evidence(settings, {**request, "base_model": "my-own-model", "hyperparameters": {}}, plan)
    assert unknown["summary"]["price_source"] == "default" and unknown["summary"]["epochs"] == 3


def test_a_rejection_keeps_the_champion_and_is_the_first_reason():
    from feedback_loop.review.approvals import apply_to_promotion

    rejected = apply_to_promotion(EVALUATION, {"decision_id": "d1", "outcome": "rejected", "decided_by": "alice",
                                               "decided_at": "2026-12-04T10:00:00+00:00",
                                               "reason": "holdout too small", "timed_out": False})
    assert rejected["decision"]["promote"] is False
    assert rejected["decision"]["reasons"][0].startswith("approval gate: rejected by alice")
    assert "holdout too small" in rejected["decision"]["reasons"][0]
    assert EVALUATION["decision"]["promote"] is True  # the input is not changed
    timed_out = apply_to_promotion(EVALUATION, {"outcome": "rejected", "timed_out": True, "reason": "no answer"})
    assert "timed out, default outcome reject applied" in timed_out["decision"]["reasons"][0]
    approved = apply_to_promotion(EVALUATION, {"outcome": "approved", "decided_by": "bob", "reason": "ok"})
    assert approved["decision"]["promote"] is True and "approved by bob" in approved["decision"]["reasons"][0]
    assert apply_to_promotion(EVALUATION, {"outcome": "not_needed"}) is EVALUATION


def test_decision_records_the_warehouse_view_and_the_flywheel_rows(settings):
    from feedback_loop.lake.duck import connect
    from feedback_loop.review import approvals

    base = {"gate": "promotion", "dag_id": "acsr_retrain_intent_classifier", "task_id": "approve_promotion",
            "mode": "required", "timeout_minutes": 60.0, "on_timeout": "reject", "assignees": ["alice"],
            "subject": "Promote v4?", "evidence": {"model_version": "4"}, "timed_out": False}
    did = approvals.decision_id(base["dag_id"], "run-1", base["task_id"])
    approvals.record(settings, {**base, "decision_id": did, "run_id": "run-1", "outcome": "pending",
                                "chosen_option": None, "decided_by": None, "decided_at": None, "reason": None})
    first = approvals.read(settings, did)
    approvals.record(settings, {**first, "outcome": "rejected", "chosen_option": "Reject", "decided_by": "alice",
                                "decided_at": "2026-12-04T10:00:00+00:00", "reason": "<b>not now</b>"})
    approvals.record(settings, {**base, "gate": "finetune", "decision_id": "other", "run_id": "run-2",
                                "outcome": "auto_approved", "chosen_option": "Approve", "decided_by": "auto-approve",
                                "decided_at": "2026-12-04T11:00:00+00:00", "reason": "auto",
                                "evidence": {"dataset": "sft", "dataset_version": "v1", "base_model": "m",
                                             "estimated_cost_usd": 1.25}})
    assert approvals.read(settings, did)["requested_at"] == first["requested_at"]  # one record, rewritten
    with pytest.raises(ValueError):
        approvals.record(settings, {**base, "decision_id": "x", "run_id": "r", "outcome": "maybe"})

    con = connect()
    try:
        assert approvals.register_approval_views(con, settings) == ["approval_decisions"]
        rows = con.execute("SELECT gate, outcome, decided_by, reason, assignees FROM approval_decisions "
                           "ORDER BY gate").fetchall()
    finally:
        con.close()
    assert rows == [("finetune", "auto_approved", "auto-approve", "auto", ["alice"]),
                    ("promotion", "rejected", "alice", "<b>not now</b>", ["alice"])]
    fly = approvals.flywheel_rows(settings)
    assert [r["outcome"] for r in fly] and {r["gate"] for r in fly} == {"promotion", "finetune"}
    assert {r["what"] for r in fly} == {"intent classifier v4", "sft v1 on m, est. $1.25"}
    # A gate that was not needed carries no evidence: the row names what it is, never "None".
    approvals.record(settings, {**base, "gate": "finetune", "decision_id": "bare", "run_id": "run-3",
                                "outcome": "not_needed", "evidence": {}, "chosen_option": None,
                                "decided_by": "rule", "decided_at": "2026-12-04T12:00:00+00:00", "reason": "dry run"})
    assert "fine-tuning job" in {r["what"] for r in approvals.flywheel_rows(settings)}
    from feedback_loop.ui.flywheel import SECTIONS, render

    sections = {key: {"status": "missing"} for key, *_ in SECTIONS} | {"approvals": {"status": "ok", "rows": fly}}
    page = render(sections, lambda dag, day: None)  # the Flywheel page's approvals template
    assert "&lt;b&gt;not now&lt;/b&gt;" in page and "<b>not now" not in page  # escaped
    assert 'href="/dags/acsr_retrain_intent_classifier/runs/run-1"' in page


def test_the_flywheel_page_shows_the_decisions(settings):
    from feedback_loop.lake.duck import connect
    from feedback_loop.review import approvals
    from feedback_loop.ui.flywheel import gather, render

    approvals.record(settings, {"decision_id": "d1", "gate": "promotion", "dag_id": "acsr_retrain_intent_classifier",
                                "run_id": "manual__1", "task_id": "approve_promotion", "outcome": "rejected",
                                "chosen_option": "Reject", "decided_by": "alice", "decided_at": "2026-12-04T10:00:00",
                                "reason": "too close to the limit", "timed_out": False,
                                "evidence": {"model_version": "7"}})
    sections = gather(settings, connect)
    assert sections["approvals"]["rows"][0]["what"] == "intent classifier v7"
    page = render(sections, lambda dag, day: None)
    assert "<h2>Approvals</h2>" in page and "too close to the limit" in page and ">alice<" in page
