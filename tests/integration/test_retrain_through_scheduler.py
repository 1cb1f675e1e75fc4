"""The retraining DAGs triggered by hand through the REST API with a conf (as the UI's trigger form does),
on the lake the nightly runs built (the `nightly_outputs` fixture, when this module runs alone): the runs succeed and their results land in the registry and the lake."""

from __future__ import annotations

import json
from pathlib import Path

from airflow_stack import wait_for

INTENT = "acsr_retrain_intent_classifier"
FINETUNE = "acsr_finetune_reasoning_model"


def _enable_with_a_clean_queue(stack, dag_id: str) -> None:
    """While the DAG was paused the nightly decision queued runs for it; clear them, then unpause, so the
    run under test is the only one (max_active_runs=1 would queue it behind them)."""
    stack.wait_dag_parsed(dag_id)
    for run in stack.dag_runs(dag_id):
        if run["state"] == "queued":
            stack.api("DELETE", f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}")
    stack.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})


def test_trigger_the_intent_classifier_retraining_with_a_conf(airflow_stack, nightly_outputs):
    stack = airflow_stack
    _enable_with_a_clean_queue(stack, INTENT)
    conf = {"reason": "integration test", "promotion_policy": "evidence", "dataset_version": "latest",
            "base_per_intent": 20}
    run = stack.api("POST", f"/api/v2/dags/{INTENT}/dagRuns", {"logical_date": None, "conf": conf})
    assert run["conf"] == conf
    [done] = stack.wait_runs(INTENT, [run["dag_run_id"]], timeout=900)
    assert done["state"] == "success"
    request = stack.xcom(INTENT, run["dag_run_id"], "resolve_request")
    assert request["reason"] == "integration test" and request["policy"]["mode"] == "evidence"
    assert request["base_per_intent"] == 20

    lake = Path(stack.env["ACSR_DATA_DIR"]) / "lake"
    pointer = json.loads((lake / "models" / "intent_classifier" / "champion.json").read_text())
    assert pointer["version"]
    sections = stack.api("GET", "/flywheel/api/sections")
    models = sections["models"]
    assert models["status"] == "ok", models
    champion = models["aliases"]["champion"]
    assert str(champion["version"]) == str(pointer["version"])
    runs = {r["dag_run_id"] for r in stack.dag_runs(INTENT)}
    assert champion["airflow_run_id"] in runs  # the registry names the Airflow run that trained it
    _, page = stack.api("GET", "/flywheel/", raw=True)
    assert f'href="/dags/{INTENT}/runs/{champion["airflow_run_id"]}"' in page


def test_trigger_the_fine_tuning_dag_as_a_dry_run(airflow_stack, nightly_outputs):
    stack = airflow_stack
    _enable_with_a_clean_queue(stack, FINETUNE)
    run = stack.api("POST", f"/api/v2/dags/{FINETUNE}/dagRuns",
                    {"logical_date": None, "conf": {"dataset": "sft", "backend": "dry_run"}})
    [done] = wait_for(lambda: [r for r in stack.dag_runs(FINETUNE) if r["dag_run_id"] == run["dag_run_id"]
                               and r["state"] in ("success", "failed")], 600, interval=3,
                      what="the fine-tuning dry run")
    assert done["state"] == "success", stack.failure_logs(FINETUNE, run["dag_run_id"])
