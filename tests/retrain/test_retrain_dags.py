"""Retraining through Airflow: the nightly decision triggers the retraining DAG; a retraining run that fails
halfway leaves the champion in place, and the next run promotes on evidence."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest
from retrain_helpers import mlflow_db, write_action_queue, write_facts, write_relabel_version

DT = "2026-10-07"  # a day no other test of the session runs the nightly DAG for (runs share one metadata DB)
ONLY_DECISION = r"(?!resolve_day$|source_systems$|decide_|trigger_).*"  # every other nightly task is marked success, not run (source_systems runs: an empty list maps to no pull)


def _dag(dag_id):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    assert not bag.import_errors
    dag = bag.dags[dag_id]
    dag.deadline = None  # dag.test() of Airflow 3.3.2 crashes on a DAG with a deadline (see demo_runner)
    return dag


def _runs(dag_id):
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return [(r.run_id, r.conf, r.state) for r in session.query(DagRun).filter(DagRun.dag_id == dag_id)]


def test_nightly_decision_triggers_the_retraining_dag(data_dir, settings, airflow_db):
    write_facts(settings, DT, {"card_arrival": 40, "top_up_failed": 40})
    write_action_queue(settings, DT, [("intent_classifier", "override_rate")])
    nightly = _dag("acsr_nightly")
    run = nightly.test(logical_date=datetime(2026, 11, 26, tzinfo=UTC), run_conf={"date": DT},
                       mark_success_pattern=ONLY_DECISION)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["decide_retraining"] == "success"
    assert states["trigger_intent_classifier_retraining"] == "success"
    assert states["trigger_reasoning_model_retraining"] == "skipped"  # no reason to fine-tune tonight
    triggered = [r for r in _runs("acsr_retrain_intent_classifier") if r[0] == f"nightly_decision__{DT}"]
    assert len(triggered) == 1
    conf = triggered[0][1]
    assert conf["dataset_version"] == "latest"
    assert conf["decision"] == {"dt": DT, "triggers": ["no_champion", "action_queue"]}
    assert "override_rate" in conf["reason"] and conf["reason"].startswith(f"nightly decision {DT}")
    assert not [r for r in _runs("acsr_finetune_reasoning_model") if r[0] == f"nightly_decision__{DT}"]
    assert (data_dir / "lake" / "marts" / "retrain_decisions" / f"dt={DT}" / "part.parquet").exists()

    # Re-running the same day records the decision again but does not start a second retraining.
    again = nightly.test(logical_date=datetime(2026, 11, 26, 1, tzinfo=UTC), run_conf={"date": DT},
                         mark_success_pattern=ONLY_DECISION)
    assert {ti.task_id: ti.state for ti in again.get_task_instances()}["trigger_intent_classifier_retraining"] == "skipped"
    assert len([r for r in _runs("acsr_retrain_intent_classifier") if r[0] == f"nightly_decision__{DT}"]) == 1


@pytest.mark.slow
def test_a_run_that_fails_halfway_leaves_the_champion_and_the_next_promotes(
        data_dir, airflow_db, monkeypatch, tmp_path_factory):
    from feedback_loop.retrain import intent_retrain as ir
    from feedback_loop.retrain import registry
    from feedback_loop.settings import Settings
    from test_retrain_intent import _extra_examples

    monkeypatch.setenv("ACSR_RETRAIN_BASE_PER_INTENT", "3")
    s = Settings.load()
    mlflow_db(s, tmp_path_factory.getbasetemp() / "mlflow-template")
    ir.ensure_champion(s, ir.resolve_request(s, {}))
    before = registry.champion(s)
    assert before["version"] == "1"
    good = _extra_examples(8, skip=3)
    write_relabel_version(s, DT, {"train": good}, tag="good")

    dag = _dag("acsr_retrain_intent_classifier")
    for t in dag.tasks:
        t.retries = 0  # fail at once instead of waiting for the retry delay
    # The registry is unreachable: training and evaluation succeed, registration fails.
    monkeypatch.setenv("ACSR_MLFLOW_TRACKING_URI", "sqlite:////proc/acsr-no-such-dir/mlflow.db")
    run = dag.test(run_conf={"reason": "test: registry down"})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "failed"
    assert states["evaluate"] == "success" and states["register_challenger"] == "failed"
    assert states["promote_or_keep"] == "upstream_failed"
    monkeypatch.delenv("ACSR_MLFLOW_TRACKING_URI")
    assert registry.champion(s) == before
    assert registry.alias_version(s, "champion") == "1"
    evaluation = next((data_dir / "lake" / "retrain" / "intent_classifier").glob("v*/evaluation-vs-1.json"))
    assert '"promote": true' in evaluation.read_text()  # it would have been promoted: the failure held it back

    run = dag.test(run_conf={"reason": "test: registry back"})
    assert run.state == "success"
    assert registry.alias_version(s, "champion") == "2" == registry.champion(s)["version"]
    assert registry.champion(s)["promoted_by_run"] == run.run_id
