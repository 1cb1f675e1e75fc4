"""Approval gates through the real scheduler and REST API (issue 17).

An administrator sets the gate's configuration in the JSON Airflow Variable `acsr_settings` (`approval_<gate>_*` keys); the runs
are triggered as a person would, the gate task parks in `awaiting_input` with the evidence in its HITL
detail (the UI's Required Actions), and the answer goes through
`PATCH /api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}/-1/hitlDetails`:

- approve -> the `champion` alias moves only then;
- reject -> the champion stays, the reason is in the decision record and the model card;
- no answer -> after the timeout the scheduler applies the configured default (reject);
- a paid fine-tuning job rejected -> nothing is submitted;
- auto-approve (the default, as in `make demo`) -> nothing waits.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from airflow_stack import wait_for

INTENT = "acsr_retrain_intent_classifier"
FINETUNE = "acsr_finetune_reasoning_model"
GATE = "approve_promotion"


def _settings(stack):
    from feedback_loop.settings import Settings

    data = Path(stack.env["ACSR_DATA_DIR"])
    return Settings.load(landing=str(data / "landing"), lake=str(data / "lake"), warehouse=str(data / "warehouse.duckdb"))


def _settings_variable(stack) -> dict:
    status, body = stack.api("GET", "/api/v2/variables/acsr_settings", raw=True)
    return json.loads(json.loads(body)["value"]) if status == 200 else {}


def _write_settings_variable(stack, doc: dict) -> None:
    """The administrator's way: the one JSON Variable `acsr_settings` (feedback_loop.settings)."""
    value = json.dumps(doc)
    status, _ = stack.api("GET", "/api/v2/variables/acsr_settings", raw=True)
    if status == 200:
        stack.api("PATCH", "/api/v2/variables/acsr_settings", {"key": "acsr_settings", "value": value})
    else:
        stack.api("POST", "/api/v2/variables", {"key": "acsr_settings", "value": value})


def _set_variables(stack, values: dict) -> None:
    """Gate settings by field name (`approval_promotion_mode`, ...) into `acsr_settings`."""
    _write_settings_variable(stack, {**_settings_variable(stack), **values})


def _clear_variables(stack) -> None:
    doc = _settings_variable(stack)
    _write_settings_variable(stack, {k: v for k, v in doc.items() if not k.startswith("approval_")})


@pytest.fixture(scope="module")
def gates(airflow_stack, days):
    """The stack with a champion and an `sft` dataset version to gate (built here when this module runs
    alone; in the suite's order the nightly and retraining modules have built them already)."""
    from feedback_loop import nightly
    from feedback_loop.retrain import intent_retrain, registry

    stack = airflow_stack
    settings = _settings(stack)
    if not (Path(settings.lake) / "datasets" / "sft" / "latest.json").exists():  # one night is enough here
        nightly.run_day(replace(settings, dataset_min_new_examples=1, dataset_min_new_pairs=1), days["latest"],
                        data_docs=False)
    if registry.champion(settings) is None:
        intent_retrain.ensure_champion(settings, intent_retrain.resolve_request(
            settings, {"dataset_version": "none", "base_per_intent": 20}))
    for dag_id in (INTENT, FINETUNE):
        stack.wait_dag_parsed(dag_id)
        for run in stack.dag_runs(dag_id):
            if run["state"] in ("queued", "running"):
                stack.api("DELETE", f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}")
        stack.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
    _clear_variables(stack)
    yield {"stack": stack, "settings": settings}
    _clear_variables(stack)  # later modules see the default (auto-approve) again


def _champion(settings) -> str | None:
    pointer = Path(settings.lake) / "models" / "intent_classifier" / "champion.json"
    return json.loads(pointer.read_text())["version"] if pointer.exists() else None


def _trigger(stack, dag_id: str, conf: dict) -> str:
    return stack.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})["dag_run_id"]


def _wait_awaiting_input(stack, dag_id: str, run_id: str, task_id: str, timeout: float = 1200) -> dict:
    def parked():
        ti = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
        if ti["state"] in ("failed", "upstream_failed", "skipped"):
            raise AssertionError(f"{task_id} is {ti['state']}:\n" + stack.failure_logs(dag_id, run_id))
        return ti if ti["state"] == "awaiting_input" else None

    try:
        return wait_for(parked, timeout, interval=3, what=f"{dag_id}.{task_id} to wait for a person")
    except TimeoutError:
        raise AssertionError(stack.failure_logs(dag_id, run_id)) from None


def _hitl(stack, dag_id, run_id, task_id) -> str:
    return f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails"


def _answer(stack, dag_id: str, run_id: str, task_id: str, option: str, reason: str) -> dict:
    """Answer the gate as a person does, and wait until the gate task has finished.

    Airflow 3.3.2 race (seen here with LocalExecutor under heavy load): when the answer arrives before the
    scheduler has processed the executor's report that the parked process exited, the scheduler takes the
    resumed task for a task that died, fails that try and retries it; the retry asks again (the first
    answer stays in the try's history, nothing was promoted or submitted). A person then answers the new
    request too, and so does this helper: every try that waits is answered once."""
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
    answered: list[int] = []

    def settled():
        ti = stack.api("GET", path)
        if ti["state"] == "awaiting_input" and ti["try_number"] not in answered:
            answered.append(ti["try_number"])
            stack.api("PATCH", _hitl(stack, dag_id, run_id, task_id),
                      {"chosen_options": [option], "params_input": {"reason": reason}})
            return None
        return ti if ti["state"] in ("success", "failed", "skipped", "upstream_failed") else None

    ti = wait_for(settled, 900, interval=3, what=f"{dag_id}.{task_id} to take the answer")
    assert ti["state"] == "success", stack.failure_logs(dag_id, run_id)
    if len(answered) > 1:
        print(f"{task_id}: answered on tries {answered} (the Airflow 3.3.2 resume race retried the gate)")
    return ti


def _record(settings, dag_id: str, run_id: str, task_id: str) -> dict:
    from feedback_loop.review.approvals import decision_id, read

    return read(settings, decision_id(dag_id, run_id, task_id))


def _challenger_run(gates, base_per_intent: int, why: str) -> tuple[str, str]:
    """A retraining whose evidence says promote (policy `always`): the gate must decide."""
    stack = gates["stack"]
    run_id = _trigger(stack, INTENT, {"dataset_version": "none", "promotion_policy": "always", "force": True,
                                      "base_per_intent": base_per_intent, "reason": why})
    _wait_awaiting_input(stack, INTENT, run_id, GATE)
    version = stack.xcom(INTENT, run_id, "register_challenger")["version"]
    return run_id, str(version)


def test_a_promotion_waits_for_approval_and_moves_the_alias_only_after_approve(gates, webhook):
    stack, settings = gates["stack"], gates["settings"]
    _set_variables(stack, {"approval_promotion_mode": "required", "approval_promotion_assignees": "admin",
                           "approval_promotion_timeout_minutes": "600"})
    before = _champion(settings)
    run_id, version = _challenger_run(gates, 21, "approval test: approve")
    assert _champion(settings) == before != version  # waiting: nothing moved

    detail = stack.api("GET", _hitl(stack, INTENT, run_id, GATE))
    assert detail["subject"].startswith(f"Promote intent classifier v{version} to champion?")
    assert "| gold (n=" in detail["body"] and "Paired test" in detail["body"] and "Model card (draft)" in detail["body"]
    assert detail["options"] == ["Approve", "Reject"] and detail["defaults"] == ["Reject"]
    assert [u["id"] for u in detail["assigned_users"]] == ["admin"]
    assert _record(settings, INTENT, run_id, GATE)["outcome"] == "pending"
    assert [a for a in webhook.of_kind("approval_requested") if a["run_id"] == run_id]  # the notifier ran

    _answer(stack, INTENT, run_id, GATE, "Approve", "gold and holdout hold up")
    assert stack.api("GET", _hitl(stack, INTENT, run_id, GATE))["responded_by_user"]["id"] == "admin"
    [done] = stack.wait_runs(INTENT, [run_id], timeout=900)
    assert done["state"] == "success"
    assert _champion(settings) == version
    rec = _record(settings, INTENT, run_id, GATE)
    assert (rec["outcome"], rec["decided_by"], rec["reason"]) == ("approved", "admin", "gold and holdout hold up")
    assert rec["evidence"]["model_version"] == version and rec["timed_out"] is False
    outcome = stack.xcom(INTENT, run_id, "promote_or_keep")
    assert outcome["promoted"] is True and outcome["reasons"][0].startswith("approval gate: approved by admin")
    assert "approved by admin" in Path(outcome["model_card"]).read_text()


def test_a_rejection_keeps_the_champion_and_records_the_reason(gates):
    stack, settings = gates["stack"], gates["settings"]
    _set_variables(stack, {"approval_promotion_mode": "required", "approval_promotion_timeout_minutes": "600"})
    before = _champion(settings)
    run_id, version = _challenger_run(gates, 22, "approval test: reject")
    _answer(stack, INTENT, run_id, GATE, "Reject", "protected intents too close to the limit")
    [done] = stack.wait_runs(INTENT, [run_id], timeout=900)
    assert done["state"] == "success"
    assert _champion(settings) == before != version
    rec = _record(settings, INTENT, run_id, GATE)
    assert (rec["outcome"], rec["decided_by"]) == ("rejected", "admin")
    assert rec["reason"] == "protected intents too close to the limit"
    outcome = stack.xcom(INTENT, run_id, "promote_or_keep")
    assert outcome["promoted"] is False and outcome["champion_after"] == before
    assert "rejected by admin" in outcome["reasons"][0] and "protected intents" in outcome["reasons"][0]
    card = Path(outcome["model_card"]).read_text()
    assert "not promoted" in card and "protected intents too close to the limit" in card


def test_without_an_answer_the_timeout_applies_the_default(gates):
    stack, settings = gates["stack"], gates["settings"]
    _set_variables(stack, {"approval_promotion_mode": "required", "approval_promotion_timeout_minutes": "0.1",
                           "approval_promotion_on_timeout": "reject"})
    before = _champion(settings)
    run_id, version = _challenger_run(gates, 23, "approval test: timeout")
    [done] = stack.wait_runs(INTENT, [run_id], timeout=600)  # the scheduler's sweep resolves it, nobody answers
    assert done["state"] == "success"
    assert _champion(settings) == before != version
    rec = _record(settings, INTENT, run_id, GATE)
    assert (rec["outcome"], rec["timed_out"], rec["decided_by"]) == ("rejected", True, "timeout-default")
    assert "default outcome reject applied" in rec["reason"]
    detail = stack.api("GET", _hitl(stack, INTENT, run_id, GATE))
    assert detail["chosen_options"] == ["Reject"] and detail["responded_by_user"] is None


def test_a_paid_fine_tuning_job_is_not_submitted_when_rejected(gates):
    stack, settings = gates["stack"], gates["settings"]
    _set_variables(stack, {"approval_finetune_mode": "required", "approval_finetune_timeout_minutes": "600"})
    run_id = _trigger(stack, FINETUNE, {"dataset": "sft", "backend": "openai", "reason": "approval test"})
    _wait_awaiting_input(stack, FINETUNE, run_id, "approve_spend")
    detail = stack.api("GET", _hitl(stack, FINETUNE, run_id, "approve_spend"))
    assert detail["subject"].startswith("Spend $") and "gpt-4.1-mini" in detail["subject"]
    assert "Training tokens" in detail["body"] and "Estimated cost" in detail["body"]
    _answer(stack, FINETUNE, run_id, "approve_spend", "Reject", "wait for next week's data")
    [done] = stack.wait_runs(FINETUNE, [run_id], timeout=600)
    states = {t["task_id"]: t["state"] for t in stack.task_instances(FINETUNE, run_id)}
    assert states["submit_and_wait"] == "skipped" and states["record_in_mlflow"] == "success", states
    assert stack.xcom(FINETUNE, run_id, "record_in_mlflow") == "no job record: nothing was submitted"
    plan = stack.xcom(FINETUNE, run_id, "validate_dataset")
    assert not (Path(settings.lake) / "finetune_jobs" / f"{plan['job_key']}.json").exists()
    rec = _record(settings, FINETUNE, run_id, "approve_spend")
    assert (rec["outcome"], rec["reason"]) == ("rejected", "wait for next week's data")
    assert rec["evidence"]["training_tokens"] > 0 and rec["evidence"]["estimated_cost_usd"] > 0
    assert rec["evidence"]["dataset_version"] == plan["dataset_version"]
    assert done["state"] == "success"


def test_auto_approve_lets_a_run_go_unattended(gates):
    """The default configuration, as `make demo` runs it: the gate records its decision and nothing waits."""
    stack, settings = gates["stack"], gates["settings"]
    _clear_variables(stack)
    run_id = _trigger(stack, INTENT, {"dataset_version": "none", "promotion_policy": "always", "force": True,
                                      "base_per_intent": 24, "reason": "approval test: auto"})
    [done] = stack.wait_runs(INTENT, [run_id], timeout=1200)
    assert done["state"] == "success"
    version = str(stack.xcom(INTENT, run_id, "register_challenger")["version"])
    assert _champion(settings) == version
    rec = _record(settings, INTENT, run_id, GATE)
    assert (rec["outcome"], rec["decided_by"]) == ("auto_approved", "auto-approve")
    status, _ = stack.api("GET", _hitl(stack, INTENT, run_id, GATE), raw=True)
    assert status == 404  # no Required Action was ever opened
